//! `whoami`: answers every query with the client's address and port (CoreDNS's whoami plugin).
//!
//! The answer section stays empty; the additional section holds an A (or AAAA) record with
//! the query name and the client's address, and an SRV record `_udp.NAME` / `_tcp.NAME` with
//! the client's source port and target `.`, both with TTL 0. AA is set.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record};

use crate::dns::handler::{Next, Plugin, Reply, Request, Response, empty_records};

/// The whoami plugin.
#[derive(Debug, Default)]
pub(crate) struct Whoami;

/// The whoami answer for `req`.
pub(crate) fn answer(req: &Request) -> Response {
    let name = req.name().clone();
    let ip = match req.client.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let mut addr = match ip {
        IpAddr::V4(v4) => Record::from_rdata(name.clone(), 0, RData::A(A(v4))),
        IpAddr::V6(v6) => Record::from_rdata(name.clone(), 0, RData::AAAA(AAAA(v6))),
    };
    addr.dns_class = req.class();
    let proto = Name::from_ascii(format!("_{}", req.transport.as_str())).expect("valid label");
    let srv_name = proto.clone().append_domain(&name).unwrap_or(proto);
    let mut srv = Record::from_rdata(
        srv_name,
        0,
        RData::SRV(SRV::new(0, 0, req.client.port(), Name::root())),
    );
    srv.dns_class = req.class();
    Response::with_records(
        ResponseCode::NoError,
        empty_records(),
        empty_records(),
        vec![addr, srv].into(),
    )
    .authoritative()
}

impl Plugin for Whoami {
    fn name(&self) -> &'static str {
        "whoami"
    }

    fn handle(&self, req: &Request, _next: Next) -> Reply {
        Reply::Ready(answer(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::handler::{Chain, Transport};
    use hickory_proto::op::Query;
    use hickory_proto::rr::RecordType;
    use std::sync::Arc;

    fn ask(client: &str, transport: Transport, name: &str) -> Response {
        let chain = Chain::new(vec![Arc::new(Whoami)]);
        let req = Request::from_query(
            1,
            Query::query(Name::from_ascii(name).unwrap(), RecordType::A),
            client.parse().unwrap(),
            transport,
        );
        match chain.handle(&req) {
            Reply::Ready(r) => r,
            Reply::Pending(_) => panic!("whoami answers at once"),
        }
    }

    #[test]
    fn answers_address_and_port() {
        // CoreDNS's whoami tests: an IPv4 and an IPv6 client, and the root name.
        let r = ask("10.240.0.1:40212", Transport::Udp, "example.org.");
        assert!(r.authoritative);
        assert_eq!(r.plugin, Some("whoami"));
        assert!(r.answers.is_empty());
        assert_eq!(
            r.additionals[0].to_string(),
            "example.org. 0 IN A 10.240.0.1"
        );
        assert_eq!(
            r.additionals[1].to_string(),
            "_udp.example.org. 0 IN SRV 0 0 40212 ."
        );
        let r = ask("[2001:db8::1]:53", Transport::Tcp, ".");
        assert_eq!(r.additionals[0].to_string(), ". 0 IN AAAA 2001:db8::1");
        assert_eq!(r.additionals[1].to_string(), "_tcp. 0 IN SRV 0 0 53 .");
    }
}
