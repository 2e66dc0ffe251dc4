//! The desired IPVS state, computed from a cache [`Snapshot`] with no IO.
//!
//! Every proxied Service contributes virtual servers (cluster IPs, external IPs, load-balancer
//! IPs, one per node address for node ports) and the addresses to bind on `kube-ipvs0`.
//! Contributions are kept per Service so [`DesiredState::update`] rebuilds only the Services the
//! cache reports as changed and returns what moved as a [`Delta`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::cache::Snapshot;
use crate::model::{EndpointHints, EndpointSlice, ObjectKey, Service, ServiceType, TrafficPolicy};

use super::config::ProxyConfig;
use super::table::{
    DestId, DestParams, Dests, EntryPoint, FLAG_PERSISTENT, Family, ServiceId, ServiceParams,
    VirtualServer,
};
use super::topology::{self, NodeTopology, PortPolicy, TopologyEndpoint};
use super::view::{ProxyView, ServiceView, load_balancer_vips};

/// What the proxy knows about the node it runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// This node's name (`--node-name` / `hostnameOverride`), for `Local` traffic policies.
    pub node_name: Option<Arc<str>>,
    /// The node's own addresses: every local address except those on `kube-ipvs0`.
    pub local_addresses: Vec<IpAddr>,
}

impl NodeInfo {
    /// The addresses that get node-port virtual servers, as kube-proxy picks them per family:
    /// with `nodePortAddresses` CIDRs of that family (`primary` resolved to the primary IPs), the
    /// local addresses in them; for a family without CIDRs (or with `0.0.0.0/0` / `::/0`), every
    /// local address of that family except IPv6 link-local ones. Loopback addresses never.
    /// `node_ips` are this node's Node object addresses (for `primary`, see
    /// [`ProxyConfig::node_port_cidrs`]).
    pub(crate) fn node_port_addresses(
        &self,
        config: &ProxyConfig,
        node_ips: &[IpAddr],
    ) -> Vec<IpAddr> {
        let cidrs = config.node_port_cidrs(node_ips);
        let mut out: Vec<IpAddr> = self
            .local_addresses
            .iter()
            .copied()
            .filter(|a| {
                if a.is_loopback() {
                    return false;
                }
                let mut of_family = cidrs.iter().filter(|n| n.is_ipv4() == a.is_ipv4());
                let mut explicit = of_family.clone().peekable();
                if explicit.peek().is_none() || of_family.any(|n| n.prefix() == 0) {
                    // kube-proxy's `isValidForSet` for "all addresses".
                    !is_link_local_v6(a)
                } else {
                    explicit.any(|n| n.contains(*a))
                }
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

fn is_link_local_v6(addr: &IpAddr) -> bool {
    matches!(addr, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// The virtual servers and bound addresses one Service contributes. Kept inline for the
/// common case of one virtual server and one address (10,000 Services cost no allocation here
/// beyond their real server lists).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contribution {
    /// Virtual servers, sorted by identity, no duplicates.
    pub servers: SmallVec<[(ServiceId, VirtualServer); 1]>,
    /// Addresses to bind on `kube-ipvs0`, sorted, no duplicates.
    pub bind: SmallVec<[IpAddr; 1]>,
}

impl Contribution {
    /// One virtual server of this contribution.
    pub fn server(&self, id: &ServiceId) -> Option<&VirtualServer> {
        self.servers
            .binary_search_by(|(s, _)| s.cmp(id))
            .ok()
            .map(|i| &self.servers[i].1)
    }

    /// Identities of the virtual servers, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &ServiceId> {
        self.servers.iter().map(|(id, _)| id)
    }
}

/// What changed in a [`DesiredState::update`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// The whole state was rebuilt (the caller should diff everything).
    pub full: bool,
    /// Virtual servers that were added, changed or removed.
    pub services: BTreeSet<ServiceId>,
    /// Addresses whose binding may have changed.
    pub addresses: BTreeSet<IpAddr>,
    /// Kubernetes Services that were rebuilt.
    pub rebuilt: usize,
}

impl Delta {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.full && self.services.is_empty() && self.addresses.is_empty()
    }
}

/// The complete desired IPVS state for one snapshot, config and node.
#[derive(Debug, Clone, Default)]
pub struct DesiredState {
    generation: u64,
    contributions: HashMap<ObjectKey, Contribution>,
    /// Owners of each virtual server, sorted; the first one's definition wins on conflicts.
    index: BTreeMap<ServiceId, SmallVec<[ObjectKey; 1]>>,
    bound: BTreeMap<IpAddr, u32>,
    /// This node's zone label when the state was built (topology hints depend on it).
    zone: Option<Arc<str>>,
    /// This node's Node object addresses when the state was built (`nodePortAddresses:
    /// [primary]` depends on them).
    node_ips: Vec<IpAddr>,
    /// The per-Service view the contributions are computed from (shared with the host rules).
    view: ProxyView,
}

/// This node's `topology.kubernetes.io/zone` label, from its Node object in the snapshot.
fn node_zone(snapshot: &Snapshot, node: &NodeInfo) -> Option<Arc<str>> {
    snapshot.node(node.node_name.as_deref()?)?.zone.clone()
}

/// This node's addresses from its Node object in the snapshot (InternalIP before ExternalIP),
/// which `nodePortAddresses: [primary]` resolves against.
fn node_object_ips(snapshot: &Snapshot, node: &NodeInfo) -> Vec<IpAddr> {
    node.node_name
        .as_deref()
        .and_then(|name| snapshot.node(name))
        .map(|n| n.addresses.clone())
        .unwrap_or_default()
}

/// Builds the complete desired state from scratch.
pub fn build(snapshot: &Snapshot, config: &ProxyConfig, node: &NodeInfo) -> DesiredState {
    let mut view = ProxyView::new();
    view.observe(snapshot, node.node_name.as_deref());
    build_from_view(snapshot, view, config, node)
}

/// Builds the complete desired state from a [`ProxyView`] just brought up to `snapshot`.
fn build_from_view(
    snapshot: &Snapshot,
    view: ProxyView,
    config: &ProxyConfig,
    node: &NodeInfo,
) -> DesiredState {
    let node_ips = node_object_ips(snapshot, node);
    let node_ports = node.node_port_addresses(config, &node_ips);
    let zone = node_zone(snapshot, node);
    let mut state = DesiredState {
        generation: snapshot.generation(),
        contributions: HashMap::with_capacity(view.len()),
        node_ips,
        ..DesiredState::default()
    };
    for sv in view.services() {
        let c = contribution_of(sv, config, node, zone.as_deref(), &node_ports);
        state.insert(sv.service.key.clone(), c);
    }
    state.zone = zone;
    state.view = view;
    state
}

impl DesiredState {
    /// The cache generation this state reflects.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of virtual servers.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are no virtual servers.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Number of real servers summed over all virtual servers.
    pub fn dest_count(&self) -> usize {
        self.servers().map(|(_, vs)| vs.dests.len()).sum()
    }

    /// One virtual server.
    pub fn server(&self, id: &ServiceId) -> Option<&VirtualServer> {
        let owner = self.index.get(id)?.first()?;
        self.contributions.get(owner)?.server(id)
    }

    /// Every virtual server, ordered by address, port, protocol.
    pub fn servers(&self) -> impl Iterator<Item = (&ServiceId, &VirtualServer)> {
        self.index.iter().filter_map(|(id, owners)| {
            let vs = self.contributions.get(owners.first()?)?.server(id)?;
            Some((id, vs))
        })
    }

    #[cfg(test)]
    /// The Services that define a virtual server (more than one means a conflict).
    pub(crate) fn owners(&self, id: &ServiceId) -> &[ObjectKey] {
        self.index.get(id).map(|o| o.as_slice()).unwrap_or(&[])
    }

    /// Whether `addr` should be bound on `kube-ipvs0`.
    pub(crate) fn is_bound(&self, addr: &IpAddr) -> bool {
        self.bound.contains_key(addr)
    }

    /// Every address to bind on `kube-ipvs0`, sorted.
    pub fn addresses(&self) -> impl Iterator<Item = &IpAddr> {
        self.bound.keys()
    }

    /// What one Service contributes.
    pub fn contribution(&self, key: &ObjectKey) -> Option<&Contribution> {
        self.contributions.get(key)
    }

    /// The per-Service view this state was computed from (as of [`generation`](Self::generation)).
    pub fn view(&self) -> &ProxyView {
        &self.view
    }

    /// Brings the state up to `snapshot`, rebuilding only the Services that changed since
    /// [`generation`](Self::generation) (everything when the cache's journal no longer reaches
    /// back that far). Config or node changes need [`build`] instead.
    pub fn update(&mut self, snapshot: &Snapshot, config: &ProxyConfig, node: &NodeInfo) -> Delta {
        let zone = node_zone(snapshot, node);
        let zone_changed = zone != self.zone;
        if zone_changed {
            tracing::info!(
                node = node.node_name.as_deref().unwrap_or(""),
                from = self.zone.as_deref().unwrap_or("(none)"),
                to = zone.as_deref().unwrap_or("(none)"),
                "this node's topology.kubernetes.io/zone changed: recomputing every service"
            );
        }
        let node_ips = node_object_ips(snapshot, node);
        let primary_changed = config.node_port_addresses_primary && node_ips != self.node_ips;
        if primary_changed {
            tracing::info!(
                node = node.node_name.as_deref().unwrap_or(""),
                ?node_ips,
                "this node's addresses changed (nodePortAddresses: primary): recomputing every service"
            );
        }
        let mut view = std::mem::take(&mut self.view);
        let changes = view
            .observe(snapshot, node.node_name.as_deref())
            .filter(|_| !zone_changed && !primary_changed)
            .map(<[ObjectKey]>::to_vec);
        let Some(changes) = changes else {
            *self = DesiredState::default(); // dropped before the rebuild
            *self = build_from_view(snapshot, view, config, node);
            return Delta {
                full: true,
                rebuilt: self.contributions.len(),
                ..Delta::default()
            };
        };
        self.view = view;
        self.node_ips = node_ips;
        let node_ports = node.node_port_addresses(config, &self.node_ips);
        let mut delta = Delta::default();
        for key in changes {
            delta.rebuilt += 1;
            let new = self
                .view
                .service(&key)
                .map(|sv| contribution_of(sv, config, node, zone.as_deref(), &node_ports));
            let old = self.remove(&key);
            if old.as_ref() == new.as_ref() {
                if let Some(old) = old {
                    self.insert(key, old);
                }
                continue;
            }
            for c in old.iter().chain(new.iter()) {
                delta.services.extend(c.ids().copied());
                delta.addresses.extend(c.bind.iter().copied());
            }
            if let Some(new) = new {
                self.insert(key, new);
            }
        }
        self.generation = snapshot.generation();
        delta
    }

    fn insert(&mut self, key: ObjectKey, c: Contribution) {
        for id in c.ids() {
            let owners = self.index.entry(*id).or_default();
            if let Err(pos) = owners.binary_search(&key) {
                owners.insert(pos, key.clone());
            }
        }
        for addr in &c.bind {
            *self.bound.entry(*addr).or_default() += 1;
        }
        self.contributions.insert(key, c);
    }

    fn remove(&mut self, key: &ObjectKey) -> Option<Contribution> {
        let c = self.contributions.remove(key)?;
        for id in c.ids() {
            if let Some(owners) = self.index.get_mut(id) {
                owners.retain(|k| k != key);
                if owners.is_empty() {
                    self.index.remove(id);
                }
            }
        }
        for addr in &c.bind {
            if let Some(n) = self.bound.get_mut(addr) {
                *n -= 1;
                if *n == 0 {
                    self.bound.remove(addr);
                }
            }
        }
        Some(c)
    }
}

/// One endpoint address usable for one service port.
#[derive(Debug, Clone, Copy)]
struct Candidate<'a> {
    dest: DestId,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
    hints: Option<&'a EndpointHints>,
}

impl TopologyEndpoint for Candidate<'_> {
    fn ready(&self) -> bool {
        self.ready
    }
    fn serving(&self) -> bool {
        self.serving
    }
    fn terminating(&self) -> bool {
        self.terminating
    }
    fn local(&self) -> bool {
        self.local
    }
    fn hints(&self) -> Option<&EndpointHints> {
        self.hints
    }
}

