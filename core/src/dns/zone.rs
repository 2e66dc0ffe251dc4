//! The cluster zone: a pure, hashed lookup structure built once per [`Snapshot`].
//!
//! [`ClusterZone::build`] turns a snapshot into hash maps keyed by lower-cased names (relative
//! to the zone origin), so a query costs one or two hash lookups and never walks the zone.
//! Negative answers are as cheap as positive ones: a miss in the map is NXDOMAIN, a hit on an
//! empty non-terminal is NODATA. Records are built per query from compact entries (a handful
//! of records for a service; endpoints are kept as IPs plus optional hostnames, no strings are
//! materialised for them), which keeps 100,000 endpoints in a few megabytes.
//!
//! Semantics follow the Kubernetes DNS specification 1.1.0 as CoreDNS's `kubernetes` plugin
//! implements it: service A/AAAA, SRV per port (`_port._proto.svc.ns.svc.zone`, and all ports at
//! the service name), endpoint names `<hostname|dashed-ip>.svc.ns.svc.zone`, PTR for cluster
//! IPs (else endpoint names), ExternalName CNAME, pod names `a-b-c-d.ns.pod.zone`,
//! `dns-version` TXT, SOA/NS at each origin with `ns.dns.<zone>`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::cache::Snapshot;
use crate::model::{Endpoint, ObjectKey, Protocol, Service, ServiceType};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// The Kubernetes DNS schema version served at `dns-version.<zone>`.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// Default TTL of cluster records (CoreDNS `ttl` default).
pub const DEFAULT_TTL: u32 = 5;

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
    /// Pod records mode.
    pub pods: PodMode,
    /// `fallthrough [zones]`: `None` off; `Some(empty)` every zone; else names under these zones
    /// that are not found are passed to the next plugin instead of NXDOMAIN.
    pub fallthrough: Option<Vec<String>>,
    /// The service whose cluster IPs are the addresses of `ns.dns.<zone>` (the NS target).
    pub dns_service: ObjectKey,
    /// Addresses of `ns.dns.<zone>` when `dns_service` does not exist.
    pub ns_fallback: Vec<IpAddr>,
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
            pods: PodMode::Disabled,
            fallthrough: None,
            dns_service: ObjectKey::new("kube-system", "kube-dns"),
            ns_fallback: Vec::new(),
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

    /// Whether `namespace` is served (the `namespaces` option).
    pub fn namespace_exposed(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.contains(namespace)
    }
}

/// A served zone apex.
#[derive(Debug, Clone)]
pub struct Origin {
    /// Lower-case name with trailing dot (`cluster.local.`).
    pub name: String,
    /// The apex as a [`Name`].
    pub apex: Name,
    /// `in-addr.arpa`/`ip6.arpa` zones hold PTR records; others hold the cluster names.
    pub reverse: Option<ReverseFamily>,
    /// The apex SOA (authority section of negative answers).
    pub soa: Arc<[Record]>,
    /// `ns.dns.<origin>`.
    pub ns_name: Name,
}

/// Which reverse tree a reverse origin is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReverseFamily {
    /// `in-addr.arpa`.
    V4,
    /// `ip6.arpa`.
    V6,
}

/// What a name in a forward zone is (keys are relative to the origin, lower-case).
#[derive(Debug, Clone)]
enum Node {
    /// The zone apex: SOA, NS.
    Apex,
    /// An empty non-terminal: exists, has no records (NODATA).
    Empty,
    /// `dns-version`: TXT.
    DnsVersion,
    /// `ns.dns`: the NS target's addresses.
    NsHost,
    /// `<svc>.<ns>.svc`.
    Service(u32),
    /// `_<port>._<proto>.<svc>.<ns>.svc`.
    Srv {
        service: u32,
        port: Arc<str>,
        protocol: Protocol,
    },
    /// `<ns>.pod`: exists when pods are enabled.
    PodNamespace,
}

#[derive(Debug, Clone)]
enum ServiceKind {
    ClusterIp(Vec<IpAddr>),
    Headless,
    External(Name),
}

#[derive(Debug, Clone)]
struct EndpointEntry {
    ip: IpAddr,
    /// `hostname`, or the pod name with `endpoint_pod_names`; `None`: the dashed IP.
    label: Option<Arc<str>>,
    /// Index into the service's `slice_ports`.
    slice: u16,
}

#[derive(Debug, Clone)]
struct PortEntry {
    name: Arc<str>,
    protocol: Protocol,
    port: u16,
}

#[derive(Debug, Clone)]
struct ServiceEntry {
    /// `<svc>.<ns>.svc` (lower case, relative to the forward origin).
    relative: Box<str>,
    kind: ServiceKind,
    ports: Vec<PortEntry>,
    /// Ready endpoints (deduplicated by IP and label).
    endpoints: Vec<EndpointEntry>,
    /// Ports of each EndpointSlice the endpoints came from.
    slice_ports: Vec<Vec<PortEntry>>,
}

/// An entry of the IPv4 PTR index.
type V4Ptr = (u32, PtrTarget);
/// An entry of the IPv6 PTR index.
type V6Ptr = (u128, PtrTarget);

/// A PTR target: a service (cluster IP) or an endpoint of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PtrTarget {
    Service(u32),
    Endpoint(u32, u32),
}

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
    fn nxdomain(origin: usize) -> Self {
        Self {
            rcode: ResponseCode::NXDomain,
            answers: Vec::new(),
            additionals: Vec::new(),
            origin,
        }
    }
    fn nodata(origin: usize) -> Self {
        Self {
            rcode: ResponseCode::NoError,
            answers: Vec::new(),
            additionals: Vec::new(),
            origin,
        }
    }
    fn records(origin: usize, answers: Vec<Record>, additionals: Vec<Record>) -> Self {
        Self {
            rcode: ResponseCode::NoError,
            answers,
            additionals,
            origin,
        }
    }
    /// NOERROR without records.
    pub fn is_nodata(&self) -> bool {
        self.rcode == ResponseCode::NoError && self.answers.is_empty()
    }
}

