//! Stale UDP conntrack cleanup and the `conntrack`/`ipvs` timeout settings of the real `svcnet-proxy` on a real
//! kernel (user-mode-linux guest).
//!
//! A UDP service `dns` (10.96.0.10:53 → pod port 5353) has one backend; a client in pod-c keeps ONE source port, as a
//! resolver does, and asks every 100 ms. When the backend is replaced (pod-a deleted, pod-b appears), the client must
//! keep getting answers — from pod-b — and the conntrack entry that tied the flow to pod-a must be gone (the proxy
//! logs its deletion).
//! The same replacement with the cleanup switched off (`SVCNET_CONNTRACK_CLEANUP=off`, a test-only switch) is
//! healed by this kernel's IPVS by itself (kernel ≥ 5.9 with `expire_nodest_conn=1`: the connections of a deleted
//! real server are expired with their conntrack entries), which the suite records rather than hides; the ctnetlink
//! adapter is then exercised directly on a live flow's entry. Also checked: the `conntrack` section's sysctls and the IPVS timeouts (`ipvsadm -L --timeout`) read back
//! in the guest, and a live change of the configuration file.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use svcnet_tests::vm::cluster;
use svcnet_tests::vm::guest::{self, Background, PodNetwork, run};
use svcnet_tests::vm::{self, Check};

const MANIFESTS: &str = "/tmp/svcnet-ct-cluster";
const CONFIG: &str = "/tmp/svcnet-ct-kube-proxy.yaml";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const DNS_PORT: u16 = 53;
const TARGET_PORT: u16 = 5353;
const CLIENT_PORT: u16 = 40053;

fn pod_ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, last)
}

/// The `conntrack` and `ipvs` settings under test (`udp` = `conntrack.udpTimeout` in seconds, changed live).
fn config_text(udp: u32) -> String {
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n\
         conntrack:\n  maxPerCore: 40000\n  min: 50000\n  tcpEstablishedTimeout: 2h\n  tcpCloseWaitTimeout: 30m\n  \
         tcpBeLiberal: true\n  udpTimeout: {udp}s\n  udpStreamTimeout: 150s\n\
         ipvs:\n  tcpTimeout: 15m\n  tcpFinTimeout: 1m\n  udpTimeout: 200s\n"
    )
}

/// The UDP service `default/<name>` at `vip` with ready endpoints `eps` (port `dns` 53 → 5353).
fn service_yaml(name: &str, vip: Ipv4Addr, eps: &[Ipv4Addr]) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  type: ClusterIP\n  \
         clusterIP: {vip}\n  clusterIPs: [{vip}]\n  ports:\n    - name: dns\n      port: {DNS_PORT}\n      \
         protocol: UDP\n      targetPort: {TARGET_PORT}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: {name}-abcde\n  namespace: default\n  labels:\n    kubernetes.io/service-name: {name}\n\
         addressType: IPv4\nports:\n  - name: dns\n    port: {TARGET_PORT}\n    protocol: UDP\nendpoints:"
    );
    if eps.is_empty() {
        y.push_str(" []\n");
    }
    y.push('\n');
    for ep in eps {
        y.push_str(&format!(
            "  - addresses: [{ep}]\n    conditions: {{ready: true, serving: true, terminating: false}}\n    \
             nodeName: node-a\n"
        ));
    }
    y
}

/// Writes (atomically) the manifest of service `name` at `vip` with endpoints `eps`.
fn write_service(name: &str, vip: Ipv4Addr, eps: &[Ipv4Addr]) -> anyhow::Result<()> {
    let dir = Path::new(MANIFESTS);
    let tmp = dir.join(format!(".default-{name}.yaml.tmp"));
    std::fs::write(&tmp, service_yaml(name, vip, eps))?;
    std::fs::rename(&tmp, dir.join(format!("default-{name}.yaml")))?;
    Ok(())
}

fn write_dns(eps: &[Ipv4Addr]) -> anyhow::Result<()> {
    write_service("dns", VIP, eps)
}

