//! The ipsets kube-proxy's IPVS mode keeps, as data: their names, types and entries, derived
//! from the desired IPVS table and the [`HostExtras`].

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::ipvs::desired::DesiredState;
use crate::ipvs::extras::HostExtras;
use crate::ipvs::table::{EntryPoint, Family, ServiceId, VirtualServer};
use crate::model::Protocol;

/// One ipset with its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    /// Set name (`KUBE-6-` prefix for IPv6).
    pub name: String,
    /// ipset type, e.g. `hash:ip,port`.
    pub kind: &'static str,
    /// Family for hash types (`inet`/`inet6`), `None` for bitmap types.
    pub family: Option<&'static str>,
    /// Entries in ipset syntax, sorted.
    pub entries: BTreeSet<String>,
}

/// Longest ipset name the kernel accepts (`IPSET_MAXNAMELEN` 32 with the NUL).
pub const IPSET_NAME_MAX: usize = 31;

/// The set `base` for `family`: `KUBE-6-` prefix for IPv6, cut to [`IPSET_NAME_MAX`] as
/// kube-proxy does (`KUBE-6-LOAD-BALANCER-SOURCE-CID`).
pub(crate) fn set_name(base: &str, family: Family) -> String {
    let mut name = match family {
        Family::V4 => base.to_string(),
        Family::V6 => base.replacen("KUBE-", "KUBE-6-", 1),
    };
    name.truncate(IPSET_NAME_MAX);
    name
}

/// The sets, in the order [`ipsets_with`] returns them: (base name, ipset type, hash type).
const SETS: [(&str, &str, bool); 17] = [
    ("KUBE-CLUSTER-IP", "hash:ip,port", true),
    ("KUBE-LOOP-BACK", "hash:ip,port,ip", true),
    ("KUBE-EXTERNAL-IP", "hash:ip,port", true),
    ("KUBE-EXTERNAL-IP-LOCAL", "hash:ip,port", true),
    ("KUBE-LOAD-BALANCER", "hash:ip,port", true),
    ("KUBE-LOAD-BALANCER-FW", "hash:ip,port", true),
    ("KUBE-LOAD-BALANCER-LOCAL", "hash:ip,port", true),
    ("KUBE-LOAD-BALANCER-SOURCE-IP", "hash:ip,port,ip", true),
    ("KUBE-LOAD-BALANCER-SOURCE-CIDR", "hash:ip,port,net", true),
    ("KUBE-NODE-PORT-TCP", "bitmap:port", false),
    ("KUBE-NODE-PORT-LOCAL-TCP", "bitmap:port", false),
    ("KUBE-NODE-PORT-UDP", "bitmap:port", false),
    ("KUBE-NODE-PORT-LOCAL-UDP", "bitmap:port", false),
    ("KUBE-NODE-PORT-SCTP-HASH", "hash:ip,port", true),
    ("KUBE-NODE-PORT-LOCAL-SCTP-HASH", "hash:ip,port", true),
    ("KUBE-HEALTH-CHECK-NODE-PORT", "bitmap:port", false),
    ("KUBE-IPVS-IPS", "hash:ip", true),
];

/// Index of a set in [`SETS`] (and in one family's [`ipsets_with`]).
pub(crate) type SetIndex = u8;

const CLUSTER: SetIndex = 0;
const LOOPBACK: SetIndex = 1;
const EXTERNAL: SetIndex = 2;
const EXTERNAL_LOCAL: SetIndex = 3;
const LB: SetIndex = 4;
const LB_FW: SetIndex = 5;
const LB_LOCAL: SetIndex = 6;
const LB_SOURCE_IP: SetIndex = 7;
const LB_SOURCE_CIDR: SetIndex = 8;
const NP_TCP: SetIndex = 9;
const NP_LOCAL_TCP: SetIndex = 10;
const NP_UDP: SetIndex = 11;
const NP_LOCAL_UDP: SetIndex = 12;
const NP_SCTP: SetIndex = 13;
const NP_LOCAL_SCTP: SetIndex = 14;
const HEALTH: SetIndex = 15;
/// Index of `KUBE-IPVS-IPS`: one entry per address bound on `kube-ipvs0`.
pub(crate) const IPVS_IPS: SetIndex = 16;
/// Number of sets per family.
pub(crate) const SET_COUNT: usize = SETS.len();

/// The sets of one family, empty, in [`SETS`] order.
pub(crate) fn empty_sets(family: Family) -> Vec<IpSet> {
    let fam = match family {
        Family::V4 => "inet",
        Family::V6 => "inet6",
    };
    SETS.iter()
        .map(|(base, kind, hash)| IpSet {
            name: set_name(base, family),
            kind,
            family: hash.then_some(fam),
            entries: BTreeSet::new(),
        })
        .collect()
}

