//! The cluster zone: a pure, hashed lookup structure over a [`Snapshot`], updated incrementally.
//!
//! [`ClusterZone::build`] turns a snapshot into maps keyed by lower-cased names (relative to the
//! zone origin), so a query costs one or two hash lookups and never walks the zone. Negative
//! answers are as cheap as positive ones: a miss in the map is NXDOMAIN, a hit on an empty
//! non-terminal is NODATA. The maps are persistent ([`imbl`]): [`ClusterZone::update`] clones a
//! zone in O(1) and rewrites only the names, PTR buckets and pod records of the services and
//! pods that changed, producing a new immutable zone that shares everything else with the old
//! one. Service entries point at the snapshot's own `Service` and `EndpointSlice` objects
//! instead of copying them; records are built per query from those.
//!
//! Semantics follow the Kubernetes DNS specification 1.1.0 as CoreDNS's `kubernetes` plugin
//! implements it: service A/AAAA, SRV per port (`_port._proto.svc.ns.svc.zone`, and all ports at
//! the service name), endpoint names `<hostname|dashed-ip>.svc.ns.svc.zone`, PTR for cluster
//! IPs (else endpoint names), ExternalName CNAME, pod names `a-b-c-d.ns.pod.zone`,
//! `dns-version` TXT, SOA/NS at each origin with `ns.dns.<zone>`. Services whose name or
//! namespace is not a lower-case DNS label (which the Kubernetes API rejects) have no names.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use imbl::GenericHashMap;
use imbl::shared_ptr::DefaultSharedPtr;

use crate::cache::{Change, Snapshot};
use crate::model::selector::LabelSelector;
use crate::model::{Endpoint, EndpointSlice, ObjectKey, Pod, Protocol, Service, ServiceType};

#[path = "zone_reverse.rs"]
mod reverse;
use reverse::{CLUSTER_IP, PtrEntry, ReverseIndex};

#[cfg(test)]
#[path = "zone_props.rs"]
mod props;

#[path = "zone_external.rs"]
mod external;
pub use external::{ExternalAnswer, ExternalOptions};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;
/// A persistent hash map: O(1) clone, updates copy only the path to the changed entry.
type PMap<K, V> = GenericHashMap<K, V, foldhash::fast::RandomState, DefaultSharedPtr>;

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

    /// Whether `svc` is served: its namespace is exposed and its labels match `labels`.
    pub fn service_exposed(&self, svc: &Service) -> bool {
        self.namespace_exposed(&svc.key.namespace)
            && self.labels.as_ref().is_none_or(|l| l.matches(&svc.labels))
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
    /// `<svc>.<ns>.svc`. SRV names (`_port._proto.<svc>...`) and endpoint names below it are
    /// answered from the entry. A service without a name of its own (headless without
    /// endpoints, empty under `ignore empty_service`) is kept too (`exists: false`) and answers
    /// NXDOMAIN like an absent name.
    Service(Arc<ServiceEntry>),
    /// `<ns>.pod`: exists when pods are enabled.
    PodNamespace,
}

#[derive(Debug)]
enum ServiceKind {
    ClusterIp,
    Headless,
    /// The CNAME target (boxed: a `Name` is large and few services have one).
    External(Box<Name>),
}

/// One service as the zone serves it: the snapshot's objects, shared, not copied.
#[derive(Debug)]
struct ServiceEntry {
    service: Arc<Service>,
    /// `<svc>.<ns>.svc` (lower case, relative to the forward origin).
    relative: Arc<str>,
    kind: ServiceKind,
    /// The service's EndpointSlices in name order (none for ExternalName or `noendpoints`).
    slices: Box<[Arc<EndpointSlice>]>,
    /// Whether `<svc>.<ns>.svc` exists.
    exists: bool,
    /// `endpoint_pod_names`: endpoints without hostname are named by their pod.
    pod_names: bool,
}

/// One published address of an endpoint of a service.
#[derive(Clone, Copy)]
struct Published<'a> {
    ip: IpAddr,
    endpoint: &'a Endpoint,
    /// Index of the slice in the service's slices.
    slice: u16,
    /// Index of the endpoint in its slice.
    index: u32,
}

impl ServiceEntry {
    fn key(&self) -> &ObjectKey {
        &self.service.key
    }

