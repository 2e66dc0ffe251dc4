//! The per-service inputs of the host rules that are not in the IPVS table (kube-proxy keeps
//! them in ipsets of their own): health-check node ports and `loadBalancerSourceRanges`.
//!
//! [`ExtrasIndex`] follows the cache incrementally (only the services a snapshot's
//! `changes_since` names are looked at again) and yields the [`HostExtras`] for the host setup.

use std::collections::BTreeMap;

use super::host::{HostExtras, SourceRanges};
use crate::cache::{Change, Snapshot};
use crate::model::{ObjectKey, Service, ServiceType};

/// What one Service contributes to the [`HostExtras`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceExtras {
    health_check_node_port: Option<u16>,
    source_ranges: Vec<SourceRanges>,
}

/// The [`HostExtras`] contribution of `svc`, if any. Services another proxy owns (label
/// `service.kubernetes.io/service-proxy-name`) contribute nothing, as for the IPVS table.
fn service_extras(svc: &Service) -> Option<ServiceExtras> {
    if svc.service_proxy_name.is_some() {
        return None;
    }
    // The API server allocates a health-check node port only to LoadBalancer services with
    // `externalTrafficPolicy: Local`; kube-proxy opens whatever is set.
    let health_check_node_port = svc.health_check_node_port;
    let mut source_ranges = Vec::new();
    if svc.service_type == ServiceType::LoadBalancer && !svc.load_balancer_source_ranges.is_empty()
    {
        for ip in &svc.load_balancer_ips {
            for port in &svc.ports {
                source_ranges.push(SourceRanges {
                    ip: *ip,
                    protocol: port.protocol,
                    port: port.port,
                    allowed: svc
                        .load_balancer_source_ranges
                        .iter()
                        .filter(|net| net.is_ipv4() == ip.is_ipv4())
                        .copied()
                        .collect(),
                });
            }
        }
    }
    (health_check_node_port.is_some() || !source_ranges.is_empty()).then_some(ServiceExtras {
        health_check_node_port,
        source_ranges,
    })
}

/// The services that contribute [`HostExtras`], kept in step with cache snapshots.
#[derive(Debug, Default)]
pub struct ExtrasIndex {
    generation: Option<u64>,
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
    pub fn observe(&mut self, snapshot: &Snapshot) -> bool {
        let changes = self.generation.and_then(|g| snapshot.changes_since(g));
        self.generation = Some(snapshot.generation());
        let mut changed = false;
        match changes {
            Some(changes) => {
                for change in changes {
                    let Change::Service(key) = change else {
                        continue;
                    };
                    let now = snapshot.service(&key).and_then(|s| service_extras(s));
                    let before = match now {
                        Some(e) => self.services.insert(key, e.clone()).filter(|b| *b == e),
                        None => {
                            changed |= self.services.remove(&key).is_some();
                            continue;
                        }
                    };
                    changed |= before.is_none();
                }
            }
            None => {
                let services: BTreeMap<ObjectKey, ServiceExtras> = snapshot
                    .services()
                    .filter_map(|s| service_extras(s).map(|e| (s.key.clone(), e)))
                    .collect();
                changed = services != self.services;
                self.services = services;
            }
        }
        changed
    }

    /// The host rules' inputs for the services observed so far.
    pub fn extras(&self) -> HostExtras {
        let mut extras = HostExtras::default();
        for e in self.services.values() {
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
        assert!(!index.observe(&r.snapshot()), "nothing to contribute");
        assert_eq!(index.extras(), HostExtras::default());

        w.apply(lb(
            "fenced",
            &["192.0.2.0/24", "2001:db8::/32"],
            Some(32000),
        ));
        assert!(index.observe(&r.snapshot()));
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
        assert!(!index.observe(&r.snapshot()));

        w.delete(Kind::Service, &ObjectKey::new("default", "fenced"));
        assert!(index.observe(&r.snapshot()));
        assert_eq!(index.extras(), HostExtras::default());
    }

    #[test]
    fn services_of_another_proxy_contribute_nothing() {
        let ClusterObject::Service(mut svc) = lb("other", &["192.0.2.0/24"], Some(32001)) else {
            unreachable!()
        };
        svc.service_proxy_name = Some("someone-else".into());
        assert_eq!(service_extras(&svc), None);
    }
}
