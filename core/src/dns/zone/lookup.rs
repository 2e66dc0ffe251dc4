//! Answering a name in a forward zone: the apex, fixed names, services, endpoint and pod names,
//! CNAME chasing, and the namespace `autopath` searches for a client.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{CNAME, NS, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::entry::{Node, ServiceEntry, ServiceKind};
use super::names::{lower_fqdn, parse_dashed_ip};
use super::records::{address_records, dedup_ips};
use super::{ClusterZone, PodMode, SCHEMA_VERSION};

/// The result of looking a name up in the zone.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The name is in none of the served zones.
    NotServed,
    /// The name is in a served zone; `answer` says what to reply.
    Answer(Answer),
}

/// An authoritative answer from the zone.
#[derive(Debug, Clone)]
pub struct Answer {
    /// NOERROR (with records, or NODATA when `answers` is empty) or NXDOMAIN.
    pub rcode: ResponseCode,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Additional section (addresses of SRV/NS targets).
    pub additionals: Vec<Record>,
    /// Index of the origin the name fell in (its SOA goes into negative answers).
    pub origin: usize,
}

impl Answer {
    pub(super) fn nxdomain(origin: usize) -> Self {
        Self {
            rcode: ResponseCode::NXDomain,
            answers: Vec::new(),
            additionals: Vec::new(),
            origin,
        }
    }
    pub(super) fn nodata(origin: usize) -> Self {
        Self {
            rcode: ResponseCode::NoError,
            answers: Vec::new(),
            additionals: Vec::new(),
            origin,
        }
    }
    pub(super) fn records(origin: usize, answers: Vec<Record>, additionals: Vec<Record>) -> Self {
        Self {
            rcode: ResponseCode::NoError,
            answers,
            additionals,
            origin,
        }
    }
    pub(super) fn with_origin(mut self, origin: usize) -> Self {
        self.origin = origin;
        self
    }
}

impl ClusterZone {
    /// Answers `record_type` at `qname` (class IN). `lower_name` is `qname` in lower case with
    /// the trailing dot (see [`Request::lower_name`](crate::dns::handler::Request::lower_name)).
    /// Answer records are owned by `qname` exactly as asked (case preserved).
    pub fn lookup(&self, qname: &Name, lower_name: &str, record_type: RecordType) -> Lookup {
        let Some(origin) = self.origin_of(lower_name) else {
            return Lookup::NotServed;
        };
        let answer = match self.origins[origin].reverse {
            Some(family) => self.lookup_reverse(qname, lower_name, record_type, origin, family),
            None => self.lookup_forward(qname, lower_name, record_type, origin, 0),
        };
        Lookup::Answer(answer)
    }

    /// The service named `relative` if it exists.
    pub(super) fn existing_service(&self, relative: &str) -> Option<&Arc<ServiceEntry>> {
        match self.names.get(relative) {
            Some(Node::Service(svc)) if svc.exists => Some(svc),
            _ => None,
        }
    }

