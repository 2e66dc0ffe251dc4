//! The stand-alone CoreDNS plugins served by `svcnet-dns --corefile` over real sockets and
//! checked with `dig`: `template` (block AAAA, a fixed A for a zone, regex groups), `acl`
//! (block, filter, drop), `any`, `local`, `whoami`, `minimal` and `file` (CNAME chasing,
//! NXDOMAIN/NODATA with the SOA, wildcards, a delegation with glue, a reload on a higher serial,
//! a broken edit that keeps the zone), the per-plugin metrics with CoreDNS's names including
//! `coredns_dns_responses_total{plugin}`, and a Corefile reload with a template that does not
//! parse (rejected naming file:line, the old configuration serves on).
//!
//! Needs `dig` (Debian package bind9-dnsutils) and the binary built:
//! `cargo build --workspace --bins`.

mod corefile_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use corefile_support::{Server, example_cluster, free_port, http_get};

const WAIT: Duration = Duration::from_secs(15);

/// What `dig` printed: status, flags and the three record sections as whitespace-joined lines
/// (`owner ttl class type data`).
#[derive(Debug, Default)]
struct Dig {
    status: String,
    flags: String,
    answer: Vec<String>,
    authority: Vec<String>,
    additional: Vec<String>,
}

/// Asks `name`/`qtype` on 127.0.0.1:`port`; `None` when nothing came back.
fn dig_opt(port: u16, name: &str, qtype: &str) -> Option<Dig> {
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+noall",
            "+comments",
            "+answer",
            "+authority",
            "+additional",
            "+time=1",
            "+tries=1",
            name,
            qtype,
        ])
        .output()
        .expect("run dig (Debian package bind9-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut d = Dig::default();
    let mut section = 0;
    for l in text.lines() {
        if let Some(s) = l.split("status: ").nth(1) {
            d.status = s.split(',').next().unwrap_or("").to_string();
        }
        if let Some(f) = l.split("flags: ").nth(1) {
            d.flags = f.split(';').next().unwrap_or("").to_string();
        }
        if l.starts_with(";; ANSWER SECTION") {
            section = 1;
        } else if l.starts_with(";; AUTHORITY SECTION") {
            section = 2;
        } else if l.starts_with(";; ADDITIONAL SECTION") {
            section = 3;
        } else if !l.starts_with(';') && !l.trim().is_empty() {
            let line = l.split_whitespace().collect::<Vec<_>>().join(" ");
            match section {
                1 => d.answer.push(line),
                2 => d.authority.push(line),
                3 => d.additional.push(line),
                _ => {}
            }
        }
    }
    (!d.status.is_empty()).then_some(d)
}

fn dig(port: u16, name: &str, qtype: &str) -> Dig {
    dig_opt(port, name, qtype).unwrap_or_else(|| panic!("no answer to {name} {qtype}"))
}

fn zone_file(serial: u32, a: &str) -> String {
    format!(
        "$TTL 300\n@ IN SOA ns hostmaster ( {serial} 7200 3600 1209600 60 )\n@ IN NS ns\nns IN A 192.0.2.53\nwww IN CNAME a\na IN A {a}\nmail IN MX 10 a\n*.wild IN A 192.0.2.99\nsub IN NS ns1.sub\nns1.sub IN A 192.0.2.54\n"
    )
}

fn corefile(port: u16, prom: u16, zone: &Path, extra: &str) -> String {
    format!(
        r#".:{port} {{
    bind 127.0.0.1
    prometheus 127.0.0.1:{prom}
    local
    acl {{
        block type MX
        filter type NAPTR
        drop type CAA
    }}
    any
    template ANY AAAA {{
        rcode NOERROR
    }}
    template IN A corp.example {{
        answer "{{{{ .Name }}}} 60 IN A 192.0.2.10"
    }}
    template IN A example {{
        match "^ip-(?P<a>[0-9]+)-(?P<b>[0-9]+)-(?P<c>[0-9]+)-(?P<d>[0-9]+)[.]example[.]$"
        answer "{{{{ .Name }}}} 60 IN A {{{{ .Group.a }}}}.{{{{ .Group.b }}}}.{{{{ .Group.c }}}}.{{{{ .Group.d }}}}"
        fallthrough
    }}
{extra}    kubernetes cluster.local
    reload 2s 1s
}}
example.org:{port} {{
    bind 127.0.0.1
    file {zone} {{
        reload 1s
    }}
}}
example.net:{port} {{
    bind 127.0.0.1
    minimal
    file {zone}
}}
whoami.test:{port} {{
    bind 127.0.0.1
    whoami
}}
"#,
        zone = zone.display()
    )
}

