//! The sysctls kube-proxy's IPVS mode sets.

use crate::ipvs::config::ProxyConfig;

/// The sysctls kube-proxy's IPVS mode needs, as (path under /proc/sys, value).
pub fn sysctls(config: &ProxyConfig) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        ("net/ipv4/vs/conntrack", "1"),
        ("net/ipv4/vs/expire_nodest_conn", "1"),
        ("net/ipv4/vs/expire_quiescent_template", "1"),
        ("net/ipv4/ip_forward", "1"),
    ];
    if config.strict_arp {
        v.push(("net/ipv4/conf/all/arp_ignore", "1"));
        v.push(("net/ipv4/conf/all/arp_announce", "2"));
    }
    v
}
