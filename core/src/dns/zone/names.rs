//! Name text helpers: DNS labels, lower case, dashed IPs (`10-244-1-10`), names under an apex.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

/// Whether `s` is a lower-case RFC 1123 label (what Kubernetes requires of service and
/// namespace names): 1–63 of `a-z0-9-`, not starting or ending with `-`.
pub(super) fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// `s` in lower case, borrowed when it already is.
pub(super) fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// `10.244.1.10` → `10-244-1-10`; `fd00::1` → `fd00--1`.
pub fn dashed_ip(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// Parses a dashed IP label (`10-244-1-10`, `fd00--1`) back to an address.
pub fn parse_dashed_ip(label: &str) -> Option<IpAddr> {
    if label.len() > 45 {
        return None;
    }
    let v4 = label.bytes().filter(|b| *b == b'-').count() == 3 && !label.contains("--");
    if v4 {
        label
            .replace('-', ".")
            .parse::<Ipv4Addr>()
            .ok()
            .map(IpAddr::V4)
    } else {
        label
            .replace('-', ":")
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6)
    }
}

/// `relative` (dot-separated labels, no trailing dot) under `apex`.
pub(super) fn name_in(apex: &Name, relative: &str) -> Name {
    if relative.is_empty() {
        return apex.clone();
    }
    Name::from_ascii(relative)
        .and_then(|n| n.append_domain(apex))
        .unwrap_or_else(|_| apex.clone())
}

/// The lower-case text of `name` with a trailing dot.
pub fn lower_fqdn(name: &Name) -> String {
    let mut s = name.to_lowercase().to_ascii();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashed_ip_round_trip() {
        for ip in ["10.244.1.10", "fd00::1", "2001:db8::ff00:42:8329"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(parse_dashed_ip(&dashed_ip(ip)), Some(ip));
        }
        assert_eq!(parse_dashed_ip("web-0"), None);
        assert_eq!(parse_dashed_ip("1-2-3"), None);
    }
}