/// The real servers of one service port and address family, for `Cluster` and for `Local`
/// traffic, chosen by [`topology::categorize`] (kube-proxy's `CategorizeEndpoints`).
#[derive(Debug, Default)]
struct FamilyDests {
    cluster: Dests,
    local: Dests,
}

impl FamilyDests {
    /// Categorizes the candidates of `family` (`cands` are sorted by real server, so the
    /// results are too) and logs once why hints the Service asked for were not used.
    fn new(
        cands: &[Candidate<'_>],
        family: Family,
        policy: &PortPolicy,
        node: &NodeTopology<'_>,
        why: (&ObjectKey, &str),
    ) -> Self {
        let fam: Vec<Candidate<'_>> = cands
            .iter()
            .filter(|c| Family::of(&c.dest.addr) == family)
            .copied()
            .collect();
        let cat = topology::categorize(&fam, policy, node);
        if let Some(reason) = &cat.ignored {
            let (service, port) = why;
            if *reason == topology::HintsIgnored::MissingHints {
                tracing::debug!(%service, port, %reason, "topology hints ignored: using every endpoint");
            } else {
                tracing::info!(%service, port, %reason, "topology hints ignored: using every endpoint");
            }
        }
        let dests = |idx: Option<Vec<usize>>| {
            Dests::from_sorted(
                idx.unwrap_or_default()
                    .into_iter()
                    .map(|i| (fam[i].dest, DestParams::masq(1)))
                    .collect(),
            )
        };
        FamilyDests {
            cluster: dests(cat.cluster),
            local: dests(cat.local),
        }
    }
}

/// The candidates for one service port (`port_name`, `protocol`) from the Service's slices,
/// sorted by real server, one per real server (`out` is reused between calls).
fn candidates<'a>(
    slices: &'a [Arc<EndpointSlice>],
    port: &crate::model::ServicePort,
    node_name: Option<&str>,
    out: &mut Vec<Candidate<'a>>,
) {
    out.clear();
    for slice in slices {
        let Some(target) = slice
            .ports
            .iter()
            .find(|p| p.name == port.name && p.protocol == port.protocol)
            .and_then(|p| p.port)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            // kube-proxy uses an endpoint's first address (they are all one pod).
            let Some(addr) = ep.addresses.first() else {
                continue;
            };
            let local = match (node_name, ep.node_name.as_deref()) {
                (Some(me), Some(there)) => me == there,
                _ => false,
            };
            out.push(Candidate {
                dest: DestId::new(*addr, target),
                ready: ep.ready,
                serving: ep.serving,
                terminating: ep.terminating,
                local,
                hints: ep.hints.as_deref(),
            });
        }
    }
    // Stable: among duplicates the first seen comes first, then is merged with the others.
    out.sort_by_key(|c| c.dest);
    out.dedup_by(|later, first| {
        if later.dest != first.dest {
            return false;
        }
        // The same address in two slices: the most usable view wins.
        first.ready |= later.ready;
        first.serving |= later.serving;
        first.terminating &= later.terminating;
        first.local |= later.local;
        first.hints = first.hints.or(later.hints);
        true
    });
}

