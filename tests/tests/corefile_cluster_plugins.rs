//! The cluster-aware plugins of field Corefiles, served by `svcnet-dns --corefile` over real
//! sockets and checked with `dig`: `autopath @kubernetes` with `pods verified` (a query from a
//! Pod's address gets the CNAME and the answer in one reply; the bare name goes through the rest
//! of the chain; an unknown source address gets the plain answer), `k8s_external` (load-balancer
//! and external IPs, SRV, the apex SOA/NS and `ns1.dns`), the kubernetes `labels` option switched
//! live by a reload, and a reload that would need the Pod watch (rejected, old config kept).
//!
//! Needs `dig` (Debian package bind9-dnsutils) and the binary built:
//! `cargo build --workspace --bins`. Pods are given 127.0.0.x addresses, so `dig -b` on loopback
//! asks as that pod.

mod corefile_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use corefile_support::{Server, free_port, http_get};

const WAIT: Duration = Duration::from_secs(15);

/// A record line of dig's output: (owner, ttl, type, data).
type Rr = (String, u32, String, String);

#[derive(Debug)]
struct Dig {
    status: String,
    answers: Vec<Rr>,
    additionals: Vec<Rr>,
    authority: Vec<Rr>,
}

fn parse_rr(l: &str) -> Rr {
    let f: Vec<&str> = l.split_whitespace().collect();
    assert!(f.len() >= 5, "record line {l:?}");
    (
        f[0].to_string(),
        f[1].parse().unwrap(),
        f[3].to_string(),
        f[4..].join(" "),
    )
}

/// Asks `name`/`qtype` on 127.0.0.1:`port` from source address `from`.
fn dig_from(from: &str, port: u16, name: &str, qtype: &str) -> Dig {
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "-b",
            from,
            "+noall",
            "+comments",
            "+answer",
            "+authority",
            "+additional",
            "+noedns",
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
    let (mut answers, mut authority, mut additionals) = (vec![], vec![], vec![]);
    let mut section = "";
    for l in text.lines() {
        if l.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if l.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if l.starts_with(";; ADDITIONAL SECTION") {
            section = "additional";
        } else if !l.starts_with(';') && !l.trim().is_empty() {
            let rr = parse_rr(l);
            match section {
                "answer" => answers.push(rr),
                "authority" => authority.push(rr),
                "additional" => additionals.push(rr),
                _ => panic!("record outside a section: {l}"),
            }
        }
    }
    Dig {
        status,
        answers,
        additionals,
        authority,
    }
}

fn dig(port: u16, name: &str, qtype: &str) -> Dig {
    dig_from("127.0.0.1", port, name, qtype)
}

fn rr(owner: &str, ttl: u32, t: &str, data: &str) -> Rr {
    (owner.into(), ttl, t.into(), data.into())
}

/// The cluster: services in `default`, `demo` and `shop` (labelled by tier), a load balancer,
/// the DNS service with an external IP, and a client Pod at 127.0.0.5 in namespace `demo`.
const CLUSTER: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: demoapp-svc, namespace: default}
spec: {clusterIP: 10.96.10.11, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec: {clusterIP: 10.96.20.1, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: front, namespace: shop, labels: {tier: front}}
spec: {clusterIP: 10.96.30.1, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: back, namespace: shop, labels: {tier: back}}
spec: {clusterIP: 10.96.30.2, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.10.30
  externalIPs: [203.0.113.7]
  ports: [{name: http, port: 80, protocol: TCP}]
status: {loadBalancer: {ingress: [{ip: 198.51.100.7}]}}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec: {clusterIP: 10.96.0.10, externalIPs: [192.0.2.53], ports: [{name: dns, port: 53, protocol: UDP}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: demo}
spec: {containers: [{name: c, image: x}]}
status: {podIP: 127.0.0.5, podIPs: [{ip: 127.0.0.5}]}
"#;

fn write_cluster(dir: &Path) {
    std::fs::write(dir.join("cluster.yaml"), CLUSTER).unwrap();
}

fn corefile(port: u16, metrics: u16, pods: &str, labels: &str) -> String {
    format!(
        r#".:{port} {{
    bind 127.0.0.1
    errors
    prometheus 127.0.0.1:{metrics}
    autopath @kubernetes
    hosts {{
        192.0.2.99 outside.example
        fallthrough
    }}
    k8s_external example.org
    kubernetes cluster.local in-addr.arpa {{
        pods {pods}
        {labels}
    }}
    reload 2s 1s
}}
"#
    )
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: never happened");
        std::thread::sleep(Duration::from_millis(150));
    }
}

