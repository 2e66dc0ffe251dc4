//! The host side of a dry run (issue 20): `svcnet-proxy --dry-run --show=all` prints the
//! `kube-ipvs0` addresses, ipset contents and iptables rules a run would program, and
//! `agentctl run --dry-run` serves the same at `/proxy/addresses`, `/proxy/ipsets` and
//! `/proxy/iptables`, following the cluster live. The cluster exercises the kube-proxy parity
//! fixes: an `externalTrafficPolicy: Local` load balancer with no endpoint on this node, an
//! `ipMode: Proxy` ingress IP, an external IP and node addresses of the other family, a
//! loopback node address. The binaries are taken from next to this test executable
//! (`cargo build --workspace --bins` first).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLUSTER: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: front
  namespace: shop
spec:
  type: LoadBalancer
  clusterIP: 10.96.50.1
  clusterIPs: [10.96.50.1]
  externalTrafficPolicy: Local
  healthCheckNodePort: 32050
  externalIPs: [198.51.100.7, '2001:db8::7']
  loadBalancerSourceRanges: [192.0.2.0/24]
  ports:
    - name: http
      port: 80
      nodePort: 30050
status:
  loadBalancer:
    ingress:
      - ip: 203.0.113.50
      - ip: 203.0.113.51
        ipMode: Proxy
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: front-abc
  namespace: shop
  labels:
    kubernetes.io/service-name: front
addressType: IPv4
ports:
  - name: http
    port: 80
    protocol: TCP
endpoints:
  - addresses: [10.244.9.1]
    conditions: {ready: true}
    nodeName: node-b
";

const ADDED: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: later
  namespace: shop
spec:
  clusterIP: 10.96.50.2
  externalIPs: [198.51.100.8]
  ports:
    - name: dns
      port: 53
      protocol: UDP
";

const NODE_ARGS: [&str; 8] = [
    "--node-name",
    "node-a",
    "--node-ip",
    "192.168.1.20",
    "--node-ip",
    "2001:db8:1::20",
    "--node-ip",
    "127.0.0.1",
];

fn cluster_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("proxy-host-plan-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("shop.yaml"), CLUSTER).unwrap();
    dir
}

/// `svcnet-proxy --dry-run --show=all`, split into its four sections.
struct Sections {
    table: String,
    addresses: String,
    ipsets: String,
    iptables: String,
}

