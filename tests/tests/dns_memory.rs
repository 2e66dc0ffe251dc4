//! Memory given back after bursts (issue 19 item 4): bursts of TCP connections against the
//! real `svcnet-dns` binary, and the resident set must come back down near where it started.
//!
//! With `bench/memory/tcp-bursts.py` (Python's client), nine bursts of 1,024 connections took
//! the (glibc, debug) binary from 26 to 98 MB before the fix; with the fixed mmap threshold and
//! the trimming thread it peaks at ~43 MB and settles back at ~27 MB (BENCHMARKS.md). This
//! test's own client does not reproduce that growth (the server stays near 28 MB even with
//! `--memory-trim-interval 0s`; why Python's client does is not yet understood), so it guards
//! the bound only; the mechanism is tested in `dns-bin/src/trim.rs`. The wait is a poll with a
//! generous limit, not a timing assertion.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Connections per burst (the server's TCP connection limit is 1,024; staying below it keeps
/// every connection answered, and the test's own descriptors under the usual 1,024 soft limit).
const CONNECTIONS: usize = 900;
const BURSTS: usize = 9;
/// How far above the idle resident set the server may stay once a burst is over.
const MARGIN_MB: f64 = 12.0;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("server alive");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb / 1024.0
}

/// A TCP DNS query (2-byte length prefix) for `kubernetes.default.svc.cluster.local A`.
fn query(id: u16) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in "kubernetes.default.svc.cluster.local".split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend(q);
    framed
}

/// Opens `CONNECTIONS` connections, sends a query on each, reads every answer, closes them all.
fn burst(addr: SocketAddr) {
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        conns.push(s);
    }
    for (i, s) in conns.iter_mut().enumerate() {
        s.write_all(&query(i as u16)).expect("send query");
    }
    for (i, s) in conns.iter_mut().enumerate() {
        // The length, the id and the flags; the rest stays unread, so closing the socket
        // resets the connection (as the client did, and as impatient clients do).
        let mut head = [0u8; 6];
        s.read_exact(&mut head).expect("answer");
        assert!(
            u16::from_be_bytes([head[0], head[1]]) > 12,
            "answer {i} has a body"
        );
        assert_eq!(
            &head[2..4],
            &(i as u16).to_be_bytes(),
            "answer to query {i}"
        );
        assert_eq!(head[5] & 0x0f, 0, "NOERROR for query {i}");
    }
    drop(conns);
    // Let the server close its side and free the connections before the next burst (with
    // the previous burst's buffers still live, a burst takes fresh, untouched memory instead
    // of reusing the freed buffers, and the growth does not show).
    std::thread::sleep(Duration::from_millis(1500));
}

#[test]
fn rss_comes_back_down_after_tcp_bursts() {
    let mut child = Command::new(svcnet_tests::bins::binary("svcnet-dns"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--health",
            "off",
            "--ready",
            "off",
        ])
        .args([
            "--metrics",
            "off",
            "--memory-trim-interval",
            "1s",
            // The bursts come from one address: lift the per-source and total TCP caps (64 and
            // 1,024 by default) above the burst size so every connection is served.
            "--max-tcp-per-source",
            "2048",
            "--max-tcp-connections",
            "2048",
            "--manifests",
        ])
        .arg(svcnet_tests::bins::repo_root().join("examples/cluster"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start svcnet-dns");
    let stderr = child.stderr.take().unwrap();
    let pid = child.id();
    let _server = Server(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[svcnet-dns] {line}");
            let _ = tx.send(line);
        }
    });
    let addr: SocketAddr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("svcnet-dns reports its listen address");
        if let Some(a) = line
            .split("listen=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
        {
            break a;
        }
    };
    // One burst first, so that the runtime's own one-time allocations are in the baseline.
    burst(addr);
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss_mb(pid);
    let mut peak = idle;
    for _ in 0..BURSTS {
        burst(addr);
        peak = peak.max(rss_mb(pid));
    }
    let bound = idle + MARGIN_MB;
    let start = Instant::now();
    let mut now = rss_mb(pid);
    while now > bound {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "RSS stayed at {now:.1} MB after {BURSTS} bursts of {CONNECTIONS} connections \
             (idle {idle:.1} MB, peak {peak:.1} MB, bound {bound:.1} MB)"
        );
        std::thread::sleep(Duration::from_millis(200));
        now = rss_mb(pid);
    }
    eprintln!("RSS idle {idle:.1} MB, peak {peak:.1} MB, after the bursts {now:.1} MB");
}
