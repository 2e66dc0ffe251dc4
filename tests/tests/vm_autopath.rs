//! Node-local autopath (issue #14 item 3) with the real glibc resolver on a real kernel (user-mode-linux guest).
//!
//! The agent serves node-local DNS on 169.254.20.10 from a Corefile with `autopath @kubernetes` (the deployed
//! node-local form) over a manifest directory holding a pod `default/client` on this node (`spec.nodeName:
//! node-a`, IP 10.244.1.10) and a pod of another node. A pod namespace with the client's address runs
//! `getent ahosts` under `strace -f -e trace=sendto,sendmmsg,sendmsg` with a kubelet-style resolv.conf
//! (`search default.svc.cluster.local svc.cluster.local cluster.local`, `ndots:5`), and the DNS queries glibc
//! sends are counted: for `example.com` (forwarded to a stand-in upstream) and `web.other` (a cluster service),
//! with autopath off (the agent without `--node-name`: no node pods known) and on (`--node-name node-a`: the pod
//! watch of this node). A second pod namespace whose address is no pod of this node sends as many queries as
//! without autopath: it is answered plainly. The figures are printed.
//!
//! Skipped (passes trivially, says so) where user-mode-linux is not installed, like the other `vm_*` tests.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use svcnet_tests::vm::cluster;
use svcnet_tests::vm::guest::{self, Background, PodNetwork};
use svcnet_tests::vm::{self, Check, Vm};

const AGENTCTL_BIN: &str = "SVCNET_AGENTCTL_BIN";
const MANIFESTS: &str = "/tmp/svcnet-autopath-cluster";
const COREFILE: &str = "/tmp/svcnet-autopath-Corefile";
const RESOLV_CONF: &str = "/tmp/svcnet-autopath-resolv.conf";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const WEB_OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 10, 20);
const UPSTREAM: &str = "127.0.0.1:5399";
const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const ADMIN: &str = "127.0.0.1:9910";
/// The pod namespace with the address of `default/client`, a pod of this node.
const POD: &str = "pod-a";
/// A pod namespace whose address is a pod of another node.
const STRANGER: &str = "pod-b";

static NET: std::sync::Mutex<Option<PodNetwork>> = std::sync::Mutex::new(None);

fn bin() -> anyhow::Result<String> {
    std::env::var(AGENTCTL_BIN).context("SVCNET_AGENTCTL_BIN not set by the host")
}

fn pod_ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, last)
}

fn pod_yaml(name: &str, node: &str, ip: Ipv4Addr) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{nodeName: {node}, containers: [{{name: c, image: x}}]}}\n\
         status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n"
    )
}

/// A stand-in upstream resolver: A questions get `UPSTREAM_ANSWER`, others an empty NOERROR; counts questions.
struct Upstream {
    stop: Arc<AtomicBool>,
    asked: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    fn start(addr: SocketAddr) -> anyhow::Result<Self> {
        let sock = UdpSocket::bind(addr)?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(AtomicUsize::new(0));
        let (flag, count) = (stop.clone(), asked.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Some(root) = buf[12..n].iter().position(|b| *b == 0) else {
                    continue;
                };
                let end = 12 + root + 5;
                if end > n {
                    continue;
                }
                count.fetch_add(1, Ordering::Relaxed);
                let is_a = buf[end - 4..end - 2] == [0, 1];
                let mut reply = buf[..end].to_vec();
                reply[2] |= 0x80; // QR
                reply[3] = 0x80; // RA, NOERROR
                reply[6..12].copy_from_slice(&[0, u8::from(is_a), 0, 0, 0, 0]);
                if is_a {
                    reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                    reply.extend_from_slice(&UPSTREAM_ANSWER.octets());
                }
                let _ = sock.send_to(&reply, peer);
            }
        });
        Ok(Self {
            stop,
            asked,
            thread: Some(thread),
        })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn setup() -> anyhow::Result<()> {
    let mut net = PodNetwork::new("cbr0", Ipv4Addr::new(10, 244, 1, 1), 24)?;
    net.add_pod(POD, pod_ip(10))?;
    net.add_pod(STRANGER, pod_ip(11))?;
    guest::add_dummy_link("eth0", &format!("{NODE_IP}/24"))?;
    let dir = Path::new(MANIFESTS);
    std::fs::create_dir_all(dir)?;
    cluster::write_node(dir, "node-a", NODE_IP)?;
    std::fs::write(
        dir.join("other-web.yaml"),
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: other}}\nspec:\n  type: ClusterIP\n  \
             clusterIP: {WEB_OTHER_IP}\n  clusterIPs: [{WEB_OTHER_IP}]\n  ports: [{{name: http, port: 80, protocol: TCP}}]\n"
        ),
    )?;
    std::fs::write(
        dir.join("pod-client.yaml"),
        pod_yaml("client", "node-a", pod_ip(10)),
    )?;
    std::fs::write(
        dir.join("pod-elsewhere.yaml"),
        pod_yaml("elsewhere", "node-b", pod_ip(11)),
    )?;
    // The deployed node-local Corefile's shape (deploy/kustomize/overlays/node-local), forwarding to our upstream.
    std::fs::write(
        COREFILE,
        format!(
            ".:53 {{\n    bind 169.254.20.10\n    errors\n    autopath @kubernetes\n    \
             kubernetes cluster.local in-addr.arpa ip6.arpa {{\n       pods insecure\n       \
             fallthrough in-addr.arpa ip6.arpa\n    }}\n    forward . {UPSTREAM}\n}}\n"
        ),
    )?;
    // What kubelet writes for a ClusterFirst pod in `default` with clusterDNS 169.254.20.10.
    std::fs::write(
        RESOLV_CONF,
        "nameserver 169.254.20.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
    )?;
    guest::run(
        "iptables-legacy",
        &["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
    )?;
    *NET.lock().unwrap_or_else(|e| e.into_inner()) = Some(net);
    Ok(())
}

