//! Helpers for checks running inside the guest: commands, sysctls, a pod network of network namespaces with HTTP
//! backends, and HTTP clients (in the root namespace or inside a pod).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// Runs `program args...`, failing with its stderr if it exits non-zero; returns its stdout.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a `sh -c` script (set -e), failing with its stderr if it exits non-zero; returns its stdout.
pub fn sh(script: &str) -> anyhow::Result<String> {
    run("sh", &["-ec", script])
}

/// Writes a sysctl, e.g. `sysctl("net/ipv4/ip_forward", "1")`.
pub fn sysctl(path: &str, value: &str) -> anyhow::Result<()> {
    std::fs::write(format!("/proc/sys/{path}"), value)
        .with_context(|| format!("writing {value} to /proc/sys/{path}"))
}

/// Reads a sysctl, trimmed.
pub fn read_sysctl(path: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(format!("/proc/sys/{path}"))
        .with_context(|| format!("reading /proc/sys/{path}"))?
        .trim()
        .to_owned())
}

/// Loads a kernel module with the modprobe the guest's init configured (`/proc/sys/kernel/modprobe`).
pub fn modprobe(module: &str) -> anyhow::Result<()> {
    let modprobe = read_sysctl("kernel/modprobe")?;
    run(&modprobe, &[module]).map(|_| ())
}

/// `ipvsadm -Ln` (numeric, sorted by the kernel's hash order as ipvsadm prints it).
pub fn ipvsadm_list() -> anyhow::Result<String> {
    run("ipvsadm", &["-Ln"])
}

/// The `ipvsadm -Ln` table reduced to sorted, whitespace-normalised lines without the two header lines, for
/// comparisons that do not depend on the kernel's hash order or column widths. Real-server lines are prefixed with
/// their virtual server (`TCP 10.0.0.1:80 rr -> 10.1.0.1:80 Masq 1`), without the connection counters.
pub fn ipvsadm_table() -> anyhow::Result<Vec<String>> {
    let text = ipvsadm_list()?;
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
                // -> ADDR FORWARD WEIGHT ACTIVE INACTIVE
                let dest = words[..words.len().min(4)].join(" ");
                lines.push(format!("{current} {dest}"));
            }
            _ => {}
        }
    }
    lines.sort();
    Ok(lines)
}

/// A process started in the background, killed (and reaped) when dropped.
#[derive(Debug)]
pub struct Background {
    name: String,
    child: Child,
}

