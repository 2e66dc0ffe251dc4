//! `k8s_external`: the cluster's services under an external zone, answered from the same
//! [`ClusterZone`] as the cluster names (pure; the plugin is `dns::plugins::k8s_external`).
//!
//! As CoreDNS's *k8s_external* with the *kubernetes* plugin behind it: `<svc>.<ns>.<zone>`
//! answers A/AAAA with the service's external addresses (`spec.externalIPs`, then the
//! load-balancer ingress IPs; an ingress hostname is a CNAME), `_<port>._<proto>.<svc>.<ns>.<zone>`
//! and `<svc>.<ns>.<zone>` answer SRV with those addresses in the additional section; with
//! `headless`, a headless service without external addresses answers with its ready endpoints
//! and `<endpoint>.<svc>.<ns>.<zone>` names them. PTR in a reverse zone of the plugin names the
//! services holding an external address. The apex answers SOA and NS (`ns1.<apex>.<zone>`,
//! addresses of the DNS service's external IPs, else its cluster IPs); `<apex>.<zone>` is an
//! empty non-terminal. Other types at existing names are NODATA; the `namespaces` and `labels`
//! options of the cluster zone apply.

use super::entry::{Node, ServiceKind, external_addresses};
use super::names::name_in;
use super::reverse::{ReverseName, parse_reverse};
use super::{ClusterZone, ReverseFamily};
use crate::model::ObjectKey;
use std::collections::HashSet;
use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Settings of one `k8s_external` plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalOptions {
    /// The label under each zone that holds the name server records (`apex`, default `dns`).
    pub apex: String,
    /// TTL of every record (default 5).
    pub ttl: u32,
    /// Headless services answer with their endpoints (`headless`).
    pub headless: bool,
}

impl Default for ExternalOptions {
    fn default() -> Self {
        Self {
            apex: "dns".into(),
            ttl: 5,
            headless: false,
        }
    }
}

/// The reply to a `k8s_external` query (authoritative).
#[derive(Debug, Clone)]
pub struct ExternalAnswer {
    /// NOERROR (records or NODATA) or NXDOMAIN.
    pub rcode: ResponseCode,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section: the zone's SOA when there is no answer.
    pub authority: Vec<Record>,
    /// Additional section: addresses of SRV and NS targets.
    pub additionals: Vec<Record>,
}

/// Where an answer item points.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Addr {
    Ip(IpAddr),
    /// A load-balancer ingress hostname (fully qualified).
    Host(Name),
}

/// One (target, port, address) of the answer, as CoreDNS's backend lists them.
struct Item {
    /// The SRV target relative to the zone (`svc.ns`, `ep.svc.ns`), for IP addresses.
    target: String,
    port: u16,
    addr: Addr,
}

/// Whether a port named `name` with `protocol` matches the query's `_port._proto` labels
/// (absent labels match every port).
fn port_matches(
    want_port: Option<&str>,
    want_proto: Option<&str>,
    name: &str,
    proto: &str,
) -> bool {
    want_port.is_none_or(|p| p.eq_ignore_ascii_case(name))
        && want_proto.is_none_or(|p| p.eq_ignore_ascii_case(proto))
}

