//! Serving hygiene of `svcnet-dns` under abuse, with real sockets: UDP answers capped at the
//! advertised size and large ones rate-limited (amplification), pipelined TCP queries answered
//! out of order behind a slow forwarded one, a flood of idle TCP connections that does not lock
//! out real clients, FORMERR with OPT and the metrics' `server` label.
//!
//! Needs `dig` (bind9-dnsutils) and the binary built: `cargo build --workspace --bins`.

mod corefile_support;
mod dns_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use dns_support::{Dns, copy_dir, example_cluster};

const SVC: &str = "demoapp-svc.default.svc.cluster.local";

/// A headless Service `name` with `n` ready endpoints (one A record each).
fn headless(name: &str, n: usize, net: u8) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{clusterIP: None, ports: [{{name: http, port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 80, protocol: TCP}}]\nendpoints:\n"
    );
    for i in 0..n {
        y.push_str(&format!(
            "  - {{addresses: [10.{net}.{}.{}], conditions: {{ready: true}}}}\n",
            i / 250,
            i % 250 + 1
        ));
    }
    y
}

/// A query for `name` type A with id `id`, RD set, and an OPT record advertising `bufsize`.
fn query_with_edns(id: u16, name: &str, bufsize: u16) -> Vec<u8> {
    let mut q = corefile_support::encode_query(id, name, corefile_support::RTYPE_A);
    q[11] = 1; // ARCOUNT
    q.extend_from_slice(&[0, 0, 41]);
    q.extend_from_slice(&bufsize.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    q
}

/// (id, TC flag, ANCOUNT, size) of a DNS message.
fn summary(msg: &[u8]) -> (u16, bool, u16, usize) {
    (
        u16::from_be_bytes([msg[0], msg[1]]),
        msg[2] & 0x02 != 0,
        u16::from_be_bytes([msg[6], msg[7]]),
        msg.len(),
    )
}

/// The value of the first metric line starting with `prefix`, if any.
fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn udp_answers_are_capped_and_large_ones_rate_limited() {
    let dir = copy_dir(&example_cluster());
    std::fs::write(dir.path().join("big.yaml"), headless("big", 500, 250)).unwrap();
    std::fs::write(dir.path().join("mid.yaml"), headless("mid", 60, 251)).unwrap();
    let dns = Dns::start(dir.path(), &["--large-answer-rate", "5"]);
    let big = "big.default.svc.cluster.local";

    // The probe: a 65,535-byte buffer no longer draws a multi-kilobyte UDP answer.
    let capped = dns.dig(&["+bufsize=65535", "+ignore", big]);
    assert_eq!(capped.transport, "UDP", "{}", capped.raw);
    assert!(capped.has_flag("tc"), "{}", capped.raw);
    assert!(capped.size <= 1232, "UDP answer of {} bytes", capped.size);
    assert!(capped.raw.contains("udp: 1232"), "{}", capped.raw);
    // dig then retries over TCP and gets all 500.
    let full = dns.dig(&["+bufsize=65535", big]);
    assert_eq!(full.transport, "TCP", "{}", full.raw);
    assert_eq!(full.answer.len(), 500);

    // `mid` (60 records, ~1 KB) fits in 1232 bytes: over UDP, 5 per second per /24 get the full
    // answer, the rest an empty truncated one.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 4096];
    let mut full_answers = 0;
    let mut truncated = 0;
    let started = Instant::now();
    for id in 0..20u16 {
        sock.send_to(
            &query_with_edns(id, "mid.default.svc.cluster.local", 4096),
            dns.addr,
        )
        .unwrap();
        let (n, _) = sock.recv_from(&mut buf).expect("an answer");
        let (rid, tc, ancount, size) = summary(&buf[..n]);
        assert_eq!(rid, id);
        if tc {
            assert_eq!(ancount, 0);
            assert!(size < 100, "a truncated answer is small ({size} bytes)");
            truncated += 1;
        } else {
            assert_eq!(ancount, 60);
            assert!(size > 512 && size <= 1232, "{size}");
            full_answers += 1;
        }
    }
    let took = started.elapsed();
    assert!(
        (5..=5 + took.as_secs() as usize * 5 + 1).contains(&full_answers),
        "{full_answers} full answers in {took:?}"
    );
    assert!(truncated >= 10, "{truncated} truncated");
    // Small answers never count against the limit.
    for id in 100..150u16 {
        sock.send_to(&query_with_edns(id, SVC, 4096), dns.addr)
            .unwrap();
        let (n, _) = sock.recv_from(&mut buf).expect("an answer");
        let (rid, tc, ancount, _) = summary(&buf[..n]);
        assert_eq!((rid, tc, ancount), (id, false, 1));
    }
    // A truncated client retries over TCP and gets the answer.
    assert_eq!(
        dns.dig(&["+bufsize=4096", "mid.default.svc.cluster.local"])
            .answer
            .len(),
        60
    );
    let text = dns.http_get(dns.metrics, "/metrics").1;
    let limited = metric(&text, "svcnet_dns_large_answers_limited_total").unwrap();
    assert!(limited >= truncated as f64, "{limited}");
    // The server label names the address actually listened on.
    assert!(
        text.contains(&format!("server=\"dns://{}\"", dns.addr)),
        "{}",
        &text[..text.len().min(2000)]
    );
}

#[test]
fn formerr_carries_opt_and_malformed_cookies_are_formerr() {
    let dns = Dns::start(&example_cluster(), &[]);
    // A 5-byte COOKIE option (a client cookie is 8 bytes).
    let bad = dns.dig(&["+cookie=0102030405", "+nobadcookie", SVC]);
    assert_eq!(bad.status, "FORMERR", "{}", bad.raw);
    assert!(bad.raw.contains("OPT PSEUDOSECTION"), "{}", bad.raw);
    // A well-formed client cookie is accepted.
    let good = dns.dig(&["+cookie=0102030405060708", SVC]);
    assert_eq!(good.status, "NOERROR", "{}", good.raw);
    assert_eq!(good.rdata(), vec!["10.96.10.11"]);
    // No question but an OPT record: FORMERR with OPT.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let q = [
        0x12, 0x34, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 1, // header: no question, one additional
        0, 0, 41, 0x10, 0x00, 0, 0, 0, 0, 0, 0, // OPT, 4096
    ];
    sock.send_to(&q, dns.addr).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf).expect("FORMERR answer");
    assert_eq!(&buf[..2], &[0x12, 0x34]);
    assert_eq!(buf[3] & 0x0f, 1, "FORMERR");
    assert_eq!(
        u16::from_be_bytes([buf[10], buf[11]]),
        1,
        "ARCOUNT: the OPT"
    );
    assert_eq!(&buf[n - 11..n - 8], &[0, 0, 41], "an OPT record at the end");
    assert_eq!(u16::from_be_bytes([buf[n - 8], buf[n - 7]]), 1232);
}

