//! The real `svcnet-proxy` binary on a real kernel (user-mode-linux guest) carrying traffic: backends are busybox
//! HTTP servers in network namespaces on a bridge, the cluster is a generated `--manifests` directory pointing at
//! them. Checked: the programmed table, round robin over a cluster IP and a NodePort, session affinity, a hairpin
//! connection (pod → VIP → itself, which needs the proxy's own sysctls and MASQUERADE), an endpoint change, a
//! removed service that stops answering at once, the health-check node port of an `externalTrafficPolicy: Local`
//! load balancer, a proxy restart under continuous traffic with no failed request, and `loadBalancerSourceRanges`
//! filtering by the proxy's host rules.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use svcnet_core::ipvs::host::{HostExtras, KernelHost, SourceRanges};
use svcnet_core::ipvs::run::HostSetup;
use svcnet_core::ipvs::{DesiredState, NodeInfo, ProxyConfig};
use svcnet_core::model::Protocol;
use svcnet_tests::vm::cluster::{self, ServiceSpec};
use svcnet_tests::vm::guest::{self, Background, PodNetwork, run};
use svcnet_tests::vm::{self, Check};

const MANIFESTS: &str = "/tmp/svcnet-cluster";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const HEALTHZ: &str = "127.0.0.1:10256";
/// The health-check node port of the `lb-local` service.
const HEALTH_CHECK_PORT: u16 = 31999;
/// Set (to anything) to capture all TCP traffic in the guest with tcpdump and show it in failure diagnostics.
const TCPDUMP: &str = "SVCNET_VM_TCPDUMP";

fn pod_ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, last)
}

/// The test cluster (all services on node-a, endpoints pod-a/b/c = 10.244.1.10/11/12 port 8080).
fn services() -> Vec<ServiceSpec> {
    let abc = [pod_ip(10), pod_ip(11), pod_ip(12)];
    let mut sticky = ServiceSpec::cluster_ip("sticky", Ipv4Addr::new(10, 96, 10, 13), &abc);
    sticky.client_ip_affinity = Some(600);
    vec![
        ServiceSpec::cluster_ip("web", Ipv4Addr::new(10, 96, 10, 10), &abc),
        ServiceSpec::cluster_ip("web-np", Ipv4Addr::new(10, 96, 10, 12), &abc)
            .with_node_port(30080),
        sticky,
        ServiceSpec::cluster_ip("doomed", Ipv4Addr::new(10, 96, 10, 20), &[pod_ip(10)]),
    ]
}

fn service(name: &str) -> ServiceSpec {
    services()
        .into_iter()
        .find(|s| s.name == name)
        .expect("known service")
}

/// Everything the checks share: the pod network and the running proxy.
struct Fixture {
    net: PodNetwork,
    proxy: Option<Background>,
    tcpdump: Option<Background>,
}

static FIXTURE: Mutex<Option<Fixture>> = Mutex::new(None);

fn fixture() -> anyhow::Result<MutexGuard<'static, Option<Fixture>>> {
    let guard = FIXTURE.lock().unwrap_or_else(|e| e.into_inner());
    ensure!(guard.is_some(), "the setup check failed; nothing to test");
    Ok(guard)
}

fn start_proxy() -> anyhow::Result<Background> {
    let bin = std::env::var(vm::PROXY_BIN).context("SVCNET_PROXY_BIN not set by the host")?;
    Background::spawn(
        "svcnet-proxy",
        &bin,
        &["--manifests", MANIFESTS, "--node-name", "node-a"],
    )
}

fn proxy_log(f: &Fixture) -> String {
    f.proxy.as_ref().map(Background::log).unwrap_or_default()
}