impl ClusterZone {
    /// Answers `qname` (`lower_name`: lower case with the trailing dot) of type `qtype` inside
    /// the external zone `zone` (lower case with the trailing dot). `ptr_zone` is the zone PTR
    /// targets are named in (the plugin's first forward zone).
    pub fn lookup_external(
        &self,
        qname: &Name,
        lower_name: &str,
        qtype: RecordType,
        zone: &str,
        ptr_zone: &str,
        opts: &ExternalOptions,
    ) -> ExternalAnswer {
        let zone_name = Name::from_ascii(zone).unwrap_or_else(|_| Name::root());
        let apex = opts.apex.to_ascii_lowercase();
        let ttl = opts.ttl;
        let ns_host = name_in(&zone_name, &format!("ns1.{apex}"));
        let soa = || {
            vec![Record::from_rdata(
                zone_name.clone(),
                ttl,
                RData::SOA(SOA::new(
                    ns_host.clone(),
                    name_in(&zone_name, &format!("hostmaster.{apex}")),
                    self.serial,
                    7200,
                    1800,
                    86400,
                    ttl,
                )),
            )]
        };
        let reply = |rcode: ResponseCode, answers: Vec<Record>, additionals: Vec<Record>| {
            let authority = if answers.is_empty() {
                soa()
            } else {
                Vec::new()
            };
            ExternalAnswer {
                rcode,
                answers,
                authority,
                additionals,
            }
        };
        let nxdomain = || reply(ResponseCode::NXDomain, Vec::new(), Vec::new());
        let nodata = || reply(ResponseCode::NoError, Vec::new(), Vec::new());
        let addresses = |owner: &Name, wanted: Option<RecordType>| -> Vec<Record> {
            self.ns_external
                .iter()
                .filter(|ip| match wanted {
                    Some(RecordType::A) => ip.is_ipv4(),
                    Some(RecordType::AAAA) => ip.is_ipv6(),
                    Some(_) => false,
                    None => true,
                })
                .map(|ip| address(owner.clone(), ttl, *ip))
                .collect()
        };

        // The apex: SOA and NS.
        if lower_name == zone {
            return match qtype {
                RecordType::SOA => reply(ResponseCode::NoError, soa(), Vec::new()),
                RecordType::NS => reply(
                    ResponseCode::NoError,
                    vec![Record::from_rdata(
                        qname.clone(),
                        ttl,
                        RData::NS(NS(ns_host.clone())),
                    )],
                    addresses(&ns_host, None),
                ),
                _ => nodata(),
            };
        }
        let rel = if zone == "." {
            lower_name.trim_end_matches('.')
        } else {
            &lower_name[..lower_name.len() - zone.len() - 1]
        };
        // `<apex>` is an empty non-terminal holding `ns1.<apex>`.
        if rel == apex {
            return nodata();
        }
        if let Some(first) = rel.strip_suffix(apex.as_str())
            && let Some(first) = first.strip_suffix('.')
        {
            if first != "ns1" {
                return nxdomain();
            }
            return match qtype {
                RecordType::A | RecordType::AAAA => reply(
                    ResponseCode::NoError,
                    addresses(qname, Some(qtype)),
                    Vec::new(),
                ),
                _ => nodata(),
            };
        }
        // PTR of an external address, in a reverse zone of the plugin.
        let family = if lower_name.ends_with(".in-addr.arpa.") {
            Some(ReverseFamily::V4)
        } else if lower_name.ends_with(".ip6.arpa.") {
            Some(ReverseFamily::V6)
        } else {
            None
        };
        if let Some(family) = family {
            let ReverseName::Full(ip) = parse_reverse(lower_name, family) else {
                return nxdomain();
            };
            let Some(keys) = self.external_ptr.get(&ip) else {
                return nxdomain();
            };
            if qtype != RecordType::PTR {
                return nodata();
            }
            let ptr_apex = Name::from_ascii(ptr_zone).unwrap_or_else(|_| Name::root());
            let answers = keys
                .iter()
                .map(|k: &ObjectKey| {
                    Record::from_rdata(
                        qname.clone(),
                        ttl,
                        RData::PTR(PTR(name_in(
                            &ptr_apex,
                            &format!("{}.{}", k.name, k.namespace),
                        ))),
                    )
                })
                .collect();
            return reply(ResponseCode::NoError, answers, Vec::new());
        }

        // `[endpoint.|_port._proto.]service.namespace`
        let segs: Vec<&str> = rel.split('.').collect();
        let n = segs.len();
        let namespace = segs[n - 1];
        if !self.options.namespace_exposed(namespace) {
            return nxdomain();
        }
        if n == 1 {
            return nodata();
        }
        let service = segs[n - 2];
        let (endpoint, port, proto) = match n {
            2 => (None, None, None),
            3 => (Some(segs[0]), None, None),
            4 => (
                None,
                Some(strip_underscore(segs[0])),
                Some(strip_underscore(segs[1])),
            ),
            _ => return nxdomain(),
        };
        let entry = match self
            .names
            .get(format!("{service}.{namespace}.svc").as_str())
        {
            Some(Node::Service(e)) => e.clone(),
            _ => return nxdomain(),
        };
        let svc = &entry.service;
        let ips = external_addresses(svc);
        let mut items: Vec<Item> = Vec::new();
        if opts.headless
            && ips.is_empty()
            && svc.load_balancer_hostnames.is_empty()
            && (matches!(entry.kind, ServiceKind::Headless) || endpoint.is_some())
        {
            for p in entry.unique() {
                let label = entry.label_text(p.endpoint, p.ip);
                if endpoint.is_some_and(|e| !e.eq_ignore_ascii_case(&label)) {
                    continue;
                }
                for ep_port in &entry.slices[usize::from(p.slice)].ports {
                    let Some(number) = ep_port.port else {
                        continue;
                    };
                    if port_matches(port, proto, &ep_port.name, ep_port.protocol.as_lower()) {
                        items.push(Item {
                            target: format!("{label}.{service}.{namespace}"),
                            port: number,
                            addr: Addr::Ip(p.ip),
                        });
                    }
                }
            }
        } else {
            let hosts = svc.load_balancer_hostnames.iter().filter_map(|h| {
                let mut name = Name::from_ascii(h).ok()?;
                name.set_fqdn(true);
                Some(Addr::Host(name))
            });
            let addrs: Vec<Addr> = ips.into_iter().map(Addr::Ip).chain(hosts).collect();
            for addr in addrs {
                for p in &svc.ports {
                    if port_matches(port, proto, &p.name, p.protocol.as_lower()) {
                        items.push(Item {
                            target: format!("{service}.{namespace}"),
                            port: p.port,
                            addr: addr.clone(),
                        });
                    }
                }
            }
        }
        if items.is_empty() {
            return nxdomain();
        }
        match qtype {
            RecordType::A | RecordType::AAAA => {
                let mut seen: HashSet<&Addr> = HashSet::new();
                let mut answers = Vec::new();
                for item in &items {
                    if !seen.insert(&item.addr) {
                        continue;
                    }
                    match &item.addr {
                        Addr::Host(h) => answers.push(Record::from_rdata(
                            qname.clone(),
                            ttl,
                            RData::CNAME(CNAME(h.clone())),
                        )),
                        Addr::Ip(ip) if ip.is_ipv4() == (qtype == RecordType::A) => {
                            answers.push(address(qname.clone(), ttl, *ip));
                        }
                        Addr::Ip(_) => {}
                    }
                }
                reply(ResponseCode::NoError, answers, Vec::new())
            }
            RecordType::SRV => {
                let weight = (100 / items.len()).max(1) as u16;
                let mut answers = Vec::new();
                let mut additionals = Vec::new();
                let mut seen_srv: HashSet<(Name, u16)> = HashSet::new();
                let mut seen_addr: HashSet<(Name, IpAddr)> = HashSet::new();
                for item in &items {
                    let target = match &item.addr {
                        Addr::Host(h) => h.clone(),
                        Addr::Ip(_) => name_in(&zone_name, &item.target),
                    };
                    if seen_srv.insert((target.clone(), item.port)) {
                        answers.push(Record::from_rdata(
                            qname.clone(),
                            ttl,
                            RData::SRV(SRV::new(0, weight, item.port, target.clone())),
                        ));
                    }
                    if let Addr::Ip(ip) = item.addr
                        && seen_addr.insert((target.clone(), ip))
                    {
                        additionals.push(address(target, ttl, ip));
                    }
                }
                reply(ResponseCode::NoError, answers, additionals)
            }
            _ => nodata(),
        }
    }
}

