use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::cache::{Snapshot, new_cache};
use crate::ipvs::fixtures::{endpoint, service, slice, terminating_endpoint};
use crate::ipvs::view::health_check_port;
use crate::model::{
    ClusterObject, EndpointSlice, Kind, Protocol, Service, ServiceType, TrafficPolicy,
};

const NODE: Option<&str> = Some("node-a");

/// A LoadBalancer Service `default/<name>` with `externalTrafficPolicy: Local` and
/// health-check node port `port`, two ports (http 80 → 8080, https 443 → 8443).
fn lb(name: &str, port: u16) -> Service {
    let mut svc = service(
        "default",
        name,
        "10.96.0.10",
        &[
            ("http", Protocol::Tcp, 80, 8080),
            ("https", Protocol::Tcp, 443, 8443),
        ],
    );
    svc.service_type = ServiceType::LoadBalancer;
    svc.external_traffic_policy = TrafficPolicy::Local;
    svc.health_check_node_port = Some(port);
    svc
}

/// The slice of `lb(name)` with `endpoints`.
fn eps(name: &str, endpoints: Vec<crate::model::Endpoint>) -> EndpointSlice {
    slice(
        "default",
        &format!("{name}-1"),
        name,
        &[
            ("http", Protocol::Tcp, 8080),
            ("https", Protocol::Tcp, 8443),
        ],
        endpoints,
    )
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("default", name)
}

/// The control loop's step: its one view brought up to `snapshot`, then the index follows it.
fn observe(
    index: &mut HealthCheckIndex,
    view: &mut ProxyView,
    snapshot: &Snapshot,
    node: Option<&str>,
) -> BTreeSet<u16> {
    view.observe(snapshot, node);
    index.observe(view)
}

/// The targets of a fresh view of `snapshot`.
fn targets_of(snapshot: &Snapshot, node: Option<&str>) -> BTreeMap<u16, HealthCheckTarget> {
    let mut view = ProxyView::new();
    view.observe(snapshot, node);
    targets(&view)
}

/// Ready endpoints of `service` on `node`, as its view counts them (0 when not proxied).
fn local_ready_endpoints(snapshot: &Snapshot, service: &ObjectKey, node: Option<&str>) -> usize {
    snapshot
        .service(service)
        .and_then(|svc| ServiceView::compute(snapshot, svc, node))
        .map_or(0, |v| v.local_ready_endpoints)
}

fn target(name: &str, local_endpoints: usize) -> HealthCheckTarget {
    HealthCheckTarget {
        service: key(name),
        local_endpoints,
    }
}

#[test]
fn only_local_load_balancers_get_a_port() {
    assert_eq!(health_check_port(&lb("web", 32000)), Some(32000));
    let mut cluster_policy = lb("web", 32000);
    cluster_policy.external_traffic_policy = TrafficPolicy::Cluster;
    assert_eq!(health_check_port(&cluster_policy), None);
    let mut node_port = lb("web", 32000);
    node_port.service_type = ServiceType::NodePort;
    assert_eq!(health_check_port(&node_port), None);
    let mut other_proxy = lb("web", 32000);
    other_proxy.service_proxy_name = Some("someone-else".into());
    assert_eq!(health_check_port(&other_proxy), None);
    let mut unset = lb("web", 32000);
    unset.health_check_node_port = None;
    assert_eq!(health_check_port(&unset), None);
}

