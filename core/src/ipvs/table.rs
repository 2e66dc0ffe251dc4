//! The IPVS table as data: virtual servers, real servers and their parameters, shared by the
//! desired state, the backends and the `ipvsadm`-style renderer.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;

use crate::model::Protocol;

/// `IP_VS_SVC_F_PERSISTENT`: session affinity by client address.
pub const FLAG_PERSISTENT: u32 = 0x0001;
/// `IP_VS_SVC_F_HASHED`: set by the kernel on every service; ignored when comparing.
pub(crate) const FLAG_HASHED: u32 = 0x0002;
/// `IP_VS_SVC_F_SCHED1`: `sh-fallback` / `mh-fallback`.
pub(crate) const FLAG_SCHED1: u32 = 0x0008;
/// `IP_VS_SVC_F_SCHED2`: `sh-port` / `mh-port` (hash the source port too).
pub(crate) const FLAG_SCHED2: u32 = 0x0010;
/// Flags the kernel sets by itself and that never count as a difference.
pub(crate) const KERNEL_ONLY_FLAGS: u32 = FLAG_HASHED;

/// Address family of a virtual or real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Family {
    /// IPv4 (`AF_INET` = 2).
    V4,
    /// IPv6 (`AF_INET6` = 10).
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The `AF_*` number the kernel uses.
    pub(crate) fn af(self) -> u16 {
        match self {
            Family::V4 => 2,
            Family::V6 => 10,
        }
    }

    /// The IPVS service netmask for a full-length address (`255.255.255.255` / `128`).
    pub(crate) fn full_netmask(self) -> u32 {
        match self {
            Family::V4 => 0xffff_ffff,
            Family::V6 => 128,
        }
    }
}

/// An IPVS scheduler (`ipvsadm -s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord, Serialize)]
#[non_exhaustive]
pub enum Scheduler {
    /// Round robin (kube-proxy's default).
    #[default]
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connection.
    Lc,
    /// Weighted least connection.
    Wlc,
    /// Locality-based least connection.
    Lblc,
    /// Locality-based least connection with replication.
    Lblcr,
    /// Destination hashing.
    Dh,
    /// Source hashing.
    Sh,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Maglev hashing.
    Mh,
}

impl Scheduler {
    /// Every scheduler, in documentation order.
    pub const ALL: [Scheduler; 11] = [
        Scheduler::Rr,
        Scheduler::Wrr,
        Scheduler::Lc,
        Scheduler::Wlc,
        Scheduler::Lblc,
        Scheduler::Lblcr,
        Scheduler::Dh,
        Scheduler::Sh,
        Scheduler::Sed,
        Scheduler::Nq,
        Scheduler::Mh,
    ];

    /// The kernel's name (`rr`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
            Scheduler::Lc => "lc",
            Scheduler::Wlc => "wlc",
            Scheduler::Lblc => "lblc",
            Scheduler::Lblcr => "lblcr",
            Scheduler::Dh => "dh",
            Scheduler::Sh => "sh",
            Scheduler::Sed => "sed",
            Scheduler::Nq => "nq",
            Scheduler::Mh => "mh",
        }
    }

    /// Service flags this scheduler needs: kube-proxy gives `mh` only the source-port flag
    /// (`FlagSourceHash` = `IP_VS_SVC_F_SCHED2`, `mh-port`), not `mh-fallback`.
    pub fn flags(self) -> u32 {
        match self {
            Scheduler::Mh => FLAG_SCHED2,
            _ => 0,
        }
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown scheduler name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown IPVS scheduler {0:?} (expected one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, mh)"
)]
pub struct UnknownScheduler(pub String);

impl FromStr for Scheduler {
    type Err = UnknownScheduler;

    /// Parses a scheduler name; the empty string means the default (`rr`), as in kube-proxy.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Ok(Scheduler::Rr);
        }
        Scheduler::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownScheduler(s.to_string()))
    }
}

