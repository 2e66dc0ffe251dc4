//! `svcnet-dns --corefile` forwarding under attack, on loopback with the built binary:
//! - a spoofing upstream sends forged answers (wrong id, wrong question name, type or class,
//!   the question's case flipped, the right everything from another port) before its real
//!   one: only the real answer reaches the client and the cache, and the forgeries are counted;
//! - a flood of distinct names to a slow upstream from one client: `max_concurrent` answers
//!   the excess REFUSED, RSS stays bounded, another client's forwarded names are all answered
//!   (fair share of the limit) and cluster names are answered throughout.
//!
//! Needs the binary built: `cargo build --workspace --bins`.

mod corefile_support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use corefile_support::{
    RTYPE_A, Server, decode, encode_query, example_cluster, free_port, http_get, query,
};

const T: Duration = Duration::from_secs(3);

/// End of the question section of a query (12-byte header, one name, type and class).
fn question_end(q: &[u8]) -> Option<usize> {
    let mut i = 12;
    loop {
        let len = *q.get(i)? as usize;
        if len == 0 {
            return Some(i + 1 + 4).filter(|e| *e <= q.len());
        }
        i += 1 + len;
    }
}

/// An answer to `q` (header and question copied, `id` and question bytes as given) with one
/// A record `addr`.
fn answer_with(id: u16, question: &[u8], addr: [u8; 4]) -> Vec<u8> {
    let mut a = Vec::with_capacity(question.len() + 16);
    a.extend_from_slice(&id.to_be_bytes());
    a.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    a.extend_from_slice(question);
    a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4]);
    a.extend_from_slice(&addr);
    a
}

/// The question bytes (name, type, class) of a query.
fn question(q: &[u8]) -> Option<Vec<u8>> {
    Some(q.get(12..question_end(q)?)?.to_vec())
}

/// A spoofing upstream (UDP): for every query, forged answers (A 6.6.6.x: wrong id, name,
/// type, class, the right everything from another port, and with `flip_case` the name's case
/// flipped) then the real one (A 192.0.2.1). Counts the queries it saw.
fn spoofing_upstream(flip_case: bool) -> (SocketAddr, Arc<AtomicU64>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let q = &buf[..n];
            let Some(qs) = question(q) else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let id = u16::from_be_bytes([q[0], q[1]]);
            let tail = qs.len() - 4;
            let mut wrong_type = qs.clone();
            wrong_type[tail + 1] = 28; // AAAA
            let mut wrong_class = qs.clone();
            wrong_class[tail + 3] = 3; // CH
            let mut flipped = qs.clone();
            for b in &mut flipped[..tail] {
                if b.is_ascii_alphabetic() {
                    *b ^= 0x20;
                }
            }
            let mut wrong_name = encode_query(0, "evil.example.test", RTYPE_A);
            wrong_name.drain(..12);
            let _ = sock.send_to(&answer_with(id ^ 0x5a5a, &qs, [6, 6, 6, 1]), peer);
            let _ = sock.send_to(&answer_with(id, &wrong_name, [6, 6, 6, 2]), peer);
            let _ = sock.send_to(&answer_with(id, &wrong_type, [6, 6, 6, 3]), peer);
            let _ = sock.send_to(&answer_with(id, &wrong_class, [6, 6, 6, 4]), peer);
            if flip_case {
                let _ = sock.send_to(&answer_with(id, &flipped, [6, 6, 6, 5]), peer);
            }
            let _ = other.send_to(&answer_with(id, &qs, [6, 6, 6, 6]), peer);
            std::thread::sleep(Duration::from_millis(20));
            let _ = sock.send_to(&answer_with(id, &qs, [192, 0, 2, 1]), peer);
        }
    });
    (addr, seen)
}

fn write_corefile(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("Corefile");
    std::fs::write(&path, text).unwrap();
    path
}

