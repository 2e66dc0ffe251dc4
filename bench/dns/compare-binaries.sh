#!/bin/bash
# Two svcnet-dns builds side by side on the same synthetic cluster (10,000 services, 100,000
# endpoints): queries per second of each under dnsperf, alternating A and B for ROUNDS rounds per
# query file (mix, A records), with the ratio B/A per round, and each server's RSS at the end.
# Used to compare the deployed image's static musl build with the glibc build, or allocators.
#
#   cargo build --release -p svcnet-dns -p svcnet-dns-bench                   # A and the generator
#   cargo build --release --target x86_64-unknown-linux-musl -p svcnet-dns    # B
#   bench/dns/compare-binaries.sh target/release/svcnet-dns \
#       target/x86_64-unknown-linux-musl/release/svcnet-dns
#
# Env: ROUNDS (3), DURATION (seconds per dnsperf run, 8). Needs dnsperf, curl and python3.
set -euo pipefail
[ $# -eq 2 ] || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
A=$(realpath "$1"); B=$(realpath "$2")
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-8}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
GEN="$REPO/target/release/svcnet-dns-bench"
[ -x "$GEN" ] || { echo "build the generator first: cargo build --release -p svcnet-dns -p svcnet-dns-bench" >&2; exit 1; }
W=$(mktemp -d /tmp/svcnet-dns-compare.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
"$GEN" gen-cluster --services 10000 --endpoints 100000 --out "$W/cluster" >/dev/null
"$GEN" queries --services 10000 --out "$W/queries" >/dev/null 2>&1
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # BIN PORT READY_PORT -> pid
  "$1" --listen "127.0.0.1:$2" --manifests "$W/cluster" --health off --metrics off \
    --ready "127.0.0.1:$3" --lameduck 0s >/dev/null 2>"$W/$2.log" &
  echo $!
}
PA_PORT=$(free_port); PA_READY=$(free_port); PB_PORT=$(free_port); PB_READY=$(free_port)
PA=$(start "$A" "$PA_PORT" "$PA_READY"); PIDS+=("$PA")
PB=$(start "$B" "$PB_PORT" "$PB_READY"); PIDS+=("$PB")
for r in "$PA_READY" "$PB_READY"; do
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$r/ready" >/dev/null && break; sleep 0.1; done
done
qps() { dnsperf -s 127.0.0.1 -p "$1" -d "$2" -l "$DURATION" -q 100 2>&1 | awk '/Queries per second/ {printf "%.0f", $4}'; }
echo "A: $A"; echo "B: $B"
echo "| queries | round | A QPS | B QPS | B/A |"; echo "|---|---|---|---|---|"
for kind in mix a; do
  for r in $(seq 1 "$ROUNDS"); do
    qa=$(qps "$PA_PORT" "$W/queries/$kind.txt"); qb=$(qps "$PB_PORT" "$W/queries/$kind.txt")
    echo "| $kind | $r | $qa | $qb | $(awk -v a="$qa" -v b="$qb" 'BEGIN {printf "%.2f", b/a}') |"
  done
done
rss() { awk '/^VmRSS/ {printf "%.1f MB", $2/1024}' "/proc/$1/status"; }
echo "RSS: A $(rss "$PA"), B $(rss "$PB")"
