//! Endpoints derived from Pods and Service selectors, as the EndpointSlice controller does.
//!
//! A manifest directory may hold Pods (say, a Deployment's pods) instead of hand-written
//! EndpointSlices. For every Service with a selector that no hand-written slice names, this
//! module builds the slices the controller would: one per address family and resolved port set,
//! with the controller's conditions (ready = pod ready and not terminating, serving = pod ready,
//! terminating = being deleted; `publishNotReadyAddresses` makes every endpoint ready).

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use crate::model::project::selector_matches;
use crate::model::{
    AddressType, Endpoint, EndpointPort, EndpointSlice, ObjectKey, Pod, Service, ServiceType,
    TargetPort, TargetRef,
};

/// Builds the EndpointSlices the controller would make for `services` from `pods`, skipping
/// services in `handwritten` (those that already have slices). Output is sorted by slice key.
pub(crate) fn derive_endpoint_slices<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    pods: &[&Pod],
    handwritten: &HashSet<ObjectKey>,
) -> Vec<EndpointSlice> {
    let mut out = Vec::new();
    for svc in services {
        let Some(selector) = svc.selector.as_ref() else {
            continue;
        };
        if svc.service_type == ServiceType::ExternalName || handwritten.contains(&svc.key) {
            continue;
        }
        let members: Vec<&Pod> = pods
            .iter()
            .copied()
            .filter(|p| {
                p.key.namespace == svc.key.namespace && selector_matches(selector, &p.labels)
            })
            .collect();
        for family in families(svc, &members) {
            // Group pods by their resolved port numbers: one slice per distinct port set.
            let mut groups: BTreeMap<Vec<Option<u16>>, Vec<Endpoint>> = BTreeMap::new();
            for pod in &members {
                let Some(ip) = pod.ips.iter().copied().find(|ip| family_of(*ip) == family) else {
                    continue;
                };
                let ports: Vec<Option<u16>> =
                    svc.ports.iter().map(|sp| resolve_port(pod, sp)).collect();
                let ready = svc.publish_not_ready_addresses || (pod.ready && !pod.terminating);
                let hostname = match (&pod.hostname, &pod.subdomain) {
                    (Some(h), Some(sub)) if *sub == svc.key.name => Some(h.clone()),
                    _ => None,
                };
                groups.entry(ports).or_default().push(Endpoint {
                    addresses: vec![ip].into(),
                    ready,
                    serving: svc.publish_not_ready_addresses || pod.ready,
                    terminating: pod.terminating,
                    hostname,
                    node_name: pod.node_name.clone(),
                    zone: None,
                    target_ref: Some(TargetRef {
                        kind: Arc::from("Pod"),
                        namespace: pod.key.namespace.clone(),
                        name: pod.key.name.clone(),
                    }),
                    hints: None,
                });
            }
            if groups.is_empty() {
                // The controller keeps one empty slice so consumers see "no endpoints".
                groups.insert(Vec::new(), Vec::new());
            }
            let family_name = match family {
                AddressType::Ipv6 => "ipv6",
                _ => "ipv4",
            };
            for (index, (ports, mut endpoints)) in groups.into_iter().enumerate() {
                endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
                let name = if index == 0 {
                    format!("{}-derived-{family_name}", svc.key.name)
                } else {
                    format!("{}-derived-{family_name}-{index}", svc.key.name)
                };
                out.push(EndpointSlice {
                    key: ObjectKey::new(svc.key.namespace.clone(), name),
                    service_name: Some(svc.key.name.clone()),
                    address_type: family,
                    ports: svc
                        .ports
                        .iter()
                        .enumerate()
                        .map(|(i, sp)| EndpointPort {
                            name: sp.name.clone(),
                            protocol: sp.protocol,
                            port: ports.get(i).copied().flatten(),
                        })
                        .collect(),
                    endpoints,
                    service_proxy_name: svc.service_proxy_name.clone(),
                    headless: svc.headless,
                    resource_version: None,
                });
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

fn family_of(ip: IpAddr) -> AddressType {
    if ip.is_ipv4() {
        AddressType::Ipv4
    } else {
        AddressType::Ipv6
    }
}

/// The address families of a service: those of its cluster IPs, or (headless) of its pods.
fn families(svc: &Service, pods: &[&Pod]) -> Vec<AddressType> {
    let ips: Vec<IpAddr> = if svc.cluster_ips.is_empty() {
        pods.iter().flat_map(|p| p.ips.iter().copied()).collect()
    } else {
        svc.cluster_ips.clone()
    };
    let mut out = Vec::new();
    for ip in ips {
        let f = family_of(ip);
        if !out.contains(&f) {
            out.push(f);
        }
    }
    if out.is_empty() {
        out.push(AddressType::Ipv4);
    }
    out
}

fn resolve_port(pod: &Pod, sp: &crate::model::ServicePort) -> Option<u16> {
    match &sp.target_port {
        TargetPort::Number(n) => Some(*n),
        TargetPort::Name(name) => pod
            .container_ports
            .iter()
            .find(|cp| cp.name == *name && cp.protocol == sp.protocol)
            .map(|cp| cp.port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClusterObject, project};
    use serde_json::json;

    fn obj(v: serde_json::Value) -> ClusterObject {
        project::from_json(v).unwrap().unwrap()
    }

    #[test]
    fn derives_like_the_controller() {
        let ClusterObject::Service(svc) = obj(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "n"},
            "spec": {"clusterIP": "10.96.0.9", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}))
        else {
            panic!()
        };
        let pod = |name: &str, ip: &str, ready: bool, deleting: bool, ns: &str, app: &str| {
            let mut meta = json!({"name": name, "namespace": ns, "labels": {"app": app}});
            if deleting {
                meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            let ClusterObject::Pod(p) = obj(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                "spec": {"nodeName": "node-a", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}}),
            ) else {
                panic!()
            };
            p
        };
        let pods = [
            pod("a", "10.0.0.1", true, false, "n", "web"),
            pod("b", "10.0.0.2", false, false, "n", "web"),
            pod("c", "10.0.0.3", true, true, "n", "web"),
            pod("d", "10.0.0.4", true, false, "other", "web"),
            pod("e", "10.0.0.5", true, false, "n", "db"),
        ];
        let refs: Vec<&Pod> = pods.iter().map(|p| &**p).collect();
        let slices = derive_endpoint_slices([&*svc], &refs, &HashSet::new());
        assert_eq!(slices.len(), 1);
        let s = &slices[0];
        assert_eq!(s.service_key(), Some(svc.key.clone()));
        assert_eq!(s.ports[0].port, Some(8080));
        let conds: Vec<(String, bool, bool, bool)> = s
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.addresses[0].to_string(),
                    e.ready,
                    e.serving,
                    e.terminating,
                )
            })
            .collect();
        assert_eq!(
            conds,
            vec![
                ("10.0.0.1".into(), true, true, false),
                ("10.0.0.2".into(), false, false, false),
                ("10.0.0.3".into(), false, true, true),
            ]
        );
        let mut hand = HashSet::new();
        hand.insert(svc.key.clone());
        assert!(derive_endpoint_slices([&*svc], &refs, &hand).is_empty());
    }
}
