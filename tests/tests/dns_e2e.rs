//! End-to-end tests of `svcnet-dns` serving `examples/cluster`, queried with real `dig`.
//!
//! Needs `dig` (bind9-dnsutils) and the binary built: `cargo build --workspace --bins`.

mod dns_support;

use std::net::UdpSocket;
use std::time::Duration;

use dns_support::{Dns, copy_dir, example_cluster, example_dualstack};

const SVC: &str = "demoapp-svc.default.svc.cluster.local";

#[test]
fn seed_transcript_name_and_reverse() {
    let dns = Dns::start(&example_cluster(), &[]);
    let a = dns.dig(&[SVC]);
    assert_eq!(a.status, "NOERROR", "{}", a.raw);
    assert_eq!(a.rdata(), vec!["10.96.10.11"]);
    assert!(a.has_flag("aa"), "authoritative: {}", a.raw);
    assert!(
        a.answer[0].starts_with(&format!("{SVC}. 5 IN A")),
        "{}",
        a.raw
    );
    let ptr = dns.dig(&["-x", "10.96.10.11"]);
    assert_eq!(ptr.rdata(), vec![format!("{SVC}.")], "{}", ptr.raw);
}

#[test]
fn every_record_kind_over_udp_and_tcp() {
    let dns = Dns::start(&example_cluster(), &[]);
    for transport in [&[][..], &["+tcp"][..]] {
        let q = |args: &[&str]| {
            let mut all: Vec<&str> = args.to_vec();
            all.extend_from_slice(transport);
            dns.dig(&all)
        };
        let a = q(&["demoapp.default.svc.cluster.local"]);
        assert_eq!(a.rdata(), vec!["10.96.10.10"]);
        assert_eq!(
            a.transport,
            if transport.is_empty() { "UDP" } else { "TCP" }
        );
        // Case-insensitive, case preserved in the answer.
        let mixed = q(&["DemoApp-Svc.DEFAULT.svc.Cluster.Local"]);
        assert_eq!(mixed.rdata(), vec!["10.96.10.11"]);
        assert!(mixed.answer[0].starts_with("DemoApp-Svc.DEFAULT.svc.Cluster.Local."));
        // SRV of a named port, target = the service, its address in the additional section.
        let srv = q(&["SRV", "_http._tcp.demoapp-svc.default.svc.cluster.local"]);
        assert_eq!(srv.rdata(), vec![format!("0 100 80 {SVC}.")], "{}", srv.raw);
        assert_eq!(srv.additional, vec![format!("{SVC}. 5 IN A 10.96.10.11")]);
        // kube-dns ports: UDP and TCP named ports.
        let dns_srv = q(&["SRV", "_dns._udp.kube-dns.kube-system.svc.cluster.local"]);
        assert_eq!(
            dns_srv.rdata(),
            vec!["0 100 53 kube-dns.kube-system.svc.cluster.local."]
        );
        // Headless: ready endpoints only, hostnames, SRV per endpoint, PTR of endpoints.
        let web = q(&["web.demo.svc.cluster.local"]);
        assert_eq!(web.rdata_sorted(), vec!["10.244.1.20", "10.244.2.21"]);
        assert_eq!(
            q(&["web-1.web.demo.svc.cluster.local"]).rdata(),
            vec!["10.244.2.21"]
        );
        assert_eq!(q(&["web-2.web.demo.svc.cluster.local"]).status, "NXDOMAIN");
        let web_srv = q(&["SRV", "_http._tcp.web.demo.svc.cluster.local"]);
        assert_eq!(
            web_srv.rdata_sorted(),
            vec![
                "0 50 80 web-0.web.demo.svc.cluster.local.",
                "0 50 80 web-1.web.demo.svc.cluster.local."
            ]
        );
        assert_eq!(web_srv.additional.len(), 2);
        assert_eq!(
            q(&["-x", "10.244.1.20"]).rdata(),
            vec!["web-0.web.demo.svc.cluster.local."]
        );
        // ExternalName.
        let cname = q(&["mysql-external.default.svc.cluster.local"]);
        assert_eq!(
            cname.answer,
            vec!["mysql-external.default.svc.cluster.local. 5 IN CNAME mysql.example.com."]
        );
        // Readiness: the not-ready endpoint of a ClusterIP service has no name.
        assert_eq!(
            q(&["10-244-2-31.services-readiness-demo.default.svc.cluster.local"]).status,
            "NXDOMAIN"
        );
        assert_eq!(
            q(&["10-244-1-30.services-readiness-demo.default.svc.cluster.local"]).rdata(),
            vec!["10.244.1.30"]
        );
        // Schema version, SOA, NS.
        assert_eq!(
            q(&["TXT", "dns-version.cluster.local"]).rdata(),
            vec!["\"1.1.0\""]
        );
        let soa = q(&["SOA", "cluster.local"]);
        assert!(
            soa.rdata()[0].starts_with("ns.dns.cluster.local. hostmaster.cluster.local. "),
            "{}",
            soa.raw
        );
        let ns = q(&["NS", "cluster.local"]);
        assert_eq!(ns.rdata(), vec!["ns.dns.cluster.local."]);
        assert_eq!(
            ns.additional,
            vec!["ns.dns.cluster.local. 5 IN A 10.96.0.10"]
        );
    }
}

