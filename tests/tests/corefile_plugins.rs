//! CoreDNS plugins from field Corefiles, served by `svcnet-dns --corefile` over real sockets
//! and checked with `dig`: `rewrite` (exact to a cluster service, regex with an answer-name
//! rewrite in the block form, suffix with `answer auto`, `ttl`, `type`, a rewrite to an invalid
//! name → SERVFAIL), wildcard labels (NXDOMAIN, as in CoreDNS ≥ 1.9), and a reload with a bad
//! regex that is rejected naming file:line while the old configuration serves on.
//!
//! Needs `dig` (Debian package bind9-dnsutils) and the binary built:
//! `cargo build --workspace --bins`.

mod corefile_support;

use std::process::Command;
use std::time::{Duration, Instant};

use corefile_support::{Server, example_cluster, free_port};

const WAIT: Duration = Duration::from_secs(15);

/// What `dig` printed: the status and the answer lines as (owner, ttl, type, data).
#[derive(Debug)]
struct Dig {
    status: String,
    answers: Vec<(String, u32, String, String)>,
}

fn dig(port: u16, name: &str, qtype: &str) -> Dig {
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+noall",
            "+comments",
            "+answer",
            "+time=2",
            "+tries=1",
            name,
            qtype,
        ])
        .output()
        .expect("run dig (Debian package bind9-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(',').next().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("no status in dig output:\n{text}"));
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 5, "answer line {l:?}");
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[3].to_string(),
                f[4..].join(" "),
            )
        })
        .collect();
    Dig { status, answers }
}

fn corefile(port: u16, extra: &str) -> String {
    format!(
        r#".:{port} {{
    bind 127.0.0.1
    errors
    rewrite name exact db.example.com demoapp-svc.default.svc.cluster.local
    rewrite stop {{
        name regex (.*)\.apps\.example\.org {{1}}.default.svc.cluster.local
        answer name (.*)\.default\.svc\.cluster\.local {{1}}.apps.example.org
    }}
    rewrite name suffix .corp.test. .default.svc.cluster.local. answer auto
    rewrite ttl exact kubernetes.default.svc.cluster.local. 60
    rewrite type AAAA A
    rewrite name regex (.*)\.bad\.test {{1}}-{long}.bad.test
{extra}    kubernetes cluster.local
    reload 2s 1s
}}
"#,
        long = "x".repeat(70)
    )
}

