use std::net::IpAddr;
use std::sync::Arc;

use super::*;
use crate::cache::new_cache;
use crate::ipvs::fixtures::{endpoint, service, slice, terminating_endpoint};
use crate::ipvs::table::{EntryPoint, FLAG_SCHED1, FLAG_SCHED2, Scheduler};
use crate::model::{ClusterObject, Kind, Protocol, ServiceType, SessionAffinity, TrafficPolicy};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(addr: &str, port: u16) -> ServiceId {
    ServiceId::new(Protocol::Tcp, ip(addr), port)
}

fn dests(state: &DesiredState, id: &ServiceId) -> Vec<String> {
    state
        .server(id)
        .unwrap_or_else(|| panic!("no virtual server {id}"))
        .dests
        .keys()
        .map(|d| d.to_string())
        .collect()
}

fn node() -> NodeInfo {
    NodeInfo {
        node_name: Some(Arc::from("node-a")),
        local_addresses: vec![
            ip("192.168.1.5"),
            ip("127.0.0.1"),
            ip("10.0.0.5"),
            ip("fe80::1"),
        ],
    }
}

fn state_of(objects: Vec<ClusterObject>, config: &ProxyConfig) -> DesiredState {
    let (mut w, _r) = new_cache([Kind::Service, Kind::EndpointSlice]);
    w.update(|tx| {
        for o in objects {
            tx.apply(o);
        }
    });
    build(&w.snapshot(), config, &node())
}

fn web() -> (Service, crate::model::EndpointSlice) {
    let svc = service(
        "default",
        "web",
        "10.96.0.20",
        &[("http", Protocol::Tcp, 80, 8080)],
    );
    let sl = slice(
        "default",
        "web-1",
        "web",
        &[("http", Protocol::Tcp, 8080)],
        vec![
            endpoint("10.244.1.10", true, Some("node-a")),
            endpoint("10.244.2.11", true, Some("node-b")),
            endpoint("10.244.1.12", false, Some("node-a")),
        ],
    );
    (svc, sl)
}

use crate::model::Service;

#[test]
fn cluster_ip_gets_one_virtual_server_per_port_with_ready_endpoints_and_a_bound_address() {
    let (mut svc, sl) = web();
    svc.ports.push(crate::model::ServicePort {
        name: Arc::from("dns"),
        protocol: Protocol::Udp,
        port: 53,
        target_port: crate::model::TargetPort::Number(5353),
        node_port: None,
    });
    let mut sl = sl;
    sl.ports.push(crate::model::EndpointPort {
        name: Arc::from("dns"),
        protocol: Protocol::Udp,
        port: Some(5353),
    });
    let st = state_of(
        vec![ClusterObject::from(svc), ClusterObject::from(sl)],
        &ProxyConfig::default(),
    );
    assert_eq!(st.len(), 2);
    assert_eq!(
        dests(&st, &tcp("10.96.0.20", 80)),
        ["10.244.1.10:8080", "10.244.2.11:8080"]
    );
    let udp = ServiceId::new(Protocol::Udp, ip("10.96.0.20"), 53);
    assert_eq!(dests(&st, &udp), ["10.244.1.10:5353", "10.244.2.11:5353"]);
    let vs = st.server(&tcp("10.96.0.20", 80)).unwrap();
    assert_eq!(vs.params.scheduler, Scheduler::Rr);
    assert_eq!(vs.params.flags, 0);
    assert!(
        vs.dests
            .values()
            .all(|p| p.weight == 1 && p.forward == super::super::table::Forward::Masq)
    );
    assert_eq!(
        st.addresses().copied().collect::<Vec<_>>(),
        [ip("10.96.0.20")]
    );
}

