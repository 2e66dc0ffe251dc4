//! `agentctl run` on a real kernel (user-mode-linux guest): the one-binary agent programs IPVS through the kernel
//! (not the dry run) and serves cluster DNS from the same cache. Checked: `agentctl ipvs` shows the same table as
//! `ipvsadm -Ln`, traffic to a cluster IP reaches both pods, DNS and `agentctl status` answer, kube-proxy's
//! `/healthz` (:10256) and `/metrics` (:10249) answer, and SIGTERM stops
//! the agent cleanly while the kernel rules stay in place (traffic keeps flowing without the agent).
//!
//! Skipped (passes trivially, says so) where user-mode-linux is not installed, like the other `vm_*` tests.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use svcnet_tests::vm::cluster::{self, ServiceSpec};
use svcnet_tests::vm::guest::{self, Background, PodNetwork};
use svcnet_tests::vm::{self, Check, Vm};

const AGENTCTL_BIN: &str = "SVCNET_AGENTCTL_BIN";
const MANIFESTS: &str = "/tmp/svcnet-agent-cluster";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const ADMIN: &str = "127.0.0.1:9900";
const DNS: &str = "127.0.0.1:5353";

struct Fixture {
    _net: PodNetwork,
    agent: Option<Background>,
}

static FIXTURE: Mutex<Option<Fixture>> = Mutex::new(None);

fn fixture() -> anyhow::Result<MutexGuard<'static, Option<Fixture>>> {
    let guard = FIXTURE.lock().unwrap_or_else(|e| e.into_inner());
    ensure!(guard.is_some(), "the setup check failed; nothing to test");
    Ok(guard)
}

fn bin() -> anyhow::Result<String> {
    std::env::var(AGENTCTL_BIN).context("SVCNET_AGENTCTL_BIN not set by the host")
}

fn agentctl(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin()?).args(args).output()?;
    ensure!(
        out.status.success(),
        "agentctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// `ipvsadm -Ln`-style text reduced like [`guest::ipvsadm_table`] (sorted lines, destinations prefixed with their
/// virtual server, no connection counters).
fn normalise(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first() {
            Some(&"TCP") | Some(&"UDP") | Some(&"SCTP") | Some(&"FWM") => {
                current = words.join(" ");
                lines.push(current.clone());
            }
            Some(&"->") if words.get(1) != Some(&"RemoteAddress:Port") => {
                lines.push(format!(
                    "{current} {}",
                    words[..words.len().min(4)].join(" ")
                ));
            }
            _ => {}
        }
    }
    lines.sort();
    lines
}

fn pod_ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, last)
}

fn setup() -> anyhow::Result<()> {
    let mut net = PodNetwork::new("cbr0", Ipv4Addr::new(10, 244, 1, 1), 24)?;
    for (name, last) in [("pod-a", 10), ("pod-b", 11)] {
        net.add_pod(name, pod_ip(last))?;
    }
    guest::add_dummy_link("eth0", &format!("{NODE_IP}/24"))?;
    let dir = Path::new(MANIFESTS);
    std::fs::create_dir_all(dir)?;
    cluster::write_node(dir, "node-a", NODE_IP)?;
    let ab = [pod_ip(10), pod_ip(11)];
    ServiceSpec::cluster_ip("web", Ipv4Addr::new(10, 96, 10, 10), &ab).write_to(dir)?;
    ServiceSpec::cluster_ip("web-np", Ipv4Addr::new(10, 96, 10, 12), &ab)
        .with_node_port(30080)
        .write_to(dir)?;
    // An iptables-legacy host (this kernel has no nf_tables ip/inet families), as the proxy's detection expects.
    guest::run(
        "iptables-legacy",
        &["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
    )?;
    let bin = bin()?;
    let mut agent = Background::spawn(
        "agentctl-run",
        &bin,
        &[
            "run",
            "--manifests",
            MANIFESTS,
            "--node-name",
            "node-a",
            "--admin",
            ADMIN,
            "--dns-listen",
            DNS,
            "--lameduck",
            "1",
        ],
    )?;
    let admin: SocketAddr = ADMIN.parse()?;
    guest::wait_http(admin, "/ready", Duration::from_secs(30)).map_err(|e| {
        let alive = agent.is_running();
        e.context(format!("agent running: {alive}; log:\n{}", agent.log()))
    })?;
    *FIXTURE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Fixture {
        _net: net,
        agent: Some(agent),
    });
    Ok(())
}

