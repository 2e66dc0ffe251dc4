//! Golden tests of `agentctl env`, `agentctl resolv-conf` and `agentctl get` against the demo
//! cluster in `examples/cluster` and fixtures in `tests/golden/agentctl/`.
//!
//! The binary is taken from next to this test executable (`cargo build --workspace --bins`
//! first). `UPDATE_GOLDEN=1 cargo test -p svcnet-tests --test agentctl_golden` rewrites the
//! golden files; review the diff before committing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn agentctl() -> PathBuf {
    svcnet_tests::bins::binary("agentctl")
}

fn repo() -> PathBuf {
    svcnet_tests::bins::repo_root()
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/agentctl")
}

fn run(args: &[&str]) -> Output {
    Command::new(agentctl())
        .args(args)
        .current_dir(repo())
        .output()
        .expect("running agentctl")
}

fn run_ok(args: &[&str]) -> (String, String) {
    let out = run(args);
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let stderr = String::from_utf8(out.stderr).expect("utf-8 stderr");
    assert!(
        out.status.success(),
        "agentctl {args:?} failed ({}):\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

fn check_golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("writing golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("golden file {}: {e}", path.display()));
    if expected != actual {
        panic!(
            "output differs from {}\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        );
    }
}

fn fixture(name: &str) -> String {
    golden_dir().join(name).display().to_string()
}

// ---- env ----

#[test]
fn env_default_namespace_matches_seed_example() {
    let (out, _) = run_ok(&["env", "-n", "default", "--manifests", "examples/cluster"]);
    check_golden("env-default.txt", &out);
    // The seed's claims, checked directly as well as through the golden file.
    let hosts: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("_SERVICE_HOST="))
        .map(|l| l.split('=').next().unwrap())
        .collect();
    assert_eq!(
        hosts,
        [
            "DEMOAPP_SERVICE_HOST",
            "DEMOAPP_LOADBALANCER_SVC_SERVICE_HOST",
            "DEMOAPP_NODEPORT_SVC_SERVICE_HOST",
            "DEMOAPP_SVC_SERVICE_HOST",
            "KUBERNETES_SERVICE_HOST",
            "SERVICES_READINESS_DEMO_SERVICE_HOST",
        ]
    );
    assert!(
        !out.contains("MYSQL_EXTERNAL"),
        "ExternalName contributes none"
    );
    assert!(!out.contains("KUBE_DNS"), "nothing from kube-system");
    assert!(!out.contains("DEMOAPP_EXTERNALIP"), "nothing from demo");
    assert!(out.contains("SERVICES_READINESS_DEMO_SERVICE_HOST=10.96.10.14\n"));
}

#[test]
fn env_other_namespace_gets_master_service_but_not_headless() {
    let (out, _) = run_ok(&["env", "-n", "demo", "--manifests", "examples/cluster"]);
    check_golden("env-demo.txt", &out);
    assert!(out.contains("KUBERNETES_SERVICE_HOST=10.96.0.1\n"));
    assert!(!out.contains("WEB_"), "headless service contributes none");
}

#[test]
fn env_without_service_links_keeps_only_kubernetes() {
    let (out, _) = run_ok(&[
        "env",
        "-n",
        "default",
        "--enable-service-links=false",
        "--manifests",
        "examples/cluster",
    ]);
    check_golden("env-default-no-links.txt", &out);
    assert!(out.lines().all(|l| l.starts_with("KUBERNETES_")));
}

#[test]
fn env_json_and_docker_env_formats() {
    let (json, _) = run_ok(&[
        "env",
        "-n",
        "demo",
        "--format",
        "json",
        "--manifests",
        "examples/cluster",
    ]);
    check_golden("env-demo.json", &json);
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert!(parsed.as_array().is_some_and(|a| !a.is_empty()));
    let (docker, _) = run_ok(&[
        "env",
        "-n",
        "demo",
        "--format",
        "docker-env",
        "--manifests",
        "examples/cluster",
    ]);
    check_golden("env-demo.docker-env", &docker);
}

#[test]
fn env_ipv6_primary_cluster_ip_is_bracketed_in_urls() {
    let ipv6 = fixture("ipv6-cluster");
    let (out, _) = run_ok(&["env", "-n", "v6", "--manifests", &ipv6]);
    check_golden("env-ipv6.txt", &out);
    assert!(out.contains("API_V6_PORT=tcp://[fd00:10:96::1:5]:9090\n"));
    assert!(out.contains("API_V6_SERVICE_HOST=fd00:10:96::1:5\n"));
}

// ---- resolv-conf ----

fn resolv(extra: &[&str]) -> (String, String) {
    let host = fixture("host-resolv.conf");
    let mut args = vec!["resolv-conf", "--host-resolv-conf", &host];
    args.extend_from_slice(extra);
    run_ok(&args)
}

#[test]
fn resolv_cluster_first() {
    let (out, err) = resolv(&["-n", "demo", "--nameserver", "10.96.0.10"]);
    check_golden("resolv-cluster-first.conf", &out);
    assert!(err.is_empty(), "{err}");
}

#[test]
fn resolv_cluster_first_takes_kube_dns_from_the_source() {
    let (out, _) = resolv(&["-n", "demo", "--manifests", "examples/cluster"]);
    check_golden("resolv-cluster-first.conf", &out);
}

#[test]
fn resolv_cluster_first_on_host_network_falls_back_to_default() {
    let (out, _) = resolv(&["-n", "demo", "--nameserver", "10.96.0.10", "--host-network"]);
    check_golden("resolv-default.conf", &out);
}

#[test]
fn resolv_cluster_first_with_host_net() {
    let (out, _) = resolv(&[
        "-n",
        "kube-system",
        "--nameserver",
        "10.96.0.10",
        "--host-network",
        "--dns-policy",
        "ClusterFirstWithHostNet",
    ]);
    check_golden("resolv-cluster-first-with-host-net.conf", &out);
}

#[test]
fn resolv_default() {
    let (out, _) = resolv(&["--nameserver", "10.96.0.10", "--dns-policy", "Default"]);
    check_golden("resolv-default.conf", &out);
}

#[test]
fn resolv_none_with_dns_config() {
    let cfg = fixture("dns-config-none.yaml");
    let (out, _) = resolv(&[
        "--nameserver",
        "10.96.0.10",
        "--dns-policy",
        "None",
        "--dns-config",
        &cfg,
    ]);
    check_golden("resolv-none.conf", &out);
}

#[test]
fn resolv_none_without_dns_config_is_an_error() {
    let host = fixture("host-resolv.conf");
    let out = run(&[
        "resolv-conf",
        "--host-resolv-conf",
        &host,
        "--dns-policy",
        "None",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dnsPolicy None requires a dnsConfig"));
}

#[test]
fn resolv_cluster_first_merges_dns_config() {
    let cfg = fixture("dns-config-merge.yaml");
    let (out, _) = resolv(&[
        "-n",
        "default",
        "--nameserver",
        "10.96.0.10",
        "--dns-config",
        &cfg,
    ]);
    check_golden("resolv-cluster-first-dns-config.conf", &out);
}

#[test]
fn resolv_limits_trim_with_warnings() {
    let cfg = fixture("dns-config-limits.yaml");
    let (out, err) = resolv(&[
        "-n",
        "default",
        "--nameserver",
        "10.96.0.10",
        "--dns-config",
        &cfg,
    ]);
    check_golden("resolv-limits.conf", &out);
    let search = out.lines().find(|l| l.starts_with("search ")).unwrap();
    assert!(search.len() - "search ".len() <= 2048);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("nameserver")).count(),
        3
    );
    assert!(
        err.contains("warning: Nameserver limits were exceeded"),
        "{err}"
    );
    assert!(
        err.contains("warning: Search Line limits were exceeded"),
        "{err}"
    );
}

#[test]
fn resolv_without_host_resolv_conf_uses_localhost() {
    let (out, _) = run_ok(&[
        "resolv-conf",
        "--host-resolv-conf",
        "",
        "--dns-policy",
        "Default",
    ]);
    assert_eq!(out, "search .\nnameserver 127.0.0.1\n");
}

#[test]
fn resolv_without_cluster_dns_warns_and_falls_back() {
    let (out, err) = resolv(&["-n", "demo"]);
    check_golden("resolv-default.conf", &out);
    assert!(err.contains("Falling back to \"Default\" policy"), "{err}");
}

#[test]
fn resolv_bad_dns_config_names_file_and_problem() {
    let dir = std::env::temp_dir().join(format!("agentctl-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "nameservers: [not-an-ip]\n").unwrap();
    let host = fixture("host-resolv.conf");
    let out = run(&[
        "resolv-conf",
        "--host-resolv-conf",
        &host,
        "--dns-config",
        bad.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.yaml") && err.contains("not-an-ip"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

// ---- get ----

#[test]
fn get_services_default() {
    let (out, _) = run_ok(&["get", "services", "--manifests", "examples/cluster"]);
    check_golden("get-services.txt", &out);
}

#[test]
fn get_services_all_namespaces_wide() {
    let (out, _) = run_ok(&[
        "get",
        "svc",
        "-A",
        "-o",
        "wide",
        "--manifests",
        "examples/cluster",
    ]);
    check_golden("get-services-all-wide.txt", &out);
}

#[test]
fn get_endpoints_all_namespaces() {
    let (out, _) = run_ok(&["get", "endpoints", "-A", "--manifests", "examples/cluster"]);
    check_golden("get-endpoints-all.txt", &out);
    // Not-ready 10.244.1.12 (terminating) and 10.244.2.31 are not in ENDPOINTS.
    assert!(!out.contains("10.244.1.12") && !out.contains("10.244.2.31"));
}

#[test]
fn get_endpointslices_all_namespaces() {
    let (out, _) = run_ok(&[
        "get",
        "endpointslices",
        "-A",
        "--manifests",
        "examples/cluster",
    ]);
    check_golden("get-endpointslices-all.txt", &out);
}

#[test]
fn get_services_json_is_machine_readable() {
    let (out, _) = run_ok(&[
        "get",
        "services",
        "-n",
        "demo",
        "-o",
        "json",
        "--manifests",
        "examples/cluster",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["demoapp-externalip-svc", "web"]);
    let (yaml, _) = run_ok(&[
        "get",
        "services",
        "-n",
        "demo",
        "-o",
        "yaml",
        "--manifests",
        "examples/cluster",
    ]);
    assert!(yaml.contains("name: demoapp-externalip-svc"), "{yaml}");
}

#[test]
fn get_empty_namespace_says_so() {
    let out = run(&[
        "get",
        "svc",
        "-n",
        "nope",
        "--manifests",
        "examples/cluster",
    ]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No resources found in nope namespace."));
}

#[test]
fn get_unknown_resource_is_a_clear_error() {
    let out = run(&["get", "pods", "--manifests", "examples/cluster"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown resource type \"pods\""));
}

#[test]
fn missing_manifest_directory_is_a_clear_error() {
    let out = run(&["get", "svc", "--manifests", "/nonexistent/svcnet-dir"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/svcnet-dir"));
}

// ---- dns export-zone ----

#[test]
fn export_zone_golden_and_loadable_by_knot() {
    // The zone's content belongs to the DNS tests; here: the export's framing and a few
    // records, then a real zone parser's verdict.
    let (zone, _) = run_ok(&["dns", "export-zone", "--manifests", "examples/cluster"]);
    let first_record = zone
        .lines()
        .find(|l| !l.starts_with(';') && !l.starts_with('$'));
    assert!(
        first_record.is_some_and(|l| l.starts_with("cluster.local. ") && l.contains(" IN SOA ")),
        "SOA first:\n{zone}"
    );
    for line in [
        "$ORIGIN cluster.local.",
        "demoapp.default.svc.cluster.local. 5 IN A 10.96.10.10",
        "mysql-external.default.svc.cluster.local. 5 IN CNAME mysql.example.com.",
        "web-0.web.demo.svc.cluster.local. 5 IN A 10.244.1.20",
    ] {
        assert!(zone.contains(line), "{line:?} missing:\n{zone}");
    }
    assert!(
        !zone.contains("in-addr.arpa"),
        "reverse records belong to their own zone"
    );
    let (reverse, _) = run_ok(&[
        "dns",
        "export-zone",
        "--zone",
        "in-addr.arpa",
        "--manifests",
        "examples/cluster",
    ]);
    assert!(
        reverse.contains("10.10.96.10.in-addr.arpa. 5 IN PTR demoapp.default.svc.cluster.local.")
    );
    // Knot's zone checker accepts the file (skipped when knotc is not installed).
    let dir = std::env::temp_dir().join(format!("agentctl-zone-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster.local.db");
    std::fs::write(&file, &zone).unwrap();
    let conf = dir.join("knot.conf");
    std::fs::write(
        &conf,
        format!(
            "server:\n    rundir: \"{d}\"\ndatabase:\n    storage: \"{d}\"\nzone:\n  - domain: cluster.local\n    file: \"{f}\"\n",
            d = dir.display(),
            f = file.display()
        ),
    )
    .unwrap();
    match Command::new("knotc")
        .args(["-c", conf.to_str().unwrap(), "zone-check", "cluster.local"])
        .output()
    {
        Ok(out) => assert!(
            out.status.success() && out.stderr.is_empty(),
            "knotc zone-check: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("knotc not available ({e}); zone file syntax not cross-checked"),
    }
    std::fs::remove_dir_all(&dir).ok();
}

// ---- completions and help ----

#[test]
fn completions_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _agentctl"),
        ("zsh", "#compdef agentctl"),
        ("fish", "complete -c agentctl"),
    ] {
        let (out, _) = run_ok(&["completions", shell]);
        assert!(out.contains(marker), "{shell}: {marker:?} missing");
        for sub in ["resolv-conf", "export-zone", "status"] {
            assert!(out.contains(sub), "{shell}: subcommand {sub} missing");
        }
    }
}

#[test]
fn help_shows_examples() {
    for args in [
        &["--help"][..],
        &["get", "--help"],
        &["env", "--help"],
        &["resolv-conf", "--help"],
        &["run", "--help"],
        &["status", "--help"],
        &["dns", "query", "--help"],
    ] {
        let (out, _) = run_ok(args);
        assert!(
            out.contains("Examples:"),
            "agentctl {args:?} --help has no examples"
        );
    }
}