/// Kernel state for a failure message: iptables (legacy), ipsets, IPVS connections, conntrack, the network
/// stack's counters, links with their drop counters, the pods' neighbour tables (the gateway's MAC they use),
/// the proxy's log, and the packet capture if [`TCPDUMP`] is set.
fn diagnose(f: &Fixture) -> String {
    let show =
        |program: &str, args: &[&str]| run(program, args).unwrap_or_else(|e| format!("{e:#}"));
    let mut neighbours = format!("gateway MAC {}\n", f.net.gateway_mac());
    for pod in &f.net.pods {
        let table = pod
            .exec("ip", &["neigh", "show"])
            .unwrap_or_else(|e| format!("{e:#}\n"));
        neighbours.push_str(&format!("{}: {table}", pod.name));
    }
    format!(
        "--- iptables-legacy-save -c\n{}--- ipset list -t\n{}--- ipvsadm -Lnc\n{}--- conntrack\n{}\
         --- nstat -a\n{}--- ip -s -s link\n{}--- neighbours\n{}--- proxy log\n{}--- tcpdump\n{}",
        show("iptables-legacy-save", &["-c"]),
        show("ipset", &["list", "-t"]),
        show("ipvsadm", &["-Lnc"]),
        std::fs::read_to_string("/proc/net/nf_conntrack").unwrap_or_default(),
        show("nstat", &["-a"]),
        show("ip", &["-s", "-s", "link"]),
        neighbours,
        proxy_log(f),
        f.tcpdump.as_ref().map(Background::log).unwrap_or_default(),
    )
}

/// Waits until ipvsadm shows `vip` with `dests` real servers of weight > 0.
fn wait_for_service(vip: &str, dests: usize, within: Duration) -> anyhow::Result<Duration> {
    guest::wait_until(&format!("{vip} with {dests} real servers"), within, || {
        let table = guest::ipvsadm_table()?;
        let prefix = format!("TCP {vip} ");
        let live = table
            .iter()
            .filter(|l| l.starts_with(&prefix) && l.contains(" -> ") && !l.ends_with(" 0"))
            .count();
        Ok(live == dests)
    })
}

fn count_answers(addr: SocketAddr, n: usize) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut hits = BTreeMap::new();
    for i in 0..n {
        let name = guest::http_get(addr, "/name", Duration::from_secs(2))
            .with_context(|| format!("request {i} to {addr}"))?;
        *hits.entry(name).or_default() += 1;
    }
    Ok(hits)
}

fn even_split(hits: &BTreeMap<String, usize>, backends: usize, each: usize) -> bool {
    hits.len() == backends && hits.values().all(|&n| n == each)
}

/// Pod network, node address, manifests, and the proxy started on them; waits for the first sync.
fn setup() -> anyhow::Result<()> {
    let mut net = PodNetwork::new("cbr0", Ipv4Addr::new(10, 244, 1, 1), 24)?;
    let tcpdump = if std::env::var_os(TCPDUMP).is_some() {
        // Debugging aid (tcpdump is not a test dependency): every TCP packet on every link, in the diagnostics.
        Some(Background::spawn(
            "tcpdump",
            "tcpdump",
            &["-i", "any", "-nn", "-tttt", "-l", "tcp and not port 10256"],
        )?)
    } else {
        None
    };
    for (name, last) in [("pod-a", 10), ("pod-b", 11), ("pod-c", 12)] {
        net.add_pod(name, pod_ip(last))?;
    }
    guest::add_dummy_link("eth0", &format!("{NODE_IP}/24"))?;
    let dir = Path::new(MANIFESTS);
    std::fs::create_dir_all(dir)?;
    cluster::write_node(dir, "node-a", NODE_IP)?;
    for spec in services() {
        spec.write_to(dir)?;
    }
    // This kernel has no nf_tables ip/inet families and no rules yet: the proxy's detection prefers
    // iptables-nft on that tie (as kube-proxy's wrapper does) and must find by probing that only
    // iptables-legacy can change rules here (checked below: the rules show up in iptables-legacy-save).
    // The proxy must set these itself; start from the kernel's defaults (PodNetwork turned forwarding on).
    guest::sysctl("net/ipv4/ip_forward", "0")?;
    let mut proxy = start_proxy()?;
    let waited = wait_for_service("10.96.10.10:80", 3, Duration::from_secs(20)).map_err(|e| {
        let alive = proxy.is_running();
        e.context(format!("proxy running: {alive}; log:\n{}", proxy.log()))
    })?;
    println!(
        "  proxy programmed the table {} ms after start",
        waited.as_millis()
    );
    // The proxy applies sysctls, ipsets and iptables rules right after its first IPVS sync; traffic checks start
    // once they are in place (its chains and the jumps into them, the filter INPUT jump being the last one it
    // inserts) and /healthz answers.
    let ready = guest::wait_until(
        "the proxy's iptables rules, ipsets and /healthz",
        Duration::from_secs(20),
        || {
            let rules = run("iptables-legacy-save", &[])?;
            let loop_back = run("ipset", &["list", "KUBE-LOOP-BACK"]).unwrap_or_default();
            Ok(rules.contains("-A KUBE-POSTROUTING")
                && rules
                    .contains("-A POSTROUTING -m comment --comment kubernetes-postrouting-rules")
                && rules.contains("-A INPUT -m comment --comment kubernetes-ipvs-access-filter")
                && loop_back.contains("10.244.1.10,tcp:8080,10.244.1.10")
                && guest::http_get(HEALTHZ.parse()?, "/healthz", Duration::from_millis(300))
                    .is_ok())
        },
    )
    .map_err(|e| e.context(format!("proxy log:\n{}", proxy.log())))?;
    println!(
        "  host rules and /healthz ready {} ms later",
        ready.as_millis()
    );
    *FIXTURE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Fixture {
        net,
        proxy: Some(proxy),
        tcpdump,
    });
    Ok(())
}

