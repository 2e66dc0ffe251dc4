//! The zone's options (the CoreDNS `kubernetes` plugin's) and the pod records mode.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::str::FromStr;

use crate::model::selector::LabelSelector;
use crate::model::{ObjectKey, Service};

use super::DEFAULT_TTL;

/// How pod records `a-b-c-d.<ns>.pod.<zone>` are answered (`pods` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodMode {
    /// No pod records (CoreDNS default).
    #[default]
    Disabled,
    /// Any well-formed dashed IP answers with that IP (kube-dns compatible).
    Insecure,
    /// Only IPs of pods that exist in that namespace (needs the Pod kind in the cache).
    Verified,
}

impl FromStr for PodMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "disabled" => Ok(PodMode::Disabled),
            "insecure" => Ok(PodMode::Insecure),
            "verified" => Ok(PodMode::Verified),
            other => Err(format!(
                "pods mode `{other}`: expected disabled, insecure or verified"
            )),
        }
    }
}

/// Options of the cluster zone, equivalent to the CoreDNS `kubernetes` plugin's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneOptions {
    /// Zones served, e.g. `cluster.local`, `in-addr.arpa`, `ip6.arpa`. The first forward
    /// (non-reverse) zone is the primary one, used in PTR targets. Without a reverse zone no PTR
    /// records are served.
    pub zones: Vec<String>,
    /// TTL of every record (0–3600, default 5). The SOA TTL is `min(ttl, 300)`.
    pub ttl: u32,
    /// Name endpoints without hostname by their pod name instead of their dashed IP.
    pub endpoint_pod_names: bool,
    /// Serve no endpoint records (headless services then resolve to nothing).
    pub noendpoints: bool,
    /// NXDOMAIN for ClusterIP services without ready endpoints (`ignore empty_service`).
    pub ignore_empty_service: bool,
    /// Only these namespaces are served (empty: all).
    pub namespaces: BTreeSet<String>,
    /// `labels`: only services whose labels match are served (`None`: all). Their
    /// EndpointSlices follow them.
    pub labels: Option<LabelSelector>,
    /// Pod records mode.
    pub pods: PodMode,
    /// `fallthrough [zones]`: `None` off; `Some(empty)` every zone; else names under these zones
    /// that are not found are passed to the next plugin instead of NXDOMAIN.
    pub fallthrough: Option<Vec<String>>,
    /// The service whose cluster IPs are the addresses of `ns.dns.<zone>` (the NS target).
    pub dns_service: ObjectKey,
    /// Addresses of `ns.dns.<zone>` when `dns_service` does not exist.
    pub ns_fallback: Vec<IpAddr>,
    /// Node-local autopath: index the addresses of the pods whose `spec.nodeName` is this
    /// node (host-network pods left out: they share the node's address) so that `autopath`
    /// knows their namespaces without `pods verified` and without a cluster-wide pod watch.
    /// `None`: off. With `pods verified` every pod is indexed anyway.
    pub autopath_node: Option<String>,
}

impl Default for ZoneOptions {
    fn default() -> Self {
        Self {
            zones: vec![
                "cluster.local".into(),
                "in-addr.arpa".into(),
                "ip6.arpa".into(),
            ],
            ttl: DEFAULT_TTL,
            endpoint_pod_names: false,
            noendpoints: false,
            ignore_empty_service: false,
            namespaces: BTreeSet::new(),
            labels: None,
            pods: PodMode::Disabled,
            fallthrough: None,
            dns_service: ObjectKey::new("kube-system", "kube-dns"),
            ns_fallback: Vec::new(),
            autopath_node: None,
        }
    }
}

impl ZoneOptions {
    /// Options for `cluster_domain` plus both reverse zones, other settings default.
    pub fn for_domain(cluster_domain: &str) -> Self {
        Self {
            zones: vec![
                cluster_domain.trim_end_matches('.').to_ascii_lowercase(),
                "in-addr.arpa".into(),
                "ip6.arpa".into(),
            ],
            ..Self::default()
        }
    }

