//! `acl`: access control by client address and query type (CoreDNS's acl plugin).
//!
//! Rules are checked in order; a rule applies when its zones contain the name, and its first
//! matching policy decides: `block` answers REFUSED, `filter` NOERROR with nothing, `drop`
//! sends nothing, `allow` stops the checks. Queries no policy stops go on. Counted in
//! `coredns_acl_{blocked,filtered,dropped}_requests_total{zone}` and
//! `coredns_acl_allowed_requests_total`.

use hickory_proto::op::ResponseCode;

use super::metrics::PluginMetrics;
use crate::dns::corefile::names::longest_zone;
use crate::dns::corefile::{AclAction, AclRule};
use crate::dns::handler::{Next, Plugin, Reply, Request, Response};

/// The acl plugin.
pub(crate) struct Acl {
    rules: Vec<AclRule>,
    metrics: Option<PluginMetrics>,
}

impl Acl {
    /// An acl plugin with `rules` (in order).
    pub fn new(rules: Vec<AclRule>, metrics: Option<PluginMetrics>) -> Self {
        Self { rules, metrics }
    }

    /// The action for `req` and the zone of the rule that decided (`Allow` when none did).
    pub(crate) fn decide(&self, req: &Request) -> (AclAction, Option<&str>) {
        let ip = req.client.ip();
        for rule in &self.rules {
            let Some(zone) = longest_zone(req.lower_name(), rule.zones.iter().map(String::as_str))
            else {
                continue;
            };
            if let Some(p) = rule
                .policies
                .iter()
                .find(|p| p.matches(req.record_type(), ip))
            {
                if p.action == AclAction::Allow {
                    return (AclAction::Allow, None);
                }
                return (p.action, Some(zone));
            }
        }
        (AclAction::Allow, None)
    }
}