/// The table and the bound addresses the proxy programmed, and the kernel settings it applied.
fn programmed_table() -> anyhow::Result<()> {
    let guard = fixture()?;
    let f = guard.as_ref().expect("checked");
    let table = guest::ipvsadm_table()?;
    let mut missing = Vec::new();
    for want in [
        "TCP 10.96.10.10:80 rr -> 10.244.1.10:8080 Masq 1",
        "TCP 10.96.10.10:80 rr -> 10.244.1.11:8080 Masq 1",
        "TCP 10.96.10.10:80 rr -> 10.244.1.12:8080 Masq 1",
        "TCP 10.96.10.12:80 rr -> 10.244.1.12:8080 Masq 1",
        "TCP 192.168.1.10:30080 rr -> 10.244.1.10:8080 Masq 1",
        "TCP 10.96.10.13:80 rr persistent 600 -> 10.244.1.11:8080 Masq 1",
        "TCP 10.96.10.20:80 rr -> 10.244.1.10:8080 Masq 1",
    ] {
        if !table.iter().any(|l| l == want) {
            missing.push(want);
        }
    }
    ensure!(missing.is_empty(), "missing {missing:#?} in {table:#?}");
    let bound = run("ip", &["-4", "-o", "addr", "show", "dev", "kube-ipvs0"])?;
    for vip in [
        "10.96.10.10/32",
        "10.96.10.12/32",
        "10.96.10.13/32",
        "10.96.10.20/32",
    ] {
        ensure!(bound.contains(vip), "{vip} not on kube-ipvs0: {bound}");
    }
    ensure!(
        !bound.contains("192.168.1.10"),
        "the node address must not be bound to kube-ipvs0: {bound}"
    );
    let mut settings = Vec::new();
    for path in ["net/ipv4/ip_forward", "net/ipv4/vs/conntrack"] {
        settings.push((path, guest::read_sysctl(path)?));
    }
    ensure!(
        settings.iter().all(|(_, v)| v == "1"),
        "kernel settings the proxy should have applied: {settings:?}\nproxy log:\n{}",
        proxy_log(f)
    );
    Ok(())
}

/// Round robin over the cluster IP and over the NodePort, from the node and from a pod.
fn round_robin() -> anyhow::Result<()> {
    let guard = fixture()?;
    let f = guard.as_ref().expect("checked");
    let vip = SocketAddr::from(([10, 96, 10, 10], 80));
    let hits = count_answers(vip, 30).with_context(|| diagnose(f))?;
    ensure!(
        even_split(&hits, 3, 10),
        "cluster IP from the node, 30 requests: {hits:?}"
    );
    let np = SocketAddr::from((NODE_IP, 30080));
    let hits = count_answers(np, 30)?;
    ensure!(
        even_split(&hits, 3, 10),
        "NodePort from the node, 30 requests: {hits:?}"
    );

    // From a pod (forwarded through the node): pod-b asks the cluster IP and the NodePort, 3 times each.
    let mut urls: Vec<String> = vec!["http://10.96.10.10/name".into(); 3];
    urls.extend(vec![format!("http://{NODE_IP}:30080/name"); 3]);
    let answers = f.net.pod("pod-b").curl_many(&urls)?;
    let mut hits: BTreeMap<String, usize> = BTreeMap::new();
    for (url, a) in urls.iter().zip(answers) {
        let name = a.map_err(|e| anyhow::anyhow!("{url} from pod-b: {e}\n{}", diagnose(f)))?;
        *hits.entry(name).or_default() += 1;
    }
    ensure!(even_split(&hits, 3, 2), "from pod-b: {hits:?}");
    Ok(())
}

