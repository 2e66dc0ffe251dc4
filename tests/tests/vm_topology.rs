//! Topology-aware routing on a real kernel (user-mode-linux guest) with the real `svcnet-proxy` binary: a
//! `trafficDistribution: PreferClose` Service whose EndpointSlice hints put pod-a and pod-c in zone-a and pod-b in
//! zone-b, and the proxy's Node (`node-a`, in a `--manifests` directory) labelled with its zone. Checked with traffic
//! from the node through the cluster IP: only same-zone backends answer; relabelling the Node moves traffic to the
//! other zone live; a zone no hint names, a Node without a zone label and an endpoint without hints all fall back to
//! every endpoint (kube-proxy's behaviour) with a log line naming why, and the proxy never crashes. An EndpointSlice
//! with both hint kinds uses this node's endpoint (node hints first, then zone hints, as kube-proxy); a malformed
//! slice is refused with a log line naming the file and the last good table stays.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, ensure};
use svcnet_tests::vm::guest::{self, Background, PodNetwork};
use svcnet_tests::vm::{self, Check};

const MANIFESTS: &str = "/tmp/svcnet-topology";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const VIP: &str = "10.96.20.10:80";

fn pod_ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, last)
}

/// The backends: (pod, address, zone hint).
const BACKENDS: [(&str, u8, &str); 3] = [
    ("pod-a", 10, "zone-a"),
    ("pod-b", 11, "zone-b"),
    ("pod-c", 12, "zone-a"),
];

/// Writes `node-a` (the proxy's node) with its zone label, or without one.
fn write_node(zone: Option<&str>) -> anyhow::Result<()> {
    let labels = zone
        .map(|z| format!("  labels:\n    topology.kubernetes.io/zone: {z}\n"))
        .unwrap_or_default();
    let yaml = format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-a\n{labels}status:\n  addresses:\n    \
         - {{type: InternalIP, address: {NODE_IP}}}\n"
    );
    write_atomically("nodes.yaml", &yaml)
}

/// Writes the `zonal` Service (PreferClose) and its EndpointSlice; `unhinted` names a pod whose endpoint has no hint.
fn write_service(unhinted: Option<&str>) -> anyhow::Result<()> {
    write_service_hinted(|pod, _, zone| {
        if unhinted == Some(pod) {
            String::new()
        } else {
            format!("    hints: {{forZones: [{{name: {zone}}}]}}\n")
        }
    })
}

/// Writes the `zonal` Service (PreferClose) and its EndpointSlice, with `hints(pod, node, zone)` as the hints lines
/// of each endpoint.
fn write_service_hinted(hints: impl Fn(&str, &str, &str) -> String) -> anyhow::Result<()> {
    let mut y = String::from(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: zonal\n  namespace: default\nspec:\n  type: ClusterIP\n  \
         clusterIP: 10.96.20.10\n  clusterIPs: [10.96.20.10]\n  trafficDistribution: PreferClose\n  ports:\n    \
         - name: http\n      port: 80\n      protocol: TCP\n      targetPort: 8080\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: zonal-abcde\n  namespace: default\n  \
         labels:\n    kubernetes.io/service-name: zonal\naddressType: IPv4\nports:\n  - name: http\n    port: 8080\n    \
         protocol: TCP\nendpoints:\n",
    );
    for (i, (pod, last, zone)) in BACKENDS.iter().enumerate() {
        let node = format!("node-{}", ["a", "b", "c"][i]);
        let _ = write!(
            y,
            "  - addresses: [{}]\n    conditions: {{ready: true, serving: true, terminating: false}}\n    \
             nodeName: {node}\n    zone: {zone}\n{}",
            pod_ip(*last),
            hints(pod, &node, zone)
        );
    }
    write_atomically("default-zonal.yaml", &y)
}

fn write_atomically(name: &str, text: &str) -> anyhow::Result<()> {
    let dir = Path::new(MANIFESTS);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name)).with_context(|| format!("renaming to {name}"))
}

struct Fixture {
    _net: PodNetwork,
    proxy: Option<Background>,
}

static FIXTURE: Mutex<Option<Fixture>> = Mutex::new(None);

fn fixture() -> anyhow::Result<MutexGuard<'static, Option<Fixture>>> {
    let guard = FIXTURE.lock().unwrap_or_else(|e| e.into_inner());
    ensure!(guard.is_some(), "the setup check failed; nothing to test");
    Ok(guard)
}

fn proxy_log(guard: &MutexGuard<'static, Option<Fixture>>) -> String {
    guard
        .as_ref()
        .and_then(|f| f.proxy.as_ref())
        .map(Background::log)
        .unwrap_or_default()
}