/// Starts the node-local agent (the Corefile), with `--node-name node-a` when `node` (autopath on), and waits
/// until ready.
fn start_agent(node: bool) -> anyhow::Result<Background> {
    start_agent_with(node, &["--corefile", COREFILE])
}

fn start_agent_with(node: bool, dns: &[&str]) -> anyhow::Result<Background> {
    let mut args = vec!["run", "--manifests", MANIFESTS, "--dns"];
    args.extend_from_slice(dns);
    args.extend(["--admin", ADMIN, "--node-local-dns", "--lameduck", "0"]);
    if node {
        args.extend(["--node-name", "node-a"]);
    }
    let mut agent = Background::spawn(
        if node {
            "agentctl-autopath-on"
        } else {
            "agentctl-autopath-off"
        },
        &bin()?,
        &args,
    )?;
    guest::wait_http(ADMIN.parse()?, "/ready", Duration::from_secs(30)).map_err(|e| {
        let alive = agent.is_running();
        e.context(format!("agent running: {alive}; log:\n{}", agent.log()))
    })?;
    Ok(agent)
}

/// What one `getent ahosts` from a pod namespace did.
#[derive(Debug)]
struct Lookup {
    /// DNS queries glibc sent (a `sendmmsg` of A+AAAA counts 2; its netlink request does not count).
    queries: usize,
    /// The addresses `getent` printed.
    addresses: Vec<String>,
}

/// `getent ahosts name` in pod namespace `pod` with the pod resolv.conf, under strace.
fn getent(pod: &str, name: &str) -> anyhow::Result<Lookup> {
    let out = guest::sh(&format!(
        "ip netns exec {pod} unshare -m sh -c 'mount --bind {RESOLV_CONF} /etc/resolv.conf && \
         strace -f -e trace=sendto,sendmmsg,sendmsg getent ahosts {name}' 2>&1 || true"
    ))?;
    let mut queries = 0;
    let mut addresses = Vec::new();
    for line in out.lines() {
        let result = line.rsplit_once(" = ").map(|(_, r)| r.trim());
        let sent = result
            .and_then(|r| r.split_whitespace().next())
            .and_then(|r| r.parse::<i64>().ok())
            .filter(|n| *n > 0);
        // getaddrinfo's own netlink request (the AI_ADDRCONFIG check) is no DNS query.
        if line.contains("nlmsg") || line.contains("AF_NETLINK") {
            continue;
        }
        if line.contains("sendmmsg(") {
            queries += sent.unwrap_or(0) as usize;
        } else if (line.contains("sendto(") || line.contains("sendmsg(")) && sent.is_some() {
            queries += 1;
        } else if line.contains("STREAM") && !line.contains('(') {
            addresses.push(line.split_whitespace().next().unwrap_or("").to_owned());
        }
    }
    ensure!(
        queries > 0,
        "no DNS query seen for {name} from {pod}:\n{out}"
    );
    Ok(Lookup { queries, addresses })
}

