//! `svcnet-proxy` refuses bad input with a clear message and a non-zero exit, never a panic:
//! a missing manifest directory, an invalid configuration, and (on a kernel without IPVS, or
//! without privileges) the IPVS backend being unavailable.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn proxy() -> PathBuf {
    svcnet_tests::bins::binary("svcnet-proxy")
}

fn run(args: &[&str]) -> Output {
    Command::new(proxy())
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap())
        .env("RUST_LOG", "warn")
        .output()
        .expect("running svcnet-proxy")
}

fn refused(out: &Output) -> String {
    assert!(!out.status.success(), "should fail");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn missing_manifest_directory_is_named() {
    let err = refused(&run(&["--manifests", "/nonexistent/svcnet", "--dry-run"]));
    assert!(err.contains("/nonexistent/svcnet"), "{err}");
}

#[test]
fn missing_config_file_is_named() {
    let err = refused(&run(&[
        "--manifests",
        "examples/cluster",
        "--config",
        "/nonexistent/kube-proxy.conf",
        "--dry-run",
    ]));
    assert!(err.contains("/nonexistent/kube-proxy.conf"), "{err}");
}

#[test]
fn without_ipvs_the_proxy_says_so() {
    // Only meaningful where IPVS cannot be used (this build machine's kernel has none, and
    // unprivileged users cannot program it); skipped where it could really program the kernel.
    if Path::new("/proc/net/ip_vs").exists() && is_root() {
        eprintln!("SKIPPED: this kernel has IPVS and we are root");
        return;
    }
    let err = refused(&run(&[
        "--manifests",
        "examples/cluster",
        "--node-ip",
        "192.168.1.20",
        "--once",
    ]));
    assert!(
        err.contains("IPVS") || err.contains("netlink") || err.contains("ermission"),
        "{err}"
    );
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn write_config(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("svcnet-{name}-{}.conf", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn missing_config_file_says_why_once() {
    let err = refused(&run(&[
        "--manifests",
        "examples/cluster",
        "--config",
        "/nonexistent/kube-proxy.conf",
        "--dry-run",
    ]));
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "the reason once: {err}"
    );
}

#[test]
fn a_negative_sync_period_says_what_is_wrong() {
    let path = write_config(
        "negative",
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\nipvs:\n  syncPeriod: -5s\n",
    );
    let out = run(&[
        "--manifests",
        "examples/cluster",
        "--config",
        path.to_str().unwrap(),
        "--dry-run",
    ]);
    std::fs::remove_file(&path).ok();
    let err = refused(&out);
    assert!(
        err.contains("field ipvs.syncPeriod")
            && err.contains("\"-5s\": a negative duration is not allowed"),
        "{err}"
    );
    assert!(!err.contains("bad number"), "{err}");
}
