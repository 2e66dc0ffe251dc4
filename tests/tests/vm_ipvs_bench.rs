//! IPVS programming benchmark in the user-mode-linux guest (run it with `bench/ipvs/run.sh`; it is `#[ignore]`d so
//! the default test run skips it). 10,000 ClusterIP services × 10 endpoints (110,000 kernel objects):
//!
//! - svcnet's netlink backend applying the whole table (raw `apply` of 110,000 operations), and the reconciler's
//!   first full sync from a cache snapshot (desired state + dump + diff + apply);
//! - one endpoint change with that table in place (incremental sync), repeated;
//! - the startup dump-and-diff of an already programmed table (a restart);
//! - `ipvsadm -R` restoring the same table, measured in the same guest; system calls counted with `strace -c` on
//!   a 1/10 sample for ipvsadm (it is too slow to trace whole) and on the whole run for svcnet;
//! - the `svcnet-proxy` binary's RSS with that cluster as a manifest directory.
//!
//! Each measurement runs in its own fresh network namespace (IPVS state is per namespace), so deleted real servers
//! of one run never slow down the next (the kernel keeps them in a trash list for minutes).
//! `SVCNET_BENCH_SERVICES` / `SVCNET_BENCH_ENDPOINTS` scale the table (default 10000 / 10).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use svcnet_core::ipvs::backend::{IpvsBackend, IpvsOp};
use svcnet_core::ipvs::memory::MemoryAddresses;
use svcnet_core::ipvs::netlink::{NetlinkAddresses, NetlinkIpvs};
use svcnet_core::ipvs::reconcile::Reconciler;
use svcnet_core::ipvs::table::{DestId, DestParams, Scheduler, ServiceId, ServiceParams};
use svcnet_core::ipvs::{NodeInfo, ProxyConfig, build};
use svcnet_core::model::Protocol;
use svcnet_core::source::manifests::parse_manifest;
use svcnet_core::{Kind, new_cache};
use svcnet_tests::vm::cluster::{ServiceSpec, bench_services, ipvsadm_restore_text};
use svcnet_tests::vm::guest::{self, run};
use svcnet_tests::vm::{self, Check, Vm};

/// Set in a child process that runs one measurement inside a network namespace.
const PHASE: &str = "SVCNET_BENCH_PHASE";
/// Where a phase writes its JSON result.
const RESULT_FILE: &str = "SVCNET_BENCH_RESULT";
/// The svcnet-proxy binary (built on the host).
const PROXY_BIN: &str = "SVCNET_PROXY_BIN";
/// A kubeconfig for the fake API server the host runs for the API start (reached over a tap
/// link); unset: the API part runs its own fake server inside the guest.
const HOST_API_KUBECONFIG: &str = "SVCNET_BENCH_HOST_API";
/// The host's tap device for the API start, and the two ends' addresses.
const BENCH_TAP: &str = "svcnet-bench";
const BENCH_TAP_HOST: &str = "10.231.0.1/30";
const BENCH_TAP_GUEST: &str = "10.231.0.2/30";

fn table_size() -> (usize, usize) {
    let get = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (
        get("SVCNET_BENCH_SERVICES", 10_000),
        get("SVCNET_BENCH_ENDPOINTS", 10),
    )
}

/// `SVCNET_BENCH_ONLY=reconcile,proxy` runs only the named parts (raw, reconcile, addresses,
/// ipvsadm, strace, proxy, api); default all. For profiling one part without the minutes of the rest.
fn wanted(part: &str) -> bool {
    match std::env::var("SVCNET_BENCH_ONLY") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|p| p.trim() == part),
        _ => true,
    }
}

/// Minor page faults of this process so far (`/proc/self/stat` field 10): in the guest each
/// costs tens of microseconds, so they explain much of the difference to native runs.
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_owned();
            rest.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs this test binary again as `phase` inside a fresh network namespace `ns` (lo up); `strace` counts its
/// system calls when `trace` is set. Returns the phase's JSON result (and the strace summary).
fn run_phase(phase: &str, ns: &str, trace: bool) -> anyhow::Result<(Value, Option<String>)> {
    run("ip", &["netns", "add", ns])?;
    run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
    let exe = std::env::current_exe()?;
    let result = format!("/tmp/bench-{phase}.json");
    let trace_file = format!("/tmp/bench-{phase}.strace");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]);
    if trace {
        cmd.args(["strace", "-c", "-f", "-o", &trace_file]);
    }
    cmd.arg(&exe)
        .args([
            "ipvs_benchmark",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PHASE, phase)
        .env(RESULT_FILE, &result)
        .stdin(Stdio::null());
    let out = cmd.output().context("starting a benchmark phase")?;
    if !out.status.success() {
        bail!(
            "phase {phase} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let value: Value = serde_json::from_str(&std::fs::read_to_string(&result)?)?;
    let summary = trace.then(|| std::fs::read_to_string(&trace_file).unwrap_or_default());
    let _ = run("ip", &["netns", "del", ns]);
    Ok((value, summary))
}

/// Total calls of an `strace -c` summary (the `total` line's calls column) and the named calls.
fn strace_calls(summary: &str) -> (u64, BTreeMap<String, u64>) {
    let mut total = 0;
    let mut by_name = BTreeMap::new();
    for line in summary.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors], syscall
        if cols.len() >= 5 && cols[0].parse::<f64>().is_ok() {
            let name = cols[cols.len() - 1];
            let calls = cols[3].parse().unwrap_or(0);
            if name == "total" {
                total = calls;
            } else {
                by_name.insert(name.to_owned(), calls);
            }
        }
    }
    (total, by_name)
}

fn ops_for(specs: &[ServiceSpec]) -> Vec<IpvsOp> {
    let params = ServiceParams {
        scheduler: Scheduler::Rr,
        flags: 0,
        timeout: 0,
    };
    let mut ops = Vec::with_capacity(specs.len() * 11);
    for s in specs {
        let id = ServiceId::new(Protocol::Tcp, s.cluster_ip.into(), s.port);
        ops.push(IpvsOp::AddService(id, params));
        for ep in &s.endpoints {
            ops.push(IpvsOp::AddDest(
                id,
                DestId::new((*ep).into(), s.target_port),
                DestParams::masq(1),
            ));
        }
    }
    ops
}