/// Identity of a virtual server: address, port and protocol (the family follows the address).
/// Ordered by address, then port, then protocol, which is the order listings use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ServiceId {
    /// Virtual address.
    pub addr: IpAddr,
    /// Virtual port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

impl ServiceId {
    /// Builds an identity.
    pub fn new(protocol: Protocol, addr: IpAddr, port: u16) -> Self {
        Self {
            addr,
            port,
            protocol,
        }
    }

    /// The address family.
    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.protocol, SocketText(self.addr, self.port))
    }
}

/// Formats `addr:port` with brackets around IPv6 addresses, as `ipvsadm` does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SocketText(pub IpAddr, pub u16);

impl fmt::Display for SocketText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.1),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.1),
        }
    }
}

/// The settable parameters of a virtual server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ServiceParams {
    /// Scheduler.
    pub scheduler: Scheduler,
    /// `IP_VS_SVC_F_*` flags (without kernel-only ones).
    pub flags: u32,
    /// Persistence timeout in seconds (0 unless [`FLAG_PERSISTENT`]).
    pub timeout: u32,
}

impl ServiceParams {
    /// Whether the kernel's parameters match these (kernel-only flags ignored).
    pub fn matches(&self, other: &ServiceParams) -> bool {
        self.scheduler == other.scheduler
            && (self.flags & !KERNEL_ONLY_FLAGS) == (other.flags & !KERNEL_ONLY_FLAGS)
            && self.timeout == other.timeout
    }
}

/// Forwarding method of a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub enum Forward {
    /// NAT (`IP_VS_CONN_F_MASQ` = 0), the only method kube-proxy uses.
    #[default]
    Masq,
    /// Direct routing (`IP_VS_CONN_F_DROUTE` = 3).
    Route,
    /// IP-in-IP tunnel (`IP_VS_CONN_F_TUNNEL` = 2).
    Tunnel,
    /// Local node (`IP_VS_CONN_F_LOCALNODE` = 1).
    Local,
    /// Bypass (`IP_VS_CONN_F_BYPASS` = 4).
    Bypass,
}

impl Forward {
    /// The kernel's `IP_VS_CONN_F_FWD_MASK` value.
    pub fn code(self) -> u32 {
        match self {
            Forward::Masq => 0,
            Forward::Local => 1,
            Forward::Tunnel => 2,
            Forward::Route => 3,
            Forward::Bypass => 4,
        }
    }

    /// From the kernel's value (masked with `IP_VS_CONN_F_FWD_MASK` = 7).
    pub(crate) fn from_code(code: u32) -> Self {
        match code & 7 {
            1 => Forward::Local,
            2 => Forward::Tunnel,
            3 => Forward::Route,
            4 => Forward::Bypass,
            _ => Forward::Masq,
        }
    }

    /// `ipvsadm`'s column text.
    pub fn as_str(self) -> &'static str {
        match self {
            Forward::Masq => "Masq",
            Forward::Local => "Local",
            Forward::Tunnel => "Tunnel",
            Forward::Route => "Route",
            Forward::Bypass => "Bypass",
        }
    }
}

/// Identity of a real server inside a virtual server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct DestId {
    /// Real server address.
    pub addr: IpAddr,
    /// Real server port.
    pub port: u16,
}

impl DestId {
    /// Builds an identity.
    pub fn new(addr: IpAddr, port: u16) -> Self {
        Self { addr, port }
    }
}

impl fmt::Display for DestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SocketText(self.addr, self.port).fmt(f)
    }
}

/// The settable parameters of a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct DestParams {
    /// Weight (0 = quiesced: no new connections).
    pub weight: u32,
    /// Forwarding method.
    pub forward: Forward,
}

impl DestParams {
    /// A masqueraded real server with `weight`.
    pub fn masq(weight: u32) -> Self {
        Self {
            weight,
            forward: Forward::Masq,
        }
    }
}

