//! Zero-loss restarts and live changes of the real `svcnet-proxy` on a real kernel (user-mode-linux guest).
//!
//! A client pod (network namespace `client`) sends a steady stream of new TCP connections (HTTP GETs) and UDP
//! request/replies (a fresh source port each) to a ClusterIP and to a NodePort of one service whose endpoints are
//! three backend pods, while the proxy goes through these events:
//! (a) SIGTERM and restart, (b) SIGKILL and restart, (c) a live KubeProxyConfiguration change (scheduler and
//! timeouts), (d) an endpoint turned terminating (graceful termination), removed, and added back, (e) the Service
//! deleted and recreated. For each event the test prints requests sent, failed, the longest gap between two
//! successful answers, and whether the IPVS table was ever flushed or the service's virtual servers lost their
//! usable real servers (from `/proc/net/ip_vs`, polled every 20 ms). Events (a)–(d) must lose no request; (e)
//! cannot be lossless (the service is gone for a while) and is only printed.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use svcnet_tests::vm::guest::{self, Background, PodNetwork, run};
use svcnet_tests::vm::{self, Check, cluster};

const MANIFESTS: &str = "/tmp/svcnet-chaos";
const CONFIG: &str = "/tmp/svcnet-chaos-config.yaml";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 20, 10);
const HEALTHZ: &str = "127.0.0.1:10256";
const TCP_PORT: u16 = 80;
const UDP_PORT: u16 = 53;
const TCP_NODE_PORT: u16 = 30080;
const UDP_NODE_PORT: u16 = 30053;
/// The backends' UDP echo port (they answer a datagram with their pod name).
const UDP_TARGET: u16 = 5353;
/// How long one request may take before it counts as failed (as in `vm_proxy`; a retransmitted SYN or
/// datagram shows as a gap of 1 s or more instead).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two requests of one client thread (a steady stream the 1-vCPU guest keeps up with).
const PACE: Duration = Duration::from_millis(5);
/// Traffic before and after each event, so the stream is steady around it.
const SETTLE: Duration = Duration::from_millis(1500);

const BACKENDS: [(&str, u8); 3] = [("pod-a", 10), ("pod-b", 11), ("pod-c", 12)];

fn pod_ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, last)
}

/// How an endpoint appears in the EndpointSlice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndpointState {
    Ready,
    /// Being deleted: `ready: false, serving: true, terminating: true` (graceful termination).
    Terminating,
}

/// The `chaos` Service (NodePort; TCP 80 → 8080 on node port 30080, UDP 53 → 5353 on node port 30053) and its
/// EndpointSlice with `endpoints`.
fn service_yaml(endpoints: &[(Ipv4Addr, EndpointState)]) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: chaos\n  namespace: default\nspec:\n  type: NodePort\n  \
         clusterIP: {CLUSTER_IP}\n  clusterIPs: [{CLUSTER_IP}]\n  ports:\n  \
         - {{name: http, port: {TCP_PORT}, protocol: TCP, targetPort: 8080, nodePort: {TCP_NODE_PORT}}}\n  \
         - {{name: dns, port: {UDP_PORT}, protocol: UDP, targetPort: {UDP_TARGET}, nodePort: {UDP_NODE_PORT}}}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: chaos-abcde\n  \
         namespace: default\n  labels:\n    kubernetes.io/service-name: chaos\naddressType: IPv4\nports:\n  \
         - {{name: http, port: 8080, protocol: TCP}}\n  - {{name: dns, port: {UDP_TARGET}, protocol: UDP}}\n\
         endpoints:\n"
    );
    for (ip, state) in endpoints {
        let conditions = match state {
            EndpointState::Ready => "{ready: true, serving: true, terminating: false}",
            EndpointState::Terminating => "{ready: false, serving: true, terminating: true}",
        };
        let _ = writeln!(
            y,
            "  - addresses: [{ip}]\n    conditions: {conditions}\n    nodeName: node-a"
        );
    }
    y
}

/// Writes the service's manifest (atomically, by rename).
fn write_service(endpoints: &[(Ipv4Addr, EndpointState)]) -> anyhow::Result<()> {
    write_atomically(&service_path(), &service_yaml(endpoints))
}

fn service_path() -> PathBuf {
    Path::new(MANIFESTS).join("default-chaos.yaml")
}