/// Phase `raw`: the netlink backend applies every operation of the table in one `apply`.
fn phase_raw(specs: &[ServiceSpec]) -> anyhow::Result<Value> {
    let ops = ops_for(specs);
    let started = Instant::now();
    let mut nl = NetlinkIpvs::open()?;
    let report = nl.apply(&ops)?;
    let elapsed = started.elapsed();
    ensure!(
        report.failures.is_empty(),
        "failures: {:?}",
        &report.failures[..report.failures.len().min(5)]
    );
    let stats = nl.socket_stats();
    Ok(json!({
        "objects": ops.len(),
        "ms": ms(elapsed),
        "round_trips": report.round_trips,
        "sends": stats.sends,
        "recvs": stats.recvs,
    }))
}

fn cache_with(specs: &[ServiceSpec]) -> anyhow::Result<svcnet_core::CacheWriter> {
    let (mut writer, _reader) = new_cache([Kind::Service, Kind::EndpointSlice]);
    for spec in specs {
        for object in parse_manifest(Path::new(&spec.file_name()), &spec.to_yaml())? {
            writer.apply(object);
        }
    }
    Ok(writer)
}

fn rss_kb(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) process `pid` has used so far, from `/proc/PID/stat` (clock ticks
/// of 10 ms).
fn cpu_ms(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) * 10
}

/// Phase `reconcile`: the reconciler's first full sync from a cache snapshot, then single endpoint changes, then
/// a second reconciler's startup dump-and-diff of the programmed table.
fn phase_reconcile(specs: &[ServiceSpec]) -> anyhow::Result<Value> {
    let config = ProxyConfig::default();
    let node = NodeInfo {
        node_name: Some("node-a".into()),
        local_addresses: vec![],
    };
    let mut writer = cache_with(specs)?;
    let addresses = MemoryAddresses::new(vec![]);

    let started = Instant::now();
    let mut desired = build(&writer.snapshot(), &config, &node);
    let built = started.elapsed();
    let mut rec = Reconciler::new(Box::new(NetlinkIpvs::open()?), Box::new(addresses.clone()));
    let first = rec.full_sync(&desired, &config)?;
    let full_elapsed = started.elapsed();
    ensure!(first.failures == 0, "first sync: {first:?}");
    ensure!(
        first.services_added == specs.len(),
        "first sync added {} services",
        first.services_added
    );

    // One endpoint change at a time: the last endpoint of service i moves to a new address.
    let mut change_ms = Vec::new();
    let mut change_round_trips = Vec::new();
    let mut change_ops = Vec::new();
    let mut change_faults = Vec::new();
    for round in 0..50u32 {
        let i = (round as usize * 197) % specs.len();
        let mut spec = specs[i].clone();
        let last = spec.endpoints.len() - 1;
        spec.endpoints[last] = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 250, 0, 1)) + round);
        let objects = parse_manifest(Path::new(&spec.file_name()), &spec.to_yaml())?;
        for object in objects {
            writer.apply(object);
        }
        let faults = minor_faults();
        let t = Instant::now();
        let delta = desired.update(&writer.snapshot(), &config, &node);
        let report = rec.sync_delta(&desired, &delta, &config)?;
        let took = ms(t.elapsed());
        change_ms.push(took);
        // Page faults inside the timed part (the read of the counter is outside it): each
        // costs ~24 µs in this guest pinned to one host CPU (~100 µs unpinned), so they
        // explain most outliers.
        change_faults.push((took, round, minor_faults() - faults));
        ensure!(
            !report.full && report.failures == 0,
            "change {round}: {report:?}"
        );
        change_round_trips.push(report.round_trips);
        change_ops.push(report.operations());
    }
    change_ms.sort_by(f64::total_cmp);
    change_faults.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (_, slowest_round, slowest_faults) = change_faults[0];
    let faultless_max = change_faults
        .iter()
        .filter(|c| c.2 == 0)
        .map(|c| c.0)
        .fold(0.0, f64::max);
    println!(
        "  one endpoint change, slowest five (ms, round, page faults): {:?}",
        &change_faults[..5]
    );

    // Both ways of reading the kernel's table see the same thing (and how long each takes).
    let listing = |text: bool, batched: bool| -> anyhow::Result<(Duration, Vec<String>)> {
        let mut nl = NetlinkIpvs::open()?;
        nl.set_text_listing(text);
        nl.set_batched_dumps(batched);
        let mut lines = Vec::new();
        let t = Instant::now();
        nl.for_each_service(&mut |svc, dests| {
            lines.push(format!("{} {:?}", svc.id, svc.params));
            for d in dests {
                lines.push(format!("  {} {:?}", d.id, d.params));
            }
        })?;
        let elapsed = t.elapsed();
        lines.sort();
        Ok((elapsed, lines))
    };
    let (netlink_read, netlink_lines) = listing(false, true)?;
    let (one_each_read, one_each_lines) = listing(false, false)?;
    let (text_read, text_lines) = listing(true, false)?;
    ensure!(
        netlink_lines == text_lines && one_each_lines == text_lines,
        "the text listing, batched and one-at-a-time netlink dumps differ ({} vs {} vs {} lines)",
        text_lines.len(),
        netlink_lines.len(),
        one_each_lines.len()
    );

    // Restart: a new reconciler reads the programmed table and finds nothing to do.
    let faults = minor_faults();
    let t = Instant::now();
    let desired_again = build(&writer.snapshot(), &config, &node);
    let restart_build = t.elapsed();
    let build_faults = minor_faults() - faults;
    let mut restarted =
        Reconciler::new(Box::new(NetlinkIpvs::open()?), Box::new(addresses.clone()));
    let again = restarted.full_sync(&desired_again, &config)?;
    let restart_elapsed = t.elapsed();
    let restart_faults = minor_faults() - faults;
    ensure!(
        again.services_added == 0 && again.services_deleted == 0 && again.dests_added == 0,
        "restart sync changed things: {again:?}"
    );
    let (rss, hwm) = rss_kb("self");
    Ok(json!({
        "services": specs.len(),
        "desired_build_ms": ms(built),
        "full_sync_ms": ms(full_elapsed),
        "full_sync_round_trips": first.round_trips,
        "full_sync_ops": first.operations(),
        "change_median_ms": change_ms[change_ms.len() / 2],
        "change_max_ms": change_ms[change_ms.len() - 1],
        "change_max_round": slowest_round,
        "change_max_faults": slowest_faults,
        "change_faultless_max_ms": faultless_max,
        "changes_with_faults": change_faults.iter().filter(|c| c.2 > 0).count(),
        "change_round_trips_max": change_round_trips.iter().max(),
        "change_round_trips_min": change_round_trips.iter().min(),
        "change_ops_max": change_ops.iter().max(),
        "restart_sync_ms": ms(restart_elapsed),
        "restart_build_ms": ms(restart_build),
        "restart_build_faults": build_faults,
        "restart_faults": restart_faults,
        "restart_ops": again.operations(),
        "read_netlink_ms": ms(netlink_read),
        "read_one_each_ms": ms(one_each_read),
        "read_text_ms": ms(text_read),
        "listed_lines": text_lines.len(),
        "rss_kb": rss,
        "hwm_kb": hwm,
    }))
}

