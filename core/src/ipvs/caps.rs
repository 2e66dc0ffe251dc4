//! The capabilities the kernel edges need, checked up front so that a container without them
//! fails with an error naming the missing one rather than with `Operation not permitted` from
//! some later request (issue 19 item 9).
//!
//! Every IPVS generic netlink command, `kube-ipvs0` and its addresses (rtnetlink), ipset and
//! conntrack (nfnetlink) need CAP_NET_ADMIN; `iptables-legacy` also opens a raw socket
//! (CAP_NET_RAW). Loading kernel modules is never asked of this process: the kernel loads
//! `ip_vs` and the others on demand.

use super::backend::BackendError;

/// Bit of CAP_NET_ADMIN in the capability sets.
pub(crate) const CAP_NET_ADMIN: u32 = 12;

/// The effective capability set from the text of `/proc/self/status` (`CapEff:` in hex).
pub(crate) fn parse_effective(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Fails with [`BackendError::MissingCapability`] when `effective` (`None`: unknown, e.g. no
/// `/proc`; then the kernel has the last word) lacks capability bit `cap`.
pub(crate) fn require(
    effective: Option<u64>,
    cap: u32,
    name: &'static str,
    needed_for: &'static str,
) -> Result<(), BackendError> {
    match effective {
        Some(set) if set & (1u64 << cap) == 0 => Err(BackendError::MissingCapability {
            capability: name,
            needed_for,
        }),
        _ => Ok(()),
    }
}

/// This process's effective capabilities, if `/proc/self/status` can be read.
pub(crate) fn effective() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(parse_effective)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tagentctl\nCapInh:\t0000000000000000\nCapPrm:\t0000000000002000\n\
                          CapEff:\t0000000000002000\nCapBnd:\t0000000000002000\n";

    #[test]
    fn names_the_missing_capability() {
        let eff = parse_effective(STATUS);
        assert_eq!(eff, Some(0x2000), "NET_RAW only");
        let err = require(eff, CAP_NET_ADMIN, "CAP_NET_ADMIN", "programming IPVS").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("CAP_NET_ADMIN"), "{text}");
        assert!(text.contains("programming IPVS"), "{text}");
        assert!(require(Some(0x3000), CAP_NET_ADMIN, "CAP_NET_ADMIN", "x").is_ok());
        assert!(require(None, CAP_NET_ADMIN, "CAP_NET_ADMIN", "x").is_ok());
        assert_eq!(parse_effective("Name:\tx\n"), None);
        assert_eq!(parse_effective("CapEff:\tzz\n"), None);
    }
}