fn show_all(dir: &Path) -> Sections {
    let out = Command::new(svcnet_tests::bins::binary("svcnet-proxy"))
        .args(["--manifests", dir.to_str().unwrap()])
        .args(NODE_ARGS)
        .args(["--dry-run", "--show=all"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("running svcnet-proxy");
    assert!(
        out.status.success(),
        "svcnet-proxy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rest = text
        .strip_prefix("# IPVS table (ipvsadm -Ln)\n")
        .unwrap_or_else(|| panic!("no table heading:\n{text}"));
    let (table, rest) = rest
        .split_once("\n# kube-ipvs0 addresses\n")
        .expect("addresses");
    let (addresses, rest) = rest
        .split_once("\n# ipsets (ipset save)\n")
        .expect("ipsets");
    let (ipsets, iptables) = rest.split_once("\n# iptables rules\n").expect("iptables");
    Sections {
        table: table.to_string(),
        addresses: addresses.to_string(),
        ipsets: ipsets.to_string(),
        iptables: iptables.to_string(),
    }
}

fn assert_lines(text: &str, present: &[&str], absent: &[&str]) {
    for l in present {
        assert!(text.lines().any(|x| x == *l), "{l:?} missing in\n{text}");
    }
    for a in absent {
        assert!(!text.contains(a), "{a:?} present in\n{text}");
    }
}

#[test]
fn svcnet_proxy_dry_run_shows_addresses_ipsets_and_iptables() {
    let dir = cluster_dir("proxy");
    let s = show_all(&dir);

    // The table: the Proxy-mode ingress IP, the IPv6 external IP and the IPv6 and loopback
    // node addresses get nothing; with no endpoint on node-a, the Local entry points fall back
    // to the cluster's endpoints.
    for vs in [
        "TCP  10.96.50.1:80 rr",
        "TCP  198.51.100.7:80 rr",
        "TCP  203.0.113.50:80 rr",
        "TCP  192.168.1.20:30050 rr",
    ] {
        let block: Vec<&str> = s.table.lines().skip_while(|l| *l != vs).take(2).collect();
        assert_eq!(block.len(), 2, "{vs:?} missing in\n{}", s.table);
        assert!(
            block[1].starts_with("  -> 10.244.9.1:80 "),
            "{vs}: {block:?}"
        );
    }
    for absent in ["203.0.113.51", "2001:db8::7", "2001:db8:1::20", "127.0.0.1"] {
        assert!(!s.table.contains(absent), "{absent} in\n{}", s.table);
    }

    assert_eq!(
        s.addresses,
        "10.96.50.1/32 dev kube-ipvs0\n198.51.100.7/32 dev kube-ipvs0\n203.0.113.50/32 dev kube-ipvs0\n"
    );
    assert_lines(
        &s.ipsets,
        &[
            "create KUBE-CLUSTER-IP hash:ip,port family inet",
            "add KUBE-CLUSTER-IP 10.96.50.1,tcp:80",
            "add KUBE-EXTERNAL-IP 198.51.100.7,tcp:80",
            "add KUBE-EXTERNAL-IP-LOCAL 198.51.100.7,tcp:80",
            "add KUBE-LOAD-BALANCER 203.0.113.50,tcp:80",
            "add KUBE-LOAD-BALANCER-LOCAL 203.0.113.50,tcp:80",
            "add KUBE-LOAD-BALANCER-FW 203.0.113.50,tcp:80",
            "add KUBE-LOAD-BALANCER-SOURCE-CIDR 203.0.113.50,tcp:80,192.0.2.0/24",
            "create KUBE-NODE-PORT-TCP bitmap:port range 0-65535",
            "add KUBE-NODE-PORT-TCP 30050",
            "add KUBE-NODE-PORT-LOCAL-TCP 30050",
            "add KUBE-HEALTH-CHECK-NODE-PORT 32050",
            "add KUBE-IPVS-IPS 203.0.113.50",
        ],
        &[
            "203.0.113.51",
            "2001:db8::7",
            "KUBE-6-",
            "KUBE-LOOP-BACK 10.244.9.1",
        ],
    );
    assert_lines(
        &s.iptables,
        &[
            "# iptables-restore --noflush",
            "*nat",
            "-A KUBE-SOURCE-RANGES-FIREWALL -j DROP",
            "COMMIT",
        ],
        &["ip6tables"],
    );

    // The default stays the table alone, byte for byte the table section.
    let out = Command::new(svcnet_tests::bins::binary("svcnet-proxy"))
        .args(["--manifests", dir.to_str().unwrap()])
        .args(NODE_ARGS)
        .arg("--dry-run")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), s.table);
    let _ = std::fs::remove_dir_all(&dir);
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let code = raw.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, raw.split_once("\r\n\r\n")?.1.to_string()))
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn agentctl_dry_run_serves_the_same_host_plan_and_follows_changes() {
    let dir = cluster_dir("agent");
    let expected = show_all(&dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = format!("127.0.0.1:{port}");
    let child = Command::new(svcnet_tests::bins::binary("agentctl"))
        .args(["run", "--proxy", "--dry-run", "--admin", &admin])
        .args(["--manifests", dir.to_str().unwrap()])
        .args(NODE_ARGS)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn agentctl run");
    let _agent = Agent(child);

    // The agent renders with the same functions from the same inputs: the same text.
    let get = |path: &str| {
        wait_for(path, || {
            http_get(&admin, path).filter(|(code, body)| *code == 200 && body != "no sync yet\n")
        })
        .1
    };
    assert_eq!(get("/proxy/addresses"), expected.addresses);
    assert_eq!(get("/proxy/ipsets"), expected.ipsets);
    assert_eq!(get("/proxy/iptables"), expected.iptables);

    // A new Service shows up in the addresses and ipsets without a restart.
    std::fs::write(dir.join("later.yaml"), ADDED).unwrap();
    wait_for("the added service in /proxy/ipsets", || {
        let (_, ipsets) = http_get(&admin, "/proxy/ipsets")?;
        let (_, addrs) = http_get(&admin, "/proxy/addresses")?;
        (ipsets
            .lines()
            .any(|l| l == "add KUBE-EXTERNAL-IP 198.51.100.8,udp:53")
            && ipsets
                .lines()
                .any(|l| l == "add KUBE-CLUSTER-IP 10.96.50.2,udp:53")
            && addrs.lines().any(|l| l == "198.51.100.8/32 dev kube-ipvs0"))
        .then_some(())
    });
    let updated = show_all(&dir);
    assert_eq!(get("/proxy/ipsets"), updated.ipsets);
    let _ = std::fs::remove_dir_all(&dir);
}
