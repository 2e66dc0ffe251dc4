//! `svcnet-proxy --dry-run` on the demo clusters in `examples/`: the plan it prints in
//! `ipvsadm -Ln` format, config handling, and errors. The binary is taken from next to this test
//! executable (`cargo build --workspace --bins` first).

use std::path::PathBuf;
use std::process::{Command, Output};

fn proxy() -> PathBuf {
    svcnet_tests::bins::binary("svcnet-proxy")
}

fn repo() -> PathBuf {
    svcnet_tests::bins::repo_root()
}

fn run(args: &[&str]) -> Output {
    Command::new(proxy())
        .args(args)
        .current_dir(repo())
        .env("RUST_LOG", "warn")
        .output()
        .expect("running svcnet-proxy")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "svcnet-proxy failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}

/// The table expected for `examples/cluster` on node-a with node address 192.168.1.20,
/// derived by hand from the example's README: ready endpoints only (10.244.1.12 is not ready
/// while others are), the headless `demo/web` and the ExternalName `mysql-external` skipped,
/// NodePorts 30080/30081 on the node address, external and load-balancer IPs.
const EXPECTED: &str = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  1.2.3.4:80 rr
  -> 10.244.1.10:80               Masq    1      0          0         
  -> 10.244.2.11:80               Masq    1      0          0         
TCP  10.96.0.1:443 rr
  -> 192.168.1.10:6443            Masq    1      0          0         
TCP  10.96.0.10:53 rr
  -> 10.244.0.5:53                Masq    1      0          0         
UDP  10.96.0.10:53 rr
  -> 10.244.0.5:53                Masq    1      0          0         
TCP  10.96.0.10:9153 rr
  -> 10.244.0.5:9153              Masq    1      0          0         
TCP  10.96.10.10:80 rr
  -> 10.244.1.10:80               Masq    1      0          0         
  -> 10.244.2.11:80               Masq    1      0          0         
TCP  10.96.10.11:80 rr
  -> 10.244.1.10:80               Masq    1      0          0         
  -> 10.244.2.11:80               Masq    1      0          0         
TCP  10.96.10.12:80 rr
  -> 10.244.1.10:80               Masq    1      0          0         
  -> 10.244.2.11:80               Masq    1      0          0         
TCP  10.96.10.13:80 rr
  -> 10.244.1.10:80               Masq    1      0          0         
  -> 10.244.2.11:80               Masq    1      0          0         
TCP  10.96.10.14:80 rr
  -> 10.244.1.30:8080             Masq    1      0          0         
TCP  10.96.20.10:80 rr
  -> 10.244.1.40:80               Masq    1      0          0         
  -> 10.244.2.41:80               Masq    1      0          0         
TCP  192.168.1.20:30080 rr
  -> 10.244.1.10:80               Masq    1      0          0         
  -> 10.244.2.11:80               Masq    1      0          0         
TCP  192.168.1.20:30081 rr
  -> 10.244.1.10:80               Masq    1      0          0         
  -> 10.244.2.11:80               Masq    1      0          0         
TCP  192.168.2.6:80 rr
  -> 10.244.1.40:80               Masq    1      0          0         
  -> 10.244.2.41:80               Masq    1      0          0         
TCP  203.0.113.10:80 rr
  -> 10.244.1.10:80               Masq    1      0          0         
  -> 10.244.2.11:80               Masq    1      0          0         
";

#[test]
fn dry_run_prints_the_demo_cluster_plan_in_ipvsadm_format() {
    let out = run(&[
        "--manifests",
        "examples/cluster",
        "--node-name",
        "node-a",
        "--node-ip",
        "192.168.1.20",
        "--dry-run",
    ]);
    assert_eq!(stdout(&out), EXPECTED);
}

fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("svcnet-proxy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn dry_run_follows_the_kube_proxy_configuration() {
    let cfg = write_config(
        "wrr.yaml",
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n\
         ipvs:\n  scheduler: wrr\nnodePortAddresses: [\"10.0.0.0/8\"]\nconntrack:\n  maxPerCore: 0\n",
    );
    let out = run(&[
        "--manifests",
        "examples/cluster",
        "--node-ip",
        "192.168.1.20",
        "--config",
        cfg.to_str().unwrap(),
        "--dry-run",
    ]);
    let text = stdout(&out);
    assert!(text.contains("TCP  10.96.0.1:443 wrr\n"), "{text}");
    assert!(
        !text.contains(" rr\n"),
        "every virtual server uses wrr:\n{text}"
    );
    assert!(
        !text.contains("192.168.1.20:"),
        "node address outside nodePortAddresses gets no node port:\n{text}"
    );
}

#[test]
fn a_bad_config_is_refused_naming_the_field() {
    let cfg = write_config(
        "bad.yaml",
        "ipvs:\n  scheduler: fastest\n  syncPeriodd: 1s\n",
    );
    let out = run(&[
        "--manifests",
        "examples/cluster",
        "--config",
        cfg.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ipvs.syncPeriodd"), "{err}");
}

#[test]
fn dry_run_of_the_dual_stack_cluster_has_ipv6_virtual_servers() {
    let out = run(&[
        "--manifests",
        "examples/cluster-dualstack",
        "--node-ip",
        "192.168.1.20",
        "--dry-run",
    ]);
    let text = stdout(&out);
    assert!(text.contains("UDP  [fd00:10:96::a]:53 rr\n"), "{text}");
    assert!(text.contains("UDP  10.96.0.10:53 rr\n"), "{text}");
}