/// `sessionAffinity: ClientIP`: every request of one client lands on the same backend.
fn session_affinity() -> anyhow::Result<()> {
    let _guard = fixture()?;
    let hits = count_answers(SocketAddr::from(([10, 96, 10, 13], 80)), 12)?;
    ensure!(
        hits.len() == 1,
        "ClientIP affinity spread one client over {hits:?}"
    );
    Ok(())
}

/// A pod reaches itself through a service (pod → VIP → same pod): needs `ip_forward`, `vs/conntrack` and
/// MASQUERADE of hairpin traffic, all of which the proxy must set up.
fn hairpin() -> anyhow::Result<()> {
    let guard = fixture()?;
    let f = guard.as_ref().expect("checked");
    let urls: Vec<String> = vec!["http://10.96.10.10/name".into(); 3];
    let answers = f.net.pod("pod-a").curl_many(&urls)?;
    let mut names = Vec::new();
    for a in answers {
        names.push(a.map_err(|e| {
            let nat = run("iptables-legacy-save", &["-t", "nat"]).unwrap_or_else(|e| e.to_string());
            anyhow::anyhow!(
                "pod-a → 10.96.10.10 failed: {e}\nnat table:\n{nat}\nproxy log:\n{}",
                proxy_log(f)
            )
        })?);
    }
    ensure!(
        names.iter().any(|n| n == "pod-a"),
        "rr over 3 backends never chose pod-a itself: {names:?}"
    );
    Ok(())
}

/// Changing a service's endpoints in its manifest reaches the kernel quickly, and traffic follows.
fn endpoint_change() -> anyhow::Result<()> {
    let _guard = fixture()?;
    let mut web = service("web");
    web.endpoints = vec![pod_ip(10), pod_ip(11)];
    web.write_to(Path::new(MANIFESTS))?;
    let took = wait_for_service("10.96.10.10:80", 2, Duration::from_secs(5))?;
    println!(
        "  endpoint removal visible in the kernel after {} ms",
        took.as_millis()
    );
    let hits = count_answers(SocketAddr::from(([10, 96, 10, 10], 80)), 10)?;
    ensure!(
        even_split(&hits, 2, 5) && !hits.contains_key("pod-c"),
        "after removing pod-c: {hits:?}"
    );
    web.endpoints.push(pod_ip(12));
    web.write_to(Path::new(MANIFESTS))?;
    wait_for_service("10.96.10.10:80", 3, Duration::from_secs(5))?;
    Ok(())
}

/// Deleting a service's manifest makes its cluster IP stop answering at once.
fn removed_service_stops() -> anyhow::Result<()> {
    let _guard = fixture()?;
    let vip = SocketAddr::from(([10, 96, 10, 20], 80));
    ensure!(guest::http_get(vip, "/name", Duration::from_secs(2))? == "pod-a");
    service("doomed").remove_from(Path::new(MANIFESTS))?;
    let gone = guest::wait_until(
        "10.96.10.20:80 to stop answering",
        Duration::from_secs(5),
        || Ok(guest::http_get(vip, "/name", Duration::from_millis(200)).is_err()),
    )?;
    println!(
        "  removed service stopped answering after {} ms",
        gone.as_millis()
    );
    ensure!(
        gone < Duration::from_secs(1),
        "the removed service kept answering for {gone:?}"
    );
    let table = guest::ipvsadm_table()?;
    ensure!(
        !table.iter().any(|l| l.starts_with("TCP 10.96.10.20:80")),
        "virtual server still there: {table:#?}"
    );
    let bound = run("ip", &["-4", "-o", "addr", "show", "dev", "kube-ipvs0"])?;
    ensure!(
        !bound.contains("10.96.10.20/"),
        "address still bound: {bound}"
    );
    Ok(())
}