/// Creates a UDP socket bound to `bind` inside network namespace `netns` (a helper thread enters the namespace; the
/// socket stays in it and can be used from any thread).
fn udp_socket_in(netns: &str, bind: SocketAddr) -> anyhow::Result<UdpSocket> {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || -> anyhow::Result<UdpSocket> {
        let ns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering {path}"))?;
        UdpSocket::bind(bind).with_context(|| format!("binding {bind} in {path}"))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
}

/// A UDP server in a pod answering every datagram with `<pod name> <datagram>`.
struct Responder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    fn start(pod: &str) -> anyhow::Result<Self> {
        let sock = udp_socket_in(pod, SocketAddr::from(([0, 0, 0, 0], TARGET_PORT)))?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let name = pod.to_owned();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    let reply = format!("{name} {}", String::from_utf8_lossy(&buf[..n]));
                    let _ = sock.send_to(reply.as_bytes(), peer);
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A resolver-like client: one socket, one source port, numbered queries to one service address; like a resolver
/// it only takes answers that come from the address and port it asked.
struct Client {
    sock: UdpSocket,
    seq: u64,
    vip: Ipv4Addr,
}

impl Client {
    fn new() -> anyhow::Result<Self> {
        Self::to("pod-c", VIP, CLIENT_PORT)
    }

    /// A client in pod `pod` with source port `port` asking `vip`:53.
    fn to(pod: &str, vip: Ipv4Addr, port: u16) -> anyhow::Result<Self> {
        let sock = udp_socket_in(pod, SocketAddr::from(([0, 0, 0, 0], port)))?;
        Ok(Self { sock, seq: 0, vip })
    }

    /// One query; the answering pod's name, or `None` after `timeout`.
    fn ask(&mut self, timeout: Duration) -> Option<String> {
        self.seq += 1;
        let q = format!("q{}", self.seq);
        self.sock
            .send_to(q.as_bytes(), SocketAddr::from((self.vip, DNS_PORT)))
            .ok()?;
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 512];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            let (n, from) = self.sock.recv_from(&mut buf).ok()?;
            if from != SocketAddr::from((self.vip, DNS_PORT)) {
                // Not from the service address (e.g. a hairpin reply that was not masqueraded): a resolver
                // drops it.
                continue;
            }
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            // Late answers to earlier queries are skipped.
            if let Some(name) = text.strip_suffix(&format!(" {q}")) {
                return Some(name.to_owned());
            }
        }
    }

    /// Asks every 100 ms for up to `within`; returns the first answer's name and when it came, or every miss.
    fn ask_until(&mut self, who: &str, within: Duration) -> (Option<Duration>, usize) {
        let started = Instant::now();
        let mut misses = 0;
        while started.elapsed() < within {
            match self.ask(Duration::from_millis(100)) {
                Some(name) if name == who => return (Some(started.elapsed()), misses),
                _ => misses += 1,
            }
        }
        (None, misses)
    }
}

struct Fixture {
    _net: PodNetwork,
    proxy: Option<Background>,
    responders: Vec<(String, Responder)>,
    client: Client,
}

static FIXTURE: Mutex<Option<Fixture>> = Mutex::new(None);

fn fixture() -> anyhow::Result<MutexGuard<'static, Option<Fixture>>> {
    let guard = FIXTURE.lock().unwrap_or_else(|e| e.into_inner());
    ensure!(guard.is_some(), "the setup check failed; nothing to test");
    Ok(guard)
}

fn start_proxy(cleanup: bool) -> anyhow::Result<Background> {
    let bin = std::env::var(vm::PROXY_BIN).context("SVCNET_PROXY_BIN not set by the host")?;
    let switch = format!(
        "SVCNET_CONNTRACK_CLEANUP={}",
        if cleanup { "on" } else { "off" }
    );
    Background::spawn(
        "svcnet-proxy",
        "env",
        &[
            &switch,
            &bin,
            "--manifests",
            MANIFESTS,
            "--node-name",
            "node-a",
            "--config",
            CONFIG,
        ],
    )
}

/// The UDP conntrack entries of the flows to `vip` from client port `port`, for assertions and failure messages.
fn flow_entries_to(vip: Ipv4Addr, port: u16) -> String {
    run(
        "conntrack",
        &[
            "-L",
            "-p",
            "udp",
            "--orig-dst",
            &vip.to_string(),
            "--orig-port-src",
            &port.to_string(),
        ],
    )
    .unwrap_or_else(|e| format!("{e:#}"))
}

