//! `agentctl get` and `agentctl env` through the Kubernetes source (`--kubeconfig`), against the fake API server
//! of the test support code (a test double speaking real HTTP list/watch).

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use svcnet_tests::fake_apiserver::FakeApiServer;

fn agentctl() -> PathBuf {
    svcnet_tests::bins::binary("agentctl")
}

fn service(ns: &str, name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
                 "selector": {"app": name}}
    })
}

fn slice(ns: &str, name: &str, service: &str, ips: &[&str]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": ips.iter().map(|ip| json!({
            "addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-a"
        })).collect::<Vec<_>>()
    })
}

async fn agentctl_output(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(agentctl())
            .args(&args)
            .output()
            .expect("running agentctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_env_through_a_kubeconfig() {
    let fake = FakeApiServer::start().await.expect("fake API server");
    fake.apply(service("default", "kubernetes", "10.96.0.1"));
    fake.apply(service("shop", "cart", "10.96.7.7"));
    fake.apply(slice(
        "shop",
        "cart-x1",
        "cart",
        &["10.244.3.3", "10.244.3.4"],
    ));
    let dir = std::env::temp_dir().join(format!("agentctl-kube-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig_yaml()).unwrap();
    let kc = kubeconfig.display().to_string();

    let (ok, out, err) = agentctl_output(
        ["get", "services", "-A", "--kubeconfig", &kc]
            .map(String::from)
            .to_vec(),
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "NAMESPACE   NAME         TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)\n\
         default     kubernetes   ClusterIP   10.96.0.1    <none>        80/TCP\n\
         shop        cart         ClusterIP   10.96.7.7    <none>        80/TCP\n"
    );

    let (ok, out, err) = agentctl_output(
        ["get", "endpoints", "-n", "shop", "--kubeconfig", &kc]
            .map(String::from)
            .to_vec(),
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "NAME      ENDPOINTS\ncart      10.244.3.3:8080,10.244.3.4:8080\n"
    );

    let (ok, out, err) = agentctl_output(
        ["env", "-n", "shop", "--kubeconfig", &kc]
            .map(String::from)
            .to_vec(),
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("CART_SERVICE_HOST=10.96.7.7\n"), "{out}");
    assert!(out.contains("KUBERNETES_SERVICE_HOST=10.96.0.1\n"), "{out}");
    // The agent asked the API server for lists (and no writes).
    assert!(fake.requests().iter().all(|r| r.method == "GET"));
    std::fs::remove_dir_all(&dir).ok();
}
