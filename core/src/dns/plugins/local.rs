//! `local`: answers for localhost names without asking anyone (CoreDNS's local plugin).
//!
//! `localhost.` has A 127.0.0.1, AAAA ::1, NS and SOA; `1.0.0.127.in-addr.arpa.` has PTR
//! `localhost.`; other names under `localhost.`, `0.in-addr.arpa.`, `127.in-addr.arpa.` and
//! `255.in-addr.arpa.` are NXDOMAIN (NODATA for other types of existing names), with the zone's
//! SOA. Any name whose first label is `localhost` (`localhost.example.net.`) answers A
//! 127.0.0.1 / AAAA ::1, NODATA otherwise (counted in `coredns_local_localhost_requests_total`).
//! TTL 604800. Other names pass on.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::metrics::PluginMetrics;
use crate::dns::corefile::names::longest_zone;
use crate::dns::handler::{Next, Plugin, Records, Reply, Request, Response, empty_records};

const TTL: u32 = 604800;
const ZONES: [&str; 4] = [
    "localhost.",
    "0.in-addr.arpa.",
    "127.in-addr.arpa.",
    "255.in-addr.arpa.",
];

/// The local plugin.
pub struct Local {
    metrics: Option<PluginMetrics>,
}

impl Local {
    /// A local plugin counting `localhost.<domain>` queries in `metrics`.
    pub fn new(metrics: Option<PluginMetrics>) -> Self {
        Self { metrics }
    }
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("valid name")
}

fn soa(origin: &Name) -> Records {
    let localhost = name("localhost.");
    vec![Record::from_rdata(
        origin.clone(),
        TTL,
        RData::SOA(SOA::new(
            localhost.clone(),
            name("root.localhost."),
            1,
            0,
            0,
            0,
            TTL,
        )),
    )]
    .into()
}

fn one(rec: Record) -> Records {
    vec![rec].into()
}

/// The answer of the local plugin, or `None` when the name is not a local one.
pub(crate) fn answer(req: &Request) -> Option<Response> {
    let lower = req.lower_name();
    let qname = req.name().clone();
    let qtype = req.record_type();
    let mut resp = Response::new(ResponseCode::NoError);
    if lower.len() > "localhost.".len() && lower.starts_with("localhost.") {
        match qtype {
            RecordType::A => {
                resp.answers = one(Record::from_rdata(
                    qname,
                    TTL,
                    RData::A(A(Ipv4Addr::LOCALHOST)),
                ));
            }
            RecordType::AAAA => {
                resp.answers = one(Record::from_rdata(
                    qname,
                    TTL,
                    RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)),
                ));
            }
            _ => resp.authority = soa(&qname),
        }
        return Some(resp);
    }
    let zone = longest_zone(lower, ZONES)?;
    // The zone in the case the client wrote it.
    let zone_name = qname.trim_to(zone.trim_end_matches('.').split('.').count());
    match lower {
        "localhost." | "0.in-addr.arpa." | "127.in-addr.arpa." | "255.in-addr.arpa." => match qtype
        {
            RecordType::A if lower == "localhost." => {
                resp.answers = one(Record::from_rdata(
                    qname,
                    TTL,
                    RData::A(A(Ipv4Addr::LOCALHOST)),
                ));
            }
            RecordType::AAAA if lower == "localhost." => {
                resp.answers = one(Record::from_rdata(
                    qname,
                    TTL,
                    RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)),
                ));
            }
            RecordType::SOA => resp.answers = soa(&qname),
            RecordType::NS => {
                resp.answers = one(Record::from_rdata(
                    qname,
                    TTL,
                    RData::NS(NS(name("localhost."))),
                ));
            }
            _ => resp.authority = soa(&qname),
        },
        "1.0.0.127.in-addr.arpa." => match qtype {
            RecordType::PTR => {
                resp.answers = one(Record::from_rdata(
                    qname,
                    TTL,
                    RData::PTR(PTR(name("localhost."))),
                ));
            }
            _ => resp.authority = soa(&zone_name),
        },
        _ => {}
    }
    if resp.answers.is_empty() && resp.authority.is_empty() {
        resp.authority = soa(&zone_name);
        resp.rcode = ResponseCode::NXDomain;
    }
    resp.additionals = empty_records();
    Some(resp)
}

