//! RFC 1035 zone files of the cluster zone (`agentctl dns export-zone`, and what Knot DNS
//! serves in the benchmark).
//!
//! One file per served origin (`cluster.local.`, `in-addr.arpa.`, `ip6.arpa.`), absolute owner
//! names, SOA first. Pod names exist only in `pods verified` mode (insecure mode answers any
//! well-formed name, which no zone file can list).

use std::fmt::Write as _;

use hickory_proto::rr::{RData, RecordType};

use super::zone::ClusterZone;

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
        let owner = super::zone::lower_fqdn(&r.name);
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

/// Exports one origin (`cluster.local`, with or without trailing dot), if served.
pub fn export_origin(zone: &ClusterZone, origin: &str) -> Option<ZoneFile> {
    let want = format!("{}.", origin.trim_end_matches('.').to_ascii_lowercase());
    export(zone).into_iter().find(|f| f.origin == want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::zone::ZoneOptions;
    use crate::dns::zone::tests::{FIXTURE, snapshot};

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
}
