//! `svcnet-dns --corefile` forwarding to real upstreams (Knot DNS) on loopback: answers pass
//! through, `except` zones are not forwarded, server blocks route by zone, a dead upstream is
//! failed over, `max_concurrent` refuses the excess, and `loop` catches two servers
//! forwarding to each other.
//!
//! Needs `knotd` (Debian package knot) and the binary built: `cargo build --workspace --bins`.

mod corefile_support;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use corefile_support::{
    Knot, RTYPE_A, Server, encode_query, example_cluster, free_port, query, zone,
};

const T: Duration = Duration::from_secs(3);

fn write_corefile(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("Corefile");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn answers_pass_through_except_zones_are_not_forwarded_and_blocks_route_by_zone() {
    let upstream = Knot::start(&[
        (
            "example.test",
            &zone(
                "example.test",
                &["www IN A 192.0.2.1", "www IN A 192.0.2.2"],
            ),
        ),
        (
            "magedu.com",
            &zone("magedu.com", &["www IN A 198.51.100.7"]),
        ),
    ]);
    let magedu = Knot::start(&[(
        "magedu.com",
        &zone("magedu.com", &["www IN A 198.51.100.8"]),
    )]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The example, pointed at loopback upstreams.
    let cf = write_corefile(
        dir.path(),
        &format!(
            ".:{port} {{\n    bind 127.0.0.1\n    errors\n    forward . {up} {{\n        max_concurrent 1000\n        except magedu.com. other.test\n    }}\n    cache 30\n}}\nmagedu.com:{port} {{\n    bind 127.0.0.1\n    forward . {mg}\n}}\nother.test:{port} {{\n    bind 127.0.0.1\n    log\n}}\n",
            up = upstream.addr,
            mg = magedu.addr
        ),
    );
    let _dns = Server::start("dns", &cf, &example_cluster(), true);
    let dns = ([127, 0, 0, 1], port).into();

    let direct = query(upstream.addr, "www.example.test", RTYPE_A, T).unwrap();
    let via = query(dns, "www.example.test", RTYPE_A, T).unwrap();
    assert_eq!(via.rcode, 0);
    assert_eq!(via.addrs(), direct.addrs());
    assert_eq!(via.addrs(), vec!["192.0.2.1", "192.0.2.2"]);
    // NXDOMAIN passes through too.
    assert_eq!(
        query(dns, "nope.example.test", RTYPE_A, T).unwrap().rcode,
        3
    );
    // magedu.com is excepted from the root block's forward and has its own block.
    let mg = query(dns, "www.magedu.com", RTYPE_A, T).unwrap();
    assert_eq!(
        mg.addrs(),
        vec!["198.51.100.8"],
        "routed to the magedu.com block"
    );
    // other.test is excepted and its block has no forwarder: nothing answers it.
    assert_eq!(
        query(dns, "www.other.test", RTYPE_A, T).unwrap().rcode,
        5,
        "REFUSED"
    );
}

#[test]
fn except_without_a_block_is_not_forwarded() {
    let upstream = Knot::start(&[(
        "magedu.com",
        &zone("magedu.com", &["www IN A 198.51.100.7"]),
    )]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cf = write_corefile(
        dir.path(),
        &format!(
            ".:{port} {{\n bind 127.0.0.1\n forward . {} {{ except magedu.com }}\n}}\n",
            upstream.addr
        ),
    );
    let _dns = Server::start("dns", &cf, &example_cluster(), true);
    let dns = ([127, 0, 0, 1], port).into();
    assert_eq!(query(dns, "www.magedu.com", RTYPE_A, T).unwrap().rcode, 5);
    // Names below an except zone are not forwarded either.
    let sub = query(dns, "ns.magedu.com", RTYPE_A, T).unwrap();
    assert_eq!(
        sub.rcode, 5,
        "subdomains of except zones are not forwarded either"
    );
}

#[test]
fn dead_upstream_is_failed_over() {
    let upstream = Knot::start(&[(
        "example.test",
        &zone("example.test", &["www IN A 192.0.2.1"]),
    )]);
    let dead = free_port(); // nothing listens there: ICMP port unreachable
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cf = write_corefile(
        dir.path(),
        &format!(
            ".:{port} {{\n bind 127.0.0.1\n forward . 127.0.0.1:{dead} {} {{\n  policy sequential\n  max_fails 1\n  health_check 5s\n }}\n}}\n",
            upstream.addr
        ),
    );
    let _dns = Server::start("dns", &cf, &example_cluster(), true);
    let dns = ([127, 0, 0, 1], port).into();
    for i in 0..10 {
        let started = Instant::now();
        let a = query(dns, "www.example.test", RTYPE_A, T)
            .unwrap_or_else(|| panic!("query {i} unanswered"));
        assert_eq!(a.addrs(), vec!["192.0.2.1"], "query {i}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "query {i} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn max_concurrent_refuses_the_excess() {
    // An upstream that never answers keeps queries in flight for the read timeout.
    let hole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cf = write_corefile(
        dir.path(),
        &format!(
            ".:{port} {{\n bind 127.0.0.1\n forward . {} {{\n  max_concurrent 2\n  read_timeout 3s\n }}\n}}\n",
            hole.local_addr().unwrap()
        ),
    );
    let _dns = Server::start("dns", &cf, &example_cluster(), true);
    let dns: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    for id in [1u16, 2] {
        client
            .send_to(
                &encode_query(id, &format!("q{id}.example.test"), RTYPE_A),
                dns,
            )
            .unwrap();
    }
    // Both are now waiting on the silent upstream.
    let mut buf = [0u8; 2048];
    let mut seen = 0;
    while seen < 2 {
        let (n, _) = hole
            .recv_from(&mut buf)
            .expect("the upstream sees the queries");
        assert!(n > 12);
        seen += 1;
    }
    client
        .send_to(&encode_query(3, "q3.example.test", RTYPE_A), dns)
        .unwrap();
    let started = Instant::now();
    let (n, _) = client
        .recv_from(&mut buf)
        .expect("an answer to the third query");
    assert_eq!(
        u16::from_be_bytes([buf[0], buf[1]]),
        3,
        "the third query is answered first"
    );
    assert_eq!(buf[3] & 0x0f, 5, "REFUSED");
    assert!(n >= 12 && started.elapsed() < Duration::from_secs(1));
}

#[test]
fn loop_between_two_servers_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let a = dir.path().join("A");
    let b = dir.path().join("B");
    std::fs::write(
        &a,
        format!(".:{pa} {{\n bind 127.0.0.1\n forward . 127.0.0.1:{pb}\n loop\n}}\n"),
    )
    .unwrap();
    std::fs::write(
        &b,
        format!(".:{pb} {{\n bind 127.0.0.1\n forward . 127.0.0.1:{pa}\n loop\n}}\n"),
    )
    .unwrap();
    let mut sa = Server::start("A", &a, &example_cluster(), false);
    let mut sb = Server::start("B", &b, &example_cluster(), false);
    // At least one of them notices its probe coming back and stops with a clear message.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut exit_a, mut exit_b) = (None, None);
    while Instant::now() < deadline && exit_a.is_none() && exit_b.is_none() {
        exit_a = sa.wait_exit(Duration::from_millis(100));
        exit_b = sb.wait_exit(Duration::from_millis(100));
    }
    let (server, status) = match (exit_a, exit_b) {
        (Some(st), _) => (&mut sa, st),
        (_, Some(st)) => (&mut sb, st),
        _ => panic!("no loop detected within 30 s"),
    };
    assert!(!status.success(), "a loop is an error exit: {status}");
    let lines = server.lines();
    assert!(
        lines.iter().any(|l| l.contains("Loop (")
            && l.contains("detected for zone \".\"")
            && l.contains("HINFO")),
        "clear loop message expected: {lines:#?}"
    );
}
