#!/usr/bin/env bash
# Cache benchmark of svcnet-dns --corefile, measured in one run on loopback:
#  1. dnsperf QPS of cache hits (`cache` + `forward`, warmed) vs the uncached forward path
#     (`forward` only) vs the upstream itself (Knot DNS), same names, same machine.
#  2. The cost of reloads with a 10,000-service cluster: dnsperf runs against the cluster zone
#     while the Corefile is rewritten every 2 s (reload 2s 1s); the maximum latency and the
#     lowest per-second QPS are compared with a run without reloads. Two kinds of edit:
#     a forward/cache change (cluster zone kept) and a kubernetes ttl change (zone rebuilt
#     aside before the swap).
#  3. The cost of the forwarder's anti-spoofing options on the uncached forward path:
#     `source_port pooled` (the loopback default) vs `source_port random` vs random plus
#     `case_randomization`.
#  4. Overload: dnsperf floods distinct names (cache misses) at FLOOD_QPS to a slow upstream
#     (gen.py slowup, 200 ms) through `forward { max_concurrent 1000 }` while a second client
#     (another loopback address) asks distinct forwarded names at 100 QPS and a third asks
#     cluster names; RSS, REFUSED counts and the cluster QPS are compared with a run without
#     the flood.
# Prints a table and writes bench/dns-cache/RESULTS.md.
#
# Usage: bench/dns-cache/run.sh [seconds-per-run (default 10)]
# Env: NAMES (upstream names, 1000), SERVICES (10000), ENDPOINTS (100000), INFLIGHT (100),
#      FLOOD_QPS (4000),
#      NO_BUILD=1 (use the existing release binary), SVCNET_DNS=path (another binary).
set -euo pipefail

cd "$(dirname "$0")/../.."
REPO=$(pwd)
DURATION=${1:-10}
NAMES=${NAMES:-1000}
SERVICES=${SERVICES:-10000}
ENDPOINTS=${ENDPOINTS:-100000}
INFLIGHT=${INFLIGHT:-100}
FLOOD_QPS=${FLOOD_QPS:-4000}
RESULTS="$REPO/bench/dns-cache/RESULTS.md"
GEN="$REPO/bench/dns-cache/gen.py"

for tool in dnsperf knotd dig curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install dnsperf knot bind9-dnsutils curl python3)" >&2; exit 1; }
done
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release -p svcnet-dns --bin svcnet-dns
fi
BIN=${SVCNET_DNS:-$REPO/target/release/svcnet-dns}