#[test]
fn dual_stack_cluster_ips_get_a_virtual_server_each_with_same_family_endpoints() {
    let (mut svc, sl) = web();
    svc.cluster_ips.push(ip("fd00:10:96::14"));
    let sl6 = slice(
        "default",
        "web-v6",
        "web",
        &[("http", Protocol::Tcp, 8080)],
        vec![endpoint("fd00:10:244:1::10", true, Some("node-a"))],
    );
    let st = state_of(
        vec![
            ClusterObject::from(svc),
            ClusterObject::from(sl),
            ClusterObject::from(sl6),
        ],
        &ProxyConfig::default(),
    );
    assert_eq!(
        dests(&st, &tcp("fd00:10:96::14", 80)),
        ["[fd00:10:244:1::10]:8080"]
    );
    assert_eq!(dests(&st, &tcp("10.96.0.20", 80)).len(), 2);
    assert!(st.is_bound(&ip("fd00:10:96::14")));
}

#[test]
fn external_and_load_balancer_ips_get_virtual_servers_and_are_bound_unless_local() {
    let (mut svc, sl) = web();
    svc.service_type = ServiceType::LoadBalancer;
    svc.external_ips = vec![ip("1.2.3.4"), ip("192.168.1.5")];
    svc.load_balancer_ips = vec![ip("203.0.113.10")];
    let st = state_of(
        vec![ClusterObject::from(svc), ClusterObject::from(sl)],
        &ProxyConfig::default(),
    );
    for addr in ["1.2.3.4", "192.168.1.5", "203.0.113.10"] {
        assert_eq!(dests(&st, &tcp(addr, 80)).len(), 2, "{addr}");
    }
    assert_eq!(
        st.server(&tcp("1.2.3.4", 80)).unwrap().entry_point,
        EntryPoint::ExternalIp
    );
    assert_eq!(
        st.server(&tcp("203.0.113.10", 80)).unwrap().entry_point,
        EntryPoint::LoadBalancer
    );
    let bound: Vec<IpAddr> = st.addresses().copied().collect();
    assert_eq!(bound, [ip("1.2.3.4"), ip("10.96.0.20"), ip("203.0.113.10")]);
}

#[test]
fn node_port_has_a_virtual_server_per_node_address_never_bound() {
    let (mut svc, sl) = web();
    svc.service_type = ServiceType::NodePort;
    svc.ports[0].node_port = Some(30080);
    let objects = vec![ClusterObject::from(svc), ClusterObject::from(sl)];
    let st = state_of(objects.clone(), &ProxyConfig::default());
    // Loopback and IPv6 link-local addresses are not node-port addresses.
    let np: Vec<ServiceId> = st
        .servers()
        .filter(|(_, vs)| vs.entry_point == EntryPoint::NodePort)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(np, [tcp("10.0.0.5", 30080), tcp("192.168.1.5", 30080)]);
    assert!(!st.is_bound(&ip("192.168.1.5")));
    assert!(!st.is_bound(&ip("10.0.0.5")));

    let config = ProxyConfig {
        node_port_addresses: vec!["192.168.1.0/24".parse().unwrap()],
        ..ProxyConfig::default()
    };
    let st = state_of(objects, &config);
    let np: Vec<ServiceId> = st
        .servers()
        .filter(|(_, vs)| vs.entry_point == EntryPoint::NodePort)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(np, [tcp("192.168.1.5", 30080)]);
}

#[test]
fn headless_external_name_and_foreign_proxy_services_are_skipped() {
    let (svc, sl) = web();
    let mut headless = svc.clone();
    headless.key = crate::model::ObjectKey::new("default", "headless");
    headless.headless = true;
    headless.cluster_ips.clear();
    let mut external = service(
        "default",
        "ext",
        "10.96.0.21",
        &[("", Protocol::Tcp, 80, 80)],
    );
    external.service_type = ServiceType::ExternalName;
    external.cluster_ips.clear();
    let mut foreign = service(
        "default",
        "foreign",
        "10.96.0.22",
        &[("", Protocol::Tcp, 80, 80)],
    );
    foreign.service_proxy_name = Some(Arc::from("other-proxy"));
    let mut foreign_slice = sl.clone();
    foreign_slice.key = crate::model::ObjectKey::new("default", "web-foreign");
    foreign_slice.service_proxy_name = Some(Arc::from("other-proxy"));
    foreign_slice.endpoints = vec![endpoint("10.244.9.9", true, None)];
    let st = state_of(
        vec![
            ClusterObject::from(svc),
            ClusterObject::from(sl),
            ClusterObject::from(headless),
            ClusterObject::from(external),
            ClusterObject::from(foreign),
            ClusterObject::from(foreign_slice),
        ],
        &ProxyConfig::default(),
    );
    assert_eq!(st.len(), 1);
    assert_eq!(
        dests(&st, &tcp("10.96.0.20", 80)),
        ["10.244.1.10:8080", "10.244.2.11:8080"]
    );
}

