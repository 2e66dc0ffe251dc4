#!/usr/bin/env bash
# Proxy cold start from the Kubernetes API (issue #16): `svcnet-proxy --dry-run --show=all`
# against a 10,000-service cluster (10 endpoints each) served by the fake API server of the test
# support code (a test double speaking real HTTP list/watch; paginated lists, limit=500), release
# build, RUNS cold starts; prints the time to "source synced" (start-up, lists, parsing, cache)
# and to the printed plan (desired IPVS table, ipsets, iptables rules), and their medians.
# Usage: bench/proxy-start/run.sh    Env: SERVICES (10000), ENDPOINTS_PER_SERVICE (10), RUNS (3)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p svcnet-proxy
cargo test --release -p svcnet-tests --test proxy_cold_start_bench -- --ignored --nocapture 2>&1 |
  grep -E '^(cluster|run [0-9]|median)'
