//! `minimal`: keeps only the answer section of positive answers (CoreDNS's minimal plugin).
//! NOERROR answers with records lose their authority and additional sections; negative
//! answers (NXDOMAIN, NODATA), delegations and errors pass unchanged. The answer keeps the
//! name of the plugin that wrote it.

use hickory_proto::op::ResponseCode;

use crate::dns::handler::{Next, Plugin, Reply, Request, Response, empty_records};

/// The minimal plugin.
#[derive(Debug, Default)]
pub(crate) struct Minimal;

/// `resp` reduced to its answer section when it is a positive answer.
pub(crate) fn minimize(mut resp: Response) -> Response {
    if resp.rcode == ResponseCode::NoError
        && !resp.answers.is_empty()
        && (!resp.authority.is_empty() || !resp.additionals.is_empty())
    {
        resp.authority = empty_records();
        resp.additionals = empty_records();
    }
    resp
}

impl Plugin for Minimal {
    fn name(&self) -> &'static str {
        "minimal"
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        next.run(req).map(minimize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, NS, SOA};
    use hickory_proto::rr::{Name, RData, Record};

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn strips_only_positive_answers() {
        let a = Record::from_rdata(n("www.example.org."), 5, RData::A(A::new(127, 0, 0, 1)));
        let ns = Record::from_rdata(n("example.org."), 5, RData::NS(NS(n("ns.example.org."))));
        let glue = Record::from_rdata(n("ns.example.org."), 5, RData::A(A::new(127, 0, 0, 2)));
        let soa = Record::from_rdata(
            n("example.org."),
            5,
            RData::SOA(SOA::new(n("ns."), n("h."), 1, 2, 3, 4, 5)),
        );
        // Success: answer only.
        let r = minimize(Response::with_records(
            ResponseCode::NoError,
            vec![a.clone()].into(),
            vec![ns.clone()].into(),
            vec![glue.clone()].into(),
        ));
        assert_eq!(
            (r.answers.len(), r.authority.len(), r.additionals.len()),
            (1, 0, 0)
        );
        // NXDOMAIN and NODATA keep their SOA.
        for rcode in [ResponseCode::NXDomain, ResponseCode::NoError] {
            let r = minimize(Response::with_records(
                rcode,
                empty_records(),
                vec![soa.clone()].into(),
                empty_records(),
            ));
            assert_eq!(r.authority.len(), 1);
        }
        // Delegation keeps NS and glue.
        let r = minimize(Response::with_records(
            ResponseCode::NoError,
            empty_records(),
            vec![ns].into(),
            vec![glue].into(),
        ));
        assert_eq!((r.authority.len(), r.additionals.len()), (1, 1));
    }
}