    /// Whether the zone needs the cache's pods: for pod records or node-local autopath.
    pub(crate) fn uses_pods(&self) -> bool {
        self.pods != PodMode::Disabled || self.autopath_node.is_some()
    }

    /// Whether the zone needs Pods in the cache: `pods verified` or node-local autopath
    /// (`pods insecure` answers from the name alone).
    pub fn needs_pod_kind(&self) -> bool {
        self.pods == PodMode::Verified || self.autopath_node.is_some()
    }

    /// Whether this node's Pods are enough: node-local autopath without `pods verified`
    /// (`pods insecure` answers from the name alone).
    pub fn needs_node_pods_only(&self) -> bool {
        self.autopath_node.is_some() && self.pods != PodMode::Verified
    }

    /// Whether pods count in their namespace (`<ns>.pod.<zone>` exists while one does): with
    /// pod records, unless the cache may hold this node's pods only (node-local autopath
    /// without `pods verified`), which would make the answer differ from node to node.
    pub(crate) fn counts_pods(&self) -> bool {
        match self.pods {
            PodMode::Disabled => false,
            PodMode::Insecure => self.autopath_node.is_none(),
            PodMode::Verified => true,
        }
    }

    /// Whether `client_namespace` can know clients (`pods verified` or node-local autopath).
    pub(crate) fn knows_clients(&self) -> bool {
        self.pods == PodMode::Verified || self.autopath_node.is_some()
    }

    /// Whether `pod` is indexed by address for autopath: every pod with `pods verified`, else
    /// only the non-host-network pods of `autopath_node`.
    pub(crate) fn indexes_client(&self, pod: &crate::model::Pod) -> bool {
        if self.pods == PodMode::Verified {
            return true;
        }
        match &self.autopath_node {
            Some(node) => !pod.host_network && pod.node_name.as_deref() == Some(node.as_str()),
            None => false,
        }
    }

    /// Whether `namespace` is served (the `namespaces` option).
    pub(crate) fn namespace_exposed(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.contains(namespace)
    }