/// The UDP conntrack entries of the main flow (pod-c:40053 → the `dns` service).
fn flow_entries() -> String {
    flow_entries_to(VIP, CLIENT_PORT)
}

fn diagnose(f: &Fixture) -> String {
    format!(
        "--- conntrack -L (flow)\n{}--- ipvsadm -Lnc\n{}--- ipvsadm -Ln\n{}--- proxy log\n{}",
        flow_entries(),
        run("ipvsadm", &["-Lnc"]).unwrap_or_else(|e| format!("{e:#}")),
        run("ipvsadm", &["-Ln"]).unwrap_or_else(|e| format!("{e:#}")),
        f.proxy.as_ref().map(Background::log).unwrap_or_default()
    )
}

fn wait_for_udp_dest(dest: Ipv4Addr) -> anyhow::Result<Duration> {
    wait_for_udp_dest_of(VIP, dest)
}

/// Waits until the UDP virtual server `vip`:53 has exactly one real server, `dest`.
fn wait_for_udp_dest_of(vip: Ipv4Addr, dest: Ipv4Addr) -> anyhow::Result<Duration> {
    let want = format!("UDP {vip}:{DNS_PORT} rr -> {dest}:{TARGET_PORT} Masq 1");
    let prefix = format!("UDP {vip}:{DNS_PORT} rr -> ");
    guest::wait_until(&want, Duration::from_secs(20), || {
        let table = guest::ipvsadm_table()?;
        let dests: Vec<&String> = table.iter().filter(|l| l.starts_with(&prefix)).collect();
        Ok(dests.len() == 1 && dests[0] == &want)
    })
}

fn setup() -> anyhow::Result<()> {
    let mut net = PodNetwork::new("cbr0", Ipv4Addr::new(10, 244, 1, 1), 24)?;
    for (name, last) in [("pod-a", 10), ("pod-b", 11), ("pod-c", 12)] {
        net.add_pod(name, pod_ip(last))?;
    }
    guest::add_dummy_link("eth0", &format!("{NODE_IP}/24"))?;
    // A node has a default route: traffic to a service address the proxy has not programmed yet leaves by it (and
    // conntrack confirms an entry for it), as on a real node before its proxy catches up with a new Service.
    run(
        "ip",
        &[
            "route",
            "replace",
            "default",
            "via",
            "192.168.1.1",
            "dev",
            "eth0",
        ],
    )?;
    let dir = Path::new(MANIFESTS);
    std::fs::create_dir_all(dir)?;
    cluster::write_node(dir, "node-a", NODE_IP)?;
    write_dns(&[pod_ip(10)])?;
    std::fs::write(CONFIG, config_text(45))?;
    let responders = vec![
        ("pod-a".to_owned(), Responder::start("pod-a")?),
        ("pod-b".to_owned(), Responder::start("pod-b")?),
    ];
    let mut proxy = start_proxy(true)?;
    let waited = wait_for_udp_dest(pod_ip(10)).map_err(|e| {
        let alive = proxy.is_running();
        e.context(format!("proxy running: {alive}; log:\n{}", proxy.log()))
    })?;
    println!(
        "  proxy programmed the UDP service {} ms after start",
        waited.as_millis()
    );
    let client = Client::new()?;
    *FIXTURE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Fixture {
        _net: net,
        proxy: Some(proxy),
        responders,
        client,
    });
    Ok(())
}

