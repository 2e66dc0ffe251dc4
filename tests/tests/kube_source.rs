//! End-to-end tests of the Kubernetes API source (`svcnet_core::source::kube`) against the
//! fake API server test double (`svcnet_tests::fake_apiserver`), over real HTTP on loopback.
//!
//! Every wait is bounded: the cache or status is polled until the expected state shows up or
//! the deadline passes. Deadlines are generous because the source's retry backoff (0.8 s,
//! doubling to 10 s, jittered) sits between a watch error and the retry.

use std::time::Duration;

use serde_json::{Value, json};
use svcnet_core::cache::{CacheReader, new_cache};
use svcnet_core::model::{Kind, ObjectKey};
use svcnet_core::source::{self, SourceConfig, SourceStatus, StatusHandle};
use svcnet_tests::fake_apiserver::{FakeApiServer, RecordedRequest};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(30);
const KINDS: [Kind; 3] = [Kind::Service, Kind::EndpointSlice, Kind::Node];

fn service(name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
                 "selector": {"app": name}}
    })
}

fn endpoint_slice(name: &str, service: &str, ips: &[&str]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": ips.iter().map(|ip| json!({
            "addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-a"
        })).collect::<Vec<_>>()
    })
}

fn node(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.10"}]}
    })
}

fn pod(name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "web",
                 "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("default", name)
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "svcnet_core=debug,kube_runtime=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `check` until it holds or `WAIT` passes; returns whether it held.
async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The source under test, running on its own task; aborted on drop.
struct RunningSource {
    reader: CacheReader,
    status: StatusHandle,
    task: JoinHandle<()>,
}

impl Drop for RunningSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RunningSource {
    async fn start(fake: &FakeApiServer, kinds: &[Kind]) -> Self {
        Self::start_with(fake.client(), fake, kinds).await
    }

    /// Like [`start`](Self::start), with the source talking to `fake` through `client`.
    async fn start_with(client: kube::Client, fake: &FakeApiServer, kinds: &[Kind]) -> Self {
        let (writer, mut reader) = new_cache(kinds.iter().copied());
        let status = StatusHandle::default();
        let task = tokio::spawn(svcnet_core::source::kube::run(
            client,
            kinds.to_vec(),
            writer,
            status.clone(),
        ));
        assert!(
            reader.wait_synced(WAIT).await,
            "the source did not sync; requests: {:#?}",
            fake.requests()
        );
        // After each kind's list, its watcher opens a watch from the list's version.
        assert!(
            eventually(|| fake.open_watches() == kinds.len()).await,
            "the watches did not start: {:#?}",
            fake.requests()
        );
        Self {
            reader,
            status,
            task,
        }
    }

    fn has_service(&self, name: &str) -> bool {
        self.reader.snapshot().service(&key(name)).is_some()
    }

    fn cluster_ip(&self, name: &str) -> Option<String> {
        self.reader
            .snapshot()
            .service(&key(name))
            .and_then(|s| s.cluster_ips.first().map(|ip| ip.to_string()))
    }

    fn status(&self) -> SourceStatus {
        self.status.get()
    }

    async fn wait(&self, what: &str, check: impl FnMut() -> bool) {
        assert!(
            eventually(check).await,
            "timed out waiting until {what}; cache {:?}; status {:?}",
            self.reader.snapshot(),
            self.status()
        );
    }
}

fn watches_of<'a>(
    requests: &'a [RecordedRequest],
    path: &'a str,
) -> impl Iterator<Item = &'a RecordedRequest> + 'a {
    requests
        .iter()
        .filter(move |r| r.path == path && r.is_watch())
}

fn lists_of<'a>(
    requests: &'a [RecordedRequest],
    path: &'a str,
) -> impl Iterator<Item = &'a RecordedRequest> + 'a {
    requests
        .iter()
        .filter(move |r| r.path == path && !r.is_watch())
}