    pub(super) fn lookup_forward(
        &self,
        qname: &Name,
        lower_name: &str,
        qtype: RecordType,
        origin: usize,
        depth: u8,
    ) -> Answer {
        let rel = self.relative(lower_name, origin);
        let ttl = self.options.ttl;
        let apex = &self.origins[origin].apex;
        match self.names.get(rel) {
            Some(Node::Apex) => match qtype {
                RecordType::SOA => {
                    Answer::records(origin, self.origins[origin].soa.to_vec(), Vec::new())
                }
                RecordType::NS => self.ns_answer(qname, origin),
                _ => Answer::nodata(origin),
            },
            Some(Node::Empty) | Some(Node::PodNamespace) => Answer::nodata(origin),
            Some(Node::DnsVersion) => match qtype {
                RecordType::TXT => Answer::records(
                    origin,
                    vec![Record::from_rdata(
                        qname.clone(),
                        ttl,
                        RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
                    )],
                    Vec::new(),
                ),
                _ => Answer::nodata(origin),
            },
            Some(Node::NsHost) => Answer::records(
                origin,
                address_records(qname, ttl, &self.ns_addrs, qtype),
                vec![],
            ),
            Some(Node::Service(svc)) if svc.exists => match &svc.kind {
                ServiceKind::External(target) => {
                    self.cname_answer(qname, target, qtype, origin, depth)
                }
                ServiceKind::ClusterIp => match qtype {
                    RecordType::A | RecordType::AAAA => Answer::records(
                        origin,
                        address_records(qname, ttl, svc.cluster_ips(), qtype),
                        vec![],
                    ),
                    RecordType::SRV => self.srv_answer(qname, svc, None, apex),
                    _ => Answer::nodata(origin),
                }
                .with_origin(origin),
                ServiceKind::Headless => match qtype {
                    RecordType::A | RecordType::AAAA => {
                        let ips = dedup_ips(svc.published().map(|p| p.ip));
                        Answer::records(origin, address_records(qname, ttl, &ips, qtype), vec![])
                    }
                    RecordType::SRV => self.srv_answer(qname, svc, None, apex),
                    _ => Answer::nodata(origin),
                }
                .with_origin(origin),
            },
            Some(Node::Service(_)) => Answer::nxdomain(origin),
            None => match self.lookup_srv(qname, rel, qtype, origin, apex) {
                Some(answer) => answer,
                None => self.lookup_dynamic(qname, rel, qtype, origin),
            },
        }
    }

    /// Names not in the map: endpoint names below a service, pod names.
    pub(super) fn lookup_dynamic(
        &self,
        qname: &Name,
        rel: &str,
        qtype: RecordType,
        origin: usize,
    ) -> Answer {
        let Some((first, parent)) = rel.split_once('.') else {
            return Answer::nxdomain(origin);
        };
        match self.names.get(parent) {
            Some(Node::Service(svc)) if svc.exists => {
                let mut dashed: Option<Option<IpAddr>> = None;
                let mut found = false;
                let mut ips = Vec::new();
                for p in svc.published() {
                    let matches = match svc.label(p.endpoint) {
                        Some(l) => l.eq_ignore_ascii_case(first),
                        None => *dashed.get_or_insert_with(|| parse_dashed_ip(first)) == Some(p.ip),
                    };
                    if matches {
                        found = true;
                        ips.push(p.ip);
                    }
                }
                if !found {
                    return Answer::nxdomain(origin);
                }
                let ips = dedup_ips(ips.into_iter());
                Answer::records(
                    origin,
                    address_records(qname, self.options.ttl, &ips, qtype),
                    Vec::new(),
                )
            }
            Some(Node::PodNamespace) => {
                let namespace = parent.strip_suffix(".pod").unwrap_or(parent);
                let Some(ip) = parse_dashed_ip(first) else {
                    return Answer::nxdomain(origin);
                };
                let exists = match self.options.pods {
                    PodMode::Disabled => false,
                    PodMode::Insecure => true,
                    PodMode::Verified => self
                        .pod_ips
                        .contains_key(&(Arc::<str>::from(namespace), ip)),
                };
                if !exists {
                    return Answer::nxdomain(origin);
                }
                Answer::records(
                    origin,
                    address_records(qname, self.options.ttl, &[ip], qtype),
                    Vec::new(),
                )
            }
            _ => Answer::nxdomain(origin),
        }
    }

    pub(super) fn ns_answer(&self, qname: &Name, origin: usize) -> Answer {
        let o = &self.origins[origin];
        let ttl = self.options.ttl;
        let answers = vec![Record::from_rdata(
            qname.clone(),
            ttl,
            RData::NS(NS(o.ns_name.clone())),
        )];
        let additionals = address_records(&o.ns_name, ttl, &self.ns_addrs, RecordType::A)
            .into_iter()
            .chain(address_records(
                &o.ns_name,
                ttl,
                &self.ns_addrs,
                RecordType::AAAA,
            ))
            .collect();
        Answer::records(origin, answers, additionals)
    }