/// The `conntrack` section's sysctls (1 CPU: max(40000 × 1, min 50000) = 50000, hash table ≥ 12500) and the IPVS
/// timeouts read back; a changed `conntrack.udpTimeout` in the file reaches the kernel without a restart.
fn settings_read_back() -> anyhow::Result<()> {
    let guard = fixture()?;
    let f = guard.as_ref().expect("checked");
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    ensure!(cpus.trim() == "0", "the guest has one CPU: {cpus}");
    let expected = [
        ("net/netfilter/nf_conntrack_max", "50000"),
        ("net/netfilter/nf_conntrack_tcp_timeout_established", "7200"),
        ("net/netfilter/nf_conntrack_tcp_timeout_close_wait", "1800"),
        ("net/netfilter/nf_conntrack_tcp_be_liberal", "1"),
        ("net/netfilter/nf_conntrack_udp_timeout", "45"),
        ("net/netfilter/nf_conntrack_udp_timeout_stream", "150"),
    ];
    guest::wait_until("the conntrack sysctls", Duration::from_secs(5), || {
        Ok(expected
            .iter()
            .all(|(p, v)| guest::read_sysctl(p).is_ok_and(|r| r == *v)))
    })
    .map_err(|e| {
        let got: Vec<_> = expected
            .iter()
            .map(|(p, _)| (p, guest::read_sysctl(p).unwrap_or_else(|e| e.to_string())))
            .collect();
        e.context(format!(
            "read back {got:?}\nproxy log:\n{}",
            f.proxy.as_ref().map(Background::log).unwrap_or_default()
        ))
    })?;
    let hashsize: u64 = std::fs::read_to_string("/sys/module/nf_conntrack/parameters/hashsize")?
        .trim()
        .parse()?;
    ensure!(
        hashsize >= 12500,
        "hashsize {hashsize} < nf_conntrack_max / 4"
    );
    let timeouts = run("ipvsadm", &["-L", "--timeout"])?;
    ensure!(
        timeouts.contains("Timeout (tcp tcpfin udp): 900 60 200"),
        "ipvsadm -L --timeout: {timeouts}"
    );
    println!("  {} hashsize {hashsize}", timeouts.trim());

    std::fs::write(CONFIG, config_text(46))?;
    let took = guest::wait_until("udpTimeout 46 s", Duration::from_secs(25), || {
        Ok(guest::read_sysctl("net/netfilter/nf_conntrack_udp_timeout")? == "46")
    })?;
    println!(
        "  live conntrack.udpTimeout change applied after {} ms",
        took.as_millis()
    );
    Ok(())
}

/// A resolver-like client keeps one source port; its backend pod is deleted and a new one appears: answers resume
/// from the new pod, and the old flow's conntrack entry is gone.
fn udp_flow_survives_backend_replacement() -> anyhow::Result<()> {
    let mut guard = fixture()?;
    let f = guard.as_mut().expect("checked");
    let (first, _) = f.client.ask_until("pod-a", Duration::from_secs(5));
    ensure!(
        first.is_some(),
        "no answer from pod-a through {VIP}\n{}",
        diagnose(f)
    );
    for _ in 0..5 {
        let a = f.client.ask(Duration::from_millis(500));
        ensure!(a.as_deref() == Some("pod-a"), "one backend, got {a:?}");
    }
    let before = flow_entries();
    ensure!(
        before.contains(&format!("src={} ", pod_ip(10))),
        "the flow's entry: {before}"
    );

    // pod-a is deleted (its server goes, its endpoint is replaced by pod-b's).
    f.responders.retain(|(n, _)| n != "pod-a");
    write_dns(&[pod_ip(11)])?;
    wait_for_udp_dest(pod_ip(11))?;
    let (answered, misses) = f.client.ask_until("pod-b", Duration::from_secs(5));
    let took = answered.with_context(|| {
        format!(
            "the client got no answer from pod-b after the backend replacement\n{}",
            diagnose(f)
        )
    })?;
    println!(
        "  same source port answered by the new backend {} ms after the table changed ({misses} queries lost)",
        took.as_millis()
    );
    let after = flow_entries();
    ensure!(
        !after.contains(&format!("src={} ", pod_ip(10))),
        "the stale entry to pod-a must be gone: {after}"
    );
    // The cleanup runs after the host setup (which may be deferred by its rate limit) and the
    // proxy's output reaches the captured log a little later: wait for its line.
    let proxy_log = || strip_ansi(&f.proxy.as_ref().map(Background::log).unwrap_or_default());
    guest::wait_until(
        "the proxy's conntrack cleanup line",
        Duration::from_secs(5),
        || Ok(proxy_log().contains("deleted stale conntrack entries")),
    )
    .map_err(|e| e.context(format!("proxy log:\n{}", proxy_log())))?;
    let log = proxy_log();
    let cleaned = log
        .lines()
        .find(|l| l.contains("deleted stale conntrack entries"))
        .with_context(|| format!("proxy log:\n{log}"))?;
    let synced = log
        .lines()
        .rfind(|l| l.contains("synced") && l.contains("dests_deleted=1"))
        .unwrap_or("(no incremental sync line)");
    println!("  proxy: {cleaned}\n  proxy: {synced}");
    Ok(())
}

