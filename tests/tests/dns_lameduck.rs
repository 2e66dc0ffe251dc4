//! `svcnet-dns` stopped with SIGTERM under a steady `dnsperf` load loses no query: during the
//! lameduck period it keeps answering (only `/ready` turns 503), and it exits after it.
//!
//! Needs `dnsperf` (Debian package `dnsperf`) and the binary built: `cargo build --workspace --bins`.

mod dns_support;

use std::process::Command;
use std::time::{Duration, Instant};

use dns_support::{Dns, example_cluster};

/// A figure from dnsperf's summary, e.g. `Queries lost:         0 (0.00%)`.
fn figure(report: &str, label: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in dnsperf's report:\n{report}"))
}

#[test]
fn sigterm_under_dnsperf_load_loses_no_query() {
    let mut dns = Dns::start(&example_cluster(), &["--lameduck", "5s"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let queries = dir.path().join("queries");
    // Cluster answers of each kind, a negative one, and one from the reverse zone.
    std::fs::write(
        &queries,
        "demoapp-svc.default.svc.cluster.local A\n\
         _http._tcp.demoapp-svc.default.svc.cluster.local SRV\n\
         nope.default.svc.cluster.local A\n\
         kube-dns.kube-system.svc.cluster.local A\n\
         11.10.96.10.in-addr.arpa PTR\n",
    )
    .expect("write the query file");
    let port = dns.addr.port().to_string();
    // 3 s at a fixed 2,000 QPS (the machine is shared), each query given 2 s to be answered.
    let perf = Command::new("dnsperf")
        .args(["-s", "127.0.0.1", "-p", &port, "-d"])
        .arg(&queries)
        .args(["-l", "3", "-Q", "2000", "-t", "2", "-c", "4"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run dnsperf (Debian package dnsperf): {e}"));
    std::thread::sleep(Duration::from_millis(700));
    let terminated = Instant::now();
    dns.terminate();
    dns.wait_for(Duration::from_secs(1), || {
        dns.http_get(dns.ready, "/ready").0 == 503
    });
    let out = perf.wait_with_output_checked();
    let report = String::from_utf8_lossy(&out).into_owned();
    let still_running = dns.is_running();
    let since_term = terminated.elapsed();
    let sent = figure(&report, "Queries sent:");
    let completed = figure(&report, "Queries completed:");
    let lost = figure(&report, "Queries lost:");
    println!(
        "dnsperf through SIGTERM (lameduck 5 s): {sent} sent, {completed} completed, {lost} lost; \
         load ended {:.1} s after SIGTERM",
        since_term.as_secs_f64()
    );
    assert!(
        still_running,
        "the server must still be in its lameduck period when the load ends"
    );
    assert!(sent > 1000, "too little load to mean anything:\n{report}");
    assert_eq!(lost, 0, "queries lost during lameduck:\n{report}");
    assert_eq!(completed, sent, "{report}");
    assert!(
        dns.wait_exit(Duration::from_secs(8)),
        "exits after the lameduck period"
    );
}

/// `Child::wait_with_output`, panicking unless dnsperf succeeded; returns its stdout.
trait WaitChecked {
    fn wait_with_output_checked(self) -> Vec<u8>;
}

impl WaitChecked for std::process::Child {
    fn wait_with_output_checked(self) -> Vec<u8> {
        let out = self.wait_with_output().expect("wait for dnsperf");
        assert!(
            out.status.success(),
            "dnsperf failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        out.stdout
    }
}