/// The benchmark service `spec` with topology-aware routing on (`trafficDistribution: PreferClose`): its endpoints
/// alternate between zone-a (this node's zone) and zone-b, each with the zone hint kube's controller would give it;
/// `udp` makes its port UDP (for the stale-conntrack cleanup).
fn topology_yaml(spec: &ServiceSpec, udp: bool) -> String {
    let proto = if udp { "UDP" } else { "TCP" };
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  type: ClusterIP\n  \
         clusterIP: {ip}\n  clusterIPs: [{ip}]\n  trafficDistribution: PreferClose\n  ports:\n    - name: p\n      \
         port: {port}\n      protocol: {proto}\n      targetPort: {tp}\n---\napiVersion: discovery.k8s.io/v1\n\
         kind: EndpointSlice\nmetadata:\n  name: {name}-abcde\n  namespace: {ns}\n  labels:\n    \
         kubernetes.io/service-name: {name}\naddressType: IPv4\nports:\n  - name: p\n    port: {tp}\n    \
         protocol: {proto}\nendpoints:\n",
        name = spec.name,
        ns = spec.namespace,
        ip = spec.cluster_ip,
        port = spec.port,
        tp = spec.target_port,
    );
    for (j, ep) in spec.endpoints.iter().enumerate() {
        let zone = if j % 2 == 0 { "zone-a" } else { "zone-b" };
        let node = &spec.nodes[j % spec.nodes.len()];
        let _ = write!(
            y,
            "  - addresses: [{ep}]\n    conditions: {{ready: true, serving: true, terminating: false}}\n    \
             nodeName: {node}\n    zone: {zone}\n    hints: {{forZones: [{{name: {zone}}}]}}\n"
        );
    }
    y
}

/// Every tenth benchmark service is UDP in the topology phase.
fn topology_udp(i: usize) -> bool {
    i.is_multiple_of(10)
}