fn strip_underscore(s: &str) -> &str {
    s.strip_prefix('_').unwrap_or(s)
}

fn address(owner: Name, ttl: u32, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(v4) => Record::from_rdata(owner, ttl, RData::A(A(v4))),
        IpAddr::V6(v6) => Record::from_rdata(owner, ttl, RData::AAAA(AAAA(v6))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::zone::fixtures::snapshot;
    use crate::dns::zone::{ZoneOptions, lower_fqdn};

    /// CoreDNS's k8s_external test cluster (plugin/k8s_external/external_test.go), as manifests.
    const CLUSTER: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: svc1, namespace: testns}
spec: {clusterIP: 10.0.0.1, externalIPs: [1.2.3.4], ports: [{name: http, protocol: TCP, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: svc6, namespace: testns}
spec: {clusterIP: 10.0.0.3, externalIPs: ["1:2::5"], ports: [{name: http, protocol: TCP, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: svc11, namespace: testns}
spec: {type: LoadBalancer, clusterIP: 10.0.0.4, ports: [{name: http, protocol: TCP, port: 80}]}
status: {loadBalancer: {ingress: [{ip: 2.3.4.5}]}}
---
apiVersion: v1
kind: Service
metadata: {name: svc12, namespace: testns}
spec: {type: LoadBalancer, clusterIP: 10.0.0.5, ports: [{name: http, protocol: TCP, port: 80}]}
status: {loadBalancer: {ingress: [{hostname: dummy.hostname}]}}
---
apiVersion: v1
kind: Service
metadata: {name: svc-headless, namespace: testns}
spec: {clusterIP: None, ports: [{name: http, protocol: TCP, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-headless-1, namespace: testns, labels: {kubernetes.io/service-name: svc-headless}}
addressType: IPv4
ports: [{name: http, port: 80, protocol: TCP}]
endpoints:
  - {addresses: [1.2.3.4], hostname: endpoint-svc-0, conditions: {ready: true}}
  - {addresses: [1.2.3.5], hostname: endpoint-svc-1, conditions: {ready: true}}
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: testns}
spec: {clusterIP: 10.0.0.9, ports: [{name: http, protocol: TCP, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec: {clusterIP: 10.96.0.10, externalIPs: [192.0.2.53], ports: [{name: dns, protocol: UDP, port: 53}]}
"#;

    const SOA: &str = "example.com. 5 IN SOA ns1.dns.example.com. hostmaster.dns.example.com. 7 7200 1800 86400 5";

    type Reply = (ResponseCode, Vec<String>, Vec<String>, Vec<String>);

    fn ask(zone: &ClusterZone, opts: &ExternalOptions, q: &str, t: RecordType) -> Reply {
        let qname = Name::from_ascii(q).unwrap();
        let lower = lower_fqdn(&qname);
        let ext = if lower.ends_with("in-addr.arpa.") {
            "in-addr.arpa."
        } else {
            "example.com."
        };
        let a = zone.lookup_external(&qname, &lower, t, ext, "example.com.", opts);
        let text = |v: &[Record]| v.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        (
            a.rcode,
            text(&a.answers),
            text(&a.authority),
            text(&a.additionals),
        )
    }

    fn zone() -> ClusterZone {
        let opts = ZoneOptions {
            namespaces: ["testns".to_string()].into(),
            ..ZoneOptions::default()
        };
        ClusterZone::build_with_serial(&snapshot(CLUSTER), &opts, 7)
    }

    const OK: ResponseCode = ResponseCode::NoError;
    const NX: ResponseCode = ResponseCode::NXDomain;

    #[test]
    fn answers_coredns_s_test_table() {
        let z = zone();
        let o = ExternalOptions {
            headless: true,
            ..ExternalOptions::default()
        };
        let soa = || vec![SOA.to_string()];
        let none = Vec::<String>::new;
        let cases: Vec<(&str, RecordType, Reply)> = vec![
            (
                "4.3.2.1.in-addr.arpa.",
                RecordType::PTR,
                (
                    OK,
                    vec!["4.3.2.1.in-addr.arpa. 5 IN PTR svc1.testns.example.com.".into()],
                    none(),
                    none(),
                ),
            ),
            ("svc1.testns.example.com.", RecordType::PTR, (OK, none(), soa(), none())),
            ("not-existing.testns.example.com.", RecordType::PTR, (NX, none(), soa(), none())),
            (
                "svc1.testns.example.com.",
                RecordType::A,
                (OK, vec!["svc1.testns.example.com. 5 IN A 1.2.3.4".into()], none(), none()),
            ),
            (
                "svc1.testns.example.com.",
                RecordType::SRV,
                (
                    OK,
                    vec!["svc1.testns.example.com. 5 IN SRV 0 100 80 svc1.testns.example.com.".into()],
                    none(),
                    vec!["svc1.testns.example.com. 5 IN A 1.2.3.4".into()],
                ),
            ),
            ("*._not-udp-or-tcp.svc1.testns.example.com.", RecordType::SRV, (NX, none(), soa(), none())),
            (
                "_http._tcp.svc1.testns.example.com.",
                RecordType::SRV,
                (
                    OK,
                    vec!["_http._tcp.svc1.testns.example.com. 5 IN SRV 0 100 80 svc1.testns.example.com.".into()],
                    none(),
                    vec!["svc1.testns.example.com. 5 IN A 1.2.3.4".into()],
                ),
            ),
            ("svc1.testns.example.com.", RecordType::AAAA, (OK, none(), soa(), none())),
            ("svc0.testns.example.com.", RecordType::AAAA, (NX, none(), soa(), none())),
            ("svc0.testns.example.com.", RecordType::A, (NX, none(), soa(), none())),
            ("svc0.svc-nons.example.com.", RecordType::A, (NX, none(), soa(), none())),
            (
                "svc6.testns.example.com.",
                RecordType::AAAA,
                (OK, vec!["svc6.testns.example.com. 5 IN AAAA 1:2::5".into()], none(), none()),
            ),
            (
                "svc6.testns.example.com.",
                RecordType::SRV,
                (
                    OK,
                    vec!["svc6.testns.example.com. 5 IN SRV 0 100 80 svc6.testns.example.com.".into()],
                    none(),
                    vec!["svc6.testns.example.com. 5 IN AAAA 1:2::5".into()],
                ),
            ),
            ("testns.example.com.", RecordType::A, (OK, none(), soa(), none())),
            ("testns.example.com.", RecordType::SOA, (OK, none(), soa(), none())),
            (
                "svc11.testns.example.com.",
                RecordType::A,
                (OK, vec!["svc11.testns.example.com. 5 IN A 2.3.4.5".into()], none(), none()),
            ),
            (
                "svc12.testns.example.com.",
                RecordType::A,
                (
                    OK,
                    vec!["svc12.testns.example.com. 5 IN CNAME dummy.hostname.".into()],
                    none(),
                    none(),
                ),
            ),
            (
                "_http._tcp.svc12.testns.example.com.",
                RecordType::SRV,
                (
                    OK,
                    vec!["_http._tcp.svc12.testns.example.com. 5 IN SRV 0 100 80 dummy.hostname.".into()],
                    none(),
                    none(),
                ),
            ),
            (
                "svc-headless.testns.example.com.",
                RecordType::A,
                (
                    OK,
                    vec![
                        "svc-headless.testns.example.com. 5 IN A 1.2.3.4".into(),
                        "svc-headless.testns.example.com. 5 IN A 1.2.3.5".into(),
                    ],
                    none(),
                    none(),
                ),
            ),
            (
                "_http._tcp.svc-headless.testns.example.com.",
                RecordType::SRV,
                (
                    OK,
                    vec![
                        "_http._tcp.svc-headless.testns.example.com. 5 IN SRV 0 50 80 endpoint-svc-0.svc-headless.testns.example.com.".into(),
                        "_http._tcp.svc-headless.testns.example.com. 5 IN SRV 0 50 80 endpoint-svc-1.svc-headless.testns.example.com.".into(),
                    ],
                    none(),
                    vec![
                        "endpoint-svc-0.svc-headless.testns.example.com. 5 IN A 1.2.3.4".into(),
                        "endpoint-svc-1.svc-headless.testns.example.com. 5 IN A 1.2.3.5".into(),
                    ],
                ),
            ),
            (
                "endpoint-svc-1.svc-headless.testns.example.com.",
                RecordType::SRV,
                (
                    OK,
                    vec!["endpoint-svc-1.svc-headless.testns.example.com. 5 IN SRV 0 100 80 endpoint-svc-1.svc-headless.testns.example.com.".into()],
                    none(),
                    vec!["endpoint-svc-1.svc-headless.testns.example.com. 5 IN A 1.2.3.5".into()],
                ),
            ),
            (
                "endpoint-svc-0.svc-headless.testns.example.com.",
                RecordType::A,
                (
                    OK,
                    vec!["endpoint-svc-0.svc-headless.testns.example.com. 5 IN A 1.2.3.4".into()],
                    none(),
                    none(),
                ),
            ),
            // A service without external addresses has no external name.
            ("plain.testns.example.com.", RecordType::A, (NX, none(), soa(), none())),
            ("a.b.c.svc1.testns.example.com.", RecordType::A, (NX, none(), soa(), none())),
        ];
        for (q, t, want) in cases {
            assert_eq!(ask(&z, &o, q, t), want, "{q} {t}");
        }
    }

    #[test]
    fn apex_soa_ns_and_the_name_server_subdomain() {
        let z = zone();
        let o = ExternalOptions::default();
        assert_eq!(
            ask(&z, &o, "example.com.", RecordType::SOA),
            (OK, vec![SOA.to_string()], vec![], vec![])
        );
        assert_eq!(
            ask(&z, &o, "example.com.", RecordType::NS),
            (
                OK,
                vec!["example.com. 5 IN NS ns1.dns.example.com.".to_string()],
                vec![],
                vec!["ns1.dns.example.com. 5 IN A 192.0.2.53".to_string()]
            )
        );
        let soa = vec![SOA.to_string()];
        assert_eq!(
            ask(&z, &o, "example.com.", RecordType::A),
            (OK, vec![], soa.clone(), vec![])
        );
        assert_eq!(
            ask(&z, &o, "dns.example.com.", RecordType::A),
            (OK, vec![], soa.clone(), vec![])
        );
        assert_eq!(
            ask(&z, &o, "ns1.dns.example.com.", RecordType::A),
            (
                OK,
                vec!["ns1.dns.example.com. 5 IN A 192.0.2.53".to_string()],
                vec![],
                vec![]
            )
        );
        assert_eq!(
            ask(&z, &o, "ns2.dns.example.com.", RecordType::A),
            (NX, vec![], soa.clone(), vec![])
        );
        // Another apex label and TTL.
        let o = ExternalOptions {
            apex: "zz".into(),
            ttl: 60,
            headless: false,
        };
        let (rc, ans, _, _) = ask(&z, &o, "example.com.", RecordType::SOA);
        assert_eq!(rc, OK);
        assert_eq!(
            ans,
            vec![
                "example.com. 60 IN SOA ns1.zz.example.com. hostmaster.zz.example.com. 7 7200 1800 86400 60"
            ]
        );
        assert_eq!(
            ask(&z, &o, "ns1.zz.example.com.", RecordType::A).1,
            vec!["ns1.zz.example.com. 60 IN A 192.0.2.53"]
        );
        // Without `headless`, a headless service has no external name.
        assert_eq!(
            ask(&z, &o, "svc-headless.testns.example.com.", RecordType::A).0,
            NX
        );
    }

    #[test]
    fn the_external_ptr_index_follows_incremental_updates() {
        use crate::cache::new_cache;
        use crate::model::{ClusterObject, Kind};
        use crate::source::manifests::parse_manifest;
        let objects = parse_manifest(std::path::Path::new("x.yaml"), CLUSTER).unwrap();
        let (mut writer, reader) = new_cache([Kind::Service, Kind::EndpointSlice]);
        for kind in [Kind::Service, Kind::EndpointSlice] {
            writer.replace_kind(
                kind,
                objects
                    .iter()
                    .filter(|o| o.kind() == kind)
                    .cloned()
                    .collect(),
            );
        }
        let first = reader.snapshot();
        let opts = ZoneOptions::default();
        let z0 = ClusterZone::build(&first, &opts);
        // svc11 loses its load balancer; svc1 moves to another external IP.
        let mut svc11 = (**first.service(&ObjectKey::new("testns", "svc11")).unwrap()).clone();
        svc11.load_balancer_ips.clear();
        writer.apply(ClusterObject::from(svc11));
        let mut svc1 = (**first.service(&ObjectKey::new("testns", "svc1")).unwrap()).clone();
        svc1.external_ips = vec!["9.9.9.9".parse().unwrap()];
        writer.apply(ClusterObject::from(svc1));
        let next = reader.snapshot();
        let changes = next.changes_since(first.generation()).unwrap();
        let z1 = z0.update(&next, &changes, 8);
        let full = ClusterZone::build_with_serial(&next, &opts, 8);
        let o = ExternalOptions::default();
        for z in [&z1, &full] {
            assert_eq!(ask(z, &o, "5.4.3.2.in-addr.arpa.", RecordType::PTR).0, NX);
            assert_eq!(ask(z, &o, "4.3.2.1.in-addr.arpa.", RecordType::PTR).0, NX);
            assert_eq!(
                ask(z, &o, "9.9.9.9.in-addr.arpa.", RecordType::PTR).1,
                vec!["9.9.9.9.in-addr.arpa. 5 IN PTR svc1.testns.example.com."]
            );
            assert_eq!(
                ask(z, &o, "svc1.testns.example.com.", RecordType::A).1,
                vec!["svc1.testns.example.com. 5 IN A 9.9.9.9"]
            );
        }
        // The old zone is unchanged.
        assert_eq!(ask(&z0, &o, "5.4.3.2.in-addr.arpa.", RecordType::PTR).0, OK);
    }
}
