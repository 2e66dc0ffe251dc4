//! The per-service inputs of the host rules that are not in the IPVS table (kube-proxy keeps
//! them in ipsets of their own): health-check node ports, `loadBalancerSourceRanges`, and the
//! endpoints on this node (the only ones that can hairpin).
//!
//! [`ExtrasIndex`] follows the cache incrementally (only the services a snapshot's
//! `changes_since` names are looked at again) and yields the [`HostExtras`] for the host setup.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::cache::{ServiceChangeTracker, Snapshot};
use crate::model::{ObjectKey, Protocol, Service, ServiceType};

/// Inputs of the host rules that are not in the IPVS table: per-service settings kube-proxy keeps
/// in ipsets of their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostExtras {
    /// `healthCheckNodePort`s of `externalTrafficPolicy: Local` LoadBalancer services: accepted in
    /// filter INPUT (ipset `KUBE-HEALTH-CHECK-NODE-PORT`, chain filter `KUBE-NODE-PORT`).
    pub health_check_node_ports: BTreeSet<u16>,
    /// Load-balancer ingress ports restricted by `loadBalancerSourceRanges`.
    pub source_ranges: Vec<SourceRanges>,
    /// Addresses of the endpoints on this node: only they can hairpin, so only they go into
    /// `KUBE-LOOP-BACK` (as kube-proxy does; all endpoints of a large cluster would overflow
    /// the set's `maxelem`). `None` (node unknown): every endpoint.
    pub local_endpoints: Option<BTreeSet<IpAddr>>,
}

/// One load-balancer ingress `ip:port` that only sources in `allowed` may reach (a Service's
/// `loadBalancerSourceRanges`, for one of its ports and ingress IPs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRanges {
    /// Ingress IP (`status.loadBalancer.ingress[].ip`).
    pub ip: IpAddr,
    /// Protocol of the port.
    pub protocol: Protocol,
    /// Service port.
    pub port: u16,
    /// Allowed source networks.
    pub allowed: Vec<IpNetwork>,
}

impl SourceRanges {
    pub(crate) fn ip_port(&self) -> String {
        format!("{},{}:{}", self.ip, self.protocol.as_lower(), self.port)
    }

    /// Whether this node may reach the ingress itself: one of its addresses is in an allowed
    /// range. The node's own packets to the ingress IP (bound to kube-ipvs0) leave with that IP
    /// as their source, so kube-proxy then allows source = ingress IP (`KUBE-LOAD-BALANCER-SOURCE-IP`)
    /// and otherwise drops them on the way out (`KUBE-IPVS-OUT-FILTER`).
    pub(crate) fn allows_node(&self, node_addresses: &[IpAddr]) -> bool {
        self.allowed
            .iter()
            .any(|net| node_addresses.iter().any(|a| net.contains(*a)))
    }
}

/// What one Service contributes to the [`HostExtras`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceExtras {
    health_check_node_port: Option<u16>,
    source_ranges: Vec<SourceRanges>,
    local_endpoints: Vec<IpAddr>,
}

/// The [`HostExtras`] contribution of `svc`, if any. Services another proxy owns (label
/// `service.kubernetes.io/service-proxy-name`) contribute nothing, as for the IPVS table.
fn service_extras(snapshot: &Snapshot, svc: &Service, node: Option<&str>) -> Option<ServiceExtras> {
    if svc.service_proxy_name.is_some() {
        return None;
    }
    // Only the ports a health-check server listens on (kube-proxy's `NeedsHealthCheck`:
    // LoadBalancer with `externalTrafficPolicy: Local`), as kube-proxy fills this set.
    let health_check_node_port = super::healthcheck::health_check_port(svc);
    let mut source_ranges = Vec::new();
    if svc.service_type == ServiceType::LoadBalancer && !svc.load_balancer_source_ranges.is_empty()
    {
        // The ingress IPs the IPVS table captures: `ipMode: VIP`, of the Service's families.
        for ip in super::desired::load_balancer_vips(svc)
            .filter(|ip| super::desired::of_service_family(svc, ip))
        {
            // kube-proxy keeps the ranges of the proxier's family only; with none left, the
            // ingress is not fenced at all (rather than closed to everyone).
            let allowed: Vec<_> = svc
                .load_balancer_source_ranges
                .iter()
                .filter(|net| net.is_ipv4() == ip.is_ipv4())
                .copied()
                .collect();
            if allowed.is_empty() {
                continue;
            }
            for port in &svc.ports {
                source_ranges.push(SourceRanges {
                    ip: *ip,
                    protocol: port.protocol,
                    port: port.port,
                    allowed: allowed.clone(),
                });
            }
        }
    }
    let mut local_endpoints = Vec::new();
    if let Some(me) = node {
        for slice in snapshot.endpoint_slices_for(&svc.key) {
            for ep in &slice.endpoints {
                if ep.node_name.as_deref() == Some(me)
                    && let Some(addr) = ep.addresses.first()
                {
                    local_endpoints.push(*addr);
                }
            }
        }
    }
    (health_check_node_port.is_some() || !source_ranges.is_empty() || !local_endpoints.is_empty())
        .then_some(ServiceExtras {
            health_check_node_port,
            source_ranges,
            local_endpoints,
        })
}