impl Plugin for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        let lower = req.lower_name();
        // A cheap pre-check keeps other names off the zone matching.
        if !lower.starts_with("localhost.")
            && !lower.ends_with(".localhost.")
            && !lower.ends_with(".arpa.")
        {
            return next.run(req);
        }
        match answer(req) {
            Some(resp) => {
                if lower.len() > "localhost.".len()
                    && lower.starts_with("localhost.")
                    && let Some(m) = &self.metrics
                {
                    m.local_localhost_requests.inc();
                }
                Reply::Ready(resp)
            }
            None => next.run(req),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CoreDNS's plugin/local test table: (name, type, rcode, answer owner, authority owner).
    #[test]
    fn coredns_table() {
        use RecordType::*;
        let nx = ResponseCode::NXDomain;
        let ok = ResponseCode::NoError;
        type Case<'a> = (
            &'a str,
            RecordType,
            ResponseCode,
            Option<&'a str>,
            Option<&'a str>,
        );
        let cases: &[Case<'_>] = &[
            ("localhost.", A, ok, Some("localhost."), None),
            ("localHOst.", A, ok, Some("localHOst."), None),
            ("localhost.", AAAA, ok, Some("localhost."), None),
            ("localhost.", NS, ok, Some("localhost."), None),
            ("localhost.", SOA, ok, Some("localhost."), None),
            ("127.in-addr.arpa.", A, ok, None, Some("127.in-addr.arpa.")),
            ("localhost.", MX, ok, None, Some("localhost.")),
            ("a.localhost.", A, nx, None, Some("localhost.")),
            (
                "1.0.0.127.in-addr.arpa.",
                PTR,
                ok,
                Some("1.0.0.127.in-addr.arpa."),
                None,
            ),
            (
                "1.0.0.127.in-addr.arpa.",
                MX,
                ok,
                None,
                Some("127.in-addr.arpa."),
            ),
            (
                "2.0.0.127.in-addr.arpa.",
                PTR,
                nx,
                None,
                Some("127.in-addr.arpa."),
            ),
            (
                "localhost.example.net.",
                A,
                ok,
                Some("localhost.example.net."),
                None,
            ),
            (
                "localhost.example.net.",
                AAAA,
                ok,
                Some("localhost.example.net."),
                None,
            ),
            (
                "localhost.example.net.",
                SOA,
                ok,
                None,
                Some("localhost.example.net."),
            ),
        ];
        for (qname, qtype, rcode, answer_owner, ns_owner) in cases {
            let req = Request::new(Name::from_ascii(qname).unwrap(), *qtype);
            let r = answer(&req).unwrap_or_else(|| panic!("{qname} not answered"));
            assert_eq!(r.rcode, *rcode, "{qname} {qtype}");
            assert_eq!(
                r.answers.first().map(|a| a.name.to_ascii()),
                answer_owner.map(str::to_string),
                "{qname} {qtype} answer"
            );
            assert_eq!(
                r.authority.first().map(|a| a.name.to_ascii()),
                ns_owner.map(str::to_string),
                "{qname} {qtype} authority"
            );
        }
        let a = answer(&Request::new(name("localhost."), A)).unwrap();
        assert_eq!(a.answers[0].to_string(), "localhost. 604800 IN A 127.0.0.1");
        assert!(answer(&Request::new(name("example.org."), A)).is_none());
        assert!(answer(&Request::new(name("1.0.0.10.in-addr.arpa."), PTR)).is_none());
        // Through the plugin: names under localhost. are answered, others pass on.
        let chain = crate::dns::handler::Chain::new(vec![std::sync::Arc::new(Local::new(None))]);
        for (q, rcode) in [
            ("a.localhost.", ResponseCode::NXDomain),
            ("localhost.", ResponseCode::NoError),
            ("2.0.0.127.in-addr.arpa.", ResponseCode::NXDomain),
            ("example.org.", ResponseCode::Refused),
        ] {
            match chain.handle(&Request::new(name(q), A)) {
                Reply::Ready(r) => assert_eq!(r.rcode, rcode, "{q}"),
                Reply::Pending(_) => panic!("local answers at once"),
            }
        }
    }
}