/// The live real servers of the virtual server `VIP` (weight > 0: removed TCP ones drain at weight 0), sorted.
fn real_servers() -> anyhow::Result<Vec<String>> {
    let prefix = format!("TCP {VIP} ");
    let mut out: Vec<String> = guest::ipvsadm_table()?
        .iter()
        .filter(|l| l.starts_with(&prefix) && !l.ends_with(" 0"))
        .filter_map(|l| l.split(" -> ").nth(1))
        .filter_map(|d| d.split_whitespace().next().map(str::to_owned))
        .collect();
    out.sort();
    Ok(out)
}

/// Waits until `VIP` has exactly the real servers of `pods`; returns how long it took.
fn wait_for_pods(pods: &[&str], within: Duration) -> anyhow::Result<Duration> {
    let mut want: Vec<String> = pods
        .iter()
        .map(|p| {
            let (_, last, _) = BACKENDS.iter().find(|(n, _, _)| n == p).expect("known pod");
            format!("{}:8080", pod_ip(*last))
        })
        .collect();
    want.sort();
    guest::wait_until(&format!("{VIP} -> {want:?}"), within, || {
        Ok(real_servers()? == want)
    })
}

/// Sends `n` requests from the node to the cluster IP; answers counted by pod name.
fn answers(n: usize) -> anyhow::Result<BTreeMap<String, usize>> {
    let vip: SocketAddr = VIP.parse()?;
    let mut hits = BTreeMap::new();
    for i in 0..n {
        let name = guest::http_get(vip, "/name", Duration::from_secs(2))
            .with_context(|| format!("request {i} to {vip}"))?;
        *hits.entry(name).or_default() += 1;
    }
    Ok(hits)
}

fn setup() -> anyhow::Result<()> {
    let mut net = PodNetwork::new("cbr0", Ipv4Addr::new(10, 244, 1, 1), 24)?;
    for (name, last, _) in BACKENDS {
        net.add_pod(name, pod_ip(last))?;
    }
    guest::add_dummy_link("eth0", &format!("{NODE_IP}/24"))?;
    std::fs::create_dir_all(MANIFESTS)?;
    write_node(Some("zone-a"))?;
    write_service(None)?;
    let bin = std::env::var(vm::PROXY_BIN).context("SVCNET_PROXY_BIN not set by the host")?;
    let mut proxy = Background::spawn(
        "svcnet-proxy",
        &bin,
        &["--manifests", MANIFESTS, "--node-name", "node-a"],
    )?;
    let waited = wait_for_pods(&["pod-a", "pod-c"], Duration::from_secs(20)).map_err(|e| {
        let alive = proxy.is_running();
        e.context(format!("proxy running: {alive}; log:\n{}", proxy.log()))
    })?;
    println!(
        "  zone-a table programmed {} ms after start",
        waited.as_millis()
    );
    *FIXTURE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Fixture {
        _net: net,
        proxy: Some(proxy),
    });
    Ok(())
}

/// Traffic from a zone-a node reaches only the zone-a backends, split evenly.
fn same_zone_only() -> anyhow::Result<()> {
    let guard = fixture()?;
    let hits = answers(30).with_context(|| proxy_log(&guard))?;
    let want: BTreeMap<String, usize> = [("pod-a".to_owned(), 15), ("pod-c".to_owned(), 15)].into();
    ensure!(hits == want, "from zone-a: {hits:?}, want {want:?}");
    Ok(())
}

/// Relabelling the Node to zone-b moves the table to pod-b, live.
fn zone_relabel_applies_live() -> anyhow::Result<()> {
    let guard = fixture()?;
    write_node(Some("zone-b"))?;
    let took = wait_for_pods(&["pod-b"], Duration::from_secs(20))
        .map_err(|e| e.context(proxy_log(&guard)))?;
    println!(
        "  zone relabel reached the kernel in {} ms",
        took.as_millis()
    );
    let hits = answers(10)?;
    ensure!(
        hits.len() == 1 && hits.get("pod-b") == Some(&10),
        "from zone-b: {hits:?}"
    );
    Ok(())
}

/// Waits until the proxy's log has `needle` (a line written once the change was applied).
fn wait_for_log(guard: &MutexGuard<'static, Option<Fixture>>, needle: &str) -> anyhow::Result<()> {
    guest::wait_until(
        &format!("log line {needle:?}"),
        Duration::from_secs(20),
        || Ok(proxy_log(guard).contains(needle)),
    )
    .map(|_| ())
    .map_err(|e| e.context(proxy_log(guard)))
}