/// Connection counters of a real server, as the kernel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct DestConns {
    /// Active (established TCP) connections.
    pub active: u32,
    /// Inactive connections (other states).
    pub inactive: u32,
    /// Persistence templates.
    pub persistent: u32,
}

/// Traffic counters of a virtual or real server (`ipvsadm --stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Incoming packets.
    pub in_packets: u64,
    /// Outgoing packets.
    pub out_packets: u64,
    /// Incoming bytes.
    pub in_bytes: u64,
    /// Outgoing bytes.
    pub out_bytes: u64,
}

/// A real server as read from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DestEntry {
    /// Identity.
    pub id: DestId,
    /// Parameters.
    pub params: DestParams,
    /// Connection counters.
    pub conns: DestConns,
    /// Traffic counters.
    pub stats: Stats,
}

/// A virtual server as read from the kernel (`fwmark` services are not represented).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ServiceEntry {
    /// Identity.
    pub id: ServiceId,
    /// Parameters.
    pub params: ServiceParams,
    /// Traffic counters.
    pub stats: Stats,
}

/// What a virtual server is for: decides ipset membership and which traffic policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum EntryPoint {
    /// A cluster IP.
    ClusterIp,
    /// A `spec.externalIPs` address.
    ExternalIp,
    /// A `status.loadBalancer.ingress` IP.
    LoadBalancer,
    /// A node address with a node port.
    NodePort,
}

/// Real servers of one virtual server with their parameters: a map kept as one sorted vector
/// (one allocation per virtual server instead of a tree, which matters at 100,000 of them),
/// shared copy-on-write: the reconciler's record of the kernel points at the desired state's
/// list wherever the two agree, so an in-sync table is held once.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Dests(Arc<Vec<(DestId, DestParams)>>);

impl Dests {
    /// No real servers.
    pub fn new() -> Self {
        Self::default()
    }

    /// From entries already sorted by identity with no duplicates (debug builds check it).
    pub(crate) fn from_sorted(entries: Vec<(DestId, DestParams)>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        let mut entries = entries;
        entries.shrink_to_fit();
        Self(Arc::new(entries))
    }

    fn find(&self, id: &DestId) -> Result<usize, usize> {
        self.0.binary_search_by(|(d, _)| d.cmp(id))
    }

    /// Number of real servers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The parameters of one real server.
    pub fn get(&self, id: &DestId) -> Option<&DestParams> {
        self.find(id).ok().map(|i| &self.0[i].1)
    }

    /// Whether a real server is present.
    pub fn contains_key(&self, id: &DestId) -> bool {
        self.find(id).is_ok()
    }

    /// Adds or replaces a real server; returns the previous parameters. Copies the list first
    /// when it is shared, unless the entry is already there with these parameters.
    pub fn insert(&mut self, id: DestId, params: DestParams) -> Option<DestParams> {
        match self.find(&id) {
            Ok(i) if self.0[i].1 == params => Some(params),
            Ok(i) => Some(std::mem::replace(
                &mut Arc::make_mut(&mut self.0)[i].1,
                params,
            )),
            Err(i) => {
                Arc::make_mut(&mut self.0).insert(i, (id, params));
                None
            }
        }
    }

    /// Removes a real server; returns its parameters. Copies the list first when it is shared.
    pub fn remove(&mut self, id: &DestId) -> Option<DestParams> {
        let i = self.find(id).ok()?;
        Some(Arc::make_mut(&mut self.0).remove(i).1)
    }

    /// Makes this list share `other`'s storage when both hold the same entries (returns whether
    /// they do); this list's own storage is freed unless shared elsewhere.
    pub(crate) fn share_if_equal(&mut self, other: &Dests) -> bool {
        if Arc::ptr_eq(&self.0, &other.0) {
            return true;
        }
        if self.0 != other.0 {
            return false;
        }
        self.0 = other.0.clone();
        true
    }