/// The `LoadBalancer` service `lb-local` (`externalTrafficPolicy: Local`, health-check node port
/// [`HEALTH_CHECK_PORT`]) with its one endpoint, pod-a, on node `node`. Written by hand: the generated
/// [`ServiceSpec`] has no load-balancer fields.
fn lb_local_yaml(node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: lb-local\n  namespace: default\nspec:\n  \
         type: LoadBalancer\n  clusterIP: 10.96.10.40\n  clusterIPs: [10.96.10.40]\n  \
         externalTrafficPolicy: Local\n  healthCheckNodePort: {HEALTH_CHECK_PORT}\n  ports:\n    \
         - {{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30081}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: lb-local-abcde\n  \
         namespace: default\n  labels:\n    kubernetes.io/service-name: lb-local\naddressType: IPv4\nports:\n  \
         - {{name: http, port: 8080, protocol: TCP}}\nendpoints:\n  - addresses: [{pod}]\n    \
         conditions: {{ready: true, serving: true, terminating: false}}\n    nodeName: {node}\n",
        pod = pod_ip(10),
    )
}

/// One health check as a load balancer sends it: `curl http://<node>:<port>/`; the status code, the headers and the
/// body, or `None` when nothing listens.
fn health_check(port: u16) -> anyhow::Result<Option<(u16, String, String)>> {
    let url = format!("http://{NODE_IP}:{port}/");
    let Ok(out) = run("curl", &["-s", "-i", "--max-time", "2", &url]) else {
        return Ok(None);
    };
    let (head, body) = out
        .split_once("\r\n\r\n")
        .with_context(|| format!("malformed answer from {url}: {out:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    Ok(Some((status, head.to_ascii_lowercase(), body.to_owned())))
}

/// A `LoadBalancer` service with `externalTrafficPolicy: Local`: the proxy answers its health-check node port on the
/// node address with 200 and `localEndpoints: 1` while the endpoint is on this node, 503 and 0 once the manifest puts
/// it on another node, and closes the port when the service goes.
fn health_check_node_port() -> anyhow::Result<()> {
    let guard = fixture()?;
    let f = guard.as_ref().expect("checked");
    let file = Path::new(MANIFESTS).join("default-lb-local.yaml");
    let write = |node: &str| -> anyhow::Result<()> {
        let tmp = Path::new(MANIFESTS).join(".default-lb-local.yaml.tmp");
        std::fs::write(&tmp, lb_local_yaml(node))?;
        std::fs::rename(&tmp, &file)?;
        Ok(())
    };
    let answer_with = |status: u16, within: Duration| -> anyhow::Result<(String, String)> {
        let mut last = None;
        guest::wait_until(
            &format!("{NODE_IP}:{HEALTH_CHECK_PORT} to answer {status}"),
            within,
            || {
                last = health_check(HEALTH_CHECK_PORT)?;
                Ok(last.as_ref().is_some_and(|(s, _, _)| *s == status))
            },
        )
        .map_err(|e| {
            e.context(format!(
                "last answer: {last:?}\nproxy log:\n{}",
                proxy_log(f)
            ))
        })?;
        let (_, head, body) = last.expect("checked");
        Ok((head, body))
    };

    write("node-a")?;
    let (head, body) = answer_with(200, Duration::from_secs(10))?;
    let json: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("body {body:?}"))?;
    ensure!(
        json == serde_json::json!({"service": {"namespace": "default", "name": "lb-local"},
            "localEndpoints": 1, "serviceProxyHealthy": true}),
        "body {body}"
    );
    for header in [
        "content-type: application/json",
        "x-content-type-options: nosniff",
        "x-load-balancing-endpoint-weight: 1",
    ] {
        ensure!(head.contains(header), "{header} missing in {head}");
    }

    write("node-b")?;
    let took = Instant::now();
    let (head, body) = answer_with(503, Duration::from_secs(5))?;
    println!(
        "  health check turned 503 {} ms after the endpoint moved",
        took.elapsed().as_millis()
    );
    let json: serde_json::Value = serde_json::from_str(&body)?;
    ensure!(json["localEndpoints"] == 0, "body {body}");
    ensure!(
        head.contains("x-load-balancing-endpoint-weight: 0"),
        "{head}"
    );

    std::fs::remove_file(&file)?;
    guest::wait_until(
        "the health-check node port to close",
        Duration::from_secs(5),
        || Ok(health_check(HEALTH_CHECK_PORT)?.is_none()),
    )?;
    Ok(())
}

/// Restarting the proxy (SIGTERM, start again) while a client keeps sending requests: none fails, because the
/// rules stay in the kernel and the new process adopts them.
fn restart_under_traffic() -> anyhow::Result<()> {
    let mut guard = fixture()?;
    let f = guard.as_mut().expect("checked");
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let client = {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        std::thread::spawn(move || {
            let vip = SocketAddr::from(([10, 96, 10, 10], 80));
            while !stop.load(Ordering::Relaxed) {
                match guest::http_get(vip, "/name", Duration::from_secs(2)) {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.lock().expect("lock").push(format!("{e:#}")),
                }
            }
        })
    };
    let wait_requests = |n: usize| {
        let target = ok.load(Ordering::Relaxed) + n;
        guest::wait_until("client requests", Duration::from_secs(10), || {
            Ok(ok.load(Ordering::Relaxed) >= target)
        })
    };
    let result = (|| -> anyhow::Result<()> {
        wait_requests(20)?;
        let old = f.proxy.take().context("no proxy running")?;
        let old_log = old.stop(Duration::from_secs(10));
        let before_start = ok.load(Ordering::Relaxed);
        let mut new = start_proxy()?;
        // Until the new process is healthy, and some more traffic after.
        let healthy = guest::wait_until(
            "the restarted proxy's /healthz",
            Duration::from_secs(20),
            || {
                if !new.is_running() {
                    bail!("the restarted proxy exited:\n{}", new.log());
                }
                Ok(
                    guest::http_get(HEALTHZ.parse()?, "/healthz", Duration::from_millis(300))
                        .is_ok(),
                )
            },
        );
        let log = new.log();
        f.proxy = Some(new);
        healthy.with_context(|| format!("old proxy log:\n{old_log}\nnew proxy log:\n{log}"))?;
        wait_requests(20)?;
        println!(
            "  {} requests while the proxy was down or starting",
            ok.load(Ordering::Relaxed) - before_start
        );
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    client.join().expect("client thread");
    result?;
    let failures = failures.lock().expect("lock");
    println!(
        "  {} requests succeeded, {} failed",
        ok.load(Ordering::Relaxed),
        failures.len()
    );
    ensure!(
        failures.is_empty(),
        "requests failed during the restart: {failures:#?}"
    );
    // The restarted proxy still follows changes.
    let table = guest::ipvsadm_table()?;
    ensure!(
        table
            .iter()
            .any(|l| l == "TCP 10.96.10.10:80 rr -> 10.244.1.12:8080 Masq 1"),
        "after restart: {table:#?}"
    );
    // The restart found every jump into our chains in place and inserted none twice.
    let rules = run("iptables-legacy-save", &[])?;
    for (table, chain, rule) in svcnet_core::ipvs::host::JUMPS {
        let line = format!("-A {chain} {rule}");
        let n = rules.lines().filter(|l| *l == line).count();
        ensure!(
            n == 1,
            "{table} {chain}: {n} × `{line}` after the restart:\n{rules}"
        );
    }
    Ok(())
}

/// `loadBalancerSourceRanges` filtering as rendered by the proxy's host setup, on the real kernel.
/// A service `fw` (10.96.10.30:80 → pod-a only, standing in for a load-balancer ingress, so no
/// client below is its own backend) is added, then the proxy is stopped (its IPVS table and rules
/// stay, and the VIP keeps answering), and the host setup runs in this process with a source-range
/// restriction on it that allows only pod-b: pod-c's connections are dropped in filter INPUT and
/// the node's own in filter OUTPUT, until the node's network is allowed too.
fn source_ranges_firewall() -> anyhow::Result<()> {
    let mut guard = fixture()?;
    let f = guard.as_mut().expect("checked");
    let vip = SocketAddr::from(([10, 96, 10, 30], 80));
    ServiceSpec::cluster_ip("fw", Ipv4Addr::new(10, 96, 10, 30), &[pod_ip(10)])
        .write_to(Path::new(MANIFESTS))?;
    wait_for_service("10.96.10.30:80", 1, Duration::from_secs(5))?;
    let log = f
        .proxy
        .take()
        .context("no proxy running")?
        .stop(Duration::from_secs(5));
    ensure!(!log.contains("panicked"), "the proxy panicked:\n{log}");
    guest::http_get(vip, "/name", Duration::from_secs(2))
        .context("the VIP must keep answering after the proxy stopped")?;

    let node = NodeInfo {
        node_name: Some("node-a".into()),
        local_addresses: vec![NODE_IP.into()],
    };
    let restriction = |allowed: &[&str]| -> anyhow::Result<HostExtras> {
        let allowed = allowed
            .iter()
            .map(|c| c.parse().with_context(|| format!("CIDR {c}")))
            .collect::<anyhow::Result<_>>()?;
        Ok(HostExtras {
            health_check_node_ports: [30999].into_iter().collect(),
            source_ranges: vec![SourceRanges {
                ip: vip.ip(),
                protocol: Protocol::Tcp,
                port: vip.port(),
                allowed,
            }],
            local_endpoints: None,
        })
    };
    let apply = |host: &mut KernelHost| {
        host.after_sync(&DesiredState::default(), &ProxyConfig::default(), &node)
            .map_err(|e| anyhow::anyhow!("host setup: {e}"))
    };
    let mut host = KernelHost::new();
    host.set_extras(restriction(&["10.244.1.11/32"])?);
    apply(&mut host)?;
    let urls = vec![format!("http://{vip}/name")];
    let from = |pod: &str| -> anyhow::Result<Result<String, String>> {
        Ok(f.net.pod(pod).curl_many(&urls)?.remove(0))
    };
    let b = from("pod-b")?;
    ensure!(
        b.as_deref() == Ok("pod-a"),
        "pod-b is in the source ranges: {b:?}\n{}",
        diagnose(f)
    );
    let c = from("pod-c")?;
    ensure!(
        c.is_err(),
        "pod-c is not in the source ranges but got {c:?}"
    );
    let node_get = guest::http_get(vip, "/name", Duration::from_millis(1500));
    ensure!(
        node_get.is_err(),
        "the node is not in the source ranges but got {node_get:?}"
    );
    let filter = run("iptables-legacy-save", &["-t", "filter", "-c"])?;
    ensure!(
        filter.contains("-j KUBE-IPVS-OUT-FILTER")
            && filter.contains("-A KUBE-SOURCE-RANGES-FIREWALL -j DROP")
            && filter.contains("--match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT"),
        "filter table: {filter}"
    );

    // Allowing the node's network lets the node in (source = the ingress IP itself).
    host.set_extras(restriction(&["10.244.1.11/32", "192.168.1.0/24"])?);
    // The host setup spaces its updates (200 ms); it stays pending until this one is applied.
    guest::wait_until("the host update", Duration::from_secs(2), || {
        apply(&mut host)?;
        Ok(!host.has_pending())
    })?;
    ensure!(
        !run("iptables-legacy-save", &["-t", "filter"])?.contains("-A KUBE-IPVS-OUT-FILTER -s"),
        "the node's drop rule must be gone"
    );
    guest::http_get(vip, "/name", Duration::from_secs(2))
        .context("the node is in the source ranges now")?;
    let c = from("pod-c")?;
    ensure!(c.is_err(), "pod-c is still not allowed but got {c:?}");
    Ok(())
}

fn teardown() -> anyhow::Result<()> {
    let fixture = FIXTURE.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(mut f) = fixture
        && let Some(proxy) = f.proxy.take()
    {
        let log = proxy.stop(Duration::from_secs(5));
        let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
        ensure!(panics.is_empty(), "the proxy panicked: {panics:?}");
    }
    Ok(())
}

/// The checks of the suite, in order.
fn checks() -> Vec<Check> {
    vec![
        Check::new("setup", setup),
        Check::new("programmed_table", programmed_table),
        Check::new("round_robin", round_robin),
        Check::new("session_affinity", session_affinity),
        Check::new("hairpin", hairpin),
        Check::new("endpoint_change", endpoint_change),
        Check::new("removed_service_stops", removed_service_stops),
        Check::new("health_check_node_port", health_check_node_port),
        Check::new("restart_under_traffic", restart_under_traffic),
        Check::new("source_ranges_firewall", source_ranges_firewall),
        Check::new("teardown", teardown),
    ]
}

#[test]
fn proxy_traffic_kernel() {
    vm::run_proxy_suite(
        "proxy_traffic_kernel",
        "proxy traffic",
        Duration::from_secs(180),
        &checks(),
    );
}