fn agentctl_ipvs_matches_ipvsadm() -> anyhow::Result<()> {
    let _guard = fixture()?;
    let ours = normalise(&agentctl(&["ipvs"])?);
    let theirs = guest::ipvsadm_table()?;
    ensure!(
        ours == theirs,
        "agentctl ipvs:\n{ours:#?}\nipvsadm -Ln:\n{theirs:#?}"
    );
    for want in [
        "TCP 10.96.10.10:80 rr -> 10.244.1.10:8080 Masq 1",
        "TCP 10.96.10.10:80 rr -> 10.244.1.11:8080 Masq 1",
        "TCP 192.168.1.10:30080 rr -> 10.244.1.11:8080 Masq 1",
    ] {
        ensure!(
            theirs.iter().any(|l| l == want),
            "{want:?} missing: {theirs:#?}"
        );
    }
    let stats = agentctl(&["ipvs", "--stats"])?;
    ensure!(stats.contains("InPkts"), "--stats header missing:\n{stats}");
    Ok(())
}

fn traffic_through_the_cluster_ip() -> anyhow::Result<()> {
    let _guard = fixture()?;
    let vip: SocketAddr = "10.96.10.10:80".parse()?;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        seen.insert(guest::http_get(vip, "/name", Duration::from_secs(2))?);
    }
    ensure!(seen.len() == 2, "round robin over both pods, saw {seen:?}");
    Ok(())
}

fn dns_and_status() -> anyhow::Result<()> {
    let _guard = fixture()?;
    let a = agentctl(&[
        "dns",
        "query",
        "web.default.svc.cluster.local",
        "--server",
        DNS,
        "--short",
    ])?;
    ensure!(a == "10.96.10.10\n", "DNS answered {a:?}");
    let status = agentctl(&["status", "--admin", ADMIN])?;
    for needle in ["— ready", "DNS:", "Proxy:", "IPVS proxy (ready)"] {
        ensure!(status.contains(needle), "{needle:?} missing in\n{status}");
    }
    Ok(())
}

/// Issue 19 item 5: kube-proxy's ports from the KubeProxyConfiguration (defaults here:
/// `healthzBindAddress` 0.0.0.0:10256, `metricsBindAddress` 127.0.0.1:10249) answer as
/// `svcnet-proxy` answers them.
fn kube_proxy_ports_answer() -> anyhow::Result<()> {
    let _guard = fixture()?;
    let healthz = guest::wait_http(
        SocketAddr::from((NODE_IP, 10256)),
        "/healthz",
        Duration::from_secs(5),
    )?;
    ensure!(
        healthz.contains("\"lastUpdated\"") && !healthz.contains("\"syncs\": 0,"),
        "/healthz on the node address: {healthz}"
    );
    let metrics = guest::wait_http(
        SocketAddr::from(([127, 0, 0, 1], 10249)),
        "/metrics",
        Duration::from_secs(5),
    )?;
    ensure!(
        metrics.contains("kubeproxy_sync_proxy_rules_duration_seconds_count"),
        "/metrics on 127.0.0.1:10249: {metrics}"
    );
    Ok(())
}

fn sigterm_leaves_rules_in_place() -> anyhow::Result<()> {
    let agent = FIXTURE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .and_then(|f| f.agent.take())
        .context("no agent")?;
    let before = guest::ipvsadm_table()?;
    let started = Instant::now();
    let log = agent.stop(Duration::from_secs(10));
    let took = started.elapsed();
    ensure!(
        took < Duration::from_secs(8),
        "agent took {took:?} to stop (killed?); log:\n{log}"
    );
    ensure!(!log.contains("panicked"), "agent panicked:\n{log}");
    let after = guest::ipvsadm_table()?;
    ensure!(
        before == after,
        "rules changed on shutdown:\n{before:#?}\n{after:#?}"
    );
    let name = guest::http_get("10.96.10.10:80".parse()?, "/name", Duration::from_secs(2))?;
    ensure!(
        name.starts_with("pod-"),
        "traffic without the agent: {name:?}"
    );
    println!("  agent stopped in {} ms (1 s lameduck)", took.as_millis());
    Ok(())
}

#[test]
fn agentctl_run_kernel() {
    let mut machine = Vm::new().timeout(Duration::from_secs(180));
    if !vm::in_guest() && vm::uml_available() {
        let bin: PathBuf = vm::cargo_binary("agentctl", "agentctl")
            .unwrap_or_else(|e| panic!("building agentctl: {e:#}"));
        machine = machine.env(AGENTCTL_BIN, bin).env("RUST_LOG", "info");
    }
    vm::run_suite(
        "agentctl_run_kernel",
        machine,
        &[
            Check::new("setup", setup),
            Check::new(
                "agentctl_ipvs_matches_ipvsadm",
                agentctl_ipvs_matches_ipvsadm,
            ),
            Check::new(
                "traffic_through_the_cluster_ip",
                traffic_through_the_cluster_ip,
            ),
            Check::new("dns_and_status", dns_and_status),
            Check::new("kube_proxy_ports_answer", kube_proxy_ports_answer),
            Check::new(
                "sigterm_leaves_rules_in_place",
                sigterm_leaves_rules_in_place,
            ),
        ],
    );
}
