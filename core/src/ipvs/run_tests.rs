use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::*;
use crate::cache::new_cache;
use crate::ipvs::backend::IpvsOp;
use crate::ipvs::fixtures::{endpoint, service, slice};
use crate::ipvs::memory::{MemoryAddresses, MemoryIpvs};
use crate::ipvs::table::{Scheduler, ServiceId};
use crate::model::{ClusterObject, Kind, ObjectKey, Protocol};

#[derive(Clone, Default)]
struct RecordingHost(Arc<Mutex<Vec<String>>>);

impl HostSetup for RecordingHost {
    fn apply_config(&mut self, config: &ProxyConfig) -> Result<(), BackendError> {
        self.0
            .lock()
            .unwrap()
            .push(format!("config {}", config.scheduler));
        Ok(())
    }
    fn after_sync(
        &mut self,
        desired: &DesiredState,
        _config: &ProxyConfig,
        _node: &NodeInfo,
    ) -> Result<(), BackendError> {
        self.0
            .lock()
            .unwrap()
            .push(format!("sync {}", desired.len()));
        Ok(())
    }
}

fn web(eps: &[&str]) -> [ClusterObject; 2] {
    [
        ClusterObject::from(service(
            "default",
            "web",
            "10.96.0.20",
            &[("http", Protocol::Tcp, 80, 8080)],
        )),
        ClusterObject::from(slice(
            "default",
            "web-1",
            "web",
            &[("http", Protocol::Tcp, 8080)],
            eps.iter().map(|a| endpoint(a, true, None)).collect(),
        )),
    ]
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_the_cache_and_live_config_then_stops_leaving_rules() {
    let (mut writer, reader) = new_cache([Kind::Service, Kind::EndpointSlice]);
    let ipvs = MemoryIpvs::new();
    let addrs = MemoryAddresses::new(vec!["192.168.1.5".parse().unwrap()]);
    let rec = Reconciler::new(Box::new(ipvs.clone()), Box::new(addrs.clone()));
    let host = RecordingHost::default();
    let (config_tx, config_rx) = watch::channel(ProxyConfig::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let status = StatusHandle::default();
    let task = tokio::spawn(run(
        reader,
        rec,
        Some(Box::new(host.clone())),
        config_rx,
        RunOptions::default(),
        status.clone(),
        stop_rx,
    ));
    // Nothing happens before the cache is synced.
    writer.update(|tx| {
        for o in web(&["10.244.1.10"]) {
            tx.apply(o);
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        ipvs.services().is_empty(),
        "no sync before the initial lists"
    );
    writer.update(|tx| {
        tx.mark_synced(Kind::Service);
        tx.mark_synced(Kind::EndpointSlice);
    });
    let id = ServiceId::new(Protocol::Tcp, "10.96.0.20".parse().unwrap(), 80);
    until("first sync", || ipvs.service(&id).is_some()).await;
    assert!(
        addrs
            .bound_now()
            .contains(&"10.96.0.20".parse::<IpAddr>().unwrap())
    );
    // The status is recorded after the sync's last operation: wait for it, then check exactly one.
    until("first sync recorded", || status.get().full_syncs >= 1).await;
    assert_eq!(status.get().full_syncs, 1);

    // An endpoint change is applied incrementally.
    ipvs.clear_log();
    for o in web(&["10.244.1.10", "10.244.1.11"]) {
        writer.apply(o);
    }
    until("new endpoint", || {
        ipvs.service(&id).is_some_and(|s| s.dests.len() == 2)
    })
    .await;
    assert_eq!(ipvs.log().len(), 1);

    // Scheduler "" → wrr takes effect live, in place.
    ipvs.clear_log();
    config_tx.send_modify(|c| c.scheduler = Scheduler::Wrr);
    until("scheduler change", || {
        ipvs.service(&id)
            .is_some_and(|s| s.params.scheduler == Scheduler::Wrr)
    })
    .await;
    assert!(matches!(
        ipvs.log().as_slice(),
        [IpvsOp::UpdateService(_, _)]
    ));
    assert!(host.0.lock().unwrap().contains(&"config wrr".to_string()));

    // Deleting the Service removes it at once.
    writer.delete(Kind::Service, &ObjectKey::new("default", "web"));
    until("service removal", || ipvs.services().is_empty()).await;
    assert!(addrs.bound_now().is_empty());

    // Shutdown leaves the kernel as it is.
    for o in web(&["10.244.1.10"]) {
        writer.apply(o);
    }
    until("re-add", || ipvs.service(&id).is_some()).await;
    stop_tx.send(true).unwrap();
    task.await.unwrap().unwrap();
    assert!(ipvs.service(&id).is_some());
    assert!(status.healthy(Duration::from_secs(30)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_real_servers_are_reaped_by_the_loop() {
    let (mut writer, reader) = new_cache([Kind::Service, Kind::EndpointSlice]);
    for o in web(&["10.244.1.10", "10.244.1.11"]) {
        writer.apply(o);
    }
    writer.update(|tx| {
        tx.mark_synced(Kind::Service);
        tx.mark_synced(Kind::EndpointSlice);
    });
    let ipvs = MemoryIpvs::new();
    let rec = Reconciler::new(
        Box::new(ipvs.clone()),
        Box::new(MemoryAddresses::new(vec![])),
    );
    let (_config_tx, config_rx) = watch::channel(ProxyConfig::default());
    let (_stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(
        reader,
        rec,
        None,
        config_rx,
        RunOptions::default(),
        StatusHandle::default(),
        stop_rx,
    ));
    let id = ServiceId::new(Protocol::Tcp, "10.96.0.20".parse().unwrap(), 80);
    until("first sync", || {
        ipvs.service(&id).is_some_and(|s| s.dests.len() == 2)
    })
    .await;
    let gone = crate::ipvs::table::DestId::new("10.244.1.11".parse().unwrap(), 8080);
    ipvs.set_conns(
        &id,
        &gone,
        crate::ipvs::table::DestConns {
            active: 1,
            inactive: 0,
            persistent: 0,
        },
    );
    for o in web(&["10.244.1.10"]) {
        writer.apply(o);
    }
    until("drained to weight 0", || {
        ipvs.service(&id)
            .is_some_and(|s| s.dests.get(&gone).is_some_and(|d| d.0.weight == 0))
    })
    .await;
    ipvs.set_conns(&id, &gone, Default::default());
    for _ in 0..400 {
        if ipvs.service(&id).is_some_and(|s| s.dests.len() == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        ipvs.service(&id).unwrap().dests.len(),
        1,
        "reaped after its connections ended"
    );
    task.abort();
}

/// A host whose conntrack table is a [`MemoryConntrack`](crate::ipvs::conntrack::MemoryConntrack)
/// shared with the test.
#[derive(Clone, Default)]
struct ConntrackHost(Arc<Mutex<crate::ipvs::conntrack::MemoryConntrack>>);

/// Forwards to the shared table (the trait hands out `&mut dyn`, the test keeps a handle).
struct Shared(Arc<Mutex<crate::ipvs::conntrack::MemoryConntrack>>);

impl crate::ipvs::conntrack::ConntrackBackend for Shared {
    fn delete_matching(
        &mut self,
        filters: &[crate::ipvs::conntrack::ConntrackFilter],
    ) -> Result<crate::ipvs::conntrack::ConntrackReport, BackendError> {
        self.0.lock().unwrap().delete_matching(filters)
    }
}

struct ConntrackHostSetup {
    shared: Shared,
    /// After-sync calls still to defer (as a rate-limited host setup does), and what happened, in order.
    defer: Arc<Mutex<usize>>,
    events: Option<Arc<Mutex<Vec<String>>>>,
}

impl ConntrackHostSetup {
    fn new(shared: Shared) -> Self {
        Self {
            shared,
            defer: Arc::default(),
            events: None,
        }
    }
}

impl HostSetup for ConntrackHostSetup {
    fn apply_config(&mut self, _config: &ProxyConfig) -> Result<(), BackendError> {
        Ok(())
    }
    fn after_sync(
        &mut self,
        _desired: &DesiredState,
        _config: &ProxyConfig,
        _node: &NodeInfo,
    ) -> Result<(), BackendError> {
        let mut defer = self.defer.lock().unwrap();
        let applied = if *defer > 0 {
            *defer -= 1;
            "host deferred"
        } else {
            "host applied"
        };
        if let Some(ev) = &self.events {
            let calls = self.shared.0.lock().unwrap().calls;
            ev.lock()
                .unwrap()
                .push(format!("{applied} (conntrack calls {calls})"));
        }
        Ok(())
    }
    fn has_pending(&self) -> bool {
        self.events.as_ref().is_some_and(|ev| {
            ev.lock()
                .unwrap()
                .last()
                .is_some_and(|e| e.starts_with("host deferred"))
        })
    }
    fn conntrack(&mut self) -> Option<&mut dyn crate::ipvs::conntrack::ConntrackBackend> {
        Some(&mut self.shared)
    }
}

fn dns(eps: &[&str]) -> [ClusterObject; 2] {
    [
        ClusterObject::from(service(
            "kube-system",
            "kube-dns",
            "10.96.0.10",
            &[
                ("dns", Protocol::Udp, 53, 53),
                ("dns-tcp", Protocol::Tcp, 53, 53),
            ],
        )),
        ClusterObject::from(slice(
            "kube-system",
            "kube-dns-1",
            "kube-dns",
            &[("dns", Protocol::Udp, 53), ("dns-tcp", Protocol::Tcp, 53)],
            eps.iter().map(|a| endpoint(a, true, None)).collect(),
        )),
    ]
}

/// The control loop deletes the stale UDP entries of a replaced DNS backend after the IPVS
/// change, leaves TCP entries and the new backend's flows alone, and calls the table only when
/// a UDP virtual server lost a real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_stale_udp_conntrack_entries_after_the_sync() {
    use crate::ipvs::conntrack::{ConntrackEntry, ConntrackTuple};
    let (mut writer, reader) = new_cache([Kind::Service, Kind::EndpointSlice]);
    let ipvs = MemoryIpvs::new();
    let addrs = MemoryAddresses::new(vec!["192.168.1.5".parse().unwrap()]);
    let rec = Reconciler::new(Box::new(ipvs.clone()), Box::new(addrs));
    let host = ConntrackHost::default();
    let entry = |proto: u8, pod: &str, sport: u16| ConntrackEntry {
        protocol: proto,
        orig: ConntrackTuple {
            src: "10.244.2.7".parse().unwrap(),
            dst: "10.96.0.10".parse().unwrap(),
            src_port: sport,
            dst_port: 53,
        },
        reply: ConntrackTuple {
            src: pod.parse().unwrap(),
            dst: "10.244.2.7".parse().unwrap(),
            src_port: 53,
            dst_port: sport,
        },
        zone: 0,
        id: None,
    };
    let stale_udp = entry(17, "10.244.1.10", 40053);
    let tcp = entry(6, "10.244.1.10", 40054);
    let live_udp = entry(17, "10.244.1.11", 40055);
    host.0.lock().unwrap().entries = vec![stale_udp, tcp, live_udp];
    let (_config_tx, config_rx) = watch::channel(ProxyConfig::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let status = StatusHandle::default();
    let task = tokio::spawn(run(
        reader,
        rec,
        Some(Box::new(ConntrackHostSetup::new(Shared(host.0.clone())))),
        config_rx,
        RunOptions::default(),
        status.clone(),
        stop_rx,
    ));
    writer.update(|tx| {
        for o in dns(&["10.244.1.10", "10.244.1.11"]) {
            tx.apply(o);
        }
        tx.mark_synced(Kind::Service);
        tx.mark_synced(Kind::EndpointSlice);
    });
    until("first sync recorded", || status.get().full_syncs >= 1).await;
    assert_eq!(
        host.0.lock().unwrap().calls,
        0,
        "the first sync only records"
    );

    // A new endpoint: nothing is stale, the table is not called.
    for o in dns(&["10.244.1.10", "10.244.1.11", "10.244.1.12"]) {
        writer.apply(o);
    }
    until("second sync", || status.get().syncs >= 2).await;
    assert_eq!(host.0.lock().unwrap().calls, 0);

    // 10.244.1.10 goes: its UDP entry to the cluster IP goes with it, nothing else.
    for o in dns(&["10.244.1.11", "10.244.1.12"]) {
        writer.apply(o);
    }
    until("stale entry deleted", || host.0.lock().unwrap().calls == 1).await;
    assert_eq!(host.0.lock().unwrap().entries, vec![tcp, live_udp]);
    let udp = ServiceId::new(Protocol::Udp, "10.96.0.10".parse().unwrap(), 53);
    assert_eq!(ipvs.service(&udp).map(|s| s.dests.len()), Some(2));
    stop_tx.send(true).unwrap();
    task.await.unwrap().unwrap();
}

/// The stale entries are deleted only once the host setup (ipsets, iptables) is in place, as
/// kube-proxy does at the end of its sync: with the host update deferred (rate limit), the
/// deletion waits for the retry that applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conntrack_cleanup_waits_for_a_deferred_host_update() {
    use crate::ipvs::conntrack::{ConntrackEntry, ConntrackTuple};
    let (mut writer, reader) = new_cache([Kind::Service, Kind::EndpointSlice]);
    let rec = Reconciler::new(
        Box::new(MemoryIpvs::new()),
        Box::new(MemoryAddresses::new(vec!["192.168.1.5".parse().unwrap()])),
    );
    let table = ConntrackHost::default();
    let stale = ConntrackEntry {
        protocol: 17,
        orig: ConntrackTuple {
            src: "10.244.2.7".parse().unwrap(),
            dst: "10.96.0.10".parse().unwrap(),
            src_port: 40053,
            dst_port: 53,
        },
        reply: ConntrackTuple {
            src: "10.244.1.10".parse().unwrap(),
            dst: "10.244.2.7".parse().unwrap(),
            src_port: 53,
            dst_port: 40053,
        },
        zone: 0,
        id: None,
    };
    table.0.lock().unwrap().entries = vec![stale];
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut host = ConntrackHostSetup::new(Shared(table.0.clone()));
    host.events = Some(events.clone());
    let defer = host.defer.clone();
    let (_config_tx, config_rx) = watch::channel(ProxyConfig::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let status = StatusHandle::default();
    let task = tokio::spawn(run(
        reader,
        rec,
        Some(Box::new(host)),
        config_rx,
        RunOptions::default(),
        status.clone(),
        stop_rx,
    ));
    writer.update(|tx| {
        for o in dns(&["10.244.1.10", "10.244.1.11"]) {
            tx.apply(o);
        }
        tx.mark_synced(Kind::Service);
        tx.mark_synced(Kind::EndpointSlice);
    });
    until("first sync recorded", || status.get().full_syncs >= 1).await;
    until("first host update", || !events.lock().unwrap().is_empty()).await;
    assert_eq!(
        table.0.lock().unwrap().calls,
        0,
        "the first sync only records"
    );

    // The next host update is deferred once: the endpoint removal reaches IPVS, the cleanup
    // waits; the retry applies the host update, then deletes the entry.
    *defer.lock().unwrap() = 1;
    events.lock().unwrap().clear();
    for o in dns(&["10.244.1.11"]) {
        writer.apply(o);
    }
    until("stale entry deleted", || table.0.lock().unwrap().calls == 1).await;
    assert!(table.0.lock().unwrap().entries.is_empty());
    let seen = events.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            "host deferred (conntrack calls 0)".to_owned(),
            "host applied (conntrack calls 0)".to_owned()
        ],
        "the deletion came after the applied host update, not after the deferred one"
    );
    stop_tx.send(true).unwrap();
    task.await.unwrap().unwrap();
}

/// A host that follows the desired state's view for its rules' inputs, as `KernelHost` does.
#[derive(Clone, Default)]
struct ExtrasHost(Arc<Mutex<crate::ipvs::extras::ExtrasIndex>>);

impl HostSetup for ExtrasHost {
    fn apply_config(&mut self, _config: &ProxyConfig) -> Result<(), BackendError> {
        Ok(())
    }
    fn after_sync(
        &mut self,
        _desired: &DesiredState,
        _config: &ProxyConfig,
        _node: &NodeInfo,
    ) -> Result<(), BackendError> {
        Ok(())
    }
    fn observe_update(&mut self, desired: &DesiredState, _delta: &Delta) {
        self.0.lock().unwrap().observe(desired.view());
    }
}

/// The control loop computes each changed Service's view once, and the desired state, the host
/// rules' inputs and the health checks all read that one computation.
#[test]
fn each_changed_service_view_is_computed_once_for_all_readers() {
    use crate::ipvs::healthcheck::{HealthCheckIndex, HealthCheckTarget};
    use crate::model::{ServiceType, TrafficPolicy};

    let (mut writer, reader) = new_cache([Kind::Service, Kind::EndpointSlice]);
    let mut lb = service(
        "default",
        "lb",
        "10.96.0.30",
        &[("http", Protocol::Tcp, 80, 8080)],
    );
    lb.service_type = ServiceType::LoadBalancer;
    lb.external_traffic_policy = TrafficPolicy::Local;
    lb.health_check_node_port = Some(32000);
    let lb_slice = |node: &str| {
        ClusterObject::from(slice(
            "default",
            "lb-1",
            "lb",
            &[("http", Protocol::Tcp, 8080)],
            vec![endpoint("10.244.1.30", true, Some(node))],
        ))
    };
    writer.update(|tx| {
        for o in web(&["10.244.1.10"]) {
            tx.apply(o);
        }
        tx.apply(ClusterObject::from(lb.clone()));
        tx.apply(lb_slice("node-b"));
        tx.mark_synced(Kind::Service);
        tx.mark_synced(Kind::EndpointSlice);
    });
    let (feed, mut views) = crate::ipvs::view::view_feed();
    let options = RunOptions {
        node_name: Some("node-a".into()),
        node_addresses: Some(vec!["192.168.1.5".parse().unwrap()]),
        view_feed: Some(feed),
        ..RunOptions::default()
    };
    let host = ExtrasHost::default();
    let mut worker = Worker {
        rec: Reconciler::new(
            Box::new(MemoryIpvs::new()),
            Box::new(MemoryAddresses::new(vec!["192.168.1.5".parse().unwrap()])),
        ),
        host: Some(Box::new(host.clone())),
        desired: DesiredState::default(),
        config: ProxyConfig::default(),
        node: NodeInfo::default(),
        stale: StaleTracker::new(),
        ct_pending: Vec::new(),
    };
    let mut health = HealthCheckIndex::new();
    let lb_target = |local_endpoints| HealthCheckTarget {
        service: ObjectKey::new("default", "lb"),
        local_endpoints,
    };

    worker.full(&reader.snapshot(), &options).unwrap();
    assert_eq!(worker.desired.view().computed, 2, "one per Service");
    assert_eq!(
        health.apply(views.try_next().expect("the first view")),
        [32000].into()
    );
    assert_eq!(health.target(32000), Some(lb_target(0)));

    // The load balancer's endpoint moves to this node: its view is computed once more, and
    // all three readers see the change.
    writer.apply(lb_slice("node-a"));
    worker.incremental(&reader.snapshot(), &options).unwrap();
    assert_eq!(
        worker.desired.view().computed,
        3,
        "only the changed Service"
    );
    let extras = host.0.lock().unwrap().extras();
    assert_eq!(
        extras.local_endpoints,
        Some(["10.244.1.30".parse().unwrap()].into())
    );
    assert_eq!(
        health.apply(views.try_next().expect("the step")),
        [32000].into()
    );
    assert_eq!(health.target(32000), Some(lb_target(1)));

    // Nothing changed: nothing computed, nothing handed on.
    worker.incremental(&reader.snapshot(), &options).unwrap();
    assert_eq!(worker.desired.view().computed, 3);
    assert!(views.try_next().is_none());
}
