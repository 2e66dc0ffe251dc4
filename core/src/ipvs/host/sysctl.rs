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

/// Writes the [`sysctls`] of `config` whose current value differs (so a setting already made,
/// e.g. by the DaemonSet's privileged init container `agentctl sysctls`, needs no write access
/// to `/proc/sys`); returns the failures as (path under /proc/sys, reason).
pub fn apply_sysctls(
    io: &mut dyn crate::ipvs::conntrack::sysctl::SysctlIo,
    config: &ProxyConfig,
) -> Vec<(&'static str, String)> {
    let mut failed = Vec::new();
    for (path, value) in sysctls(config) {
        let full = format!("/proc/sys/{path}");
        if io.read(&full).is_ok_and(|current| current.trim() == value) {
            continue;
        }
        if let Err(e) = io.write(&full, value) {
            failed.push((path, e.to_string()));
        }
    }
    failed
}