WORK=$(mktemp -d /tmp/svcnet-dns-cache-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_answer() { # port name
  for _ in $(seq 1 400); do
    [ -n "$(dig +short +tries=1 +time=1 -p "$1" @127.0.0.1 "$2" 2>/dev/null)" ] && return 0
    sleep 0.05
  done
  echo "no answer for $2 on port $1" >&2; exit 1
}

# dnsperf PORT FILE SECONDS -> "qps avg_ms max_ms lost min_interval_qps"
perf() {
  local out
  out=$(dnsperf -s 127.0.0.1 -p "$1" -d "$2" -l "$3" -q "$INFLIGHT" -S 1 2>&1)
  local qps avg max lost minq
  qps=$(awk '/Queries per second/ {print $4}' <<<"$out")
  avg=$(awk '/Average Latency/ {printf "%.3f", $4*1000}' <<<"$out")
  max=$(awk '/Average Latency/ {gsub(/[(),]/,""); for(i=1;i<=NF;i++) if ($i=="max") printf "%.3f", $(i+1)*1000}' <<<"$out")
  lost=$(awk '/Queries lost/ {print $3}' <<<"$out")
  # Per-second statistics lines: "<timestamp>: <qps>" (dnsperf -S); the first one is printed
  # at the start (always ~0) and the last one is partial: both are left out.
  minq=$(grep -E '^[0-9.]+: [0-9.]+$' <<<"$out" | tail -n +2 | head -n -1 | awk '{print $2}' | sort -g | head -1 | awk '{printf "%.0f", $1}')
  echo "$qps $avg $max $lost ${minq:--}"
}

echo "== inputs in $WORK"
python3 "$GEN" zone "$NAMES" "$WORK/example.test.zone"
python3 "$GEN" queries "$NAMES" "$WORK/names.txt"
python3 "$GEN" cluster "$SERVICES" "$ENDPOINTS" "$WORK/cluster"
python3 "$GEN" svcqueries "$SERVICES" "$WORK/services.txt"

KNOT_PORT=$(free_port)
mkdir -p "$WORK/knot"
cat > "$WORK/knot/knot.conf" <<EOF2
server:
    rundir: "$WORK/knot"
    listen: 127.0.0.1@$KNOT_PORT
database:
    storage: "$WORK/knot"
template:
  - id: default
    storage: "$WORK"
zone:
  - domain: example.test
    file: example.test.zone
log:
  - target: stderr
    any: warning
EOF2
knotd -c "$WORK/knot/knot.conf" 2>"$WORK/knot.log" &
PIDS+=($!)
wait_answer "$KNOT_PORT" h0.example.test

LAST_PID=""
start_dns() { # name corefile; sets LAST_PID
  "$BIN" --corefile "$2" --manifests "$WORK/cluster" 2>"$WORK/$1.log" &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

CACHED_PORT=$(free_port); PLAIN_PORT=$(free_port)
cat > "$WORK/Corefile.cached" <<EOF2
.:$CACHED_PORT {
    bind 127.0.0.1
    cache 3600
    forward . 127.0.0.1:$KNOT_PORT
}
EOF2
cat > "$WORK/Corefile.plain" <<EOF2
.:$PLAIN_PORT {
    bind 127.0.0.1
    forward . 127.0.0.1:$KNOT_PORT
}
EOF2
RANDOM_PORT=$(free_port); X20_PORT=$(free_port)
cat > "$WORK/Corefile.random" <<EOF2
.:$RANDOM_PORT {
    bind 127.0.0.1
    forward . 127.0.0.1:$KNOT_PORT {
        source_port random
    }
}
EOF2
cat > "$WORK/Corefile.x20" <<EOF2
.:$X20_PORT {
    bind 127.0.0.1
    forward . 127.0.0.1:$KNOT_PORT {
        source_port random
        case_randomization
    }
}
EOF2
start_dns cached "$WORK/Corefile.cached"; CACHED_PID=$LAST_PID
start_dns plain "$WORK/Corefile.plain"; PLAIN_PID=$LAST_PID
start_dns random "$WORK/Corefile.random"; RANDOM_PID=$LAST_PID
start_dns x20 "$WORK/Corefile.x20"; X20_PID=$LAST_PID
wait_answer "$CACHED_PORT" h0.example.test
wait_answer "$PLAIN_PORT" h0.example.test
wait_answer "$RANDOM_PORT" h0.example.test
wait_answer "$X20_PORT" h0.example.test

echo "== warming the cache (one pass over $NAMES names)"
dnsperf -s 127.0.0.1 -p "$CACHED_PORT" -d "$WORK/names.txt" -n 1 -q 20 >/dev/null 2>&1

echo "== QPS: cache hits vs forward vs the upstream (${DURATION}s each)"
read -r hit_qps hit_avg hit_max hit_lost _ <<<"$(perf "$CACHED_PORT" "$WORK/names.txt" "$DURATION")"
read -r fwd_qps fwd_avg fwd_max fwd_lost _ <<<"$(perf "$PLAIN_PORT" "$WORK/names.txt" "$DURATION")"
read -r knot_qps knot_avg knot_max knot_lost _ <<<"$(perf "$KNOT_PORT" "$WORK/names.txt" "$DURATION")"
read -r rnd_qps rnd_avg rnd_max rnd_lost _ <<<"$(perf "$RANDOM_PORT" "$WORK/names.txt" "$DURATION")"
read -r x20_qps x20_avg x20_max x20_lost _ <<<"$(perf "$X20_PORT" "$WORK/names.txt" "$DURATION")"
HIT_RSS=$(awk '/^VmRSS/ {print $2}' "/proc/$CACHED_PID/status")
kill "$CACHED_PID" "$PLAIN_PID" "$RANDOM_PID" "$X20_PID" 2>/dev/null || true
ratio=$(awk -v a="$hit_qps" -v b="$fwd_qps" 'BEGIN {printf "%.2f", a/b}')
printf '%-28s %10s %9s %9s %7s\n' path QPS "avg ms" "max ms" lost
printf '%-28s %10.0f %9s %9s %7s\n' "cache hit (svcnet-dns)" "$hit_qps" "$hit_avg" "$hit_max" "$hit_lost"
printf '%-28s %10.0f %9s %9s %7s\n' "forward, no cache" "$fwd_qps" "$fwd_avg" "$fwd_max" "$fwd_lost"
printf '%-28s %10.0f %9s %9s %7s\n' "Knot DNS directly" "$knot_qps" "$knot_avg" "$knot_max" "$knot_lost"
echo "cache hit / forward = $ratio"
printf '%-28s %10.0f %9s %9s %7s\n' "forward, source_port random" "$rnd_qps" "$rnd_avg" "$rnd_max" "$rnd_lost"
printf '%-28s %10.0f %9s %9s %7s\n' "  + case_randomization" "$x20_qps" "$x20_avg" "$x20_max" "$x20_lost"
rnd_cost=$(awk -v a="$rnd_qps" -v b="$fwd_qps" 'BEGIN {printf "%.1f", (1 - a/b) * 100}')
x20_cost=$(awk -v a="$x20_qps" -v b="$fwd_qps" 'BEGIN {printf "%.1f", (1 - a/b) * 100}')
echo "QPS cost vs pooled: random ports ${rnd_cost}%, random ports + 0x20 ${x20_cost}%"

echo "== reload cost with $SERVICES services / $ENDPOINTS endpoints"
RL_PORT=$(free_port); RL_READY=$(free_port); RL_METRICS=$(free_port)
corefile_rl() { # ttl cache_ttl
  cat > "$WORK/Corefile.rl.new" <<EOF2
.:$RL_PORT {
    bind 127.0.0.1
    errors
    ready 127.0.0.1:$RL_READY
    prometheus 127.0.0.1:$RL_METRICS
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl $1
    }
    cache $2
    forward . 127.0.0.1:$KNOT_PORT
    reload 2s 1s
}
EOF2
  mv "$WORK/Corefile.rl.new" "$WORK/Corefile.rl"
}
corefile_rl 30 30
START_NS=$(date +%s%N)
start_dns reload "$WORK/Corefile.rl"; RL_PID=$LAST_PID
until curl -sf "http://127.0.0.1:$RL_READY/ready" >/dev/null; do
  kill -0 "$RL_PID" || { cat "$WORK/reload.log"; exit 1; }
  sleep 0.05
done
wait_answer "$RL_PORT" "svc-$((SERVICES-1)).ns-$(((SERVICES-1)%100)).svc.cluster.local"
STARTUP_MS=$(( ($(date +%s%N) - START_NS) / 1000000 ))
RL_SECONDS=$(( DURATION < 12 ? 12 : DURATION ))
# Let start-up work settle (source sync, first zone builds) and warm the cache once.
sleep 6
dnsperf -s 127.0.0.1 -p "$RL_PORT" -d "$WORK/services.txt" -n 1 -q 20 >/dev/null 2>&1

# editor KIND: rewrite the Corefile every 2 s while dnsperf runs.
editor() {
  local i=0
  while [ $i -lt $((RL_SECONDS / 2)) ]; do
    sleep 2
    i=$((i + 1))
    if [ "$1" = cache ]; then corefile_rl 30 $((30 + i % 2)); else corefile_rl $((30 + i % 2)) 30; fi
  done
}
reloads_so_far() { grep -c 'running configuration replaced' "$WORK/reload.log" || true; }

read -r base_qps base_avg base_max base_lost base_min <<<"$(perf "$RL_PORT" "$WORK/services.txt" "$RL_SECONDS")"
before=$(reloads_so_far)
editor cache & ED=$!
read -r c_qps c_avg c_max c_lost c_min <<<"$(perf "$RL_PORT" "$WORK/services.txt" "$RL_SECONDS")"
wait "$ED"; sleep 3
c_reloads=$(( $(reloads_so_far) - before ))
before=$(reloads_so_far)
editor ttl & ED=$!
read -r t_qps t_avg t_max t_lost t_min <<<"$(perf "$RL_PORT" "$WORK/services.txt" "$RL_SECONDS")"
wait "$ED"; sleep 3
t_reloads=$(( $(reloads_so_far) - before ))
TOOK=$(grep -o 'took=[0-9.]*[mµn]*s' "$WORK/reload.log" | cut -d= -f2 | tr '\n' ' ')
FAILED=$(curl -s "http://127.0.0.1:$RL_METRICS/metrics" | awk '/^coredns_reload_failed_total/ {print $2}')
RL_RSS=$(awk '/^VmRSS/ {print $2}' "/proc/$RL_PID/status")

printf '\n%-34s %8s %10s %9s %9s %7s %14s\n' run reloads QPS "avg ms" "max ms" lost "min QPS/1s"
printf '%-34s %8s %10.0f %9s %9s %7s %14s\n' "no reload (baseline)" 0 "$base_qps" "$base_avg" "$base_max" "$base_lost" "$base_min"
printf '%-34s %8s %10.0f %9s %9s %7s %14s\n' "reload: cache/forward edit" "$c_reloads" "$c_qps" "$c_avg" "$c_max" "$c_lost" "$c_min"
printf '%-34s %8s %10.0f %9s %9s %7s %14s\n' "reload: kubernetes ttl (rebuild)" "$t_reloads" "$t_qps" "$t_avg" "$t_max" "$t_lost" "$t_min"
echo "reload durations: $TOOK"
echo "failed reloads: ${FAILED:-?}; startup to first answer with $SERVICES services: ${STARTUP_MS} ms; RSS ${RL_RSS} kB"

kill "$RL_PID" 2>/dev/null || true

echo "== overload: $FLOOD_QPS distinct names/s to a 200 ms upstream (${DURATION}s)"
SLOW_PORT=$(free_port); OV_PORT=$(free_port)
python3 "$GEN" slowup "$SLOW_PORT" 200 &
PIDS+=($!)
wait_answer "$SLOW_PORT" x.slow.test
python3 "$GEN" names $((FLOOD_QPS * (DURATION + 2))) flood.test "$WORK/flood.txt"
python3 "$GEN" names 5000 legit.test "$WORK/legit.txt"
cat > "$WORK/Corefile.ov" <<EOF2
.:$OV_PORT {
    bind 127.0.0.1
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
    forward . 127.0.0.1:$SLOW_PORT {
        max_concurrent 1000
    }
}
EOF2
start_dns overload "$WORK/Corefile.ov"; OV_PID=$LAST_PID
wait_answer "$OV_PORT" "svc-0.ns-0.svc.cluster.local"
sleep 3
rcode_count() { grep -o "$1 [0-9]*" <<<"$2" | awk '{print $2}' | head -1; }
read -r ov_base_qps _ _ _ _ <<<"$(perf "$OV_PORT" "$WORK/services.txt" "$DURATION")"
OV_RSS0=$(awk '/^VmRSS/ {print $2}' "/proc/$OV_PID/status")
dnsperf -s 127.0.0.1 -p "$OV_PORT" -d "$WORK/flood.txt" -l "$DURATION" -Q "$FLOOD_QPS" -q 5000 -n 1 \
  >"$WORK/flood.out" 2>&1 & FLOOD=$!
dnsperf -s 127.0.0.1 -a 127.0.0.3 -p "$OV_PORT" -d "$WORK/legit.txt" -l "$DURATION" -Q 100 -q 50 -n 1 \
  >"$WORK/legit.out" 2>&1 & LEGIT=$!
OV_PEAK=$OV_RSS0
( while kill -0 "$FLOOD" 2>/dev/null; do
    awk '/^VmRSS/ {print $2}' "/proc/$OV_PID/status"; sleep 0.5
  done ) >"$WORK/rss.txt" &
RSSW=$!
read -r ov_qps _ _ _ _ <<<"$(perf "$OV_PORT" "$WORK/services.txt" "$DURATION")"
wait "$FLOOD" "$LEGIT" "$RSSW" || true
OV_PEAK=$(sort -n "$WORK/rss.txt" | tail -1)
sleep 3
OV_RSS1=$(awk '/^VmRSS/ {print $2}' "/proc/$OV_PID/status")
FLOOD_OUT=$(cat "$WORK/flood.out"); LEGIT_OUT=$(cat "$WORK/legit.out")
fl_sent=$(awk '/Queries sent/ {print $3}' <<<"$FLOOD_OUT")
fl_refused=$(rcode_count REFUSED "$FLOOD_OUT"); fl_noerror=$(rcode_count NOERROR "$FLOOD_OUT")
lg_sent=$(awk '/Queries sent/ {print $3}' <<<"$LEGIT_OUT")
lg_refused=$(rcode_count REFUSED "$LEGIT_OUT"); lg_noerror=$(rcode_count NOERROR "$LEGIT_OUT")
kill "$OV_PID" 2>/dev/null || true
printf '\nflood: sent %s, NOERROR %s, REFUSED %s; legit (127.0.0.3): sent %s, NOERROR %s, REFUSED %s\n' \
  "$fl_sent" "${fl_noerror:-0}" "${fl_refused:-0}" "$lg_sent" "${lg_noerror:-0}" "${lg_refused:-0}"
printf 'cluster QPS: %.0f without the flood, %.0f during it; RSS %s kB before, %s kB peak, %s kB after\n' \
  "$ov_base_qps" "$ov_qps" "$OV_RSS0" "$OV_PEAK" "$OV_RSS1"

CPU=$(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//')
cat > "$RESULTS" <<EOF2
# svcnet-dns cache and reload benchmark

Measured by \`bench/dns-cache/run.sh $DURATION\` on $(date -u +%Y-%m-%d), $(nproc) vCPU ($CPU), loopback,
dnsperf with $INFLIGHT queries in flight; client, servers and upstream share the same cores
(load average at the end of the run: $(cut -d" " -f1-3 /proc/loadavg), other builds may have shared the machine).

## Cache hits vs the forward path (same run, same $NAMES names)

| path | QPS | avg ms | max ms | lost |
|---|---|---|---|---|
| cache hit (\`cache 3600\` + \`forward\`, warmed) | $(printf '%.0f' "$hit_qps") | $hit_avg | $hit_max | $hit_lost |
| forward only (no cache), to Knot on loopback | $(printf '%.0f' "$fwd_qps") | $fwd_avg | $fwd_max | $fwd_lost |
| Knot DNS directly (reference) | $(printf '%.0f' "$knot_qps") | $knot_avg | $knot_max | $knot_lost |

Cache hit / forward: **$ratio×**. RSS of the cached server after the run: $HIT_RSS kB.

## Anti-spoofing options on the forward path (same run, no cache, Knot upstream)

| forward options | QPS | avg ms | max ms | lost | QPS cost vs pooled |
|---|---|---|---|---|---|
| \`source_port pooled\` (loopback default; row "forward only" above) | $(printf '%.0f' "$fwd_qps") | $fwd_avg | $fwd_max | $fwd_lost | - |
| \`source_port random\` (default for non-loopback upstreams) | $(printf '%.0f' "$rnd_qps") | $rnd_avg | $rnd_max | $rnd_lost | $rnd_cost % |
| \`source_port random\` + \`case_randomization\` | $(printf '%.0f' "$x20_qps") | $x20_avg | $x20_max | $x20_lost | $x20_cost % |

## Reloads with $SERVICES services / $ENDPOINTS endpoints

dnsperf sends A queries for all services for ${RL_SECONDS}s while the Corefile is rewritten every 2 s
(\`reload 2s 1s\`, file notifications). "min QPS/1s" is the lowest one-second QPS of the run (a pause
would show as a drop towards 0); "max ms" is dnsperf's maximum latency.

| run | reloads | QPS | avg ms | max ms | lost | min QPS/1s |
|---|---|---|---|---|---|---|
| no reload (baseline) | 0 | $(printf '%.0f' "$base_qps") | $base_avg | $base_max | $base_lost | $base_min |
| reload: cache TTL edit (cluster zone kept) | $c_reloads | $(printf '%.0f' "$c_qps") | $c_avg | $c_max | $c_lost | $c_min |
| reload: kubernetes ttl edit (zone rebuilt aside, then swapped) | $t_reloads | $(printf '%.0f' "$t_qps") | $t_avg | $t_max | $t_lost | $t_min |

Reload durations (load, build, bind, swap) as logged: $TOOK

Failed reloads: ${FAILED:-?}. Startup to the first answer for the last service: $STARTUP_MS ms. RSS: $RL_RSS kB.

## Overload: a flood of distinct names to a slow upstream

dnsperf floods distinct names (all cache misses) at $FLOOD_QPS QPS for ${DURATION}s from 127.0.0.1 to
\`forward . SLOW { max_concurrent 1000 }\` (upstream answers after 200 ms, $SERVICES-service cluster
loaded); meanwhile a second client on 127.0.0.3 asks distinct forwarded names at 100 QPS and a
third (dnsperf, $INFLIGHT in flight) asks cluster names.

| flood sent | flood NOERROR | flood REFUSED | 2nd client sent | 2nd client NOERROR | 2nd client REFUSED |
|---|---|---|---|---|---|
| $fl_sent | ${fl_noerror:-0} | ${fl_refused:-0} | $lg_sent | ${lg_noerror:-0} | ${lg_refused:-0} |

Cluster-name QPS: $(printf '%.0f' "$ov_base_qps") without the flood, $(printf '%.0f' "$ov_qps") during it.
RSS: $OV_RSS0 kB before the flood, $OV_PEAK kB peak, $OV_RSS1 kB 3 s after.
EOF2
echo "== wrote $RESULTS"