/// Phase `topology`: the benchmark table with topology hints on every service (this node in zone-a, so each
/// virtual server gets the zone-a half of its endpoints) and every tenth service UDP, programmed by the reconciler;
/// then single endpoint changes of TCP services (IPVS only) and of UDP services (IPVS, then the stale-conntrack
/// cleanup over ctnetlink, as the proxy's loop does), each with the round trips of IPVS and ctnetlink counted apart.
/// The conntrack table holds 2,000 unrelated UDP flows to port 53 (other addresses) and, before each UDP change,
/// one entry of a flow answered by the endpoint about to go (made with `conntrack -I`).
fn phase_topology(specs: &[ServiceSpec]) -> anyhow::Result<Value> {
    use svcnet_core::ipvs::conntrack::ctnetlink::NetlinkConntrack;
    use svcnet_core::ipvs::conntrack::{ConntrackBackend, StaleTracker};
    let config = ProxyConfig::default();
    let node = NodeInfo {
        node_name: Some("node-a".into()),
        local_addresses: vec![],
    };
    let (mut writer, _reader) = new_cache([Kind::Service, Kind::EndpointSlice, Kind::Node]);
    let node_yaml = "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-a\n  labels:\n    \
                     topology.kubernetes.io/zone: zone-a\n";
    for object in parse_manifest(Path::new("node-a.yaml"), node_yaml)? {
        writer.apply(object);
    }
    let apply = |writer: &mut svcnet_core::CacheWriter,
                 i: usize,
                 spec: &ServiceSpec|
     -> anyhow::Result<()> {
        for object in parse_manifest(
            Path::new(&spec.file_name()),
            &topology_yaml(spec, topology_udp(i)),
        )? {
            writer.apply(object);
        }
        Ok(())
    };
    for (i, spec) in specs.iter().enumerate() {
        apply(&mut writer, i, spec)?;
    }
    let started = Instant::now();
    let mut desired = build(&writer.snapshot(), &config, &node);
    let built = started.elapsed();
    // Topology is on: each virtual server has the zone-a half of its endpoints.
    let proto = |i: usize| {
        if topology_udp(i) {
            Protocol::Udp
        } else {
            Protocol::Tcp
        }
    };
    let id_of = |i: usize| ServiceId::new(proto(i), specs[i].cluster_ip.into(), specs[i].port);
    let want = specs[1].endpoints.len().div_ceil(2);
    let got = desired.server(&id_of(1)).map(|vs| vs.dests.len());
    ensure!(
        got == Some(want),
        "topology hints not applied: {got:?} real servers, want {want}"
    );
    let mut rec = Reconciler::new(
        Box::new(NetlinkIpvs::open()?),
        Box::new(MemoryAddresses::new(vec![])),
    );
    let first = rec.full_sync(&desired, &config)?;
    let full_elapsed = started.elapsed();
    ensure!(first.failures == 0, "first sync: {first:?}");

    // Conntrack as the proxy has it (IPVS keeps conntrack entries), with unrelated UDP flows in the table.
    std::fs::write("/proc/sys/net/ipv4/vs/conntrack", "1")?;
    // Conntrack hooks are registered in a namespace only once something uses them (the proxy's iptables rules do).
    run(
        "iptables-legacy",
        &[
            "-A",
            "OUTPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-j",
            "ACCEPT",
        ],
    )?;
    run("ip", &["link", "add", "bg0", "type", "dummy"])?;
    run("ip", &["addr", "add", "10.199.0.1/16", "dev", "bg0"])?;
    run("ip", &["link", "set", "bg0", "up"])?;
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    for k in 0..2000u32 {
        let to = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 199, 1, 0)) + k);
        sock.send_to(b"q", (to, 53))?;
    }
    let background: u64 = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")?
        .trim()
        .parse()?;
    ensure!(
        background >= 2000,
        "{background} conntrack entries after 2000 UDP flows"
    );
    let mut ct = NetlinkConntrack::open()?;
    let mut tracker = StaleTracker::new();
    ensure!(
        tracker.observe(&desired, None).is_empty(),
        "the first look only records"
    );

    let mut current: BTreeMap<usize, ServiceSpec> = BTreeMap::new();
    let mut tcp_ms = Vec::new();
    let mut tcp_rt = Vec::new();
    let mut udp_ipvs_ms = Vec::new();
    let mut udp_ipvs_rt = Vec::new();
    let mut udp_ct_ms = Vec::new();
    let mut udp_ct_rt = Vec::new();
    let mut udp_ct_scanned = Vec::new();
    let mut udp_ct_deleted = 0;
    let udp_count = specs.len().div_ceil(10);
    for round in 0..50u32 {
        for udp in [false, true] {
            let i = if udp {
                ((round as usize * 13) % udp_count) * 10
            } else {
                let i = (round as usize * 197) % specs.len();
                if topology_udp(i) {
                    (i + 1) % specs.len()
                } else {
                    i
                }
            };
            let mut spec = current.get(&i).cloned().unwrap_or_else(|| specs[i].clone());
            // Endpoint 0 (zone-a, so programmed here) moves to a new address, hinted for zone-a too.
            let old = spec.endpoints[0];
            spec.endpoints[0] = Ipv4Addr::from(
                u32::from(Ipv4Addr::new(10, 250, 0, 1)) + round * 2 + u32::from(udp),
            );
            if udp {
                // A client flow answered by the endpoint about to go.
                let sport = (40000 + round).to_string();
                run(
                    "conntrack",
                    &[
                        "-I",
                        "-p",
                        "udp",
                        "-s",
                        "10.244.250.1",
                        "-d",
                        &spec.cluster_ip.to_string(),
                        "--sport",
                        &sport,
                        "--dport",
                        &spec.port.to_string(),
                        "-r",
                        &old.to_string(),
                        "-q",
                        "10.244.250.1",
                        "--reply-port-src",
                        &spec.target_port.to_string(),
                        "--reply-port-dst",
                        &sport,
                        "-t",
                        "120",
                    ],
                )?;
            }
            apply(&mut writer, i, &spec)?;
            current.insert(i, spec);
            let t = Instant::now();
            let delta = desired.update(&writer.snapshot(), &config, &node);
            let report = rec.sync_delta(&desired, &delta, &config)?;
            let ipvs = t.elapsed();
            ensure!(
                !report.full && report.failures == 0 && report.operations() == 2,
                "change {round} (udp {udp}): {report:?}"
            );
            if !udp {
                tcp_ms.push(ms(ipvs));
                tcp_rt.push(report.round_trips);
                ensure!(
                    tracker.observe(&desired, Some(&delta.services)).is_empty(),
                    "a TCP change needs no cleanup"
                );
                continue;
            }
            udp_ipvs_ms.push(ms(ipvs));
            udp_ipvs_rt.push(report.round_trips);
            let t = Instant::now();
            let filters = tracker.observe(&desired, Some(&delta.services));
            ensure!(filters.len() == 1, "one stale endpoint: {filters:?}");
            let cleaned = ct.delete_matching(&filters)?;
            udp_ct_ms.push(ms(t.elapsed()));
            udp_ct_rt.push(cleaned.round_trips);
            udp_ct_scanned.push(cleaned.scanned);
            udp_ct_deleted += cleaned.deleted;
        }
    }
    ensure!(
        udp_ct_deleted == 50,
        "each UDP change deleted its stale entry: {udp_ct_deleted}"
    );
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    let (tcp_ms, udp_ipvs_ms, udp_ct_ms) = (sorted(tcp_ms), sorted(udp_ipvs_ms), sorted(udp_ct_ms));
    let stats = ct.socket_stats();
    Ok(json!({
        "services": specs.len(),
        "udp_services": udp_count,
        "desired_build_ms": ms(built),
        "full_sync_ms": ms(full_elapsed),
        "dests_per_service": want,
        "tcp_median_ms": tcp_ms[tcp_ms.len() / 2],
        "tcp_max_ms": tcp_ms[tcp_ms.len() - 1],
        "tcp_rt_min": tcp_rt.iter().min(),
        "tcp_rt_max": tcp_rt.iter().max(),
        "udp_ipvs_median_ms": udp_ipvs_ms[udp_ipvs_ms.len() / 2],
        "udp_ipvs_max_ms": udp_ipvs_ms[udp_ipvs_ms.len() - 1],
        "udp_ipvs_rt_min": udp_ipvs_rt.iter().min(),
        "udp_ipvs_rt_max": udp_ipvs_rt.iter().max(),
        "udp_ct_median_ms": udp_ct_ms[udp_ct_ms.len() / 2],
        "udp_ct_max_ms": udp_ct_ms[udp_ct_ms.len() - 1],
        "udp_ct_rt_min": udp_ct_rt.iter().min(),
        "udp_ct_rt_max": udp_ct_rt.iter().max(),
        "udp_ct_scanned_max": udp_ct_scanned.iter().max(),
        "ct_sends": stats.sends,
        "ct_recvs": stats.recvs,
        "conntrack_table": background,
    }))
}

/// Phase `with-addresses`: the reconciler's first full sync with the real rtnetlink address backend (binding every
/// cluster IP to `kube-ipvs0`), then a restart's dump-and-diff of IPVS and addresses.
fn phase_with_addresses(specs: &[ServiceSpec]) -> anyhow::Result<Value> {
    let config = ProxyConfig::default();
    let node = NodeInfo {
        node_name: Some("node-a".into()),
        local_addresses: vec![],
    };
    let writer = cache_with(specs)?;
    let started = Instant::now();
    let desired = build(&writer.snapshot(), &config, &node);
    let mut rec = Reconciler::new(
        Box::new(NetlinkIpvs::open()?),
        Box::new(NetlinkAddresses::open()?),
    );
    let first = rec.full_sync(&desired, &config)?;
    let full_elapsed = started.elapsed();
    ensure!(first.failures == 0, "first sync: {first:?}");
    ensure!(
        first.addresses_bound == specs.len(),
        "bound {} addresses",
        first.addresses_bound
    );
    let t = Instant::now();
    let desired = build(&writer.snapshot(), &config, &node);
    let restart_build = t.elapsed();
    let mut restarted = Reconciler::new(
        Box::new(NetlinkIpvs::open()?),
        Box::new(NetlinkAddresses::open()?),
    );
    let again = restarted.full_sync(&desired, &config)?;
    let restart_elapsed = t.elapsed();
    ensure!(
        again.operations() == 0 && again.addresses_bound == 0 && again.addresses_unbound == 0,
        "restart sync changed things: {again:?}"
    );
    Ok(json!({
        "full_sync_ms": ms(full_elapsed),
        "restart_sync_ms": ms(restart_elapsed),
        "restart_build_ms": ms(restart_build),
    }))
}