/// The value of a metric line starting with `prefix` (summed over label sets).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn forged_answers_reach_neither_the_client_nor_the_cache() {
    // Without 0x20 an answer differing only in case is a valid answer (a successful guess of
    // id and port), so the flipped-case forgery is sent only to the 0x20 server.
    for (options, flip_case) in [
        ("source_port random\n  case_randomization", true),
        ("source_port pooled", false),
    ] {
        let (up, seen) = spoofing_upstream(flip_case);
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let prom = free_port();
        let cf = write_corefile(
            dir.path(),
            &format!(
                ".:{port} {{\n bind 127.0.0.1\n prometheus 127.0.0.1:{prom}\n cache 300\n forward . {up} {{\n  {options}\n }}\n}}\n"
            ),
        );
        let _dns = Server::start("dns", &cf, &example_cluster(), true);
        let dns: SocketAddr = ([127, 0, 0, 1], port).into();
        for i in 0..5 {
            let a = query(dns, "www.example.test", RTYPE_A, T)
                .unwrap_or_else(|| panic!("{options}: query {i} unanswered"));
            assert_eq!(a.rcode, 0, "{options}");
            assert_eq!(
                a.addrs(),
                vec!["192.0.2.1"],
                "{options}: query {i}: the real answer only"
            );
        }
        assert_eq!(
            seen.load(Ordering::SeqCst),
            1,
            "{options}: later answers came from the cache"
        );
        let text = http_get(([127, 0, 0, 1], prom).into(), "/metrics");
        let mismatched = metric(&text, "coredns_forward_mismatched_replies_total");
        // Wrong id, name, type and class, plus the flipped case when 0x20 is on; the answer
        // from the other port is dropped by the kernel (connected socket).
        let expected = if flip_case { 5.0 } else { 4.0 };
        assert_eq!(mismatched, expected, "{options}: {text}");
    }
}

/// An upstream answering every query with A 192.0.2.9 after `delay`.
fn slow_upstream(delay: Duration) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let out = sock.try_clone().unwrap();
    let (tx, rx) = mpsc::channel::<(Instant, SocketAddr, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let q = &buf[..n];
            let Some(qs) = question(q) else { continue };
            let id = u16::from_be_bytes([q[0], q[1]]);
            if tx
                .send((
                    Instant::now() + delay,
                    peer,
                    answer_with(id, &qs, [192, 0, 2, 9]),
                ))
                .is_err()
            {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        while let Ok((due, peer, a)) = rx.recv() {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let _ = out.send_to(&a, peer);
        }
    });
    addr
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Sends `names` from `sock` in waves of `wave` outstanding queries and returns the rcodes
/// (None: no answer within 3 s).
fn waves(sock: &UdpSocket, server: SocketAddr, names: &[String], wave: usize) -> Vec<Option<u8>> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut out = Vec::new();
    for (w, chunk) in names.chunks(wave).enumerate() {
        let base = (w * wave) as u16;
        let mut got: Vec<Option<u8>> = vec![None; chunk.len()];
        for (i, n) in chunk.iter().enumerate() {
            sock.send_to(&encode_query(base + i as u16, n, RTYPE_A), server)
                .unwrap();
        }
        let deadline = Instant::now() + T;
        let mut buf = [0u8; 4096];
        while got.iter().any(Option::is_none) && Instant::now() < deadline {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                let id = u16::from_be_bytes([buf[0], buf[1]]).wrapping_sub(base) as usize;
                if id < got.len() {
                    got[id] = decode(&buf[..n]).map(|a| a.rcode);
                }
            }
        }
        out.extend(got);
    }
    out
}

