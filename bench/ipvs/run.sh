#!/bin/bash
# IPVS programming benchmark: svcnet's netlink backend, reconciler and svcnet-proxy against `ipvsadm -R`, on a real
# kernel (user-mode-linux guest, 1 vCPU, 1 GiB), 10,000 services x 10 endpoints (110,000 kernel objects).
#
#   bench/ipvs/run.sh            # release build, full table; writes bench/ipvs/RESULTS.md
#   SVCNET_BENCH_SERVICES=1000 bench/ipvs/run.sh --no-write   # smaller table, print only
#   SVCNET_BENCH_ONLY=reconcile,proxy bench/ipvs/run.sh --no-write   # some parts only (raw, reconcile,
#                                             # addresses, ipvsadm, strace, proxy)
#
# The measurements themselves are in tests/tests/vm_ipvs_bench.rs (an #[ignore]d test, so `cargo test` skips it).
# Needs Debian's user-mode-linux and strace packages; takes a few minutes (ipvsadm -R alone is about a minute).
# As root it also makes a tap device (svcnet-bench, 10.231.0.1/30) so that the API start's fake server runs on the host.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

write=1
[ "${1:-}" = "--no-write" ] && write=0

if [ ! -x "${SVCNET_UML:-/usr/bin/linux.uml}" ]; then
	echo "bench/ipvs/run.sh: /usr/bin/linux.uml not found (apt-get install user-mode-linux)" >&2
	exit 1
fi
command -v strace >/dev/null || { echo "bench/ipvs/run.sh: strace not found (apt-get install strace)" >&2; exit 1; }

log=$(mktemp "${TMPDIR:-/tmp}/svcnet-ipvs-bench.XXXXXX")
trap 'rm -f "$log"' EXIT
cargo build --release -p svcnet-proxy --bin svcnet-proxy
cargo test --release -p svcnet-tests --test vm_ipvs_bench -- --ignored --exact ipvs_benchmark --nocapture \
	2>&1 | tee "$log"

table=$(sed -n '/^BENCHMARK-TABLE-BEGIN$/,/^BENCHMARK-TABLE-END$/p' "$log" | sed '1d;$d')
if [ -z "$table" ]; then
	echo "bench/ipvs/run.sh: the benchmark produced no table (see the output above)" >&2
	exit 1
fi
echo
echo "$table"
[ "$write" = 1 ] || exit 0

{
	cat <<HEAD
# IPVS programming benchmark results

Produced by \`bench/ipvs/run.sh\` (measurements in \`tests/tests/vm_ipvs_bench.rs\`) on $(date -u +%Y-%m-%d), commit
$(git rev-parse --short HEAD 2>/dev/null || echo unknown), host CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'),
$(nproc) cores. Everything runs in one user-mode-linux guest (Debian's \`user-mode-linux\`, kernel $(/usr/bin/linux.uml --version 2>/dev/null | head -1 || echo 6.1), 1 vCPU,
mem=2G), release build; each measurement in its own fresh network namespace (the API start, last, in the guest's own,
with eth0 on a host tap device). The guest runs on one host CPU (\`tests/vm/run.sh\` pins it); a system call
costs ~7 µs and a first touch of a page ~24 µs there (~30 and ~100 µs unpinned on this VM host), so call and
page-fault counts matter more than on bare metal; ratios are against \`ipvsadm -R\` measured in the same run.

Targets (issue 5): full load < 1 s, startup dump-and-diff < 1.5 s, one endpoint change < 1 ms with a constant number of
netlink round trips, proxy RSS < 64 MB.

HEAD
	echo "$table"
	cat <<'TAIL'

Notes:
- "round trips" are netlink `sendmsg` batches svcnet sends (up to 100 requests each, only the last one asks for an ACK;
  errors come back per request). `ipvsadm -R` sends one request per object and waits for each answer.
- ipvsadm's system calls were counted with `strace -c -f` on a 1/10 sample of the table (tracing it whole would take
  many minutes) and scaled; svcnet's were counted on the whole run of the measured process, start-up included.
- Reconciler rows that do not mention kube-ipvs0 use in-memory address bookkeeping (IPVS cost only); the rows that do
  mention it bind the 10,000 cluster IPs over rtnetlink as the proxy does.
- Restart rows include building the desired state from the cache snapshot; page faults are counted because each
  costs tens of microseconds in this guest. "Reading the programmed table" compares the three ways svcnet can read
  real servers (all checked to list the same table): the kernel's text listing `/proc/net/ip_vs` (few reads, but
  the kernel walks its table from the start at every page), netlink dumps of 32 virtual servers at a time on 32
  sockets through one io_uring (two `io_uring_enter` per batch; the default), and netlink dumps one virtual server
  after the other (one `sendmsg` and one `recvmmsg` each; where io_uring is refused).
- The svcnet-proxy rows are read from its log: "manifests loaded" is when it reports the cluster state received,
  "full sync" its own measurement of the first full sync, split into the desired state, the kernel (IPVS and
  kube-ipvs0 addresses) and the host setup (ipset and iptables-restore). The restart row starts the proxy again on
  the table it programmed. RSS is read 2 s after the full sync. The `--kubeconfig` row starts it against the fake
  API server of the test support code (a test double) serving the same cluster from the benchmark process on the
  host, reached over a tap device (`tests/vm/run.sh -n`; where the host cannot make one, the server runs inside the
  guest and shares its one CPU, as the row then says); the proxy's own CPU time is given beside it.
TAIL
} >bench/ipvs/RESULTS.md
echo "wrote bench/ipvs/RESULTS.md"