/// The cluster zone at one snapshot generation. Immutable; cheap to query from many threads.
#[derive(Debug)]
pub struct ClusterZone {
    options: ZoneOptions,
    origins: Vec<Origin>,
    /// Index of the primary forward origin, if any.
    primary: Option<usize>,
    names: FastMap<Box<str>, Node>,
    services: Vec<ServiceEntry>,
    /// PTR targets by address, sorted (several entries per address when several endpoints
    /// share it). Binary search answers full names and, by range, empty non-terminals.
    reverse_v4: Vec<(u32, PtrTarget)>,
    reverse_v6: Vec<(u128, PtrTarget)>,
    /// `(namespace, ip)` of pods, for `pods verified`.
    pod_ips: FastSet<(Arc<str>, IpAddr)>,
    /// Namespaces holding a served service or pod.
    namespaces: FastSet<Arc<str>>,
    ns_addrs: Vec<IpAddr>,
    serial: u32,
    generation: u64,
}

impl ClusterZone {
    /// Builds the zone from `snapshot`, with SOA serial = the snapshot generation (truncated).
    pub fn build(snapshot: &Snapshot, options: &ZoneOptions) -> ClusterZone {
        Self::build_with_serial(snapshot, options, snapshot.generation() as u32)
    }

    /// Builds the zone with an explicit SOA serial (the live server uses one that only grows).
    pub fn build_with_serial(snapshot: &Snapshot, options: &ZoneOptions, serial: u32) -> Self {
        let mut zone = ClusterZone {
            options: options.clone(),
            origins: Vec::new(),
            primary: None,
            names: FastMap::default(),
            services: Vec::with_capacity(snapshot.service_count()),
            reverse_v4: Vec::new(),
            reverse_v6: Vec::new(),
            pod_ips: FastSet::default(),
            namespaces: FastSet::default(),
            ns_addrs: Vec::new(),
            serial,
            generation: snapshot.generation(),
        };
        zone.build_origins();
        zone.build_services(snapshot);
        zone.build_pods(snapshot);
        zone.build_reverse_index();
        zone
    }

    fn build_origins(&mut self) {
        let ttl = self.options.ttl;
        let mut seen = HashSet::new();
        for zone in &self.options.zones {
            let lower = format!("{}.", zone.trim_end_matches('.').to_ascii_lowercase());
            if lower == "." || !seen.insert(lower.clone()) {
                continue;
            }
            let Ok(apex) = Name::from_ascii(&lower) else {
                continue;
            };
            let reverse = if lower.ends_with("in-addr.arpa.") {
                Some(ReverseFamily::V4)
            } else if lower.ends_with("ip6.arpa.") {
                Some(ReverseFamily::V6)
            } else {
                None
            };
            let ns_name = name_in(&apex, "ns.dns");
            let soa = Record::from_rdata(
                apex.clone(),
                ttl.min(300),
                RData::SOA(SOA::new(
                    ns_name.clone(),
                    name_in(&apex, "hostmaster"),
                    self.serial,
                    7200,
                    1800,
                    86400,
                    ttl,
                )),
            );
            if reverse.is_none() && self.primary.is_none() {
                self.primary = Some(self.origins.len());
            }
            self.origins.push(Origin {
                name: lower,
                apex,
                reverse,
                soa: Arc::from(vec![soa]),
                ns_name,
            });
        }
        for (key, node) in [
            ("", Node::Apex),
            ("dns-version", Node::DnsVersion),
            ("ns.dns", Node::NsHost),
            ("dns", Node::Empty),
            ("svc", Node::Empty),
            ("pod", Node::Empty),
        ] {
            self.names.insert(key.into(), node);
        }
    }

    fn build_services(&mut self, snapshot: &Snapshot) {
        let opts = &self.options;
        let mut services: Vec<&Arc<Service>> = snapshot
            .services()
            .filter(|s| opts.namespace_exposed(&s.key.namespace))
            .collect();
        // Stable order: PTR of a shared cluster IP and zone files do not depend on hashing.
        services.sort_by(|a, b| a.key.cmp(&b.key));
        if let Some(dns) = snapshot.service(&opts.dns_service) {
            self.ns_addrs = dns.cluster_ips.clone();
        }
        if self.ns_addrs.is_empty() {
            self.ns_addrs = opts.ns_fallback.clone();
        }
        for svc in services {
            let Some(entry) = service_entry(snapshot, svc, opts) else {
                continue;
            };
            let index = self.services.len() as u32;
            let ns = svc.key.namespace.to_ascii_lowercase();
            self.namespaces.insert(svc.key.namespace.clone());
            self.names
                .entry(format!("{ns}.svc").into())
                .or_insert(Node::Empty);
            // Headless services without endpoints and empty services under `ignore
            // empty_service` do not exist (NXDOMAIN), but their namespace does.
            let exists = match &entry.kind {
                ServiceKind::Headless => !entry.endpoints.is_empty(),
                ServiceKind::ClusterIp(_) => {
                    !(opts.ignore_empty_service && entry.endpoints.is_empty())
                }
                ServiceKind::External(_) => true,
            };
            if !exists {
                continue;
            }
            self.names
                .insert(entry.relative.clone(), Node::Service(index));
            if !matches!(entry.kind, ServiceKind::External(_)) {
                let mut srv_names = Vec::new();
                for (name, protocol) in srv_port_names(&entry) {
                    srv_names.push((name, protocol));
                }
                for (port, protocol) in srv_names {
                    let proto_label = format!("_{}.{}", protocol.as_lower(), entry.relative);
                    self.names.insert(
                        format!("_{}.{proto_label}", port.to_ascii_lowercase()).into(),
                        Node::Srv {
                            service: index,
                            port: port.clone(),
                            protocol,
                        },
                    );
                    self.names.entry(proto_label.into()).or_insert(Node::Empty);
                }
            }
            self.services.push(entry);
        }
    }

