//! The ipsets kube-proxy's IPVS mode keeps, as data: their names, types and entries, derived
//! from the desired IPVS table and the [`HostExtras`].

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::ipvs::desired::DesiredState;
use crate::ipvs::extras::HostExtras;
use crate::ipvs::table::{EntryPoint, Family};
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
    let fam = match family {
        Family::V4 => "inet",
        Family::V6 => "inet6",
    };
    let hash = |base: &str, kind: &'static str| IpSet {
        name: set_name(base, family),
        kind,
        family: Some(fam),
        entries: BTreeSet::new(),
    };
    let bitmap = |base: &str| IpSet {
        name: set_name(base, family),
        kind: "bitmap:port",
        family: None,
        entries: BTreeSet::new(),
    };
    let mut cluster = hash("KUBE-CLUSTER-IP", "hash:ip,port");
    let mut loopback = hash("KUBE-LOOP-BACK", "hash:ip,port,ip");
    let mut external = hash("KUBE-EXTERNAL-IP", "hash:ip,port");
    let mut external_local = hash("KUBE-EXTERNAL-IP-LOCAL", "hash:ip,port");
    let mut lb = hash("KUBE-LOAD-BALANCER", "hash:ip,port");
    let mut lb_local = hash("KUBE-LOAD-BALANCER-LOCAL", "hash:ip,port");
    let mut np_tcp = bitmap("KUBE-NODE-PORT-TCP");
    let mut np_local_tcp = bitmap("KUBE-NODE-PORT-LOCAL-TCP");
    let mut np_udp = bitmap("KUBE-NODE-PORT-UDP");
    let mut np_local_udp = bitmap("KUBE-NODE-PORT-LOCAL-UDP");
    let mut np_sctp = hash("KUBE-NODE-PORT-SCTP-HASH", "hash:ip,port");
    let mut np_local_sctp = hash("KUBE-NODE-PORT-LOCAL-SCTP-HASH", "hash:ip,port");
    let mut health = bitmap("KUBE-HEALTH-CHECK-NODE-PORT");
    let mut lb_fw = hash("KUBE-LOAD-BALANCER-FW", "hash:ip,port");
    let mut lb_source_ip = hash("KUBE-LOAD-BALANCER-SOURCE-IP", "hash:ip,port,ip");
    let mut lb_source_cidr = hash("KUBE-LOAD-BALANCER-SOURCE-CIDR", "hash:ip,port,net");
    let mut ipvs_ips = hash("KUBE-IPVS-IPS", "hash:ip");
    for (id, vs) in desired.servers() {
        if id.family() != family {
            continue;
        }
        let proto = id.protocol.as_lower();
        let ip_port = format!("{},{proto}:{}", id.addr, id.port);
        match vs.entry_point {
            EntryPoint::ClusterIp => {
                cluster.entries.insert(ip_port);
            }
            EntryPoint::ExternalIp => {
                external.entries.insert(ip_port.clone());
                if vs.local_only {
                    external_local.entries.insert(ip_port);
                }
            }
            EntryPoint::LoadBalancer => {
                lb.entries.insert(ip_port.clone());
                if vs.local_only {
                    lb_local.entries.insert(ip_port);
                }
            }
            EntryPoint::NodePort => {
                let port = id.port.to_string();
                let (all, local) = match id.protocol {
                    Protocol::Tcp => (&mut np_tcp, &mut np_local_tcp),
                    Protocol::Udp => (&mut np_udp, &mut np_local_udp),
                    Protocol::Sctp => {
                        if vs.local_only {
                            np_local_sctp.entries.insert(ip_port.clone());
                        }
                        np_sctp.entries.insert(ip_port);
                        continue;
                    }
                };
                all.entries.insert(port.clone());
                if vs.local_only {
                    local.entries.insert(port);
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
            loopback
                .entries
                .insert(format!("{},{proto}:{},{}", d.addr, d.port, d.addr));
        }
    }
    for a in desired.addresses() {
        if Family::of(a) == family {
            ipvs_ips.entries.insert(a.to_string());
        }
    }
    // The proxy serves the health checks on every node address, so each family's set has them all.
    health
        .entries
        .extend(extras.health_check_node_ports.iter().map(u16::to_string));
    for r in &extras.source_ranges {
        if Family::of(&r.ip) != family {
            continue;
        }
        let ip_port = r.ip_port();
        for net in r.allowed.iter().filter(|n| Family::of(&n.ip()) == family) {
            lb_source_cidr.entries.insert(format!("{ip_port},{net}"));
        }
        if r.allows_node(node_addresses) {
            lb_source_ip.entries.insert(format!("{ip_port},{}", r.ip));
        }
        lb_fw.entries.insert(ip_port);
    }
    vec![
        cluster,
        loopback,
        external,
        external_local,
        lb,
        lb_fw,
        lb_local,
        lb_source_ip,
        lb_source_cidr,
        np_tcp,
        np_local_tcp,
        np_udp,
        np_local_udp,
        np_sctp,
        np_local_sctp,
        health,
        ipvs_ips,
    ]
}
