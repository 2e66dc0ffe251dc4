//! Stale UDP and SCTP conntrack entries, as kube-proxy's `pkg/proxy/conntrack` cleans them,
//! and the `conntrack` section of the configuration ([`sysctl`]).
//!
//! With `net.ipv4.vs.conntrack=1` every flow IPVS forwards has a netfilter conntrack entry whose
//! reply side names the real server. A UDP client that keeps its source port (a resolver asking
//! the DNS service) refreshes that entry with every query, so it outlives the real server. On
//! older kernels IPVS then kept dropping the flow (a packet of a confirmed conntrack entry is not
//! rescheduled); kernels since 5.9 with `expire_nodest_conn=1` (set by the proxy) expire the
//! connections of a deleted real server and their conntrack entries by themselves (seen in the
//! 6.1 test kernel, `tests/tests/vm_conntrack.rs`). Deleting the entries here, as kube-proxy does
//! in IPVS mode too, covers the older kernels and entries IPVS does not own: traffic that reached
//! a service address before it was programmed has an entry without NAT, which keeps matching the
//! flow; IPVS still forwards it (it does its own NAT), but netfilter decides NAT only for a new
//! entry, so a flow that needs masquerading (hairpin, `masqueradeAll`) stays black-holed until
//! the entry goes (shown with the cleanup switched off in `vm_conntrack`).
//!
//! [`StaleTracker`] is the pure part: it remembers the real servers of every UDP/SCTP virtual
//! server and, from what a sync changed, decides which entries to delete ([`ConntrackFilter`]):
//!
//! - a real server removed from a virtual server: the entries to that virtual address and port
//!   whose reply comes from the real server's address (for node ports, every entry to the port
//!   whose reply comes from it, as kube-proxy does);
//! - a virtual server going from no real servers to some: every entry to its address and port
//!   (they were made while packets had nowhere to go);
//! - a cluster-IP virtual server removed: every entry to its address and port (kube-proxy's
//!   `DeletedUDPClusterIPs`).
//!
//! [`ConntrackBackend`] deletes the matching entries: over ctnetlink
//! ([`ctnetlink::NetlinkConntrack`]) or in memory ([`MemoryConntrack`]).

pub mod ctnetlink;
pub mod sysctl;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use smallvec::SmallVec;

use super::backend::BackendError;
use super::desired::DesiredState;
use super::table::{DestId, EntryPoint, Family, ServiceId, VirtualServer};
use crate::model::Protocol;

/// IANA protocol number of a service protocol (`IPPROTO_TCP` 6, `IPPROTO_UDP` 17,
/// `IPPROTO_SCTP` 132).
pub(crate) fn protocol_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// Whether flows of this protocol can outlive their real server in conntrack (kube-proxy cleans
/// UDP; SCTP associations behave the same way under IPVS and are cleaned too).
pub(crate) fn needs_cleanup(p: Protocol) -> bool {
    matches!(p, Protocol::Udp | Protocol::Sctp)
}

/// Which conntrack entries to delete: every entry of `family` and `protocol` whose fields match
/// all the fields given here (`None` matches anything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConntrackFilter {
    /// Address family of the entries.
    pub family: Family,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Original direction destination address (`--orig-dst`): the virtual address.
    pub orig_dst: Option<IpAddr>,
    /// Original direction destination port (`--orig-port-dst`): the virtual port.
    pub orig_dst_port: Option<u16>,
    /// Reply direction source address (`--reply-src`): the real server that answered.
    pub reply_src: Option<IpAddr>,
}

impl ConntrackFilter {
    /// Entries to a virtual server's address and port (a node port: to the port on any address).
    pub fn service(id: &ServiceId, entry: EntryPoint) -> Self {
        Self {
            family: id.family(),
            protocol: id.protocol,
            orig_dst: (entry != EntryPoint::NodePort).then_some(id.addr),
            orig_dst_port: Some(id.port),
            reply_src: None,
        }
    }

    /// Entries to a virtual server's address and port answered by `endpoint` (a node port: to
    /// the port on any address).
    pub fn endpoint(id: &ServiceId, entry: EntryPoint, endpoint: IpAddr) -> Self {
        Self {
            reply_src: Some(endpoint),
            ..Self::service(id, entry)
        }
    }