/// A UDP upstream that answers every query after `delay` with one A record (192.0.2.53),
/// echoing id and question. Returns its address.
fn slow_upstream(delay: Duration) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                return;
            };
            let q = buf[..n].to_vec();
            let sock = sock.try_clone().unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                // Header and question only, then the answer.
                let mut end = 12;
                while end < q.len() && q[end] != 0 {
                    end += 1 + usize::from(q[end]);
                }
                end += 5;
                if end > q.len() {
                    return;
                }
                let mut r = q[..end].to_vec();
                r[2] |= 0x80; // QR
                r[3] = 0x80; // RA, NOERROR
                r[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]);
                r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 192, 0, 2, 53]);
                let _ = sock.send_to(&r, from);
            });
        }
    });
    addr
}

/// Reads one length-prefixed DNS message.
fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut msg)?;
    Ok(msg)
}

fn frame(msg: &[u8]) -> Vec<u8> {
    let mut f = (msg.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(msg);
    f
}

#[test]
fn pipelined_tcp_queries_are_not_stuck_behind_a_slow_forward() {
    let upstream = slow_upstream(Duration::from_secs(2));
    let dir = tempfile::tempdir().unwrap();
    let port = corefile_support::free_port();
    let cf = dir.path().join("Corefile");
    std::fs::write(
        &cf,
        format!(
            ".:{port} {{\n bind 127.0.0.1\n kubernetes cluster.local in-addr.arpa ip6.arpa\n forward . {upstream} {{\n  prefer_udp\n  read_timeout 5s\n }}\n}}\n"
        ),
    )
    .unwrap();
    let _dns = corefile_support::Server::start("dns", &cf, &example_cluster(), true);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // Wait until the cluster zone answers.
    let start = Instant::now();
    while corefile_support::query(addr, SVC, 1, Duration::from_millis(300))
        .is_none_or(|a| a.rcode != 0)
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no cluster answer"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The forwarded query first, then ten cluster names, in one write.
    let mut batch = frame(&corefile_support::encode_query(
        1000,
        "slow.example.test",
        corefile_support::RTYPE_A,
    ));
    for id in 1..=10u16 {
        batch.extend(frame(&corefile_support::encode_query(
            id,
            SVC,
            corefile_support::RTYPE_A,
        )));
    }
    let sent = Instant::now();
    s.write_all(&batch).unwrap();
    let mut order = Vec::new();
    let mut cluster_done = None;
    for _ in 0..11 {
        let msg = read_frame(&mut s).expect("an answer on the connection");
        let (id, tc, ancount, _) = summary(&msg);
        assert!(!tc);
        assert_eq!(msg[3] & 0x0f, 0, "NOERROR for {id}");
        assert_eq!(ancount, 1, "one A record for {id}");
        order.push(id);
        if order.iter().filter(|&&i| i != 1000).count() == 10 && cluster_done.is_none() {
            cluster_done = Some(sent.elapsed());
        }
    }
    let all = sent.elapsed();
    eprintln!(
        "answer order {order:?}; ten cluster answers after {cluster_done:?}, all after {all:?}"
    );
    assert_eq!(order.last(), Some(&1000), "the forwarded answer comes last");
    let mut cluster: Vec<u16> = order[..10].to_vec();
    cluster.sort_unstable();
    assert_eq!(cluster, (1..=10).collect::<Vec<_>>());
    assert!(
        cluster_done.unwrap() < Duration::from_millis(500),
        "cluster answers waited {cluster_done:?}"
    );
    assert!(
        all >= Duration::from_millis(1900),
        "the upstream delays 2 s: {all:?}"
    );
}

/// Opens `n` TCP connections to `server` from `source` (port chosen by the kernel).
async fn open_from(source: std::net::IpAddr, server: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(source, 0)).unwrap();
        let stream = sock.connect(server).await.expect("connect");
        out.push(stream.into_std().unwrap());
    }
    out
}

