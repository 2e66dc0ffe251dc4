//! RFC 1035 zone files of the cluster zone (`agentctl dns export-zone`, and what Knot DNS
//! serves in the benchmark).
//!
//! One file per served origin (`cluster.local.`, `in-addr.arpa.`, `ip6.arpa.`), absolute owner
//! names, SOA first. Pod names exist only in `pods verified` mode (insecure mode answers any
//! well-formed name, which no zone file can list).

use std::fmt::Write as _;

use hickory_proto::rr::{RData, RecordType};

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{Name, Record};

use super::entry::{Node, ServiceEntry, ServiceKind};
use super::names::{dashed_ip, lower_fqdn, name_in};
use super::records::{address_record, address_records};
use super::reverse::reverse_name;
use super::{ClusterZone, Lookup, PodMode, SCHEMA_VERSION};

/// The zone file of one origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneFile {
    /// The origin, lower case with a trailing dot (`cluster.local.`).
    pub origin: String,
    /// The file's text.
    pub text: String,
    /// Number of records in it.
    pub records: usize,
}

/// Exports every origin of `zone`.
pub fn export(zone: &ClusterZone) -> Vec<ZoneFile> {
    let records = zone.records();
    let mut files: Vec<ZoneFile> = zone
        .origins()
        .iter()
        .map(|o| ZoneFile {
            origin: o.name.clone(),
            text: format!(
                "; cluster zone exported by svcnet (serial {})\n$ORIGIN {}\n$TTL {}\n",
                zone.serial(),
                o.name,
                zone.options().ttl
            ),
            records: 0,
        })
        .collect();
    // SOA records first in each file.
    let mut ordered: Vec<&hickory_proto::rr::Record> = records
        .iter()
        .filter(|r| r.record_type() == RecordType::SOA)
        .collect();
    ordered.extend(
        records
            .iter()
            .filter(|r| r.record_type() != RecordType::SOA),
    );
    for r in ordered {
        let owner = lower_fqdn(&r.name);
        let Some(i) = zone.origin_of(&owner) else {
            continue;
        };
        let file = &mut files[i];
        let _ = writeln!(
            file.text,
            "{owner} {} IN {} {}",
            r.ttl,
            r.record_type(),
            rdata_text(&r.data)
        );
        file.records += 1;
    }
    files
}