#[test]
fn counts_ready_endpoints_on_this_node_by_address() {
    let (mut w, r) = new_cache([Kind::Service, Kind::EndpointSlice]);
    w.apply(ClusterObject::from(lb("web", 32000)));
    w.apply(ClusterObject::from(eps(
        "web",
        vec![
            endpoint("10.244.1.10", true, Some("node-a")),
            endpoint("10.244.1.11", true, Some("node-a")),
            endpoint("10.244.1.12", false, Some("node-a")),
            terminating_endpoint("10.244.1.13", Some("node-a")),
            endpoint("10.244.2.10", true, Some("node-b")),
            endpoint("10.244.3.10", true, None),
        ],
    )));
    // The same pod in a second slice (both ports) counts once.
    let mut second = eps("web", vec![endpoint("10.244.1.10", true, Some("node-a"))]);
    second.key = key("web-2");
    w.apply(ClusterObject::from(second));
    // A slice without a usable port carries no endpoints (kube-proxy skips such ports).
    let mut portless = eps("web", vec![endpoint("10.244.1.20", true, Some("node-a"))]);
    portless.key = key("web-3");
    portless.ports.iter_mut().for_each(|p| p.port = None);
    w.apply(ClusterObject::from(portless));
    // Another proxy's slice is not ours.
    let mut foreign = eps("web", vec![endpoint("10.244.1.30", true, Some("node-a"))]);
    foreign.key = key("web-4");
    foreign.service_proxy_name = Some("someone-else".into());
    w.apply(ClusterObject::from(foreign));

    let snap = r.snapshot();
    assert_eq!(local_ready_endpoints(&snap, &key("web"), NODE), 2);
    assert_eq!(local_ready_endpoints(&snap, &key("web"), Some("node-b")), 1);
    assert_eq!(local_ready_endpoints(&snap, &key("web"), Some("node-c")), 0);
    assert_eq!(
        local_ready_endpoints(&snap, &key("web"), None),
        0,
        "without a node name nothing is local"
    );
    assert_eq!(targets_of(&snap, NODE), [(32000, target("web", 2))].into());
}

#[test]
fn follows_the_cache_incrementally() {
    let (mut w, r) = new_cache([Kind::Service, Kind::EndpointSlice]);
    w.apply(ClusterObject::from(lb("web", 32000)));
    w.apply(ClusterObject::from(eps(
        "web",
        vec![endpoint("10.244.1.10", true, Some("node-a"))],
    )));
    let plain = service(
        "default",
        "plain",
        "10.96.0.11",
        &[("http", Protocol::Tcp, 80, 80)],
    );
    w.apply(ClusterObject::from(plain.clone()));
    let mut index = HealthCheckIndex::new();
    let mut view = ProxyView::new();
    assert_eq!(
        observe(&mut index, &mut view, &r.snapshot(), NODE),
        [32000].into()
    );
    assert_eq!(index.targets(), [(32000, target("web", 1))].into());

    // Nothing changed, or only a service without a port: no port to touch.
    assert_eq!(
        observe(&mut index, &mut view, &r.snapshot(), NODE),
        BTreeSet::new()
    );
    let mut plain2 = plain;
    plain2.cluster_ips = vec!["10.96.0.12".parse().unwrap()];
    w.apply(ClusterObject::from(plain2));
    assert_eq!(
        observe(&mut index, &mut view, &r.snapshot(), NODE),
        BTreeSet::new()
    );

    // The endpoint moves to another node: the answer changes.
    w.apply(ClusterObject::from(eps(
        "web",
        vec![endpoint("10.244.2.10", true, Some("node-b"))],
    )));
    assert_eq!(
        observe(&mut index, &mut view, &r.snapshot(), NODE),
        [32000].into()
    );
    assert_eq!(index.target(32000), Some(target("web", 0)));

    // A new port for the service: the old one goes, the new one comes.
    w.apply(ClusterObject::from(lb("web", 32001)));
    assert_eq!(
        observe(&mut index, &mut view, &r.snapshot(), NODE),
        [32000, 32001].into()
    );
    assert_eq!(index.target(32000), None);
    assert_eq!(index.target(32001), Some(target("web", 0)));

    // The node name changes: everything is read again.
    assert_eq!(
        observe(&mut index, &mut view, &r.snapshot(), Some("node-b")),
        [32001].into()
    );
    assert_eq!(index.target(32001), Some(target("web", 1)));

    // The incremental result equals a fresh build.
    assert_eq!(index.targets(), targets_of(&r.snapshot(), Some("node-b")));

    w.delete(Kind::Service, &key("web"));
    assert_eq!(
        observe(&mut index, &mut view, &r.snapshot(), Some("node-b")),
        [32001].into()
    );
    assert!(index.targets().is_empty());
}