#[test]
fn rewrite_rules_answer_like_coredns_and_a_bad_regex_on_reload_keeps_the_old_config() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = dir.path().join("Corefile");
    std::fs::write(&path, corefile(port, "")).unwrap();
    let mut srv = Server::start("dns", &path, &example_cluster(), true);

    // Wait for the cluster zone to be filled.
    let deadline = Instant::now() + WAIT;
    while dig(port, "demoapp-svc.default.svc.cluster.local", "A")
        .answers
        .is_empty()
    {
        assert!(Instant::now() < deadline, "cluster zone never answered");
        std::thread::sleep(Duration::from_millis(100));
    }

    // exact: the client asks db.example.com and gets the service's address under its own name.
    let d = dig(port, "db.example.com", "A");
    assert_eq!(d.status, "NOERROR");
    assert_eq!(
        d.answers,
        vec![(
            "db.example.com.".to_string(),
            5,
            "A".to_string(),
            "10.96.10.11".to_string()
        )]
    );
    // regex with {1} and an answer name rewrite (block form).
    let d = dig(port, "demoapp-svc.apps.example.org", "A");
    assert_eq!(d.status, "NOERROR");
    assert_eq!(d.answers.len(), 1, "{d:?}");
    assert_eq!(d.answers[0].0, "demoapp-svc.apps.example.org.");
    assert_eq!(d.answers[0].3, "10.96.10.11");
    // A regex rewrite to a name that does not exist: NXDOMAIN from the cluster zone.
    assert_eq!(dig(port, "nope.apps.example.org", "A").status, "NXDOMAIN");
    // suffix with answer auto.
    let d = dig(port, "demoapp-svc.corp.test", "A");
    assert_eq!(d.status, "NOERROR");
    assert_eq!(d.answers[0].0, "demoapp-svc.corp.test.");
    assert_eq!(d.answers[0].3, "10.96.10.11");
    // ttl: clamped to 60 for the matching name only.
    let d = dig(port, "kubernetes.default.svc.cluster.local", "A");
    assert_eq!((d.answers[0].1, d.answers[0].3.as_str()), (60, "10.96.0.1"));
    let d = dig(port, "demoapp-svc.default.svc.cluster.local", "A");
    assert_eq!(d.answers[0].1, 5);
    // type: AAAA questions are asked as A (the answer keeps its type).
    let d = dig(port, "demoapp-svc.default.svc.cluster.local", "AAAA");
    assert_eq!(d.status, "NOERROR");
    assert_eq!(d.answers[0].2, "A");
    // A rewrite that makes the name invalid (a label over 63 bytes): SERVFAIL, server lives on.
    assert_eq!(dig(port, "a.bad.test", "A").status, "SERVFAIL");
    assert_eq!(
        dig(port, "db.example.com", "A").answers[0].3,
        "10.96.10.11",
        "still serving"
    );
    // Wildcard labels are plain labels, as in CoreDNS since 1.9.0.
    assert_eq!(
        dig(port, "demoapp-svc.*.svc.cluster.local", "A").status,
        "NXDOMAIN"
    );
    assert_eq!(
        dig(port, "*.any.demoapp-svc.*.svc.cluster.local", "SRV").status,
        "NXDOMAIN"
    );

    // Reload with a bad regex: rejected naming file:line, the old rules serve on.
    let bad = corefile(port, "    rewrite name regex (unclosed x.test\n");
    std::fs::write(&path, &bad).unwrap();
    let line = srv.wait_log(WAIT, "Corefile rejected");
    assert!(
        line.contains("invalid regular expression") && line.contains(":13:24"),
        "{line}"
    );
    assert_eq!(dig(port, "db.example.com", "A").answers[0].3, "10.96.10.11");

    // A good edit switches a rule on live.
    let good = corefile(
        port,
        "    rewrite name exact web.example.com kubernetes.default.svc.cluster.local\n",
    );
    std::fs::write(&path, &good).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let d = dig(port, "web.example.com", "A");
        if d.status == "NOERROR" && !d.answers.is_empty() {
            assert_eq!(d.answers[0].0, "web.example.com.");
            assert_eq!(d.answers[0].3, "10.96.0.1");
            break;
        }
        assert!(Instant::now() < deadline, "new rule never applied: {d:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `errors { consolidate DURATION REGEXP [LEVEL] }`: matching error lines are counted, not
/// logged, and summed up once, CoreDNS's words, DURATION after the first; others are logged one
/// by one.
#[test]
fn errors_consolidate_sums_up_matching_errors_once_per_period() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = dir.path().join("Corefile");
    std::fs::write(
        &path,
        format!(
            r#".:{port} {{
    bind 127.0.0.1
    errors {{
        consolidate 2s "^2 [a-z]+\.bad\.test\. A: .*SERVFAIL" warning
    }}
    rewrite name regex (.*)\.bad\.test {{1}}-{long}.bad.test
    rewrite name regex (.*)\.worse\.test {{1}}-{long}.worse.test
    kubernetes cluster.local
}}
"#,
            long = "x".repeat(70)
        ),
    )
    .unwrap();
    let mut srv = Server::start("dns", &path, &example_cluster(), true);
    for name in ["a.bad.test", "b.bad.test", "c.bad.test", "a.worse.test"] {
        assert_eq!(dig(port, name, "A").status, "SERVFAIL", "{name}");
    }
    let line = srv.wait_log(WAIT, "errors like");
    assert!(
        line.contains("WARN")
            && line.contains(
                r"3 errors like '^2 [a-z]+\.bad\.test\. A: .*SERVFAIL' occurred in last 2s"
            ),
        "{line}"
    );
    let lines = srv.lines();
    let single: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("no answer (SERVFAIL)"))
        .collect();
    assert_eq!(
        single.len(),
        1,
        "only the unmatched error alone: {single:?}"
    );
    assert!(single[0].contains("a.worse.test."), "{single:?}");
}