#[test]
fn without_ready_endpoints_serving_terminating_ones_are_used() {
    let (svc, mut sl) = web();
    sl.endpoints = vec![
        endpoint("10.244.1.10", false, Some("node-a")),
        terminating_endpoint("10.244.2.11", Some("node-b")),
    ];
    let st = state_of(
        vec![ClusterObject::from(svc), ClusterObject::from(sl)],
        &ProxyConfig::default(),
    );
    assert_eq!(dests(&st, &tcp("10.96.0.20", 80)), ["10.244.2.11:8080"]);
}

#[test]
fn local_traffic_policies_restrict_their_entry_points_to_this_node() {
    let (mut svc, sl) = web();
    svc.service_type = ServiceType::NodePort;
    svc.ports[0].node_port = Some(30080);
    svc.external_ips = vec![ip("1.2.3.4")];
    svc.external_traffic_policy = TrafficPolicy::Local;
    let st = state_of(
        vec![
            ClusterObject::from(svc.clone()),
            ClusterObject::from(sl.clone()),
        ],
        &ProxyConfig::default(),
    );
    assert_eq!(
        dests(&st, &tcp("10.96.0.20", 80)).len(),
        2,
        "cluster IP keeps all"
    );
    assert_eq!(dests(&st, &tcp("1.2.3.4", 80)), ["10.244.1.10:8080"]);
    assert_eq!(dests(&st, &tcp("192.168.1.5", 30080)), ["10.244.1.10:8080"]);
    assert!(st.server(&tcp("1.2.3.4", 80)).unwrap().local_only);

    svc.external_traffic_policy = TrafficPolicy::Cluster;
    svc.internal_traffic_policy = TrafficPolicy::Local;
    let st = state_of(
        vec![ClusterObject::from(svc), ClusterObject::from(sl)],
        &ProxyConfig::default(),
    );
    assert_eq!(dests(&st, &tcp("10.96.0.20", 80)), ["10.244.1.10:8080"]);
    assert_eq!(dests(&st, &tcp("1.2.3.4", 80)).len(), 2);
}

#[test]
fn scheduler_session_affinity_and_maglev_flags_come_through() {
    let (mut svc, sl) = web();
    svc.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 10800,
    };
    let objects = vec![ClusterObject::from(svc), ClusterObject::from(sl)];
    let config = ProxyConfig {
        scheduler: Scheduler::Wrr,
        ..ProxyConfig::default()
    };
    let st = state_of(objects.clone(), &config);
    let p = st.server(&tcp("10.96.0.20", 80)).unwrap().params;
    assert_eq!(
        (p.scheduler, p.flags, p.timeout),
        (Scheduler::Wrr, FLAG_PERSISTENT, 10800)
    );

    let config = ProxyConfig {
        scheduler: Scheduler::Mh,
        ..ProxyConfig::default()
    };
    let st = state_of(objects, &config);
    let p = st.server(&tcp("10.96.0.20", 80)).unwrap().params;
    // kube-proxy sets only `FlagSourceHash` (mh-port) for `mh`, never mh-fallback.
    assert_eq!(p.flags, FLAG_PERSISTENT | FLAG_SCHED2);
    assert_eq!(p.flags & FLAG_SCHED1, 0);
}