impl Background {
    /// Starts `program args...` with stdout/stderr appended to `/tmp/<name>.log`.
    pub fn spawn(name: &str, program: &str, args: &[&str]) -> anyhow::Result<Self> {
        let log = std::fs::File::create(format!("/tmp/{name}.log"))
            .with_context(|| format!("creating /tmp/{name}.log"))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {program} for {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The log written so far (`/tmp/<name>.log`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(format!("/tmp/{}.log", self.name)).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to `grace` for the process to exit (then SIGKILL); returns the log.
    pub fn stop(mut self, grace: Duration) -> String {
        self.terminate(grace);
        self.log()
    }

    fn terminate(&mut self, grace: Duration) {
        if !self.is_running() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(2));
    }
}

/// A pod: a network namespace with one veth (`eth0`) on the node's pod bridge and an HTTP server on
/// [`BACKEND_PORT`] whose `/name` answers the pod's name.
#[derive(Debug)]
pub struct Pod {
    /// Pod (and network namespace) name.
    pub name: String,
    /// Pod IP.
    pub ip: Ipv4Addr,
    server: Option<Background>,
}

/// Port the pods' HTTP servers listen on.
pub const BACKEND_PORT: u16 = 8080;

impl Pod {
    /// `http://<pod ip>:8080`-style address of the pod's server.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, BACKEND_PORT))
    }

    /// Runs `program args...` inside the pod's network namespace; returns stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Fetches each URL from inside the pod with ONE curl process (a new TCP connection per URL, 2 s timeout
    /// each). Returns one entry per URL: the body trimmed, or `Err(text)` for a failed transfer.
    pub fn curl_many(&self, urls: &[String]) -> anyhow::Result<Vec<Result<String, String>>> {
        curl_many(Some(&self.name), urls)
    }

    /// Stops the pod's HTTP server (connections to it are then refused).
    pub fn stop_server(&mut self) {
        self.server.take();
    }
}

/// Fetches each URL with one curl process (in network namespace `netns`, or the root namespace). Each transfer
/// gets its own connection and a 2 s limit; the result per URL is the trimmed body or `Err(curl's message)`.
pub fn curl_many(
    netns: Option<&str>,
    urls: &[String],
) -> anyhow::Result<Vec<Result<String, String>>> {
    // `--next` resets per-transfer options, so each URL gets its own -m/-w/-o; a separator line follows each body.
    const SEP: &str = "@@svcnet-transfer-end@@";
    let mut args: Vec<String> = Vec::new();
    if let Some(ns) = netns {
        args.extend(["netns", "exec", ns, "curl"].map(String::from));
    }
    for (i, url) in urls.iter().enumerate() {
        if i > 0 {
            args.push("--next".into());
        }
        args.extend(
            [
                "-sS",
                "-m",
                "2",
                "-H",
                "Connection: close",
                "-w",
                &format!("\n{SEP} %{{http_code}} %{{exitcode}}\n"),
                url,
            ]
            .map(String::from),
        );
    }
    let program = if netns.is_some() { "ip" } else { "curl" };
    let out = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {program} for curl"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut errors = stderr.lines().filter(|l| l.starts_with("curl:"));
    let mut results = Vec::new();
    let mut body = String::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix(SEP) {
            let mut fields = rest.split_whitespace();
            let code = fields.next().unwrap_or("000");
            let exit = fields.next().unwrap_or("?");
            if code == "200" && exit == "0" {
                results.push(Ok(body.trim().to_owned()));
            } else {
                let msg = errors
                    .next()
                    .map_or_else(|| format!("HTTP {code}, curl exit {exit}"), str::to_owned);
                results.push(Err(msg));
            }
            body.clear();
        } else {
            body.push_str(line);
            body.push('\n');
        }
    }
    ensure!(
        results.len() == urls.len(),
        "curl reported {} of {} transfers: {stdout}{stderr}",
        results.len(),
        urls.len()
    );
    Ok(results)
}

/// One HTTP/1.0 GET from this process (root network namespace) over a new connection; returns the body.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("reading the response from {addr}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("malformed HTTP response from {addr}: {response:?}"))?;
    let status = head.lines().next().unwrap_or_default();
    ensure!(status.contains(" 200 "), "{addr}{path} answered {status:?}");
    Ok(body.trim().to_owned())
}