/// The presentation form of `data`: TXT strings quoted and escaped, the rest as hickory
/// prints them.
fn rdata_text(data: &RData) -> String {
    match data {
        RData::TXT(txt) => {
            let mut out = String::new();
            for (i, s) in txt.txt_data.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push('"');
                for &b in s.iter() {
                    match b {
                        b'"' | b'\\' => {
                            out.push('\\');
                            out.push(char::from(b));
                        }
                        0x20..=0x7e => out.push(char::from(b)),
                        _ => {
                            let _ = write!(out, "\\{b:03}");
                        }
                    }
                }
                out.push('"');
            }
            out
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
/// Exports one origin (`cluster.local`, with or without trailing dot), if served.
pub(crate) fn export_origin(zone: &ClusterZone, origin: &str) -> Option<ZoneFile> {
    let want = format!("{}.", origin.trim_end_matches('.').to_ascii_lowercase());
    export(zone).into_iter().find(|f| f.origin == want)
}

impl ClusterZone {
    /// Every name with its records, for zone file export, in a stable order. Dynamic pod
    /// names are included only in `pods verified` mode.
    pub fn records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        let ttl = self.options.ttl;
        for (oi, o) in self.origins.iter().enumerate() {
            out.extend(o.soa.iter().cloned());
            out.extend(self.ns_answer(&o.apex, oi).answers);
        }
        if self.primary.is_none() {
            return out;
        }
        // Service and SRV names, sorted.
        let mut keys: Vec<(String, &Arc<ServiceEntry>)> = Vec::new();
        for (_, node) in self.names.iter() {
            if let Node::Service(svc) = node
                && svc.exists
            {
                keys.push((svc.relative.to_string(), svc));
                if !matches!(svc.kind, ServiceKind::External(_)) {
                    keys.extend(svc.srv_names().into_iter().map(|n| (n, svc)));
                }
            }
        }
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        for (oi, o) in self.origins.iter().enumerate() {
            if o.reverse.is_some() {
                continue;
            }
            let apex = &o.apex;
            let ver = name_in(apex, "dns-version");
            out.push(Record::from_rdata(
                ver,
                ttl,
                RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
            ));
            let nsh = name_in(apex, "ns.dns");
            out.extend(address_records(&nsh, ttl, &self.ns_addrs, RecordType::A));
            out.extend(address_records(&nsh, ttl, &self.ns_addrs, RecordType::AAAA));
            for (key, svc) in &keys {
                let lower = format!("{key}.{}", o.name);
                let owner = name_in(apex, key);
                let external = matches!(svc.kind, ServiceKind::External(_));
                let types: &[RecordType] = if external {
                    &[RecordType::CNAME]
                } else {
                    &[RecordType::A, RecordType::AAAA, RecordType::SRV]
                };
                for t in types {
                    if let Lookup::Answer(a) = self.lookup(&owner, &lower, *t)
                        && a.origin == oi
                    {
                        out.extend(a.answers);
                    }
                }
                if external || key.as_str() != &*svc.relative {
                    continue;
                }
                let mut done = HashSet::new();
                for ep in svc.unique() {
                    let label = svc.label_text(ep.endpoint, ep.ip);
                    if !done.insert((label.clone(), ep.ip)) {
                        continue;
                    }
                    let owner = name_in(apex, &format!("{label}.{key}"));
                    out.push(address_record(owner, ttl, ep.ip));
                }
            }
            if self.options.pods == PodMode::Verified {
                let mut pods: Vec<&(Arc<str>, IpAddr)> = self.pod_ips.keys().collect();
                pods.sort();
                for (ns, ip) in pods {
                    let owner = name_in(apex, &format!("{}.{}.pod", dashed_ip(*ip), ns));
                    out.push(address_record(owner, ttl, *ip));
                }
            }
        }
        let mut ips: Vec<IpAddr> = self
            .reverse_v4
            .iter()
            .map(|(p, e)| IpAddr::V4(Ipv4Addr::from((p << 8) | u32::from(e.low))))
            .chain(
                self.reverse_v6
                    .iter()
                    .map(|(p, e)| IpAddr::V6(Ipv6Addr::from((p << 8) | u128::from(e.low)))),
            )
            .collect();
        ips.dedup();
        for ip in ips {
            let owner_text = reverse_name(ip);
            let Some(oi) = self.origin_of(&owner_text) else {
                continue;
            };
            let Ok(owner) = Name::from_ascii(&owner_text) else {
                continue;
            };
            if let Lookup::Answer(a) = self.lookup(&owner, &owner_text, RecordType::PTR)
                && a.origin == oi
            {
                out.extend(a.answers);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::zone::ZoneOptions;
    use crate::dns::zone::fixtures::{FIXTURE, snapshot, zone};

    #[test]
    fn one_file_per_origin_soa_first_and_parseable_lines() {
        let zone = ClusterZone::build_with_serial(&snapshot(FIXTURE), &ZoneOptions::default(), 7);
        let files = export(&zone);
        let origins: Vec<&str> = files.iter().map(|f| f.origin.as_str()).collect();
        assert_eq!(origins, ["cluster.local.", "in-addr.arpa.", "ip6.arpa."]);
        let cluster = &files[0].text;
        let first_record = cluster
            .lines()
            .find(|l| !l.starts_with(['$', ';']))
            .unwrap();
        assert_eq!(
            first_record,
            "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 7 7200 1800 86400 5"
        );
        for needle in [
            "demoapp-svc.default.svc.cluster.local. 5 IN A 10.96.10.11\n",
            "dns-version.cluster.local. 5 IN TXT \"1.1.0\"\n",
            "cluster.local. 5 IN NS ns.dns.cluster.local.\n",
            "ns.dns.cluster.local. 5 IN A 10.96.0.10\n",
        ] {
            assert!(cluster.contains(needle), "missing {needle:?} in\n{cluster}");
        }
        assert!(files[1].text.contains(
            "11.10.96.10.in-addr.arpa. 5 IN PTR demoapp-svc.default.svc.cluster.local.\n"
        ));
        assert!(
            files[2]
                .text
                .contains(" IN PTR dual.demo.svc.cluster.local.\n")
        );
        // Every record line has owner, ttl, class, type, rdata.
        for f in &files {
            for l in f.text.lines().filter(|l| !l.starts_with(['$', ';'])) {
                assert!(l.split_whitespace().count() >= 5, "{l}");
            }
            assert_eq!(
                f.records,
                f.text
                    .lines()
                    .filter(|l| !l.starts_with(['$', ';']))
                    .count()
            );
        }
        assert_eq!(
            export_origin(&zone, "Cluster.Local").unwrap().origin,
            "cluster.local."
        );
    }

    #[test]
    fn export_lists_every_kind_of_record() {
        let z = zone();
        let text: Vec<String> = z.records().iter().map(|r| r.to_string()).collect();
        let has = |needle: &str| text.iter().any(|l| l.contains(needle));
        assert!(
            has("demoapp-svc.default.svc.cluster.local. 5 IN A 10.96.10.11"),
            "{text:#?}"
        );
        assert!(has(
            "_http._tcp.web.demo.svc.cluster.local. 5 IN SRV 0 50 8080"
        ));
        assert!(has(
            "mysql-external.default.svc.cluster.local. 5 IN CNAME mysql.example.com."
        ));
        assert!(has(
            "11.10.96.10.in-addr.arpa. 5 IN PTR demoapp-svc.default.svc.cluster.local."
        ));
        assert!(has("web-0.web.demo.svc.cluster.local. 5 IN A 10.244.1.20"));
        assert!(has("dns-version.cluster.local. 5 IN TXT"));
    }
}