fn all_ready() -> Vec<(Ipv4Addr, EndpointState)> {
    BACKENDS
        .iter()
        .map(|(_, last)| (pod_ip(*last), EndpointState::Ready))
        .collect()
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// A KubeProxyConfiguration with IPVS `scheduler` and timeouts (`tcp`, `tcpFin`, `udp`).
fn config_yaml(scheduler: &str, timeouts: (&str, &str, &str)) -> String {
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\nipvs:\n  \
         scheduler: {scheduler}\n  tcpTimeout: {}\n  tcpFinTimeout: {}\n  udpTimeout: {}\n",
        timeouts.0, timeouts.1, timeouts.2
    )
}

// ---------------------------------------------------------------------------------------------------------------
// Network namespaces for threads

/// Moves the calling thread into the network namespace `name` (made by `ip netns add`); sockets it opens afterwards
/// live there. Only this thread changes namespace.
fn enter_netns(name: &str) -> anyhow::Result<()> {
    let path = format!("/run/netns/{name}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("setns into {name}"))?;
    Ok(())
}

/// A UDP echo server in pod `name`'s namespace on [`UDP_TARGET`]: answers each datagram with the pod's name.
fn spawn_udp_server(name: &'static str, stop: Arc<AtomicBool>) -> anyhow::Result<JoinHandle<()>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let sock = (|| -> anyhow::Result<UdpSocket> {
            enter_netns(name)?;
            let sock = UdpSocket::bind(("0.0.0.0", UDP_TARGET))?;
            sock.set_read_timeout(Some(Duration::from_millis(100)))?;
            Ok(sock)
        })();
        let sock = match sock {
            Ok(s) => {
                let _ = ready_tx.send(Ok(()));
                s
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(name.as_bytes(), from);
            }
        }
    });
    ready_rx
        .recv()
        .context("UDP server thread ended before binding")??;
    Ok(handle)
}

// ---------------------------------------------------------------------------------------------------------------
// Traffic and the table monitor

/// Counts of one client stream during one event.
#[derive(Debug, Default, Clone)]
struct StreamStats {
    sent: u64,
    failed: u64,
    /// The first few failures, for the error message.
    failures: Vec<String>,
    longest_gap: Duration,
    last_success: Option<Instant>,
}

impl StreamStats {
    fn record(&mut self, target: SocketAddr, result: anyhow::Result<()>) {
        self.sent += 1;
        let now = Instant::now();
        match result {
            Ok(()) => {
                if let Some(last) = self.last_success {
                    self.longest_gap = self.longest_gap.max(now - last);
                }
                self.last_success = Some(now);
            }
            Err(e) => {
                self.failed += 1;
                if self.failures.len() < 5 {
                    self.failures.push(format!("{target}: {e:#}"));
                }
            }
        }
    }

    /// Starts a new event: zero counts, but keep the last success so a gap across the boundary counts.
    fn reset(&mut self) -> StreamStats {
        let last_success = self.last_success;
        std::mem::replace(
            self,
            StreamStats {
                last_success,
                ..StreamStats::default()
            },
        )
    }
}

/// What `/proc/net/ip_vs` showed during one event.
#[derive(Debug, Clone)]
struct TableStats {
    samples: u64,
    min_virtual_servers: usize,
    /// Fewest real servers of weight > 0 behind any of the service's four virtual servers (0 also when one was
    /// missing).
    min_usable_dests: usize,
}

impl Default for TableStats {
    fn default() -> Self {
        Self {
            samples: 0,
            min_virtual_servers: usize::MAX,
            min_usable_dests: usize::MAX,
        }
    }
}

impl TableStats {
    fn flushed(&self) -> bool {
        self.min_virtual_servers == 0
    }
}

/// The service's virtual servers as `/proc/net/ip_vs` names them (`PROTO HEXADDR:HEXPORT`).
fn watched_virtual_servers() -> [String; 4] {
    let key =
        |proto: &str, ip: Ipv4Addr, port: u16| format!("{proto}  {:08X}:{port:04X}", u32::from(ip));
    [
        key("TCP", CLUSTER_IP, TCP_PORT),
        key("UDP", CLUSTER_IP, UDP_PORT),
        key("TCP", NODE_IP, TCP_NODE_PORT),
        key("UDP", NODE_IP, UDP_NODE_PORT),
    ]
}

