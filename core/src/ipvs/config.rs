//! Proxy configuration: the validated runtime [`ProxyConfig`] and its source, a
//! `KubeProxyConfiguration` file (`kubeproxy.config.k8s.io/v1alpha1`), see [`file`].

pub mod file;
pub mod watch;

use std::net::SocketAddr;
use std::time::Duration;

use super::table::Scheduler;
use ipnetwork::IpNetwork;

/// The validated settings the proxy runs with. Every field can change live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// IPVS scheduler for every virtual server (`ipvs.scheduler`, default `rr`).
    pub scheduler: Scheduler,
    /// Full resync interval (`ipvs.syncPeriod`, default 30 s).
    pub sync_period: Duration,
    /// Minimum interval between syncs (`ipvs.minSyncPeriod`, default 0).
    pub min_sync_period: Duration,
    /// Virtual servers in these ranges are never touched by cleanup (`ipvs.excludeCIDRs`).
    pub exclude_cidrs: Vec<IpNetwork>,
    /// `ipvs.strictARP`: set `arp_ignore=1` / `arp_announce=2`.
    pub strict_arp: bool,
    /// IPVS TCP timeout (`ipvs.tcpTimeout`, zero = leave the kernel's).
    pub tcp_timeout: Duration,
    /// IPVS TCP FIN timeout (`ipvs.tcpFinTimeout`, zero = leave the kernel's).
    pub tcp_fin_timeout: Duration,
    /// IPVS UDP timeout (`ipvs.udpTimeout`, zero = leave the kernel's).
    pub udp_timeout: Duration,
    /// Pod ranges (`clusterCIDR`, comma separated in the file): traffic from outside them to a
    /// cluster IP is masqueraded.
    pub cluster_cidrs: Vec<IpNetwork>,
    /// Node addresses that serve node ports (`nodePortAddresses`); as in kube-proxy, a family
    /// without CIDRs here gets every local address of that family.
    pub node_port_addresses: Vec<IpNetwork>,
    /// `nodePortAddresses: ["primary"]`: node ports only on the node's primary IPs, which are
    /// taken (as kube-proxy does) from a concrete `bindAddress`, else from this node's Node
    /// object; a family without a known primary IP gets every local address of that family.
    pub node_port_addresses_primary: bool,
    /// `bindAddress` when it names a concrete address (not `0.0.0.0`/`::`/loopback): the node's
    /// primary IP of its family, used by `nodePortAddresses: ["primary"]`.
    pub bind_address: Option<std::net::IpAddr>,
    /// Masquerade all traffic to cluster IPs (`iptables.masqueradeAll`).
    pub masquerade_all: bool,
    /// Bit of the packet mark used to request masquerade (`iptables.masqueradeBit`, default 14).
    pub masquerade_bit: u8,
    /// Where `/healthz` and `/livez` are served (`healthzBindAddress`, default `0.0.0.0:10256`).
    pub healthz_bind_address: Option<SocketAddr>,
    /// Where `/metrics` is served (`metricsBindAddress`, default `127.0.0.1:10249`).
    pub metrics_bind_address: Option<SocketAddr>,
    /// Node name override (`hostnameOverride`).
    pub hostname_override: Option<String>,
    /// The `conntrack` section: kernel conntrack table size and timeouts.
    pub conntrack: ConntrackConfig,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            scheduler: Scheduler::Rr,
            sync_period: Duration::from_secs(30),
            min_sync_period: Duration::ZERO,
            exclude_cidrs: Vec::new(),
            strict_arp: false,
            tcp_timeout: Duration::ZERO,
            tcp_fin_timeout: Duration::ZERO,
            udp_timeout: Duration::ZERO,
            cluster_cidrs: Vec::new(),
            node_port_addresses: Vec::new(),
            node_port_addresses_primary: false,
            bind_address: None,
            masquerade_all: false,
            masquerade_bit: 14,
            healthz_bind_address: Some(SocketAddr::from(([0, 0, 0, 0], 10256))),
            metrics_bind_address: Some(SocketAddr::from(([127, 0, 0, 1], 10249))),
            hostname_override: None,
            conntrack: Default::default(),
        }
    }
}

impl ProxyConfig {
    /// The packet mark requesting masquerade (`1 << masquerade_bit`).
    pub(crate) fn masquerade_mark(&self) -> u32 {
        1u32 << self.masquerade_bit
    }

    /// The `nodePortAddresses` CIDRs with `primary` resolved to the node's primary IPs (`/32`,
    /// `/128`), as kube-proxy's `detectNodeIPs`: per family, a concrete `bindAddress` of that
    /// family, else the first of `node_ips` (the Node object's addresses, InternalIP before
    /// ExternalIP) of that family. A family with neither gets no CIDR (so every address of it).
    pub fn node_port_cidrs(&self, node_ips: &[std::net::IpAddr]) -> Vec<IpNetwork> {
        if !self.node_port_addresses_primary {
            return self.node_port_addresses.clone();
        }
        let bind = self
            .bind_address
            .filter(|a| !a.is_unspecified() && !a.is_loopback());
        [true, false]
            .into_iter()
            .filter_map(|v4| {
                bind.filter(|a| a.is_ipv4() == v4)
                    .or_else(|| node_ips.iter().copied().find(|a| a.is_ipv4() == v4))
            })
            .map(IpNetwork::from)
            .collect()
    }

    /// Whether `addr` lies in one of the `excludeCIDRs`.
    pub(crate) fn is_excluded(&self, addr: std::net::IpAddr) -> bool {
        self.exclude_cidrs.iter().any(|n| n.contains(addr))
    }
}

/// The `conntrack` section, validated. Defaults are kube-proxy's (`maxPerCore` 32768, `min`
/// 131072, `tcpEstablishedTimeout` 24h, `tcpCloseWaitTimeout` 1h, the UDP timeouts and
/// `tcpBeLiberal` left to the kernel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// `conntrack.maxPerCore`: entries per CPU (0 leaves `nf_conntrack_max` alone).
    pub max_per_core: u32,
    /// `conntrack.min`: the lowest `nf_conntrack_max` set from `maxPerCore`.
    pub min: u32,
    /// `conntrack.tcpEstablishedTimeout` (zero: leave the kernel's).
    pub tcp_established_timeout: Duration,
    /// `conntrack.tcpCloseWaitTimeout` (zero: leave the kernel's).
    pub tcp_close_wait_timeout: Duration,
    /// `conntrack.tcpBeLiberal`: set `nf_conntrack_tcp_be_liberal` to 1 (false: leave it).
    pub tcp_be_liberal: bool,
    /// `conntrack.udpTimeout` (zero: leave the kernel's).
    pub udp_timeout: Duration,
    /// `conntrack.udpStreamTimeout` (zero: leave the kernel's).
    pub udp_stream_timeout: Duration,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        Self {
            max_per_core: 32 * 1024,
            min: 128 * 1024,
            tcp_established_timeout: Duration::from_secs(24 * 3600),
            tcp_close_wait_timeout: Duration::from_secs(3600),
            tcp_be_liberal: false,
            udp_timeout: Duration::ZERO,
            udp_stream_timeout: Duration::ZERO,
        }
    }
}