/// (example.com, web.other) lookups from `pod`.
fn both(pod: &str) -> anyhow::Result<[Lookup; 2]> {
    Ok([getent(pod, "example.com")?, getent(pod, "web.other")?])
}

fn queries_per_lookup_drop_with_autopath_for_node_pods_only() -> anyhow::Result<()> {
    let upstream = Upstream::start(UPSTREAM.parse()?)?;
    let off_agent = start_agent(false)?;
    let off = both(POD)?;
    let off_upstream = upstream.asked.swap(0, Ordering::Relaxed);
    let off_log = off_agent.stop(Duration::from_secs(15));
    let on_agent = start_agent(true)?;
    let on = both(POD)?;
    let on_upstream = upstream.asked.swap(0, Ordering::Relaxed);
    let stranger = both(STRANGER)?;
    let on_log = on_agent.stop(Duration::from_secs(15));
    for (what, l) in [
        ("off example.com", &off[0]),
        ("on example.com", &on[0]),
        ("stranger example.com", &stranger[0]),
    ] {
        ensure!(
            l.addresses
                .iter()
                .any(|a| a == &UPSTREAM_ANSWER.to_string()),
            "{what}: {l:?}\n{off_log}\n{on_log}"
        );
    }
    for (what, l) in [
        ("off web.other", &off[1]),
        ("on web.other", &on[1]),
        ("stranger web.other", &stranger[1]),
    ] {
        ensure!(
            l.addresses.iter().any(|a| a == &WEB_OTHER_IP.to_string()),
            "{what}: {l:?}\n{off_log}\n{on_log}"
        );
    }
    println!(
        "  glibc getent ahosts from a node pod (ndots:5, 3 search domains; A+AAAA per step):\n    \
         example.com: {} queries without autopath, {} with (upstream asked {} vs {} times)\n    \
         web.other:   {} queries without autopath, {} with\n    \
         from an address that is no pod of this node, autopath on: example.com {}, web.other {} (plain)",
        off[0].queries,
        on[0].queries,
        off_upstream,
        on_upstream,
        off[1].queries,
        on[1].queries,
        stranger[0].queries,
        stranger[1].queries,
    );
    ensure!(
        on[0].queries < off[0].queries && on[0].queries <= 2,
        "example.com: {} queries with autopath, {} without",
        on[0].queries,
        off[0].queries
    );
    ensure!(
        on[1].queries < off[1].queries && on[1].queries <= 2,
        "web.other: {} queries with autopath, {} without",
        on[1].queries,
        off[1].queries
    );
    ensure!(
        stranger[0].queries == off[0].queries && stranger[1].queries == off[1].queries,
        "the other node's pod address is answered plainly: {stranger:?} vs {off:?}"
    );
    Ok(())
}

const BENCH_MANIFESTS: &str = "/tmp/svcnet-autopath-bench";
const BENCH_SERVICES: usize = 10_000;
const NODE_PODS: u32 = 110;

fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS in /proc/PID/status")?;
    Ok(kb / 1024.0)
}

/// The agent's resident set (MB) once ready on the 10,000-service manifest directory, 8 s after ready.
fn agent_rss(node: bool) -> anyhow::Result<f64> {
    let mut args = vec![
        "run",
        "--manifests",
        BENCH_MANIFESTS,
        "--dns",
        "--corefile",
        COREFILE,
        "--admin",
        ADMIN,
        "--node-local-dns",
        "--lameduck",
        "0",
    ];
    if node {
        args.extend(["--node-name", "node-a"]);
    }
    let mut agent = Background::spawn("agentctl-autopath-rss", &bin()?, &args)?;
    guest::wait_http(ADMIN.parse()?, "/ready", Duration::from_secs(120)).map_err(|e| {
        let alive = agent.is_running();
        e.context(format!("agent running: {alive}; log:\n{}", agent.log()))
    })?;
    // Settled: sampled every 0.5 s for 8 s (the startup allocations are trimmed back meanwhile); the last sample.
    let mut rss = 0.0;
    for _ in 0..16 {
        std::thread::sleep(Duration::from_millis(500));
        rss = rss_mb(agent.pid())?;
    }
    let log = agent.stop(Duration::from_secs(15));
    ensure!(!log.contains("panicked"), "agent panicked:\n{log}");
    Ok(rss)
}