/// Polls [`http_get`] until it succeeds or `within` passes; returns the body or the last error.
pub fn wait_http(addr: SocketAddr, path: &str, within: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + within;
    loop {
        match http_get(addr, path, Duration::from_millis(500)) {
            Ok(body) => return Ok(body),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("{addr}{path} not answering within {within:?}")));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Polls `condition` every 10 ms until it returns `Ok(true)` or `within` passes.
pub fn wait_until(
    what: &str,
    within: Duration,
    mut condition: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if condition()? {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= within {
            bail!("timed out after {within:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The node's pod network: a Linux bridge holding the gateway address, with [`Pod`]s attached by veth pairs.
/// Dropping it stops the servers and deletes the namespaces, veths and bridge.
#[derive(Debug)]
pub struct PodNetwork {
    bridge: String,
    /// Gateway address of the pods (on the bridge).
    pub gateway: Ipv4Addr,
    gateway_mac: String,
    prefix_len: u8,
    /// The pods, in creation order.
    pub pods: Vec<Pod>,
}

impl PodNetwork {
    /// Creates bridge `bridge` with `gateway/prefix_len`, enables IP forwarding and `bridge-nf-call-iptables`.
    pub fn new(bridge: &str, gateway: Ipv4Addr, prefix_len: u8) -> anyhow::Result<Self> {
        run("ip", &["link", "add", bridge, "type", "bridge"])?;
        // A bridge whose address was never set takes the lowest MAC address of its ports, so adding a pod can
        // change the gateway's MAC under the pods that already resolved it: their frames to the old MAC reach
        // the node as PACKET_OTHERHOST and IP drops them (after conntrack saw them) until their ARP entry is
        // refreshed. Setting the address explicitly pins it, as the CNI bridge plugin does.
        let mac = link_mac(bridge)?;
        run("ip", &["link", "set", bridge, "address", &mac])?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{gateway}/{prefix_len}"),
                "dev",
                bridge,
            ],
        )?;
        run("ip", &["link", "set", bridge, "up"])?;
        // As a bridge CNI and kubelet set up on a real node: bridged frames traverse iptables/IPVS, so a reply
        // from one pod to another on the same bridge is un-NATed by IPVS (else it bypasses the node).
        modprobe("br_netfilter")?;
        sysctl("net/bridge/bridge-nf-call-iptables", "1")?;
        sysctl("net/ipv4/ip_forward", "1")?;
        Ok(Self {
            bridge: bridge.to_owned(),
            gateway,
            gateway_mac: mac,
            prefix_len,
            pods: Vec::new(),
        })
    }

    /// The bridge's MAC address, which the pods resolve the gateway to.
    pub fn gateway_mac(&self) -> &str {
        &self.gateway_mac
    }

    /// Creates pod `name` with address `ip` and starts its HTTP server (waits until it answers).
    pub fn add_pod(&mut self, name: &str, ip: Ipv4Addr) -> anyhow::Result<&Pod> {
        let host_if = format!("v{name}");
        ensure!(
            host_if.len() <= 15,
            "pod name {name} too long for an interface name"
        );
        let cidr = format!("{ip}/{}", self.prefix_len);
        let gw = self.gateway.to_string();
        run("ip", &["netns", "add", name])?;
        run(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", name,
            ],
        )?;
        run(
            "ip",
            &["link", "set", &host_if, "master", &self.bridge, "up"],
        )?;
        // kubelet's hairpin-veth mode: with bridge-nf-call-iptables, the de-NATed reply of a hairpin connection
        // (pod → VIP → same pod) is bridged back out of the port it came in on, which needs hairpin on the port.
        run(
            "ip",
            &[
                "link",
                "set",
                &host_if,
                "type",
                "bridge_slave",
                "hairpin",
                "on",
            ],
        )?;
        run("ip", &["-n", name, "link", "set", "lo", "up"])?;
        run("ip", &["-n", name, "addr", "add", &cidr, "dev", "eth0"])?;
        run("ip", &["-n", name, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", name, "route", "add", "default", "via", &gw])?;
        let root = PathBuf::from(format!("/tmp/www-{name}"));
        std::fs::create_dir_all(&root)?;
        std::fs::write(root.join("name"), format!("{name}\n"))?;
        let port = BACKEND_PORT.to_string();
        let root_str = root.to_string_lossy().into_owned();
        let server = Background::spawn(
            &format!("httpd-{name}"),
            "ip",
            &[
                "netns", "exec", name, "busybox", "httpd", "-f", "-p", &port, "-h", &root_str,
            ],
        )?;
        let pod = Pod {
            name: name.to_owned(),
            ip,
            server: Some(server),
        };
        let body = wait_http(pod.addr(), "/name", Duration::from_secs(5))?;
        ensure!(body == name, "pod {name} serves {body:?}");
        let mac = link_mac(&self.bridge)?;
        ensure!(
            mac == self.gateway_mac,
            "bridge {} changed its MAC address from {} to {mac} when {name} joined",
            self.bridge,
            self.gateway_mac
        );
        self.pods.push(pod);
        Ok(self.pods.last().expect("just pushed"))
    }

    /// The pod named `name`.
    pub fn pod(&self, name: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        for pod in &mut self.pods {
            pod.stop_server();
            let _ = run("ip", &["netns", "del", &pod.name]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}

/// The MAC address of link `name` (from sysfs), e.g. `36:01:ed:90:ba:3b`.
pub fn link_mac(name: &str) -> anyhow::Result<String> {
    let path = format!("/sys/class/net/{name}/address");
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("reading {path}"))?
        .trim()
        .to_owned())
}

/// Adds a dummy link `name` holding `cidr` (e.g. a node address `192.168.1.10/24`), up.
pub fn add_dummy_link(name: &str, cidr: &str) -> anyhow::Result<()> {
    run("ip", &["link", "add", name, "type", "dummy"])?;
    run("ip", &["addr", "add", cidr, "dev", name])?;
    run("ip", &["link", "set", name, "up"])?;
    Ok(())
}
