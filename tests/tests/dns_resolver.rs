//! The seed transcript through the system resolver: glibc with `search default.svc.cluster.local
//! svc.cluster.local cluster.local` and `ndots:5` resolves the short names of a service.
//!
//! glibc only talks to port 53, so the test runs `svcnet-dns` on 127.0.0.1:53 inside a new
//! network and mount namespace (`unshare -mn`, needs root) with a bind-mounted resolv.conf,
//! and asks `getent hosts` (not `ahosts`: AI_ADDRCONFIG ignores a loopback-only netns). Skipped (with a message) where namespaces cannot be created.

mod dns_support;

use std::process::Command;

use dns_support::{binary, example_cluster};

#[test]
fn short_names_resolve_through_the_system_resolver() {
    let probe = Command::new("unshare").args(["-mn", "true"]).status();
    if !probe.map(|s| s.success()).unwrap_or(false) {
        eprintln!("skipped: cannot create mount+network namespaces (needs root and unshare)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n\
         options ndots:5 timeout:1 attempts:1\n",
    )
    .unwrap();
    let script = r#"
set -e
ip link set lo up
mount --bind "$RESOLV" /etc/resolv.conf
"$DNS" --listen 127.0.0.1:53 --manifests "$MANIFESTS" --health off --ready off --metrics off \
  --lameduck 0s 2>"$LOG" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
i=0
until getent hosts kube-dns.kube-system.svc.cluster.local >/dev/null 2>&1; do
  i=$((i+1)); [ $i -lt 100 ] || { echo "server did not come up"; cat "$LOG"; exit 1; }
  sleep 0.1
done
for name in demoapp-svc demoapp-svc.default demoapp-svc.default.svc \
            demoapp-svc.default.svc.cluster.local web-0.web.demo; do
  printf '%s ' "$name"
  getent hosts "$name" | awk 'NR==1 {print $1}'
done
printf 'reverse '
getent hosts 10.96.10.11 | awk '{print $2}'
printf 'missing '
getent hosts no-such-svc >/dev/null 2>&1 && echo found || echo absent
"#;
    let out = Command::new("unshare")
        .args(["-mn", "sh", "-c", script])
        .env("RESOLV", &resolv)
        .env("DNS", binary())
        .env("MANIFESTS", example_cluster())
        .env("LOG", dir.path().join("dns.log"))
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            "demoapp-svc 10.96.10.11",
            "demoapp-svc.default 10.96.10.11",
            "demoapp-svc.default.svc 10.96.10.11",
            "demoapp-svc.default.svc.cluster.local 10.96.10.11",
            "web-0.web.demo 10.244.1.20",
            "reverse demoapp-svc.default.svc.cluster.local",
            "missing absent",
        ],
        "{stdout}"
    );
}