/// One sample of `/proc/net/ip_vs`: the number of virtual servers and the fewest usable real servers behind the
/// watched ones.
fn sample_table(watched: &[String]) -> anyhow::Result<(usize, usize)> {
    let text = std::fs::read_to_string("/proc/net/ip_vs").context("reading /proc/net/ip_vs")?;
    let mut virtual_servers = 0;
    let mut usable = vec![None::<usize>; watched.len()];
    let mut current: Option<usize> = None;
    for line in text.lines() {
        if line.starts_with("TCP") || line.starts_with("UDP") || line.starts_with("FWM") {
            virtual_servers += 1;
            current = watched.iter().position(|w| line.starts_with(w.as_str()));
            if let Some(i) = current {
                usable[i] = Some(0);
            }
        } else if let Some(rest) = line.trim_start().strip_prefix("->") {
            // "-> 0AF4010A:1F90      Masq    1      0          0"
            let weight: u64 = rest
                .split_whitespace()
                .nth(2)
                .and_then(|w| w.parse().ok())
                .unwrap_or(0);
            if let Some(i) = current
                && weight > 0
            {
                *usable[i].get_or_insert(0) += 1;
            }
        }
    }
    let min_usable = usable.iter().map(|u| u.unwrap_or(0)).min().unwrap_or(0);
    Ok((virtual_servers, min_usable))
}

/// The client streams and the table monitor, running until dropped.
struct Traffic {
    stop: Arc<AtomicBool>,
    tcp: Arc<Mutex<StreamStats>>,
    udp: Arc<Mutex<StreamStats>>,
    table: Arc<Mutex<TableStats>>,
    threads: Vec<JoinHandle<()>>,
}

/// The targets each stream alternates between: the ClusterIP and the NodePort.
fn targets(port: u16, node_port: u16) -> [SocketAddr; 2] {
    [
        SocketAddr::from((CLUSTER_IP, port)),
        SocketAddr::from((NODE_IP, node_port)),
    ]
}

/// One HTTP/1.0 GET over a new connection; the answer must be a backend's name.
fn tcp_request(target: SocketAddr) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect_timeout(&target, REQUEST_TIMEOUT).context("connecting")?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    write!(stream, "GET /name HTTP/1.0\r\nHost: {target}\r\n\r\n")?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .context("reading the response")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim())
        .with_context(|| format!("malformed response {response:?}"))?;
    ensure!(body.starts_with("pod-"), "unexpected answer {response:?}");
    Ok(())
}

/// The next UDP source port: each request of the run gets one never used before (below the
/// ephemeral range, so no other socket holds it).
///
/// With random ephemeral ports, a new request now and then reuses the 5-tuple of an earlier one
/// whose IPVS and conntrack entries still exist; if that entry's real server was deleted (UDP
/// real servers go at once when an endpoint leaves), IPVS drops the first datagram
/// (`expire_nodest_conn` with `vs/conntrack=1`) and only a retry gets through. That is the
/// stale-conntrack case kube-proxy handles by deleting the UDP conntrack entries of removed
/// endpoints; this test measures fresh flows.
fn next_udp_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    10_000 + NEXT.fetch_add(1, Ordering::Relaxed) % 20_000
}

/// One UDP request/reply from a fresh socket (a new source port, so a new IPVS connection each time).
fn udp_request(target: SocketAddr) -> anyhow::Result<()> {
    let sock = UdpSocket::bind(("0.0.0.0", next_udp_port()))?;
    sock.connect(target)?;
    sock.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    sock.send(b"ping")?;
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).context("no reply")?;
    ensure!(
        buf[..n].starts_with(b"pod-"),
        "unexpected reply {:?}",
        &buf[..n]
    );
    Ok(())
}