    /// Whether `entry` matches.
    pub fn matches(&self, entry: &ConntrackEntry) -> bool {
        Family::of(&entry.orig.dst) == self.family
            && entry.protocol == protocol_number(self.protocol)
            && self.orig_dst.is_none_or(|a| a == entry.orig.dst)
            && self.orig_dst_port.is_none_or(|p| p == entry.orig.dst_port)
            && self.reply_src.is_none_or(|a| a == entry.reply.src)
    }
}

impl std::fmt::Display for ConntrackFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.protocol)?;
        if let Some(a) = self.orig_dst {
            write!(f, " orig-dst {a}")?;
        }
        if let Some(p) = self.orig_dst_port {
            write!(f, " orig-port-dst {p}")?;
        }
        if let Some(a) = self.reply_src {
            write!(f, " reply-src {a}")?;
        }
        Ok(())
    }
}

/// One direction of a conntrack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConntrackTuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (0 for protocols without ports).
    pub src_port: u16,
    /// Destination port (0 for protocols without ports).
    pub dst_port: u16,
}

/// A conntrack entry, as much of it as cleanup needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConntrackEntry {
    /// IANA protocol number.
    pub protocol: u8,
    /// Original direction (client → virtual address).
    pub orig: ConntrackTuple,
    /// Reply direction (real server → client).
    pub reply: ConntrackTuple,
    /// Conntrack zone (0 = default).
    pub zone: u16,
    /// The kernel's id of the entry, when known (deletes only that exact entry).
    pub id: Option<u32>,
}

/// What one [`ConntrackBackend::delete_matching`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConntrackReport {
    /// Entries looked at.
    pub scanned: usize,
    /// Entries deleted.
    pub deleted: usize,
    /// Netlink round trips (one request, or one batch, and its replies).
    pub round_trips: usize,
}

/// The kernel's conntrack table (or a stand-in).
pub trait ConntrackBackend: Send {
    /// Deletes every entry matching at least one of `filters` (nothing when `filters` is empty).
    fn delete_matching(
        &mut self,
        filters: &[ConntrackFilter],
    ) -> Result<ConntrackReport, BackendError>;
}

/// An in-memory conntrack table, for tests and dry runs.
#[derive(Debug, Clone, Default)]
pub struct MemoryConntrack {
    /// The entries.
    pub entries: Vec<ConntrackEntry>,
    /// Calls to [`ConntrackBackend::delete_matching`] with at least one filter.
    pub calls: usize,
}

impl ConntrackBackend for MemoryConntrack {
    fn delete_matching(
        &mut self,
        filters: &[ConntrackFilter],
    ) -> Result<ConntrackReport, BackendError> {
        if filters.is_empty() {
            return Ok(ConntrackReport::default());
        }
        self.calls += 1;
        let scanned = self.entries.len();
        self.entries
            .retain(|e| !filters.iter().any(|f| f.matches(e)));
        Ok(ConntrackReport {
            scanned,
            deleted: scanned - self.entries.len(),
            round_trips: 1,
        })
    }
}

/// Environment variable that turns stale conntrack cleanup off when set to `off` (or `0`,
/// `false`): **for tests** that show what the cleanup is for; not a supported setting.
pub const CLEANUP_ENV: &str = "SVCNET_CONNTRACK_CLEANUP";

/// The real host's conntrack cleanup: a ctnetlink socket opened at first use (a failure is
/// logged once and retried at the next sync), or nothing when [`CLEANUP_ENV`] turns it off.
#[derive(Debug)]
pub(crate) struct KernelConntrack {
    enabled: bool,
    backend: Option<ctnetlink::NetlinkConntrack>,
    warned: bool,
}

impl KernelConntrack {
    /// Enabled unless [`CLEANUP_ENV`] says `off`, `0` or `false`.
    pub(crate) fn from_env() -> Self {
        let off =
            std::env::var(CLEANUP_ENV).is_ok_and(|v| matches!(v.trim(), "off" | "0" | "false"));
        if off {
            tracing::warn!(
                env = CLEANUP_ENV,
                "stale UDP/SCTP conntrack cleanup is switched off (test setting)"
            );
        }
        Self {
            enabled: !off,
            backend: None,
            warned: false,
        }
    }