async fn fake_with_demo_objects() -> FakeApiServer {
    let fake = FakeApiServer::start().await.expect("fake API server");
    fake.apply(service("web", "10.96.10.10"));
    fake.apply(service("db", "10.96.10.11"));
    fake.apply(endpoint_slice(
        "web-abc",
        "web",
        &["10.244.1.10", "10.244.2.11"],
    ));
    fake.apply(node("node-a"));
    fake
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_then_follows_adds_modifies_and_deletes() {
    init_tracing();
    let fake = fake_with_demo_objects().await;
    fake.apply(pod("web-1", "10.244.1.10"));
    let src = RunningSource::start(&fake, &Kind::ALL).await;

    let snap = src.reader.snapshot();
    assert_eq!(snap.service_count(), 2);
    let web_1 = snap.pod(&key("web-1")).expect("the pod");
    assert!(web_1.ready);
    assert_eq!(web_1.ips[0].to_string(), "10.244.1.10");
    assert_eq!(
        snap.endpoint_slices_for(&key("web"))
            .map(|s| s.endpoints.len())
            .sum::<usize>(),
        2
    );
    assert!(snap.node("node-a").is_some());

    // What kube-runtime's watcher asked for: a paginated list, then a watch from its version.
    let requests = fake.requests();
    for r in &requests {
        println!("request: {r}");
    }
    let list = lists_of(&requests, "/api/v1/services")
        .next()
        .expect("a list");
    assert_eq!(list.param("limit"), Some("500"));
    assert_eq!(
        list.param("resourceVersion"),
        None,
        "a consistent (quorum) list"
    );
    let watch = watches_of(&requests, "/api/v1/services")
        .next()
        .expect("a watch");
    assert_eq!(watch.param("allowWatchBookmarks"), Some("true"));
    assert_eq!(watch.param("timeoutSeconds"), Some("290"));
    assert_eq!(watch.param("sendInitialEvents"), None);
    assert_eq!(
        watch.param("resourceVersion"),
        Some(fake.resource_version().to_string().as_str()),
        "watches from the list's resourceVersion"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.path != "/api" && r.path != "/apis"),
        "no discovery for typed Api::all"
    );

    fake.apply(service("cache", "10.96.10.12"));
    src.wait("an added service appears", || src.has_service("cache"))
        .await;
    fake.apply(service("cache", "10.96.10.99"));
    src.wait("a modified service changes", || {
        src.cluster_ip("cache").as_deref() == Some("10.96.10.99")
    })
    .await;
    fake.apply(endpoint_slice("web-abc", "web", &["10.244.1.10"]));
    src.wait("an endpoint is removed from the slice", || {
        src.reader
            .snapshot()
            .endpoint_slices_for(&key("web"))
            .map(|s| s.endpoints.len())
            .sum::<usize>()
            == 1
    })
    .await;
    fake.delete("Service", "default", "db");
    src.wait("a deleted service disappears", || !src.has_service("db"))
        .await;
    fake.delete("Pod", "default", "web-1");
    src.wait("a deleted pod disappears", || {
        src.reader.snapshot().pod(&key("web-1")).is_none()
    })
    .await;
    fake.delete("Node", "", "node-a");
    src.wait("a deleted node disappears", || {
        src.reader.snapshot().node("node-a").is_none()
    })
    .await;

    // A bookmark changes nothing in the cache and causes no relist.
    let before = src.status();
    let generation = src.reader.snapshot().generation();
    fake.bookmark();
    fake.apply(service("after-bookmark", "10.96.10.13"));
    src.wait("a change after a bookmark appears", || {
        src.has_service("after-bookmark")
    })
    .await;
    assert_eq!(src.reader.snapshot().generation(), generation + 1);
    assert_eq!(src.status().resyncs, before.resyncs, "no relist");
    assert!(src.status().problems.is_empty(), "{:?}", src.status());
    assert_eq!(src.status().resyncs, 4, "one list per kind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_dropped_connections_and_catches_up() {
    init_tracing();
    let fake = fake_with_demo_objects().await;
    let src = RunningSource::start(&fake, &KINDS).await;
    let resyncs = src.status().resyncs;
    let watches_before = fake.requests().iter().filter(|r| r.is_watch()).count();

    fake.cut_connections();
    // Changes made while the watches are down are replayed from the history on reconnect.
    fake.apply(service("while-cut", "10.96.10.20"));
    fake.delete("Service", "default", "db");
    src.wait("the source catches up after reconnecting", || {
        src.has_service("while-cut") && !src.has_service("db")
    })
    .await;
    // And it follows live changes on the new watches.
    fake.apply(service("after-cut", "10.96.10.21"));
    src.wait("a change after reconnecting appears", || {
        src.has_service("after-cut")
    })
    .await;
    let requests = fake.requests();
    assert!(requests.iter().filter(|r| r.is_watch()).count() > watches_before);
    assert_eq!(
        src.status().resyncs,
        resyncs,
        "resumed from the last resourceVersion without relisting"
    );
    assert!(src.reader.snapshot().node("node-a").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmark_lets_a_watch_resume_after_compaction_without_relisting() {
    init_tracing();
    let fake = fake_with_demo_objects().await;
    let src = RunningSource::start(&fake, &KINDS).await;
    let resyncs = src.status().resyncs;

    // A service change, then a node change move the global version to `bookmarked`; the
    // EndpointSlice watch only hears of that version through the bookmark.
    fake.apply(service("marker", "10.96.10.30"));
    let bookmarked = fake.apply(node("node-b"));
    fake.bookmark_kind("EndpointSlice");
    src.wait("the events before the bookmark arrive", || {
        src.has_service("marker") && src.reader.snapshot().node("node-b").is_some()
    })
    .await;

    // Compaction up to `bookmarked`, then every connection drops.
    fake.compact();
    fake.cut_connections();
    fake.apply(endpoint_slice("web-abc", "web", &["10.244.9.9"]));
    src.wait("the slice watch resumes and delivers the change", || {
        src.reader
            .snapshot()
            .endpoint_slices_for(&key("web"))
            .any(|s| s.endpoints[0].addresses[0].to_string() == "10.244.9.9")
    })
    .await;
    let requests = fake.requests();
    let slices = "/apis/discovery.k8s.io/v1/endpointslices";
    let bookmarked = bookmarked.to_string();
    assert!(
        watches_of(&requests, slices).any(|r| r.param("resourceVersion") == Some(&*bookmarked)),
        "the slice watch resumed from the bookmark's version {bookmarked}: {:#?}",
        watches_of(&requests, slices).collect::<Vec<_>>()
    );
    assert_eq!(
        lists_of(&requests, slices).count(),
        1,
        "slices never relisted"
    );
    // Without a bookmark, the services watch's last version (the marker's) was compacted
    // away: it got 410 Expired and relisted. The nodes watch had seen `bookmarked` itself.
    src.wait("the services watch relists after 410", || {
        lists_of(&fake.requests(), "/api/v1/services").count() == 2
    })
    .await;
    src.wait("the services relist completes", || {
        src.status().resyncs == resyncs + 1
    })
    .await;
    assert_eq!(lists_of(&fake.requests(), "/api/v1/nodes").count(), 1);
    assert!(src.has_service("marker") && src.has_service("web"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_serving_while_down_and_relists_after_410() {
    init_tracing();
    let fake = fake_with_demo_objects().await;
    let src = RunningSource::start(&fake, &KINDS).await;
    let resyncs = src.status().resyncs;

    fake.stop().await;
    src.wait("the watch failure is reported", || {
        src.status()
            .problems
            .iter()
            .any(|p| p.location.starts_with("watch "))
    })
    .await;
    // The cache keeps serving the last state while the server is unreachable.
    let snap = src.reader.snapshot();
    assert!(snap.is_synced());
    assert_eq!(snap.service_count(), 2);
    assert!(snap.node("node-a").is_some());

    // During the outage: `db` is deleted, `new` created, and the history compacted, so the
    // watches cannot resume (410 Expired) and must relist. The relist has no Delete for `db`.
    fake.delete("Service", "default", "db");
    fake.apply(service("new", "10.96.10.40"));
    fake.compact();
    fake.restart().await.expect("restart on the same port");

    src.wait(
        "the relist removes what was deleted during the outage",
        || !src.has_service("db") && src.has_service("new") && src.has_service("web"),
    )
    .await;
    src.wait("every kind relisted and the problems cleared", || {
        let status = src.status();
        status.resyncs >= resyncs + 3 && status.problems.is_empty()
    })
    .await;
    let requests = fake.requests();
    for r in &requests {
        println!("request: {r}");
    }
    let services = lists_of(&requests, "/api/v1/services").count();
    assert!(services >= 2, "services were relisted ({services} lists)");
    // Live changes flow again after the relist.
    fake.apply(service("later", "10.96.10.41"));
    src.wait("a change after the relist appears", || {
        src.has_service("later")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paginated_lists_are_followed_to_the_end() {
    init_tracing();
    let fake = FakeApiServer::start().await.expect("fake API server");
    for i in 0..7 {
        fake.apply(service(&format!("svc-{i}"), &format!("10.96.11.{i}")));
    }
    fake.set_max_page_size(Some(2));
    let src = RunningSource::start(&fake, &[Kind::Service, Kind::EndpointSlice]).await;
    assert_eq!(src.reader.snapshot().service_count(), 7);
    let requests = fake.requests();
    for r in &requests {
        println!("request: {r}");
    }
    let lists: Vec<_> = lists_of(&requests, "/api/v1/services").collect();
    assert_eq!(lists.len(), 4, "pages of 2, 2, 2, 1: {lists:#?}");
    assert!(lists[0].param("continue").is_none());
    assert!(lists[1..].iter().all(|r| r.param("continue").is_some()));
    // The watch starts from the version the paginated list was consistent at.
    let watch = watches_of(&requests, "/api/v1/services")
        .next()
        .expect("a watch");
    assert_eq!(watch.param("resourceVersion"), Some("7"));

    // The watch from the paged list's version delivers later changes.
    fake.apply(service("svc-0", "10.96.11.100"));
    src.wait("a change after a paged list appears", || {
        src.cluster_ip("svc-0").as_deref() == Some("10.96.11.100")
    })
    .await;
}

/// Like client-go, the source asks for gzip; a list page over 128 KiB comes back compressed (as
/// from kube-apiserver) and is decoded whole. A kubeconfig's `disable-compression: true` turns
/// that off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_list_pages_arrive_gzip_compressed_unless_the_kubeconfig_disables_it() {
    init_tracing();
    let fake = FakeApiServer::start().await.expect("fake API server");
    for i in 0..400 {
        fake.apply(service(
            &format!("svc-{i}"),
            &format!("10.96.{}.{}", 20 + i / 200, i % 200),
        ));
    }
    let src = RunningSource::start(&fake, &[Kind::Service, Kind::EndpointSlice]).await;
    assert_eq!(src.reader.snapshot().service_count(), 400);
    assert_eq!(src.cluster_ip("svc-399").as_deref(), Some("10.96.21.199"));
    let requests = fake.requests();
    let lists: Vec<_> = lists_of(&requests, "/api/v1/services").collect();
    assert!(
        !lists.is_empty() && lists.iter().all(|r| r.accepts_gzip),
        "{lists:#?}"
    );
    // The services page (400 objects, ~250 KB of JSON) was compressed; the empty
    // EndpointSlice list (under 128 KiB) was not.
    assert_eq!(fake.compressed_responses(), 1);
    drop(src);

    let kubeconfig = kubeconfig_without_compression(&fake);
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig");
    assert!(config.disable_compression, "read from the kubeconfig");
    let client = kube::Client::try_from(config).expect("client");
    let src = RunningSource::start_with(client, &fake, &[Kind::Service, Kind::EndpointSlice]).await;
    assert_eq!(src.reader.snapshot().service_count(), 400);
    let requests = fake.requests();
    let last_list = lists_of(&requests, "/api/v1/services")
        .last()
        .expect("a second list");
    assert!(!last_list.accepts_gzip, "{last_list:?}");
    assert_eq!(fake.compressed_responses(), 1, "nothing more compressed");
}

/// `fake`'s kubeconfig with `disable-compression: true` on its cluster.
fn kubeconfig_without_compression(fake: &FakeApiServer) -> kube::config::Kubeconfig {
    let yaml = fake.kubeconfig_yaml().replace(
        "    server: ",
        "    disable-compression: true\n    server: ",
    );
    kube::config::Kubeconfig::from_yaml(&yaml).expect("a kubeconfig")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_continue_token_restarts_the_list() {
    init_tracing();
    let fake = FakeApiServer::start().await.expect("fake API server");
    for i in 0..5 {
        fake.apply(service(&format!("svc-{i}"), &format!("10.96.12.{i}")));
    }
    fake.set_max_page_size(Some(2));
    fake.expire_next_continue_token();
    let src = RunningSource::start(&fake, &[Kind::Service]).await;
    // The first page of the failed list was buffered, then discarded at the new `Init`.
    assert_eq!(src.reader.snapshot().service_count(), 5);
    assert_eq!(src.status().resyncs, 1, "one completed list");
    let requests = fake.requests();
    let lists: Vec<_> = lists_of(&requests, "/api/v1/services").collect();
    assert_eq!(
        lists.len(),
        5,
        "page, expired continue, then 3 pages: {lists:#?}"
    );
    assert!(lists[1].param("continue").is_some());
    assert!(
        lists[2].param("continue").is_none(),
        "the list started over"
    );
    src.wait("the list error is no longer reported", || {
        src.status().problems.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_objects_are_reported_and_skipped() {
    init_tracing();
    let fake = fake_with_demo_objects().await;
    // Bad in the initial list: the rest still syncs.
    fake.apply(service("bad-from-start", "not-an-ip"));
    let src = RunningSource::start(&fake, &KINDS).await;
    assert_eq!(src.reader.snapshot().service_count(), 2);
    src.wait("the bad object is reported", || {
        !src.status().problems.is_empty()
    })
    .await;
    let problems = src.status().problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].location, "Service default/bad-from-start");
    assert!(problems[0].reason.contains("not-an-ip"), "{problems:?}");

    // A bad update keeps the last good version.
    fake.apply(service("web", "not-an-ip"));
    src.wait("the bad update is reported", || {
        src.status()
            .problems
            .iter()
            .any(|p| p.location == "Service default/web" && p.reason.contains("not-an-ip"))
    })
    .await;
    assert_eq!(src.cluster_ip("web").as_deref(), Some("10.96.10.10"));
    assert!(src.has_service("db"));

    // The source is still alive, and fixing / deleting the objects clears the problems.
    fake.apply(service("web", "10.96.10.50"));
    fake.delete("Service", "default", "bad-from-start");
    src.wait("the fix applies and the problems clear", || {
        src.cluster_ip("web").as_deref() == Some("10.96.10.50") && src.status().problems.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_start_with_a_kubeconfig_file() {
    init_tracing();
    let fake = fake_with_demo_objects().await;
    let dir = std::env::temp_dir().join(format!(
        "svcnet-kube-source-{}-{}",
        std::process::id(),
        fake.url().rsplit(':').next().unwrap_or("0")
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig_yaml()).expect("write kubeconfig");

    let config = SourceConfig::Kubernetes {
        kubeconfig: Some(kubeconfig.clone()),
    };
    let running = source::start(&config, &[Kind::Service, Kind::EndpointSlice])
        .await
        .expect("source starts");
    let mut reader = running.reader();
    assert!(
        reader.wait_synced(WAIT).await,
        "synced through the kubeconfig"
    );
    assert_eq!(reader.snapshot().service_count(), 2);
    assert_eq!(
        running.status().description,
        format!("kubernetes:{}", kubeconfig.display())
    );
    fake.apply(service("via-kubeconfig", "10.96.10.60"));
    assert!(
        eventually(|| reader.snapshot().service(&key("via-kubeconfig")).is_some()).await,
        "live changes arrive"
    );
    assert!(running.status().events > 0);
    drop(running);
    let _ = std::fs::remove_dir_all(&dir);

    // A kubeconfig that does not exist is a clear error, not a panic.
    let missing = SourceConfig::Kubernetes {
        kubeconfig: Some(dir.join("missing")),
    };
    match source::start(&missing, &[Kind::Service]).await {
        Err(e) => assert!(e.to_string().contains("missing"), "{e}"),
        Ok(_) => panic!("a missing kubeconfig must fail"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_node_name_only_that_node_is_watched_and_its_zone_label_follows_live() {
    init_tracing();
    let fake = fake_with_demo_objects().await;
    fake.apply(node("node-b"));
    let zoned = |zone: Option<&str>| {
        let mut n = node("node-a");
        if let Some(z) = zone {
            n["metadata"]["labels"] = json!({"topology.kubernetes.io/zone": z});
        }
        n
    };
    fake.apply(zoned(Some("zone-a")));
    let (writer, mut reader) = new_cache(KINDS);
    let status = StatusHandle::default();
    let task = tokio::spawn(svcnet_core::source::kube::run_for_node(
        fake.client(),
        KINDS.to_vec(),
        writer,
        status.clone(),
        Some("node-a".into()),
    ));
    assert!(reader.wait_synced(WAIT).await, "{:#?}", fake.requests());
    let zone = |r: &CacheReader| {
        r.snapshot()
            .node("node-a")
            .and_then(|n| n.zone.as_deref().map(str::to_owned))
    };
    assert_eq!(zone(&reader).as_deref(), Some("zone-a"));
    assert!(
        reader.snapshot().node("node-b").is_none(),
        "other nodes are not watched"
    );
    let node_requests: Vec<RecordedRequest> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/nodes")
        .collect();
    assert!(!node_requests.is_empty());
    for r in &node_requests {
        assert_eq!(
            r.param("fieldSelector"),
            Some("metadata.name=node-a"),
            "{r:?}"
        );
    }
    assert!(
        fake.requests()
            .iter()
            .filter(|r| r.path != "/api/v1/nodes")
            .all(|r| r.param("fieldSelector").is_none()),
        "only the Node watch is narrowed"
    );
    assert!(eventually(|| fake.open_watches() == KINDS.len()).await);
    fake.apply(zoned(Some("zone-b")));
    assert!(
        eventually(|| zone(&reader).as_deref() == Some("zone-b")).await,
        "the relabelled zone arrives live"
    );
    fake.apply(zoned(None));
    assert!(
        eventually(|| reader.snapshot().node("node-a").is_some() && zone(&reader).is_none()).await,
        "a removed label arrives live"
    );
    task.abort();
}

/// Issue 14 item 3: with the Pod watch scoped to the node (node-local autopath), only that
/// node's pods are listed and watched (`spec.nodeName=<node>`), live; other kinds are not
/// narrowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_scoped_pod_watch_sees_only_that_node_s_pods() {
    init_tracing();
    let fake = fake_with_demo_objects().await;
    let on = |name: &str, ip: &str, node: &str| {
        let mut p = pod(name, ip);
        p["spec"]["nodeName"] = json!(node);
        p
    };
    fake.apply(on("here-1", "10.244.1.1", "node-a"));
    fake.apply(on("there-1", "10.244.2.1", "node-b"));
    let kinds = [Kind::Service, Kind::EndpointSlice, Kind::Pod];
    let (writer, mut reader) = new_cache(kinds);
    let task = tokio::spawn(svcnet_core::source::kube::run_scoped(
        fake.client(),
        kinds.to_vec(),
        writer,
        StatusHandle::default(),
        svcnet_core::source::kube::WatchScope {
            node: Some("node-a".into()),
            pods_on_node: true,
        },
    ));
    assert!(reader.wait_synced(WAIT).await, "{:#?}", fake.requests());
    let has = |name: &str| reader.snapshot().pod(&key(name)).is_some();
    assert!(has("here-1"));
    assert!(!has("there-1"), "another node's pod is not watched");
    let pod_requests: Vec<RecordedRequest> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/pods")
        .collect();
    assert!(!pod_requests.is_empty());
    for r in &pod_requests {
        assert_eq!(
            r.param("fieldSelector"),
            Some("spec.nodeName=node-a"),
            "{r:?}"
        );
    }
    assert!(
        fake.requests()
            .iter()
            .filter(|r| r.path != "/api/v1/pods")
            .all(|r| r.param("fieldSelector").is_none()),
        "only the Pod watch is narrowed"
    );
    assert!(eventually(|| fake.open_watches() == kinds.len()).await);
    fake.apply(on("here-2", "10.244.1.2", "node-a"));
    fake.apply(on("there-2", "10.244.2.2", "node-b"));
    assert!(
        eventually(|| has("here-2")).await,
        "a new pod on the node arrives live"
    );
    assert!(!has("there-2"));
    fake.delete("Pod", "default", "here-1");
    assert!(eventually(|| !has("here-1")).await, "a deleted pod leaves");
    task.abort();
}

/// The watch error of `services` in `status`, and the retry delay it announces
/// (`… (retrying in 6.4 s; …)`).
fn services_watch_retry(status: &SourceStatus) -> Option<(String, f64)> {
    let p = status
        .problems
        .iter()
        .find(|p| p.location == "watch services")?;
    let rest = p.reason.split("(retrying in ").nth(1)?;
    let delay = rest.split(" s").next()?.parse::<f64>().ok()?;
    Some((p.reason.clone(), delay))
}

/// Issue 15 item 2: after an outage long enough for the watch backoff to reach its cap, and a
/// start-up phase where the server answers but is not ready, a Service deleted during the
/// outage is gone from the cache within 5 s of the API server becoming ready. The server comes
/// back just after the Services watch has scheduled its next try at least 7 s away, so 1.5 s of
/// start-up later that try is still more than 5 s off: only the `/readyz` probe, which cuts the
/// wait short, can make the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_within_5_s_of_the_api_server_answering_after_an_outage() {
    init_tracing();
    let fake = fake_with_demo_objects().await;
    let src = RunningSource::start(&fake, &KINDS).await;

    let outage = tokio::time::Instant::now();
    fake.stop().await;
    // Deleted directly in storage while the server is down.
    fake.delete("Service", "default", "db");
    // The nominal delays 0.8, 1.6, 3.2, 6.4 s add up to at most 12 s, so after 13 s every
    // watch's backoff is at its 10 s cap (jittered: 5-10 s).
    tokio::time::sleep(Duration::from_secs(13)).await;
    let deadline = outage + Duration::from_secs(90);
    let mut seen = services_watch_retry(&src.status()).map(|(reason, _)| reason);
    let retry = loop {
        let now = services_watch_retry(&src.status());
        if let Some((reason, delay)) = now
            && seen.as_ref() != Some(&reason)
        {
            if delay >= 7.0 {
                break delay;
            }
            seen = Some(reason);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backoff never announced a long retry; status {:?}",
            src.status()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let announced = tokio::time::Instant::now();
    assert!(
        src.has_service("db"),
        "the last state is served during the outage"
    );
    // The process comes back but is still starting: /readyz 500, lists and watches 503.
    fake.set_starting(true);
    fake.restart().await.expect("restart on the same port");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(src.has_service("db"), "nothing listed while starting");
    let before_ready = fake.requests().len();
    fake.set_starting(false);
    let ready = tokio::time::Instant::now();
    let due = announced + Duration::from_secs_f64(retry);
    while src.has_service("db") {
        assert!(
            ready.elapsed() < Duration::from_secs(30),
            "the deletion was never applied; status {:?}",
            src.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let converged = ready.elapsed();
    println!(
        "outage {:.1} s with the Services watch's next try announced {retry:.1} s away \
         (due {:.1} s after the API server became ready); deletion applied {:.2} s after it \
         became ready",
        (ready - outage).as_secs_f64(),
        due.saturating_duration_since(ready).as_secs_f64(),
        converged.as_secs_f64()
    );
    assert!(
        converged < Duration::from_secs(5),
        "converged {converged:?} after the API server became ready"
    );
    // The probe asked /readyz after the server became ready, then the watches retried.
    let after: Vec<_> = fake.requests().into_iter().skip(before_ready).collect();
    let probe = after.iter().position(|r| r.path == "/readyz");
    let services = after.iter().position(|r| r.path == "/api/v1/services");
    assert!(
        matches!((probe, services), (Some(p), Some(s)) if p < s),
        "the readiness probe came first: {after:#?}"
    );
    assert!(src.has_service("web"));
    fake.apply(service("later", "10.96.10.41"));
    src.wait("a change after the outage appears", || {
        src.has_service("later")
    })
    .await;
}
