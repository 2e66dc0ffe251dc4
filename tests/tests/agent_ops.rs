//! Operations of the binaries: log output for machines and people (issue 15 item 5) and the
//! agent's dry-run plan with node ports like `svcnet-proxy --dry-run` (issue 12 item 4).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use svcnet_tests::bins::{binary, repo_root};

fn cluster() -> String {
    repo_root().join("examples/cluster").display().to_string()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every stderr line is one JSON object with a level and a message.
fn assert_json_lines(what: &str, stderr: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "{what}: no log lines");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{what}: not a JSON object ({e}): {line:?}"));
        assert!(v["level"].is_string(), "{what}: {line}");
        assert!(v["timestamp"].is_string(), "{what}: {line}");
        assert!(v["target"].is_string(), "{what}: {line}");
    }
}

fn proxy_dry_run(format: &str) -> Output {
    Command::new(binary("svcnet-proxy"))
        .args([
            "--manifests",
            &cluster(),
            "--dry-run",
            "--log-format",
            format,
        ])
        .env("RUST_LOG", "info")
        .output()
        .expect("svcnet-proxy")
}

/// Starts `bin` with `args` and collects its stderr until a line contains `until`, then stops it.
fn log_until(bin: &str, args: &[&str], until: &str) -> String {
    let child = Command::new(binary(bin))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut child = Killed(child);
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            log.push_str(&line);
            log.push('\n');
            if line.contains(until) {
                return log;
            }
        }
    }
    panic!("{bin} never logged {until:?}:\n{log}");
}

fn dns_log(format: &str, until: &str) -> String {
    let listen = format!("127.0.0.1:{}", free_tcp_port());
    log_until(
        "svcnet-dns",
        &[
            "--manifests",
            &cluster(),
            "--listen",
            &listen,
            "--log-format",
            format,
        ],
        until,
    )
}

/// `svcnet-proxy --dry-run` with a configuration field it reports as without effect (an
/// info line), in `format`.
fn proxy_dry_run_logging(format: &str) -> Output {
    let config = std::env::temp_dir().join(format!("svcnet-agent-ops-{}.conf", std::process::id()));
    std::fs::write(
        &config,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\nfeatureGates: {}\n",
    )
    .unwrap();
    let out = Command::new(binary("svcnet-proxy"))
        .args([
            "--manifests",
            &cluster(),
            "--dry-run",
            "--log-format",
            format,
        ])
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .output()
        .expect("svcnet-proxy");
    std::fs::remove_file(&config).ok();
    out
}

