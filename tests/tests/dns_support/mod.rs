//! Shared helpers of the `dns_*` end-to-end tests: start the built `svcnet-dns` binary on free
//! loopback ports and query it with real `dig`.
//!
//! The binary is found next to the test executable (`target/debug/svcnet-dns`); build it first
//! with `cargo build --workspace --bins` (the README's test command does).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// A running `svcnet-dns`, stopped (SIGKILL) on drop.
pub struct Dns {
    child: Child,
    /// DNS address (UDP and TCP).
    pub addr: SocketAddr,
    /// `/health`.
    pub health: SocketAddr,
    /// `/ready`.
    pub ready: SocketAddr,
    /// `/metrics`.
    pub metrics: SocketAddr,
    log: mpsc::Receiver<String>,
}

impl Dns {
    /// Starts the server on `manifests` with extra flags, waits until it listens and, unless
    /// `wait_ready` is false, until `/ready` says OK.
    pub fn start(manifests: &Path, extra: &[&str]) -> Dns {
        Self::start_with(manifests, extra, true)
    }

    /// See [`Dns::start`].
    pub fn start_with(manifests: &Path, extra: &[&str], wait_ready: bool) -> Dns {
        let mut args: Vec<std::ffi::OsString> = vec!["--manifests".into(), manifests.into()];
        args.extend(extra.iter().map(|a| a.into()));
        Self::spawn(&args, wait_ready)
    }

    /// Starts the binary with `args` (source flags and options) on free loopback ports.
    pub fn spawn(args: &[std::ffi::OsString], wait_ready: bool) -> Dns {
        let mut child = Command::new(binary())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(["--health", "127.0.0.1:0", "--ready", "127.0.0.1:0"])
            .args(["--metrics", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start svcnet-dns");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[svcnet-dns] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut found: [Option<SocketAddr>; 4] = [None; 4];
        while found.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("svcnet-dns did not report its addresses: {found:?}"));
            for (i, key) in ["listen=", "health=", "ready=", "metrics="]
                .iter()
                .enumerate()
            {
                if let Some(rest) = line.split(key).nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("");
                    if let Ok(a) = addr.parse() {
                        found[i] = Some(a);
                    }
                }
            }
        }
        let [Some(addr), Some(health), Some(ready), Some(metrics)] = found else {
            unreachable!()
        };
        let dns = Dns {
            child,
            addr,
            health,
            ready,
            metrics,
            log: rx,
        };
        if wait_ready {
            dns.wait_for(Duration::from_secs(10), || {
                dns.http_get(dns.ready, "/ready").0 == 200
            });
        }
        dns
    }

    /// Polls `check` every 10 ms until it holds, panicking after `timeout`.
    pub fn wait_for(&self, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        loop {
            if check() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "condition not met within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `dig @server -p port ARGS` (UDP unless `+tcp`), one try, 2 s timeout.
    pub fn dig(&self, args: &[&str]) -> Dig {
        dig_at(self.addr, args)
    }

    /// GET `path` on `addr`: (status, body).
    pub fn http_get(&self, addr: SocketAddr, path: &str) -> (u16, String) {
        http_get(addr, path)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits up to `timeout` for the process to exit; returns whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Log lines received so far (drains them).
    pub fn log_lines(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` on `addr` with a raw HTTP/1.1 request: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// A parsed `dig` answer.
#[derive(Debug, Clone, Default)]
pub struct Dig {
    /// `NOERROR`, `NXDOMAIN`, ...; empty when dig got no answer.
    pub status: String,
    /// Header flags (`qr`, `aa`, `tc`, ...).
    pub flags: Vec<String>,
    /// Answer section records, whitespace-normalised (`name ttl IN type rdata`).
    pub answer: Vec<String>,
    /// Authority section.
    pub authority: Vec<String>,
    /// Additional section (without the OPT pseudo-section).
    pub additional: Vec<String>,
    /// `;; SERVER: ... (UDP)` or `(TCP)`.
    pub transport: String,
    /// Message size received.
    pub size: usize,
    /// The whole output.
    pub raw: String,
}

impl Dig {
    /// The rdata (last fields after the type) of the answer records.
    pub fn rdata(&self) -> Vec<String> {
        self.answer
            .iter()
            .map(|r| r.split_whitespace().skip(4).collect::<Vec<_>>().join(" "))
            .collect()
    }

    /// Sorted rdata.
    pub fn rdata_sorted(&self) -> Vec<String> {
        let mut v = self.rdata();
        v.sort();
        v
    }

    /// Whether the header has flag `f`.
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
}

/// Runs dig against `server` and parses its output.
pub fn dig_at(server: SocketAddr, args: &[&str]) -> Dig {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args(["+time=2", "+tries=1", "+norec"])
        .args(args)
        .output()
        .expect("run dig (package bind9-dnsutils)");
    parse_dig(&String::from_utf8_lossy(&out.stdout))
}

fn parse_dig(text: &str) -> Dig {
    let mut dig = Dig {
        raw: text.to_string(),
        ..Dig::default()
    };
    let mut section = "";
    for line in text.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            dig.status = rest.split(',').next().unwrap_or("").trim().to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            dig.flags = rest
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect();
        }
        if let Some(rest) = line.strip_prefix(";; SERVER: ") {
            dig.transport = rest
                .rsplit('(')
                .next()
                .unwrap_or("")
                .trim_end_matches(')')
                .to_string();
        }
        if let Some(rest) = line.strip_prefix(";; MSG SIZE  rcvd: ") {
            dig.size = rest.trim().parse().unwrap_or(0);
        }
        match line {
            ";; ANSWER SECTION:" => section = "answer",
            ";; AUTHORITY SECTION:" => section = "authority",
            ";; ADDITIONAL SECTION:" => section = "additional",
            "" => section = "",
            l if l.starts_with(';') => {}
            l => {
                let record = l.split_whitespace().collect::<Vec<_>>().join(" ");
                match section {
                    "answer" => dig.answer.push(record),
                    "authority" => dig.authority.push(record),
                    "additional" => dig.additional.push(record),
                    _ => {}
                }
            }
        }
    }
    dig
}

/// Copies the manifest directory `from` into a fresh temporary directory.
pub fn copy_dir(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(from).expect("read manifest dir") {
        let entry = entry.expect("dir entry");
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
        }
    }
    dir
}

/// `examples/cluster` (IPv4 demo cluster).
pub fn example_cluster() -> PathBuf {
    repo().join("examples/cluster")
}

/// `examples/cluster-dualstack`.
pub fn example_dualstack() -> PathBuf {
    repo().join("examples/cluster-dualstack")
}