    #[cfg(test)]
    /// Whether both lists are one and the same storage.
    pub(crate) fn shares_storage_with(&self, other: &Dests) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Real servers in order with their parameters.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&DestId, &DestParams)> + Clone {
        self.0.iter().map(|(d, p)| (d, p))
    }

    /// Real server identities in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &DestId> + Clone {
        self.0.iter().map(|(d, _)| d)
    }

    /// Parameters in identity order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &DestParams> + Clone {
        self.0.iter().map(|(_, p)| p)
    }

    #[cfg(test)]
    /// The entries as a sorted slice.
    pub(crate) fn as_slice(&self) -> &[(DestId, DestParams)] {
        &self.0
    }
}

impl fmt::Debug for Dests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl FromIterator<(DestId, DestParams)> for Dests {
    /// Collects entries in any order; a later duplicate replaces an earlier one (as a map's
    /// `collect` does).
    fn from_iter<I: IntoIterator<Item = (DestId, DestParams)>>(iter: I) -> Self {
        let mut v: Vec<(DestId, DestParams)> = iter.into_iter().collect();
        if !v.windows(2).all(|w| w[0].0 < w[1].0) {
            // Stable sort keeps insertion order among equal keys; keep the last of each run.
            v.sort_by_key(|e| e.0);
            let mut out: Vec<(DestId, DestParams)> = Vec::with_capacity(v.len());
            for e in v {
                match out.last_mut() {
                    Some(last) if last.0 == e.0 => *last = e,
                    _ => out.push(e),
                }
            }
            v = out;
        }
        Self::from_sorted(v)
    }
}

impl<'a> IntoIterator for &'a Dests {
    type Item = (&'a DestId, &'a DestParams);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (DestId, DestParams)>,
        fn(&'a (DestId, DestParams)) -> (&'a DestId, &'a DestParams),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(d, p)| (d, p))
    }
}

impl Serialize for Dests {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(d, p)| (d.to_string(), p)))
    }
}

/// A desired virtual server with its real servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VirtualServer {
    /// Parameters.
    pub params: ServiceParams,
    /// Real servers and their parameters.
    pub dests: Dests,
    /// Which entry point of the Service this is.
    pub entry_point: EntryPoint,
    /// Whether a `Local` traffic policy restricted the real servers to this node.
    pub local_only: bool,
}

/// A kernel table listing: virtual servers with their real servers.
pub(crate) type TableDump = Vec<(ServiceEntry, Vec<DestEntry>)>;

#[cfg(test)]
mod tests {
    use super::*;

    fn d(last: u8) -> DestId {
        DestId::new(IpAddr::from([10, 0, 0, last]), 80)
    }

    #[test]
    fn dests_behave_as_a_sorted_map_and_copy_on_write_when_shared() {
        let mut a: Dests = [(d(3), DestParams::masq(1)), (d(1), DestParams::masq(1))]
            .into_iter()
            .collect();
        assert_eq!(a.keys().copied().collect::<Vec<_>>(), [d(1), d(3)]);
        assert_eq!(a.insert(d(2), DestParams::masq(2)), None);
        assert_eq!(
            a.insert(d(2), DestParams::masq(5)),
            Some(DestParams::masq(2))
        );
        assert_eq!(a.get(&d(2)), Some(&DestParams::masq(5)));

        let mut b: Dests = a.iter().map(|(k, v)| (*k, *v)).collect();
        assert!(b.share_if_equal(&a));
        assert!(std::ptr::eq(a.as_slice(), b.as_slice()));
        // Changing one of two sharing lists leaves the other as it was.
        assert_eq!(b.remove(&d(1)), Some(DestParams::masq(1)));
        assert_eq!(a.len(), 3);
        assert_eq!(b.len(), 2);
        assert!(!b.share_if_equal(&a));
        assert!(!b.contains_key(&d(1)));
    }
}