/// Issue #14: agent RSS with the node pod watch (110 pods on the node) on a 10,000-service cluster vs without,
/// interleaved three times, medians compared; the target is +5 MB at most.
fn rss_with_the_node_pod_watch() -> anyhow::Result<()> {
    let dir = Path::new(BENCH_MANIFESTS);
    std::fs::create_dir_all(dir)?;
    let mut text = String::new();
    for spec in cluster::bench_services(BENCH_SERVICES, 2) {
        text.push_str(&spec.to_yaml());
        text.push_str("\n---\n");
    }
    std::fs::write(dir.join("services.yaml"), text)?;
    let mut pods = String::new();
    for i in 0..NODE_PODS {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 245, 0, 10)) + i);
        pods.push_str(
            &pod_yaml(&format!("pod-{i}"), "node-a", ip)
                .replace("namespace: default", &format!("namespace: ns-{}", i % 10)),
        );
        pods.push_str("---\n");
    }
    std::fs::write(dir.join("pods.yaml"), pods)?;
    cluster::write_node(dir, "node-a", NODE_IP)?;
    let mut off = Vec::new();
    let mut on = Vec::new();
    for _ in 0..3 {
        off.push(agent_rss(false)?);
        on.push(agent_rss(true)?);
    }
    let mean = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "  agent RSS, {BENCH_SERVICES} services, node-local DNS with autopath @kubernetes: without the node pod \
         watch {off:.1?} MB (median {:.1}), with it ({NODE_PODS} pods on the node) {on:.1?} MB (median {:.1}): {:+.1} MB",
        mean(&off),
        mean(&on),
        mean(&on) - mean(&off)
    );
    ensure!(
        mean(&on) - mean(&off) <= 5.0,
        "the node pod watch costs more than 5 MB: {off:?} vs {on:?}"
    );
    Ok(())
}

/// Without a Corefile (the agent's own DNS configuration), node-local mode with `--node-name` does autopath for
/// the node's pods out of the box: `web.other` in one round trip (A+AAAA).
fn built_in_configuration_does_autopath_out_of_the_box() -> anyhow::Result<()> {
    let agent = start_agent_with(true, &["--dns-listen", "127.0.0.1:5356"])?;
    let on = getent(POD, "web.other");
    let stranger = getent(STRANGER, "web.other");
    let log = agent.stop(Duration::from_secs(15));
    let (on, stranger) = (on?, stranger?);
    println!(
        "  built-in configuration (no Corefile), --node-name node-a: web.other {} queries from the node pod, {} \
         from another node's pod address",
        on.queries, stranger.queries
    );
    ensure!(
        on.addresses.iter().any(|a| a == &WEB_OTHER_IP.to_string()) && on.queries <= 2,
        "{on:?}\n{log}"
    );
    ensure!(stranger.queries > on.queries, "{stranger:?}\n{log}");
    Ok(())
}

#[test]
fn autopath_kernel() {
    // Six debug-build agent starts on 10,000 services take most of it (~26 s each in a guest
    // not pinned to one host CPU; see tests/vm/run.sh).
    let mut machine = Vm::new().timeout(Duration::from_secs(420));
    if !vm::in_guest() && vm::uml_available() {
        let bin: PathBuf = vm::cargo_binary("agentctl", "agentctl")
            .unwrap_or_else(|e| panic!("building agentctl: {e:#}"));
        machine = machine.env(AGENTCTL_BIN, bin).env("RUST_LOG", "info");
    }
    vm::run_suite(
        "autopath_kernel",
        machine,
        &[
            Check::new("setup", setup),
            Check::new(
                "queries_per_lookup_drop_with_autopath_for_node_pods_only",
                queries_per_lookup_drop_with_autopath_for_node_pods_only,
            ),
            Check::new(
                "built_in_configuration_does_autopath_out_of_the_box",
                built_in_configuration_does_autopath_out_of_the_box,
            ),
            Check::new("rss_with_the_node_pod_watch", rss_with_the_node_pod_watch),
        ],
    );
}