#[test]
fn autopath_k8s_external_and_labels_answer_like_coredns_over_real_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    write_cluster(&manifests);
    let port = free_port();
    let metrics = free_port();
    let path = dir.path().join("Corefile");
    std::fs::write(
        &path,
        corefile(port, metrics, "verified", "labels tier notin (back)"),
    )
    .unwrap();
    let _srv = Server::start("dns", &path, &manifests, true);
    wait_for("the cluster zone answers", || {
        !dig(port, "web.demo.svc.cluster.local", "A")
            .answers
            .is_empty()
    });

    // autopath: the pod in `demo` asks `demoapp-svc.default` with its first search domain
    // appended; the answer comes from `demoapp-svc.default.svc.cluster.local`, behind a CNAME.
    let pod = "127.0.0.5";
    let d = dig_from(pod, port, "demoapp-svc.default.demo.svc.cluster.local", "A");
    assert_eq!(d.status, "NOERROR", "{d:?}");
    assert_eq!(
        d.answers,
        vec![
            rr(
                "demoapp-svc.default.demo.svc.cluster.local.",
                5,
                "CNAME",
                "demoapp-svc.default.svc.cluster.local."
            ),
            rr(
                "demoapp-svc.default.svc.cluster.local.",
                5,
                "A",
                "10.96.10.11"
            ),
        ]
    );
    // The same query from an address that is no pod's: answered plainly.
    let d = dig(port, "demoapp-svc.default.demo.svc.cluster.local", "A");
    assert_eq!(
        (d.status.as_str(), d.answers.len()),
        ("NXDOMAIN", 0),
        "{d:?}"
    );
    // A name found only as the bare name, by the rest of the chain (hosts).
    let d = dig_from(pod, port, "outside.example.demo.svc.cluster.local", "A");
    assert_eq!(d.status, "NOERROR", "{d:?}");
    assert_eq!(
        d.answers,
        vec![
            rr(
                "outside.example.demo.svc.cluster.local.",
                3600,
                "CNAME",
                "outside.example."
            ),
            rr("outside.example.", 3600, "A", "192.0.2.99"),
        ]
    );
    // Nothing anywhere on the path: NXDOMAIN for the name asked, with the zone's SOA.
    let d = dig_from(pod, port, "nope.demo.svc.cluster.local", "A");
    assert_eq!(d.status, "NXDOMAIN", "{d:?}");
    assert!(d.answers.is_empty());
    assert_eq!(d.authority[0].2, "SOA");
    // A name of the pod's own namespace answers directly, without a CNAME.
    let d = dig_from(pod, port, "web.demo.svc.cluster.local", "A");
    assert_eq!(
        d.answers,
        vec![rr("web.demo.svc.cluster.local.", 5, "A", "10.96.20.1")]
    );
    // The two answers found under another name were counted.
    let text = http_get(([127, 0, 0, 1], metrics).into(), "/metrics");
    assert!(
        text.lines()
            .any(|l| l == "coredns_autopath_success_total 2"),
        "{text}"
    );

    // k8s_external: load-balancer and external IPs under example.org.
    let d = dig(port, "lb.default.example.org", "A");
    assert_eq!(d.status, "NOERROR");
    let ips: Vec<&str> = d.answers.iter().map(|a| a.3.as_str()).collect();
    assert_eq!(ips, vec!["203.0.113.7", "198.51.100.7"]);
    let d = dig(port, "_http._tcp.lb.default.example.org", "SRV");
    assert_eq!(
        d.answers,
        vec![rr(
            "_http._tcp.lb.default.example.org.",
            5,
            "SRV",
            "0 50 80 lb.default.example.org."
        )]
    );
    assert_eq!(d.additionals.len(), 2, "{d:?}");
    let d = dig(port, "example.org", "SOA");
    assert_eq!(d.answers[0].2, "SOA");
    assert!(
        d.answers[0]
            .3
            .starts_with("ns1.dns.example.org. hostmaster.dns.example.org."),
        "{d:?}"
    );
    let d = dig(port, "example.org", "NS");
    assert_eq!(
        d.answers,
        vec![rr("example.org.", 5, "NS", "ns1.dns.example.org.")]
    );
    assert_eq!(
        d.additionals,
        vec![rr("ns1.dns.example.org.", 5, "A", "192.0.2.53")]
    );
    let d = dig(port, "web.demo.example.org", "A");
    assert_eq!(d.status, "NXDOMAIN", "no external address: {d:?}");
    assert_eq!(d.authority[0].2, "SOA");

    // labels: `tier notin (back)` hides back, keeps front and the unlabelled ones.
    assert_eq!(
        dig(port, "back.shop.svc.cluster.local", "A").status,
        "NXDOMAIN"
    );
    assert_eq!(
        dig(port, "front.shop.svc.cluster.local", "A").answers[0].3,
        "10.96.30.1"
    );
    assert_eq!(
        dig(port, "2.30.96.10.in-addr.arpa", "PTR").status,
        "NXDOMAIN"
    );

    // A reload that changes the selector takes effect live.
    std::fs::write(
        &path,
        corefile(port, metrics, "verified", "labels tier=back"),
    )
    .unwrap();
    wait_for("the new selector is applied", || {
        dig(port, "back.shop.svc.cluster.local", "A")
            .answers
            .first()
            .is_some_and(|a| a.3 == "10.96.30.2")
    });
    assert_eq!(
        dig(port, "front.shop.svc.cluster.local", "A").status,
        "NXDOMAIN"
    );
    assert_eq!(
        dig(port, "web.demo.svc.cluster.local", "A").status,
        "NXDOMAIN"
    );
    // ... and removing it exposes everything again.
    std::fs::write(&path, corefile(port, metrics, "verified", "")).unwrap();
    wait_for("the selector is removed", || {
        dig(port, "front.shop.svc.cluster.local", "A").status == "NOERROR"
    });
    assert_eq!(
        dig(port, "back.shop.svc.cluster.local", "A").answers[0].3,
        "10.96.30.2"
    );
}

#[test]
fn turning_pods_verified_on_by_reload_is_rejected_until_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    write_cluster(&manifests);
    let port = free_port();
    let metrics = free_port();
    let path = dir.path().join("Corefile");
    std::fs::write(&path, corefile(port, metrics, "disabled", "")).unwrap();
    let mut srv = Server::start("dns", &path, &manifests, true);
    wait_for("the cluster zone answers", || {
        !dig(port, "web.demo.svc.cluster.local", "A")
            .answers
            .is_empty()
    });
    // Without pods verified, autopath does nothing (a warning said so at load).
    let d = dig_from(
        "127.0.0.5",
        port,
        "demoapp-svc.default.demo.svc.cluster.local",
        "A",
    );
    assert_eq!(d.status, "NXDOMAIN");

    std::fs::write(&path, corefile(port, metrics, "verified", "")).unwrap();
    let line = srv.wait_log(WAIT, "Corefile rejected");
    assert!(line.contains("Pod") && line.contains("restart"), "{line}");
    // The old configuration keeps serving.
    assert_eq!(
        dig(port, "web.demo.svc.cluster.local", "A").answers[0].3,
        "10.96.20.1"
    );
}