/// The same replacement with the cleanup switched off. Finding on this kernel (6.1): IPVS itself expires the
/// connections of a deleted real server when `expire_nodest_conn=1` (which the proxy sets; kernels since 5.9 queue
/// that work at the deletion) and drops their conntrack entries with them, so the flow moves to the new backend
/// without the proxy's cleanup too. This check records that behaviour, so the day it changes (another kernel, or the
/// proxy no longer setting `expire_nodest_conn`) is noticed: the proxy's cleanup is what covers kernels before 5.9
/// and entries IPVS does not own.
fn without_cleanup_ipvs_expires_the_flow_itself() -> anyhow::Result<()> {
    let mut guard = fixture()?;
    let f = guard.as_mut().expect("checked");
    let log = f
        .proxy
        .take()
        .context("no proxy running")?
        .stop(Duration::from_secs(5));
    ensure!(!log.contains("panicked"), "the proxy panicked:\n{log}");
    let proxy = start_proxy(false)?;
    guest::wait_until(
        "the restarted proxy's first sync",
        Duration::from_secs(30),
        || Ok(proxy.log().contains("synced")),
    )
    .map_err(|e| e.context(proxy.log()))?;
    f.proxy = Some(proxy);
    let (b, _) = f.client.ask_until("pod-b", Duration::from_secs(5));
    ensure!(
        b.is_some(),
        "pod-b answers before the change\n{}",
        diagnose(f)
    );
    ensure!(
        guest::read_sysctl("net/ipv4/vs/expire_nodest_conn")? == "1",
        "the proxy sets expire_nodest_conn"
    );

    // pod-b is deleted, a new pod (pod-a's address again) appears.
    f.responders.retain(|(n, _)| n != "pod-b");
    f.responders
        .push(("pod-a".to_owned(), Responder::start("pod-a")?));
    write_dns(&[pod_ip(10)])?;
    wait_for_udp_dest(pod_ip(10))?;
    let (answered, misses) = f.client.ask_until("pod-a", Duration::from_secs(5));
    let took = answered.with_context(|| {
        format!(
            "cleanup off: no answer from the new backend\n{}",
            diagnose(f)
        )
    })?;
    let entries = flow_entries();
    ensure!(
        !entries.contains(&format!("src={} ", pod_ip(11))),
        "IPVS dropped the deleted backend's entry by itself: {entries}"
    );
    let log = f.proxy.as_ref().map(Background::log).unwrap_or_default();
    ensure!(
        log.contains("switched off") && !log.contains("deleted stale conntrack entries"),
        "the proxy ran without cleanup:\n{log}"
    );
    println!(
        "  cleanup off: IPVS (expire_nodest_conn) moved the flow by itself after {} ms ({misses} queries lost)",
        took.as_millis()
    );
    Ok(())
}

/// Service addresses and client ports of the zero-to-some scenario, one per run (a fresh flow each time).
const FIRST_ON: (&str, Ipv4Addr, u16) = ("late-on", Ipv4Addr::new(10, 96, 0, 20), 40054);
const FIRST_OFF: (&str, Ipv4Addr, u16) = ("late-off", Ipv4Addr::new(10, 96, 0, 21), 40055);

/// What the zero-to-some scenario saw.
struct FirstEndpoint {
    client: Client,
    /// When the first answer came after the virtual server got its real server, and the queries lost before.
    answered: Option<Duration>,
    misses: usize,
}