impl Traffic {
    fn start() -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let tcp = Arc::new(Mutex::new(StreamStats::default()));
        let udp = Arc::new(Mutex::new(StreamStats::default()));
        let table = Arc::new(Mutex::new(TableStats::default()));
        let mut threads = Vec::new();
        for (stats, udp_stream) in [(tcp.clone(), false), (udp.clone(), true)] {
            let stop = stop.clone();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            threads.push(std::thread::spawn(move || {
                if let Err(e) = enter_netns("client") {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
                let targets = if udp_stream {
                    targets(UDP_PORT, UDP_NODE_PORT)
                } else {
                    targets(TCP_PORT, TCP_NODE_PORT)
                };
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let target = targets[i % targets.len()];
                    i += 1;
                    let result = if udp_stream {
                        udp_request(target)
                    } else {
                        tcp_request(target)
                    };
                    stats.lock().expect("stats").record(target, result);
                    std::thread::sleep(PACE);
                }
            }));
            ready_rx.recv().context("client thread ended early")??;
        }
        {
            let (stop, table) = (stop.clone(), table.clone());
            threads.push(std::thread::spawn(move || {
                let watched = watched_virtual_servers();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((vs, usable)) = sample_table(&watched) {
                        let mut t = table.lock().expect("table");
                        t.samples += 1;
                        t.min_virtual_servers = t.min_virtual_servers.min(vs);
                        t.min_usable_dests = t.min_usable_dests.min(usable);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }));
        }
        Ok(Self {
            stop,
            tcp,
            udp,
            table,
            threads,
        })
    }

    /// Starts counting a new event.
    fn begin(&self) {
        self.tcp.lock().expect("stats").reset();
        self.udp.lock().expect("stats").reset();
        *self.table.lock().expect("table") = TableStats::default();
    }

    /// The counts since [`Traffic::begin`].
    fn end(&self) -> (StreamStats, StreamStats, TableStats) {
        (
            self.tcp.lock().expect("stats").reset(),
            self.udp.lock().expect("stats").reset(),
            std::mem::take(&mut *self.table.lock().expect("table")),
        )
    }

    /// Waits until both streams have completed `n` more requests (successful or not).
    fn wait_requests(&self, n: u64) -> anyhow::Result<()> {
        let sent = || {
            (
                self.tcp.lock().expect("stats").sent,
                self.udp.lock().expect("stats").sent,
            )
        };
        let (t0, u0) = sent();
        guest::wait_until("client requests", Duration::from_secs(20), || {
            let (t, u) = sent();
            Ok(t >= t0 + n && u >= u0 + n)
        })?;
        Ok(())
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Fixture

struct Fixture {
    _net: PodNetwork,
    proxy: Option<Background>,
    udp_stop: Arc<AtomicBool>,
    udp_servers: Vec<JoinHandle<()>>,
    /// One line per event, printed at the end.
    report: Vec<String>,
}

static FIXTURE: Mutex<Option<Fixture>> = Mutex::new(None);

fn fixture() -> anyhow::Result<MutexGuard<'static, Option<Fixture>>> {
    let guard = FIXTURE.lock().unwrap_or_else(|e| e.into_inner());
    ensure!(guard.is_some(), "the setup check failed; nothing to test");
    Ok(guard)
}

fn start_proxy() -> anyhow::Result<Background> {
    let bin = std::env::var(vm::PROXY_BIN).context("SVCNET_PROXY_BIN not set by the host")?;
    Background::spawn(
        "svcnet-proxy",
        &bin,
        &[
            "--manifests",
            MANIFESTS,
            "--node-name",
            "node-a",
            "--config",
            CONFIG,
        ],
    )
}

/// Waits for the proxy's /healthz (and fails early if it exited).
fn wait_healthy(proxy: &mut Background) -> anyhow::Result<Duration> {
    guest::wait_until("the proxy's /healthz", Duration::from_secs(20), || {
        if !proxy.is_running() {
            bail!("the proxy exited:\n{}", proxy.log());
        }
        Ok(guest::http_get(HEALTHZ.parse()?, "/healthz", Duration::from_millis(300)).is_ok())
    })
}

/// `ipvsadm -Ln` lines of the service's TCP ClusterIP virtual server.
fn cluster_ip_lines() -> anyhow::Result<Vec<String>> {
    let prefix = format!("TCP {CLUSTER_IP}:{TCP_PORT} ");
    Ok(guest::ipvsadm_table()?
        .into_iter()
        .filter(|l| l.starts_with(&prefix))
        .collect())
}

/// Waits until the TCP ClusterIP virtual server has exactly `live` real servers of weight > 0.
fn wait_live_dests(live: usize, within: Duration) -> anyhow::Result<Duration> {
    guest::wait_until(
        &format!("{CLUSTER_IP}:{TCP_PORT} with {live} live real servers"),
        within,
        || {
            let n = cluster_ip_lines()?
                .iter()
                .filter(|l| l.contains(" -> ") && !l.ends_with(" 0"))
                .count();
            Ok(n == live)
        },
    )
}

fn setup() -> anyhow::Result<()> {
    let mut net = PodNetwork::new("cbr0", Ipv4Addr::new(10, 244, 1, 1), 24)?;
    let udp_stop = Arc::new(AtomicBool::new(false));
    let mut udp_servers = Vec::new();
    for (name, last) in BACKENDS {
        net.add_pod(name, pod_ip(last))?;
        udp_servers.push(spawn_udp_server(name, udp_stop.clone())?);
    }
    net.add_pod("client", pod_ip(50))?;
    guest::add_dummy_link("eth0", &format!("{NODE_IP}/24"))?;
    let dir = Path::new(MANIFESTS);
    std::fs::create_dir_all(dir)?;
    cluster::write_node(dir, "node-a", NODE_IP)?;
    write_service(&all_ready())?;
    write_atomically(Path::new(CONFIG), &config_yaml("rr", ("0s", "0s", "0s")))?;
    let mut proxy = start_proxy()?;
    let started = wait_healthy(&mut proxy)
        .and_then(|_| wait_live_dests(3, Duration::from_secs(20)))
        .map_err(|e| e.context(format!("proxy log:\n{}", proxy.log())))?;
    println!("  proxy ready {} ms after start", started.as_millis());
    *FIXTURE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Fixture {
        _net: net,
        proxy: Some(proxy),
        udp_stop,
        udp_servers,
        report: Vec::new(),
    });
    Ok(())
}