#[test]
fn standalone_plugins_answer_like_coredns_and_are_counted_per_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let prom = free_port();
    let zone = dir.path().join("db.example");
    std::fs::write(&zone, zone_file(1, "192.0.2.1")).unwrap();
    let path = dir.path().join("Corefile");
    std::fs::write(&path, corefile(port, prom, &zone, "")).unwrap();
    let mut srv = Server::start("dns", &path, &example_cluster(), true);

    let deadline = Instant::now() + WAIT;
    while dig(port, "demoapp-svc.default.svc.cluster.local", "A")
        .answer
        .is_empty()
    {
        assert!(Instant::now() < deadline, "cluster zone never answered");
        std::thread::sleep(Duration::from_millis(100));
    }

    // template: block AAAA (NOERROR, empty, authoritative), also for cluster names.
    for name in ["www.example.com", "demoapp-svc.default.svc.cluster.local"] {
        let d = dig(port, name, "AAAA");
        assert_eq!(d.status, "NOERROR", "{name}");
        assert!(d.answer.is_empty(), "{name}: {d:?}");
        assert!(d.flags.contains("aa"), "{name}: {d:?}");
    }
    // A fixed A for a zone; regex groups; a name the regex does not match falls through to
    // the end of the chain (REFUSED); the cluster zone still answers.
    let d = dig(port, "anything.corp.example", "A");
    assert_eq!(d.answer, vec!["anything.corp.example. 60 IN A 192.0.2.10"]);
    let d = dig(port, "ip-10-1-2-3.example", "A");
    assert_eq!(d.answer, vec!["ip-10-1-2-3.example. 60 IN A 10.1.2.3"]);
    assert_eq!(dig(port, "other.example", "A").status, "REFUSED");
    let d = dig(port, "demoapp-svc.default.svc.cluster.local", "A");
    assert_eq!(
        d.answer,
        vec!["demoapp-svc.default.svc.cluster.local. 5 IN A 10.96.10.11"]
    );

    // acl: block → REFUSED, filter → NOERROR/empty, drop → no reply at all.
    assert_eq!(
        dig(port, "demoapp-svc.default.svc.cluster.local", "MX").status,
        "REFUSED"
    );
    let d = dig(port, "demoapp-svc.default.svc.cluster.local", "NAPTR");
    assert_eq!((d.status.as_str(), d.answer.len()), ("NOERROR", 0));
    assert!(dig_opt(port, "demoapp-svc.default.svc.cluster.local", "CAA").is_none());

    // any: RFC 8482.
    let d = dig(port, "demoapp-svc.default.svc.cluster.local", "ANY");
    assert_eq!(
        d.answer,
        vec![
            "demoapp-svc.default.svc.cluster.local. 8482 IN HINFO \"ANY obsoleted\" \"See RFC 8482\""
        ]
    );

    // local.
    assert_eq!(
        dig(port, "localhost", "A").answer,
        vec!["localhost. 604800 IN A 127.0.0.1"]
    );
    let d = dig(port, "localhost.corp.test", "A");
    assert_eq!(d.answer, vec!["localhost.corp.test. 604800 IN A 127.0.0.1"]);
    let d = dig(port, "1.0.0.127.in-addr.arpa", "PTR");
    assert_eq!(
        d.answer,
        vec!["1.0.0.127.in-addr.arpa. 604800 IN PTR localhost."]
    );
    assert_eq!(dig(port, "a.localhost", "A").status, "NXDOMAIN");

    // whoami: the client's address and port in the additional section.
    let d = dig(port, "whoami.test", "A");
    assert_eq!(d.status, "NOERROR");
    assert!(d.answer.is_empty());
    assert_eq!(d.additional[0], "whoami.test. 0 IN A 127.0.0.1");
    assert!(
        d.additional[1].starts_with("_udp.whoami.test. 0 IN SRV 0 0 "),
        "{d:?}"
    );

    // file: CNAME chased in the zone, apex NS in authority, authoritative.
    let d = dig(port, "www.example.org", "A");
    assert_eq!(
        d.answer,
        vec![
            "www.example.org. 300 IN CNAME a.example.org.",
            "a.example.org. 300 IN A 192.0.2.1"
        ]
    );
    assert_eq!(d.authority, vec!["example.org. 300 IN NS ns.example.org."]);
    assert!(d.flags.contains("aa"), "{d:?}");
    // MX with the target's address as additional.
    let d = dig(port, "mail.example.org", "MX");
    assert_eq!(d.additional, vec!["a.example.org. 300 IN A 192.0.2.1"]);
    // NXDOMAIN and NODATA with the SOA.
    let d = dig(port, "nope.example.org", "A");
    assert_eq!(d.status, "NXDOMAIN");
    assert!(d.authority[0].contains(" IN SOA "), "{d:?}");
    let d = dig(port, "a.example.org", "TXT");
    assert_eq!((d.status.as_str(), d.answer.len()), ("NOERROR", 0));
    assert!(d.authority[0].contains(" IN SOA "), "{d:?}");
    // Wildcard.
    let d = dig(port, "x.wild.example.org", "A");
    assert_eq!(d.answer, vec!["x.wild.example.org. 300 IN A 192.0.2.99"]);
    // Delegation with glue, not authoritative.
    let d = dig(port, "host.sub.example.org", "A");
    assert_eq!(d.status, "NOERROR");
    assert!(d.answer.is_empty());
    assert!(!d.flags.contains("aa"), "{d:?}");
    assert_eq!(
        d.authority,
        vec!["sub.example.org. 300 IN NS ns1.sub.example.org."]
    );
    assert_eq!(
        d.additional,
        vec!["ns1.sub.example.org. 300 IN A 192.0.2.54"]
    );
    // minimal: the same zone under example.net without authority and additional records.
    let d = dig(port, "www.example.net", "A");
    assert_eq!(d.answer.len(), 2);
    assert!(d.authority.is_empty() && d.additional.is_empty(), "{d:?}");
    // ... but negative answers keep their SOA.
    assert_eq!(dig(port, "nope.example.net", "A").authority.len(), 1);

    // file reload: the same serial is ignored, a broken edit keeps the zone, a higher serial
    // swaps it in.
    std::fs::write(&zone, zone_file(1, "192.0.2.2")).unwrap();
    srv.wait_log(WAIT, "SOA serial did not increase");
    assert_eq!(
        dig(port, "a.example.org", "A").answer,
        vec!["a.example.org. 300 IN A 192.0.2.1"]
    );
    std::fs::write(&zone, zone_file(2, "192.0.2.256")).unwrap();
    let line = srv.wait_log(WAIT, "zone file rejected");
    assert!(line.contains("line 6"), "{line}");
    assert_eq!(
        dig(port, "a.example.org", "A").answer,
        vec!["a.example.org. 300 IN A 192.0.2.1"]
    );
    std::fs::write(&zone, zone_file(3, "192.0.2.3")).unwrap();
    let deadline = Instant::now() + WAIT;
    while dig(port, "a.example.org", "A").answer != vec!["a.example.org. 300 IN A 192.0.2.3"] {
        assert!(Instant::now() < deadline, "zone never reloaded");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Metrics with CoreDNS's names; responses labelled with the plugin that wrote them.
    let text = http_get(([127, 0, 0, 1], prom).into(), "/metrics");
    for needle in [
        r#"rcode="NOERROR",plugin="template"}"#,
        r#"rcode="NOERROR",plugin="file"}"#,
        r#"rcode="NXDOMAIN",plugin="file"}"#,
        r#"rcode="REFUSED",plugin="acl"}"#,
        r#"rcode="NOERROR",plugin="kubernetes"}"#,
        r#"rcode="NOERROR",plugin="whoami"}"#,
        r#"rcode="NOERROR",plugin="local"}"#,
        r#"rcode="NOERROR",plugin="any"}"#,
        r#"rcode="REFUSED",plugin=""}"#,
        r#"coredns_acl_blocked_requests_total{zone="."} 1"#,
        r#"coredns_acl_filtered_requests_total{zone="."} 1"#,
        r#"coredns_acl_dropped_requests_total{zone="."} 1"#,
        r#"coredns_template_matches_total{zone="example.",class="IN",type="A"} 1"#,
        r#"coredns_file_entries{dns_name="example.org."} 9"#,
        "coredns_local_localhost_requests_total 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }

    // A Corefile edit with a template that does not parse: rejected naming file:line, the old
    // configuration serves on.
    let bad = corefile(
        port,
        prom,
        &zone,
        "    template IN A broken.test {\n        answer \"{{ .Name }\"\n    }\n",
    );
    std::fs::write(&path, &bad).unwrap();
    let line = srv.wait_log(WAIT, "Corefile rejected");
    assert!(line.contains("Corefile:23:"), "{line}");
    assert!(line.contains("could not compile answer template"), "{line}");
    let d = dig(port, "anything.corp.example", "A");
    assert_eq!(d.answer, vec!["anything.corp.example. 60 IN A 192.0.2.10"]);
}