#[test]
fn nxdomain_versus_nodata() {
    let dns = Dns::start(&example_cluster(), &[]);
    for (name, qtype, status) in [
        ("nope.default.svc.cluster.local", "A", "NXDOMAIN"),
        ("demoapp-svc.nonamespace.svc.cluster.local", "A", "NXDOMAIN"),
        (
            "demoapp-svc.default.svc.cluster.local.default.svc.cluster.local",
            "A",
            "NXDOMAIN",
        ),
        (
            "_https._tcp.demoapp-svc.default.svc.cluster.local",
            "SRV",
            "NXDOMAIN",
        ),
        ("99.99.99.99.in-addr.arpa", "PTR", "NXDOMAIN"),
        // Existing names without records of that type.
        ("demoapp-svc.default.svc.cluster.local", "AAAA", "NOERROR"),
        ("demoapp-svc.default.svc.cluster.local", "MX", "NOERROR"),
        // Empty non-terminals.
        ("svc.cluster.local", "A", "NOERROR"),
        ("default.svc.cluster.local", "A", "NOERROR"),
        (
            "_tcp.demoapp-svc.default.svc.cluster.local",
            "SRV",
            "NOERROR",
        ),
        ("96.10.in-addr.arpa", "PTR", "NOERROR"),
    ] {
        let r = dns.dig(&[qtype, name]);
        assert_eq!(r.status, status, "{qtype} {name}: {}", r.raw);
        assert!(r.answer.is_empty(), "{qtype} {name}: {}", r.raw);
        assert!(r.has_flag("aa"));
        assert_eq!(
            r.authority.len(),
            1,
            "negative answers carry the SOA: {}",
            r.raw
        );
        assert!(r.authority[0].contains(" IN SOA ns.dns."), "{}", r.raw);
    }
    // Names outside the served zones: REFUSED (no forwarder).
    assert_eq!(dns.dig(&["example.com"]).status, "REFUSED");
}

#[test]
fn dual_stack_aaaa_and_ip6_ptr() {
    let dns = Dns::start(&example_dualstack(), &[]);
    assert_eq!(dns.dig(&["AAAA", SVC]).rdata(), vec!["fd00:10:96::a:b"]);
    assert_eq!(dns.dig(&["A", SVC]).rdata(), vec!["10.96.10.11"]);
    let ptr = dns.dig(&["-x", "fd00:10:96::a:b"]);
    assert_eq!(ptr.rdata(), vec![format!("{SVC}.")], "{}", ptr.raw);
    let ptr_tcp = dns.dig(&["+tcp", "-x", "fd00:10:96::a:b"]);
    assert_eq!(ptr_tcp.rdata(), vec![format!("{SVC}.")]);
    let srv = dns.dig(&["SRV", "_http._tcp.demoapp-svc.default.svc.cluster.local"]);
    assert_eq!(srv.rdata(), vec![format!("0 50 80 {SVC}.")], "{}", srv.raw);
    assert_eq!(
        srv.additional.len(),
        2,
        "A and AAAA of the target: {}",
        srv.raw
    );
}

/// A headless service with `n` ready endpoints.
fn big_headless(n: usize) -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: default}\n\
         spec: {clusterIP: None, ports: [{name: http, port: 80}]}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: big-1, namespace: default, labels: {kubernetes.io/service-name: big}}\n\
         addressType: IPv4\nports: [{name: http, port: 80, protocol: TCP}]\nendpoints:\n",
    );
    for i in 0..n {
        y.push_str(&format!(
            "  - {{addresses: [10.250.{}.{}], conditions: {{ready: true}}}}\n",
            i / 250,
            i % 250 + 1
        ));
    }
    y
}