/// The entries one virtual server puts into the sets of its family, as (set, entry): its own
/// `ip,proto:port` (or node port) and the hairpin entries of its real servers on this node
/// (`extras.local_endpoints`; all of them when unknown).
pub(crate) fn server_entries(
    id: &ServiceId,
    vs: &VirtualServer,
    extras: &HostExtras,
    mut emit: impl FnMut(SetIndex, String),
) {
    let proto = id.protocol.as_lower();
    let ip_port = || format!("{},{proto}:{}", id.addr, id.port);
    match vs.entry_point {
        EntryPoint::ClusterIp => emit(CLUSTER, ip_port()),
        EntryPoint::ExternalIp => {
            emit(EXTERNAL, ip_port());
            if vs.local_only {
                emit(EXTERNAL_LOCAL, ip_port());
            }
        }
        EntryPoint::LoadBalancer => {
            emit(LB, ip_port());
            if vs.local_only {
                emit(LB_LOCAL, ip_port());
            }
        }
        EntryPoint::NodePort => {
            let (all, local) = match id.protocol {
                Protocol::Tcp => (NP_TCP, NP_LOCAL_TCP),
                Protocol::Udp => (NP_UDP, NP_LOCAL_UDP),
                Protocol::Sctp => {
                    if vs.local_only {
                        emit(NP_LOCAL_SCTP, ip_port());
                    }
                    emit(NP_SCTP, ip_port());
                    // SCTP node ports add no hairpin entries (as before the split).
                    return;
                }
            };
            emit(all, id.port.to_string());
            if vs.local_only {
                emit(local, id.port.to_string());
            }
        }
    }
    for d in vs.dests.keys() {
        if extras
            .local_endpoints
            .as_ref()
            .is_some_and(|local| !local.contains(&d.addr))
        {
            continue;
        }
        emit(
            LOOPBACK,
            format!("{},{proto}:{},{}", d.addr, d.port, d.addr),
        );
    }
}

/// The entries of the [`HostExtras`] in the sets of `family`: health-check node ports and
/// load-balancer source ranges.
fn extras_entries(
    family: Family,
    extras: &HostExtras,
    node_addresses: &[IpAddr],
    mut emit: impl FnMut(SetIndex, String),
) {
    // The proxy serves the health checks on every node address, so each family's set has them all.
    for p in &extras.health_check_node_ports {
        emit(HEALTH, p.to_string());
    }
    for r in &extras.source_ranges {
        if Family::of(&r.ip) != family {
            continue;
        }
        let ip_port = r.ip_port();
        for net in r.allowed.iter().filter(|n| Family::of(&n.ip()) == family) {
            emit(LB_SOURCE_CIDR, format!("{ip_port},{net}"));
        }
        if r.allows_node(node_addresses) {
            emit(LB_SOURCE_IP, format!("{ip_port},{}", r.ip));
        }
        emit(LB_FW, ip_port);
    }
}

/// The ipsets for one family, from the desired state.
pub fn ipsets(desired: &DesiredState, family: Family) -> Vec<IpSet> {
    ipsets_with(desired, family, &HostExtras::default(), &[])
}

/// The ipsets for one family, from the desired state and the [`HostExtras`]; `node_addresses`
/// decide whether the node itself may reach source-restricted load balancers.
pub fn ipsets_with(
    desired: &DesiredState,
    family: Family,
    extras: &HostExtras,
    node_addresses: &[IpAddr],
) -> Vec<IpSet> {
    ipsets_counted(desired, family, extras, node_addresses, |_, _, _| {})
}

/// [`ipsets_with`], also telling `seen` each virtual server's entries (for the incremental
/// model of the host, which counts who holds each entry).
pub(crate) fn ipsets_counted(
    desired: &DesiredState,
    family: Family,
    extras: &HostExtras,
    node_addresses: &[IpAddr],
    mut seen: impl FnMut(&ServiceId, SetIndex, &str),
) -> Vec<IpSet> {
    let mut sets = empty_sets(family);
    for (id, vs) in desired.servers() {
        if id.family() != family {
            continue;
        }
        server_entries(id, vs, extras, |s, e| {
            seen(id, s, &e);
            sets[usize::from(s)].entries.insert(e);
        });
    }
    let ipvs_ips = &mut sets[usize::from(IPVS_IPS)].entries;
    for a in desired.addresses() {
        if Family::of(a) == family {
            ipvs_ips.insert(a.to_string());
        }
    }
    extras_entries(family, extras, node_addresses, |s, e| {
        sets[usize::from(s)].entries.insert(e);
    });
    sets
}