/// Kube-proxy's fallbacks: a zone no hint names, a Node without a zone label, an endpoint without hints. Each uses
/// every endpoint, says why in the log, and the proxy keeps running.
fn fallbacks_use_every_endpoint_with_a_reason() -> anyhow::Result<()> {
    let mut guard = fixture()?;
    let all = ["pod-a", "pod-b", "pod-c"];

    write_node(Some("zone-x"))?;
    wait_for_pods(&all, Duration::from_secs(20)).map_err(|e| e.context(proxy_log(&guard)))?;
    wait_for_log(
        &guard,
        "no endpoint is hinted for this node's zone \"zone-x\"",
    )?;
    let hits = answers(30)?;
    ensure!(hits.len() == 3, "zone-x: every backend answers: {hits:?}");

    write_node(Some("zone-a"))?;
    wait_for_pods(&["pod-a", "pod-c"], Duration::from_secs(20))?;
    write_node(None)?;
    wait_for_pods(&all, Duration::from_secs(20)).map_err(|e| e.context(proxy_log(&guard)))?;
    wait_for_log(&guard, "this node has no topology.kubernetes.io/zone label")?;

    write_node(Some("zone-a"))?;
    wait_for_pods(&["pod-a", "pod-c"], Duration::from_secs(20))?;
    write_service(Some("pod-b"))?;
    wait_for_pods(&all, Duration::from_secs(20)).map_err(|e| e.context(proxy_log(&guard)))?;

    // And back: complete hints narrow the table again.
    write_service(None)?;
    wait_for_pods(&["pod-a", "pod-c"], Duration::from_secs(20))?;
    let running = guard
        .as_mut()
        .and_then(|f| f.proxy.as_mut())
        .is_some_and(Background::is_running);
    ensure!(running, "the proxy exited:\n{}", proxy_log(&guard));
    Ok(())
}

/// An EndpointSlice with both hint kinds (`forNodes` and `forZones`, as the controller writes them for
/// `PreferSameNode`): this node's endpoint only, as kube-proxy prefers the node hint; with no endpoint hinted for
/// this node, the zone hints. Then a malformed version of the slice (`forZones` not a list): refused with a log
/// line naming the file, the last good table stays, the proxy keeps running; the fixed version applies again.
fn both_hint_kinds_and_a_malformed_slice() -> anyhow::Result<()> {
    let mut guard = fixture()?;
    write_service_hinted(|_, node, zone| {
        format!("    hints: {{forZones: [{{name: {zone}}}], forNodes: [{{name: {node}}}]}}\n")
    })?;
    wait_for_pods(&["pod-a"], Duration::from_secs(20)).map_err(|e| e.context(proxy_log(&guard)))?;
    let hits = answers(20)?;
    ensure!(
        hits.keys().map(String::as_str).collect::<Vec<_>>() == ["pod-a"],
        "node hints: only this node's endpoint answers: {hits:?}"
    );
    // No endpoint hinted for node-a: the zone hints decide.
    write_service_hinted(|_, node, zone| {
        let other = if node == "node-a" { "node-b" } else { node };
        format!("    hints: {{forZones: [{{name: {zone}}}], forNodes: [{{name: {other}}}]}}\n")
    })?;
    wait_for_pods(&["pod-a", "pod-c"], Duration::from_secs(20))
        .map_err(|e| e.context(proxy_log(&guard)))?;

    write_service_hinted(|_, _, zone| format!("    hints: {{forZones: {zone}}}\n"))?;
    wait_for_log(&guard, "manifest rejected; keeping its last good version")?;
    let log = proxy_log(&guard);
    let line = log
        .lines()
        .rfind(|l| l.contains("manifest rejected"))
        .unwrap_or_default();
    ensure!(
        line.contains("default-zonal.yaml"),
        "the log line names the file: {line}"
    );
    std::thread::sleep(Duration::from_millis(500));
    wait_for_pods(&["pod-a", "pod-c"], Duration::from_millis(50))
        .map_err(|e| e.context(format!("the last good table stays: {:?}", real_servers())))?;
    write_service(None)?;
    wait_for_pods(&["pod-a", "pod-c"], Duration::from_secs(20))?;
    let running = guard
        .as_mut()
        .and_then(|f| f.proxy.as_mut())
        .is_some_and(Background::is_running);
    ensure!(running, "the proxy exited:\n{}", proxy_log(&guard));
    println!("  refused: {line}");
    Ok(())
}

fn teardown() -> anyhow::Result<()> {
    let fixture = FIXTURE.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(mut f) = fixture
        && let Some(proxy) = f.proxy.take()
    {
        let log = proxy.stop(Duration::from_secs(5));
        let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
        ensure!(panics.is_empty(), "the proxy panicked: {panics:?}");
    }
    Ok(())
}

fn checks() -> Vec<Check> {
    vec![
        Check::new("setup", setup),
        Check::new("same_zone_only", same_zone_only),
        Check::new("zone_relabel_applies_live", zone_relabel_applies_live),
        Check::new(
            "fallbacks_use_every_endpoint_with_a_reason",
            fallbacks_use_every_endpoint_with_a_reason,
        ),
        Check::new(
            "both_hint_kinds_and_a_malformed_slice",
            both_hint_kinds_and_a_malformed_slice,
        ),
        Check::new("teardown", teardown),
    ]
}

#[test]
fn topology_aware_routing_kernel() {
    vm::run_proxy_suite(
        "topology_aware_routing_kernel",
        "topology",
        Duration::from_secs(180),
        &checks(),
    );
}