#[test]
fn truncated_udp_answers_fall_back_to_tcp() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.yaml"), big_headless(500)).unwrap();
    let dns = Dns::start(dir.path(), &[]);
    let name = "big.default.svc.cluster.local";
    // Without retrying over TCP: TC=1.
    let udp = dns.dig(&["+ignore", name]);
    assert!(udp.has_flag("tc"), "{}", udp.raw);
    assert_eq!(udp.transport, "UDP");
    // dig's default: retry over TCP, get all 500.
    let full = dns.dig(&[name]);
    assert_eq!(full.transport, "TCP", "{}", full.raw);
    assert_eq!(full.answer.len(), 500);
    assert!(!full.has_flag("tc"));
    // Compression: each A record costs 16 bytes (pointer owner).
    assert!(full.size < 12 + 40 + 500 * 16 + 40, "size {}", full.size);
    // A large EDNS buffer no longer fits it over UDP: UDP answers are capped at the advertised
    // 1232 bytes (amplification), so dig falls back to TCP and gets all 500.
    let big_buf = dns.dig(&["+bufsize=16000", name]);
    assert_eq!(big_buf.transport, "TCP", "{}", big_buf.raw);
    assert_eq!(big_buf.answer.len(), 500);
    let srv = dns.dig(&["SRV", "_http._tcp.big.default.svc.cluster.local"]);
    assert_eq!(
        srv.answer.len(),
        500,
        "{}",
        &srv.raw[..400.min(srv.raw.len())]
    );
    assert!(
        srv.rdata()[0].starts_with("0 1 80 10-250-"),
        "weight floor(100/500) → 1"
    );
}

