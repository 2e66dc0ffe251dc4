//! Zone names, durations and addresses as written in a Corefile.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Normalises a zone as CoreDNS does: lower case, fully qualified (trailing dot). A CIDR
/// (`10.0.0.0/24`, `fd00::/64`) becomes its reverse zone(s) under `in-addr.arpa.`/`ip6.arpa.`;
/// a prefix that is not on an octet (nibble) boundary expands to every covering zone.
pub(crate) fn normalize_zone(text: &str) -> Result<Vec<String>, String> {
    if let Some((ip, len)) = text.split_once('/') {
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("{text:?} is neither a zone name nor a CIDR"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| format!("{text:?} has an invalid prefix length"))?;
        return reverse_zones(ip, len).ok_or_else(|| format!("{text:?} is not a valid CIDR"));
    }
    let name = if text == "." {
        ".".to_string()
    } else {
        let mut s = text.to_ascii_lowercase();
        if !s.ends_with('.') {
            s.push('.');
        }
        s
    };
    validate_name(&name).map_err(|e| format!("{text:?} is not a valid zone name: {e}"))?;
    Ok(vec![name])
}

fn validate_name(name: &str) -> Result<(), &'static str> {
    if name == "." {
        return Ok(());
    }
    if name.len() > 254 {
        return Err("longer than 253 characters");
    }
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 characters");
        }
        if label.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("white space or control character");
        }
    }
    Ok(())
}

/// The reverse zones covering `ip/len` (a prefix off an octet or nibble boundary expands to
/// at most 128 zones).
fn reverse_zones(ip: IpAddr, len: u8) -> Option<Vec<String>> {
    let (bits, width, step, suffix) = match ip {
        IpAddr::V4(v4) if len <= 32 => (
            u128::from(u32::from(v4) & mask32(len)),
            32u32,
            8u32,
            "in-addr.arpa.",
        ),
        IpAddr::V6(v6) if len <= 128 => (u128::from(v6) & mask128(len), 128, 4, "ip6.arpa."),
        _ => return None,
    };
    let len = u32::from(len);
    let rounded = len.div_ceil(step) * step;
    let extra = rounded - len;
    let mut out = Vec::new();
    for i in 0..(1u128 << extra) {
        let net = bits | i.checked_shl(width - rounded).unwrap_or(0);
        let mut labels: Vec<String> = (0..rounded / step)
            .map(|n| {
                let shift = width - step * (n + 1);
                let part = (net >> shift) & ((1u128 << step) - 1);
                if step == 8 {
                    part.to_string()
                } else {
                    format!("{part:x}")
                }
            })
            .collect();
        labels.reverse();
        labels.push(suffix.to_string());
        out.push(labels.join("."));
    }
    Some(out)
}

fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len as u32)
    }
}

/// Whether `name` (lower case, fully qualified) is `zone` or below it.
pub(crate) fn in_zone(name: &str, zone: &str) -> bool {
    if zone == "." {
        return true;
    }
    name == zone
        || (name.len() > zone.len()
            && name.ends_with(zone)
            && name.as_bytes()[name.len() - zone.len() - 1] == b'.')
}

/// The longest of `zones` that contains `name`, if any.
pub(crate) fn longest_zone<'z>(
    name: &str,
    zones: impl IntoIterator<Item = &'z str>,
) -> Option<&'z str> {
    zones
        .into_iter()
        .filter(|z| in_zone(name, z))
        .max_by_key(|z| if *z == "." { 0 } else { z.len() })
}

/// Parses a Go duration (`500ms`, `5s`, `1m30s`, `1.5h`, `0`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (such as 500ms, 5s, 1m)");
    match crate::duration::parse_go_duration(text) {
        Ok(d) if d.as_secs_f64() <= 1e9 => Ok(d),
        _ => Err(bad()),
    }
}

/// Parses a listen address as plugins write them: `:8080` (all addresses), `localhost:9153`,
/// `127.0.0.1:8181`, `[::1]:53`.
pub(crate) fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    let bad = || format!("{text:?} is not an address such as :8080 or 127.0.0.1:8080");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let ip = match host.trim_start_matches('[').trim_end_matches(']') {
        "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h => h.parse().map_err(|_| bad())?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// Parses an upstream address: `IP`, `IP:PORT`, `[IPv6]:PORT`, optionally with `dns://`.
pub(crate) fn parse_upstream(text: &str, default_port: u16) -> Option<SocketAddr> {
    let t = text.strip_prefix("dns://").unwrap_or(text);
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, default_port));
    }
    if let Ok(sa) = t.parse::<SocketAddr>() {
        return Some(sa);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_normalized() {
        assert_eq!(normalize_zone(".").unwrap(), vec!["."]);
        assert_eq!(normalize_zone("Example.ORG").unwrap(), vec!["example.org."]);
        assert_eq!(normalize_zone("magedu.com.").unwrap(), vec!["magedu.com."]);
        assert_eq!(
            normalize_zone("10.0.0.0/24").unwrap(),
            vec!["0.0.10.in-addr.arpa."]
        );
        assert_eq!(
            normalize_zone("10.0.0.0/8").unwrap(),
            vec!["10.in-addr.arpa."]
        );
        assert_eq!(
            normalize_zone("10.1.0.0/23").unwrap(),
            vec!["0.1.10.in-addr.arpa.", "1.1.10.in-addr.arpa."]
        );
        assert_eq!(
            normalize_zone("fd00::/16").unwrap(),
            vec!["0.0.d.f.ip6.arpa."]
        );
        assert_eq!(normalize_zone("fd00::/15").unwrap().len(), 2);
        assert!(normalize_zone("a..b").is_err());
        assert!(normalize_zone("10.0.0.0/33").is_err());
        assert!(normalize_zone("x/8").is_err());
    }

    #[test]
    fn zone_membership() {
        assert!(in_zone("a.example.org.", "example.org."));
        assert!(in_zone("example.org.", "example.org."));
        assert!(!in_zone("aexample.org.", "example.org."));
        assert!(in_zone("anything.", "."));
        let zones = [".", "example.org.", "b.example.org."];
        assert_eq!(
            longest_zone("x.b.example.org.", zones),
            Some("b.example.org.")
        );
        assert_eq!(longest_zone("x.example.org.", zones), Some("example.org."));
        assert_eq!(longest_zone("x.net.", zones), Some("."));
        assert_eq!(longest_zone("x.net.", ["example.org."]), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "5", "s", "5x", "-1s", "1s5"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_listen_addr(":8080").unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("localhost:9153").unwrap(),
            "127.0.0.1:9153".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("[::1]:53").unwrap(),
            "[::1]:53".parse().unwrap()
        );
        assert!(parse_listen_addr("8080").is_err());
        assert_eq!(
            parse_upstream("1.2.3.4", 53),
            Some("1.2.3.4:53".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("dns://1.2.3.4:5353", 53),
            Some("1.2.3.4:5353".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("[::1]:54", 53),
            Some("[::1]:54".parse().unwrap())
        );
        assert_eq!(parse_upstream("::1", 53), Some("[::1]:53".parse().unwrap()));
        assert_eq!(parse_upstream("example.org", 53), None);
    }
}
