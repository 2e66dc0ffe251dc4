//! Benchmark (ignored; run by `bench/proxy-start/run.sh`): a cold start of `svcnet-proxy --dry-run`
//! against a 10,000-service cluster served by the fake API server of the test support code (a test
//! double speaking real HTTP list/watch, paginated lists with the client's `limit=500`), issue #16.
//!
//! The cluster is the IPVS benchmark's: `SERVICES` Services (default 10,000) with one TCP port,
//! each with one EndpointSlice of `ENDPOINTS_PER_SERVICE` (default 10) ready endpoints spread
//! over 100 nodes, plus the proxy's own Node. Each run starts the binary, which lists Services,
//! EndpointSlices and its Node, builds the desired IPVS table, ipsets and iptables rules and
//! prints the plan; the phases are read from its log: process start → "source synced" (start-up,
//! lists, parsing, projection into the cache) → exit (desired state and the rendered plan). Prints each run and the median of `RUNS` (default 3).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use svcnet_tests::fake_apiserver::FakeApiServer;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn service(i: usize) -> Value {
    let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": format!("ns-{}", i % 100),
                     "uid": format!("uid-svc-{i}")},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ipFamilies": ["IPv4"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
                 "selector": {"app": format!("svc-{i}")}}
    })
}

fn slice(i: usize, endpoints: usize) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-abcde"), "namespace": format!("ns-{}", i % 100),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}"),
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": (0..endpoints).map(|e| {
            let n = i * endpoints + e;
            json!({
                "addresses": [format!("10.{}.{}.{}", 128 + n / 65536, (n / 256) % 256, n % 256)],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": format!("node-{}", n % 100),
                "targetRef": {"kind": "Pod", "namespace": format!("ns-{}", i % 100),
                              "name": format!("svc-{i}-{e}")}
            })
        }).collect::<Vec<_>>()
    })
}

fn node() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-0", "labels": {"topology.kubernetes.io/zone": "zone-a"}},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.10"}]}
    })
}

/// One cold start: time to "source synced", time to exit, lines of the plan.
fn cold_start(kubeconfig: &str) -> (Duration, Duration, usize) {
    let started = Instant::now();
    let mut child = Command::new(svcnet_tests::bins::binary("svcnet-proxy"))
        .args([
            "--kubeconfig",
            kubeconfig,
            "--dry-run",
            "--show=all",
            "--node-name",
            "node-0",
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start svcnet-proxy");
    let stderr = child.stderr.take().expect("piped stderr");
    let log = std::thread::spawn(move || {
        let mut synced = None;
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if synced.is_none() && line.contains("source synced") {
                synced = Some(started.elapsed());
            }
            lines.push(line);
        }
        (synced, lines)
    });
    let stdout = child.stdout.take().expect("piped stdout");
    let plan_lines = BufReader::new(stdout).lines().count();
    let status = child.wait().expect("wait for svcnet-proxy");
    let ended = started.elapsed();
    let (synced, lines) = log.join().expect("log reader");
    assert!(
        status.success(),
        "svcnet-proxy failed:\n{}",
        lines.join("\n")
    );
    let synced = synced.unwrap_or_else(|| panic!("no `source synced`:\n{}", lines.join("\n")));
    (synced, ended, plan_lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by bench/proxy-start/run.sh"]
async fn proxy_cold_start_from_the_api() {
    let services = env_usize("SERVICES", 10_000);
    let endpoints = env_usize("ENDPOINTS_PER_SERVICE", 10);
    let runs = env_usize("RUNS", 3);
    let fake = FakeApiServer::start().await.expect("fake API server");
    let filled = Instant::now();
    fake.apply(node());
    for i in 0..services {
        fake.apply(service(i));
        fake.apply(slice(i, endpoints));
    }
    println!(
        "cluster: {services} services, {} endpoints, in the fake API server ({} ms to fill)",
        services * endpoints,
        filled.elapsed().as_millis()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig_yaml()).expect("write kubeconfig");
    let kc = kubeconfig.display().to_string();
    let mut results = Vec::new();
    for run in 1..=runs {
        let (synced, ended, plan) = tokio::task::block_in_place(|| cold_start(&kc));
        let lists = fake
            .requests()
            .iter()
            .filter(|r| !r.is_watch() && r.param("limit").is_some())
            .count();
        println!(
            "run {run}: start to source synced (lists, parsing, cache) {} ms; to plan printed (desired \
             state, ipsets, iptables) {} ms; total {} ms; plan {plan} lines; paged list requests so far {lists}",
            synced.as_millis(),
            (ended - synced).as_millis(),
            ended.as_millis()
        );
        results.push((synced, ended));
    }
    let mut synced: Vec<Duration> = results.iter().map(|r| r.0).collect();
    let mut total: Vec<Duration> = results.iter().map(|r| r.1).collect();
    synced.sort();
    total.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    println!(
        "median of {runs}: source synced {} ms, programmed plan {} ms (target < 3000 ms)",
        median(&synced).as_millis(),
        median(&total).as_millis()
    );
}
