#!/usr/bin/env bash
# DNS serving benchmark: svcnet-dns vs Knot DNS on the same 10,000-service cluster zone.
#
# Builds release binaries, generates a synthetic cluster (10,000 services, 100,000 endpoints),
# exports its zone as RFC 1035 files, starts svcnet-dns (on the manifests) and knotd (on the
# exported zone files) on loopback, and runs dnsperf against each for the query mix
# (70% A, 10% SRV, 10% PTR, 10% NXDOMAIN) and each kind alone. Prints QPS, p50/p99 latency,
# the ratio svcnet/Knot and the RSS of both servers, and writes bench/dns/RESULTS.md. Also times
# how long a cache change (an endpoint change, a service added, a service deleted) takes to show
# in the served zone (incremental update) next to a full rebuild of the zone, in the same run.
#
# CONFIGS chooses how svcnet-dns is configured; each listed configuration runs as its own
# svcnet-dns on the same cluster, measured in the same rounds as Knot (svcnet configurations
# and Knot alternating), each with its own ratio:
#   plain       flags only (no Corefile): the cluster zone alone (default)
#   kubeadm     kubeadm's default Corefile (errors, health, ready, kubernetes with ttl 30 and
#               pods insecure, prometheus, forward, cache 30, loop, reload, loadbalance)
#   kubeadm-rt  the same plus a `rewrite name` regex rule and a `template` block for names the
#               query mix never asks, so both are evaluated and skipped on every query
#   baseline    `plain`'s flags served by the binary $BASELINE (e.g. a build of an earlier commit),
#               for a same-run before/after comparison
#   noreuse     `plain` with the reuse of encoded UDP answers turned off (--answer-cache-mib 0)
#   minimal     the Corefile equivalent of `plain`'s flags (ready + kubernetes only): the plugin
#               chain's own cost next to the flag mode's direct zone handler
#
# Usage: bench/dns/run.sh [seconds-per-run (default 10)]
# Env: SERVICES (10000), ENDPOINTS (100000), INFLIGHT (dnsperf -q, 100), NO_BUILD=1,
#      LAT_PIN (1: latency runs with the server on CPU 0 and dnsperf on CPU 1; 0: unpinned),
#      PROFILE=1 (perf profiles of each server during a mix run, into RESULTS.md),
#      CONFIGS ("plain"; e.g. "plain kubeadm kubeadm-rt").
set -euo pipefail

cd "$(dirname "$0")/../.."
REPO=$(pwd)
DURATION=${1:-10}
SERVICES=${SERVICES:-10000}
ENDPOINTS=${ENDPOINTS:-100000}
INFLIGHT=${INFLIGHT:-100}
# Each kind is measured ROUNDS times, svcnet and Knot alternating, and the median of the paired
# ratios is reported: single runs swing 2-3x on a shared VM.
ROUNDS=${ROUNDS:-3}
CONFIGS=${CONFIGS:-plain}
LAT_DURATION=3
RESULTS="$REPO/bench/dns/RESULTS.md"

for tool in dnsperf knotd knotc dig curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install dnsperf knot bind9-dnsutils curl)" >&2; exit 1; }
done

if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release -p svcnet-dns -p svcnet-dns-bench
fi
BIN="$REPO/target/release"