#[test]
fn random_name_flood_is_bounded_and_does_not_starve_other_clients_or_cluster_names() {
    let up = slow_upstream(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let prom = free_port();
    let cf = write_corefile(
        dir.path(),
        &format!(
            ".:{port} {{\n bind 127.0.0.1\n prometheus 127.0.0.1:{prom}\n kubernetes cluster.local in-addr.arpa ip6.arpa\n cache 30 {{\n  success 1000\n  denial 1000\n }}\n forward . {up} {{\n  max_concurrent 100\n }}\n}}\n"
        ),
    );
    let dns_proc = Server::start("dns", &cf, &example_cluster(), true);
    let pid = dns_proc.pid();
    let dns: SocketAddr = ([127, 0, 0, 1], port).into();
    let cluster = "kubernetes.default.svc.cluster.local";
    assert_eq!(
        query(dns, cluster, RTYPE_A, T).unwrap().addrs(),
        vec!["10.96.0.1"]
    );
    // Baseline: cluster names alone.
    let cluster_rate = |secs: f64| {
        let sock = UdpSocket::bind("127.0.0.4:0").unwrap();
        let names: Vec<String> = vec![cluster.to_string(); 200];
        let started = Instant::now();
        let mut answered = 0usize;
        let mut total = 0usize;
        while started.elapsed().as_secs_f64() < secs {
            let r = waves(&sock, dns, &names, 20);
            total += r.len();
            answered += r.iter().filter(|c| **c == Some(0)).count();
        }
        (
            answered,
            total,
            answered as f64 / started.elapsed().as_secs_f64(),
        )
    };
    let (_, _, base_qps) = cluster_rate(1.0);
    let rss_before = rss_kb(pid);

    // The flood: one client, 4,000 distinct names per second for 4 s.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = UdpSocket::bind("127.0.0.2:0").unwrap();
    let flood_rx = flood.try_clone().unwrap();
    flood_rx
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let (refused, answered) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = {
        let (stop, refused, answered) = (stop.clone(), refused.clone(), answered.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((n, _)) = flood_rx.recv_from(&mut buf) {
                    match decode(&buf[..n]).map(|a| a.rcode) {
                        Some(5) => refused.fetch_add(1, Ordering::SeqCst),
                        Some(_) => answered.fetch_add(1, Ordering::SeqCst),
                        None => 0,
                    };
                }
            }
        })
    };
    let sender = {
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut sent = 0u64;
            while started.elapsed() < Duration::from_secs(4) {
                let due = (started.elapsed().as_secs_f64() * 4000.0) as u64;
                while sent < due {
                    let name = format!("r{sent}-{:x}.flood.test", sent.wrapping_mul(0x9e37_79b9));
                    let _ = flood.send_to(&encode_query(sent as u16, &name, RTYPE_A), dns);
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // A second client's forwarded names, 20 in flight at a time, during the flood.
    let legit = UdpSocket::bind("127.0.0.3:0").unwrap();
    let names: Vec<String> = (0..300).map(|i| format!("l{i}.legit.test")).collect();
    let legit_rcodes = waves(&legit, dns, &names, 20);
    let (c_ok, c_total, flood_qps) = cluster_rate(1.0);
    let mut rss_peak = rss_kb(pid);
    let sent = sender.join().unwrap();
    rss_peak = rss_peak.max(rss_kb(pid));
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    let rss_after = rss_kb(pid);
    let text = http_get(([127, 0, 0, 1], prom).into(), "/metrics");
    let rejects = metric(&text, "coredns_forward_max_concurrent_rejects_total");
    let legit_refused = legit_rcodes.iter().filter(|c| **c == Some(5)).count();
    let legit_ok = legit_rcodes.iter().filter(|c| **c == Some(0)).count();
    eprintln!(
        "flood: sent {sent}, refused {}, answered {}; rejects metric {rejects}; legit forwarded: \
         {legit_ok}/300 answered, {legit_refused} refused; cluster: {c_ok}/{c_total} answered, \
         {flood_qps:.0} QPS during the flood vs {base_qps:.0} before (debug build, one client \
         with 20 in flight); RSS {rss_before} kB before, {rss_peak} kB peak, {rss_after} kB after",
        refused.load(Ordering::SeqCst),
        answered.load(Ordering::SeqCst)
    );
    assert!(
        refused.load(Ordering::SeqCst) > 1000,
        "max_concurrent refused the flood's excess"
    );
    assert!(
        rejects > 1000.0,
        "counted in coredns_forward_max_concurrent_rejects_total"
    );
    assert_eq!(
        legit_refused, 0,
        "the other client is not starved: {legit_rcodes:?}"
    );
    assert_eq!(legit_ok, 300, "{legit_rcodes:?}");
    assert_eq!(
        c_ok, c_total,
        "every cluster query answered during the flood"
    );
    assert!(
        rss_peak < rss_before + 64 * 1024,
        "RSS bounded: {rss_before} kB before, {rss_peak} kB during the flood"
    );
}