#[test]
fn a_shared_port_answers_for_the_first_service() {
    let (mut w, r) = new_cache([Kind::Service, Kind::EndpointSlice]);
    w.apply(ClusterObject::from(lb("b", 32000)));
    w.apply(ClusterObject::from(eps(
        "b",
        vec![endpoint("10.244.1.10", true, Some("node-a"))],
    )));
    w.apply(ClusterObject::from(lb("a", 32000)));
    let mut index = HealthCheckIndex::new();
    let mut view = ProxyView::new();
    observe(&mut index, &mut view, &r.snapshot(), NODE);
    assert_eq!(index.target(32000), Some(target("a", 0)));
    assert_eq!(index.conflicts().collect::<Vec<_>>(), [(32000, &key("b"))]);
    w.delete(Kind::Service, &key("a"));
    assert_eq!(
        observe(&mut index, &mut view, &r.snapshot(), NODE),
        [32000].into()
    );
    assert_eq!(index.target(32000), Some(target("b", 1)));
    assert_eq!(index.conflicts().count(), 0);
}

#[test]
fn listens_on_node_port_addresses_or_everywhere() {
    let local: Vec<IpAddr> = ["127.0.0.1", "192.168.1.10", "10.0.0.5", "fe80::1"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(
        listen_addresses(&ProxyConfig::default(), &local),
        [IpAddr::V6(Ipv6Addr::UNSPECIFIED)]
    );
    let config = ProxyConfig {
        node_port_addresses: vec!["192.168.1.0/24".parse().unwrap()],
        ..ProxyConfig::default()
    };
    assert_eq!(
        listen_addresses(&config, &local),
        ["192.168.1.10".parse::<IpAddr>().unwrap()]
    );
    let nowhere = ProxyConfig {
        node_port_addresses: vec!["172.16.0.0/12".parse().unwrap()],
        ..ProxyConfig::default()
    };
    assert!(listen_addresses(&nowhere, &local).is_empty());
}

#[test]
fn answers_as_kube_proxy_does() {
    let ok = answer(Some(&target("web", 2)), true);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.weight, 2);
    assert_eq!(
        ok.body,
        "{\n\t\"service\": {\n\t\t\"namespace\": \"default\",\n\t\t\"name\": \"web\"\n\t},\n\t\
         \"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"service": {"namespace": "default", "name": "web"},
            "localEndpoints": 2, "serviceProxyHealthy": true})
    );
    let none = answer(Some(&target("web", 0)), true);
    assert_eq!((none.status, none.weight), (503, 0));
    let unhealthy = answer(Some(&target("web", 2)), false);
    assert_eq!(
        unhealthy.status, 503,
        "an unhealthy proxy fails every check"
    );
    assert!(unhealthy.body.contains("\"serviceProxyHealthy\": false"));
    assert_eq!(answer(None, true).status, 503);
}

/// One HTTP/1.1 GET; the response's status line, headers (lower-cased names) and body.
async fn get(
    addr: SocketAddr,
    path: &str,
) -> std::io::Result<(u16, BTreeMap<String, String>, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    Ok((status, headers, body.to_owned()))
}

/// A port free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const LOOPBACK: [IpAddr; 1] = [IpAddr::V4(Ipv4Addr::LOCALHOST)];

#[tokio::test]
async fn serves_ports_on_real_sockets_and_follows_changes() {
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (mut w, r) = new_cache([Kind::Service, Kind::EndpointSlice]);
    w.apply(ClusterObject::from(lb("web", port)));
    w.apply(ClusterObject::from(eps(
        "web",
        vec![endpoint("10.244.1.10", true, Some("node-a"))],
    )));
    let healthy = Arc::new(AtomicBool::new(true));
    let h = healthy.clone();
    let mut server = HealthCheckServer::new(Arc::new(move || h.load(Ordering::Relaxed)));
    let mut index = HealthCheckIndex::new();
    let mut view = ProxyView::new();
    let changed = observe(&mut index, &mut view, &r.snapshot(), NODE);
    server.update(&index, &changed, &LOOPBACK);
    assert_eq!(server.bound(port), [addr]);

    let (status, headers, body) = get(addr, "/").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-load-balancing-endpoint-weight"], "1");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["service"]["name"], "web");
    assert_eq!(json["localEndpoints"], 1);
    // Any path answers.
    assert_eq!(get(addr, "/healthz?x=1").await.unwrap().0, 200);

    // The proxy turns unhealthy: every check fails, at once.
    healthy.store(false, Ordering::Relaxed);
    assert_eq!(get(addr, "/").await.unwrap().0, 503);
    healthy.store(true, Ordering::Relaxed);

    // The endpoint leaves the node: 503 on the same listener, no rebinding.
    w.apply(ClusterObject::from(eps(
        "web",
        vec![endpoint("10.244.2.10", true, Some("node-b"))],
    )));
    let changed = observe(&mut index, &mut view, &r.snapshot(), NODE);
    server.update(&index, &changed, &LOOPBACK);
    let (status, headers, body) = get(addr, "/").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["x-load-balancing-endpoint-weight"], "0");
    assert!(body.contains("\"localEndpoints\": 0"), "{body}");

    // The service goes: the port closes.
    w.delete(Kind::Service, &key("web"));
    let changed = observe(&mut index, &mut view, &r.snapshot(), NODE);
    server.update(&index, &changed, &LOOPBACK);
    assert_eq!(server.open_ports().count(), 0);
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "port {port} still open");
}