/// The services that contribute [`HostExtras`], kept in step with cache snapshots.
#[derive(Debug, Default)]
pub struct ExtrasIndex {
    tracker: ServiceChangeTracker,
    services: BTreeMap<ObjectKey, ServiceExtras>,
}

impl ExtrasIndex {
    /// An empty index (the first [`observe`](Self::observe) reads every service).
    pub fn new() -> Self {
        Self::default()
    }

    /// Brings the index up to `snapshot`: only the services changed since the last observed
    /// generation are read again (all of them the first time or when the journal no longer
    /// reaches back). Returns whether the resulting [`HostExtras`] may have changed.
    /// `node` is this node's name (endpoints on it are local); a new name reads every service.
    pub fn observe(&mut self, snapshot: &Snapshot, node: Option<&str>) -> bool {
        let mut changed = false;
        match self.tracker.advance(snapshot, node) {
            Some(keys) => {
                for key in keys {
                    let now = snapshot
                        .service(&key)
                        .and_then(|s| service_extras(snapshot, s, node));
                    let before = match now.clone() {
                        Some(e) => self.services.insert(key, e),
                        None => self.services.remove(&key),
                    };
                    changed |= before != now;
                }
            }
            None => {
                let services: BTreeMap<ObjectKey, ServiceExtras> = snapshot
                    .services()
                    .filter_map(|s| service_extras(snapshot, s, node).map(|e| (s.key.clone(), e)))
                    .collect();
                changed = services != self.services;
                self.services = services;
            }
        }
        changed
    }

    /// The host rules' inputs for the services observed so far.
    pub fn extras(&self) -> HostExtras {
        let mut extras = HostExtras {
            local_endpoints: self.tracker.node().map(|_| BTreeSet::new()),
            ..HostExtras::default()
        };
        for e in self.services.values() {
            if let Some(local) = extras.local_endpoints.as_mut() {
                local.extend(e.local_endpoints.iter().copied());
            }
            extras
                .health_check_node_ports
                .extend(e.health_check_node_port);
            extras.source_ranges.extend(e.source_ranges.iter().cloned());
        }
        extras
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClusterObject, Kind, Protocol, TrafficPolicy};
    use crate::new_cache;

    fn lb(name: &str, ranges: &[&str], health: Option<u16>) -> ClusterObject {
        let mut svc = crate::ipvs::fixtures::service(
            "default",
            name,
            "10.96.0.10",
            &[("http", Protocol::Tcp, 80, 8080)],
        );
        svc.service_type = ServiceType::LoadBalancer;
        svc.load_balancer_ips = vec!["203.0.113.10".parse().unwrap()];
        svc.load_balancer_source_ranges = ranges.iter().map(|r| r.parse().unwrap()).collect();
        svc.health_check_node_port = health;
        if health.is_some() {
            svc.external_traffic_policy = TrafficPolicy::Local;
        }
        ClusterObject::Service(svc)
    }