#[test]
fn target_ports_come_from_the_slice_port_with_the_service_port_name() {
    let mut svc = service(
        "default",
        "named",
        "10.96.0.30",
        &[("web", Protocol::Tcp, 80, 0)],
    );
    svc.ports[0].target_port = crate::model::TargetPort::Name(Arc::from("http-alt"));
    // Two slices resolve the named port differently (pods with different container ports).
    let a = slice(
        "default",
        "named-a",
        "named",
        &[("web", Protocol::Tcp, 8080), ("other", Protocol::Tcp, 9000)],
        vec![endpoint("10.244.1.1", true, None)],
    );
    let b = slice(
        "default",
        "named-b",
        "named",
        &[("web", Protocol::Tcp, 8081)],
        vec![endpoint("10.244.1.2", true, None)],
    );
    let no_port = slice(
        "default",
        "named-c",
        "named",
        &[("unrelated", Protocol::Tcp, 7000)],
        vec![endpoint("10.244.1.3", true, None)],
    );
    let st = state_of(
        vec![
            ClusterObject::from(svc),
            ClusterObject::from(a),
            ClusterObject::from(b),
            ClusterObject::from(no_port),
        ],
        &ProxyConfig::default(),
    );
    assert_eq!(
        dests(&st, &tcp("10.96.0.30", 80)),
        ["10.244.1.1:8080", "10.244.1.2:8081"]
    );
}

#[test]
fn update_rebuilds_only_changed_services_and_reports_the_delta() {
    let (mut w, _r) = new_cache([Kind::Service, Kind::EndpointSlice]);
    let (svc, sl) = web();
    let other = service(
        "default",
        "other",
        "10.96.0.40",
        &[("", Protocol::Tcp, 443, 8443)],
    );
    w.apply(ClusterObject::from(svc.clone()));
    w.apply(ClusterObject::from(sl.clone()));
    w.apply(ClusterObject::from(other));
    let config = ProxyConfig::default();
    let mut st = build(&w.snapshot(), &config, &node());
    assert_eq!(st.len(), 2);

    // One endpoint becomes ready: only web is rebuilt.
    let mut sl2 = sl.clone();
    sl2.endpoints[2].ready = true;
    sl2.endpoints[2].serving = true;
    w.apply(ClusterObject::from(sl2));
    let delta = st.update(&w.snapshot(), &config, &node());
    assert!(!delta.full);
    assert_eq!(delta.rebuilt, 1);
    assert_eq!(
        delta.services.iter().copied().collect::<Vec<_>>(),
        [tcp("10.96.0.20", 80)]
    );
    assert_eq!(dests(&st, &tcp("10.96.0.20", 80)).len(), 3);
    assert_eq!(st.generation(), w.snapshot().generation());

    // Nothing new: empty delta.
    assert!(st.update(&w.snapshot(), &config, &node()).is_empty());

    // Deleting the service removes its virtual server and address.
    w.delete(Kind::Service, &svc.key);
    let delta = st.update(&w.snapshot(), &config, &node());
    assert!(delta.services.contains(&tcp("10.96.0.20", 80)));
    assert!(delta.addresses.contains(&ip("10.96.0.20")));
    assert!(st.server(&tcp("10.96.0.20", 80)).is_none());
    assert!(!st.is_bound(&ip("10.96.0.20")));
    assert_eq!(st.len(), 1);

    // The incremental result equals a full build.
    let full = build(&w.snapshot(), &config, &node());
    assert_eq!(
        full.servers().collect::<Vec<_>>(),
        st.servers().collect::<Vec<_>>()
    );
}

#[test]
fn two_services_claiming_one_virtual_server_keep_it_until_both_are_gone() {
    let mut a = service("default", "a", "10.96.0.50", &[("", Protocol::Tcp, 80, 80)]);
    a.external_ips = vec![ip("1.2.3.4")];
    let mut b = service("default", "b", "10.96.0.51", &[("", Protocol::Tcp, 80, 80)]);
    b.external_ips = vec![ip("1.2.3.4")];
    let (mut w, _r) = new_cache([Kind::Service]);
    w.apply(ClusterObject::from(a.clone()));
    w.apply(ClusterObject::from(b));
    let config = ProxyConfig::default();
    let mut st = build(&w.snapshot(), &config, &node());
    assert_eq!(st.owners(&tcp("1.2.3.4", 80)).len(), 2);
    w.delete(Kind::Service, &a.key);
    st.update(&w.snapshot(), &config, &node());
    assert!(st.server(&tcp("1.2.3.4", 80)).is_some());
    assert!(st.is_bound(&ip("1.2.3.4")));
}
