//! Reverse (PTR) lookups: parsing `in-addr.arpa`/`ip6.arpa` names, PTR answers from the
//! reverse index, and empty non-terminals for address prefixes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::PTR;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::lookup::Answer;
use super::names::name_in;
use super::reverse_index::PtrEntry;
use super::{ClusterZone, ReverseFamily};

impl ClusterZone {
    /// The PTR targets of `ip` in answer order: the first service owning it as a cluster IP
    /// (which hides endpoint names), else every endpoint name.
    pub(super) fn ptr_targets(&self, ip: IpAddr) -> &[PtrEntry] {
        let all = match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.reverse_v4.get(a >> 8, a as u8)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.reverse_v6.get(a >> 8, a as u8)
            }
        };
        match all.first() {
            Some(first) if first.is_cluster_ip() => &all[..1],
            _ => all,
        }
    }

    /// The name a PTR entry of `ip` points to.
    pub(super) fn ptr_target_name(&self, entry: &PtrEntry, ip: IpAddr, apex: &Name) -> Name {
        let svc = &entry.service;
        if entry.is_cluster_ip() {
            return name_in(apex, &svc.relative);
        }
        let ep = &svc.slices[usize::from(entry.slice)].endpoints[entry.endpoint as usize];
        name_in(
            apex,
            &format!("{}.{}", svc.label_text(ep, ip), svc.relative),
        )
    }

    pub(super) fn lookup_reverse(
        &self,
        qname: &Name,
        lower_name: &str,
        qtype: RecordType,
        origin: usize,
        family: ReverseFamily,
    ) -> Answer {
        if lower_name == self.origins[origin].name {
            return match qtype {
                RecordType::SOA => {
                    Answer::records(origin, self.origins[origin].soa.to_vec(), Vec::new())
                }
                RecordType::NS => self.ns_answer(qname, origin),
                _ => Answer::nodata(origin),
            };
        }
        match parse_reverse(lower_name, family) {
            ReverseName::Full(ip) => {
                let targets = self.ptr_targets(ip);
                if targets.is_empty() {
                    return Answer::nxdomain(origin);
                }
                if qtype != RecordType::PTR {
                    return Answer::nodata(origin);
                }
                let Some(primary) = self.primary else {
                    return Answer::nxdomain(origin);
                };
                let apex = &self.origins[primary].apex;
                let ttl = self.options.ttl;
                let answers = targets
                    .iter()
                    .map(|t| {
                        Record::from_rdata(
                            qname.clone(),
                            ttl,
                            RData::PTR(PTR(self.ptr_target_name(t, ip, apex))),
                        )
                    })
                    .collect();
                Answer::records(origin, answers, Vec::new())
            }
            ReverseName::Partial { prefix, bits } => {
                let exists = match family {
                    ReverseFamily::V4 => {
                        let (lo, hi) = prefix_range_u32(prefix as u32, bits);
                        self.reverse_v4
                            .any_in((lo >> 8, lo as u8), (hi >> 8, hi as u8))
                    }
                    ReverseFamily::V6 => {
                        let (lo, hi) = prefix_range_u128(prefix, bits);
                        self.reverse_v6
                            .any_in((lo >> 8, lo as u8), (hi >> 8, hi as u8))
                    }
                };
                if exists {
                    Answer::nodata(origin)
                } else {
                    Answer::nxdomain(origin)
                }
            }
            ReverseName::Invalid => Answer::nxdomain(origin),
        }
    }
}

pub(super) enum ReverseName {
    Full(IpAddr),
    /// A proper prefix of an address: `bits` leading bits.
    Partial {
        prefix: u128,
        bits: u32,
    },
    Invalid,
}