/// kube-proxy's reason for cleaning UDP entries when a service port goes from no endpoints to some: a resolver-like
/// client (one source port) asks a service address before anything is programmed for it, as happens when a pod
/// starts before the node's proxy has caught up with a new Service. The queries leave by the default route and
/// conntrack confirms an entry for the flow without any NAT. Then the service appears with one endpoint: the
/// client's own pod (`pod`), so the flow is hairpin traffic that only works when masqueraded (`KUBE-LOOP-BACK`), and
/// netfilter decides NAT only for the first packet of a conntrack entry. The client keeps asking every 100 ms,
/// which keeps refreshing whatever entry its packets match.
///
/// Found on this kernel (6.1): a stale entry of a flow that needs no masquerade does no harm under IPVS (IPVS does
/// its own NAT, and the reply's clashing entry is let through), so a client in another pod is answered with or
/// without the cleanup; the masqueraded flow is the case where the kernel does not save us.
fn first_endpoint(
    (name, vip, port): (&str, Ipv4Addr, u16),
    (pod, pod_addr): (&str, Ipv4Addr),
) -> anyhow::Result<FirstEndpoint> {
    let mut client = Client::to(pod, vip, port)?;
    for _ in 0..5 {
        let a = client.ask(Duration::from_millis(100));
        ensure!(
            a.is_none(),
            "an answer from {vip} before the service exists: {a:?}"
        );
    }
    let before = flow_entries_to(vip, port);
    ensure!(
        before.contains("[UNREPLIED]") && before.contains(&format!("src={vip} ")),
        "the flow's entry (no NAT, unreplied) before the service exists: {before}"
    );
    write_service(name, vip, &[pod_addr])?;
    wait_for_udp_dest_of(vip, pod_addr)?;
    let (answered, misses) = client.ask_until(pod, Duration::from_secs(5));
    Ok(FirstEndpoint {
        client,
        answered,
        misses,
    })
}

/// Zero to some, cleanup on: the proxy deletes the entries to the service address and port when its virtual server
/// gets its first real server, so the next query makes a new entry that IPVS programs; answers come at once.
fn first_endpoint_with_cleanup_answers() -> anyhow::Result<()> {
    let mut guard = fixture()?;
    let f = guard.as_mut().expect("checked");
    let (name, vip, port) = FIRST_ON;
    let seen = first_endpoint(FIRST_ON, ("pod-b", pod_ip(11)))?;
    let took = seen.answered.with_context(|| {
        format!(
            "cleanup on: no answer from pod-b through {vip} after the service appeared\n{}\n{}",
            flow_entries_to(vip, port),
            diagnose(f)
        )
    })?;
    let log = strip_ansi(&f.proxy.as_ref().map(Background::log).unwrap_or_default());
    let cleaned = log
        .lines()
        .find(|l| {
            l.contains("deleted stale conntrack entries") && l.contains(&format!("orig-dst {vip} "))
        })
        .with_context(|| format!("no cleanup of {name}'s entries in the proxy log:\n{log}"))?;
    println!(
        "  cleanup on, zero to one endpoint: answered {} ms after the table changed ({} queries lost)\n  proxy: {cleaned}",
        took.as_millis(),
        seen.misses
    );
    drop(seen.client);
    Ok(())
}

/// Zero to some, cleanup off (the negative control): the entry made before the service existed stays, the client's
/// queries keep refreshing it, and no answer comes back although IPVS has the real server — the flow is
/// black-holed. Deleting that one entry by hand (what the proxy's cleanup does) brings the answers back, which shows
/// the stale entry is the cause.
fn first_endpoint_without_cleanup_is_black_holed() -> anyhow::Result<()> {
    let mut guard = fixture()?;
    let f = guard.as_mut().expect("checked");
    let log = f.proxy.as_ref().map(Background::log).unwrap_or_default();
    ensure!(
        log.contains("switched off"),
        "this check runs after the proxy was restarted with cleanup off:\n{log}"
    );
    let (_, vip, port) = FIRST_OFF;
    let mut seen = first_endpoint(FIRST_OFF, ("pod-a", pod_ip(10)))?;
    let stale = flow_entries_to(vip, port);
    ensure!(
        seen.answered.is_none(),
        "cleanup off: the client got an answer {:?} after the service appeared, so this scenario does not show \
         what the cleanup is for\n{stale}",
        seen.answered
    );
    ensure!(
        stale.contains(&format!("src={vip} ")),
        "the stale entry (reply from the service address, not a pod) is still there: {stale}"
    );
    println!(
        "  cleanup off, zero to one endpoint: no answer in 5 s ({} queries lost); the stale entry:\n    {}",
        seen.misses,
        stale.trim().replace('\n', "\n    ")
    );
    run(
        "conntrack",
        &[
            "-D",
            "-p",
            "udp",
            "--orig-dst",
            &vip.to_string(),
            "--orig-port-src",
            &port.to_string(),
        ],
    )?;
    let (answered, misses) = seen.client.ask_until("pod-a", Duration::from_secs(5));
    let took = answered.with_context(|| {
        format!(
            "no answer even after the stale entry was deleted by hand\n{}\n{}",
            flow_entries_to(vip, port),
            diagnose(f)
        )
    })?;
    println!(
        "  the same flow answered {} ms after its stale entry was deleted by hand ({misses} more queries lost)",
        took.as_millis()
    );
    Ok(())
}

