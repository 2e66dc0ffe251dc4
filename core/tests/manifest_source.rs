//! The manifest directory source end to end: the demo cluster loads, endpoints are derived from
//! pods, and live edits, bad files, deletions and ConfigMap-style `..data` swaps reach the cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use svcnet_core::model::{Kind, ObjectKey};
use svcnet_core::source::{self, SourceConfig};
use svcnet_core::{CacheReader, Snapshot};

const ALL: [Kind; 4] = [Kind::Service, Kind::EndpointSlice, Kind::Pod, Kind::Node];

fn example_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// Polls the reader until `pred` holds, for at most `limit`; returns the time it took.
async fn wait_until(
    reader: &CacheReader,
    limit: Duration,
    pred: impl Fn(&Snapshot) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if pred(&reader.snapshot()) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "condition not reached within {limit:?}: {:?}",
            reader.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn ready_ips(snap: &Snapshot, ns: &str, name: &str) -> Vec<String> {
    let key = ObjectKey::new(ns, name);
    let mut ips: Vec<String> = snap
        .endpoint_slices_for(&key)
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.ready)
        .flat_map(|e| e.addresses.iter().map(|a| a.to_string()))
        .collect();
    ips.sort();
    ips
}

#[tokio::test]
async fn demo_cluster_loads_with_derived_endpoints() {
    let src = source::start(&SourceConfig::Manifests(example_dir("cluster")), &ALL)
        .await
        .unwrap();
    let snap: Arc<Snapshot> = src.reader().snapshot();
    assert!(snap.is_synced());
    assert!(src.status().problems.is_empty(), "{:?}", src.status());
    let default_svcs = snap
        .services()
        .filter(|s| &*s.key.namespace == "default")
        .count();
    assert_eq!(default_svcs, 7);
    assert_eq!(snap.service_count(), 10);
    assert_eq!(
        ready_ips(&snap, "default", "demoapp-svc"),
        vec!["10.244.1.10", "10.244.2.11"]
    );
    let slice = snap
        .endpoint_slices_for(&ObjectKey::new("default", "demoapp-svc"))
        .next()
        .unwrap()
        .clone();
    assert_eq!(
        slice.ports[0].port,
        Some(80),
        "named target port resolved from the pod"
    );
    let terminating: Vec<_> = slice.endpoints.iter().filter(|e| e.terminating).collect();
    assert_eq!(terminating.len(), 1);
    assert!(terminating[0].serving && !terminating[0].ready);
    assert_eq!(
        ready_ips(&snap, "default", "services-readiness-demo"),
        vec!["10.244.1.30"]
    );
    assert_eq!(ready_ips(&snap, "demo", "web").len(), 2);
    assert_eq!(snap.nodes().count(), 2);
}

#[tokio::test]
async fn dual_stack_cluster_loads() {
    let src = source::start(
        &SourceConfig::Manifests(example_dir("cluster-dualstack")),
        &ALL,
    )
    .await
    .unwrap();
    let snap = src.reader().snapshot();
    assert!(src.status().problems.is_empty(), "{:?}", src.status());
    let svc = snap
        .service(&ObjectKey::new("default", "demoapp-svc"))
        .unwrap();
    assert_eq!(svc.cluster_ips.len(), 2);
    assert!(svc.cluster_ips[1].is_ipv6());
    let ips = ready_ips(&snap, "default", "demoapp-svc");
    assert!(ips.iter().any(|ip| ip.contains(':')), "{ips:?}");
    assert!(ips.iter().any(|ip| ip.contains('.')), "{ips:?}");
}

#[tokio::test]
async fn live_edits_bad_files_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&example_dir("cluster"), dir.path());
    let src = source::start(&SourceConfig::Manifests(dir.path().to_path_buf()), &ALL)
        .await
        .unwrap();
    let reader = src.reader();
    let key = ObjectKey::new("default", "demoapp-svc");

    // Edit: change a cluster IP.
    let file = dir.path().join("default-services.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("10.96.10.11", "10.96.10.99")).unwrap();
    let took = wait_until(&reader, Duration::from_secs(2), |s| {
        s.service(&key)
            .is_some_and(|s| s.cluster_ips[0].to_string() == "10.96.10.99")
    })
    .await;
    assert!(took < Duration::from_millis(200), "edit took {took:?}");

    // A bad edit is reported and the file's last good objects stay.
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata: {name: broken\n",
    )
    .unwrap();
    let start = Instant::now();
    while src.status().problems.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "bad file not reported"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let problem = &src.status().problems[0];
    assert!(
        problem
            .location
            .ends_with("default-services.yaml: document 0"),
        "{problem:?}"
    );
    assert!(
        reader.snapshot().service(&key).is_some(),
        "last good version kept"
    );

    // Deleting a file removes its objects.
    std::fs::remove_file(dir.path().join("demo.yaml")).unwrap();
    let took = wait_until(&reader, Duration::from_secs(2), |s| {
        s.service(&ObjectKey::new("demo", "web")).is_none()
    })
    .await;
    assert!(took < Duration::from_millis(200), "delete took {took:?}");

    // A new file adds objects; scaling the pods changes derived endpoints.
    std::fs::write(
        dir.path().join("extra.yml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: extra, namespace: default}\nspec: {clusterIP: 10.96.30.1, ports: [{port: 53, protocol: UDP}]}\n",
    )
    .unwrap();
    wait_until(&reader, Duration::from_secs(2), |s| {
        s.service(&ObjectKey::new("default", "extra")).is_some()
    })
    .await;
    let pods = dir.path().join("default-pods.yaml");
    let text = std::fs::read_to_string(&pods).unwrap();
    std::fs::write(
        &pods,
        text.replace("podIP: 10.244.2.11\n", "podIP: 10.244.2.77\n")
            .replace("{ip: 10.244.2.11}", "{ip: 10.244.2.77}"),
    )
    .unwrap();
    wait_until(&reader, Duration::from_secs(2), |s| {
        ready_ips(s, "default", "demoapp") == vec!["10.244.1.10", "10.244.2.77"]
    })
    .await;
}

#[tokio::test]
async fn configmap_style_symlink_swap() {
    // kubelet mounts a ConfigMap as `..2026_x/` + `..data -> ..2026_x` + `file -> ..data/file`,
    // and updates it by swapping the `..data` symlink.
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("..2026_11_26_v1");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("svc.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\nspec: {clusterIP: 10.0.0.1}\n").unwrap();
    std::os::unix::fs::symlink("..2026_11_26_v1", dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/svc.yaml", dir.path().join("svc.yaml")).unwrap();
    let src = source::start(
        &SourceConfig::Manifests(dir.path().to_path_buf()),
        &[Kind::Service],
    )
    .await
    .unwrap();
    let reader = src.reader();
    let key = ObjectKey::new("ns", "a");
    assert_eq!(
        reader.snapshot().service(&key).unwrap().cluster_ips[0].to_string(),
        "10.0.0.1"
    );

    let v2 = dir.path().join("..2026_11_26_v2");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("svc.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\nspec: {clusterIP: 10.0.0.2}\n").unwrap();
    std::os::unix::fs::symlink("..2026_11_26_v2", dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();
    let took = wait_until(&reader, Duration::from_secs(2), |s| {
        s.service(&key)
            .is_some_and(|s| s.cluster_ips[0].to_string() == "10.0.0.2")
    })
    .await;
    assert!(took < Duration::from_millis(200), "swap took {took:?}");
}