    /// The backend, opened on first use; `None` when switched off or not available.
    pub fn backend(&mut self) -> Option<&mut dyn ConntrackBackend> {
        if !self.enabled {
            return None;
        }
        if self.backend.is_none() {
            match ctnetlink::NetlinkConntrack::open() {
                Ok(b) => self.backend = Some(b),
                Err(e) => {
                    if !self.warned {
                        self.warned = true;
                        tracing::warn!(error = %e, "no ctnetlink: stale UDP conntrack entries will not be deleted");
                    }
                    return None;
                }
            }
        }
        self.backend
            .as_mut()
            .map(|b| b as &mut dyn ConntrackBackend)
    }
}

/// What the tracker remembers of one UDP/SCTP virtual server.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    entry: EntryPoint,
    /// Real servers, sorted.
    dests: SmallVec<[DestId; 4]>,
}

impl Record {
    fn of(vs: &VirtualServer) -> Self {
        Self {
            entry: vs.entry_point,
            // `Dests` iterates in order.
            dests: vs.dests.keys().copied().collect(),
        }
    }
}

/// Remembers the real servers of every UDP/SCTP virtual server between syncs and decides which
/// conntrack entries a sync made stale. Pure: no IO.
#[derive(Debug, Clone, Default)]
pub struct StaleTracker {
    known: HashMap<ServiceId, Record>,
    seeded: bool,
}

impl StaleTracker {
    /// A tracker that has seen nothing yet: the first [`observe`](Self::observe) only records.
    pub fn new() -> Self {
        Self::default()
    }

    /// UDP/SCTP virtual servers remembered.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Records the state a sync just programmed and returns the filters of the entries it made
    /// stale, sorted, without duplicates. `changed` are the virtual servers the sync touched
    /// (`None`: a full sync, look at all of them).
    ///
    /// The first call only records: what the previous proxy instance programmed is unknown, so
    /// nothing can be called removed (kube-proxy instead treats every UDP service as newly active
    /// at its first sync and deletes their entries; svcnet keeps established flows across a
    /// restart).
    pub fn observe(
        &mut self,
        desired: &DesiredState,
        changed: Option<&BTreeSet<ServiceId>>,
    ) -> Vec<ConntrackFilter> {
        let mut out = Vec::new();
        if !self.seeded {
            self.seeded = true;
            self.known = desired
                .servers()
                .filter(|(id, _)| needs_cleanup(id.protocol))
                .map(|(id, vs)| (*id, Record::of(vs)))
                .collect();
            return out;
        }
        let ids: Vec<ServiceId> = match changed {
            Some(c) => c
                .iter()
                .filter(|id| needs_cleanup(id.protocol))
                .copied()
                .collect(),
            None => {
                let mut all: BTreeSet<ServiceId> = self.known.keys().copied().collect();
                all.extend(
                    desired
                        .servers()
                        .map(|(id, _)| *id)
                        .filter(|id| needs_cleanup(id.protocol)),
                );
                all.into_iter().collect()
            }
        };
        for id in ids {
            let new = desired.server(&id).map(Record::of);
            let old = match &new {
                Some(r) => self.known.insert(id, r.clone()),
                None => self.known.remove(&id),
            };
            plan(&id, old.as_ref(), new.as_ref(), &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The filters for one virtual server going from `old` to `new`.
fn plan(
    id: &ServiceId,
    old: Option<&Record>,
    new: Option<&Record>,
    out: &mut Vec<ConntrackFilter>,
) {
    match (old, new) {
        (Some(old), Some(new)) => {
            for d in &old.dests {
                if new.dests.binary_search(d).is_err() {
                    out.push(ConntrackFilter::endpoint(id, new.entry, d.addr));
                }
            }
            if old.dests.is_empty() && !new.dests.is_empty() {
                out.push(ConntrackFilter::service(id, new.entry));
            }
        }
        (None, Some(new)) if !new.dests.is_empty() => {
            out.push(ConntrackFilter::service(id, new.entry));
        }
        (Some(old), None) if old.entry == EntryPoint::ClusterIp => {
            out.push(ConntrackFilter::service(id, old.entry));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
