//! The per-service inputs of the host rules that are not in the IPVS table (kube-proxy keeps
//! them in ipsets of their own): health-check node ports, `loadBalancerSourceRanges`, and the
//! endpoints on this node (the only ones that can hairpin).
//!
//! [`ExtrasIndex`] follows the proxy's per-Service [`ProxyView`] incrementally (only the services
//! the view read again are looked at) and yields the [`HostExtras`] for the host setup.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use smallvec::SmallVec;

pub use super::view::SourceRanges;
use super::view::{ProxyView, ServiceView};
use crate::model::ObjectKey;

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

/// What one Service contributes to the [`HostExtras`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceExtras {
    health_check_node_port: Option<u16>,
    source_ranges: Vec<SourceRanges>,
    local_endpoints: SmallVec<[IpAddr; 2]>,
}

/// The [`HostExtras`] contribution of one Service's view, if any.
fn service_extras(sv: &ServiceView) -> Option<ServiceExtras> {
    (sv.health_check_node_port.is_some()
        || !sv.source_ranges.is_empty()
        || !sv.local_endpoints.is_empty())
    .then(|| ServiceExtras {
        health_check_node_port: sv.health_check_node_port,
        source_ranges: sv.source_ranges.clone(),
        local_endpoints: sv.local_endpoints.clone(),
    })
}

/// The services that contribute [`HostExtras`], kept in step with a [`ProxyView`].
#[derive(Debug, Default)]
pub struct ExtrasIndex {
    /// The view revision last observed (0: none).
    seen: u64,
    /// Whether the view had a node name then.
    node_known: bool,
    services: BTreeMap<ObjectKey, ServiceExtras>,
}

impl ExtrasIndex {
    /// An empty index (the first [`observe`](Self::observe) reads every service).
    pub fn new() -> Self {
        Self::default()
    }

    /// Brings the index up to `view`: only the services the view read again since the revision
    /// last observed are looked at (all of them the first time, or when the index fell behind
    /// by more than one step). Returns whether the resulting [`HostExtras`] may have changed.
    pub fn observe(&mut self, view: &ProxyView) -> bool {
        let node_known = view.node().is_some();
        let mut changed = node_known != self.node_known;
        self.node_known = node_known;
        match view.changes_since(self.seen) {
            Some(keys) => {
                for key in keys {
                    let now = view.service(key).and_then(|sv| service_extras(sv));
                    let before = match now.clone() {
                        Some(e) => self.services.insert(key.clone(), e),
                        None => self.services.remove(key),
                    };
                    changed |= before != now;
                }
            }
            None => {
                let services: BTreeMap<ObjectKey, ServiceExtras> = view
                    .services()
                    .filter_map(|sv| service_extras(sv).map(|e| (sv.service.key.clone(), e)))
                    .collect();
                changed |= services != self.services;
                self.services = services;
            }
        }
        self.seen = view.revision();
        changed
    }