    fn cluster_ips(&self) -> &[IpAddr] {
        match self.kind {
            ServiceKind::ClusterIp => &self.service.cluster_ips,
            _ => &[],
        }
    }

    /// Every published address (ready endpoints, or all with `publishNotReadyAddresses`), in
    /// slice, endpoint and address order, duplicates included.
    fn published(&self) -> impl Iterator<Item = Published<'_>> + '_ {
        let not_ready_too = self.service.publish_not_ready_addresses;
        self.slices
            .iter()
            .take(usize::from(CLUSTER_IP))
            .enumerate()
            .flat_map(move |(si, slice)| {
                slice
                    .endpoints
                    .iter()
                    .enumerate()
                    .filter(move |(_, ep)| ep.ready || not_ready_too)
                    .flat_map(move |(ei, ep)| {
                        ep.addresses.iter().map(move |ip| Published {
                            ip: *ip,
                            endpoint: ep,
                            slice: si as u16,
                            index: ei as u32,
                        })
                    })
            })
    }

    /// [`published`](Self::published) without repeated `(address, name)` pairs (first kept).
    fn unique(&self) -> Vec<Published<'_>> {
        let all: Vec<Published<'_>> = self.published().collect();
        // Usually every address appears once: check that cheaply before comparing names.
        let mut ips: FastSet<IpAddr> = FastSet::default();
        ips.reserve(all.len());
        if all.iter().all(|p| ips.insert(p.ip)) {
            return all;
        }
        let mut seen: FastSet<(IpAddr, Option<Cow<'_, str>>)> = FastSet::default();
        all.into_iter()
            .filter(|p| seen.insert((p.ip, self.label(p.endpoint).map(lower))))
            .collect()
    }

    /// The endpoint's own label (hostname, or pod name with `endpoint_pod_names`), if any;
    /// without one it is named by its dashed IP.
    fn label<'a>(&self, ep: &'a Endpoint) -> Option<&'a str> {
        endpoint_name(ep, self.pod_names)
    }

    /// The endpoint's label as served (lower case, or the dashed IP).
    fn label_text(&self, ep: &Endpoint, ip: IpAddr) -> String {
        match self.label(ep) {
            Some(l) => l.to_ascii_lowercase(),
            None => dashed_ip(ip),
        }
    }

    /// `(port name, protocol)` of the ports that get SRV names: named ports of the service, or
    /// for headless services the named ports of its endpoint slices (duplicates included).
    fn srv_ports(&self) -> Box<dyn Iterator<Item = (&Arc<str>, Protocol)> + '_> {
        match self.kind {
            ServiceKind::ClusterIp => Box::new(
                self.service
                    .ports
                    .iter()
                    .filter(|p| !p.name.is_empty())
                    .map(|p| (&p.name, p.protocol)),
            ),
            ServiceKind::Headless => Box::new(
                self.slices
                    .iter()
                    .flat_map(|s| s.ports.iter())
                    .filter(|p| !p.name.is_empty())
                    .map(|p| (&p.name, p.protocol)),
            ),
            ServiceKind::External(_) => Box::new(std::iter::empty()),
        }
    }

    /// The protocol of `_<port>._<proto>` if the service has that SRV name.
    fn srv_port(&self, port: &str, proto: &str) -> Option<Protocol> {
        self.srv_ports()
            .find(|(name, p)| p.as_lower() == proto && name.eq_ignore_ascii_case(port))
            .map(|(_, p)| p)
    }

    /// Whether `_<proto>.<svc>...` exists (some SRV name uses that protocol).
    fn has_srv_protocol(&self, proto: &str) -> bool {
        self.srv_ports().any(|(_, p)| p.as_lower() == proto)
    }

    /// The sorted, deduplicated SRV owner names relative to the origin (for export).
    fn srv_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .srv_ports()
            .map(|(name, p)| {
                format!(
                    "_{}._{}.{}",
                    name.to_ascii_lowercase(),
                    p.as_lower(),
                    self.relative
                )
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The lower-case namespaces of the pods sharing one address, with how many pods each.
type PodsAtAddress = Arc<[(Arc<str>, u32)]>;

/// How many services and pods of one (lower-case) namespace the zone holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct NsCount {
    services: u32,
    pods: u32,
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
    fn with_origin(mut self, origin: usize) -> Self {
        self.origin = origin;
        self
    }
}

/// PTR index changes collected while applying a batch, written once per touched bucket.
#[derive(Default)]
struct ReverseBatch {
    removed: FastSet<ObjectKey>,
    touched_v4: BTreeSet<u32>,
    touched_v6: BTreeSet<u128>,
    added_v4: FastMap<u32, Vec<PtrEntry>>,
    added_v6: FastMap<u128, Vec<PtrEntry>>,
}

impl ReverseBatch {
    fn touch(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) => {
                self.touched_v4.insert(u32::from(a) >> 8);
            }
            IpAddr::V6(a) => {
                self.touched_v6.insert(u128::from(a) >> 8);
            }
        }
    }

    fn add(&mut self, ip: IpAddr, service: &Arc<ServiceEntry>, slice: u16, endpoint: u32) {
        let entry = |low: u8| PtrEntry {
            service: service.clone(),
            endpoint,
            slice,
            low,
        };
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.added_v4
                    .entry(a >> 8)
                    .or_default()
                    .push(entry(a as u8));
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.added_v6
                    .entry(a >> 8)
                    .or_default()
                    .push(entry(a as u8));
            }
        }
    }
}

