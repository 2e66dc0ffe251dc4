//! The served origins (zone apexes with their SOA) and which origin a name falls in.

use std::collections::HashSet;
use std::sync::Arc;

use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record};

use super::names::name_in;
use super::{ClusterZone, ZoneOptions};

/// A served zone apex.
#[derive(Debug, Clone)]
pub struct Origin {
    /// Lower-case name with trailing dot (`cluster.local.`).
    pub name: String,
    /// The apex as a [`Name`].
    pub apex: Name,
    /// `in-addr.arpa`/`ip6.arpa` zones hold PTR records; others hold the cluster names.
    pub reverse: Option<ReverseFamily>,
    /// The apex SOA (authority section of negative answers).
    pub soa: Arc<[Record]>,
    /// `ns.dns.<origin>`.
    pub ns_name: Name,
}

/// Which reverse tree a reverse origin is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReverseFamily {
    /// `in-addr.arpa`.
    V4,
    /// `ip6.arpa`.
    V6,
}

/// The origins of `options` with SOA serial `serial`, and the index of the primary forward one.
pub(super) fn build_origins(options: &ZoneOptions, serial: u32) -> (Vec<Origin>, Option<usize>) {
    let ttl = options.ttl;
    let mut seen = HashSet::new();
    let mut origins = Vec::new();
    let mut primary = None;
    for zone in &options.zones {
        let lower = format!("{}.", zone.trim_end_matches('.').to_ascii_lowercase());
        if lower == "." || !seen.insert(lower.clone()) {
            continue;
        }
        let Ok(apex) = Name::from_ascii(&lower) else {
            continue;
        };
        let reverse = if lower.ends_with("in-addr.arpa.") {
            Some(ReverseFamily::V4)
        } else if lower.ends_with("ip6.arpa.") {
            Some(ReverseFamily::V6)
        } else {
            None
        };
        let ns_name = name_in(&apex, "ns.dns");
        let soa = Record::from_rdata(
            apex.clone(),
            ttl.min(300),
            RData::SOA(SOA::new(
                ns_name.clone(),
                name_in(&apex, "hostmaster"),
                serial,
                7200,
                1800,
                86400,
                ttl,
            )),
        );
        if reverse.is_none() && primary.is_none() {
            primary = Some(origins.len());
        }
        origins.push(Origin {
            name: lower,
            apex,
            reverse,
            soa: Arc::from(vec![soa]),
            ns_name,
        });
    }
    (origins, primary)
}

impl ClusterZone {
    /// The origin (index) `lower_name` (lower case, trailing dot) falls in: the longest match.
    pub(crate) fn origin_of(&self, lower_name: &str) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, o) in self.origins.iter().enumerate() {
            let inside = lower_name == o.name
                || (lower_name.len() > o.name.len()
                    && lower_name.ends_with(o.name.as_str())
                    && lower_name.as_bytes()[lower_name.len() - o.name.len() - 1] == b'.');
            if inside && best.is_none_or(|b| self.origins[b].name.len() < o.name.len()) {
                best = Some(i);
            }
        }
        best
    }

    pub(super) fn relative<'a>(&self, lower_name: &'a str, origin: usize) -> &'a str {
        let o = &self.origins[origin].name;
        if lower_name.len() == o.len() {
            ""
        } else {
            &lower_name[..lower_name.len() - o.len() - 1]
        }
    }
}
