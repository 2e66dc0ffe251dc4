//! End-to-end test of `agentctl run`: one agent process, one manifest source and cache, serving
//! cluster DNS on loopback and computing the IPVS plan in dry-run mode (an in-memory table, no
//! kernel), inspected with `agentctl status`, `agentctl dns query` (and `dig` when installed),
//! the admin endpoint, a live manifest change, and a clean SIGTERM with lameduck.
//!
//! Needs `cargo build --workspace --bins` first (the binary is taken from next to this test).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn agentctl() -> PathBuf {
    svcnet_tests::bins::binary("agentctl")
}

fn repo() -> PathBuf {
    svcnet_tests::bins::repo_root()
}

fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn ctl(args: &[&str]) -> Output {
    Command::new(agentctl())
        .args(args)
        .output()
        .expect("running agentctl")
}

fn ctl_ok(args: &[&str]) -> String {
    let out = ctl(args);
    assert!(
        out.status.success(),
        "agentctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Plain HTTP GET over loopback (status code, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let code: u16 = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = raw.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (code, body.to_string())
}

struct Agent {
    child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

const NEW_SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: added-later
  namespace: demo
spec:
  clusterIP: 10.96.30.30
  ports:
    - name: http
      port: 8080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: added-later-abc
  namespace: demo
  labels:
    kubernetes.io/service-name: added-later
addressType: IPv4
ports:
  - name: http
    port: 80
    protocol: TCP
endpoints:
  - addresses: [10.244.1.77]
    conditions: {ready: true}
    nodeName: node-a
";

fn proxy_conf(scheduler: &str) -> String {
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\nipvs:\n  scheduler: {scheduler}\n"
    )
}

fn status_json(admin: &str) -> serde_json::Value {
    let out = ctl(&["status", "--admin", admin, "-o", "json"]);
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

#[test]
fn run_serves_dns_and_a_dry_run_plan_from_one_cache() {
    let dir = std::env::temp_dir().join(format!("agentctl-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&repo().join("examples/cluster"), &dir);
    let admin = format!("127.0.0.1:{}", free_tcp_port());
    let proxy_config = dir.join("kube-proxy-config.conf");
    std::fs::write(&proxy_config, proxy_conf("rr")).unwrap();
    let child = Command::new(agentctl())
        .args([
            "run",
            "--manifests",
            dir.to_str().unwrap(),
            "--dns-listen",
            "127.0.0.1:0",
            "--admin",
            &admin,
            "--dry-run",
            "--node-name",
            "node-a",
            "--node-ip",
            "192.168.1.10",
            "--lameduck",
            "2",
            "--proxy-config",
            proxy_config.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn agentctl run");
    let mut agent = Agent { child };

    // Ready: source synced, zone built, first proxy sync done.
    let status: serde_json::Value = wait_for("agent ready", Duration::from_secs(30), || {
        let out = ctl(&["status", "--admin", &admin, "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["ready"] == true).then_some(v)
    });
    let generation = status["cache"]["generation"].as_u64().unwrap();
    assert_eq!(status["cache"]["services"], 10);
    assert_eq!(status["source"]["synced"], true);
    assert_eq!(status["subsystems"]["dns"]["ready"], true);
    assert_eq!(status["subsystems"]["proxy"]["ready"], true);
    for sub in ["dns", "proxy"] {
        assert!(
            status["subsystems"][sub]["last_sync_seconds"]
                .as_f64()
                .is_some(),
            "{sub} reports its last sync duration"
        );
    }
    assert!(status["source"]["initial_sync_seconds"].as_f64().is_some());
    assert_eq!(
        status["subsystems"]["dns"]["applied_generation"].as_u64(),
        Some(generation),
        "DNS serves the cache's generation"
    );
    let dns = status["subsystems"]["dns"]["details"]["listen"]
        .as_str()
        .expect("DNS listen address in /status")
        .to_string();

    // DNS answers from the shared cache.
    let a = ctl_ok(&[
        "dns",
        "query",
        "demoapp.default.svc.cluster.local",
        "A",
        "--server",
        &dns,
        "--short",
    ]);
    assert_eq!(a, "10.96.10.10\n");
    let srv = ctl_ok(&[
        "dns",
        "query",
        "_http._tcp.demoapp-svc.default.svc.cluster.local",
        "SRV",
        "--server",
        &dns,
        "--tcp",
    ]);
    assert!(srv.contains("status: NOERROR"), "{srv}");
    assert!(
        srv.contains("0\t100\t80 demoapp-svc.default.svc.cluster.local.")
            || srv.contains("0 100 80 demoapp-svc.default.svc.cluster.local."),
        "{srv}"
    );
    assert!(srv.contains("(TCP)"), "{srv}");
    let nx = ctl_ok(&[
        "dns",
        "query",
        "missing.default.svc.cluster.local",
        "--server",
        &dns,
    ]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    let headless = ctl_ok(&[
        "dns",
        "query",
        "web.demo.svc.cluster.local",
        "--server",
        &dns,
        "--short",
    ]);
    let mut ips: Vec<&str> = headless.lines().collect();
    ips.sort();
    assert_eq!(ips, ["10.244.1.20", "10.244.2.21"], "ready endpoints only");

    // dig, when installed, sees the same answer.
    let (host, port) = dns.rsplit_once(':').unwrap();
    if let Ok(out) = Command::new("dig")
        .args([
            &format!("@{host}"),
            "-p",
            port,
            "+short",
            "+time=2",
            "+tries=1",
            "demoapp-svc.default.svc.cluster.local",
        ])
        .output()
    {
        assert_eq!(String::from_utf8_lossy(&out.stdout), "10.96.10.11\n");
    }

    // The dry-run proxy plan from the same cache.
    let (code, plan) = http_get(&admin, "/proxy/plan");
    assert_eq!(code, 200);
    for line in [
        "TCP  10.96.10.10:80 rr",
        "TCP  192.168.1.10:30080 rr",
        "UDP  10.96.0.10:53 rr",
        "TCP  1.2.3.4:80 rr",
        "  -> 10.244.1.10:80",
        "  -> 10.244.2.11:80",
    ] {
        assert!(plan.contains(line), "plan lacks {line:?}:\n{plan}");
    }
    assert!(!plan.contains("10.244.2.31"), "not-ready endpoint in plan");

    // `agentctl status` as text.
    let text = ctl_ok(&["status", "--admin", &admin]);
    for needle in [
        "— ready",
        &format!("manifests:{}", dir.display()),
        "DNS:",
        "Proxy:",
        "services: 10",
        "query rate:",
        "last reload error: none",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in\n{text}");
    }

    // Health, readiness, merged metrics.
    assert_eq!(http_get(&admin, "/health").0, 200);
    assert_eq!(http_get(&admin, "/ready").0, 200);
    let (_, metrics) = http_get(&admin, "/metrics");
    assert!(metrics.contains("svcnet_cache_generation"), "{metrics}");
    assert!(metrics.contains("coredns_dns_requests_total"), "{metrics}");
    assert!(
        metrics.contains("kubeproxy_sync_proxy_rules_duration_seconds_count"),
        "{metrics}"
    );
    assert!(metrics.trim_end().ends_with("# EOF"));
    assert_eq!(metrics.matches("# EOF").count(), 1);

    // A live change reaches both subsystems through the one cache.
    std::fs::write(dir.join("added-later.yaml"), NEW_SERVICE).unwrap();
    wait_for(
        "DNS to serve the new service",
        Duration::from_secs(10),
        || {
            let out = ctl(&[
                "dns",
                "query",
                "added-later.demo.svc.cluster.local",
                "--server",
                &dns,
                "--short",
            ]);
            (String::from_utf8_lossy(&out.stdout) == "10.96.30.30\n").then_some(())
        },
    );
    wait_for(
        "the plan to hold the new service",
        Duration::from_secs(10),
        || {
            let (_, plan) = http_get(&admin, "/proxy/plan");
            (plan.contains("TCP  10.96.30.30:8080 rr") && plan.contains("-> 10.244.1.77:80"))
                .then_some(())
        },
    );

    // The proxy config file in force, reloaded live; a bad edit keeps the running config.
    let st = status_json(&admin);
    assert_eq!(
        st["subsystems"]["proxy"]["config_files"][0],
        proxy_config.display().to_string()
    );
    assert!(st["subsystems"]["proxy"]["last_reload_error"].is_null());
    std::fs::write(&proxy_config, proxy_conf("lc")).unwrap();
    wait_for(
        "the scheduler change in the plan",
        Duration::from_secs(10),
        || {
            let (_, plan) = http_get(&admin, "/proxy/plan");
            plan.contains("TCP  10.96.10.10:80 lc").then_some(())
        },
    );
    std::fs::write(&proxy_config, proxy_conf("fastest")).unwrap();
    let err = wait_for(
        "the reload error in /status",
        Duration::from_secs(10),
        || {
            status_json(&admin)["subsystems"]["proxy"]["last_reload_error"]
                .as_str()
                .map(str::to_string)
        },
    );
    assert!(err.contains("ipvs.scheduler"), "{err}");
    let text = ctl_ok(&["status", "--admin", &admin]);
    assert!(
        text.contains("last reload error: ") && text.contains("fastest"),
        "{text}"
    );
    let (_, plan) = http_get(&admin, "/proxy/plan");
    assert!(
        plan.contains("TCP  10.96.10.10:80 lc"),
        "last good config stays:\n{plan}"
    );

    // SIGTERM: not ready at once, DNS keeps answering through the lameduck, then a clean exit.
    let pid = agent.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    wait_for("/ready to report 503", Duration::from_secs(2), || {
        (http_get(&admin, "/ready").0 == 503).then_some(())
    });
    let during = ctl_ok(&[
        "dns",
        "query",
        "demoapp.default.svc.cluster.local",
        "--server",
        &dns,
        "--short",
    ]);
    assert_eq!(during, "10.96.10.10\n", "DNS answers during lameduck");
    let stopped_at = Instant::now();
    let exit = wait_for("agent to exit", Duration::from_secs(15), || {
        agent.child.try_wait().expect("try_wait")
    });
    assert!(exit.success(), "agent exit status {exit}");
    eprintln!(
        "agent exited {:?} after the lameduck check",
        stopped_at.elapsed()
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn status_against_no_agent_is_a_clear_error() {
    let port = free_tcp_port();
    let out = ctl(&["status", "--admin", &format!("127.0.0.1:{port}")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("connecting to the agent at 127.0.0.1:{port}")),
        "{err}"
    );
}

fn free_udp_tcp_port() -> u16 {
    loop {
        let port = free_tcp_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[test]
fn run_with_a_corefile_reports_the_file_and_its_reload_errors() {
    let dir = std::env::temp_dir().join(format!("agentctl-corefile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let dns_port = free_udp_tcp_port();
    let ready_port = free_tcp_port();
    let corefile = dir.join("Corefile");
    let text = format!(
        ".:{dns_port} {{\n    bind 127.0.0.1\n    errors\n    ready 127.0.0.1:{ready_port}\n    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        fallthrough in-addr.arpa ip6.arpa\n    }}\n    reload 2s 1s\n}}\n"
    );
    std::fs::write(&corefile, &text).unwrap();
    let admin = format!("127.0.0.1:{}", free_tcp_port());
    let child = Command::new(agentctl())
        .args([
            "run",
            "--dns",
            "--manifests",
            repo().join("examples/cluster").to_str().unwrap(),
            "--corefile",
            corefile.to_str().unwrap(),
            "--admin",
            &admin,
            "--lameduck",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn agentctl run");
    let mut agent = Agent { child };
    let st = wait_for("agent ready", Duration::from_secs(30), || {
        let out = ctl(&["status", "--admin", &admin, "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["ready"] == true).then_some(v)
    });
    assert!(
        st["subsystems"]["proxy"].is_null(),
        "--dns alone runs no proxy"
    );
    assert_eq!(
        st["subsystems"]["dns"]["config_files"][0],
        corefile.display().to_string()
    );
    let server = format!("127.0.0.1:{dns_port}");
    let a = ctl_ok(&[
        "dns",
        "query",
        "kubernetes.default.svc.cluster.local",
        "--server",
        &server,
        "--short",
    ]);
    assert_eq!(a, "10.96.0.1\n");

    // A broken edit: reported, and the running configuration keeps answering.
    std::fs::write(&corefile, format!("{text}kubernetes {{\n")).unwrap();
    let err = wait_for("the reload error", Duration::from_secs(10), || {
        status_json(&admin)["subsystems"]["dns"]["last_reload_error"]
            .as_str()
            .map(str::to_string)
    });
    assert!(err.contains(&corefile.display().to_string()), "{err}");
    let again = ctl_ok(&[
        "dns",
        "query",
        "kubernetes.default.svc.cluster.local",
        "--server",
        &server,
        "--short",
    ]);
    assert_eq!(again, "10.96.0.1\n");
    // Fixed again: the error clears.
    std::fs::write(&corefile, &text).unwrap();
    wait_for("the reload error to clear", Duration::from_secs(10), || {
        status_json(&admin)["subsystems"]["dns"]["last_reload_error"]
            .is_null()
            .then_some(())
    });

    let pid = agent.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = wait_for("agent to exit", Duration::from_secs(15), || {
        agent.child.try_wait().expect("try_wait")
    });
    assert!(exit.success(), "agent exit status {exit}");
    std::fs::remove_dir_all(&dir).ok();
}
