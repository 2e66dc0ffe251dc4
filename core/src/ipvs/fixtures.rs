//! Builders of projected Services and EndpointSlices for tests and benchmarks of the proxy
//! (including the synthetic large cluster used by the programming benchmark).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::model::{
    AddressType, ClusterObject, Endpoint, EndpointPort, EndpointSlice, ObjectKey, Protocol,
    Service, ServicePort, ServiceType, SessionAffinity, TargetPort, TrafficPolicy,
};

/// A ClusterIP Service with one cluster IP and `ports` as (name, protocol, port, target).
pub fn service(
    ns: &str,
    name: &str,
    cluster_ip: &str,
    ports: &[(&str, Protocol, u16, u16)],
) -> Service {
    Service {
        key: ObjectKey::new(ns, name),
        service_type: ServiceType::ClusterIp,
        cluster_ips: vec![cluster_ip.parse().expect("fixture cluster IP")],
        headless: false,
        ports: ports
            .iter()
            .map(|(n, proto, port, target)| ServicePort {
                name: Arc::from(*n),
                protocol: *proto,
                port: *port,
                target_port: TargetPort::Number(*target),
                node_port: None,
            })
            .collect(),
        external_ips: Vec::new(),
        load_balancer_ips: Vec::new(),
        load_balancer_proxy_ips: Vec::new(),
        load_balancer_hostnames: Vec::new(),
        session_affinity: SessionAffinity::None,
        external_traffic_policy: TrafficPolicy::Cluster,
        internal_traffic_policy: TrafficPolicy::Cluster,
        health_check_node_port: None,
        load_balancer_source_ranges: Vec::new(),
        external_name: None,
        publish_not_ready_addresses: false,
        selector: None,
        labels: Default::default(),
        service_proxy_name: None,
        traffic_distribution: None,
        topology_mode: None,
        resource_version: None,
    }
}

/// An endpoint with one address: `ready` (serving = ready, not terminating), on `node`.
pub fn endpoint(addr: &str, ready: bool, node: Option<&str>) -> Endpoint {
    Endpoint {
        addresses: vec![addr.parse().expect("fixture endpoint address")].into(),
        ready,
        serving: ready,
        terminating: false,
        hostname: None,
        node_name: node.map(Arc::from),
        zone: None,
        target_ref: None,
        hints: None,
    }
}

#[cfg(test)]
/// An endpoint that is terminating but still serving.
pub(crate) fn terminating_endpoint(addr: &str, node: Option<&str>) -> Endpoint {
    Endpoint {
        ready: false,
        serving: true,
        terminating: true,
        ..endpoint(addr, false, node)
    }
}

/// An EndpointSlice of `service` named `name`, with `ports` as (name, protocol, port).
pub fn slice(
    ns: &str,
    name: &str,
    service: &str,
    ports: &[(&str, Protocol, u16)],
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let v6 = endpoints
        .first()
        .and_then(|e| e.addresses.first())
        .is_some_and(IpAddr::is_ipv6);
    EndpointSlice {
        key: ObjectKey::new(ns, name),
        service_name: Some(Arc::from(service)),
        address_type: if v6 {
            AddressType::Ipv6
        } else {
            AddressType::Ipv4
        },
        ports: ports
            .iter()
            .map(|(n, proto, port)| EndpointPort {
                name: Arc::from(*n),
                protocol: *proto,
                port: Some(*port),
            })
            .collect(),
        endpoints,
        service_proxy_name: None,
        headless: false,
        resource_version: None,
    }
}

/// The `i`-th address of 10.96.0.0/12 after 10.96.0.0 + `base`.
fn nth_v4(base: Ipv4Addr, i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + i)
}

/// A synthetic cluster: `services` ClusterIP Services (TCP port 80 → 8080, cluster IPs from
/// 10.96.0.0/12 starting at 10.100.0.1) with `endpoints` ready endpoints each (pod IPs from
/// 10.128.0.0/9), one EndpointSlice per Service, all in namespace `bench`.
pub fn synthetic_cluster(services: u32, endpoints: u32) -> Vec<ClusterObject> {
    let mut out = Vec::with_capacity(services as usize * 2);
    let cluster_base = Ipv4Addr::new(10, 100, 0, 1);
    let pod_base = Ipv4Addr::new(10, 128, 0, 1);
    for s in 0..services {
        let name = format!("svc-{s}");
        let ip = nth_v4(cluster_base, s).to_string();
        out.push(ClusterObject::from(service(
            "bench",
            &name,
            &ip,
            &[("http", Protocol::Tcp, 80, 8080)],
        )));
        let eps = (0..endpoints)
            .map(|e| endpoint(&nth_v4(pod_base, s * endpoints + e).to_string(), true, None))
            .collect();
        out.push(ClusterObject::from(slice(
            "bench",
            &format!("{name}-abcde"),
            &name,
            &[("http", Protocol::Tcp, 8080)],
            eps,
        )));
    }
    out
}