    /// Whether `svc` is served: its namespace is exposed and its labels match `labels`.
    pub(crate) fn service_exposed(&self, svc: &Service) -> bool {
        self.namespace_exposed(&svc.key.namespace)
            && self.labels.as_ref().is_none_or(|l| l.matches(&svc.labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::zone::ClusterZone;
    use crate::dns::zone::fixtures::*;
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;

    #[test]
    fn plugin_options() {
        let ignore = zone_with(ZoneOptions {
            ignore_empty_service: true,
            ..Default::default()
        });
        assert_eq!(
            ask(&ignore, "lonely.default.svc.cluster.local.", RecordType::A).0,
            NX
        );
        assert_eq!(
            ask(
                &ignore,
                "demoapp-svc.default.svc.cluster.local.",
                RecordType::A
            )
            .0,
            OK
        );

        let only_demo = zone_with(ZoneOptions {
            namespaces: ["demo".to_string()].into(),
            ..Default::default()
        });
        assert_eq!(
            ask(
                &only_demo,
                "demoapp-svc.default.svc.cluster.local.",
                RecordType::A
            )
            .0,
            NX
        );
        assert_eq!(
            ask(&only_demo, "11.10.96.10.in-addr.arpa.", RecordType::PTR).0,
            NX
        );
        assert_eq!(
            ask(&only_demo, "dual.demo.svc.cluster.local.", RecordType::A).0,
            OK
        );

        let noep = zone_with(ZoneOptions {
            noendpoints: true,
            ..Default::default()
        });
        assert_eq!(
            ask(&noep, "web.demo.svc.cluster.local.", RecordType::A).0,
            NX
        );
        assert_eq!(
            ask(
                &noep,
                "10-244-1-10.demoapp-svc.default.svc.cluster.local.",
                RecordType::A
            )
            .0,
            NX
        );

        let podnames = zone_with(ZoneOptions {
            endpoint_pod_names: true,
            ..Default::default()
        });
        assert_eq!(
            ask(
                &podnames,
                "demoapp-b.demoapp-svc.default.svc.cluster.local.",
                RecordType::A
            )
            .1,
            vec!["10.244.2.11"]
        );

        let ttl = zone_with(ZoneOptions {
            ttl: 30,
            ..Default::default()
        });
        assert_eq!(
            ask(
                &ttl,
                "demoapp-svc.default.svc.cluster.local.",
                RecordType::A
            )
            .1
            .len(),
            1
        );

        let other = zone_with(ZoneOptions::for_domain("Corp.Example"));
        assert_eq!(
            ask(
                &other,
                "demoapp-svc.default.svc.corp.example.",
                RecordType::A
            )
            .1,
            vec!["10.96.10.11"]
        );
        assert_eq!(
            ask(&other, "11.10.96.10.in-addr.arpa.", RecordType::PTR).1,
            vec!["demoapp-svc.default.svc.corp.example."]
        );
        assert_eq!(
            ask(
                &other,
                "demoapp-svc.default.svc.cluster.local.",
                RecordType::A
            )
            .0,
            ResponseCode::Refused
        );

        let no_reverse = zone_with(ZoneOptions {
            zones: vec!["cluster.local".into()],
            ..Default::default()
        });
        assert_eq!(
            ask(&no_reverse, "11.10.96.10.in-addr.arpa.", RecordType::PTR).0,
            ResponseCode::Refused
        );
    }

    #[test]
    fn labels_option_exposes_only_matching_services_and_their_endpoints() {
        const LABELLED: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: front, namespace: shop, labels: {app: web, tier: front}}
spec: {clusterIP: 10.96.50.1, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: back, namespace: shop, labels: {app: web, tier: back}}
spec: {clusterIP: 10.96.50.2, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: shop}
spec: {clusterIP: 10.96.50.3, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop, labels: {app: web, tier: db}}
spec: {clusterIP: None, ports: [{name: sql, port: 5432}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: shop, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: sql, port: 5432, protocol: TCP}]
endpoints:
  - {addresses: [10.244.5.1], hostname: db-0, conditions: {ready: true}}
"#;
        let snap = snapshot(LABELLED);
        let with = |sel: &str| {
            ClusterZone::build(
                &snap,
                &ZoneOptions {
                    labels: Some(sel.parse().unwrap()),
                    ..Default::default()
                },
            )
        };
        let a = |z: &ClusterZone, name: &str| ask(z, name, RecordType::A);
        // (selector, [front, back, plain, db] exposed)
        for (sel, want) in [
            ("app=web", [true, true, false, true]),
            ("tier in (front, db)", [true, false, false, true]),
            ("tier notin (front)", [false, true, true, true]),
            ("!tier", [false, false, true, false]),
            ("app,tier!=back", [true, false, false, true]),
        ] {
            let z = with(sel);
            for (svc, exposed) in ["front", "back", "plain", "db"].iter().zip(want) {
                let (rc, ans, _) = a(&z, &format!("{svc}.shop.svc.cluster.local."));
                assert_eq!(rc == OK && !ans.is_empty(), exposed, "{sel}: {svc}");
            }
        }
        let z = with("tier=db");
        // The selected headless service's endpoints, SRV and PTR come along; the others' PTR not.
        assert_eq!(
            a(&z, "db-0.db.shop.svc.cluster.local.").1,
            vec!["10.244.5.1"]
        );
        assert_eq!(
            ask(&z, "1.5.244.10.in-addr.arpa.", RecordType::PTR).1,
            vec!["db-0.db.shop.svc.cluster.local."]
        );
        assert_eq!(ask(&z, "1.50.96.10.in-addr.arpa.", RecordType::PTR).0, NX);
        assert_eq!(
            ask(&z, "_sql._tcp.db.shop.svc.cluster.local.", RecordType::SRV)
                .1
                .len(),
            1
        );
    }
}
