use std::net::IpAddr;
use std::sync::Arc;

use super::*;
use crate::cache::{CacheWriter, new_cache};
use crate::ipvs::desired::{NodeInfo, build};
use crate::ipvs::fixtures::{endpoint, service, slice};
use crate::ipvs::memory::{MemoryAddresses, MemoryIpvs};
use crate::ipvs::table::{DestConns, Scheduler};
use crate::model::{ClusterObject, Kind, Protocol};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(addr: &str, port: u16) -> ServiceId {
    ServiceId::new(Protocol::Tcp, ip(addr), port)
}

fn dest(addr: &str, port: u16) -> DestId {
    DestId::new(ip(addr), port)
}

fn node() -> NodeInfo {
    NodeInfo {
        node_name: Some(Arc::from("node-a")),
        local_addresses: vec![ip("192.168.1.5")],
    }
}

struct World {
    writer: CacheWriter,
    ipvs: MemoryIpvs,
    addrs: MemoryAddresses,
    rec: Reconciler,
    config: ProxyConfig,
    desired: DesiredState,
}

impl World {
    fn new(ipvs: MemoryIpvs, addrs: MemoryAddresses) -> Self {
        let (writer, _r) = new_cache([Kind::Service, Kind::EndpointSlice]);
        let rec = Reconciler::new(Box::new(ipvs.clone()), Box::new(addrs.clone()));
        let config = ProxyConfig::default();
        let desired = build(&writer.snapshot(), &config, &node());
        Self {
            writer,
            ipvs,
            addrs,
            rec,
            config,
            desired,
        }
    }

    fn apply(&mut self, o: ClusterObject) {
        self.writer.apply(o);
    }

    fn full(&mut self) -> SyncReport {
        self.desired = build(&self.writer.snapshot(), &self.config, &node());
        self.rec.full_sync(&self.desired, &self.config).unwrap()
    }

    fn incremental(&mut self) -> SyncReport {
        let delta = self
            .desired
            .update(&self.writer.snapshot(), &self.config, &node());
        self.rec
            .sync_delta(&self.desired, &delta, &self.config)
            .unwrap()
    }

