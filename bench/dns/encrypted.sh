#!/usr/bin/env bash
# Encrypted DNS serving: one svcnet-dns (release) serving the demo cluster's zone over plain
# TCP, DNS over TLS and DNS over HTTPS (HTTP/2 POST) from one Corefile, and dnsperf against each
# transport for the same query (`kubernetes.default.svc.cluster.local A`). Prints QPS and
# average latency per transport. Certificates are generated with openssl.
#
# Usage: bench/dns/encrypted.sh [seconds-per-run (default 10)]
# Env: CLIENTS (dnsperf -c, concurrent connections, 10), INFLIGHT (dnsperf -q, 100), NO_BUILD=1.
set -euo pipefail

cd "$(dirname "$0")/../.."
REPO=$(pwd)
DURATION=${1:-10}
CLIENTS=${CLIENTS:-10}
INFLIGHT=${INFLIGHT:-100}
for tool in dnsperf openssl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install dnsperf openssl)" >&2; exit 1; }
done
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release -p svcnet-dns --bins
fi
WORK=$(mktemp -d /tmp/svcnet-dns-tls-bench.XXXXXX)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=bench CA" -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=dns.test" \
  -keyout key.pem -out csr.pem 2>/dev/null
echo "subjectAltName=DNS:dns.test,IP:127.0.0.1" > ext.cnf
openssl x509 -req -in csr.pem -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
  -extfile ext.cnf -out cert.pem 2>/dev/null
cat > Corefile <<CF
dns://.:15353 {
    bind 127.0.0.1
    kubernetes cluster.local
}
tls://.:15853 https://.:15443 {
    bind 127.0.0.1
    tls $WORK/cert.pem $WORK/key.pem
    kubernetes cluster.local
}
CF
echo "kubernetes.default.svc.cluster.local A" > queries
"$REPO/target/release/svcnet-dns" --corefile Corefile --manifests "$REPO/examples/cluster" \
  2> server.log &
PID=$!
sleep 2
run() {
  local name=$1; shift
  local out
  out=$(dnsperf -s 127.0.0.1 -d queries -l "$DURATION" -c "$CLIENTS" -q "$INFLIGHT" "$@" 2>&1)
  local qps lat lost
  qps=$(awk '/Queries per second/ {print $4}' <<<"$out")
  lat=$(awk '/Average Latency/ {print $4}' <<<"$out")
  lost=$(awk '/Queries lost/ {print $3}' <<<"$out")
  printf '%-6s %10s QPS  avg latency %s s  lost %s\n' "$name" "$qps" "$lat" "$lost"
}
run tcp -m tcp -p 15353
run dot -m dot -p 15853
run doh -m doh -p 15443 -O doh-method=POST -O doh-uri=https://127.0.0.1:15443/dns-query
echo "svcnet-dns RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$PID/status)"
