//! The desired IPVS state, computed from a cache [`Snapshot`] with no IO.
//!
//! Every proxied Service contributes virtual servers (cluster IPs, external IPs, load-balancer
//! IPs, one per node address for node ports) and the addresses to bind on `kube-ipvs0`.
//! Contributions are kept per Service so [`DesiredState::update`] rebuilds only the Services the
//! cache reports as changed and returns what moved as a [`Delta`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use crate::cache::{Change, Snapshot};
use crate::model::{AddressType, EndpointSlice, ObjectKey, Service, ServiceType, TrafficPolicy};

use super::config::ProxyConfig;
use super::table::{
    DestId, DestParams, EntryPoint, FLAG_PERSISTENT, Family, ServiceId, ServiceParams,
    VirtualServer,
};

/// What the proxy knows about the node it runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// This node's name (`--node-name` / `hostnameOverride`), for `Local` traffic policies.
    pub node_name: Option<Arc<str>>,
    /// The node's own addresses: every local address except those on `kube-ipvs0`.
    pub local_addresses: Vec<IpAddr>,
}

impl NodeInfo {
    /// The addresses that get node-port virtual servers: `nodePortAddresses` CIDRs when
    /// configured, else every local address except loopback and IPv6 link-local ones.
    pub fn node_port_addresses(&self, config: &ProxyConfig) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self
            .local_addresses
            .iter()
            .copied()
            .filter(|a| {
                if config.node_port_addresses.is_empty() {
                    !a.is_loopback() && !is_link_local_v6(a)
                } else {
                    config.node_port_addresses.iter().any(|n| n.contains(*a))
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

/// The virtual servers and bound addresses one Service contributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contribution {
    /// Virtual servers by identity.
    pub servers: BTreeMap<ServiceId, VirtualServer>,
    /// Addresses to bind on `kube-ipvs0`.
    pub bind: BTreeSet<IpAddr>,
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
    index: BTreeMap<ServiceId, Vec<ObjectKey>>,
    bound: BTreeMap<IpAddr, u32>,
}

/// Builds the complete desired state from scratch.
pub fn build(snapshot: &Snapshot, config: &ProxyConfig, node: &NodeInfo) -> DesiredState {
    let node_ports = node.node_port_addresses(config);
    let mut state = DesiredState {
        generation: snapshot.generation(),
        ..DesiredState::default()
    };
    for svc in snapshot.services() {
        if let Some(c) = contribution(snapshot, svc, config, node, &node_ports) {
            state.insert(svc.key.clone(), c);
        }
    }
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
        self.contributions.get(owner)?.servers.get(id)
    }

    /// Every virtual server, ordered by address, port, protocol.
    pub fn servers(&self) -> impl Iterator<Item = (&ServiceId, &VirtualServer)> {
        self.index.iter().filter_map(|(id, owners)| {
            let vs = self.contributions.get(owners.first()?)?.servers.get(id)?;
            Some((id, vs))
        })
    }

    /// The Services that define a virtual server (more than one means a conflict).
    pub fn owners(&self, id: &ServiceId) -> &[ObjectKey] {
        self.index.get(id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether `addr` should be bound on `kube-ipvs0`.
    pub fn is_bound(&self, addr: &IpAddr) -> bool {
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

    /// Brings the state up to `snapshot`, rebuilding only the Services that changed since
    /// [`generation`](Self::generation) (everything when the cache's journal no longer reaches
    /// back that far). Config or node changes need [`build`] instead.
    pub fn update(&mut self, snapshot: &Snapshot, config: &ProxyConfig, node: &NodeInfo) -> Delta {
        let Some(changes) = snapshot.changes_since(self.generation) else {
            *self = build(snapshot, config, node);
            return Delta {
                full: true,
                rebuilt: self.contributions.len(),
                ..Delta::default()
            };
        };
        let node_ports = node.node_port_addresses(config);
        let mut delta = Delta::default();
        for change in changes {
            let Change::Service(key) = change else {
                continue;
            };
            delta.rebuilt += 1;
            let new = snapshot
                .service(&key)
                .and_then(|svc| contribution(snapshot, svc, config, node, &node_ports));
            let old = self.remove(&key);
            if old.as_ref() == new.as_ref() {
                if let Some(old) = old {
                    self.insert(key, old);
                }
                continue;
            }
            for c in old.iter().chain(new.iter()) {
                delta.services.extend(c.servers.keys().copied());
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
        for id in c.servers.keys() {
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
        for id in c.servers.keys() {
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

/// Whether the proxy handles this Service at all.
pub fn is_proxied(svc: &Service) -> bool {
    svc.service_proxy_name.is_none()
        && !svc.headless
        && svc.service_type != ServiceType::ExternalName
        && svc.has_cluster_ip()
}

/// One endpoint address usable for one service port.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    dest: DestId,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
}

/// Picks real servers as kube-proxy does: ready endpoints; if there are none, the serving
/// and terminating ones. With `local_only`, only endpoints on this node count.
fn select(cands: &[Candidate], family: Family, local_only: bool) -> BTreeMap<DestId, DestParams> {
    let pool = || {
        cands
            .iter()
            .filter(move |c| Family::of(&c.dest.addr) == family && (!local_only || c.local))
    };
    let ready: BTreeMap<DestId, DestParams> = pool()
        .filter(|c| c.ready)
        .map(|c| (c.dest, DestParams::masq(1)))
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    pool()
        .filter(|c| c.serving && c.terminating)
        .map(|c| (c.dest, DestParams::masq(1)))
        .collect()
}

/// The candidates for one service port (`port_name`, `protocol`) from the Service's slices.
fn candidates(
    slices: &[&Arc<EndpointSlice>],
    port: &crate::model::ServicePort,
    node_name: Option<&str>,
) -> Vec<Candidate> {
    let mut out: BTreeMap<DestId, Candidate> = BTreeMap::new();
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
            let dest = DestId::new(*addr, target);
            let local = match (node_name, ep.node_name.as_deref()) {
                (Some(me), Some(there)) => me == there,
                _ => false,
            };
            let cand = Candidate {
                dest,
                ready: ep.ready,
                serving: ep.serving,
                terminating: ep.terminating,
                local,
            };
            out.entry(dest)
                .and_modify(|c| {
                    // The same address in two slices: the most usable view wins.
                    c.ready |= cand.ready;
                    c.serving |= cand.serving;
                    c.terminating &= cand.terminating;
                    c.local |= cand.local;
                })
                .or_insert(cand);
        }
    }
    out.into_values().collect()
}

/// What one Service contributes, or `None` when it is not proxied.
pub fn contribution(
    snapshot: &Snapshot,
    svc: &Service,
    config: &ProxyConfig,
    node: &NodeInfo,
    node_port_addresses: &[IpAddr],
) -> Option<Contribution> {
    if !is_proxied(svc) {
        return None;
    }
    let slices: Vec<&Arc<EndpointSlice>> = snapshot
        .endpoint_slices_for(&svc.key)
        .filter(|s| s.service_proxy_name.is_none() && s.address_type != AddressType::Fqdn)
        .collect();
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
    let mut c = Contribution::default();
    for port in &svc.ports {
        let cands = candidates(&slices, port, node.node_name.as_deref());
        let add = |c: &mut Contribution, addr: IpAddr, vport: u16, entry: EntryPoint| {
            let local_only = match entry {
                EntryPoint::ClusterIp => internal_local,
                _ => external_local,
            };
            let id = ServiceId::new(port.protocol, addr, vport);
            c.servers.entry(id).or_insert_with(|| VirtualServer {
                params,
                dests: select(&cands, Family::of(&addr), local_only),
                entry_point: entry,
                local_only,
            });
        };
        for ip in &svc.cluster_ips {
            add(&mut c, *ip, port.port, EntryPoint::ClusterIp);
            c.bind.insert(*ip);
        }
        for ip in &svc.external_ips {
            add(&mut c, *ip, port.port, EntryPoint::ExternalIp);
            if !node.local_addresses.contains(ip) {
                c.bind.insert(*ip);
            }
        }
        if svc.service_type == ServiceType::LoadBalancer {
            for ip in &svc.load_balancer_ips {
                add(&mut c, *ip, port.port, EntryPoint::LoadBalancer);
                if !node.local_addresses.contains(ip) {
                    c.bind.insert(*ip);
                }
            }
        }
        if matches!(
            svc.service_type,
            ServiceType::NodePort | ServiceType::LoadBalancer
        ) && let Some(np) = port.node_port
        {
            for ip in node_port_addresses {
                add(&mut c, *ip, np, EntryPoint::NodePort);
            }
        }
    }
    Some(c)
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