    pub(super) fn cname_answer(
        &self,
        qname: &Name,
        target: &Name,
        qtype: RecordType,
        origin: usize,
        depth: u8,
    ) -> Answer {
        let mut answers = vec![Record::from_rdata(
            qname.clone(),
            self.options.ttl,
            RData::CNAME(CNAME(target.clone())),
        )];
        // Chase targets inside our own forward zones (bounded), as CoreDNS does.
        if qtype != RecordType::CNAME && depth < 8 {
            let lower = lower_fqdn(target);
            if let Some(o) = self.origin_of(&lower)
                && self.origins[o].reverse.is_none()
            {
                let chased = self.lookup_forward(target, &lower, qtype, o, depth + 1);
                answers.extend(chased.answers);
            }
        }
        Answer::records(origin, answers, Vec::new())
    }

    /// The namespace whose search path `autopath` uses for a query `lower_name` (lower case,
    /// trailing dot, in forward origin `origin`) from `client`, as CoreDNS's kubernetes plugin
    /// picks it: the namespace of the pod with that address when there is one; when several
    /// pods have it (host-network pods share their node's address), the one the query names
    /// as `<...>.<ns>.svc.<origin>`; `None` for an unknown address, when nothing matches, or
    /// without `pods verified` or node-local autopath (`autopath_node`, which knows only the
    /// non-host-network pods of this node).
    pub fn client_namespace(
        &self,
        client: IpAddr,
        lower_name: &str,
        origin: usize,
    ) -> Option<&str> {
        if !self.options.knows_clients() {
            return None;
        }
        let pods = self.pods_by_ip.get(&client)?;
        match &pods[..] {
            [] => None,
            [(ns, _)] => Some(ns),
            several => {
                let o = self.origins.get(origin)?;
                if o.reverse.is_some() {
                    return None;
                }
                let rel = self.relative(lower_name, origin);
                let rest = rel.strip_suffix("svc")?.strip_suffix('.')?;
                let asked = rest.rsplit('.').next()?;
                several
                    .iter()
                    .find(|(ns, _)| &**ns == asked)
                    .map(|(ns, _)| &**ns)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::new_cache;
    use crate::dns::zone::ZoneOptions;
    use crate::dns::zone::fixtures::*;
    use crate::model::{ClusterObject, Kind, ObjectKey};

    #[test]
    fn cluster_ip_service_a_is_case_insensitive() {
        let z = zone();
        let (rc, ans, _) = ask(&z, "demoapp-svc.default.svc.cluster.local.", RecordType::A);
        assert_eq!((rc, ans), (OK, vec!["10.96.10.11".to_string()]));
        let (rc, ans, _) = ask(&z, "DemoApp-SVC.Default.Svc.Cluster.LOCAL", RecordType::A);
        assert_eq!((rc, ans), (OK, vec!["10.96.10.11".to_string()]));
    }

    #[test]
    fn nodata_vs_nxdomain() {
        let z = zone();
        // Existing name, other type.
        assert_eq!(
            ask(
                &z,
                "demoapp-svc.default.svc.cluster.local.",
                RecordType::AAAA
            )
            .0,
            OK
        );
        assert!(
            ask(
                &z,
                "demoapp-svc.default.svc.cluster.local.",
                RecordType::AAAA
            )
            .1
            .is_empty()
        );
        assert_eq!(
            ask(&z, "demoapp-svc.default.svc.cluster.local.", RecordType::MX).0,
            OK
        );
        // Empty non-terminals.
        for ent in [
            "svc.cluster.local.",
            "default.svc.cluster.local.",
            "demo.svc.cluster.local.",
            "_tcp.demoapp-svc.default.svc.cluster.local.",
            "pod.cluster.local.",
            "dns.cluster.local.",
        ] {
            let (rc, ans, _) = ask(&z, ent, RecordType::A);
            assert_eq!((rc, ans.len()), (OK, 0), "{ent} is an empty non-terminal");
        }
        // Absent names.
        for absent in [
            "nope.default.svc.cluster.local.",
            "demoapp-svc.nons.svc.cluster.local.",
            "nons.svc.cluster.local.",
            "demoapp-svc.default.svc.cluster.local.svc.cluster.local.",
            "_https._tcp.demoapp-svc.default.svc.cluster.local.",
            "x.cluster.local.",
            "10-244-9-9.demoapp-svc.default.svc.cluster.local.",
        ] {
            assert_eq!(
                ask(&z, absent, RecordType::A).0,
                NX,
                "{absent} does not exist"
            );
        }
        // Not our zone.
        assert_eq!(
            ask(&z, "example.com.", RecordType::A).0,
            ResponseCode::Refused
        );
    }

    /// Wildcard labels (`*`, `any`) are plain labels, as in CoreDNS since 1.9.0, which removed
    /// the kubernetes plugin's wildcard queries (its `match` is a case-insensitive equality and
    /// its handler tests have no wildcard cases any more): such names do not exist.
    #[test]
    fn wildcard_labels_are_not_expanded_as_in_current_coredns() {
        let z = zone();
        for (name, t) in [
            ("demoapp-svc.*.svc.cluster.local.", RecordType::A),
            ("demoapp-svc.any.svc.cluster.local.", RecordType::A),
            ("*.default.svc.cluster.local.", RecordType::A),
            ("*.any.demoapp-svc.*.svc.cluster.local.", RecordType::SRV),
            ("*.*.svc.default.svc.cluster.local.", RecordType::SRV),
        ] {
            let (rc, ans, _) = ask(&z, name, t);
            assert_eq!((rc, ans.len()), (NX, 0), "{name} {t}");
        }
        // The names they would have expanded to exist.
        assert_eq!(
            ask(&z, "demoapp-svc.default.svc.cluster.local.", RecordType::A).0,
            OK
        );
    }

    #[test]
    fn headless_service_records() {
        let z = zone();
        let (rc, mut ans, _) = ask(&z, "web.demo.svc.cluster.local.", RecordType::A);
        ans.sort();
        assert_eq!(
            (rc, ans),
            (
                OK,
                vec!["10.244.1.20".to_string(), "10.244.2.21".to_string()]
            )
        );
        assert_eq!(
            ask(&z, "web-0.web.demo.svc.cluster.local.", RecordType::A).1,
            vec!["10.244.1.20"]
        );
        assert_eq!(
            ask(&z, "10-244-2-21.web.demo.svc.cluster.local.", RecordType::A).1,
            vec!["10.244.2.21"]
        );
        // Not-ready endpoints are not published.
        assert_eq!(
            ask(&z, "web-2.web.demo.svc.cluster.local.", RecordType::A).0,
            NX
        );
        let (_, mut srv, mut add) = ask(
            &z,
            "_http._tcp.web.demo.svc.cluster.local.",
            RecordType::SRV,
        );
        srv.sort();
        add.sort();
        assert_eq!(
            srv,
            vec![
                "0 50 8080 10-244-2-21.web.demo.svc.cluster.local.",
                "0 50 8080 web-0.web.demo.svc.cluster.local.",
            ]
        );
        assert_eq!(
            add,
            vec![
                "10-244-2-21.web.demo.svc.cluster.local. 10.244.2.21",
                "web-0.web.demo.svc.cluster.local. 10.244.1.20",
            ]
        );
        // No ready endpoints: the service does not exist.
        assert_eq!(
            ask(&z, "empty-headless.demo.svc.cluster.local.", RecordType::A).0,
            NX
        );
        // publishNotReadyAddresses publishes not-ready endpoints.
        assert_eq!(
            ask(&z, "eager.demo.svc.cluster.local.", RecordType::A).1,
            vec!["10.244.3.5"]
        );
        // Endpoint names exist below ClusterIP services too (CoreDNS).
        assert_eq!(
            ask(
                &z,
                "10-244-1-10.demoapp-svc.default.svc.cluster.local.",
                RecordType::A
            )
            .1,
            vec!["10.244.1.10"]
        );
    }

    #[test]
    fn external_name_is_a_cname_chased_inside_the_zone() {
        let z = zone();
        let (rc, ans, _) = ask(
            &z,
            "mysql-external.default.svc.cluster.local.",
            RecordType::A,
        );
        assert_eq!((rc, ans), (OK, vec!["mysql.example.com.".to_string()]));
        let (_, ans, _) = ask(&z, "alias.default.svc.cluster.local.", RecordType::A);
        assert_eq!(
            ans,
            vec!["demoapp-svc.default.svc.cluster.local.", "10.96.10.11"]
        );
    }

    #[test]
    fn dual_stack_addresses() {
        let z = zone();
        assert_eq!(
            ask(&z, "dual.demo.svc.cluster.local.", RecordType::A).1,
            vec!["10.96.30.1"]
        );
        assert_eq!(
            ask(&z, "dual.demo.svc.cluster.local.", RecordType::AAAA).1,
            vec!["fd00:10:96::1e"]
        );
    }

    #[test]
    fn apex_soa_ns_and_schema_version() {
        let z = ClusterZone::build_with_serial(&snapshot(FIXTURE), &ZoneOptions::default(), 42);
        assert_eq!(
            ask(&z, "cluster.local.", RecordType::SOA).1,
            vec!["ns.dns.cluster.local. hostmaster.cluster.local. 42 7200 1800 86400 5"]
        );
        let (rc, ans, add) = ask(&z, "cluster.local.", RecordType::NS);
        assert_eq!(
            (rc, ans, add),
            (
                OK,
                vec!["ns.dns.cluster.local.".into()],
                vec!["ns.dns.cluster.local. 10.96.0.10".into()]
            )
        );
        assert_eq!(
            ask(&z, "ns.dns.cluster.local.", RecordType::A).1,
            vec!["10.96.0.10"]
        );
        assert_eq!(
            ask(&z, "dns-version.cluster.local.", RecordType::TXT).1,
            vec!["1.1.0"]
        );
        assert_eq!(ask(&z, "in-addr.arpa.", RecordType::SOA).1.len(), 1);
        assert_eq!(z.serial(), 42);
    }

    #[test]
    fn pod_records_by_mode() {
        let q = "10-244-1-10.default.pod.cluster.local.";
        assert_eq!(ask(&zone(), q, RecordType::A).0, NX);
        let insecure = zone_with(ZoneOptions {
            pods: PodMode::Insecure,
            ..Default::default()
        });
        assert_eq!(
            ask(
                &insecure,
                "1-2-3-4.default.pod.cluster.local.",
                RecordType::A
            )
            .1,
            vec!["1.2.3.4"]
        );
        assert_eq!(
            ask(
                &insecure,
                "fd00--1.default.pod.cluster.local.",
                RecordType::AAAA
            )
            .1,
            vec!["fd00::1"]
        );
        assert_eq!(
            ask(
                &insecure,
                "not-an-ip.default.pod.cluster.local.",
                RecordType::A
            )
            .0,
            NX
        );
        let verified = zone_with(ZoneOptions {
            pods: PodMode::Verified,
            ..Default::default()
        });
        assert_eq!(ask(&verified, q, RecordType::A).1, vec!["10.244.1.10"]);
        assert_eq!(
            ask(
                &verified,
                "10-244-1-10.demo.pod.cluster.local.",
                RecordType::A
            )
            .0,
            NX
        );
        assert_eq!(
            ask(
                &verified,
                "10-244-1-11.default.pod.cluster.local.",
                RecordType::A
            )
            .0,
            NX
        );
        let (rc, ans, _) = ask(&verified, "default.pod.cluster.local.", RecordType::A);
        assert_eq!((rc, ans.len()), (OK, 0));
    }

    #[test]
    fn client_namespace_picks_the_asking_pod_s_namespace_as_coredns() {
        const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: demo}
spec: {containers: [{name: c, image: x}]}
status: {podIP: 10.244.9.1, podIPs: [{ip: 10.244.9.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: agent-a, namespace: ns-a}
spec: {hostNetwork: true, containers: [{name: c, image: x}]}
status: {podIP: 192.168.1.1, podIPs: [{ip: 192.168.1.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: agent-b, namespace: ns-b}
spec: {hostNetwork: true, containers: [{name: c, image: x}]}
status: {podIP: 192.168.1.1, podIPs: [{ip: 192.168.1.1}]}
"#;
        let snap = snapshot(PODS);
        let verified = ClusterZone::build(
            &snap,
            &ZoneOptions {
                pods: PodMode::Verified,
                ..Default::default()
            },
        );
        let ns = |z: &ClusterZone, ip: &str, q: &str| {
            z.client_namespace(ip.parse().unwrap(), q, z.origin_of(q).unwrap())
                .map(str::to_string)
        };
        let q = "web.default.demo.svc.cluster.local.";
        assert_eq!(ns(&verified, "10.244.9.1", q).as_deref(), Some("demo"));
        assert_eq!(ns(&verified, "10.244.9.2", q), None);
        // Several pods at one address: the one the query names, else none.
        let host = "192.168.1.1";
        assert_eq!(
            ns(&verified, host, "web.ns-b.svc.cluster.local.").as_deref(),
            Some("ns-b")
        );
        assert_eq!(
            ns(&verified, host, "x.y.ns-a.svc.cluster.local.").as_deref(),
            Some("ns-a")
        );
        assert_eq!(ns(&verified, host, q), None);
        assert_eq!(ns(&verified, host, "cluster.local."), None);
        // Only with `pods verified`.
        let insecure = ClusterZone::build(
            &snap,
            &ZoneOptions {
                pods: PodMode::Insecure,
                ..Default::default()
            },
        );
        assert_eq!(ns(&insecure, "10.244.9.1", q), None);
        // The index follows pod changes incrementally.
        let (mut writer, reader) = new_cache([Kind::Service, Kind::EndpointSlice, Kind::Pod]);
        for kind in [Kind::Service, Kind::EndpointSlice] {
            writer.replace_kind(kind, Vec::new());
        }
        writer.replace_kind(
            Kind::Pod,
            snap.pods().map(|p| ClusterObject::Pod(p.clone())).collect(),
        );
        let first = reader.snapshot();
        let opts = ZoneOptions {
            pods: PodMode::Verified,
            ..Default::default()
        };
        let z0 = ClusterZone::build(&first, &opts);
        writer.delete(Kind::Pod, &ObjectKey::new("ns-b", "agent-b"));
        writer.delete(Kind::Pod, &ObjectKey::new("demo", "client"));
        let next = reader.snapshot();
        let z1 = z0.update(&next, &next.changes_since(first.generation()).unwrap(), 9);
        assert_eq!(ns(&z1, host, q).as_deref(), Some("ns-a"));
        assert_eq!(ns(&z1, "10.244.9.1", q), None);
        assert_eq!(ns(&z0, "10.244.9.1", q).as_deref(), Some("demo"));
    }

    #[test]
    fn node_autopath_indexes_only_this_node_s_pods() {
        const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: demo}
spec: {nodeName: node-a, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.244.9.1, podIPs: [{ip: 10.244.9.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: elsewhere, namespace: other}
spec: {nodeName: node-b, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.244.9.2, podIPs: [{ip: 10.244.9.2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: kube-system}
spec: {nodeName: node-a, hostNetwork: true, containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 192.168.1.1, podIPs: [{ip: 192.168.1.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: done, namespace: jobs}
spec: {nodeName: node-a, containers: [{name: c, image: x}]}
status: {phase: Succeeded, podIP: 10.244.9.3, podIPs: [{ip: 10.244.9.3}]}
"#;
        let snap = snapshot(PODS);
        let opts = ZoneOptions {
            autopath_node: Some("node-a".into()),
            ..Default::default()
        };
        let ns = |z: &ClusterZone, ip: &str| {
            let q = "web.default.demo.svc.cluster.local.";
            z.client_namespace(ip.parse().unwrap(), q, z.origin_of(q).unwrap())
                .map(str::to_string)
        };
        let z = ClusterZone::build(&snap, &opts);
        assert_eq!(ns(&z, "10.244.9.1").as_deref(), Some("demo"));
        // Another node's pod, a host-network pod (the node's address), a terminal pod: plain.
        assert_eq!(ns(&z, "10.244.9.2"), None);
        assert_eq!(ns(&z, "192.168.1.1"), None);
        assert_eq!(ns(&z, "10.244.9.3"), None);
        // No pod records come with it: `pods` keeps its meaning.
        assert_eq!(
            ask(&z, "10-244-9-1.demo.pod.cluster.local.", RecordType::A).0,
            NX
        );
        assert_eq!(ask(&z, "demo.pod.cluster.local.", RecordType::A).0, NX);
        // Off without a node.
        let off = ClusterZone::build(&snap, &ZoneOptions::default());
        assert_eq!(ns(&off, "10.244.9.1"), None);
        // With `pods insecure` the node's pods do not make `<ns>.pod` exist (the answer would
        // differ from node to node): names answer as from a zone without pods.
        let insecure = |o: &ZoneOptions, yaml: &str| {
            ClusterZone::build(
                &snapshot(yaml),
                &ZoneOptions {
                    pods: PodMode::Insecure,
                    ..o.clone()
                },
            )
        };
        let with_node = insecure(&opts, PODS);
        let without_pods = insecure(&ZoneOptions::default(), "");
        assert_eq!(ns(&with_node, "10.244.9.1").as_deref(), Some("demo"));
        for q in [
            "demo.pod.cluster.local.",
            "10-244-9-1.demo.pod.cluster.local.",
        ] {
            assert_eq!(
                ask(&with_node, q, RecordType::A),
                ask(&without_pods, q, RecordType::A),
                "{q}"
            );
        }

        // Incrementally: add, IP change, delete, a pod turning terminal.
        let kinds = [Kind::Service, Kind::EndpointSlice, Kind::Pod];
        let (mut writer, reader) = new_cache(kinds);
        for kind in [Kind::Service, Kind::EndpointSlice] {
            writer.replace_kind(kind, Vec::new());
        }
        writer.replace_kind(
            Kind::Pod,
            snap.pods().map(|p| ClusterObject::Pod(p.clone())).collect(),
        );
        let first = reader.snapshot();
        let z0 = ClusterZone::build(&first, &opts);
        let client = first
            .pods()
            .find(|p| &*p.key.name == "client")
            .map(|p| (**p).clone())
            .unwrap();
        let step = |z: &ClusterZone, at: u64| {
            let next = reader.snapshot();
            let changes = next.changes_since(at).unwrap();
            (z.update(&next, &changes, 9), next.generation())
        };
        // A new pod on this node.
        let mut added = client.clone();
        added.key = ObjectKey::new("team", "new");
        added.ips = vec!["10.244.9.4".parse().unwrap()];
        writer.apply(ClusterObject::Pod(Arc::new(added.clone())));
        let (z1, g1) = step(&z0, first.generation());
        assert_eq!(ns(&z1, "10.244.9.4").as_deref(), Some("team"));
        // Its IP changes: the old address is forgotten.
        let mut moved = added.clone();
        moved.ips = vec!["10.244.9.5".parse().unwrap()];
        writer.apply(ClusterObject::Pod(Arc::new(moved.clone())));
        let (z2, g2) = step(&z1, g1);
        assert_eq!(ns(&z2, "10.244.9.4"), None);
        assert_eq!(ns(&z2, "10.244.9.5").as_deref(), Some("team"));
        // It finishes (a terminal pod has no addresses once projected).
        let mut finished = moved.clone();
        finished.ips = Vec::new();
        writer.apply(ClusterObject::Pod(Arc::new(finished)));
        let (z3, g3) = step(&z2, g2);
        assert_eq!(ns(&z3, "10.244.9.5"), None);
        // Deleted.
        writer.delete(Kind::Pod, &ObjectKey::new("demo", "client"));
        let (z4, _) = step(&z3, g3);
        assert_eq!(ns(&z4, "10.244.9.1"), None);
        assert_eq!(ns(&z3, "10.244.9.1").as_deref(), Some("demo"));
        // The incremental zone agrees with a full build.
        let full = ClusterZone::build(&reader.snapshot(), &opts);
        for ip in ["10.244.9.1", "10.244.9.4", "10.244.9.5", "10.244.9.2"] {
            assert_eq!(ns(&z4, ip), ns(&full, ip), "{ip}");
        }
    }
}
