//! SRV names (`_<port>._<proto>.<svc>.<ns>.svc`, their `_<proto>` parents) and SRV answers
//! with the targets' addresses in the additional section.

use std::net::IpAddr;

use hickory_proto::rr::rdata::SRV;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::model::Protocol;

use super::entry::{ServiceEntry, ServiceKind};
use super::lookup::Answer;
use super::names::name_in;
use super::records::address_record;
use super::{ClusterZone, FastMap, FastSet};

impl ClusterZone {
    /// SRV names `_<port>._<proto>.<svc>.<ns>.svc` and their parents `_<proto>.<svc>...`.
    pub(super) fn lookup_srv(
        &self,
        qname: &Name,
        rel: &str,
        qtype: RecordType,
        origin: usize,
        apex: &Name,
    ) -> Option<Answer> {
        let (first, tail) = rel.strip_prefix('_')?.split_once('.')?;
        if let Some(after) = tail.strip_prefix('_') {
            let (proto, rest) = after.split_once('.')?;
            let svc = self.existing_service(rest)?;
            let protocol = svc.srv_port(first, proto)?;
            return Some(match qtype {
                RecordType::SRV => self
                    .srv_answer(qname, svc, Some((first, protocol)), apex)
                    .with_origin(origin),
                _ => Answer::nodata(origin),
            });
        }
        let svc = self.existing_service(tail)?;
        svc.has_srv_protocol(first).then(|| Answer::nodata(origin))
    }

    pub(super) fn srv_answer(
        &self,
        qname: &Name,
        svc: &ServiceEntry,
        port_filter: Option<(&str, Protocol)>,
        apex: &Name,
    ) -> Answer {
        let ttl = self.options.ttl;
        let matches = |name: &str, protocol: Protocol| match port_filter {
            Some((want, proto)) => protocol == proto && name.eq_ignore_ascii_case(want),
            None => true,
        };
        // (target, port, address) items, as CoreDNS's backend produces them; targets are
        // indexes into `targets` (one per distinct name) so deduplication compares integers.
        let mut targets: Vec<Name> = Vec::new();
        let mut items: Vec<(u32, u16, IpAddr)> = Vec::new();
        match &svc.kind {
            ServiceKind::ClusterIp => {
                let mut ports = svc
                    .service
                    .ports
                    .iter()
                    .filter(|p| matches(&p.name, p.protocol))
                    .peekable();
                if ports.peek().is_some() {
                    targets.push(name_in(apex, &svc.relative));
                }
                for p in ports {
                    for ip in svc.cluster_ips() {
                        items.push((0, p.port, *ip));
                    }
                }
            }
            ServiceKind::Headless => {
                let mut by_label: FastMap<String, u32> = FastMap::default();
                for ep in svc.unique() {
                    let ports = &svc.slices[usize::from(ep.slice)].ports;
                    let mut ports = ports
                        .iter()
                        .filter(|p| matches(&p.name, p.protocol))
                        .filter_map(|p| p.port)
                        .peekable();
                    if ports.peek().is_none() {
                        continue;
                    }
                    let label = svc.label_text(ep.endpoint, ep.ip);
                    let target = *by_label.entry(label).or_insert_with_key(|label| {
                        targets.push(name_in(apex, &format!("{label}.{}", svc.relative)));
                        (targets.len() - 1) as u32
                    });
                    for port in ports {
                        items.push((target, port, ep.ip));
                    }
                }
            }
            ServiceKind::External(_) => {}
        }
        if items.is_empty() {
            return Answer::nodata(0);
        }
        let weight = (100 / items.len()).max(1) as u16;
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        let mut seen_srv: FastSet<(u32, u16)> = FastSet::default();
        let mut seen_addr: FastSet<(u32, IpAddr)> = FastSet::default();
        for (target, port, ip) in items {
            let name = &targets[target as usize];
            if seen_srv.insert((target, port)) {
                answers.push(Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::SRV(SRV::new(0, weight, port, name.clone())),
                ));
            }
            if seen_addr.insert((target, ip)) {
                additionals.push(address_record(name.clone(), ttl, ip));
            }
        }
        Answer::records(0, answers, additionals)
    }
}

#[cfg(test)]
mod tests {
    use crate::dns::zone::fixtures::*;
    use hickory_proto::rr::RecordType;

    #[test]
    fn srv_for_named_ports_with_additional_addresses() {
        let z = zone();
        let (rc, ans, add) = ask(
            &z,
            "_http._tcp.demoapp-svc.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(rc, OK);
        assert_eq!(ans, vec!["0 100 80 demoapp-svc.default.svc.cluster.local."]);
        assert_eq!(
            add,
            vec!["demoapp-svc.default.svc.cluster.local. 10.96.10.11"]
        );
        // Case-insensitive port and protocol; wrong protocol is absent.
        assert_eq!(
            ask(
                &z,
                "_HTTP._TCP.demoapp-svc.default.svc.cluster.local.",
                RecordType::SRV
            )
            .1
            .len(),
            1
        );
        assert_eq!(
            ask(
                &z,
                "_http._udp.demoapp-svc.default.svc.cluster.local.",
                RecordType::SRV
            )
            .0,
            NX
        );
        // SRV at the service name lists every port, unnamed ones included (CoreDNS).
        assert_eq!(
            ask(&z, "lonely.default.svc.cluster.local.", RecordType::SRV).1,
            vec!["0 100 8080 lonely.default.svc.cluster.local."]
        );
        // Dual-stack: one SRV (deduplicated), weight split over both addresses as CoreDNS does.
        let (_, ans, add) = ask(
            &z,
            "_dns._udp.dual.demo.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(ans, vec!["0 50 53 dual.demo.svc.cluster.local."]);
        assert_eq!(add.len(), 2);
        // An SRV name is NODATA for A.
        let (rc, ans, _) = ask(
            &z,
            "_http._tcp.demoapp-svc.default.svc.cluster.local.",
            RecordType::A,
        );
        assert_eq!((rc, ans.len()), (OK, 0));
    }
}