    fn build_pods(&mut self, snapshot: &Snapshot) {
        if self.options.pods == PodMode::Disabled {
            return;
        }
        for pod in snapshot.pods() {
            if !self.options.namespace_exposed(&pod.key.namespace) {
                continue;
            }
            self.namespaces.insert(pod.key.namespace.clone());
            if self.options.pods == PodMode::Verified {
                for ip in &pod.ips {
                    self.pod_ips.insert((pod.key.namespace.clone(), *ip));
                }
            }
        }
        let namespaces: Vec<Arc<str>> = self.namespaces.iter().cloned().collect();
        for ns in namespaces {
            self.names.insert(
                format!("{}.pod", ns.to_ascii_lowercase()).into(),
                Node::PodNamespace,
            );
        }
    }

    fn build_reverse_index(&mut self) {
        if !self.origins.iter().any(|o| o.reverse.is_some()) {
            return;
        }
        let mut v4: Vec<(u32, PtrTarget)> = Vec::new();
        let mut v6: Vec<(u128, PtrTarget)> = Vec::new();
        let mut push = |ip: IpAddr, t: PtrTarget| match ip {
            IpAddr::V4(a) => v4.push((u32::from(a), t)),
            IpAddr::V6(a) => v6.push((u128::from(a), t)),
        };
        for (si, svc) in self.services.iter().enumerate() {
            if let ServiceKind::ClusterIp(ips) = &svc.kind {
                for ip in ips {
                    push(*ip, PtrTarget::Service(si as u32));
                }
            }
            for (ei, ep) in svc.endpoints.iter().enumerate() {
                push(ep.ip, PtrTarget::Endpoint(si as u32, ei as u32));
            }
        }
        self.reverse_v4 = ptr_table(v4);
        self.reverse_v6 = ptr_table(v6);
    }