    /// The host rules' inputs for the services observed so far.
    pub fn extras(&self) -> HostExtras {
        let mut extras = HostExtras {
            local_endpoints: self.node_known.then(BTreeSet::new),
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

impl HostExtras {
    /// The host rules' inputs of every Service in `view`, in one go.
    pub(crate) fn of_view(view: &ProxyView) -> Self {
        let mut index = ExtrasIndex::new();
        index.observe(view);
        index.extras()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Snapshot;
    use crate::model::ServiceType;
    use crate::model::{ClusterObject, Kind, Protocol, TrafficPolicy};
    use crate::new_cache;
    use std::sync::Arc;

    fn step(
        index: &mut ExtrasIndex,
        view: &mut ProxyView,
        snapshot: &Snapshot,
        node: Option<&str>,
    ) -> bool {
        view.observe(snapshot, node);
        index.observe(view)
    }

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
        ClusterObject::from(svc)
    }

    #[test]
    fn follows_services_incrementally() {
        let (mut w, r) = new_cache([Kind::Service]);
        w.apply(lb("open", &[], None));
        let mut index = ExtrasIndex::new();
        let mut view = ProxyView::new();
        assert!(
            !step(&mut index, &mut view, &r.snapshot(), None),
            "nothing to contribute"
        );
        assert_eq!(index.extras(), HostExtras::default());

        w.apply(lb(
            "fenced",
            &["192.0.2.0/24", "2001:db8::/32"],
            Some(32000),
        ));
        assert!(step(&mut index, &mut view, &r.snapshot(), None));
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
        assert!(!step(&mut index, &mut view, &r.snapshot(), None));

        // A port set on a service without `externalTrafficPolicy: Local` is not served, so it
        // is not opened either.
        let ClusterObject::Service(mut stray) = lb("stray", &[], Some(31500)) else {
            unreachable!()
        };
        Arc::make_mut(&mut stray).external_traffic_policy = TrafficPolicy::Cluster;
        w.apply(ClusterObject::from(stray));
        step(&mut index, &mut view, &r.snapshot(), None);
        assert!(!index.extras().health_check_node_ports.contains(&31500));
        w.delete(Kind::Service, &ObjectKey::new("default", "stray"));
        step(&mut index, &mut view, &r.snapshot(), None);

        w.delete(Kind::Service, &ObjectKey::new("default", "fenced"));
        assert!(step(&mut index, &mut view, &r.snapshot(), None));
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
        w.apply(ClusterObject::from(slice(vec![
            endpoint("10.244.1.10", true, Some("node-a")),
            endpoint("10.244.2.10", true, Some("node-b")),
        ])));
        let mut index = ExtrasIndex::new();
        let mut view = ProxyView::new();
        assert!(step(&mut index, &mut view, &r.snapshot(), Some("node-a")));
        let local = |i: &ExtrasIndex| -> Vec<String> {
            let e = i.extras();
            e.local_endpoints
                .unwrap()
                .iter()
                .map(|a| a.to_string())
                .collect()
        };
        assert_eq!(local(&index), ["10.244.1.10"]);
        w.apply(ClusterObject::from(slice(vec![
            endpoint("10.244.1.11", true, Some("node-a")),
            endpoint("10.244.2.10", true, Some("node-b")),
        ])));
        assert!(step(&mut index, &mut view, &r.snapshot(), Some("node-a")));
        assert_eq!(local(&index), ["10.244.1.11"]);
        // Another node name: everything read again.
        assert!(step(&mut index, &mut view, &r.snapshot(), Some("node-b")));
        assert_eq!(local(&index), ["10.244.2.10"]);
        // No node name: no restriction.
        step(&mut index, &mut view, &r.snapshot(), None);
        assert_eq!(index.extras().local_endpoints, None);
    }

    #[test]
    fn services_of_another_proxy_contribute_nothing() {
        let ClusterObject::Service(mut svc) = lb("other", &["192.0.2.0/24"], Some(32001)) else {
            unreachable!()
        };
        Arc::make_mut(&mut svc).service_proxy_name = Some("someone-else".into());
        let (_w, r) = new_cache([Kind::Service]);
        assert_eq!(
            ServiceView::compute(&r.snapshot(), &svc, Some("node-a")),
            None
        );
    }

    /// kube-proxy never reads another proxy's slices (nor FQDN ones), so an endpoint listed there
    /// as on this node is not local for hairpin purposes. Before the shared view, the host rules
    /// read every slice and put such an address into `KUBE-LOOP-BACK`.
    #[test]
    fn another_proxys_slice_does_not_make_an_endpoint_local() {
        use crate::ipvs::desired::{NodeInfo, build};
        use crate::ipvs::fixtures::{endpoint, service, slice};
        use crate::ipvs::host::ipsets_with;
        use crate::ipvs::table::Family;
        let (mut w, r) = new_cache([Kind::Service, Kind::EndpointSlice]);
        w.apply(ClusterObject::from(service(
            "default",
            "web",
            "10.96.0.20",
            &[("http", Protocol::Tcp, 80, 8080)],
        )));
        let ports = [("http", Protocol::Tcp, 8080)];
        w.apply(ClusterObject::from(slice(
            "default",
            "web-ours",
            "web",
            &ports,
            vec![endpoint("10.244.1.10", true, Some("node-b"))],
        )));
        let mut theirs = slice(
            "default",
            "web-theirs",
            "web",
            &ports,
            vec![endpoint("10.244.1.10", true, Some("node-a"))],
        );
        theirs.service_proxy_name = Some("someone-else".into());
        w.apply(ClusterObject::from(theirs));
        let node = NodeInfo {
            node_name: Some(Arc::from("node-a")),
            local_addresses: vec![],
        };
        let desired = build(&r.snapshot(), &crate::ipvs::ProxyConfig::default(), &node);
        let extras = HostExtras::of_view(desired.view());
        assert_eq!(extras.local_endpoints, Some(BTreeSet::new()));
        let sets = ipsets_with(&desired, Family::V4, &extras, &[]);
        let loopback = sets.iter().find(|s| s.name == "KUBE-LOOP-BACK").unwrap();
        assert!(loopback.entries.is_empty(), "{:?}", loopback.entries);
        let cluster = sets.iter().find(|s| s.name == "KUBE-CLUSTER-IP").unwrap();
        assert_eq!(
            cluster.entries.iter().collect::<Vec<_>>(),
            ["10.96.0.20,tcp:80"],
            "the Service itself is still proxied"
        );
    }
}