    #[test]
    fn follows_services_incrementally() {
        let (mut w, r) = new_cache([Kind::Service]);
        w.apply(lb("open", &[], None));
        let mut index = ExtrasIndex::new();
        assert!(!index.observe(&r.snapshot(), None), "nothing to contribute");
        assert_eq!(index.extras(), HostExtras::default());

        w.apply(lb(
            "fenced",
            &["192.0.2.0/24", "2001:db8::/32"],
            Some(32000),
        ));
        assert!(index.observe(&r.snapshot(), None));
        let extras = index.extras();
        assert_eq!(
            extras
                .health_check_node_ports
                .into_iter()
                .collect::<Vec<_>>(),
            [32000]
        );
        assert_eq!(extras.source_ranges.len(), 1, "one ingress IP x one port");
        let sr = &extras.source_ranges[0];
        assert_eq!(sr.ip.to_string(), "203.0.113.10");
        assert_eq!(sr.port, 80);
        assert_eq!(
            sr.allowed.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            ["192.0.2.0/24"],
            "only ranges of the ingress IP's family"
        );

        // An unrelated change leaves the extras alone.
        w.apply(lb("open", &[], None));
        assert!(!index.observe(&r.snapshot(), None));

        // A port set on a service without `externalTrafficPolicy: Local` is not served, so it
        // is not opened either.
        let ClusterObject::Service(mut stray) = lb("stray", &[], Some(31500)) else {
            unreachable!()
        };
        stray.external_traffic_policy = TrafficPolicy::Cluster;
        w.apply(ClusterObject::Service(stray));
        index.observe(&r.snapshot(), None);
        assert!(!index.extras().health_check_node_ports.contains(&31500));
        w.delete(Kind::Service, &ObjectKey::new("default", "stray"));
        index.observe(&r.snapshot(), None);

        w.delete(Kind::Service, &ObjectKey::new("default", "fenced"));
        assert!(index.observe(&r.snapshot(), None));
        assert_eq!(index.extras(), HostExtras::default());
    }

    #[test]
    fn only_this_nodes_endpoints_are_local() {
        use crate::ipvs::fixtures::endpoint;
        use crate::model::{AddressType, EndpointPort, EndpointSlice};
        let (mut w, r) = new_cache([Kind::Service, Kind::EndpointSlice]);
        w.apply(lb("web", &[], None));
        let slice = |eps| EndpointSlice {
            key: ObjectKey::new("default", "web-abc"),
            service_name: Some("web".into()),
            address_type: AddressType::Ipv4,
            ports: vec![EndpointPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: Some(8080),
            }],
            endpoints: eps,
            service_proxy_name: None,
            headless: false,
            resource_version: None,
        };
        w.apply(ClusterObject::EndpointSlice(slice(vec![
            endpoint("10.244.1.10", true, Some("node-a")),
            endpoint("10.244.2.10", true, Some("node-b")),
        ])));
        let mut index = ExtrasIndex::new();
        assert!(index.observe(&r.snapshot(), Some("node-a")));
        let local = |i: &ExtrasIndex| -> Vec<String> {
            let e = i.extras();
            e.local_endpoints
                .unwrap()
                .iter()
                .map(|a| a.to_string())
                .collect()
        };
        assert_eq!(local(&index), ["10.244.1.10"]);
        w.apply(ClusterObject::EndpointSlice(slice(vec![
            endpoint("10.244.1.11", true, Some("node-a")),
            endpoint("10.244.2.10", true, Some("node-b")),
        ])));
        assert!(index.observe(&r.snapshot(), Some("node-a")));
        assert_eq!(local(&index), ["10.244.1.11"]);
        // Another node name: everything read again.
        assert!(index.observe(&r.snapshot(), Some("node-b")));
        assert_eq!(local(&index), ["10.244.2.10"]);
        // No node name: no restriction.
        index.observe(&r.snapshot(), None);
        assert_eq!(index.extras().local_endpoints, None);
    }

    #[test]
    fn services_of_another_proxy_contribute_nothing() {
        let ClusterObject::Service(mut svc) = lb("other", &["192.0.2.0/24"], Some(32001)) else {
            unreachable!()
        };
        svc.service_proxy_name = Some("someone-else".into());
        let (_w, r) = new_cache([Kind::Service]);
        assert_eq!(service_extras(&r.snapshot(), &svc, Some("node-a")), None);
    }
}
