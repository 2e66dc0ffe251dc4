//! Proves the user-mode-linux harness: the guest kernel has IPVS (programmed with ipvsadm), dummy links, module
//! autoloading, iptables-legacy with the ipvs match, and a pod network of namespaces whose servers are reachable
//! through IPVS virtual servers (cluster IP, NodePort on a node address, hairpin with MASQUERADE). The proxy's own
//! tests (vm_proxy.rs) rely on exactly this plumbing.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, ensure};
use svcnet_tests::vm::guest::{self, PodNetwork, run};
use svcnet_tests::vm::{self, Check, Vm};

/// `ipvsadm -A` + `-Ln` work (ip_vs autoloads through the generic netlink family lookup) and a dummy link can be
/// created, addressed and listed.
fn ipvsadm_and_dummy_link() -> anyhow::Result<()> {
    run("ipvsadm", &["-A", "-t", "10.0.0.1:80", "-s", "rr"])?;
    run(
        "ipvsadm",
        &[
            "-a",
            "-t",
            "10.0.0.1:80",
            "-r",
            "10.1.0.1:8080",
            "-m",
            "-w",
            "3",
        ],
    )?;
    let table = guest::ipvsadm_table()?;
    ensure!(
        table
            == [
                "TCP 10.0.0.1:80 rr",
                "TCP 10.0.0.1:80 rr -> 10.1.0.1:8080 Masq 3"
            ],
        "unexpected ipvsadm -Ln table: {table:?}"
    );
    run("ipvsadm", &["-C"])?;
    ensure!(
        guest::ipvsadm_table()?.is_empty(),
        "ipvsadm -C left entries"
    );

    guest::add_dummy_link("kube-ipvs0", "10.96.0.1/32")?;
    let link = run("ip", &["-br", "addr", "show", "dev", "kube-ipvs0"])?;
    ensure!(link.contains("10.96.0.1/32"), "kube-ipvs0: {link}");
    run("ip", &["link", "del", "kube-ipvs0"])?;
    Ok(())
}

/// Every scheduler kube-proxy offers loads (scheduler modules autoload via /proc/sys/kernel/modprobe).
fn schedulers_autoload() -> anyhow::Result<()> {
    for (i, sched) in [
        "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh",
    ]
    .iter()
    .enumerate()
    {
        let vip = format!("10.0.1.{}:80", i + 1);
        run("ipvsadm", &["-A", "-t", &vip, "-s", sched])
            .with_context(|| format!("scheduler {sched}"))?;
    }
    let table = guest::ipvsadm_table()?;
    ensure!(table.len() == 11, "expected 11 services: {table:?}");
    run("ipvsadm", &["-C"])?;
    Ok(())
}

/// The kernel settings kube-proxy needs exist and can be set.
fn ipvs_sysctls() -> anyhow::Result<()> {
    // ip_vs is loaded by the checks above, or now.
    run("ipvsadm", &["-Ln"])?;
    for (path, value) in [
        ("net/ipv4/vs/conntrack", "1"),
        ("net/ipv4/vs/expire_nodest_conn", "1"),
        ("net/ipv4/vs/expire_quiescent_template", "1"),
        ("net/ipv4/ip_forward", "1"),
    ] {
        guest::sysctl(path, value)?;
        ensure!(guest::read_sysctl(path)? == value, "{path} did not stick");
    }
    Ok(())
}

