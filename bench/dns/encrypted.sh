#!/usr/bin/env bash
# Encrypted DNS serving: one svcnet-dns (release) serving the demo cluster's zone over plain
# TCP, DNS over TLS and DNS over HTTPS (HTTP/2 POST) from one Corefile, and a load client against
# each transport for the same query (`kubernetes.default.svc.cluster.local A`). Prints QPS and
# average latency per transport. Certificates are generated with openssl.
#
# DoH is measured with h2load (nghttp2-client): CLIENTS connections with INFLIGHT/CLIENTS
# concurrent streams each, the same concurrency as dnsperf's TCP/DoT runs. dnsperf's own DoH
# client is printed too (`doh-dnsperf`) but is not a server measurement: it keeps one stream per
# connection, wakes on a 100 ms poll, and writes HEADERS and DATA in two writes without
# TCP_NODELAY, so every query also waits for the server's delayed ACK (~40 ms).
#
# Usage: bench/dns/encrypted.sh [seconds-per-run (default 10)]
# Env: CLIENTS (connections, 10), INFLIGHT (queries in flight in all, 100), NO_BUILD=1.
set -euo pipefail

cd "$(dirname "$0")/../.."
REPO=$(pwd)
DURATION=${1:-10}
CLIENTS=${CLIENTS:-10}
INFLIGHT=${INFLIGHT:-100}
for tool in dnsperf openssl h2load python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install dnsperf openssl nghttp2-client python3)" >&2; exit 1; }
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
# The same query as a DNS message (id 0, RD) for h2load's POST body.
python3 - <<'PY'
import struct
name = b"".join(bytes([len(l)]) + l for l in b"kubernetes.default.svc.cluster.local".split(b".")) + b"\0"
open("query.bin", "wb").write(struct.pack(">6H", 0, 0x0100, 1, 0, 0, 0) + name + struct.pack(">2H", 1, 1))
PY
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
  lat=$(awk '/Average Latency/ {print $4; exit}' <<<"$out")
  lost=$(awk '/Queries lost/ {print $3}' <<<"$out")
  printf '%-11s %10s QPS  avg latency %s s  lost %s\n' "$name" "$qps" "$lat" "$lost"
}
run tcp -m tcp -p 15353
run dot -m dot -p 15853
run_h2load() {
  local streams=$(( (INFLIGHT + CLIENTS - 1) / CLIENTS ))
  local out
  out=$(h2load -D "$DURATION" -c "$CLIENTS" -m "$streams" -d query.bin \
    -H 'content-type: application/dns-message' -H 'accept: application/dns-message' \
    https://127.0.0.1:15443/dns-query 2>&1)
  local qps lat failed
  qps=$(awk '/^finished in/ {print $4}' <<<"$out")
  lat=$(awk '/^time for request/ {print $6}' <<<"$out")
  failed=$(awk '/^requests:/ {print $10}' <<<"$out")
  printf '%-11s %10s QPS  avg latency %s  failed %s\n' doh-h2load "$qps" "$lat" "$failed"
}
run_h2load
run doh-dnsperf -m doh -p 15443 -O doh-method=POST -O doh-uri=https://127.0.0.1:15443/dns-query
echo "svcnet-dns RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$PID/status)"