/// Runs `script` with `sh` inside a fresh namespace, returns the wall time.
fn timed_in_netns(ns: &str, script: &str) -> anyhow::Result<Duration> {
    run("ip", &["netns", "add", ns])?;
    run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
    let t = Instant::now();
    run("ip", &["netns", "exec", ns, "sh", "-ec", script])?;
    let elapsed = t.elapsed();
    run("ip", &["netns", "del", ns])?;
    Ok(elapsed)
}

fn count_services(ns: &str) -> anyhow::Result<usize> {
    let out = run("ip", &["netns", "exec", ns, "ipvsadm", "-Ln"])?;
    Ok(out.lines().filter(|l| l.starts_with("TCP")).count())
}

/// Waits until `proc`'s log has a line containing every one of `needles`; returns the time since
/// `started` and that line. Fails when the process exits or logs a failed sync.
fn wait_for_log(
    proc: &mut guest::Background,
    needles: &[&str],
    started: Instant,
    within: Duration,
) -> anyhow::Result<(Duration, String)> {
    while started.elapsed() < within {
        let log = strip_ansi(&proc.log());
        if let Some(line) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return Ok((started.elapsed(), line.to_owned()));
        }
        if log.contains("sync failed") {
            bail!("svcnet-proxy failed to sync:\n{log}");
        }
        if !proc.is_running() {
            bail!("svcnet-proxy exited:\n{}", proc.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "svcnet-proxy logged no line with {needles:?} within {within:?}:\n{}",
        proc.log()
    )
}

/// Text without ANSI colour sequences (`ESC [ ... m`), which the proxy's log may contain.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `NAME=value` field of a log line, in milliseconds.
fn logged(line: &str, name: &str) -> f64 {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// "proxy CPU N ms, M page faults so far" from the usage the proxy logged at `when`
/// (`loaded`: the cluster state received; `synced`: the end of the first full sync).
fn usage_so_far(p: &Value, when: &str) -> String {
    let get = |k: &str| p.get(format!("{when}_{k}")).and_then(Value::as_f64);
    match (get("cpu_ms"), get("faults")) {
        (Some(cpu), Some(faults)) if cpu.is_finite() && faults.is_finite() => {
            format!("proxy CPU {cpu:.0} ms and {faults:.0} page faults so far")
        }
        _ => "proxy CPU not logged".to_owned(),
    }
}

/// The `ms=` field of a log line.
fn logged_ms(line: &str) -> f64 {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// One start of svcnet-proxy on `dir` in namespace `ns`: time until the cluster state is loaded,
/// until the first full sync is logged, that sync's own duration, and the RSS 2 s later.
fn proxy_start(name: &str, proxy: &str, dir: &str, ns: &str) -> anyhow::Result<Value> {
    proxy_run(
        name,
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "env",
            "NO_COLOR=1",
            "RUST_LOG=info,svcnet_core::ipvs::run=debug",
            proxy,
            "--manifests",
            dir,
            "--node-name",
            "node-a",
        ],
    )
}

/// [`proxy_start`] of any command line starting svcnet-proxy.
fn proxy_run(name: &str, program: &str, args: &[&str]) -> anyhow::Result<Value> {
    let started = Instant::now();
    let mut proc = guest::Background::spawn(name, program, args)?;
    let pid = proc.pid().to_string();
    let within = Duration::from_secs(180);
    let (loaded, loaded_line) =
        wait_for_log(&mut proc, &["cluster state received"], started, within)?;
    let (synced, line) = wait_for_log(&mut proc, &["synced", "full=true"], started, within)?;
    let (_, phases) = wait_for_log(&mut proc, &["full sync phases"], started, within)?;
    std::thread::sleep(Duration::from_secs(2));
    let (rss, hwm) = rss_kb(&pid);
    let cpu = cpu_ms(&pid);
    let log = proc.stop(Duration::from_secs(10));
    println!("  {name} log:\n{log}");
    Ok(json!({
        "loaded_ms": ms(loaded),
        "loaded_cpu_ms": logged(&loaded_line, "cpu_ms"),
        "loaded_faults": logged(&loaded_line, "page_faults"),
        "synced_cpu_ms": logged(&phases, "cpu_ms"),
        "synced_faults": logged(&phases, "page_faults"),
        "first_sync_ms": ms(synced),
        "sync_ms": logged_ms(&line),
        "desired_ms": logged(&phases, "desired_ms"),
        "kernel_ms": logged(&phases, "kernel_ms"),
        "host_ms": logged(&phases, "host_ms"),
        "rss_kb": rss,
        "hwm_kb": hwm,
        "cpu_ms": cpu,
    }))
}

/// Starts svcnet-proxy on a manifest directory of the table in a fresh namespace, waits for its
/// first full sync (from its log: polling `ipvsadm -Ln` would cost seconds of the guest's only
/// CPU per call), checks the kernel has every service, then restarts it on the programmed table.
fn proxy_rss(specs: &[ServiceSpec]) -> anyhow::Result<Option<(Value, Value)>> {
    let Ok(proxy) = std::env::var(PROXY_BIN) else {
        println!("  svcnet-proxy not built: skipping the RSS measurement");
        return Ok(None);
    };
    let dir = PathBuf::from("/tmp/bench-cluster");
    std::fs::create_dir_all(&dir)?;
    for spec in specs {
        spec.write_to(&dir)?;
    }
    svcnet_tests::vm::cluster::write_node(&dir, "node-a", Ipv4Addr::new(192, 168, 1, 10))?;
    let ns = "bench-proxy";
    run("ip", &["netns", "add", ns])?;
    run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
    let dir_s = dir.to_string_lossy().into_owned();
    let first = proxy_start("bench-proxy", &proxy, &dir_s, ns)?;
    let programmed = count_services(ns)?;
    ensure!(
        programmed == specs.len(),
        "svcnet-proxy programmed {programmed} of {} services",
        specs.len()
    );
    let restart = proxy_start("bench-proxy-restart", &proxy, &dir_s, ns)?;
    let _ = run("ip", &["netns", "del", ns]);
    Ok(Some((first, restart)))
}

/// A cold start from the Kubernetes API, in the guest: the fake API server of the test support
/// code (a test double speaking real HTTP list/watch; paged lists with the client's
/// `limit=500`) serves the benchmark cluster, and svcnet-proxy programs the kernel in the
/// guest's own namespace. Run last: the table stays behind. The server runs on the host
/// ([`HostApi`], reached over a tap link) like a real API server on another machine; where the
/// host could not make the link, it runs here on the guest's loopback and shares the guest's
/// one CPU with the proxy.
fn proxy_api(specs: &[ServiceSpec]) -> anyhow::Result<Option<Value>> {
    let Ok(proxy) = std::env::var(PROXY_BIN) else {
        return Ok(None);
    };
    // The manifest directory of the part before is not needed any more (tmpfs: memory).
    let _ = std::fs::remove_dir_all("/tmp/bench-cluster");
    run("ip", &["link", "set", "lo", "up"])?;
    if let Ok(kubeconfig) = std::env::var(HOST_API_KUBECONFIG) {
        // The host serves the cluster: the guest's one CPU is the proxy's alone.
        let mut result = proxy_api_run(&proxy, &kubeconfig)?;
        result["server"] = json!("host");
        return Ok(Some(result));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let fake = runtime.block_on(svcnet_tests::fake_apiserver::FakeApiServer::start())?;
    fill_fake_api(&fake, specs)?;
    let kubeconfig = "/tmp/bench-kubeconfig";
    std::fs::write(kubeconfig, fake.kubeconfig_yaml())?;
    let mut result = proxy_api_run(&proxy, kubeconfig)?;
    result["server"] = json!("guest");
    let lists = fake
        .requests()
        .iter()
        .filter(|r| !r.is_watch() && r.param("limit").is_some())
        .count();
    result["list_requests"] = json!(lists);
    drop(fake);
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(Some(result))
}

/// The benchmark cluster (and the proxy's Node) in a fake API server.
fn fill_fake_api(
    fake: &svcnet_tests::fake_apiserver::FakeApiServer,
    specs: &[ServiceSpec],
) -> anyhow::Result<()> {
    fake.apply(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.10"}]}
    }));
    for spec in specs {
        let docs: Vec<Value> = serde_saphyr::from_multiple(&spec.to_yaml())?;
        for doc in docs {
            fake.apply(doc);
        }
    }
    Ok(())
}

/// Starts svcnet-proxy on `kubeconfig` in the guest's own namespace and waits for its table.
fn proxy_api_run(proxy: &str, kubeconfig: &str) -> anyhow::Result<Value> {
    proxy_run(
        "bench-proxy-api",
        "env",
        &[
            "NO_COLOR=1",
            "RUST_LOG=info,svcnet_core::ipvs::run=debug",
            proxy,
            "--kubeconfig",
            kubeconfig,
            "--node-name",
            "node-a",
        ],
    )
}

/// On the host, for the API start: a tap link to the guest and a fake API server on its host
/// end serving the benchmark cluster. `None` where the host cannot make a tap device (not
/// root, no /dev/net/tun): the API part then runs its fake server inside the guest.
struct HostApi {
    fake: svcnet_tests::fake_apiserver::FakeApiServer,
    kubeconfig: PathBuf,
    _tap: vm::HostTap,
    /// Runs the server; dropped after it.
    _runtime: tokio::runtime::Runtime,
}

impl HostApi {
    fn start() -> anyhow::Result<Self> {
        let tap = vm::HostTap::create(BENCH_TAP, BENCH_TAP_HOST)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let host_ip = BENCH_TAP_HOST
            .split('/')
            .next()
            .unwrap_or_default()
            .parse()?;
        let fake = runtime.block_on(svcnet_tests::fake_apiserver::FakeApiServer::start_on(
            host_ip,
        ))?;
        let (services, endpoints) = table_size();
        fill_fake_api(&fake, &bench_services(services, endpoints))?;
        // The guest sees the host's /tmp (read-only, under its own writes).
        let kubeconfig =
            std::env::temp_dir().join(format!("svcnet-bench-kubeconfig-{}", std::process::id()));
        std::fs::write(&kubeconfig, fake.kubeconfig_yaml())?;
        Ok(Self {
            fake,
            kubeconfig,
            _tap: tap,
            _runtime: runtime,
        })
    }

    /// Paged list requests the server answered.
    fn list_requests(&self) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| !r.is_watch() && r.param("limit").is_some())
            .count()
    }
}