#[tokio::test]
async fn a_port_in_use_is_reported_and_retried() {
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blocker.local_addr().unwrap().port();
    let (mut w, r) = new_cache([Kind::Service, Kind::EndpointSlice]);
    w.apply(ClusterObject::from(lb("web", port)));
    w.apply(ClusterObject::from(eps(
        "web",
        vec![endpoint("10.244.1.10", true, Some("node-a"))],
    )));
    let other = free_port();
    w.apply(ClusterObject::from(lb("other", other)));
    let mut server = HealthCheckServer::new(Arc::new(|| true));
    let mut index = HealthCheckIndex::new();
    let mut view = ProxyView::new();
    let changed = observe(&mut index, &mut view, &r.snapshot(), NODE);
    server.update(&index, &changed, &LOOPBACK);
    assert!(server.has_failed());
    assert!(
        server.failed()[&port].contains("127.0.0.1"),
        "{:?}",
        server.failed()
    );
    assert_eq!(
        server.open_ports().collect::<Vec<_>>(),
        [other],
        "the other port opens regardless"
    );

    // A later update with nothing changed retries the failed port.
    server.update(&index, &BTreeSet::new(), &LOOPBACK);
    assert!(server.has_failed(), "still in use");
    drop(blocker);
    server.update(&index, &BTreeSet::new(), &LOOPBACK);
    assert!(!server.has_failed(), "{:?}", server.failed());
    let (status, _, body) = get(SocketAddr::from(([127, 0, 0, 1], port)), "/")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");

    // A failed port whose service goes is forgotten.
    let blocker = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let busy = blocker.local_addr().unwrap().port();
    w.apply(ClusterObject::from(lb("busy", busy)));
    let changed = observe(&mut index, &mut view, &r.snapshot(), NODE);
    server.update(&index, &changed, &LOOPBACK);
    assert!(server.failed().contains_key(&busy));
    w.delete(Kind::Service, &key("busy"));
    let changed = observe(&mut index, &mut view, &r.snapshot(), NODE);
    server.update(&index, &changed, &LOOPBACK);
    assert!(!server.has_failed());
}