/// What one Service contributes, or `None` when it is not proxied.
pub fn contribution(
    snapshot: &Snapshot,
    svc: &Arc<Service>,
    config: &ProxyConfig,
    node: &NodeInfo,
    node_port_addresses: &[IpAddr],
) -> Option<Contribution> {
    let sv = ServiceView::compute(snapshot, svc, node.node_name.as_deref())?;
    let zone = node_zone(snapshot, node);
    Some(contribution_of(
        &sv,
        config,
        node,
        zone.as_deref(),
        node_port_addresses,
    ))
}

/// What one proxied Service contributes, from its [`ServiceView`]; `zone` is this node's zone.
fn contribution_of(
    sv: &ServiceView,
    config: &ProxyConfig,
    node: &NodeInfo,
    zone: Option<&str>,
    node_port_addresses: &[IpAddr],
) -> Contribution {
    let svc: &Service = &sv.service;
    let slices = &sv.slices;
    let (flags, timeout) = match svc.session_affinity {
        crate::model::SessionAffinity::ClientIp { timeout_seconds } => {
            (FLAG_PERSISTENT, timeout_seconds)
        }
        crate::model::SessionAffinity::None => (0, 0),
    };
    let params = ServiceParams {
        scheduler: config.scheduler,
        flags: flags | config.scheduler.flags(),
        timeout,
    };
    let internal_local = svc.internal_traffic_policy == TrafficPolicy::Local;
    let external_local = svc.external_traffic_policy == TrafficPolicy::Local;
    // kube-proxy runs one proxier per IP family and gives each the Service's addresses of that
    // family only: external IPs, load-balancer IPs and node ports of another family than the
    // cluster IPs are dropped (no family translation).
    let families: SmallVec<[Family; 2]> = svc.cluster_ips.iter().map(Family::of).collect();
    let of_service = |ip: &&IpAddr| families.contains(&Family::of(ip));
    let external_ips: SmallVec<[IpAddr; 2]> = svc
        .external_ips
        .iter()
        .filter(of_service)
        .copied()
        .collect();
    let lb_ips: SmallVec<[IpAddr; 2]> = load_balancer_vips(svc)
        .filter(of_service)
        .copied()
        .collect();
    let node_ports = matches!(
        svc.service_type,
        ServiceType::NodePort | ServiceType::LoadBalancer
    );
    let topo = NodeTopology {
        name: node.node_name.as_deref(),
        zone,
    };
    let mut c = Contribution::default();
    let mut cands = Vec::new();
    for port in &svc.ports {
        candidates(slices, port, node.node_name.as_deref(), &mut cands);
        let node_port = port.node_port.filter(|_| node_ports);
        // kube-proxy's `UsesClusterEndpoints`, per family: `internalTrafficPolicy: Cluster`, or
        // the port accepts external traffic of that family (needed even with
        // `externalTrafficPolicy: Local`).
        let policy = |family: Family| PortPolicy {
            hints: topology::wants_hints(svc),
            internal_local,
            external_local,
            externally_accessible: node_port.is_some()
                || external_ips.iter().any(|ip| Family::of(ip) == family)
                || lb_ips.iter().any(|ip| Family::of(ip) == family),
        };
        // Per address family, computed on first use.
        let mut by_family: [Option<FamilyDests>; 2] = [None, None];
        // With `local_only`, this node's endpoints; when this node has none, the cluster
        // endpoints, so that pods on this node can still reach the Service's external addresses
        // (kubernetes PR 97081).
        let mut select = |family: Family, local_only: bool| -> Dests {
            let slot = &mut by_family[usize::from(family == Family::V6)];
            let d = slot.get_or_insert_with(|| {
                FamilyDests::new(
                    &cands,
                    family,
                    &policy(family),
                    &topo,
                    (&svc.key, &port.name),
                )
            });
            if local_only && !d.local.is_empty() {
                d.local.clone()
            } else {
                d.cluster.clone()
            }
        };
        let mut add = |c: &mut Contribution, addr: IpAddr, vport: u16, entry: EntryPoint| {
            let local_only = match entry {
                EntryPoint::ClusterIp => internal_local,
                _ => external_local,
            };
            let id = ServiceId::new(port.protocol, addr, vport);
            // The first definition of a virtual server wins (as a map's `or_insert` would).
            if let Err(i) = c.servers.binary_search_by(|(s, _)| s.cmp(&id)) {
                let family = Family::of(&addr);
                let vs = VirtualServer {
                    params,
                    dests: select(family, local_only),
                    entry_point: entry,
                    local_only,
                };
                c.servers.insert(i, (id, vs));
            }
        };
        let bind = |c: &mut Contribution, addr: IpAddr| {
            if let Err(i) = c.bind.binary_search(&addr) {
                c.bind.insert(i, addr);
            }
        };
        for ip in &svc.cluster_ips {
            add(&mut c, *ip, port.port, EntryPoint::ClusterIp);
            bind(&mut c, *ip);
        }
        for ip in &external_ips {
            add(&mut c, *ip, port.port, EntryPoint::ExternalIp);
            if !node.local_addresses.contains(ip) {
                bind(&mut c, *ip);
            }
        }
        for ip in &lb_ips {
            add(&mut c, *ip, port.port, EntryPoint::LoadBalancer);
            if !node.local_addresses.contains(ip) {
                bind(&mut c, *ip);
            }
        }
        if let Some(np) = node_port {
            for ip in node_port_addresses.iter().filter(of_service) {
                add(&mut c, *ip, np, EntryPoint::NodePort);
            }
        }
    }
    c
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