impl Drop for HostApi {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

fn benchmark() -> anyhow::Result<()> {
    let (services, endpoints) = table_size();
    let specs = bench_services(services, endpoints);
    let objects = services * (endpoints + 1);
    println!("  table: {services} services x {endpoints} endpoints = {objects} objects");
    run("ipvsadm", &["-Ln"])?; // loads ip_vs

    let skipped = || Value::Null;
    let raw = if wanted("raw") {
        run_phase("raw", "bench-raw", false)?.0
    } else {
        skipped()
    };
    println!("  raw apply: {raw}");
    let rec = if wanted("reconcile") {
        run_phase("reconcile", "bench-rec", false)?.0
    } else {
        skipped()
    };
    println!("  reconciler: {rec}");
    let topo = if wanted("topology") {
        run_phase("topology", "bench-topo", false)?.0
    } else {
        skipped()
    };
    println!("  topology: {topo}");
    let mut addr = skipped();
    let mut ip_batch_time = Duration::ZERO;
    if wanted("addresses") {
        addr = run_phase("with-addresses", "bench-addr", false)?.0;
        println!("  reconciler with kube-ipvs0 addresses: {addr}");
        // The same number of addresses bound with `ip -batch`, for reference.
        let batch = "/tmp/bench-ip-batch.txt";
        let mut lines = String::from("link add kube-ipvs0 type dummy\n");
        for s in &specs {
            let _ = writeln!(lines, "addr add {}/32 dev kube-ipvs0", s.cluster_ip);
        }
        std::fs::write(batch, lines)?;
        ip_batch_time = timed_in_netns("bench-ip-batch", &format!("ip -batch {batch}"))?;
    }

    let mut ipvsadm_ms = f64::NAN;
    if wanted("ipvsadm") {
        let restore = "/tmp/bench-restore.txt";
        std::fs::write(restore, ipvsadm_restore_text(&specs))?;
        ipvsadm_ms = ms(timed_in_netns(
            "bench-ipvsadm",
            &format!("ipvsadm -R < {restore}"),
        )?);
        println!("  ipvsadm -R: {ipvsadm_ms:.0} ms");
    }

    // System calls: ipvsadm on a 1/10 sample (its calls are per object), svcnet on the whole table.
    let sample = &specs[..(services / 10).max(1)];
    let sample_objects = sample.len() * (endpoints + 1);
    let mut ipvsadm_calls_full = f64::NAN;
    let mut ipvsadm_by_name = BTreeMap::new();
    let mut svcnet_calls = 0;
    let mut svcnet_by_name = BTreeMap::new();
    if wanted("strace") {
        std::fs::write(
            "/tmp/bench-restore-sample.txt",
            ipvsadm_restore_text(sample),
        )?;
        timed_in_netns(
            "bench-ipvsadm-trace",
            "strace -c -f -o /tmp/bench-ipvsadm.strace ipvsadm -R < /tmp/bench-restore-sample.txt",
        )?;
        let ipvsadm_calls;
        (ipvsadm_calls, ipvsadm_by_name) =
            strace_calls(&std::fs::read_to_string("/tmp/bench-ipvsadm.strace")?);
        ipvsadm_calls_full = ipvsadm_calls as f64 * objects as f64 / sample_objects as f64;
        let (_, raw_trace) = run_phase("raw", "bench-raw-trace", true)?;
        (svcnet_calls, svcnet_by_name) = strace_calls(raw_trace.as_deref().unwrap_or_default());
    }
    let netlink_calls = |m: &BTreeMap<String, u64>| {
        [
            "sendmsg", "sendto", "recvmsg", "recvfrom", "recvmmsg", "sendmmsg", "socket",
        ]
        .iter()
        .map(|n| m.get(*n).copied().unwrap_or(0))
        .sum::<u64>()
    };

    let proxy = if wanted("proxy") {
        proxy_rss(&specs).unwrap_or_else(|e| {
            println!("  svcnet-proxy measurement failed: {e:#}");
            None
        })
    } else {
        None
    };
    let api = if wanted("api") {
        proxy_api(&specs).unwrap_or_else(|e| {
            println!("  svcnet-proxy start from the API failed: {e:#}");
            None
        })
    } else {
        None
    };

    // The report.
    let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| measurement ({services} services x {endpoints} endpoints = {objects} objects) | time | round trips | system calls | vs `ipvsadm -R` |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|---:|");
    let _ = writeln!(
        t,
        "| `ipvsadm -R` of the whole table | {ipvsadm_ms:.0} ms | {objects} (one per object) | ~{ipvsadm_calls_full:.0} (netlink ~{:.0}; strace on a 1/10 sample, scaled) | 1x |",
        netlink_calls(&ipvsadm_by_name) as f64 * objects as f64 / sample_objects as f64
    );
    let _ = writeln!(
        t,
        "| svcnet netlink backend: apply all {objects} operations | {:.0} ms | {} | {svcnet_calls} whole process (netlink {}; socket calls {} sends + {} receives) | {:.0}x faster |",
        f(&raw, "ms"),
        raw["round_trips"],
        netlink_calls(&svcnet_by_name),
        raw["sends"],
        raw["recvs"],
        ipvsadm_ms / f(&raw, "ms")
    );
    let _ = writeln!(
        t,
        "| svcnet reconciler: first full sync from a cache snapshot (desired state {:.0} ms + dump + diff + apply) | {:.0} ms | {} | | {:.0}x faster |",
        f(&rec, "desired_build_ms"),
        f(&rec, "full_sync_ms"),
        rec["full_sync_round_trips"],
        ipvsadm_ms / f(&rec, "full_sync_ms")
    );
    let _ = writeln!(
        t,
        "| svcnet reconciler: first full sync including binding {services} cluster IPs to kube-ipvs0 (rtnetlink) | {:.0} ms | | | {:.0}x faster (`ip -batch` binding the same addresses alone: {:.0} ms) |",
        f(&addr, "full_sync_ms"),
        ipvsadm_ms / f(&addr, "full_sync_ms"),
        ms(ip_batch_time)
    );
    let _ = writeln!(
        t,
        "| svcnet: startup dump-and-diff of IPVS and kube-ipvs0 addresses (restart; desired state {:.0} ms of it) | {:.0} ms | | | |",
        f(&addr, "restart_build_ms"),
        f(&addr, "restart_sync_ms")
    );
    let _ = writeln!(
        t,
        "| svcnet: one endpoint change with the table in place (median / max of 50; the slowest was change {} with {} page faults; {} of the 50 had page faults, the slowest without any took {:.2} ms) | {:.2} / {:.2} ms | {}–{} ({} operations) | | |",
        rec["change_max_round"],
        rec["change_max_faults"],
        rec["changes_with_faults"],
        f(&rec, "change_faultless_max_ms"),
        f(&rec, "change_median_ms"),
        f(&rec, "change_max_ms"),
        rec["change_round_trips_min"],
        rec["change_round_trips_max"],
        rec["change_ops_max"]
    );
    let _ = writeln!(
        t,
        "| svcnet, topology hints on every service (this node's zone gets {} of {endpoints} endpoints; full sync {:.0} ms): one endpoint change of a TCP service (median / max of 50) | {:.2} / {:.2} ms | IPVS {}–{} | | |",
        topo["dests_per_service"],
        f(&topo, "full_sync_ms"),
        f(&topo, "tcp_median_ms"),
        f(&topo, "tcp_max_ms"),
        topo["tcp_rt_min"],
        topo["tcp_rt_max"]
    );
    let _ = writeln!(
        t,
        "| svcnet, topology on, one endpoint change of a UDP service ({} of them): IPVS change, then the stale-conntrack cleanup (conntrack table of {} entries; the kernel-filtered dump returned at most {}) (median / max of 50) | IPVS {:.2} / {:.2} ms, then cleanup {:.2} / {:.2} ms | IPVS {}–{}, then ctnetlink {}–{} | | |",
        topo["udp_services"],
        topo["conntrack_table"],
        topo["udp_ct_scanned_max"],
        f(&topo, "udp_ipvs_median_ms"),
        f(&topo, "udp_ipvs_max_ms"),
        f(&topo, "udp_ct_median_ms"),
        f(&topo, "udp_ct_max_ms"),
        topo["udp_ipvs_rt_min"],
        topo["udp_ipvs_rt_max"],
        topo["udp_ct_rt_min"],
        topo["udp_ct_rt_max"]
    );
    let _ = writeln!(
        t,
        "| svcnet: startup dump-and-diff of the programmed IPVS table (restart; desired state {:.0} ms of it; {} page faults, {} of them in the desired state) | {:.0} ms | | | ({} operations) |",
        f(&rec, "restart_build_ms"),
        rec["restart_faults"],
        rec["restart_build_faults"],
        f(&rec, "restart_sync_ms"),
        rec["restart_ops"]
    );
    let _ = writeln!(
        t,
        "| reading the programmed table ({} lines): text listing + netlink service dump / netlink dumps, 32 virtual servers per io_uring batch (the default) / netlink dumps one after the other | {:.0} / {:.0} / {:.0} ms | | | |",
        rec["listed_lines"],
        f(&rec, "read_text_ms"),
        f(&rec, "read_netlink_ms"),
        f(&rec, "read_one_each_ms")
    );
    let _ = writeln!(
        t,
        "| bench process RSS after the above (peak) | {:.1} MB ({:.1} MB) | | | |",
        f(&rec, "rss_kb") / 1024.0,
        f(&rec, "hwm_kb") / 1024.0
    );
    match &proxy {
        Some((first, restart)) => {
            for (what, p) in [
                ("start to table programmed", first),
                ("restart on the programmed table", restart),
            ] {
                let _ = writeln!(
                    t,
                    "| `svcnet-proxy --manifests` ({services} files): {what} (manifests loaded {:.0} ms, {}; full sync {:.0} ms: desired state {:.0}, kernel {:.0}, iptables/ipset {:.0}; {}); RSS (peak) | {:.0} ms | | | {:.1} MB ({:.1} MB) |",
                    f(p, "loaded_ms"),
                    usage_so_far(p, "loaded"),
                    f(p, "sync_ms"),
                    f(p, "desired_ms"),
                    f(p, "kernel_ms"),
                    f(p, "host_ms"),
                    usage_so_far(p, "synced"),
                    f(p, "first_sync_ms"),
                    f(p, "rss_kb") / 1024.0,
                    f(p, "hwm_kb") / 1024.0
                );
            }
        }
        None => {
            let _ = writeln!(
                t,
                "| `svcnet-proxy` RSS | not measured (see the log above) | | | |"
            );
        }
    }
    if let Some(p) = &api {
        let server = if p["server"] == "host" {
            format!(
                "fake API server on the host, reached over a tap link, {services} Services, paged \
                 lists of 500"
            )
        } else {
            format!(
                "fake API server in the guest, {services} Services, {} paged list requests; the \
                 rest of the time is the fake server's on the guest's one CPU",
                p["list_requests"]
            )
        };
        let _ = writeln!(
            t,
            "| `svcnet-proxy --kubeconfig` ({server}): start to table programmed (cluster state received {:.0} ms, {}; full sync {:.0} ms: desired state {:.0}, iptables/ipset {:.0}, kernel {:.0}; {}; the proxy's own CPU time {:.0} ms); RSS (peak) | {:.0} ms | | | {:.1} MB ({:.1} MB) |",
            f(p, "loaded_ms"),
            usage_so_far(p, "loaded"),
            f(p, "sync_ms"),
            f(p, "desired_ms"),
            f(p, "host_ms"),
            f(p, "kernel_ms"),
            usage_so_far(p, "synced"),
            f(p, "cpu_ms"),
            f(p, "first_sync_ms"),
            f(p, "rss_kb") / 1024.0,
            f(p, "hwm_kb") / 1024.0
        );
    }
    println!("BENCHMARK-TABLE-BEGIN\n{t}BENCHMARK-TABLE-END");
    Ok(())
}

#[test]
#[ignore = "benchmark: run bench/ipvs/run.sh (boots a user-mode-linux guest, minutes)"]
fn ipvs_benchmark() {
    if let Ok(phase) = std::env::var(PHASE) {
        let (services, endpoints) = table_size();
        let specs = bench_services(services, endpoints);
        let result = match phase.as_str() {
            "raw" => phase_raw(&specs),
            "reconcile" => phase_reconcile(&specs),
            "with-addresses" => phase_with_addresses(&specs),
            "topology" => phase_topology(&specs),
            other => panic!("unknown benchmark phase {other}"),
        }
        .unwrap_or_else(|e| panic!("phase {phase}: {e:#}"));
        let file = std::env::var(RESULT_FILE).expect("result file");
        std::fs::write(file, result.to_string()).expect("writing the phase result");
        return;
    }
    // 2 GB: the API part holds the whole cluster in the fake API server (objects, list pages
    // and watch history) beside the proxy.
    let mut machine = Vm::new().mem("2G").timeout(Duration::from_secs(1200));
    for var in [
        "SVCNET_BENCH_SERVICES",
        "SVCNET_BENCH_ENDPOINTS",
        "SVCNET_BENCH_ONLY",
    ] {
        if let Ok(v) = std::env::var(var) {
            machine = machine.env(var, v);
        }
    }
    let mut proxy_built = true;
    if let Ok(bin) = std::env::var(PROXY_BIN) {
        // A binary given by the caller (e.g. one already built), used as it is.
        machine = machine.env(PROXY_BIN, bin);
    } else if !vm::in_guest() && vm::uml_available() {
        match vm::cargo_binary("svcnet-proxy", "svcnet-proxy") {
            Ok(bin) => machine = machine.env(PROXY_BIN, bin),
            Err(e) => {
                proxy_built = false;
                eprintln!("svcnet-proxy not available ({e:#}); its RSS is not measured");
            }
        }
    }
    // The API start's cluster is served from the host over a tap link where the host allows
    // it, so that the fake server does not share the guest's one CPU with the proxy.
    let host_api = if vm::in_guest() || !wanted("api") || !proxy_built {
        None
    } else {
        match HostApi::start() {
            Ok(api) => {
                machine = machine
                    .network(BENCH_TAP, BENCH_TAP_GUEST)
                    .env(HOST_API_KUBECONFIG, &api.kubeconfig);
                Some(api)
            }
            Err(e) => {
                eprintln!("no tap link to the guest ({e:#}): the API start serves from the guest");
                None
            }
        }
    };
    vm::run_suite(
        "ipvs_benchmark",
        machine,
        &[Check::new("benchmark", benchmark)],
    );
    if let Some(api) = host_api {
        println!(
            "host API server: {} paged list requests answered, {} of them gzip-compressed",
            api.list_requests(),
            api.fake.compressed_responses()
        );
    }
}