#[test]
fn svcnet_proxy_logs_json_lines_or_plain_text_without_colours() {
    let out = proxy_dry_run_logging("json");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_json_lines("svcnet-proxy", &stderr);
    // The message keeps its content; the event's fields are fields of the object.
    let line = stderr
        .lines()
        .find(|l| l.contains("configuration fields without effect"))
        .unwrap_or_else(|| panic!("{stderr}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "INFO");
    assert!(
        v["fields"]
            .as_str()
            .unwrap_or_default()
            .contains("featureGates"),
        "{line}"
    );
    let text = proxy_dry_run_logging("text");
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert!(
        stderr.contains("configuration fields without effect"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\x1b'),
        "no ANSI colours into a pipe: {stderr:?}"
    );
    let bad = Command::new(binary("svcnet-proxy"))
        .args(["--log-format", "yaml", "--dry-run"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unknown log format `yaml`"),
        "{bad:?}"
    );
}

#[test]
fn svcnet_dns_logs_json_lines_or_plain_text_without_colours() {
    let json = dns_log("json", "listening");
    assert_json_lines("svcnet-dns", &json);
    let text = dns_log("text", "listening");
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(text.contains("INFO"), "{text}");
}

#[test]
fn agentctl_logs_json_lines_or_plain_text_without_colours() {
    let run = |format: &str| {
        let admin = format!("127.0.0.1:{}", free_tcp_port());
        log_until(
            "agentctl",
            &[
                "--log-format",
                format,
                "run",
                "--proxy",
                "--dry-run",
                "--manifests",
                &cluster(),
                "--admin",
                &admin,
            ],
            "agent started",
        )
    };
    let json = run("json");
    assert_json_lines("agentctl", &json);
    let started = json.lines().find(|l| l.contains("agent started")).unwrap();
    let v: serde_json::Value = serde_json::from_str(started).unwrap();
    assert_eq!(v["message"], "agent started");
    assert!(v["admin"].is_string(), "{started}");
    let text = run("text");
    assert!(text.contains("agent started"), "{text}");
    assert!(!text.contains('\x1b'), "{text:?}");
}

/// `TCP  <address>:<port> ...` lines of a node port in an `ipvsadm -Ln` style plan.
fn node_port_lines(plan: &str, port: u16) -> Vec<String> {
    let mut lines: Vec<String> = plan
        .lines()
        .filter(|l| {
            let mut w = l.split_whitespace();
            matches!(w.next(), Some("TCP" | "UDP" | "SCTP"))
                && w.next().is_some_and(|a| a.ends_with(&format!(":{port}")))
        })
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect();
    lines.sort();
    lines
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        code,
        raw.split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default(),
    )
}

#[test]
fn agent_dry_run_plans_node_ports_like_svcnet_proxy() {
    // svcnet-proxy --dry-run reads the node's addresses from the kernel (no --node-ip).
    let out = proxy_dry_run("text");
    assert!(out.status.success(), "{out:?}");
    let proxy_plan = String::from_utf8_lossy(&out.stdout).into_owned();
    let expected = node_port_lines(&proxy_plan, 30080);
    assert!(
        !expected.is_empty(),
        "svcnet-proxy plans the demo NodePort on the node's addresses:\n{proxy_plan}"
    );

    let admin = format!("127.0.0.1:{}", free_tcp_port());
    let agent = Command::new(binary("agentctl"))
        .args([
            "run",
            "--manifests",
            &cluster(),
            "--proxy",
            "--dry-run",
            "--admin",
            &admin,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("agentctl run");
    let _agent = Killed(agent);
    let deadline = Instant::now() + Duration::from_secs(30);
    let plan = loop {
        if let Ok(s) = std::net::TcpStream::connect(&admin) {
            drop(s);
            let (code, plan) = http_get(&admin, "/proxy/plan");
            if code == 200 && plan.contains("10.96.10.10:80") {
                break plan;
            }
        }
        assert!(Instant::now() < deadline, "no dry-run plan from the agent");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        node_port_lines(&plan, 30080),
        expected,
        "the agent's plan:\n{plan}\nsvcnet-proxy's plan:\n{proxy_plan}"
    );
}

fn status_json(admin: &str) -> Option<serde_json::Value> {
    let out = Command::new(binary("agentctl"))
        .args(["status", "--admin", admin, "-o", "json"])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_udp_tcp_port() -> u16 {
    loop {
        let port = free_tcp_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Issue 19 item 6: `/status` follows every reload outcome of the Corefile: a reload that fails
/// on a port in use shows its error, a fix clears it, a syntax error and then a deleted Corefile
/// each replace it with their own error, and restoring the file clears it again.
#[test]
fn agent_status_reports_every_corefile_reload_outcome() {
    let dir = std::env::temp_dir().join(format!("svcnet-agent-ops-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let dns_port = free_udp_tcp_port();
    let block = |port: u16| {
        format!(
            ".:{port} {{\n    bind 127.0.0.1\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        fallthrough in-addr.arpa ip6.arpa\n    }}\n    reload 2s 1s\n}}\n"
        )
    };
    let good = block(dns_port);
    let corefile = dir.join("Corefile");
    std::fs::write(&corefile, &good).unwrap();
    let admin = format!("127.0.0.1:{}", free_tcp_port());
    let agent = Command::new(binary("agentctl"))
        .args([
            "run",
            "--dns",
            "--manifests",
            &cluster(),
            "--corefile",
            corefile.to_str().unwrap(),
            "--admin",
            &admin,
            "--lameduck",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("agentctl run");
    let _agent = Killed(agent);
    wait_for("agent ready", Duration::from_secs(30), || {
        status_json(&admin).filter(|v| v["ready"] == true)
    });
    let reload_error =
        || status_json(&admin).map(|v| v["subsystems"]["dns"]["last_reload_error"].clone());
    assert_eq!(reload_error(), Some(serde_json::Value::Null));

    // 1. A second server block on a port someone else holds: the reload fails on binding.
    let busy = free_udp_tcp_port();
    let _udp = std::net::UdpSocket::bind(("127.0.0.1", busy)).unwrap();
    let _tcp = std::net::TcpListener::bind(("127.0.0.1", busy)).unwrap();
    std::fs::write(&corefile, format!("{good}{}", block(busy))).unwrap();
    let in_use = wait_for(
        "the port-in-use reload error",
        Duration::from_secs(15),
        || reload_error()?.as_str().map(str::to_string),
    );
    assert!(in_use.contains(&busy.to_string()), "{in_use}");

    // 2. Fixed: the error clears.
    std::fs::write(&corefile, &good).unwrap();
    wait_for(
        "the error to clear after the fix",
        Duration::from_secs(15),
        || reload_error()?.is_null().then_some(()),
    );

    // 3. A syntax error names the file.
    std::fs::write(&corefile, format!("{good}kubernetes {{\n")).unwrap();
    let syntax = wait_for("the syntax error", Duration::from_secs(15), || {
        reload_error()?.as_str().map(str::to_string)
    });
    assert!(syntax.contains(&corefile.display().to_string()), "{syntax}");

    // 4. Deleted: the error becomes the read error, not the stale syntax error.
    std::fs::remove_file(&corefile).unwrap();
    let deleted = wait_for(
        "the error of the deleted Corefile",
        Duration::from_secs(15),
        || {
            reload_error()?
                .as_str()
                .filter(|e| *e != syntax)
                .map(str::to_string)
        },
    );
    assert!(
        deleted.contains(&corefile.display().to_string()) && deleted.contains("No such file"),
        "{deleted}"
    );

    // 5. Restored: cleared, and the server still answers.
    std::fs::write(&corefile, &good).unwrap();
    wait_for(
        "the error to clear after the restore",
        Duration::from_secs(15),
        || reload_error()?.is_null().then_some(()),
    );
    let a = Command::new(binary("agentctl"))
        .args([
            "dns",
            "query",
            "kubernetes.default.svc.cluster.local",
            "--server",
            &format!("127.0.0.1:{dns_port}"),
            "--short",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&a.stdout), "10.96.0.1\n");
    std::fs::remove_dir_all(&dir).ok();
}