    /// The PTR targets of `ip`.
    fn ptr_targets(&self, ip: IpAddr) -> impl Iterator<Item = PtrTarget> + '_ {
        let (a, b): (&[V4Ptr], &[V6Ptr]) = match ip {
            IpAddr::V4(v4) => {
                let k = u32::from(v4);
                let start = self.reverse_v4.partition_point(|(x, _)| *x < k);
                let end = self.reverse_v4.partition_point(|(x, _)| *x <= k);
                (&self.reverse_v4[start..end], &[])
            }
            IpAddr::V6(v6) => {
                let k = u128::from(v6);
                let start = self.reverse_v6.partition_point(|(x, _)| *x < k);
                let end = self.reverse_v6.partition_point(|(x, _)| *x <= k);
                (&[], &self.reverse_v6[start..end])
            }
        };
        a.iter().map(|e| e.1).chain(b.iter().map(|e| e.1))
    }

    /// The options the zone was built with.
    pub fn options(&self) -> &ZoneOptions {
        &self.options
    }

    /// The served origins.
    pub fn origins(&self) -> &[Origin] {
        &self.origins
    }

    /// The SOA serial.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The snapshot generation this zone was built from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of services in the zone.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// The origin (index) `lower_name` (lower case, trailing dot) falls in: the longest match.
    pub fn origin_of(&self, lower_name: &str) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, o) in self.origins.iter().enumerate() {
            let inside = lower_name == o.name
                || (lower_name.len() > o.name.len()
                    && lower_name.ends_with(o.name.as_str())
                    && lower_name.as_bytes()[lower_name.len() - o.name.len() - 1] == b'.');
            if inside && best.is_none_or(|b| self.origins[b].name.len() < o.name.len()) {
                best = Some(i);
            }
        }
        best
    }

    /// Answers `record_type` at `qname` (class IN). `lower_name` is `qname` in lower case with
    /// the trailing dot (see [`Request::lower_name`](super::handler::Request::lower_name)).
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

    fn relative<'a>(&self, lower_name: &'a str, origin: usize) -> &'a str {
        let o = &self.origins[origin].name;
        if lower_name.len() == o.len() {
            ""
        } else {
            &lower_name[..lower_name.len() - o.len() - 1]
        }
    }

    fn lookup_forward(
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
            Some(Node::Service(i)) => {
                let svc = &self.services[*i as usize];
                match &svc.kind {
                    ServiceKind::External(target) => {
                        self.cname_answer(qname, target, qtype, origin, depth)
                    }
                    ServiceKind::ClusterIp(ips) => match qtype {
                        RecordType::A | RecordType::AAAA => {
                            Answer::records(origin, address_records(qname, ttl, ips, qtype), vec![])
                        }
                        RecordType::SRV => self.srv_answer(qname, svc, None, apex),
                        _ => Answer::nodata(origin),
                    }
                    .with_origin(origin),
                    ServiceKind::Headless => match qtype {
                        RecordType::A | RecordType::AAAA => {
                            let ips = dedup_ips(svc.endpoints.iter().map(|e| e.ip));
                            Answer::records(
                                origin,
                                address_records(qname, ttl, &ips, qtype),
                                vec![],
                            )
                        }
                        RecordType::SRV => self.srv_answer(qname, svc, None, apex),
                        _ => Answer::nodata(origin),
                    }
                    .with_origin(origin),
                }
            }
            Some(Node::Srv {
                service,
                port,
                protocol,
            }) => match qtype {
                RecordType::SRV => {
                    let svc = &self.services[*service as usize];
                    self.srv_answer(qname, svc, Some((port, *protocol)), apex)
                        .with_origin(origin)
                }
                _ => Answer::nodata(origin),
            },
            None => self.lookup_dynamic(qname, rel, qtype, origin),
        }
    }

    /// Names not in the map: endpoint names below a service, pod names.
    fn lookup_dynamic(&self, qname: &Name, rel: &str, qtype: RecordType, origin: usize) -> Answer {
        let Some((first, parent)) = rel.split_once('.') else {
            return Answer::nxdomain(origin);
        };
        match self.names.get(parent) {
            Some(Node::Service(i)) => {
                let svc = &self.services[*i as usize];
                let mut found = false;
                let mut ips = Vec::new();
                for ep in &svc.endpoints {
                    if endpoint_label_matches(ep, first) {
                        found = true;
                        ips.push(ep.ip);
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
                        .iter()
                        .any(|(ns, pip)| *pip == ip && ns.eq_ignore_ascii_case(namespace)),
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

    fn ns_answer(&self, qname: &Name, origin: usize) -> Answer {
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

    fn cname_answer(
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

    fn srv_answer(
        &self,
        qname: &Name,
        svc: &ServiceEntry,
        port_filter: Option<(&Arc<str>, Protocol)>,
        apex: &Name,
    ) -> Answer {
        let ttl = self.options.ttl;
        let matches = |p: &PortEntry| match port_filter {
            Some((name, proto)) => p.protocol == proto && p.name.eq_ignore_ascii_case(name),
            None => true,
        };
        // (target name, port, address) items, as CoreDNS's backend produces them.
        let mut items: Vec<(Name, u16, IpAddr)> = Vec::new();
        match &svc.kind {
            ServiceKind::ClusterIp(ips) => {
                let target = name_in(apex, &svc.relative);
                for p in svc.ports.iter().filter(|p| matches(p)) {
                    for ip in ips {
                        items.push((target.clone(), p.port, *ip));
                    }
                }
            }
            ServiceKind::Headless => {
                for ep in &svc.endpoints {
                    let ports = &svc.slice_ports[ep.slice as usize];
                    let label = endpoint_label(ep);
                    let target = name_in(apex, &format!("{label}.{}", svc.relative));
                    for p in ports.iter().filter(|p| matches(p)) {
                        items.push((target.clone(), p.port, ep.ip));
                    }
                }
            }
            ServiceKind::External(_) => {}
        }
        if items.is_empty() {
            return Answer::nodata(0);
        }
        let weight = (100 / items.len()).max(1) as u16;
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        let mut seen_srv: HashSet<(Name, u16)> = HashSet::new();
        let mut seen_addr: HashSet<(Name, IpAddr)> = HashSet::new();
        for (target, port, ip) in items {
            if seen_srv.insert((target.clone(), port)) {
                answers.push(Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::SRV(SRV::new(0, weight, port, target.clone())),
                ));
            }
            if seen_addr.insert((target.clone(), ip)) {
                additionals.push(address_record(target, ttl, ip));
            }
        }
        Answer::records(0, answers, additionals)
    }

    fn lookup_reverse(
        &self,
        qname: &Name,
        lower_name: &str,
        qtype: RecordType,
        origin: usize,
        family: ReverseFamily,
    ) -> Answer {
        if lower_name == self.origins[origin].name {
            return match qtype {
                RecordType::SOA => {
                    Answer::records(origin, self.origins[origin].soa.to_vec(), Vec::new())
                }
                RecordType::NS => self.ns_answer(qname, origin),
                _ => Answer::nodata(origin),
            };
        }
        match parse_reverse(lower_name, family) {
            ReverseName::Full(ip) => {
                let targets: Vec<PtrTarget> = self.ptr_targets(ip).collect();
                if targets.is_empty() {
                    return Answer::nxdomain(origin);
                }
                if qtype != RecordType::PTR {
                    return Answer::nodata(origin);
                }
                let Some(primary) = self.primary else {
                    return Answer::nxdomain(origin);
                };
                let apex = &self.origins[primary].apex;
                let ttl = self.options.ttl;
                let answers = targets
                    .iter()
                    .map(|t| {
                        let target = match *t {
                            PtrTarget::Service(s) => {
                                name_in(apex, &self.services[s as usize].relative)
                            }
                            PtrTarget::Endpoint(s, e) => {
                                let svc = &self.services[s as usize];
                                let ep = &svc.endpoints[e as usize];
                                name_in(apex, &format!("{}.{}", endpoint_label(ep), svc.relative))
                            }
                        };
                        Record::from_rdata(qname.clone(), ttl, RData::PTR(PTR(target)))
                    })
                    .collect();
                Answer::records(origin, answers, Vec::new())
            }
            ReverseName::Partial { prefix, bits } => {
                let exists = match family {
                    ReverseFamily::V4 => {
                        let (lo, hi) = prefix_range_u32(prefix as u32, bits);
                        range_nonempty(&self.reverse_v4, lo, hi)
                    }
                    ReverseFamily::V6 => {
                        let (lo, hi) = prefix_range_u128(prefix, bits);
                        range_nonempty(&self.reverse_v6, lo, hi)
                    }
                };
                if exists {
                    Answer::nodata(origin)
                } else {
                    Answer::nxdomain(origin)
                }
            }
            ReverseName::Invalid => Answer::nxdomain(origin),
        }
    }

    /// Every name with its records, for zone file export: `(owner, records)` in a stable
    /// order. Dynamic pod names are included only in `pods verified` mode.
    pub fn records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        let ttl = self.options.ttl;
        for (oi, o) in self.origins.iter().enumerate() {
            out.extend(o.soa.iter().cloned());
            out.extend(self.ns_answer(&o.apex, oi).answers);
        }
        if self.primary.is_none() {
            return out;
        }
        for (oi, o) in self.origins.iter().enumerate() {
            if o.reverse.is_some() {
                continue;
            }
            let apex = &o.apex;
            let ver = name_in(apex, "dns-version");
            out.push(Record::from_rdata(
                ver,
                ttl,
                RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
            ));
            let nsh = name_in(apex, "ns.dns");
            out.extend(address_records(&nsh, ttl, &self.ns_addrs, RecordType::A));
            out.extend(address_records(&nsh, ttl, &self.ns_addrs, RecordType::AAAA));
            let mut keys: Vec<(&Box<str>, &Node)> = self
                .names
                .iter()
                .filter(|(_, n)| matches!(n, Node::Service(_) | Node::Srv { .. }))
                .collect();
            keys.sort_by(|a, b| a.0.cmp(b.0));
            for (key, _) in keys {
                let lower = format!("{key}.{}", o.name);
                let owner = name_in(apex, key);
                let external = matches!(
                    self.names.get(key.as_ref()),
                    Some(Node::Service(i)) if matches!(self.services[*i as usize].kind, ServiceKind::External(_))
                );
                let types: &[RecordType] = if external {
                    &[RecordType::CNAME]
                } else {
                    &[RecordType::A, RecordType::AAAA, RecordType::SRV]
                };
                for t in types {
                    if let Lookup::Answer(a) = self.lookup(&owner, &lower, *t)
                        && a.origin == oi
                    {
                        out.extend(a.answers);
                    }
                }
                if let Some(Node::Service(i)) = self.names.get(key.as_ref()) {
                    let svc = &self.services[*i as usize];
                    if matches!(svc.kind, ServiceKind::External(_)) {
                        continue;
                    }
                    let mut done = HashSet::new();
                    for ep in &svc.endpoints {
                        let label = endpoint_label(ep);
                        if !done.insert((label.clone(), ep.ip)) {
                            continue;
                        }
                        let owner = name_in(apex, &format!("{label}.{key}"));
                        out.push(address_record(owner, ttl, ep.ip));
                    }
                }
            }
            if self.options.pods == PodMode::Verified {
                let mut pods: Vec<&(Arc<str>, IpAddr)> = self.pod_ips.iter().collect();
                pods.sort();
                for (ns, ip) in pods {
                    let owner = name_in(
                        apex,
                        &format!("{}.{}.pod", dashed_ip(*ip), ns.to_ascii_lowercase()),
                    );
                    out.push(address_record(owner, ttl, *ip));
                }
            }
        }
        let mut ips: Vec<IpAddr> = self
            .reverse_v4
            .iter()
            .map(|(a, _)| IpAddr::V4(Ipv4Addr::from(*a)))
            .chain(
                self.reverse_v6
                    .iter()
                    .map(|(a, _)| IpAddr::V6(Ipv6Addr::from(*a))),
            )
            .collect();
        ips.dedup();
        for ip in ips {
            let owner_text = reverse_name(ip);
            let Some(oi) = self.origin_of(&owner_text) else {
                continue;
            };
            let Ok(owner) = Name::from_ascii(&owner_text) else {
                continue;
            };
            if let Lookup::Answer(a) = self.lookup(&owner, &owner_text, RecordType::PTR)
                && a.origin == oi
            {
                out.extend(a.answers);
            }
        }
        out
    }
}

impl Answer {
    fn with_origin(mut self, origin: usize) -> Self {
        self.origin = origin;
        self
    }
}

/// Builds the compact entry of one service, or `None` when it has no DNS presence at all.
fn service_entry(snapshot: &Snapshot, svc: &Service, opts: &ZoneOptions) -> Option<ServiceEntry> {
    let relative: Box<str> = format!(
        "{}.{}.svc",
        svc.key.name.to_ascii_lowercase(),
        svc.key.namespace.to_ascii_lowercase()
    )
    .into();
    let kind = if svc.service_type == ServiceType::ExternalName {
        let target = svc.external_name.as_deref()?;
        // An IP in externalName is not a name: CoreDNS serves nothing for it.
        if target.parse::<IpAddr>().is_ok() {
            return None;
        }
        let mut name = Name::from_ascii(target).ok()?;
        name.set_fqdn(true);
        ServiceKind::External(name)
    } else if svc.headless || svc.cluster_ips.is_empty() {
        ServiceKind::Headless
    } else {
        ServiceKind::ClusterIp(svc.cluster_ips.clone())
    };
    let ports = svc
        .ports
        .iter()
        .map(|p| PortEntry {
            name: p.name.clone(),
            protocol: p.protocol,
            port: p.port,
        })
        .collect();
    let mut endpoints = Vec::new();
    let mut slice_ports = Vec::new();
    if !opts.noendpoints && !matches!(kind, ServiceKind::External(_)) {
        let mut seen: HashSet<(IpAddr, Option<Arc<str>>)> = HashSet::new();
        for slice in snapshot.endpoint_slices_for(&svc.key) {
            let slice_index = slice_ports.len() as u16;
            slice_ports.push(
                slice
                    .ports
                    .iter()
                    .filter_map(|p| {
                        Some(PortEntry {
                            name: p.name.clone(),
                            protocol: p.protocol,
                            port: p.port?,
                        })
                    })
                    .collect(),
            );
            for ep in &slice.endpoints {
                if !(ep.ready || svc.publish_not_ready_addresses) {
                    continue;
                }
                let label = endpoint_name(ep, opts.endpoint_pod_names);
                for ip in &ep.addresses {
                    if seen.insert((*ip, label.clone())) {
                        endpoints.push(EndpointEntry {
                            ip: *ip,
                            label: label.clone(),
                            slice: slice_index,
                        });
                    }
                }
            }
        }
    }
    Some(ServiceEntry {
        relative,
        kind,
        ports,
        endpoints,
        slice_ports,
    })
}

/// The `(port name, protocol)` pairs that get an SRV name: named ports of the service, or for
/// headless services the named ports of its endpoint slices.
fn srv_port_names(svc: &ServiceEntry) -> Vec<(Arc<str>, Protocol)> {
    let mut out: Vec<(Arc<str>, Protocol)> = Vec::new();
    let mut push = |name: &Arc<str>, protocol: Protocol| {
        if !name.is_empty()
            && !out
                .iter()
                .any(|(n, p)| *p == protocol && n.eq_ignore_ascii_case(name))
        {
            out.push((name.clone(), protocol));
        }
    };
    match svc.kind {
        ServiceKind::ClusterIp(_) => svc.ports.iter().for_each(|p| push(&p.name, p.protocol)),
        ServiceKind::Headless => {
            for ports in &svc.slice_ports {
                ports.iter().for_each(|p| push(&p.name, p.protocol));
            }
        }
        ServiceKind::External(_) => {}
    }
    out
}

/// The label of an endpoint in its service: hostname, else (with `endpoint_pod_names`) the pod
/// name if it is a valid label, else `None` (the dashed IP).
fn endpoint_name(ep: &Endpoint, pod_names: bool) -> Option<Arc<str>> {
    if let Some(h) = &ep.hostname
        && !h.is_empty()
    {
        return Some(Arc::from(h.to_ascii_lowercase()));
    }
    if pod_names
        && let Some(t) = &ep.target_ref
        && !t.name.is_empty()
        && t.name.len() < 64
    {
        return Some(Arc::from(t.name.to_ascii_lowercase()));
    }
    None
}

fn endpoint_label(ep: &EndpointEntry) -> String {
    match &ep.label {
        Some(l) => l.to_string(),
        None => dashed_ip(ep.ip),
    }
}

fn endpoint_label_matches(ep: &EndpointEntry, label: &str) -> bool {
    match &ep.label {
        Some(l) => l.as_ref() == label,
        None => parse_dashed_ip(label) == Some(ep.ip),
    }
}

/// `10.244.1.10` → `10-244-1-10`; `fd00::1` → `fd00--1`.
pub fn dashed_ip(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// Parses a dashed IP label (`10-244-1-10`, `fd00--1`) back to an address.
pub fn parse_dashed_ip(label: &str) -> Option<IpAddr> {
    if label.len() > 45 {
        return None;
    }
    let v4 = label.bytes().filter(|b| *b == b'-').count() == 3 && !label.contains("--");
    if v4 {
        label
            .replace('-', ".")
            .parse::<Ipv4Addr>()
            .ok()
            .map(IpAddr::V4)
    } else {
        label
            .replace('-', ":")
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6)
    }
}

fn dedup_ips(ips: impl Iterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in ips {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

fn address_record(owner: Name, ttl: u32, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(v4) => Record::from_rdata(owner, ttl, RData::A(A(v4))),
        IpAddr::V6(v6) => Record::from_rdata(owner, ttl, RData::AAAA(AAAA(v6))),
    }
}

/// A or AAAA records (per `qtype`) for `ips`; empty for other types.
fn address_records(owner: &Name, ttl: u32, ips: &[IpAddr], qtype: RecordType) -> Vec<Record> {
    ips.iter()
        .filter(|ip| match qtype {
            RecordType::A => ip.is_ipv4(),
            RecordType::AAAA => ip.is_ipv6(),
            _ => false,
        })
        .map(|ip| address_record(owner.clone(), ttl, *ip))
        .collect()
}

/// `relative` (dot-separated labels, no trailing dot) under `apex`.
fn name_in(apex: &Name, relative: &str) -> Name {
    if relative.is_empty() {
        return apex.clone();
    }
    Name::from_ascii(relative)
        .and_then(|n| n.append_domain(apex))
        .unwrap_or_else(|_| apex.clone())
}

/// The lower-case text of `name` with a trailing dot.
pub fn lower_fqdn(name: &Name) -> String {
    let mut s = name.to_lowercase().to_ascii();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

enum ReverseName {
    Full(IpAddr),
    /// A proper prefix of an address: `bits` leading bits.
    Partial {
        prefix: u128,
        bits: u32,
    },
    Invalid,
}

fn parse_reverse(lower_name: &str, family: ReverseFamily) -> ReverseName {
    let (suffix, labels_max) = match family {
        ReverseFamily::V4 => (".in-addr.arpa.", 4),
        ReverseFamily::V6 => (".ip6.arpa.", 32),
    };
    let Some(body) = lower_name.strip_suffix(suffix) else {
        return ReverseName::Invalid;
    };
    let labels: Vec<&str> = body.split('.').collect();
    if labels.len() > labels_max {
        return ReverseName::Invalid;
    }
    match family {
        ReverseFamily::V4 => {
            let mut value: u32 = 0;
            for (i, label) in labels.iter().rev().enumerate() {
                let Ok(octet) = label.parse::<u8>() else {
                    return ReverseName::Invalid;
                };
                if label.len() > 1 && label.starts_with('0') {
                    return ReverseName::Invalid;
                }
                value |= u32::from(octet) << (24 - 8 * i);
            }
            if labels.len() == 4 {
                ReverseName::Full(IpAddr::V4(Ipv4Addr::from(value)))
            } else {
                ReverseName::Partial {
                    prefix: u128::from(value),
                    bits: 8 * labels.len() as u32,
                }
            }
        }
        ReverseFamily::V6 => {
            let mut value: u128 = 0;
            for (i, label) in labels.iter().rev().enumerate() {
                let Some(nibble) = (if label.len() == 1 {
                    label.chars().next().and_then(|c| c.to_digit(16))
                } else {
                    None
                }) else {
                    return ReverseName::Invalid;
                };
                value |= u128::from(nibble) << (124 - 4 * i);
            }
            if labels.len() == 32 {
                ReverseName::Full(IpAddr::V6(Ipv6Addr::from(value)))
            } else {
                ReverseName::Partial {
                    prefix: value,
                    bits: 4 * labels.len() as u32,
                }
            }
        }
    }
}

fn prefix_range_u32(prefix: u32, bits: u32) -> (u32, u32) {
    if bits == 0 {
        return (0, u32::MAX);
    }
    let mask = u32::MAX << (32 - bits);
    (prefix & mask, (prefix & mask) | !mask)
}

fn prefix_range_u128(prefix: u128, bits: u32) -> (u128, u128) {
    if bits == 0 {
        return (0, u128::MAX);
    }
    let mask = u128::MAX << (128 - bits);
    (prefix & mask, (prefix & mask) | !mask)
}

fn range_nonempty<T: Ord + Copy>(sorted: &[(T, PtrTarget)], lo: T, hi: T) -> bool {
    let i = sorted.partition_point(|(v, _)| *v < lo);
    i < sorted.len() && sorted[i].0 <= hi
}

/// Sorts PTR entries by address and keeps, per address, the first service owning it as a
/// cluster IP (which hides endpoint names), else every endpoint name.
fn ptr_table<K: Ord + Copy>(mut entries: Vec<(K, PtrTarget)>) -> Vec<(K, PtrTarget)> {
    entries.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| match (a.1, b.1) {
            (PtrTarget::Service(x), PtrTarget::Service(y)) => x.cmp(&y),
            (PtrTarget::Service(_), PtrTarget::Endpoint(..)) => std::cmp::Ordering::Less,
            (PtrTarget::Endpoint(..), PtrTarget::Service(_)) => std::cmp::Ordering::Greater,
            (PtrTarget::Endpoint(a1, a2), PtrTarget::Endpoint(b1, b2)) => (a1, a2).cmp(&(b1, b2)),
        })
    });
    let mut out: Vec<(K, PtrTarget)> = Vec::with_capacity(entries.len());
    for (k, t) in entries {
        match out.last() {
            Some((last, PtrTarget::Service(_))) if *last == k => continue,
            _ => out.push((k, t)),
        }
    }
    out.shrink_to_fit();
    out
}

/// The reverse-lookup name of `ip` (lower case, trailing dot).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(73);
            for byte in v6.octets().iter().rev() {
                s.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
                s.push('.');
                s.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
                s.push('.');
            }
            s.push_str("ip6.arpa.");
            s
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cache::new_cache;
    use crate::model::{ClusterObject, Kind};
    use crate::source::manifests::parse_manifest;
    use std::path::Path;

    /// A small cluster covering every record kind (shared with the server tests).
    pub(crate) const FIXTURE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: demoapp-svc, namespace: default}
spec:
  clusterIP: 10.96.10.11
  selector: {app: demoapp}
  ports: [{name: http, port: 80, targetPort: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: demoapp-svc-1, namespace: default, labels: {kubernetes.io/service-name: demoapp-svc}}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
  - {addresses: [10.244.1.10], conditions: {ready: true}, targetRef: {kind: Pod, namespace: default, name: demoapp-a}}
  - {addresses: [10.244.2.11], conditions: {ready: true}, targetRef: {kind: Pod, namespace: default, name: demoapp-b}}
  - {addresses: [10.244.1.12], conditions: {ready: false, serving: true, terminating: true}}
---
apiVersion: v1
kind: Service
metadata: {name: lonely, namespace: default}
spec:
  clusterIP: 10.96.10.20
  ports: [{port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: mysql-external, namespace: default}
spec: {type: ExternalName, externalName: mysql.example.com}
---
apiVersion: v1
kind: Service
metadata: {name: alias, namespace: default}
spec: {type: ExternalName, externalName: demoapp-svc.default.svc.cluster.local}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  clusterIP: None
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: demo, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
  - {addresses: [10.244.1.20], hostname: web-0, conditions: {ready: true}}
  - {addresses: [10.244.2.21], conditions: {ready: true}}
  - {addresses: [10.244.1.22], hostname: web-2, conditions: {ready: false}}
---
apiVersion: v1
kind: Service
metadata: {name: empty-headless, namespace: demo}
spec: {clusterIP: None, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: eager, namespace: demo}
spec: {clusterIP: None, publishNotReadyAddresses: true}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: eager-1, namespace: demo, labels: {kubernetes.io/service-name: eager}}
addressType: IPv4
endpoints:
  - {addresses: [10.244.3.5], conditions: {ready: false}}
---
apiVersion: v1
kind: Service
metadata: {name: dual, namespace: demo}
spec:
  clusterIP: 10.96.30.1
  clusterIPs: [10.96.30.1, "fd00:10:96::1e"]
  ipFamilies: [IPv4, IPv6]
  ports: [{name: dns, port: 53, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
---
apiVersion: v1
kind: Pod
metadata: {name: demoapp-a, namespace: default}
spec: {containers: [{name: c, image: x}]}
status: {podIP: 10.244.1.10, podIPs: [{ip: 10.244.1.10}]}
"#;

    pub(crate) fn snapshot(yaml: &str) -> Arc<Snapshot> {
        let objects = parse_manifest(Path::new("fixture.yaml"), yaml).expect("fixture parses");
        let kinds = [Kind::Service, Kind::EndpointSlice, Kind::Pod];
        let (mut writer, reader) = new_cache(kinds);
        for kind in kinds {
            let of_kind: Vec<ClusterObject> = objects
                .iter()
                .filter(|o| o.kind() == kind)
                .cloned()
                .collect();
            writer.replace_kind(kind, of_kind);
        }
        reader.snapshot()
    }

    fn zone_with(opts: ZoneOptions) -> ClusterZone {
        ClusterZone::build(&snapshot(FIXTURE), &opts)
    }

    fn zone() -> ClusterZone {
        zone_with(ZoneOptions::default())
    }

    /// (rcode, answer rdata as text, additional owner+rdata as text)
    fn ask(
        zone: &ClusterZone,
        name: &str,
        t: RecordType,
    ) -> (ResponseCode, Vec<String>, Vec<String>) {
        let qname = Name::from_ascii(name).unwrap();
        match zone.lookup(&qname, &lower_fqdn(&qname), t) {
            Lookup::NotServed => (ResponseCode::Refused, vec![], vec![]),
            Lookup::Answer(a) => {
                if let Some(first) = a.answers.first() {
                    assert_eq!(
                        &first.name, &qname,
                        "answers are owned by the question name"
                    );
                }
                for r in &a.answers {
                    assert_eq!(
                        r.ttl,
                        zone.options()
                            .ttl
                            .min(if t == RecordType::SOA { 300 } else { u32::MAX })
                    );
                }
                (
                    a.rcode,
                    a.answers.iter().map(|r| r.data.to_string()).collect(),
                    a.additionals
                        .iter()
                        .map(|r| format!("{} {}", r.name, r.data))
                        .collect(),
                )
            }
        }
    }

    const NX: ResponseCode = ResponseCode::NXDomain;
    const OK: ResponseCode = ResponseCode::NoError;

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

    #[test]
    fn srv_for_named_ports_with_additional_addresses() {
        let z = zone();
        let (rc, ans, add) = ask(
            &z,
            "_http._tcp.demoapp-svc.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(rc, OK);
        assert_eq!(ans, vec!["0 100 80 demoapp-svc.default.svc.cluster.local."]);
        assert_eq!(
            add,
            vec!["demoapp-svc.default.svc.cluster.local. 10.96.10.11"]
        );
        // Case-insensitive port and protocol; wrong protocol is absent.
        assert_eq!(
            ask(
                &z,
                "_HTTP._TCP.demoapp-svc.default.svc.cluster.local.",
                RecordType::SRV
            )
            .1
            .len(),
            1
        );
        assert_eq!(
            ask(
                &z,
                "_http._udp.demoapp-svc.default.svc.cluster.local.",
                RecordType::SRV
            )
            .0,
            NX
        );
        // SRV at the service name lists every port, unnamed ones included (CoreDNS).
        assert_eq!(
            ask(&z, "lonely.default.svc.cluster.local.", RecordType::SRV).1,
            vec!["0 100 8080 lonely.default.svc.cluster.local."]
        );
        // Dual-stack: one SRV (deduplicated), weight split over both addresses as CoreDNS does.
        let (_, ans, add) = ask(
            &z,
            "_dns._udp.dual.demo.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(ans, vec!["0 50 53 dual.demo.svc.cluster.local."]);
        assert_eq!(add.len(), 2);
        // An SRV name is NODATA for A.
        let (rc, ans, _) = ask(
            &z,
            "_http._tcp.demoapp-svc.default.svc.cluster.local.",
            RecordType::A,
        );
        assert_eq!((rc, ans.len()), (OK, 0));
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
    fn ptr_records_for_cluster_ips_and_endpoints() {
        let z = zone();
        assert_eq!(
            ask(&z, "11.10.96.10.in-addr.arpa.", RecordType::PTR).1,
            vec!["demoapp-svc.default.svc.cluster.local."]
        );
        assert_eq!(
            ask(&z, "20.1.244.10.in-addr.arpa.", RecordType::PTR).1,
            vec!["web-0.web.demo.svc.cluster.local."]
        );
        assert_eq!(
            ask(&z, "10.1.244.10.in-addr.arpa.", RecordType::PTR).1,
            vec!["10-244-1-10.demoapp-svc.default.svc.cluster.local."]
        );
        let v6 = reverse_name("fd00:10:96::1e".parse().unwrap());
        assert_eq!(
            ask(&z, &v6, RecordType::PTR).1,
            vec!["dual.demo.svc.cluster.local."]
        );
        assert_eq!(ask(&z, "99.99.99.99.in-addr.arpa.", RecordType::PTR).0, NX);
        // Prefixes of existing addresses are empty non-terminals; others are absent.
        let (rc, ans, _) = ask(&z, "96.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!((rc, ans.len()), (OK, 0));
        assert_eq!(ask(&z, "97.10.in-addr.arpa.", RecordType::PTR).0, NX);
        assert_eq!(
            ask(
                &z,
                "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.ip6.arpa.",
                RecordType::PTR
            )
            .0,
            NX
        );
        // Other types at an address name: NODATA.
        assert_eq!(ask(&z, "11.10.96.10.in-addr.arpa.", RecordType::A).0, OK);
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
    fn dashed_ip_round_trip() {
        for ip in ["10.244.1.10", "fd00::1", "2001:db8::ff00:42:8329"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(parse_dashed_ip(&dashed_ip(ip)), Some(ip));
        }
        assert_eq!(parse_dashed_ip("web-0"), None);
        assert_eq!(parse_dashed_ip("1-2-3"), None);
    }

    #[test]
    fn export_lists_every_kind_of_record() {
        let z = zone();
        let text: Vec<String> = z.records().iter().map(|r| r.to_string()).collect();
        let has = |needle: &str| text.iter().any(|l| l.contains(needle));
        assert!(
            has("demoapp-svc.default.svc.cluster.local. 5 IN A 10.96.10.11"),
            "{text:#?}"
        );
        assert!(has(
            "_http._tcp.web.demo.svc.cluster.local. 5 IN SRV 0 50 8080"
        ));
        assert!(has(
            "mysql-external.default.svc.cluster.local. 5 IN CNAME mysql.example.com."
        ));
        assert!(has(
            "11.10.96.10.in-addr.arpa. 5 IN PTR demoapp-svc.default.svc.cluster.local."
        ));
        assert!(has("web-0.web.demo.svc.cluster.local. 5 IN A 10.244.1.20"));
        assert!(has("dns-version.cluster.local. 5 IN TXT"));
    }
}
