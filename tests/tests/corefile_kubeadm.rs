//! kubeadm's default Corefile, unchanged, served by `svcnet-dns --corefile` on port 53 with
//! `forward . /etc/resolv.conf`: run in a private network and mount namespace (root) where
//! `/etc/resolv.conf` names a Knot DNS server on `::1`, so every packet stays on that
//! namespace's loopback.
//!
//! Needs root (unshare), `knotd`, `dig`, `curl` and the binary built:
//! `cargo build --workspace --bins`.

mod corefile_support;

use std::process::Command;

use corefile_support::{binary, example_cluster, zone};

/// kubeadm's default Corefile (CoreDNS ConfigMap), byte for byte.
const KUBEADM_COREFILE: &str = r#".:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
"#;

#[test]
fn kubeadm_default_corefile_serves_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("run")).unwrap();
    std::fs::write(d.join("Corefile"), KUBEADM_COREFILE).unwrap();
    std::fs::write(d.join("resolv.conf"), "nameserver ::1\n").unwrap();
    std::fs::write(
        d.join("example.test.zone"),
        zone(
            "example.test",
            &[
                "www IN A 192.0.2.1",
                "www IN A 192.0.2.2",
                "www IN A 192.0.2.3",
            ],
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("knot.conf"),
        format!(
            "server:\n    listen: ::1@53\n    rundir: {d}/run\ndatabase:\n    storage: {d}/run\ntemplate:\n  - id: default\n    storage: {d}\nzone:\n  - domain: example.test\n    file: example.test.zone\nlog:\n  - target: stderr\n    any: warning\n",
            d = d.display()
        ),
    )
    .unwrap();
    let script = format!(
        r#"set -u
ip link set lo up
mount --bind {d}/resolv.conf /etc/resolv.conf
knotd -c {d}/knot.conf &
KNOT=$!
# The upstream must answer before svcnet-dns starts: its loop probe and the first forwarded
# queries go there, and a refused probe would be logged as an error.
for i in $(seq 1 200); do dig +short +time=1 +tries=1 @::1 www.example.test | grep -q . && break; sleep 0.05; done
{bin} --corefile {d}/Corefile --manifests {m} 2>{d}/dns.log &
DNS=$!
for i in $(seq 1 200); do curl -sf 127.0.0.1:8181/ready >/dev/null 2>&1 && break; sleep 0.05; done
echo "ready=$(curl -s 127.0.0.1:8181/ready)"
echo "health=$(curl -s 127.0.0.1:8080/health)"
echo "svc=$(dig +short @127.0.0.1 demoapp-svc.default.svc.cluster.local)"
echo "ttl=$(dig +noall +answer @127.0.0.1 demoapp-svc.default.svc.cluster.local | awk '{{print $2}}')"
echo "ptr=$(dig +short @127.0.0.1 -x 10.96.10.11)"
echo "fwd=$(dig +short @127.0.0.1 www.example.test | sort | tr '\n' ' ')"
echo "first1=$(dig +short @127.0.0.1 www.example.test | head -1)"
echo "first2=$(dig +short @127.0.0.1 www.example.test | head -1)"
echo "first3=$(dig +short @127.0.0.1 www.example.test | head -1)"
echo "metrics=$(curl -s 127.0.0.1:9153/metrics | grep -c '^coredns_dns_requests_total')"
echo "hits=$(curl -s 127.0.0.1:9153/metrics | grep '^coredns_cache_hits_total' | awk '{{s+=$2}} END {{print s+0}}')"
kill -9 $DNS $KNOT
wait 2>/dev/null
echo "log:"; cat {d}/dns.log
"#,
        d = d.display(),
        bin = binary().display(),
        m = example_cluster().display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--net", "--", "sh", "-c", &script])
        .output()
        .expect("run unshare (needs root)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let get = |k: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k}= in output:\n{text}"))
            .trim()
            .to_string()
    };
    assert_eq!(get("ready"), "OK");
    assert_eq!(get("health"), "OK");
    assert_eq!(get("svc"), "10.96.10.11");
    assert_eq!(get("ttl"), "30");
    assert_eq!(get("ptr"), "demoapp-svc.default.svc.cluster.local.");
    assert_eq!(get("fwd"), "192.0.2.1 192.0.2.2 192.0.2.3");
    // loadbalance rotates the cached answer.
    let firsts = [get("first1"), get("first2"), get("first3")];
    assert!(
        firsts.iter().any(|f| f != &firsts[0]),
        "rotation expected: {firsts:?}"
    );
    assert_ne!(get("metrics"), "0");
    assert!(
        get("hits").parse::<u64>().unwrap() >= 2,
        "cache hits counted"
    );
    assert!(!text.contains("Loop ("), "no loop on a sane setup");
    assert!(!text.contains("ERROR"), "no errors logged:\n{text}");
}