pub(super) fn parse_reverse(lower_name: &str, family: ReverseFamily) -> ReverseName {
    let (suffix, labels_max) = match family {
        ReverseFamily::V4 => (".in-addr.arpa.", 4),
        ReverseFamily::V6 => (".ip6.arpa.", 32),
    };
    let Some(body) = lower_name.strip_suffix(suffix) else {
        return ReverseName::Invalid;
    };
    let labels: Vec<&str> = body.split('.').collect();
    if labels.len() > labels_max {
        return ReverseName::Invalid;
    }
    match family {
        ReverseFamily::V4 => {
            let mut value: u32 = 0;
            for (i, label) in labels.iter().rev().enumerate() {
                let Ok(octet) = label.parse::<u8>() else {
                    return ReverseName::Invalid;
                };
                if label.len() > 1 && label.starts_with('0') {
                    return ReverseName::Invalid;
                }
                value |= u32::from(octet) << (24 - 8 * i);
            }
            if labels.len() == 4 {
                ReverseName::Full(IpAddr::V4(Ipv4Addr::from(value)))
            } else {
                ReverseName::Partial {
                    prefix: u128::from(value),
                    bits: 8 * labels.len() as u32,
                }
            }
        }
        ReverseFamily::V6 => {
            let mut value: u128 = 0;
            for (i, label) in labels.iter().rev().enumerate() {
                let Some(nibble) = (if label.len() == 1 {
                    label.chars().next().and_then(|c| c.to_digit(16))
                } else {
                    None
                }) else {
                    return ReverseName::Invalid;
                };
                value |= u128::from(nibble) << (124 - 4 * i);
            }
            if labels.len() == 32 {
                ReverseName::Full(IpAddr::V6(Ipv6Addr::from(value)))
            } else {
                ReverseName::Partial {
                    prefix: value,
                    bits: 4 * labels.len() as u32,
                }
            }
        }
    }
}

pub(super) fn prefix_range_u32(prefix: u32, bits: u32) -> (u32, u32) {
    if bits == 0 {
        return (0, u32::MAX);
    }
    let mask = u32::MAX << (32 - bits);
    (prefix & mask, (prefix & mask) | !mask)
}

pub(super) fn prefix_range_u128(prefix: u128, bits: u32) -> (u128, u128) {
    if bits == 0 {
        return (0, u128::MAX);
    }
    let mask = u128::MAX << (128 - bits);
    (prefix & mask, (prefix & mask) | !mask)
}

/// The reverse-lookup name of `ip` (lower case, trailing dot).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(73);
            for byte in v6.octets().iter().rev() {
                s.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
                s.push('.');
                s.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
                s.push('.');
            }
            s.push_str("ip6.arpa.");
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::zone::fixtures::*;
    use hickory_proto::rr::RecordType;

    #[test]
    fn ptr_records_for_cluster_ips_and_endpoints() {
        let z = zone();
        assert_eq!(
            ask(&z, "11.10.96.10.in-addr.arpa.", RecordType::PTR).1,
            vec!["demoapp-svc.default.svc.cluster.local."]
        );
        assert_eq!(
            ask(&z, "20.1.244.10.in-addr.arpa.", RecordType::PTR).1,
            vec!["web-0.web.demo.svc.cluster.local."]
        );
        assert_eq!(
            ask(&z, "10.1.244.10.in-addr.arpa.", RecordType::PTR).1,
            vec!["10-244-1-10.demoapp-svc.default.svc.cluster.local."]
        );
        let v6 = reverse_name("fd00:10:96::1e".parse().unwrap());
        assert_eq!(
            ask(&z, &v6, RecordType::PTR).1,
            vec!["dual.demo.svc.cluster.local."]
        );
        assert_eq!(ask(&z, "99.99.99.99.in-addr.arpa.", RecordType::PTR).0, NX);
        // Prefixes of existing addresses are empty non-terminals; others are absent.
        let (rc, ans, _) = ask(&z, "96.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!((rc, ans.len()), (OK, 0));
        assert_eq!(ask(&z, "97.10.in-addr.arpa.", RecordType::PTR).0, NX);
        assert_eq!(
            ask(
                &z,
                "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.ip6.arpa.",
                RecordType::PTR
            )
            .0,
            NX
        );
        // Other types at an address name: NODATA.
        assert_eq!(ask(&z, "11.10.96.10.in-addr.arpa.", RecordType::A).0, OK);
    }
}