/// Runs one event under traffic: settles, runs `event`, settles again, and records the counts. With `zero_loss`,
/// fails if any request failed.
fn under_traffic(
    f: &mut Fixture,
    name: &str,
    zero_loss: bool,
    event: impl FnOnce(&mut Fixture) -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    let traffic = Traffic::start()?;
    traffic.wait_requests(20)?;
    std::thread::sleep(SETTLE);
    traffic.begin();
    let started = Instant::now();
    let detail = event(f);
    let detail = match detail {
        Ok(d) => d,
        Err(e) => {
            drop(traffic);
            let log = f.proxy.as_ref().map(Background::log).unwrap_or_default();
            return Err(e.context(format!("proxy log:\n{log}")));
        }
    };
    std::thread::sleep(SETTLE);
    traffic.wait_requests(20)?;
    let took = started.elapsed();
    let (tcp, udp, table) = traffic.end();
    drop(traffic);
    let usable = if table.min_usable_dests == usize::MAX {
        "-".to_string()
    } else {
        table.min_usable_dests.to_string()
    };
    let line = format!(
        "{name:<28} tcp sent {:>4} failed {:>3} gap {:>5} ms | udp sent {:>4} failed {:>3} gap {:>5} ms | \
         table flushed: {} (min virtual servers {}, min usable real servers {usable}, {} samples) | {:.1} s{}",
        tcp.sent,
        tcp.failed,
        tcp.longest_gap.as_millis(),
        udp.sent,
        udp.failed,
        udp.longest_gap.as_millis(),
        if table.flushed() { "YES" } else { "no" },
        if table.min_virtual_servers == usize::MAX {
            "-".to_string()
        } else {
            table.min_virtual_servers.to_string()
        },
        table.samples,
        took.as_secs_f64(),
        if detail.is_empty() {
            String::new()
        } else {
            format!(" ({detail})")
        },
    );
    println!("  {line}");
    f.report.push(line);
    if zero_loss {
        ensure!(
            tcp.failed == 0 && udp.failed == 0,
            "{name}: requests failed: tcp {:?} udp {:?}\nproxy log:\n{}",
            tcp.failures,
            udp.failures,
            f.proxy.as_ref().map(Background::log).unwrap_or_default()
        );
        ensure!(
            !table.flushed() && table.min_usable_dests > 0,
            "{name}: the service lost its real servers: {table:?}"
        );
    }
    Ok(())
}

/// Restarts the proxy: stops the running one with `signal` and starts a new one, until it is healthy.
fn restart(f: &mut Fixture, signal: &str) -> anyhow::Result<String> {
    let old = f.proxy.take().context("no proxy running")?;
    run("kill", &[&format!("-{signal}"), &old.pid().to_string()])?;
    let old_log = old.stop(Duration::from_secs(10));
    ensure!(
        !old_log.contains("panicked"),
        "the proxy panicked:\n{old_log}"
    );
    let mut new = start_proxy()?;
    let healthy = wait_healthy(&mut new);
    let log = new.log();
    f.proxy = Some(new);
    let healthy = healthy.with_context(|| format!("new proxy log:\n{log}"))?;
    Ok(format!("healthy {} ms after start", healthy.as_millis()))
}