/// The cluster zone at one snapshot generation. Immutable; cheap to query from many threads,
/// cheap to clone (the maps are persistent).
#[derive(Debug, Clone)]
pub struct ClusterZone {
    options: Arc<ZoneOptions>,
    origins: Vec<Origin>,
    /// Index of the primary forward origin, if any.
    primary: Option<usize>,
    names: PMap<Arc<str>, Node>,
    /// Whether a reverse origin is served (else no PTR index is kept).
    has_reverse: bool,
    /// PTR targets by address; a proper prefix of an address is an empty non-terminal.
    reverse_v4: ReverseIndex<u32>,
    reverse_v6: ReverseIndex<u128>,
    /// Services and pods per lower-case namespace (`<ns>.svc`, `<ns>.pod` exist while > 0).
    namespaces: PMap<Arc<str>, NsCount>,
    /// The pods counted in `namespaces` (pods enabled only).
    pods: PMap<ObjectKey, Arc<Pod>>,
    /// `(lower-case namespace, ip)` of pods with how many pods hold it, for `pods verified`.
    pod_ips: PMap<(Arc<str>, IpAddr), u32>,
    /// The lower-case namespaces of the pods at each address, with how many pods each, for
    /// `autopath` (`pods verified` only; host-network pods share their node's address).
    pods_by_ip: PMap<IpAddr, PodsAtAddress>,
    /// Services by their external addresses (`externalIPs`, load-balancer ingress IPs), in key
    /// order, for `k8s_external` PTR answers.
    external_ptr: PMap<IpAddr, Arc<[ObjectKey]>>,
    ns_addrs: Arc<[IpAddr]>,
    /// External addresses of `dns_service` (`k8s_external`'s name server), else `ns_addrs`.
    ns_external: Arc<[IpAddr]>,
    service_count: usize,
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
        let mut zone = Self::empty(Arc::new(options.clone()), serial);
        zone.generation = snapshot.generation();
        let mut batch = ReverseBatch::default();
        for svc in snapshot.services() {
            zone.add_service(snapshot, svc, &mut batch);
        }
        if zone.options.pods != PodMode::Disabled {
            for pod in snapshot.pods() {
                zone.add_pod(pod);
            }
        }
        zone.finish(snapshot, batch);
        zone
    }

    /// The zone of `snapshot`, derived from this zone (built from an earlier snapshot of the
    /// same cache) by applying `changes` — what [`Snapshot::changes_since`] reports between
    /// the two. Only the changed services and pods are rewritten; everything else is shared
    /// with `self`, which stays valid and unchanged. Node changes are ignored (the zone holds no
    /// node data), pod changes matter only when pod records are enabled.
    pub fn update(&self, snapshot: &Snapshot, changes: &BTreeSet<Change>, serial: u32) -> Self {
        let mut zone = self.clone();
        if serial != zone.serial {
            zone.serial = serial;
            let (origins, primary) = build_origins(&zone.options, serial);
            zone.origins = origins;
            zone.primary = primary;
        }
        zone.generation = snapshot.generation();
        let pods = zone.options.pods != PodMode::Disabled;
        let mut batch = ReverseBatch::default();
        for change in changes {
            match change {
                Change::Service(key) => {
                    zone.remove_service(key, &mut batch);
                    if let Some(svc) = snapshot.service(key) {
                        zone.add_service(snapshot, svc, &mut batch);
                    }
                }
                Change::Pod(key) if pods => {
                    zone.remove_pod(key);
                    if let Some(pod) = snapshot.pod(key) {
                        zone.add_pod(pod);
                    }
                }
                Change::Pod(_) | Change::Node(_) => {}
            }
        }
        zone.finish(snapshot, batch);
        zone
    }

    /// Whether `change` can alter a zone built with `options` (node changes never do; pod
    /// changes only with pod records enabled).
    pub fn is_affected_by(options: &ZoneOptions, change: &Change) -> bool {
        match change {
            Change::Service(_) => true,
            Change::Pod(_) => options.pods != PodMode::Disabled,
            Change::Node(_) => false,
        }
    }

    /// A zone with the fixed names only.
    fn empty(options: Arc<ZoneOptions>, serial: u32) -> Self {
        let (origins, primary) = build_origins(&options, serial);
        let has_reverse = origins.iter().any(|o| o.reverse.is_some());
        let mut names = PMap::default();
        for (key, node) in [
            ("", Node::Apex),
            ("dns-version", Node::DnsVersion),
            ("ns.dns", Node::NsHost),
            ("dns", Node::Empty),
            ("svc", Node::Empty),
            ("pod", Node::Empty),
        ] {
            names.insert(Arc::from(key), node);
        }
        ClusterZone {
            options,
            origins,
            primary,
            names,
            has_reverse,
            reverse_v4: ReverseIndex::default(),
            reverse_v6: ReverseIndex::default(),
            namespaces: PMap::default(),
            pods: PMap::default(),
            pod_ips: PMap::default(),
            pods_by_ip: PMap::default(),
            external_ptr: PMap::default(),
            ns_addrs: Arc::from(Vec::new()),
            ns_external: Arc::from(Vec::new()),
            service_count: 0,
            serial,
            generation: 0,
        }
    }

    /// Writes the batched PTR changes and refreshes the NS target's addresses.
    fn finish(&mut self, snapshot: &Snapshot, batch: ReverseBatch) {
        if self.has_reverse {
            self.reverse_v4
                .apply(&batch.touched_v4, &batch.removed, batch.added_v4);
            self.reverse_v6
                .apply(&batch.touched_v6, &batch.removed, batch.added_v6);
        }
        let mut ns_addrs: Vec<IpAddr> = snapshot
            .service(&self.options.dns_service)
            .map(|dns| dns.cluster_ips.clone())
            .unwrap_or_default();
        if ns_addrs.is_empty() {
            ns_addrs = self.options.ns_fallback.clone();
        }
        let mut ns_external: Vec<IpAddr> = snapshot
            .service(&self.options.dns_service)
            .map(|dns| external_addresses(dns))
            .unwrap_or_default();
        if ns_external.is_empty() {
            ns_external = ns_addrs.clone();
        }
        if *self.ns_addrs != *ns_addrs {
            self.ns_addrs = Arc::from(ns_addrs);
        }
        if *self.ns_external != *ns_external {
            self.ns_external = Arc::from(ns_external);
        }
    }

    /// Adds `svc` (absent from the zone) if it has any DNS presence.
    fn add_service(&mut self, snapshot: &Snapshot, svc: &Arc<Service>, batch: &mut ReverseBatch) {
        let Some(entry) = service_entry(snapshot, svc, &self.options) else {
            return;
        };
        let entry = Arc::new(entry);
        self.adjust_namespace(&svc.key.namespace, 1, 0);
        self.names
            .insert(entry.relative.clone(), Node::Service(entry.clone()));
        self.service_count += 1;
        self.index_external(svc, true);
        if self.has_reverse {
            for ip in entry.cluster_ips() {
                batch.add(*ip, &entry, CLUSTER_IP, 0);
            }
            for p in entry.unique() {
                batch.add(p.ip, &entry, p.slice, p.index);
            }
        }
    }

    /// Removes the service `key` and everything it contributed, if the zone holds it.
    fn remove_service(&mut self, key: &ObjectKey, batch: &mut ReverseBatch) {
        if !is_dns_label(&key.name) || !is_dns_label(&key.namespace) {
            return;
        }
        let relative = format!("{}.{}.svc", key.name, key.namespace);
        let entry = match self.names.get(relative.as_str()) {
            Some(Node::Service(e)) if e.key() == key => e.clone(),
            _ => return,
        };
        self.names.remove(relative.as_str());
        self.service_count -= 1;
        self.index_external(&entry.service, false);
        self.adjust_namespace(&key.namespace, -1, 0);
        if self.has_reverse {
            batch.removed.insert(key.clone());
            for ip in entry.cluster_ips() {
                batch.touch(*ip);
            }
            for p in entry.published() {
                batch.touch(p.ip);
            }
        }
    }

    /// Counts `pod` (absent from the zone) in its namespace and, in verified mode, its IPs.
    fn add_pod(&mut self, pod: &Arc<Pod>) {
        if !self.options.namespace_exposed(&pod.key.namespace) {
            return;
        }
        self.pods.insert(pod.key.clone(), pod.clone());
        self.adjust_namespace(&pod.key.namespace, 0, 1);
        if self.options.pods == PodMode::Verified {
            let ns: Arc<str> = Arc::from(pod.key.namespace.to_ascii_lowercase());
            for ip in &pod.ips {
                *self.pod_ips.entry((ns.clone(), *ip)).or_insert(0) += 1;
                self.count_pod_at(*ip, &ns, 1);
            }
        }
    }

    /// Removes the pod `key` if the zone counts it.
    fn remove_pod(&mut self, key: &ObjectKey) {
        let Some(pod) = self.pods.remove(key) else {
            return;
        };
        self.adjust_namespace(&key.namespace, 0, -1);
        if self.options.pods == PodMode::Verified {
            let ns: Arc<str> = Arc::from(key.namespace.to_ascii_lowercase());
            for ip in &pod.ips {
                self.count_pod_at(*ip, &ns, -1);
                let k = (ns.clone(), *ip);
                match self.pod_ips.get(&k).copied() {
                    Some(n) if n > 1 => {
                        self.pod_ips.insert(k, n - 1);
                    }
                    _ => {
                        self.pod_ips.remove(&k);
                    }
                }
            }
        }
    }

    /// Adds `delta` to the pods of namespace `ns` (lower case) at `ip`.
    fn count_pod_at(&mut self, ip: IpAddr, ns: &Arc<str>, delta: i32) {
        let mut entries: Vec<(Arc<str>, u32)> = self
            .pods_by_ip
            .get(&ip)
            .map(|e| e.to_vec())
            .unwrap_or_default();
        match entries.iter().position(|(n, _)| n == ns) {
            Some(i) => entries[i].1 = entries[i].1.saturating_add_signed(delta),
            None if delta > 0 => entries.push((ns.clone(), delta as u32)),
            None => {}
        }
        entries.retain(|(_, n)| *n > 0);
        entries.sort();
        if entries.is_empty() {
            self.pods_by_ip.remove(&ip);
        } else {
            self.pods_by_ip.insert(ip, Arc::from(entries));
        }
    }

    /// Adds (`add`) or removes `key` as a holder of each external address of `svc`.
    fn index_external(&mut self, svc: &Service, add: bool) {
        for ip in external_addresses(svc) {
            let mut keys: Vec<ObjectKey> = self
                .external_ptr
                .get(&ip)
                .map(|k| k.to_vec())
                .unwrap_or_default();
            keys.retain(|k| *k != svc.key);
            if add {
                keys.push(svc.key.clone());
                keys.sort();
            }
            if keys.is_empty() {
                self.external_ptr.remove(&ip);
            } else {
                self.external_ptr.insert(ip, Arc::from(keys));
            }
        }
    }

    /// The namespace whose search path `autopath` uses for a query `lower_name` (lower case,
    /// trailing dot, in forward origin `origin`) from `client`, as CoreDNS's kubernetes plugin
    /// picks it: the namespace of the pod with that address when there is one; when several
    /// pods have it (host-network pods share their node's address), the one the query names
    /// as `<...>.<ns>.svc.<origin>`; `None` for an unknown address, when nothing matches, or
    /// without `pods verified`.
    pub fn client_namespace(
        &self,
        client: IpAddr,
        lower_name: &str,
        origin: usize,
    ) -> Option<&str> {
        if self.options.pods != PodMode::Verified {
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

    /// Changes the counts of `namespace` and creates or removes `<ns>.svc` and `<ns>.pod`
    /// when they cross zero.
    fn adjust_namespace(&mut self, namespace: &str, services: i32, pods: i32) {
        let lower = lower(namespace);
        let before = self
            .namespaces
            .get(lower.as_ref())
            .copied()
            .unwrap_or_default();
        let after = NsCount {
            services: before.services.saturating_add_signed(services),
            pods: before.pods.saturating_add_signed(pods),
        };
        if after == NsCount::default() {
            self.namespaces.remove(lower.as_ref());
        } else if let Some(count) = self.namespaces.get_mut(lower.as_ref()) {
            *count = after;
        } else {
            self.namespaces.insert(Arc::from(lower.as_ref()), after);
        }
        if (before.services > 0) != (after.services > 0) {
            let key: Arc<str> = Arc::from(format!("{lower}.svc"));
            if after.services > 0 {
                self.names.insert(key, Node::Empty);
            } else {
                self.names.remove(&key);
            }
        }
        let had = before != NsCount::default();
        let has = after != NsCount::default();
        if self.options.pods != PodMode::Disabled && had != has {
            let key: Arc<str> = Arc::from(format!("{lower}.pod"));
            if has {
                self.names.insert(key, Node::PodNamespace);
            } else {
                self.names.remove(&key);
            }
        }
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
        self.service_count
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

    /// The service named `relative` if it exists.
    fn existing_service(&self, relative: &str) -> Option<&Arc<ServiceEntry>> {
        match self.names.get(relative) {
            Some(Node::Service(svc)) if svc.exists => Some(svc),
            _ => None,
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

    /// SRV names `_<port>._<proto>.<svc>.<ns>.svc` and their parents `_<proto>.<svc>...`.
    fn lookup_srv(
        &self,
        qname: &Name,
        rel: &str,
        qtype: RecordType,
        origin: usize,
        apex: &Name,
    ) -> Option<Answer> {
        let (first, tail) = rel.strip_prefix('_')?.split_once('.')?;
        if let Some(after) = tail.strip_prefix('_') {
            let (proto, rest) = after.split_once('.')?;
            let svc = self.existing_service(rest)?;
            let protocol = svc.srv_port(first, proto)?;
            return Some(match qtype {
                RecordType::SRV => self
                    .srv_answer(qname, svc, Some((first, protocol)), apex)
                    .with_origin(origin),
                _ => Answer::nodata(origin),
            });
        }
        let svc = self.existing_service(tail)?;
        svc.has_srv_protocol(first).then(|| Answer::nodata(origin))
    }

    /// Names not in the map: endpoint names below a service, pod names.
    fn lookup_dynamic(&self, qname: &Name, rel: &str, qtype: RecordType, origin: usize) -> Answer {
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
        port_filter: Option<(&str, Protocol)>,
        apex: &Name,
    ) -> Answer {
        let ttl = self.options.ttl;
        let matches = |name: &str, protocol: Protocol| match port_filter {
            Some((want, proto)) => protocol == proto && name.eq_ignore_ascii_case(want),
            None => true,
        };
        // (target, port, address) items, as CoreDNS's backend produces them; targets are
        // indexes into `targets` (one per distinct name) so deduplication compares integers.
        let mut targets: Vec<Name> = Vec::new();
        let mut items: Vec<(u32, u16, IpAddr)> = Vec::new();
        match &svc.kind {
            ServiceKind::ClusterIp => {
                let mut ports = svc
                    .service
                    .ports
                    .iter()
                    .filter(|p| matches(&p.name, p.protocol))
                    .peekable();
                if ports.peek().is_some() {
                    targets.push(name_in(apex, &svc.relative));
                }
                for p in ports {
                    for ip in svc.cluster_ips() {
                        items.push((0, p.port, *ip));
                    }
                }
            }
            ServiceKind::Headless => {
                let mut by_label: FastMap<String, u32> = FastMap::default();
                for ep in svc.unique() {
                    let ports = &svc.slices[usize::from(ep.slice)].ports;
                    let mut ports = ports
                        .iter()
                        .filter(|p| matches(&p.name, p.protocol))
                        .filter_map(|p| p.port)
                        .peekable();
                    if ports.peek().is_none() {
                        continue;
                    }
                    let label = svc.label_text(ep.endpoint, ep.ip);
                    let target = *by_label.entry(label).or_insert_with_key(|label| {
                        targets.push(name_in(apex, &format!("{label}.{}", svc.relative)));
                        (targets.len() - 1) as u32
                    });
                    for port in ports {
                        items.push((target, port, ep.ip));
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
        let mut seen_srv: FastSet<(u32, u16)> = FastSet::default();
        let mut seen_addr: FastSet<(u32, IpAddr)> = FastSet::default();
        for (target, port, ip) in items {
            let name = &targets[target as usize];
            if seen_srv.insert((target, port)) {
                answers.push(Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::SRV(SRV::new(0, weight, port, name.clone())),
                ));
            }
            if seen_addr.insert((target, ip)) {
                additionals.push(address_record(name.clone(), ttl, ip));
            }
        }
        Answer::records(0, answers, additionals)
    }

    /// The PTR targets of `ip` in answer order: the first service owning it as a cluster IP
    /// (which hides endpoint names), else every endpoint name.
    fn ptr_targets(&self, ip: IpAddr) -> &[PtrEntry] {
        let all = match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.reverse_v4.get(a >> 8, a as u8)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.reverse_v6.get(a >> 8, a as u8)
            }
        };
        match all.first() {
            Some(first) if first.is_cluster_ip() => &all[..1],
            _ => all,
        }
    }

    /// The name a PTR entry of `ip` points to.
    fn ptr_target_name(&self, entry: &PtrEntry, ip: IpAddr, apex: &Name) -> Name {
        let svc = &entry.service;
        if entry.is_cluster_ip() {
            return name_in(apex, &svc.relative);
        }
        let ep = &svc.slices[usize::from(entry.slice)].endpoints[entry.endpoint as usize];
        name_in(
            apex,
            &format!("{}.{}", svc.label_text(ep, ip), svc.relative),
        )
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
                let targets = self.ptr_targets(ip);
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
                        Record::from_rdata(
                            qname.clone(),
                            ttl,
                            RData::PTR(PTR(self.ptr_target_name(t, ip, apex))),
                        )
                    })
                    .collect();
                Answer::records(origin, answers, Vec::new())
            }
            ReverseName::Partial { prefix, bits } => {
                let exists = match family {
                    ReverseFamily::V4 => {
                        let (lo, hi) = prefix_range_u32(prefix as u32, bits);
                        self.reverse_v4
                            .any_in((lo >> 8, lo as u8), (hi >> 8, hi as u8))
                    }
                    ReverseFamily::V6 => {
                        let (lo, hi) = prefix_range_u128(prefix, bits);
                        self.reverse_v6
                            .any_in((lo >> 8, lo as u8), (hi >> 8, hi as u8))
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

    /// Every name with its records, for zone file export, in a stable order. Dynamic pod
    /// names are included only in `pods verified` mode.
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
        // Service and SRV names, sorted.
        let mut keys: Vec<(String, &Arc<ServiceEntry>)> = Vec::new();
        for (_, node) in self.names.iter() {
            if let Node::Service(svc) = node
                && svc.exists
            {
                keys.push((svc.relative.to_string(), svc));
                if !matches!(svc.kind, ServiceKind::External(_)) {
                    keys.extend(svc.srv_names().into_iter().map(|n| (n, svc)));
                }
            }
        }
        keys.sort_by(|a, b| a.0.cmp(&b.0));
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
            for (key, svc) in &keys {
                let lower = format!("{key}.{}", o.name);
                let owner = name_in(apex, key);
                let external = matches!(svc.kind, ServiceKind::External(_));
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
                if external || key.as_str() != &*svc.relative {
                    continue;
                }
                let mut done = HashSet::new();
                for ep in svc.unique() {
                    let label = svc.label_text(ep.endpoint, ep.ip);
                    if !done.insert((label.clone(), ep.ip)) {
                        continue;
                    }
                    let owner = name_in(apex, &format!("{label}.{key}"));
                    out.push(address_record(owner, ttl, ep.ip));
                }
            }
            if self.options.pods == PodMode::Verified {
                let mut pods: Vec<&(Arc<str>, IpAddr)> = self.pod_ips.keys().collect();
                pods.sort();
                for (ns, ip) in pods {
                    let owner = name_in(apex, &format!("{}.{}.pod", dashed_ip(*ip), ns));
                    out.push(address_record(owner, ttl, *ip));
                }
            }
        }
        let mut ips: Vec<IpAddr> = self
            .reverse_v4
            .iter()
            .map(|(p, e)| IpAddr::V4(Ipv4Addr::from((p << 8) | u32::from(e.low))))
            .chain(
                self.reverse_v6
                    .iter()
                    .map(|(p, e)| IpAddr::V6(Ipv6Addr::from((p << 8) | u128::from(e.low)))),
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

/// The origins of `options` with SOA serial `serial`, and the index of the primary forward one.
fn build_origins(options: &ZoneOptions, serial: u32) -> (Vec<Origin>, Option<usize>) {
    let ttl = options.ttl;
    let mut seen = HashSet::new();
    let mut origins = Vec::new();
    let mut primary = None;
    for zone in &options.zones {
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
                serial,
                7200,
                1800,
                86400,
                ttl,
            )),
        );
        if reverse.is_none() && primary.is_none() {
            primary = Some(origins.len());
        }
        origins.push(Origin {
            name: lower,
            apex,
            reverse,
            soa: Arc::from(vec![soa]),
            ns_name,
        });
    }
    (origins, primary)
}

/// Whether `s` is a lower-case RFC 1123 label (what Kubernetes requires of service and
/// namespace names): 1–63 of `a-z0-9-`, not starting or ending with `-`.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Builds the entry of one service, or `None` when it has no DNS presence at all.
fn service_entry(
    snapshot: &Snapshot,
    svc: &Arc<Service>,
    opts: &ZoneOptions,
) -> Option<ServiceEntry> {
    if !opts.service_exposed(svc)
        || !is_dns_label(&svc.key.name)
        || !is_dns_label(&svc.key.namespace)
    {
        return None;
    }
    let relative: Arc<str> = Arc::from(format!("{}.{}.svc", svc.key.name, svc.key.namespace));
    let kind = if svc.service_type == ServiceType::ExternalName {
        let target = svc.external_name.as_deref()?;
        // An IP in externalName is not a name: CoreDNS serves nothing for it.
        if target.parse::<IpAddr>().is_ok() {
            return None;
        }
        let mut name = Name::from_ascii(target).ok()?;
        name.set_fqdn(true);
        ServiceKind::External(Box::new(name))
    } else if svc.headless || svc.cluster_ips.is_empty() {
        ServiceKind::Headless
    } else {
        ServiceKind::ClusterIp
    };
    let slices: Box<[Arc<EndpointSlice>]> =
        if opts.noendpoints || matches!(kind, ServiceKind::External(_)) {
            Box::new([])
        } else {
            snapshot.endpoint_slices_for(&svc.key).cloned().collect()
        };
    let mut entry = ServiceEntry {
        service: svc.clone(),
        relative,
        kind,
        slices,
        exists: true,
        pod_names: opts.endpoint_pod_names,
    };
    // Headless services without endpoints and empty services under `ignore empty_service` do
    // not exist (NXDOMAIN), but their namespace does.
    entry.exists = match entry.kind {
        ServiceKind::Headless => entry.published().next().is_some(),
        ServiceKind::ClusterIp => {
            !(opts.ignore_empty_service && entry.published().next().is_none())
        }
        ServiceKind::External(_) => true,
    };
    Some(entry)
}

/// The external addresses of `svc` that `k8s_external` serves: `spec.externalIPs`, then the
/// load-balancer ingress IPs (either `ipMode`), without repeats.
fn external_addresses(svc: &Service) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in svc
        .external_ips
        .iter()
        .chain(&svc.load_balancer_ips)
        .chain(&svc.load_balancer_proxy_ips)
    {
        if !out.contains(ip) {
            out.push(*ip);
        }
    }
    out
}

/// The label of an endpoint in its service: hostname, else (with `endpoint_pod_names`) the pod
/// name if it is a valid label, else `None` (the dashed IP). Not lower-cased.
fn endpoint_name(ep: &Endpoint, pod_names: bool) -> Option<&str> {
    if let Some(h) = &ep.hostname
        && !h.is_empty()
    {
        return Some(h);
    }
    if pod_names
        && let Some(t) = &ep.target_ref
        && !t.name.is_empty()
        && t.name.len() < 64
    {
        return Some(&t.name);
    }
    None
}

/// `s` in lower case, borrowed when it already is.
fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
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