impl Plugin for Acl {
    fn name(&self) -> &'static str {
        "acl"
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        let (action, zone) = self.decide(req);
        if let Some(m) = &self.metrics {
            let labels = vec![("zone", zone.unwrap_or("").to_string())];
            match action {
                AclAction::Block => m.acl_blocked.get_or_create(&labels).inc(),
                AclAction::Filter => m.acl_filtered.get_or_create(&labels).inc(),
                AclAction::Drop => m.acl_dropped.get_or_create(&labels).inc(),
                _ => m.acl_allowed.inc(),
            };
        }
        match action {
            AclAction::Block => Reply::Ready(Response::new(ResponseCode::Refused)),
            AclAction::Filter => Reply::Ready(Response::new(ResponseCode::NoError)),
            AclAction::Drop => Reply::Ready(Response {
                no_reply: true,
                ..Response::new(ResponseCode::NoError)
            }),
            _ => next.run(req),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::corefile::{LoadOptions, MemoryFiles, load_from};
    use crate::dns::handler::{Chain, Transport};
    use hickory_proto::op::Query;
    use hickory_proto::rr::{Name, RecordType};
    use std::sync::Arc;

    fn rules(block: &str) -> Vec<AclRule> {
        let text = format!("example.org {{\n{block}\n}}\n");
        load_from(
            "Corefile",
            &text,
            &MemoryFiles::new(),
            &|_| None,
            &LoadOptions::default(),
        )
        .unwrap()
        .servers
        .remove(0)
        .plugins
        .acl
    }

    /// (corefile acl lines, client, name, type) → action, after CoreDNS's acl_test.go.
    #[test]
    fn coredns_table() {
        use AclAction::*;
        use RecordType::*;
        let cases: &[(&str, &str, &str, RecordType, AclAction)] = &[
            (
                "acl {\n block type A net 192.168.0.0/16\n}",
                "192.168.0.2",
                "www.example.org.",
                A,
                Block,
            ),
            (
                "acl {\n block type A net 192.168.0.0/16\n}",
                "192.167.0.2",
                "www.example.org.",
                A,
                Allow,
            ),
            (
                "acl {\n block type A net 192.168.0.0/16\n}",
                "192.168.0.2",
                "www.example.org.",
                AAAA,
                Allow,
            ),
            (
                "acl {\n filter type A net 192.168.0.0/16\n}",
                "192.168.0.2",
                "www.example.org.",
                A,
                Filter,
            ),
            (
                "acl {\n block type * net 192.168.0.0/16\n}",
                "192.168.0.2",
                "www.example.org.",
                MX,
                Block,
            ),
            (
                "acl {\n block type A net *\n}",
                "10.1.1.1",
                "www.example.org.",
                A,
                Block,
            ),
            (
                "acl {\n block type A\n}",
                "2001:db8::1",
                "www.example.org.",
                A,
                Block,
            ),
            (
                "acl {\n block net 192.168.0.0/16\n}",
                "192.168.0.2",
                "www.example.org.",
                TXT,
                Block,
            ),
            (
                "acl {\n allow net 192.168.1.0/24\n block net 192.168.0.0/16\n}",
                "192.168.1.2",
                "www.example.org.",
                A,
                Allow,
            ),
            (
                "acl {\n allow net 192.168.1.0/24\n block net 192.168.0.0/16\n}",
                "192.168.2.2",
                "www.example.org.",
                A,
                Block,
            ),
            (
                "acl {\n allow net 192.168.0.0/24 192.168.1.0/24\n block\n}",
                "192.168.1.9",
                "www.example.org.",
                A,
                Allow,
            ),
            (
                "acl {\n allow net 192.168.0.0/24 192.168.1.0/24\n block\n}",
                "10.0.0.1",
                "www.example.org.",
                A,
                Block,
            ),
            (
                "acl a.example.org {\n block net 192.168.1.0/24\n}",
                "192.168.1.2",
                "a.example.org.",
                A,
                Block,
            ),
            (
                "acl a.example.org {\n block net 192.168.1.0/24\n}",
                "192.168.1.2",
                "b.example.org.",
                A,
                Allow,
            ),
            (
                "acl {\n drop net 192.168.0.1\n}",
                "192.168.0.1",
                "www.example.org.",
                A,
                Drop,
            ),
            (
                "acl {\n drop net 192.168.0.1\n}",
                "192.168.0.2",
                "www.example.org.",
                A,
                Allow,
            ),
            (
                "acl {\n block net 2001:db8::/64\n}",
                "2001:db8::53",
                "www.example.org.",
                A,
                Block,
            ),
            (
                "acl {\n block net 2001:db8::1\n}",
                "2001:db8::2",
                "www.example.org.",
                A,
                Allow,
            ),
            // Two acl directives: the first that decides wins.
            (
                "acl {\n allow net 10.0.0.1\n}\nacl {\n block\n}",
                "10.0.0.1",
                "www.example.org.",
                A,
                Allow,
            ),
            (
                "acl {\n allow net 10.0.0.1\n}\nacl {\n block\n}",
                "10.0.0.2",
                "www.example.org.",
                A,
                Block,
            ),
        ];
        for (cfg, client, name, qtype, want) in cases {
            let acl = Acl::new(rules(cfg), None);
            let req = Request::from_query(
                1,
                Query::query(Name::from_ascii(name).unwrap(), *qtype),
                std::net::SocketAddr::new(client.parse().unwrap(), 5353),
                Transport::Udp,
            );
            assert_eq!(acl.decide(&req).0, *want, "{cfg:?} {client} {name} {qtype}");
        }
    }

    #[test]
    fn answers_and_metrics() {
        let m = PluginMetrics::default();
        let acl = Acl::new(
            rules("acl {\n block type A\n filter type AAAA\n drop type TXT\n}"),
            Some(m.clone()),
        );
        let chain = Chain::new(vec![Arc::new(acl)]);
        let ask = |t| {
            let Reply::Ready(r) = chain.handle(&Request::new(
                Name::from_ascii("x.example.org.").unwrap(),
                t,
            )) else {
                panic!("ready expected")
            };
            r
        };
        let r = ask(RecordType::A);
        assert_eq!(
            (r.rcode, r.plugin, r.no_reply),
            (ResponseCode::Refused, Some("acl"), false)
        );
        let r = ask(RecordType::AAAA);
        assert_eq!(
            (r.rcode, r.answers.len(), r.no_reply),
            (ResponseCode::NoError, 0, false)
        );
        assert!(ask(RecordType::TXT).no_reply);
        let r = ask(RecordType::MX);
        assert_eq!((r.rcode, r.plugin), (ResponseCode::Refused, Some("")));
        let zone = vec![("zone", "example.org.".to_string())];
        assert_eq!(m.acl_blocked.get_or_create(&zone).get(), 1);
        assert_eq!(m.acl_filtered.get_or_create(&zone).get(), 1);
        assert_eq!(m.acl_dropped.get_or_create(&zone).get(), 1);
        assert_eq!(m.acl_allowed.get(), 1);
    }

    #[test]
    fn bad_config_names_file_and_line() {
        for (text, needle) in [
            ("acl {\n deny net 10.0.0.0/8\n}", "Corefile:3"),
            ("acl {\n block net 10.0.0.0/33\n}", "Corefile:3"),
            ("acl {\n block type BOGUS\n}", "Corefile:3"),
            ("acl {\n block net\n}", "Corefile:3"),
            ("acl {\n block foo 10.0.0.1\n}", "Corefile:3"),
        ] {
            let t = format!("example.org {{\n{text}\n}}\n");
            let e = load_from(
                "Corefile",
                &t,
                &MemoryFiles::new(),
                &|_| None,
                &LoadOptions::default(),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