fn sigterm_restart() -> anyhow::Result<()> {
    let mut guard = fixture()?;
    let f = guard.as_mut().expect("checked");
    under_traffic(f, "(a) SIGTERM + restart", true, |f| restart(f, "TERM"))
}

fn sigkill_restart() -> anyhow::Result<()> {
    let mut guard = fixture()?;
    let f = guard.as_mut().expect("checked");
    under_traffic(f, "(b) SIGKILL + restart", true, |f| restart(f, "KILL"))
}

fn config_change() -> anyhow::Result<()> {
    let mut guard = fixture()?;
    let f = guard.as_mut().expect("checked");
    under_traffic(f, "(c) live config change", true, |_| {
        write_atomically(
            Path::new(CONFIG),
            &config_yaml("lc", ("900s", "30s", "60s")),
        )?;
        let took = guest::wait_until(
            "the new scheduler and timeouts in the kernel",
            Duration::from_secs(10),
            || {
                let timeouts = run("ipvsadm", &["-L", "--timeout"])?;
                let lines = cluster_ip_lines()?;
                Ok(timeouts.contains("900 30 60") && lines.iter().any(|l| l.contains(" lc ")))
            },
        )?;
        Ok(format!(
            "rr -> lc, timeouts 900/30/60 s applied after {} ms",
            took.as_millis()
        ))
    })
}

fn endpoint_termination() -> anyhow::Result<()> {
    let mut guard = fixture()?;
    let f = guard.as_mut().expect("checked");
    under_traffic(f, "(d) endpoint terminate+re-add", true, |_| {
        let mut endpoints = all_ready();
        endpoints[2].1 = EndpointState::Terminating;
        write_service(&endpoints)?;
        let drained = wait_live_dests(2, Duration::from_secs(10))?;
        std::thread::sleep(Duration::from_millis(500));
        endpoints.pop();
        write_service(&endpoints)?;
        std::thread::sleep(Duration::from_millis(1000));
        write_service(&all_ready())?;
        let back = wait_live_dests(3, Duration::from_secs(10))?;
        Ok(format!(
            "weight 0 after {} ms, back {} ms after the re-add",
            drained.as_millis(),
            back.as_millis()
        ))
    })
}

fn service_recreate() -> anyhow::Result<()> {
    let mut guard = fixture()?;
    let f = guard.as_mut().expect("checked");
    under_traffic(f, "(e) service delete+recreate", false, |_| {
        std::fs::remove_file(service_path())?;
        let gone = guest::wait_until("the virtual server to go", Duration::from_secs(10), || {
            Ok(cluster_ip_lines()?.is_empty())
        })?;
        std::thread::sleep(Duration::from_millis(500));
        write_service(&all_ready())?;
        let back = wait_live_dests(3, Duration::from_secs(10))?;
        Ok(format!(
            "gone after {} ms, back {} ms after the recreate",
            gone.as_millis(),
            back.as_millis()
        ))
    })
}

fn teardown() -> anyhow::Result<()> {
    let fixture = FIXTURE.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some(mut f) = fixture else {
        return Ok(());
    };
    println!("  restart/chaos table:");
    for line in &f.report {
        println!("    {line}");
    }
    f.udp_stop.store(true, Ordering::Relaxed);
    for t in f.udp_servers.drain(..) {
        let _ = t.join();
    }
    if let Some(proxy) = f.proxy.take() {
        let log = proxy.stop(Duration::from_secs(5));
        let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
        ensure!(panics.is_empty(), "the proxy panicked: {panics:?}");
    }
    Ok(())
}

fn checks() -> Vec<Check> {
    vec![
        Check::new("setup", setup),
        Check::new("sigterm_restart", sigterm_restart),
        Check::new("sigkill_restart", sigkill_restart),
        Check::new("config_change", config_change),
        Check::new("endpoint_termination", endpoint_termination),
        Check::new("service_recreate", service_recreate),
        Check::new("teardown", teardown),
    ]
}

#[test]
fn proxy_chaos_kernel() {
    vm::run_proxy_suite(
        "proxy_chaos_kernel",
        "proxy chaos",
        Duration::from_secs(240),
        &checks(),
    );
}