/// How many of `conns` the server has not closed.
fn still_open(conns: &[TcpStream]) -> usize {
    conns
        .iter()
        .filter(|c| {
            c.set_nonblocking(true).unwrap();
            let mut b = [0u8; 1];
            matches!((&**c).read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count()
}

#[test]
fn idle_tcp_flood_does_not_lock_out_real_clients() {
    let dns = Dns::start(&example_cluster(), &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The flood: 1,100 idle connections from one address. Only 64 stay open.
    let one = rt.block_on(open_from([127, 0, 0, 2].into(), dns.addr, 1100));
    let answer = dns.dig(&["+tcp", SVC]);
    assert_eq!(answer.transport, "TCP", "{}", answer.raw);
    assert_eq!(answer.rdata(), vec!["10.96.10.11"]);
    std::thread::sleep(Duration::from_millis(300));
    let open = still_open(&one);
    eprintln!("one address: {open} of 1100 idle connections still open");
    assert!(open <= 64, "{open} open from one address");
    assert!(open >= 32, "the address keeps its own share: {open}");

    // From 24 addresses (50 each): 1,200 connections, above the server's 1,024. The longest
    // idle are closed to make room, and a real client still gets its answers over TCP.
    let mut many = Vec::new();
    for last in 10..34u8 {
        many.extend(rt.block_on(open_from([127, 0, 0, last].into(), dns.addr, 50)));
    }
    for _ in 0..5 {
        let answer = dns.dig(&["+tcp", SVC]);
        assert_eq!(answer.rdata(), vec!["10.96.10.11"], "{}", answer.raw);
    }
    // A client that pipelines on one long connection is served as well.
    let mut s = TcpStream::connect(dns.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    for id in 1..=3u16 {
        s.write_all(&frame(&corefile_support::encode_query(
            id,
            SVC,
            corefile_support::RTYPE_A,
        )))
        .unwrap();
        let msg = read_frame(&mut s).expect("answer on a fresh connection under the flood");
        assert_eq!(summary(&msg).0, id);
    }
    std::thread::sleep(Duration::from_millis(300));
    let open = still_open(&one) + still_open(&many);
    eprintln!("after 1,200 more: {open} flood connections open");
    assert!(open <= 1024, "{open} open");
    let text = dns.http_get(dns.metrics, "/metrics").1;
    let evicted = metric(&text, "svcnet_dns_tcp_connections_evicted_total").unwrap();
    assert!(evicted >= 1100.0 - 64.0, "evicted {evicted}");
}

#[test]
fn corefile_rrl_limits_large_answers_and_the_metrics_label_follows_listen() {
    use std::io::BufRead;
    let dir = copy_dir(&example_cluster());
    std::fs::write(dir.path().join("mid.yaml"), headless("mid", 60, 251)).unwrap();
    let conf = tempfile::tempdir().unwrap();
    let metrics_port = corefile_support::free_port();
    let cf = conf.path().join("Corefile");
    std::fs::write(
        &cf,
        format!(
            ".:53 {{\n kubernetes cluster.local in-addr.arpa ip6.arpa\n prometheus 127.0.0.1:{metrics_port}\n rrl {{\n  large-responses-per-second 3\n  ipv4-prefix-length 32\n }}\n}}\n"
        ),
    )
    .unwrap();
    // --listen replaces the Corefile's :53.
    let port = corefile_support::free_port();
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut child = std::process::Command::new(corefile_support::binary())
        .arg("--corefile")
        .arg(&cf)
        .arg("--manifests")
        .arg(dir.path())
        .arg("--listen")
        .arg(listen.to_string())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start svcnet-dns");
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("[svcnet-dns] {line}");
        }
    });
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    // Wait for the cluster zone (small answers are never limited).
    loop {
        sock.send_to(&query_with_edns(1, SVC, 4096), listen)
            .unwrap();
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && summary(&buf[..n]).2 == 1
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no answer");
    }
    let mut tc = 0;
    let mut full = 0;
    for id in 0..12u16 {
        sock.send_to(
            &query_with_edns(id, "mid.default.svc.cluster.local", 4096),
            listen,
        )
        .unwrap();
        let (n, _) = sock.recv_from(&mut buf).expect("an answer");
        let (_, truncated, ancount, _) = summary(&buf[..n]);
        if truncated {
            tc += 1;
        } else {
            assert_eq!(ancount, 60);
            full += 1;
        }
    }
    assert!((3..=5).contains(&full), "{full} full answers");
    assert_eq!(full + tc, 12);
    let text = dns_support::http_get(([127, 0, 0, 1], metrics_port).into(), "/metrics").1;
    assert!(
        text.contains(&format!("server=\"dns://{listen}\"")),
        "{}",
        &text[..text.len().min(2000)]
    );
    assert!(!text.contains("server=\"dns://:53\""));
}