/// Backends in network namespaces on a bridge, reachable through ipvsadm-programmed virtual servers: round robin
/// over a cluster IP from the node, a NodePort from a pod, and a hairpin connection (pod → VIP → itself) once
/// MASQUERADE is in place. This is the plumbing the proxy traffic test uses.
fn pod_network_through_ipvs() -> anyhow::Result<()> {
    let mut net = PodNetwork::new("cbr0", Ipv4Addr::new(10, 244, 1, 1), 24)?;
    for (name, last) in [("pod-a", 10), ("pod-b", 11), ("pod-c", 12)] {
        net.add_pod(name, Ipv4Addr::new(10, 244, 1, last))?;
    }
    guest::add_dummy_link("kube-ipvs0", "10.96.10.10/32")?;
    guest::add_dummy_link("eth0", "192.168.1.10/24")?;
    for vip in ["10.96.10.10:80", "192.168.1.10:30080"] {
        run("ipvsadm", &["-A", "-t", vip, "-s", "rr"])?;
        for pod in &net.pods {
            run(
                "ipvsadm",
                &["-a", "-t", vip, "-r", &pod.addr().to_string(), "-m"],
            )?;
        }
    }
    guest::sysctl("net/ipv4/vs/conntrack", "1")?;

    // Cluster IP from the node: rr gives each backend exactly its share.
    let vip = SocketAddr::from(([10, 96, 10, 10], 80));
    let mut hits: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        *hits
            .entry(guest::http_get(vip, "/name", Duration::from_secs(2))?)
            .or_default() += 1;
    }
    ensure!(
        hits.len() == 3 && hits.values().all(|&n| n == 10),
        "rr over 3 backends, 30 requests: {hits:?}"
    );

    // MASQUERADE for IPVS traffic from the pod network makes hairpin connections (pod → VIP → itself) work.
    run(
        "iptables-legacy",
        &[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-m",
            "ipvs",
            "--ipvs",
            "-s",
            "10.244.1.0/24",
            "-j",
            "MASQUERADE",
        ],
    )?;
    // NodePort on the node address from a pod: rr, each backend twice, including pod-b itself.
    let urls: Vec<String> = (0..6)
        .map(|_| "http://192.168.1.10:30080/name".to_owned())
        .collect();
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for answer in net.pod("pod-b").curl_many(&urls)? {
        let name = answer.map_err(|e| anyhow::anyhow!("NodePort from pod-b failed: {e}"))?;
        *served.entry(name).or_default() += 1;
    }
    ensure!(
        served.len() == 3 && served.values().all(|&n| n == 2),
        "NodePort from pod-b, 6 requests: {served:?}"
    );

    // Hairpin through the cluster IP: pod-a reaches itself.
    let urls: Vec<String> = (0..3)
        .map(|_| "http://10.96.10.10/name".to_owned())
        .collect();
    let answers = net.pod("pod-a").curl_many(&urls)?;
    let names: Vec<String> = answers
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("hairpin through the cluster IP failed: {e}"))?;
    ensure!(
        names.iter().any(|n| n == "pod-a"),
        "pod-a never reached itself through the VIP: {names:?}"
    );

    run("iptables-legacy", &["-t", "nat", "-F", "POSTROUTING"])?;
    run("ipvsadm", &["-C"])?;
    run("ip", &["link", "del", "kube-ipvs0"])?;
    run("ip", &["link", "del", "eth0"])?;
    Ok(())
}

#[test]
fn kernel_harness() {
    vm::run_suite(
        "kernel_harness",
        Vm::new().timeout(Duration::from_secs(120)),
        &[
            Check::new("ipvsadm_and_dummy_link", ipvsadm_and_dummy_link),
            Check::new("schedulers_autoload", schedulers_autoload),
            Check::new("ipvs_sysctls", ipvs_sysctls),
            Check::new("pod_network_through_ipvs", pod_network_through_ipvs),
        ],
    );
}

/// `tests/vm/run.sh -n` (the IPVS benchmark's API start uses it): the guest's `eth0`, on a host
/// tap device, has its address and reaches a server listening on the host end.
#[test]
fn guest_network_over_a_host_tap() {
    if vm::in_guest() || !vm::uml_available() {
        return;
    }
    let tap = match vm::HostTap::create("svcnet-sanity", "10.232.0.1/30") {
        Ok(tap) => tap,
        Err(e) => {
            eprintln!("SKIPPED guest_network_over_a_host_tap: no tap device on this host ({e:#})");
            return;
        }
    };
    let listener = std::net::TcpListener::bind("10.232.0.1:0").expect("listening on the tap");
    let port = listener.local_addr().expect("local address").port();
    let server = std::thread::spawn(move || {
        use std::io::Write;
        let (mut conn, peer) = listener.accept().expect("a connection from the guest");
        conn.write_all(format!("hello {}\n", peer.ip()).as_bytes())
            .expect("answering");
    });
    let script =
        format!("ip -br addr show dev eth0 && exec 3<>/dev/tcp/10.232.0.1/{port} && cat <&3");
    let out = Vm::new()
        .timeout(Duration::from_secs(60))
        .network(tap.name(), "10.232.0.2/30")
        .run(
            std::path::Path::new("/bin/bash"),
            &["-c".into(), script.into()],
        )
        .expect("booting the guest");
    assert!(
        out.success(),
        "guest failed: {}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout.contains("10.232.0.2/30"),
        "eth0 without its address: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains("hello 10.232.0.2"),
        "no answer from the host end: {}",
        out.stdout
    );
    server.join().expect("the host server");
}
