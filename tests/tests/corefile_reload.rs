//! `reload`: editing the Corefile changes behaviour without a restart (new TTL, new forward
//! target, also through a ConfigMap-style `..data` symlink swap); a broken Corefile is
//! rejected, logged and counted while the old configuration keeps serving; edits that switch
//! `rewrite`, `cache` and `hosts` on and off reload live under query load without losing or
//! changing a single answer.
//!
//! Needs `knotd` (Debian package knot) and the binary built: `cargo build --workspace --bins`.

mod corefile_support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use corefile_support::{
    Knot, RTYPE_A, Server, example_cluster, free_port, http_get, query, wait_answer, zone,
};

const SVC: &str = "demoapp-svc.default.svc.cluster.local";

fn corefile(port: u16, metrics: u16, ttl: u32, upstream: SocketAddr) -> String {
    format!(
        ".:{port} {{\n    bind 127.0.0.1\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n        ttl {ttl}\n    }}\n    prometheus 127.0.0.1:{metrics}\n    forward . {upstream}\n    reload 2s 1s\n}}\n"
    )
}

fn reload_failures(metrics: SocketAddr) -> Option<u64> {
    http_get(metrics, "/metrics")
        .lines()
        .find(|l| l.starts_with("coredns_reload_failed_total"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn two_upstreams() -> (Knot, Knot) {
    (
        Knot::start(&[(
            "example.test",
            &zone("example.test", &["www IN A 192.0.2.1"]),
        )]),
        Knot::start(&[(
            "example.test",
            &zone("example.test", &["www IN A 192.0.2.99"]),
        )]),
    )
}

fn ttl_of(a: &corefile_support::Answer) -> u32 {
    a.records.first().map_or(u32::MAX, |r| r.0)
}

const WAIT: Duration = Duration::from_secs(8);

#[test]
fn edits_apply_without_restart_and_broken_files_are_rejected() {
    let (one, two) = two_upstreams();
    let dir = tempfile::tempdir().unwrap();
    let (port, mport) = (free_port(), free_port());
    let path = dir.path().join("Corefile");
    std::fs::write(&path, corefile(port, mport, 30, one.addr)).unwrap();
    let mut srv = Server::start("dns", &path, &example_cluster(), true);
    let dns: SocketAddr = ([127, 0, 0, 1], port).into();
    let metrics: SocketAddr = ([127, 0, 0, 1], mport).into();

    let a = wait_answer(dns, SVC, WAIT, |a| a.rcode == 0 && !a.records.is_empty());
    assert_eq!(
        (a.addrs(), ttl_of(&a)),
        (vec!["10.96.10.11".to_string()], 30)
    );
    let w = query(dns, "www.example.test", RTYPE_A, WAIT).unwrap();
    assert_eq!(w.addrs(), vec!["192.0.2.1"]);
    assert_eq!(reload_failures(metrics), Some(0));

    // New TTL and new forward target, same listener.
    std::fs::write(&path, corefile(port, mport, 10, two.addr)).unwrap();
    let a = wait_answer(dns, SVC, WAIT, |a| ttl_of(a) == 10);
    assert_eq!(a.addrs(), vec!["10.96.10.11"]);
    wait_answer(dns, "www.example.test", WAIT, |a| {
        a.addrs() == vec!["192.0.2.99"]
    });
    srv.wait_log(WAIT, "running configuration replaced");

    // A broken Corefile: rejected with its reason, counted, the old configuration serves on.
    let mut broken = corefile(port, mport, 60, one.addr);
    broken = broken.replace("    errors\n", "    errors\n    not_a_plugin\n");
    std::fs::write(&path, &broken).unwrap();
    let line = srv.wait_log(WAIT, "Corefile rejected");
    assert!(
        line.contains("unknown plugin \"not_a_plugin\"") && line.contains(":4:5"),
        "{line}"
    );
    assert_eq!(reload_failures(metrics), Some(1));
    let a = query(dns, SVC, RTYPE_A, WAIT).unwrap();
    assert_eq!(ttl_of(&a), 10, "old configuration still serving");
    assert_eq!(
        query(dns, "www.example.test", RTYPE_A, WAIT)
            .unwrap()
            .addrs(),
        vec!["192.0.2.99"]
    );

    // Fixing it applies again.
    std::fs::write(&path, corefile(port, mport, 20, one.addr)).unwrap();
    wait_answer(dns, SVC, WAIT, |a| ttl_of(a) == 20);
    wait_answer(dns, "www.example.test", WAIT, |a| {
        a.addrs() == vec!["192.0.2.1"]
    });
    assert_eq!(reload_failures(metrics), Some(1));
}

/// Writes `text` as a new ConfigMap revision and swaps `..data` to it atomically, the way
/// kubelet updates a mounted ConfigMap.
fn configmap_update(dir: &Path, rev: u32, text: &str) {
    let rev_dir = dir.join(format!("..2026_11_26_rev{rev}"));
    std::fs::create_dir(&rev_dir).unwrap();
    std::fs::write(rev_dir.join("Corefile"), text).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(rev_dir.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

#[test]
fn configmap_symlink_swap_is_picked_up() {
    let (one, two) = two_upstreams();
    let dir = tempfile::tempdir().unwrap();
    let (port, mport) = (free_port(), free_port());
    configmap_update(dir.path(), 1, &corefile(port, mport, 30, one.addr));
    std::os::unix::fs::symlink("..data/Corefile", dir.path().join("Corefile")).unwrap();
    let _srv = Server::start(
        "dns",
        &dir.path().join("Corefile"),
        &example_cluster(),
        true,
    );
    let dns: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_answer(dns, "www.example.test", WAIT, |a| {
        a.addrs() == vec!["192.0.2.1"]
    });
    configmap_update(dir.path(), 2, &corefile(port, mport, 30, two.addr));
    wait_answer(dns, "www.example.test", WAIT, |a| {
        a.addrs() == vec!["192.0.2.99"]
    });
}

#[test]
fn a_new_port_is_bound_and_an_old_one_closed() {
    let (one, _two) = two_upstreams();
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2, mport) = (free_port(), free_port(), free_port());
    let path = dir.path().join("Corefile");
    std::fs::write(&path, corefile(p1, mport, 30, one.addr)).unwrap();
    let mut srv = Server::start("dns", &path, &example_cluster(), true);
    let first: SocketAddr = ([127, 0, 0, 1], p1).into();
    let second: SocketAddr = ([127, 0, 0, 1], p2).into();
    wait_answer(first, SVC, WAIT, |a| a.rcode == 0);
    std::fs::write(&path, corefile(p2, mport, 30, one.addr)).unwrap();
    srv.wait_log(WAIT, &format!("listen=127.0.0.1:{p2}"));
    wait_answer(second, SVC, WAIT, |a| {
        a.rcode == 0 && a.addrs() == vec!["10.96.10.11"]
    });
    srv.wait_log(WAIT, "no longer configured");
    let start = std::time::Instant::now();
    while query(first, SVC, RTYPE_A, Duration::from_millis(200)).is_some() {
        assert!(start.elapsed() < WAIT, "old port still answers");
    }
}

/// Issue 18: the `prometheus` address moved by a reload is re-bound by the agent (no restart):
/// the new address serves `/metrics`, the old one is closed, and DNS keeps answering.
#[test]
fn a_moved_metrics_address_is_rebound() {
    let (one, _two) = two_upstreams();
    let dir = tempfile::tempdir().unwrap();
    let (port, m1, m2) = (free_port(), free_port(), free_port());
    let path = dir.path().join("Corefile");
    std::fs::write(&path, corefile(port, m1, 30, one.addr)).unwrap();
    let mut srv = Server::start("dns", &path, &example_cluster(), true);
    let dns: SocketAddr = ([127, 0, 0, 1], port).into();
    let (old, new): (SocketAddr, SocketAddr) =
        (([127, 0, 0, 1], m1).into(), ([127, 0, 0, 1], m2).into());
    wait_answer(dns, SVC, WAIT, |a| a.rcode == 0);
    let start = std::time::Instant::now();
    while reload_failures(old) != Some(0) {
        assert!(
            start.elapsed() < WAIT,
            "the first address never served /metrics"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(&path, corefile(port, m2, 30, one.addr)).unwrap();
    srv.wait_log(WAIT, "HTTP endpoints now served");
    assert_eq!(
        reload_failures(new),
        Some(0),
        "the new address serves /metrics"
    );
    assert!(
        http_get(old, "/metrics").is_empty(),
        "the old address is closed"
    );
    wait_answer(dns, SVC, WAIT, |a| a.rcode == 0);
}

/// Issue 18: the `health` plugin's lameduck is read when SIGTERM arrives (here raised by a
/// reload to 12 s, longer than the agent's 10 s limit for a subsystem to stop): `/ready` turns
/// 503 at once, DNS keeps answering past 10 s, and the process exits cleanly after the period.
#[test]
fn a_reloaded_lameduck_longer_than_ten_seconds_is_served_through() {
    let dir = tempfile::tempdir().unwrap();
    let (port, health, ready) = (free_port(), free_port(), free_port());
    let text = |lameduck: &str| {
        format!(
            ".:{port} {{\n    bind 127.0.0.1\n    health 127.0.0.1:{health} {{\n        lameduck {lameduck}\n    }}\n    ready 127.0.0.1:{ready}\n    kubernetes cluster.local in-addr.arpa ip6.arpa\n    reload 2s 1s\n}}\n"
        )
    };
    let path = dir.path().join("Corefile");
    std::fs::write(&path, text("1s")).unwrap();
    let mut srv = Server::start("dns", &path, &example_cluster(), true);
    let dns: SocketAddr = ([127, 0, 0, 1], port).into();
    let ready: SocketAddr = ([127, 0, 0, 1], ready).into();
    wait_answer(dns, SVC, WAIT, |a| a.rcode == 0);
    std::fs::write(&path, text("12s")).unwrap();
    srv.wait_log(WAIT, "running configuration replaced");
    let start = std::time::Instant::now();
    while !http_get(ready, "/ready").starts_with("HTTP/1.1 200") {
        assert!(start.elapsed() < WAIT, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let terminated = std::time::Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &srv.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        http_get(ready, "/ready").starts_with("HTTP/1.1 503"),
        "not ready during the lameduck"
    );
    std::thread::sleep(Duration::from_secs(11).saturating_sub(terminated.elapsed()));
    assert!(
        query(dns, SVC, RTYPE_A, Duration::from_secs(1)).is_some_and(|a| a.rcode == 0),
        "still answering 11 s after SIGTERM"
    );
    let status = srv
        .wait_exit(Duration::from_secs(8))
        .expect("exits after the lameduck");
    let took = terminated.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took >= Duration::from_secs(12),
        "exited {took:?} after SIGTERM, before the 12 s lameduck ended"
    );
}

/// A Corefile with the optional plugins switched on or off: `rewrite` (an alias of the
/// cluster service), `cache 30` and `hosts` (one pinned name, the rest falls through).
fn on_off_corefile(
    port: u16,
    metrics: u16,
    upstream: SocketAddr,
    rewrite: bool,
    cache: bool,
    hosts: bool,
) -> String {
    let mut extra = String::new();
    if rewrite {
        extra.push_str(
            "    rewrite name alias.example.test demoapp-svc.default.svc.cluster.local\n",
        );
    }
    if cache {
        extra.push_str("    cache 30\n");
    }
    if hosts {
        extra.push_str(
            "    hosts {\n        192.0.2.77 pinned.example.test\n        fallthrough\n    }\n",
        );
    }
    format!(
        ".:{port} {{\n    bind 127.0.0.1\n    errors\n{extra}    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        fallthrough in-addr.arpa ip6.arpa\n    }}\n    prometheus 127.0.0.1:{metrics}\n    forward . {upstream}\n    reload 2s 1s\n}}\n"
    )
}

/// What the load threads saw.
#[derive(Debug, Default)]
struct LoadTally {
    sent: u64,
    lost: Vec<String>,
    wrong: Vec<String>,
}

#[test]
fn plugins_switched_on_and_off_reload_under_load_without_losing_a_query() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let upstream = Knot::start(&[(
        "example.test",
        &zone("example.test", &["www IN A 192.0.2.1"]),
    )]);
    let dir = tempfile::tempdir().unwrap();
    let (port, mport) = (free_port(), free_port());
    let path = dir.path().join("Corefile");
    // Each edit replaces the file at once (write and rename), as kubelet and editors do, so the
    // server never reads a half-written file.
    let write = |r: bool, c: bool, h: bool| {
        let tmp = dir.path().join("Corefile.new");
        std::fs::write(&tmp, on_off_corefile(port, mport, upstream.addr, r, c, h)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    write(false, false, false);
    let mut srv = Server::start("dns", &path, &example_cluster(), true);
    let dns: SocketAddr = ([127, 0, 0, 1], port).into();
    let metrics: SocketAddr = ([127, 0, 0, 1], mport).into();
    wait_answer(dns, SVC, WAIT, |a| a.addrs() == vec!["10.96.10.11"]);

    // Load: names whose answers no configuration changes, one query at a time per thread.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(LoadTally::default()));
    let mut threads = Vec::new();
    for t in 0..3 {
        let (stop, tally) = (stop.clone(), tally.clone());
        threads.push(std::thread::spawn(move || {
            let checks = [(SVC, "10.96.10.11"), ("www.example.test", "192.0.2.1")];
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                let (name, want) = checks[i % checks.len()];
                i += 1;
                let got = query(dns, name, RTYPE_A, Duration::from_secs(2));
                let mut tally = tally.lock().unwrap();
                tally.sent += 1;
                match got {
                    None => tally.lost.push(name.to_string()),
                    Some(a) if a.rcode != 0 || a.addrs() != vec![want.to_string()] => {
                        tally.wrong.push(format!("{name}: {a:?}"))
                    }
                    Some(_) => {}
                }
                drop(tally);
                // Steady load that leaves CPU to the tests running beside this one.
                std::thread::sleep(Duration::from_millis(1));
            }
        }));
    }

    // Switch each plugin on and off; wait until each change shows in the answers.
    let alias = |on: bool| {
        wait_answer(dns, "alias.example.test", WAIT, move |a| {
            if on {
                a.rcode == 0 && a.addrs() == vec!["10.96.10.11"]
            } else {
                a.rcode == 3
            }
        });
    };
    let pinned = |on: bool| {
        wait_answer(dns, "pinned.example.test", WAIT, move |a| {
            if on {
                a.rcode == 0 && a.addrs() == vec!["192.0.2.77"]
            } else {
                a.rcode == 3
            }
        });
    };
    // The upstream's TTL is 300; `cache 30` caps it at 30.
    let cached = |on: bool| {
        wait_answer(dns, "www.example.test", WAIT, move |a| {
            a.records.first().is_some_and(|r| (r.0 <= 30) == on)
        });
    };
    let steps = [
        (true, false, false),
        (true, true, false),
        (false, true, true),
        (false, false, true),
        (true, true, true),
        (false, false, false),
        (false, true, false),
        (true, false, true),
        (false, false, false),
    ];
    let mut reloads = 0;
    for (r, c, h) in steps {
        write(r, c, h);
        alias(r);
        cached(c);
        pinned(h);
        reloads += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let tally = tally.lock().unwrap();
    eprintln!(
        "{reloads} reloads under load: {} queries, {} lost, {} wrong",
        tally.sent,
        tally.lost.len(),
        tally.wrong.len()
    );
    assert!(
        tally.sent >= 100,
        "the load ran throughout ({} queries)",
        tally.sent
    );
    assert!(tally.lost.is_empty(), "lost queries: {:?}", tally.lost);
    assert!(tally.wrong.is_empty(), "wrong answers: {:?}", tally.wrong);
    assert!(
        srv.lines()
            .iter()
            .filter(|l| l.contains("running configuration replaced"))
            .count()
            >= steps.len(),
        "every edit was a live reload"
    );
    assert_eq!(reload_failures(metrics), Some(0));
}