/// The ctnetlink adapter on the real kernel: the live flow's entry (one dump, filtered by the kernel) is deleted by a
/// filter on the virtual address, port and answering pod (one batch), and nothing else is; the flow keeps working (IPVS still has its
/// connection; the next packet makes a new entry).
fn ctnetlink_deletes_matching_entries() -> anyhow::Result<()> {
    use svcnet_core::ipvs::conntrack::ctnetlink::NetlinkConntrack;
    use svcnet_core::ipvs::conntrack::{ConntrackBackend, ConntrackFilter};
    use svcnet_core::ipvs::table::Family;
    use svcnet_core::model::Protocol;
    let mut guard = fixture()?;
    let f = guard.as_mut().expect("checked");
    let (a, _) = f.client.ask_until("pod-a", Duration::from_secs(5));
    ensure!(a.is_some(), "pod-a answers\n{}", diagnose(f));
    let filter = ConntrackFilter {
        family: Family::V4,
        protocol: Protocol::Udp,
        orig_dst: Some(VIP.into()),
        orig_dst_port: Some(DNS_PORT),
        reply_src: Some(pod_ip(10).into()),
    };
    let mut ct = NetlinkConntrack::open().map_err(|e| anyhow::anyhow!("{e}"))?;
    // A filter for another answering pod matches nothing and sends no delete.
    let none = ct
        .delete_matching(&[ConntrackFilter {
            reply_src: Some(pod_ip(11).into()),
            ..filter
        }])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The dump is filtered in the kernel (CTA_FILTER on the reply source): the live entry, answered by pod-a, is not
    // even sent back.
    ensure!(
        none.deleted == 0 && none.round_trips == 1 && none.scanned == 0,
        "kernel-filtered dump, nothing to delete: {none:?}"
    );
    ensure!(
        flow_entries().contains(&format!("src={} ", pod_ip(10))),
        "untouched: {}",
        flow_entries()
    );
    let stats = ct.socket_stats();
    let report = ct
        .delete_matching(&[filter])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let used = ct.socket_stats();
    ensure!(
        report.deleted == 1 && report.round_trips == 2 && report.scanned == 1,
        "one entry, one kernel-filtered dump (returning only that entry) and one delete batch: {report:?}"
    );
    println!(
        "  ctnetlink: {} entries scanned, {} deleted, {} round trips, {} sends / {} receives",
        report.scanned,
        report.deleted,
        report.round_trips,
        used.sends - stats.sends,
        used.recvs - stats.recvs
    );
    let left = flow_entries();
    ensure!(
        !left.contains(&format!("src={} ", pod_ip(10))),
        "deleted: {left}"
    );
    let again = f.client.ask(Duration::from_secs(1));
    ensure!(
        again.as_deref() == Some("pod-a"),
        "the flow goes on: {again:?}"
    );
    Ok(())
}

/// The proxy's log without terminal colour codes.
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
        Check::new("settings_read_back", settings_read_back),
        Check::new(
            "udp_flow_survives_backend_replacement",
            udp_flow_survives_backend_replacement,
        ),
        Check::new(
            "first_endpoint_with_cleanup_answers",
            first_endpoint_with_cleanup_answers,
        ),
        Check::new(
            "without_cleanup_ipvs_expires_the_flow_itself",
            without_cleanup_ipvs_expires_the_flow_itself,
        ),
        Check::new(
            "first_endpoint_without_cleanup_is_black_holed",
            first_endpoint_without_cleanup_is_black_holed,
        ),
        Check::new(
            "ctnetlink_deletes_matching_entries",
            ctnetlink_deletes_matching_entries,
        ),
        Check::new("teardown", teardown),
    ]
}

#[test]
fn conntrack_kernel() {
    vm::run_proxy_suite(
        "conntrack_kernel",
        "conntrack",
        Duration::from_secs(300),
        &checks(),
    );
}