WORK=$(mktemp -d /tmp/svcnet-dns-bench.XXXXXX)
SVCNET_PID=""
KNOT_PID=""
declare -A CFG_PID=() CFG_PORT=()
cleanup() {
  for pid in "${CFG_PID[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -n "$KNOT_PID" ] && kill "$KNOT_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

echo "== generating ${SERVICES} services / ${ENDPOINTS} endpoints in $WORK"
"$BIN/svcnet-dns-bench" gen-cluster --services "$SERVICES" --endpoints "$ENDPOINTS" --out "$WORK/cluster"
EXPORT_OUT=$("$BIN/svcnet-dns-bench" export-zone --manifests "$WORK/cluster" --out "$WORK/zones")
BUILD_MS=$(awk '/^zone_build_ms/ {print $2}' <<<"$EXPORT_OUT")
"$BIN/svcnet-dns-bench" queries --services "$SERVICES" --out "$WORK/queries"
echo "== timing zone updates (cache change -> visible to queries)"
UPDATES_OUT=$("$BIN/svcnet-dns-bench" zone-updates --services "$SERVICES" --endpoints "$ENDPOINTS" --rounds 20)
echo "$UPDATES_OUT"
UPD_FULL_MS=$(awk '/^full_rebuild_ms/ {print $2}' <<<"$UPDATES_OUT")
UPD_INC_MS=$(awk '/^incremental_update_ms/ {print $3 " (p90 " $5 ", max " $7 ")"}' <<<"$UPDATES_OUT")
upd_row() { awk -v k="$1" '$1 == "visible_after_ms" && $2 == k {printf "| %s | %s | %s | %s |", k, $4, $6, $8}' <<<"$UPDATES_OUT"; }
UPD_ROWS="$(upd_row endpoint_change)
$(upd_row service_add)
$(upd_row service_delete)"
ZONE_RECORDS=$(grep -vc '^[;$]' "$WORK"/zones/*.zone | awk -F: '{s+=$2} END {print s}')

KNOT_PORT=$(free_port)
LAST_SVC="svc-$((SERVICES-1)).ns-$(((SERVICES-1)%100)).svc.cluster.local"

# corefile CONFIG READY_PORT -> a Corefile for that configuration (listen address from --listen)
corefile() {
  local cfg=$1 ready=$2
  local extra=""
  if [ "$cfg" = minimal ]; then
    cat <<EOF
cluster.local in-addr.arpa ip6.arpa:53 {
    ready 127.0.0.1:$ready
    kubernetes cluster.local in-addr.arpa ip6.arpa
}
EOF
    return
  fi
  if [ "$cfg" = kubeadm-rt ]; then
    extra='    rewrite stop {
        name regex (.*)\.db\.corp\.example\. {1}.default.svc.cluster.local.
        answer name (.*)\.default\.svc\.cluster\.local\. {1}.db.corp.example.
    }
    template IN A legacy.corp.example {
        match ^(?P<host>[a-z0-9-]+)\.legacy\.corp\.example\.$
        answer "{{ .Name }} 60 IN A 10.20.30.40"
        fallthrough
    }'
  fi
  cat <<EOF
.:53 {
    errors
    health 127.0.0.1:$(free_port) {
       lameduck 5s
    }
    ready 127.0.0.1:$ready
$extra
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus 127.0.0.1:$(free_port)
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
EOF
}

for cfg in $CONFIGS; do
  port=$(free_port)
  ready=$(free_port)
  echo "== starting svcnet-dns ($cfg) on 127.0.0.1:$port"
  START_NS=$(date +%s%N)
  case "$cfg" in
    plain | baseline | noreuse)
      bin="$BIN/svcnet-dns"
      extra=()
      if [ "$cfg" = baseline ]; then
        bin=${BASELINE:?"CONFIGS=baseline needs BASELINE=/path/to/svcnet-dns"}
      fi
      if [ "$cfg" = noreuse ]; then extra=(--answer-cache-mib 0); fi
      "$bin" --listen "127.0.0.1:$port" --manifests "$WORK/cluster" \
        --health off --metrics off --ready "127.0.0.1:$ready" --lameduck 0s "${extra[@]}" \
        2>"$WORK/svcnet-$cfg.log" &
      ;;
    kubeadm | kubeadm-rt | minimal)
      corefile "$cfg" "$ready" > "$WORK/Corefile.$cfg"
      "$BIN/svcnet-dns" --corefile "$WORK/Corefile.$cfg" --listen "127.0.0.1:$port" \
        --manifests "$WORK/cluster" 2>"$WORK/svcnet-$cfg.log" &
      ;;
    *) echo "unknown configuration $cfg (plain, baseline, noreuse, minimal, kubeadm, kubeadm-rt)" >&2; exit 1 ;;
  esac
  CFG_PID[$cfg]=$!
  CFG_PORT[$cfg]=$port
  until curl -sf "http://127.0.0.1:$ready/ready" >/dev/null; do
    kill -0 "${CFG_PID[$cfg]}" || { cat "$WORK/svcnet-$cfg.log"; exit 1; }
    sleep 0.05
  done
  # (dig prints its errors on stdout too: wait for an address.)
  until dig +short -p "$port" @127.0.0.1 "$LAST_SVC" | grep -q '^10\.'; do sleep 0.05; done
  STARTUP_MS=$(( ($(date +%s%N) - START_NS) / 1000000 ))
  if [ -z "$SVCNET_PID" ]; then
    SVCNET_PID=${CFG_PID[$cfg]}; SVCNET_PORT=$port; SVCNET_STARTUP_MS=$STARTUP_MS
  fi
done
FIRST_CFG=${CONFIGS%% *}

echo "== starting knotd on 127.0.0.1:$KNOT_PORT"
mkdir -p "$WORK/knot/db"
cat > "$WORK/knot/knot.conf" <<EOF
server:
    rundir: "$WORK/knot"
    listen: 127.0.0.1@$KNOT_PORT
database:
    storage: "$WORK/knot/db"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "$WORK/zones"
    semantic-checks: off
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: cluster.local
    file: cluster.local.zone
  - domain: in-addr.arpa
    file: in-addr.arpa.zone
  - domain: ip6.arpa
    file: ip6.arpa.zone
EOF
knotd -c "$WORK/knot/knot.conf" 2>"$WORK/knot.log" &
KNOT_PID=$!
for _ in $(seq 1 600); do
  if dig +short -p "$KNOT_PORT" @127.0.0.1 "svc-$((SERVICES-1)).ns-$(((SERVICES-1)%100)).svc.cluster.local" | grep -q '^10\.'; then break; fi
  kill -0 "$KNOT_PID" || { cat "$WORK/knot.log"; exit 1; }
  sleep 0.1
done

# Same answers from both (sanity): one of each kind.
for q in "svc-7.ns-7.svc.cluster.local A" "_http._tcp.svc-7.ns-7.svc.cluster.local SRV" \
         "8.0.96.10.in-addr.arpa PTR" "missing-1.ns-1.svc.cluster.local A"; do
  set -- $q
  a=$(dig +norec +short -p "$SVCNET_PORT" @127.0.0.1 "$1" "$2" | sort)
  b=$(dig +norec +short -p "$KNOT_PORT" @127.0.0.1 "$1" "$2" | sort)
  if [ "$a" != "$b" ]; then echo "answers differ for $q: svcnet=[$a] knot=[$b]" >&2; exit 1; fi
done

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run PORT FILE PID -> "qps avg_ms p50_ms p99_ms lost cpu_us_per_query"
run_dnsperf() {
  local port=$1 file=$2 pid=$3 out qps avg lost lat t0 t1 cpu
  t0=$(cpu_ticks "$pid")
  out=$(dnsperf -s 127.0.0.1 -p "$port" -d "$file" -l "$DURATION" -q "$INFLIGHT" 2>&1)
  t1=$(cpu_ticks "$pid")
  qps=$(awk '/Queries per second/ {print $4}' <<<"$out")
  avg=$(awk '/Average Latency/ {printf "%.3f", $4*1000}' <<<"$out")
  lost=$(awk '/Queries lost/ {print $3}' <<<"$out")
  # The server's CPU time (user + system, clock ticks) over the queries it answered.
  cpu=$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v q="$qps" -v d="$DURATION" \
    'BEGIN {printf "%.2f", t / hz * 1e6 / (q * d)}')
  # The per-query lines go to a file and are read after the run: parsed while it ran, awk and
  # sort would compete for the two cores with the server and dnsperf (more so for the faster
  # server, which writes more lines).
  # Latency with the server on CPU 0 and dnsperf on CPU 1 (as with the client on another
  # machine): unpinned, the scheduler places three busy threads (the server's and dnsperf's
  # sender and receiver) on two cores differently from run to run, and p50 swings 3x with it.
  local pin=()
  if [ "$(nproc)" -ge 2 ] && [ "${LAT_PIN:-1}" = 1 ]; then
    taskset -a -p -c 0 "$pid" >/dev/null
    pin=(taskset -c 1)
  fi
  "${pin[@]}" dnsperf -s 127.0.0.1 -p "$port" -d "$file" -l "$LAT_DURATION" -q "$INFLIGHT" -v >"$WORK/latency.out" 2>/dev/null
  [ ${#pin[@]} -gt 0 ] && taskset -a -p -c "0-$(($(nproc) - 1))" "$pid" >/dev/null
  lat=$(awk '/^> / {print $NF}' "$WORK/latency.out" | sort -g \
    | awk '{v[NR]=$1} END {if (NR==0) {print "- -"; exit} printf "%.3f %.3f", v[int(NR*0.5)+1]*1000, v[int(NR*0.99)+1]*1000}')
  rm -f "$WORK/latency.out"
  echo "$qps $avg $lat $lost $cpu"
}

median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

declare -A LABEL=([mix]="mix 70/10/10/10" [a]="A (services)" [srv]="SRV" [ptr]="PTR" [nx]="NXDOMAIN")
ROWS=""
CPU_ROWS=""
PROFILES=""
# profile CONFIG PID PORT FILE: perf samples of the server during a 3 s dnsperf run of FILE;
# appends its split by binary and its top symbols to PROFILES (PROFILE=1, needs linux-perf).
profile() {
  local cfg=$1 pid=$2 port=$3 file=$4 data="$WORK/perf-$1.data"
  command -v perf >/dev/null || { echo "PROFILE=1 needs perf (apt-get install linux-perf)" >&2; return; }
  dnsperf -s 127.0.0.1 -p "$port" -d "$file" -l 4 -q "$INFLIGHT" >/dev/null 2>&1 &
  local dp=$!
  sleep 0.5
  perf record -q -g -p "$pid" -o "$data" -- sleep 3 >/dev/null 2>&1 || true
  wait "$dp" || true
  PROFILES+="### $cfg (mix, $(perf report -i "$data" --stdio 2>/dev/null | awk '/^# Samples:/ {print $3, "samples"}'))"$'\n\n'
  PROFILES+='```'$'\n'
  PROFILES+="$(perf report -i "$data" --no-children --stdio --sort dso 2>/dev/null | grep -E '^ +[0-9]' | awk 'NR <= 4')"$'\n'
  PROFILES+="$(perf report -i "$data" --no-children --stdio --sort sym 2>/dev/null | grep -E '^ +[0-9]' | awk 'NR <= 15' | cut -c1-110)"$'\n'
  PROFILES+='```'$'\n\n'
}
printf '\n%-18s %-11s %12s %9s %9s %12s %9s %9s %7s\n' "queries" "svcnet" "svcnet QPS" "p50 ms" "p99 ms" "Knot QPS" "p50 ms" "p99 ms" "ratio"
for kind in mix a srv ptr nx; do
  file="$WORK/queries/$kind.txt"
  # Per configuration ("knot" for Knot): QPS, p50 and p99 of each round, and queries lost.
  declare -A QPS=() P50=() P99=() LOST=() RATIOS=() CPU=()
  for round in $(seq 1 "$ROUNDS"); do
    for cfg in $CONFIGS knot; do
      port=$KNOT_PORT; pid=$KNOT_PID
      [ "$cfg" != knot ] && { port=${CFG_PORT[$cfg]}; pid=${CFG_PID[$cfg]}; }
      if [ -n "${PROFILE:-}" ] && [ "$kind" = mix ] && [ "$round" = 1 ]; then
        profile "$cfg" "$pid" "$port" "$file"
      fi
      read -r qps _ p50 p99 lost cpu <<<"$(run_dnsperf "$port" "$file" "$pid")"
      QPS[$cfg]+=" $qps"; P50[$cfg]+=" $p50"; P99[$cfg]+=" $p99"; CPU[$cfg]+=" $cpu"
      LOST[$cfg]=$(( ${LOST[$cfg]:-0} + ${lost:-0} ))
    done
    k=${QPS[knot]##* }
    for cfg in $CONFIGS; do
      RATIOS[$cfg]+=" $(awk -v a="${QPS[$cfg]##* }" -v b="$k" 'BEGIN {printf "%.2f", a/b}')"
    done
  done
  k_qps=$(median <<<"${QPS[knot]}"); k_p50=$(median <<<"${P50[knot]}"); k_p99=$(median <<<"${P99[knot]}")
  CPU_ROWS+="| ${LABEL[$kind]} | $(for cfg in $CONFIGS knot; do printf '%s: %s µs (%s) ' "$cfg" "$(median <<<"${CPU[$cfg]}")" "$(tr ' ' ',' <<<"${CPU[$cfg]# }")"; done) |"$'\n'
  for cfg in $CONFIGS; do
    s_qps=$(median <<<"${QPS[$cfg]}"); s_p50=$(median <<<"${P50[$cfg]}"); s_p99=$(median <<<"${P99[$cfg]}")
    ratios=${RATIOS[$cfg]# }
    ratio=$(median <<<"$ratios")
    echo "  $kind $cfg rounds: svcnet [${QPS[$cfg]# }] p50 [${P50[$cfg]# }] knot [${QPS[knot]# }] p50 [${P50[knot]# }] ratios [$ratios]"
    printf '%-18s %-11s %12.0f %9s %9s %12.0f %9s %9s %7s\n' "${LABEL[$kind]}" "$cfg" "$s_qps" "$s_p50" "$s_p99" "$k_qps" "$k_p50" "$k_p99" "$ratio"
    ROWS+=$(printf '| %s | %s | %.0f | %s / %s | %s | %.0f | %s / %s | %s | %s |' \
      "${LABEL[$kind]}" "$cfg" "$s_qps" "$s_p50" "$s_p99" "${LOST[$cfg]}" "$k_qps" "$k_p50" "$k_p99" "${LOST[knot]}" "$ratio (${ratios// /, })")
    ROWS+=$'\n'
  done
  unset QPS P50 P99 LOST RATIOS CPU
done

S_RSS=$(rss_kb "$SVCNET_PID"); S_HWM=$(hwm_kb "$SVCNET_PID")
K_RSS=$(rss_kb "$KNOT_PID"); K_HWM=$(hwm_kb "$KNOT_PID")
printf '\nRSS: svcnet-dns %d MB (peak %d MB), knotd %d MB (peak %d MB)\n' \
  $((S_RSS/1024)) $((S_HWM/1024)) $((K_RSS/1024)) $((K_HWM/1024))
printf 'zone build (full rebuild of %d services): %s ms; svcnet-dns start to serving: %d ms\n' \
  "$SERVICES" "$BUILD_MS" "$SVCNET_STARTUP_MS"
printf 'cache change visible after (median ms): %s; incremental update %s ms vs full rebuild %s ms\n' \
  "$(awk '$1 == "visible_after_ms" {printf "%s %s  ", $2, $4}' <<<"$UPDATES_OUT")" "$UPD_INC_MS" "$UPD_FULL_MS"

CPU=$(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//')
NCPU=$(nproc)
cat > "$RESULTS" <<EOF
# svcnet-dns vs Knot DNS (bench/dns/run.sh)

Measured $(date -u +%Y-%m-%d) on ${NCPU} vCPU (${CPU}), loopback, client and both servers on
the same cores; dnsperf $(dnsperf -h 2>&1 | awk '/^Version/ {print $2}' | head -1 || true) \
(\`-q ${INFLIGHT}\`, ${DURATION} s per run, ${ROUNDS} rounds per kind with svcnet and Knot alternating:
QPS, p50 and p99 columns are medians of the rounds, the ratio is the median of the paired
per-round ratios, listed in brackets; losses summed over the rounds; latency from a separate
${LAT_DURATION} s \`-v\` run in each round with the server on CPU 0 and dnsperf on CPU 1, its lines
parsed after the run),
Knot DNS $(knotd --version | awk '{print $NF}') serving the zone exported by svcnet
(${ZONE_RECORDS} records). Cluster: ${SERVICES} services (2 named ports each),
${ENDPOINTS} ready endpoints. svcnet configurations (\`CONFIGS\`, see the script): ${CONFIGS}.

| queries | svcnet config | svcnet-dns QPS | p50 / p99 ms | lost | Knot QPS | p50 / p99 ms | lost | svcnet/Knot |
|---|---|---|---|---|---|---|---|---|
${ROWS}
RSS after the runs: svcnet-dns (${FIRST_CFG}) $((S_RSS/1024)) MB (peak $((S_HWM/1024)) MB, includes the cluster
cache of ${SERVICES} services and ${ENDPOINTS} endpoints), knotd $((K_RSS/1024)) MB (peak
$((K_HWM/1024)) MB).

Full zone rebuild from a snapshot (${SERVICES} services): ${BUILD_MS} ms (mean of 5, release).
svcnet-dns from start to serving the whole cluster (manifest parse, cache, zone): ${SVCNET_STARTUP_MS} ms.

## Server CPU per answered query

CPU time of each server process (user + system, from \`/proc/PID/stat\`) over the queries it
answered in each QPS run: median (each round). The kernel's UDP send and receive, which run in
the server's system calls, are included.

| queries | µs per query |
|---|---|
${CPU_ROWS}
${PROFILES:+## Profiles (\`PROFILE=1\`: \`perf record -g\` of each server during a 3 s mix run)

${PROFILES}}
## Cache change to answer (\`svcnet-dns-bench zone-updates\`)

The zone updater running as in svcnet-dns on the same cluster; each change is written to the
cache and the served zone is polled (every 50 µs) until a query sees it. 20 changes of each kind.
Full rebuild of the same snapshot in the same run: ${UPD_FULL_MS} ms; one incremental update
(median): ${UPD_INC_MS} ms.

| change | median ms | p90 ms | max ms |
|---|---|---|---|
${UPD_ROWS}
EOF
echo "wrote $RESULTS"
