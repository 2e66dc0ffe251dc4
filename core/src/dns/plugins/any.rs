//! `any`: answers ANY queries as RFC 8482 suggests, with one synthesised HINFO record
//! (`"ANY obsoleted" "See RFC 8482"`, TTL 8482), as CoreDNS's any plugin. Other queries pass on.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::HINFO;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};

use crate::dns::handler::{Next, Plugin, Reply, Request, Response, empty_records};

/// The any plugin.
#[derive(Debug, Default)]
pub struct Any;

impl Plugin for Any {
    fn name(&self) -> &'static str {
        "any"
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        if req.record_type() != RecordType::ANY {
            return next.run(req);
        }
        let mut rec = Record::from_rdata(
            req.name().clone(),
            8482,
            RData::HINFO(HINFO::new("ANY obsoleted".into(), "See RFC 8482".into())),
        );
        rec.dns_class = DNSClass::IN;
        Reply::Ready(Response::with_records(
            ResponseCode::NoError,
            vec![rec].into(),
            empty_records(),
            empty_records(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::handler::Chain;
    use hickory_proto::rr::Name;
    use std::sync::Arc;

    #[test]
    fn any_gets_hinfo_others_pass() {
        let chain = Chain::new(vec![Arc::new(Any)]);
        let q = Request::new(Name::from_ascii("example.org.").unwrap(), RecordType::ANY);
        let Reply::Ready(r) = chain.handle(&q) else {
            panic!("ready expected")
        };
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert_eq!(r.plugin, Some("any"));
        assert_eq!(r.answers[0].ttl, 8482);
        match &r.answers[0].data {
            RData::HINFO(h) => {
                assert_eq!(&*h.cpu, b"ANY obsoleted");
                assert_eq!(&*h.os, b"See RFC 8482");
            }
            other => panic!("HINFO expected, got {other:?}"),
        }
        let q = Request::new(Name::from_ascii("example.org.").unwrap(), RecordType::A);
        let Reply::Ready(r) = chain.handle(&q) else {
            panic!("ready expected")
        };
        // The end of the chain: REFUSED, written by no plugin.
        assert_eq!(r.rcode, ResponseCode::Refused);
        assert_eq!(r.plugin, Some(""));
    }
}
