//! Helpers of the `corefile_*` end-to-end tests: Knot DNS upstreams on loopback, the built
//! `svcnet-dns` run with a Corefile, raw DNS queries, free ports.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    svcnet_tests::bins::repo_root()
}

/// `target/<profile>/svcnet-dns`, next to this test's `deps/` directory.
pub fn binary() -> PathBuf {
    svcnet_tests::bins::binary("svcnet-dns")
}

/// A loopback port free for both UDP and TCP right now.
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("local addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A Knot DNS server on loopback serving the given zones (`(origin, zone file text)`).
pub struct Knot {
    child: Child,
    /// Its address.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Knot {
    /// Starts `knotd` and waits until it answers.
    pub fn start(zones: &[(&str, &str)]) -> Knot {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let d = dir.path();
        std::fs::create_dir_all(d.join("run")).unwrap();
        std::fs::create_dir_all(d.join("db")).unwrap();
        let mut conf = format!(
            "server:\n    listen: 127.0.0.1@{port}\n    rundir: {run}\ndatabase:\n    storage: {db}\ntemplate:\n  - id: default\n    storage: {dir}\nlog:\n  - target: stderr\n    any: warning\nzone:\n",
            run = d.join("run").display(),
            db = d.join("db").display(),
            dir = d.display()
        );
        for (origin, text) in zones {
            let file = format!("{origin}.zone");
            std::fs::write(d.join(&file), text).unwrap();
            conf.push_str(&format!("  - domain: {origin}\n    file: {file}\n"));
        }
        std::fs::write(d.join("knot.conf"), conf).unwrap();
        let child = Command::new("knotd")
            .arg("-c")
            .arg(d.join("knot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start knotd (package knot)");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let knot = Knot {
            child,
            addr,
            _dir: dir,
        };
        let origin = zones.first().map_or(".", |z| z.0);
        let start = Instant::now();
        while query(addr, origin, RTYPE_SOA, Duration::from_millis(200)).is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "knotd did not answer"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        knot
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A zone file with an SOA/NS and the given extra lines.
pub fn zone(origin: &str, lines: &[&str]) -> String {
    let mut z = format!(
        "$TTL 300\n@ IN SOA ns.{origin}. admin.{origin}. 1 3600 600 86400 60\n@ IN NS ns.{origin}.\nns IN A 127.0.0.1\n"
    );
    for l in lines {
        z.push_str(l);
        z.push('\n');
    }
    z
}

/// `svcnet-dns --corefile` running; killed on drop.
pub struct Server {
    child: Child,
    log: mpsc::Receiver<String>,
    seen: Vec<String>,
    name: String,
}

impl Server {
    /// Starts `svcnet-dns --corefile FILE --manifests DIR` and waits until it reports
    /// `listening` (not when `expect_listen` is false).
    pub fn start(name: &str, corefile: &Path, manifests: &Path, expect_listen: bool) -> Server {
        let mut child = Command::new(binary())
            .arg("--corefile")
            .arg(corefile)
            .arg("--manifests")
            .arg(manifests)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start svcnet-dns");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let tag = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Server {
            child,
            log: rx,
            seen: Vec::new(),
            name: name.to_string(),
        };
        if expect_listen {
            s.wait_log(Duration::from_secs(20), "DNS server listening");
        }
        s
    }

    /// Waits until a log line contains `needle`; returns that line.
    pub fn wait_log(&mut self, timeout: Duration, needle: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "{}: no log line with {needle:?} within {timeout:?}",
                    self.name
                ),
            }
        }
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every log line so far.
    pub fn lines(&mut self) -> Vec<String> {
        self.seen.extend(self.log.try_iter());
        self.seen.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Record type A.
pub const RTYPE_A: u16 = 1;
/// Record type SOA.
pub const RTYPE_SOA: u16 = 6;

/// Encodes a query (RD set).
pub fn encode_query(id: u16, name: &str, rtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&rtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// A decoded answer: rcode, answer count, TTLs and A addresses of the answer section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Response code (0 NOERROR, 3 NXDOMAIN, 5 REFUSED, ...).
    pub rcode: u8,
    /// (ttl, rdata) of each answer record; A rdata as dotted quad, others as hex.
    pub records: Vec<(u32, String)>,
}

impl Answer {
    /// The A addresses, sorted.
    pub fn addrs(&self) -> Vec<String> {
        let mut v: Vec<String> = self.records.iter().map(|r| r.1.clone()).collect();
        v.sort();
        v
    }
}

fn skip_name(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *b.get(i)? as usize;
        if len == 0 {
            return Some(i + 1);
        }
        if len & 0xc0 == 0xc0 {
            return Some(i + 2);
        }
        i += 1 + len;
    }
}

/// Decodes the parts of a response the tests look at.
pub fn decode(b: &[u8]) -> Option<Answer> {
    if b.len() < 12 {
        return None;
    }
    let rcode = b[3] & 0x0f;
    let qd = u16::from_be_bytes([b[4], b[5]]) as usize;
    let an = u16::from_be_bytes([b[6], b[7]]) as usize;
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(b, i)? + 4;
    }
    let mut records = Vec::new();
    for _ in 0..an {
        i = skip_name(b, i)?;
        let rtype = u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]);
        let ttl = u32::from_be_bytes([b[i + 4], b[i + 5], b[i + 6], b[i + 7]]);
        let len = u16::from_be_bytes([b[i + 8], b[i + 9]]) as usize;
        let data = b.get(i + 10..i + 10 + len)?;
        let text = if rtype == RTYPE_A && len == 4 {
            format!("{}.{}.{}.{}", data[0], data[1], data[2], data[3])
        } else {
            data.iter().map(|x| format!("{x:02x}")).collect()
        };
        records.push((ttl, text));
        i += 10 + len;
    }
    Some(Answer { rcode, records })
}

/// One UDP query with a timeout; `None` when nothing came back.
pub fn query(server: SocketAddr, name: &str, rtype: u16, timeout: Duration) -> Option<Answer> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(timeout)).ok()?;
    static NEXT_ID: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0x1234);
    let id = NEXT_ID.fetch_add(7919, std::sync::atomic::Ordering::Relaxed);
    sock.send_to(&encode_query(id, name, rtype), server).ok()?;
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            return decode(&buf[..n]);
        }
    }
}

/// Queries until `check` holds (polling every 50 ms), panicking after `timeout`.
pub fn wait_answer(
    server: SocketAddr,
    name: &str,
    timeout: Duration,
    mut check: impl FnMut(&Answer) -> bool,
) -> Answer {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < timeout {
        if let Some(a) = query(server, name, RTYPE_A, Duration::from_millis(500)) {
            if check(&a) {
                return a;
            }
            last = Some(a);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{name}: condition not met within {timeout:?}; last answer {last:?}");
}

/// GET `path` on `addr`: the body ("" when unreachable).
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The demo cluster's manifests.
pub fn example_cluster() -> PathBuf {
    repo().join("examples/cluster")
}