#[tokio::test]
async fn the_driver_follows_the_control_loops_view_and_config() {
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (mut w, r) = new_cache([Kind::Service, Kind::EndpointSlice]);
    w.replace_kind(Kind::Service, vec![]);
    w.replace_kind(Kind::EndpointSlice, vec![]);
    let (_config_tx, config_rx) = watch::channel(ProxyConfig::default());
    let (feed, views) = crate::ipvs::view::view_feed();
    let task = spawn(
        views,
        config_rx,
        HealthCheckOptions {
            node_addresses: None,
            listen: Some(LOOPBACK.to_vec()),
            proxy_healthy: Arc::new(|| true),
        },
    );
    async fn until_status(addr: SocketAddr, want: Option<u16>) -> String {
        let mut last = String::new();
        for _ in 0..300 {
            match (get(addr, "/").await, want) {
                (Ok((s, _, body)), Some(w)) if s == w => return body,
                (Err(_), None) => return String::new(),
                (r, _) => last = format!("{r:?}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{addr} never answered {want:?}; last: {last}");
    }
    // The control loop's side: its one view, published after every step.
    let mut view = ProxyView::new();
    let mut step = |node: Option<&str>| {
        view.observe(&r.snapshot(), node);
        feed.publish(&view);
    };
    w.apply(ClusterObject::from(lb("web", port)));
    w.apply(ClusterObject::from(eps(
        "web",
        vec![endpoint("10.244.1.10", true, Some("node-a"))],
    )));
    step(NODE);
    let body = until_status(addr, Some(200)).await;
    assert!(body.contains("\"localEndpoints\": 1"), "{body}");
    w.apply(ClusterObject::from(eps(
        "web",
        vec![endpoint("10.244.1.10", true, Some("node-b"))],
    )));
    step(NODE);
    until_status(addr, Some(503)).await;
    // The control loop's node name changes (hostnameOverride names the node the endpoint is on).
    step(Some("node-b"));
    until_status(addr, Some(200)).await;
    w.delete(Kind::Service, &key("web"));
    step(Some("node-b"));
    until_status(addr, None).await;
    task.abort();
}

#[test]
fn steps_from_the_feed_fold_and_match_following_the_view() {
    let (mut w, r) = new_cache([Kind::Service, Kind::EndpointSlice]);
    w.apply(ClusterObject::from(lb("web", 32000)));
    w.apply(ClusterObject::from(lb("api", 32001)));
    let (feed, mut views) = crate::ipvs::view::view_feed();
    let mut view = ProxyView::new();
    let mut direct = HealthCheckIndex::new();
    let mut fed = HealthCheckIndex::new();
    assert!(views.try_next().is_none(), "nothing published yet");
    view.observe(&r.snapshot(), NODE);
    feed.publish(&view);
    direct.observe(&view);
    assert_eq!(
        fed.apply(views.try_next().expect("first step")),
        [32000, 32001].into()
    );
    assert_eq!(fed.targets(), direct.targets());
    // Nothing moved: nothing to take.
    view.observe(&r.snapshot(), NODE);
    feed.publish(&view);
    assert!(views.try_next().is_none());
    // Two steps taken at once fold into one: the endpoint arrives, then `api` goes.
    w.apply(ClusterObject::from(eps(
        "web",
        vec![endpoint("10.244.1.10", true, Some("node-a"))],
    )));
    view.observe(&r.snapshot(), NODE);
    feed.publish(&view);
    w.delete(Kind::Service, &key("api"));
    view.observe(&r.snapshot(), NODE);
    feed.publish(&view);
    assert_eq!(
        fed.apply(views.try_next().expect("folded step")),
        [32000, 32001].into()
    );
    assert_eq!(fed.targets(), [(32000, target("web", 1))].into());
    assert_eq!(fed.targets(), targets_of(&r.snapshot(), NODE));
}

#[tokio::test]
async fn the_unspecified_address_serves_ipv4_too() {
    let port = free_port();
    let (mut w, r) = new_cache([Kind::Service, Kind::EndpointSlice]);
    w.apply(ClusterObject::from(lb("web", port)));
    let mut server = HealthCheckServer::new(Arc::new(|| true));
    let mut index = HealthCheckIndex::new();
    let mut view = ProxyView::new();
    let changed = observe(&mut index, &mut view, &r.snapshot(), NODE);
    let everywhere = listen_addresses(&ProxyConfig::default(), &[]);
    server.update(&index, &changed, &everywhere);
    assert!(!server.has_failed(), "{:?}", server.failed());
    let (status, _, body) = get(SocketAddr::from(([127, 0, 0, 1], port)), "/")
        .await
        .unwrap();
    assert_eq!(status, 503, "no local endpoint: {body}");
}

#[tokio::test]
async fn the_driver_ends_when_the_control_loop_goes_before_its_first_view() {
    let (_config_tx, config_rx) = watch::channel(ProxyConfig::default());
    let (feed, views) = crate::ipvs::view::view_feed();
    let task = spawn(
        views,
        config_rx,
        HealthCheckOptions {
            node_addresses: None,
            listen: Some(LOOPBACK.to_vec()),
            proxy_healthy: Arc::new(|| true),
        },
    );
    drop(feed);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the driver must end, not wait or spin")
        .unwrap();
}