#[test]
fn live_manifest_edit_changes_the_answer() {
    let dir = copy_dir(&example_cluster());
    let dns = Dns::start(dir.path(), &[]);
    assert_eq!(dns.dig(&[SVC]).rdata(), vec!["10.96.10.11"]);
    let file = dir.path().join("default-services.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("clusterIP: 10.96.10.11"));
    std::fs::write(
        &file,
        text.replace("clusterIP: 10.96.10.11", "clusterIP: 10.96.10.99"),
    )
    .unwrap();
    let took = dns.wait_for(Duration::from_secs(20), || {
        dns.dig(&[SVC]).rdata() == ["10.96.10.99"]
    });
    eprintln!("change visible after {took:?}");
    assert_eq!(
        dns.dig(&["-x", "10.96.10.99"]).rdata(),
        vec![format!("{SVC}.")]
    );
    assert_eq!(dns.dig(&["-x", "10.96.10.11"]).status, "NXDOMAIN");
    // A broken edit keeps the last good state.
    std::fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: [oops\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(dns.dig(&[SVC]).rdata(), vec!["10.96.10.99"]);
    // Removing the file removes its services.
    std::fs::remove_file(&file).unwrap();
    dns.wait_for(Duration::from_secs(20), || {
        dns.dig(&[SVC]).status == "NXDOMAIN"
    });
}

#[test]
fn malformed_packets_never_stall_the_server() {
    let dns = Dns::start(&example_cluster(), &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 1500];
    // Too short: dropped silently.
    sock.send_to(&[1, 2, 3], dns.addr).unwrap();
    assert!(
        sock.recv_from(&mut buf).is_err(),
        "short packets get no answer"
    );
    // Header with two questions announced and none present: FORMERR echoing the id.
    let two = [0xab, 0xcd, 0x01, 0x00, 0x00, 0x02, 0, 0, 0, 0, 0, 0];
    sock.send_to(&two, dns.addr).unwrap();
    let (n, _) = sock.recv_from(&mut buf).expect("FORMERR answer");
    assert!(n >= 12);
    assert_eq!(&buf[..2], &[0xab, 0xcd]);
    assert_eq!(buf[3] & 0x0f, 1, "FORMERR");
    assert_eq!(buf[2] & 0x80, 0x80, "QR set");
    // Opcode UPDATE: NOTIMP.
    let mut update = two;
    update[2] = 5 << 3;
    update[5] = 0;
    sock.send_to(&update, dns.addr).unwrap();
    let (_, _) = sock.recv_from(&mut buf).expect("NOTIMP answer");
    assert_eq!(buf[3] & 0x0f, 4, "NOTIMP");
    // Random garbage of every length.
    let mut x: u32 = 12345;
    for len in 0..600 {
        let pkt: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        sock.send_to(&pkt, dns.addr).unwrap();
    }
    // Unknown class and type, several questions, still answering afterwards.
    assert_eq!(
        dns.dig(&["-c", "CH", "TXT", "version.bind"]).status,
        "REFUSED"
    );
    assert_eq!(dns.dig(&["TYPE65280", SVC]).status, "NOERROR");
    assert_eq!(dns.dig(&[SVC]).rdata(), vec!["10.96.10.11"]);
    assert_eq!(dns.dig(&["+tcp", SVC]).rdata(), vec!["10.96.10.11"]);
    // A TCP client that sends half a message and stalls does not block others.
    let mut stalled = std::net::TcpStream::connect(dns.addr).unwrap();
    std::io::Write::write_all(&mut stalled, &[0, 40, 1, 2]).unwrap();
    assert_eq!(dns.dig(&["+tcp", SVC]).rdata(), vec!["10.96.10.11"]);
    // EDNS version 1: BADVERS.
    let badvers = dns.dig(&["+edns=1", "+noednsneg", SVC]);
    assert_eq!(badvers.status, "BADVERS", "{}", badvers.raw);
}

#[test]
fn health_ready_metrics_and_lameduck() {
    let mut dns = Dns::start(&example_cluster(), &["--lameduck", "2s"]);
    assert_eq!(dns.http_get(dns.health, "/health"), (200, "OK".to_string()));
    assert_eq!(dns.http_get(dns.ready, "/ready").0, 200);
    assert_eq!(dns.http_get(dns.ready, "/nope").0, 404);
    for _ in 0..3 {
        dns.dig(&[SVC]);
    }
    dns.dig(&["nope.default.svc.cluster.local"]);
    dns.dig(&["+tcp", SVC]);
    let (status, metrics) = dns.http_get(dns.metrics, "/metrics");
    assert_eq!(status, 200);
    let requests: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("coredns_dns_requests_total{") && l.contains("proto=\"udp\""))
        .filter(|l| l.contains("type=\"A\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(requests >= 4.0, "{metrics}");
    for needle in [
        "coredns_dns_responses_total{",
        "rcode=\"NXDOMAIN\"",
        "proto=\"tcp\"",
        "coredns_dns_request_duration_seconds_bucket{",
        "coredns_dns_response_size_bytes_bucket{",
        "coredns_plugin_enabled{",
        "coredns_build_info{",
    ] {
        assert!(metrics.contains(needle), "missing {needle}:\n{metrics}");
    }
    let services: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("svcnet_dns_zone_services "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(
        services >= 10.0,
        "the demo cluster's services are in the zone: {metrics}"
    );
    // SIGTERM: /ready turns 503 at once, DNS keeps answering for the lameduck period.
    dns.terminate();
    dns.wait_for(Duration::from_secs(1), || {
        dns.http_get(dns.ready, "/ready").0 == 503
    });
    assert_eq!(dns.http_get(dns.health, "/health").0, 200);
    assert_eq!(dns.dig(&[SVC]).rdata(), vec!["10.96.10.11"]);
    assert!(dns.is_running());
    assert!(
        dns.wait_exit(Duration::from_secs(5)),
        "exits after the lameduck period"
    );
}

#[test]
fn servfail_while_the_cache_has_not_synced() {
    // A Kubernetes API that never answers: the cache cannot sync.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
         clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9', insecure-skip-tls-verify: true}}]\n\
         users: [{name: u, user: {token: t}}]\n\
         contexts: [{name: c, context: {cluster: c, user: u}}]\n",
    )
    .unwrap();
    let args: Vec<std::ffi::OsString> = vec![
        "--kubeconfig".into(),
        kubeconfig.into(),
        "--startup-timeout".into(),
        "1s".into(),
    ];
    let dns = Dns::spawn(&args, false);
    assert_eq!(dns.dig(&[SVC]).status, "SERVFAIL");
    assert_eq!(dns.http_get(dns.ready, "/ready").0, 503);
    assert_eq!(dns.http_get(dns.health, "/health").0, 200);
    // After the startup timeout: still SERVFAIL for names it cannot vouch for, but the zone
    // structure answers and other zones are refused.
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(dns.dig(&[SVC]).status, "SERVFAIL");
    assert_eq!(dns.dig(&["SOA", "cluster.local"]).status, "NOERROR");
    assert_eq!(dns.dig(&["example.com"]).status, "REFUSED");
    assert_eq!(dns.http_get(dns.ready, "/ready").0, 503);
}

#[test]
fn empty_synced_cluster_answers_nxdomain() {
    let dir = tempfile::tempdir().unwrap();
    let dns = Dns::start(dir.path(), &[]);
    assert_eq!(dns.dig(&[SVC]).status, "NXDOMAIN");
    assert_eq!(dns.dig(&["svc.cluster.local"]).status, "NOERROR");
}