    fn dests_of(&self, id: &ServiceId) -> Vec<(String, u32)> {
        self.ipvs
            .service(id)
            .map(|s| {
                s.dests
                    .iter()
                    .map(|(d, (p, _))| (d.to_string(), p.weight))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn web(eps: &[&str]) -> Vec<ClusterObject> {
    vec![
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
            eps.iter()
                .map(|a| endpoint(a, true, Some("node-a")))
                .collect(),
        )),
    ]
}

#[test]
fn first_sync_programs_everything_and_binds_addresses() {
    let mut w = World::new(
        MemoryIpvs::new(),
        MemoryAddresses::new(vec![ip("192.168.1.5")]),
    );
    for o in web(&["10.244.1.10", "10.244.2.11"]) {
        w.apply(o);
    }
    let r = w.full();
    assert!(r.full);
    assert_eq!(
        (r.services_added, r.dests_added, r.addresses_bound),
        (1, 2, 1)
    );
    assert!(w.addrs.has_link());
    assert_eq!(
        w.addrs.bound_now().into_iter().collect::<Vec<_>>(),
        [ip("10.96.0.20")]
    );
    assert_eq!(
        w.dests_of(&tcp("10.96.0.20", 80)),
        [
            ("10.244.1.10:8080".into(), 1),
            ("10.244.2.11:8080".into(), 1)
        ]
    );
    // A second full sync finds nothing to do.
    w.ipvs.clear_log();
    let r = w.full();
    assert_eq!(r.operations(), 0);
    assert!(w.ipvs.log().is_empty());
}

#[test]
fn restart_adopts_existing_rules_without_touching_unchanged_ones_and_removes_stale_last() {
    let ipvs = MemoryIpvs::new();
    let addrs = MemoryAddresses::new(vec![]);
    // State left by a previous run: web as desired, plus a stale service and address.
    let params = ServiceParams {
        scheduler: Scheduler::Rr,
        flags: 0,
        timeout: 0,
    };
    ipvs.tamper(&[
        IpvsOp::AddService(tcp("10.96.0.20", 80), params),
        IpvsOp::AddDest(
            tcp("10.96.0.20", 80),
            dest("10.244.1.10", 8080),
            DestParams::masq(1),
        ),
        IpvsOp::AddService(tcp("10.96.0.99", 80), params),
        IpvsOp::AddDest(
            tcp("10.96.0.99", 80),
            dest("10.244.3.3", 80),
            DestParams::masq(1),
        ),
        IpvsOp::AddService(tcp("10.200.0.1", 80), params),
    ]);
    addrs.preset(&[ip("10.96.0.20"), ip("10.96.0.99")]);
    let mut w = World::new(ipvs, addrs);
    w.config.exclude_cidrs = vec!["10.200.0.0/16".parse().unwrap()];
    for o in web(&["10.244.1.10", "10.244.2.11"]) {
        w.apply(o);
    }
    let r = w.full();
    assert_eq!(r.services_added, 0, "web adopted, not re-created");
    assert_eq!(r.dests_added, 1);
    assert_eq!(r.services_deleted, 1);
    let log = w.ipvs.log();
    assert_eq!(
        log,
        [
            IpvsOp::AddDest(
                tcp("10.96.0.20", 80),
                dest("10.244.2.11", 8080),
                DestParams::masq(1)
            ),
            IpvsOp::DeleteService(tcp("10.96.0.99", 80)),
        ],
        "only the difference, stale deletion last"
    );
    assert!(
        w.ipvs.service(&tcp("10.200.0.1", 80)).is_some(),
        "excludeCIDRs untouched"
    );
    assert_eq!(
        w.addrs.bound_now().into_iter().collect::<Vec<_>>(),
        [ip("10.96.0.20")]
    );
    assert_eq!(w.addrs.counts(), (0, 1));
}

#[test]
fn incremental_sync_touches_only_what_changed() {
    let mut w = World::new(MemoryIpvs::new(), MemoryAddresses::new(vec![]));
    for o in web(&["10.244.1.10"]) {
        w.apply(o);
    }
    for i in 0..50 {
        w.apply(ClusterObject::from(service(
            "default",
            &format!("s{i}"),
            &format!("10.96.1.{i}"),
            &[("", Protocol::Tcp, 80, 80)],
        )));
    }
    w.full();
    w.ipvs.clear_log();
    let batches = w.ipvs.batches();
    for o in web(&["10.244.1.10", "10.244.1.11"]) {
        w.apply(o);
    }
    let r = w.incremental();
    assert!(!r.full);
    assert_eq!(
        w.ipvs.log(),
        [IpvsOp::AddDest(
            tcp("10.96.0.20", 80),
            dest("10.244.1.11", 8080),
            DestParams::masq(1)
        )]
    );
    assert_eq!(w.ipvs.batches(), batches + 1, "one batch");
}

#[test]
fn deleting_a_service_removes_its_virtual_server_and_address_at_once() {
    let mut w = World::new(MemoryIpvs::new(), MemoryAddresses::new(vec![]));
    for o in web(&["10.244.1.10"]) {
        w.apply(o);
    }
    w.full();
    w.writer.delete(
        Kind::Service,
        &crate::model::ObjectKey::new("default", "web"),
    );
    let r = w.incremental();
    assert_eq!((r.services_deleted, r.addresses_unbound), (1, 1));
    assert!(w.ipvs.services().is_empty());
    assert!(w.addrs.bound_now().is_empty());
}

#[test]
fn removed_tcp_real_server_drains_then_goes_and_a_returning_one_is_restored() {
    let mut w = World::new(MemoryIpvs::new(), MemoryAddresses::new(vec![]));
    for o in web(&["10.244.1.10", "10.244.1.11"]) {
        w.apply(o);
    }
    w.full();
    let svc = tcp("10.96.0.20", 80);
    let gone = dest("10.244.1.11", 8080);
    w.ipvs.set_conns(
        &svc,
        &gone,
        DestConns {
            active: 2,
            inactive: 1,
            persistent: 0,
        },
    );

    for o in web(&["10.244.1.10"]) {
        w.apply(o);
    }
    w.incremental();
    assert_eq!(
        w.dests_of(&svc),
        [
            ("10.244.1.10:8080".into(), 1),
            ("10.244.1.11:8080".into(), 0)
        ],
        "drained to weight 0, not deleted"
    );
    assert_eq!(w.rec.draining_count(), 1);
    // Still has connections: stays.
    let r = w.rec.reap_terminating().unwrap();
    assert_eq!(r.dests_deleted, 0);

    // It comes back: weight restored in place, no delete/add.
    w.ipvs.clear_log();
    for o in web(&["10.244.1.10", "10.244.1.11"]) {
        w.apply(o);
    }
    w.incremental();
    assert_eq!(
        w.ipvs.log(),
        [IpvsOp::UpdateDest(svc, gone, DestParams::masq(1))]
    );
    assert_eq!(w.rec.draining_count(), 0);

    // Removed again; connections end; the reaper deletes it.
    for o in web(&["10.244.1.10"]) {
        w.apply(o);
    }
    w.incremental();
    w.ipvs.set_conns(&svc, &gone, DestConns::default());
    let r = w.rec.reap_terminating().unwrap();
    assert_eq!(r.dests_deleted, 1);
    assert_eq!(w.dests_of(&svc), [("10.244.1.10:8080".into(), 1)]);
    assert_eq!(w.rec.draining_count(), 0);
}

#[test]
fn removed_udp_real_server_is_deleted_at_once() {
    let mut w = World::new(MemoryIpvs::new(), MemoryAddresses::new(vec![]));
    let svc = service(
        "kube-system",
        "dns",
        "10.96.0.10",
        &[("dns", Protocol::Udp, 53, 53)],
    );
    let mk = |eps: &[&str]| {
        slice(
            "kube-system",
            "dns-1",
            "dns",
            &[("dns", Protocol::Udp, 53)],
            eps.iter().map(|a| endpoint(a, true, None)).collect(),
        )
    };
    w.apply(ClusterObject::from(svc));
    w.apply(ClusterObject::from(mk(&["10.244.0.5", "10.244.0.6"])));
    w.full();
    w.apply(ClusterObject::from(mk(&["10.244.0.5"])));
    let r = w.incremental();
    assert_eq!(r.dests_deleted, 1);
    assert_eq!(w.rec.draining_count(), 0);
    let id = ServiceId::new(Protocol::Udp, ip("10.96.0.10"), 53);
    assert_eq!(w.ipvs.service(&id).unwrap().dests.len(), 1);
}

#[test]
fn periodic_full_sync_repairs_drift_made_by_hand() {
    let mut w = World::new(MemoryIpvs::new(), MemoryAddresses::new(vec![]));
    for o in web(&["10.244.1.10", "10.244.1.11"]) {
        w.apply(o);
    }
    w.full();
    let svc = tcp("10.96.0.20", 80);
    // `ipvsadm -D`, then a weight edited by hand on a re-added copy.
    w.ipvs.tamper(&[IpvsOp::DeleteService(svc)]);
    // An incremental sync with no cache change does not notice...
    assert_eq!(w.incremental().operations(), 0);
    // ...the periodic full resync does.
    let r = w.full();
    assert_eq!((r.services_added, r.dests_added), (1, 2));
    w.ipvs.tamper(&[IpvsOp::UpdateDest(
        svc,
        dest("10.244.1.10", 8080),
        DestParams::masq(7),
    )]);
    let r = w.full();
    assert_eq!(r.dests_updated, 1);
    assert_eq!(w.dests_of(&svc)[0].1, 1);
}

#[test]
fn scheduler_change_updates_every_virtual_server_in_place() {
    let mut w = World::new(MemoryIpvs::new(), MemoryAddresses::new(vec![]));
    for o in web(&["10.244.1.10"]) {
        w.apply(o);
    }
    w.apply(ClusterObject::from(service(
        "default",
        "other",
        "10.96.0.40",
        &[("", Protocol::Tcp, 443, 8443)],
    )));
    w.full();
    w.ipvs.clear_log();
    w.config.scheduler = Scheduler::Wrr;
    let r = w.full();
    assert_eq!(r.services_updated, 2);
    assert_eq!(r.operations(), 2, "no delete/add");
    assert!(
        w.ipvs
            .log()
            .iter()
            .all(|op| matches!(op, IpvsOp::UpdateService(_, p) if p.scheduler == Scheduler::Wrr))
    );
}

#[test]
fn a_failed_operation_forces_the_next_sync_to_reread_the_kernel() {
    let mut w = World::new(MemoryIpvs::new(), MemoryAddresses::new(vec![]));
    for o in web(&["10.244.1.10"]) {
        w.apply(o);
    }
    w.full();
    // Someone deletes the service behind our back; an incremental add of a dest then fails.
    w.ipvs
        .tamper(&[IpvsOp::DeleteService(tcp("10.96.0.20", 80))]);
    for o in web(&["10.244.1.10", "10.244.1.11"]) {
        w.apply(o);
    }
    let r = w.incremental();
    assert_eq!(r.failures, 1);
    assert!(w.rec.needs_full());
    let r = w.incremental();
    assert!(r.full);
    assert_eq!(w.dests_of(&tcp("10.96.0.20", 80)).len(), 2);
}

#[test]
fn a_new_virtual_server_shares_the_desired_real_servers_minus_those_the_kernel_refused() {
    let id = tcp("10.96.0.20", 80);
    // A clean start: the mirror holds the desired list itself, not a copy.
    let mut w = World::new(MemoryIpvs::new(), MemoryAddresses::new(vec![]));
    for o in web(&["10.244.1.10", "10.244.1.11", "10.244.1.12"]) {
        w.apply(o);
    }
    let r = w.full();
    assert_eq!((r.dests_added, r.failures), (3, 0));
    let (dests, shared) = w.rec.mirrored_dests(&id, &w.desired).unwrap();
    assert_eq!(dests.len(), 3);
    assert!(shared, "the mirror copied the desired real servers");

    // The kernel refuses one real server of a new virtual server: the mirror says what the
    // kernel has, two of the three.
    let ipvs = MemoryIpvs::new();
    let mut w = World::new(ipvs.clone(), MemoryAddresses::new(vec![]));
    for o in web(&["10.244.1.10", "10.244.1.11", "10.244.1.12"]) {
        w.apply(o);
    }
    let desired = build(&w.writer.snapshot(), &w.config, &node());
    let (d, p) = desired.server(&id).unwrap().dests.iter().nth(1).unwrap();
    let refused = IpvsOp::AddDest(id, *d, *p);
    ipvs.refuse(refused);
    let r = w.full();
    assert_eq!((r.services_added, r.dests_added, r.failures), (1, 2, 1));
    let IpvsOp::AddDest(_, refused_dest, _) = refused else {
        unreachable!()
    };
    let (dests, shared) = w.rec.mirrored_dests(&id, &w.desired).unwrap();
    assert_eq!(
        dests,
        [dest("10.244.1.10", 8080), dest("10.244.1.12", 8080)],
        "the mirror must not claim the refused {refused_dest}"
    );
    assert!(!shared);
    assert_eq!(w.dests_of(&id).len(), 2);
}
