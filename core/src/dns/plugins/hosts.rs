//! `hosts`: answers from a hosts file and inline entries (CoreDNS's hosts plugin).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::metrics::PluginMetrics;
use crate::dns::corefile::directives::hosts::parse_hosts_line;
use crate::dns::corefile::names::in_zone;
use crate::dns::corefile::{FileSource, HostEntry, HostsConfig};
use crate::dns::handler::{Next, Plugin, Reply, Request, Response, empty_records};
use crate::dns::zone::reverse_name;

/// Names and addresses of a hosts table.
#[derive(Debug, Default)]
pub(crate) struct HostsTable {
    by_name: HashMap<String, Vec<IpAddr>>,
    by_addr: HashMap<String, Vec<String>>,
}

impl HostsTable {
    /// A table of `entries` (file entries first, inline entries after).
    pub fn new(entries: impl IntoIterator<Item = HostEntry>) -> Self {
        let mut t = Self::default();
        for e in entries {
            for n in &e.names {
                let ips = t.by_name.entry(n.clone()).or_default();
                if !ips.contains(&e.ip) {
                    ips.push(e.ip);
                }
                let names = t.by_addr.entry(reverse_name(e.ip)).or_default();
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
        t
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }
}

/// Parses hosts-file text, skipping (and logging) malformed lines.
pub(crate) fn parse_hosts_file(text: &str) -> Vec<HostEntry> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_hosts_line(line) {
            Some(Ok(e)) => out.push(e),
            Some(Err(e)) => tracing::warn!(line = i + 1, "plugin/hosts: skipping line: {e}"),
            None => {}
        }
    }
    out
}

/// The hosts plugin.
pub(crate) struct Hosts {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: HostsConfig,
    table: ArcSwap<HostsTable>,
    files: Arc<dyn FileSource>,
    metrics: Option<PluginMetrics>,
}

impl Inner {
    fn load(&self) {
        let mut entries = match self.files.read(&self.cfg.file) {
            Ok(text) => parse_hosts_file(&text),
            Err(e) => {
                tracing::debug!(file = %self.cfg.file.display(), "plugin/hosts: cannot read: {e}");
                Vec::new()
            }
        };
        entries.extend(self.cfg.inline.iter().cloned());
        let table = HostsTable::new(entries);
        if let Some(m) = &self.metrics {
            m.hosts_entries.set(table.len() as i64);
        }
        self.table.store(Arc::new(table));
    }
}

impl Hosts {
    /// A hosts plugin; reads the file now and (with a `reload` period) re-reads it when it
    /// changes.
    pub fn new(
        cfg: HostsConfig,
        files: Arc<dyn FileSource>,
        metrics: Option<PluginMetrics>,
    ) -> Self {
        let inner = Arc::new(Inner {
            cfg,
            table: ArcSwap::from_pointee(HostsTable::default()),
            files,
            metrics,
        });
        inner.load();
        let file = inner.cfg.file.clone();
        super::file_poll::spawn_reload(&inner, inner.cfg.reload, file.clone(), move |inner| {
            inner.load();
            tracing::info!(file = %file.display(), "plugin/hosts: reloaded");
        });
        Self { inner }
    }

    fn answer(&self, req: &Request) -> Option<Response> {
        let cfg = &self.inner.cfg;
        let name = req.lower_name();
        let table = self.inner.table.load();
        let qname = req.name().clone();
        let rec = |data: RData| Record::from_rdata(qname.clone(), cfg.ttl, data);
        let records: Vec<Record> = if req.record_type() == RecordType::PTR {
            if cfg.no_reverse {
                return None;
            }
            table
                .by_addr
                .get(name)?
                .iter()
                .filter_map(|n| Name::from_ascii(n).ok())
                .map(|n| rec(RData::PTR(PTR(n))))
                .collect()
        } else {
            if !cfg.zones.iter().any(|z| in_zone(name, z)) {
                return None;
            }
            let ips = table.by_name.get(name)?;
            ips.iter()
                .filter_map(|ip| match (ip, req.record_type()) {
                    (IpAddr::V4(v4), RecordType::A) => Some(rec(RData::A(A::from(*v4)))),
                    (IpAddr::V6(v6), RecordType::AAAA) => Some(rec(RData::AAAA(AAAA::from(*v6)))),
                    _ => None,
                })
                .collect()
        };
        Some(
            Response::with_records(
                ResponseCode::NoError,
                records.into(),
                empty_records(),
                empty_records(),
            )
            .authoritative(),
        )
    }
}

impl Plugin for Hosts {
    fn name(&self) -> &'static str {
        "hosts"
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        if let Some(resp) = self.answer(req) {
            return Reply::Ready(resp);
        }
        let name = req.lower_name();
        let in_zones = self.inner.cfg.zones.iter().any(|z| in_zone(name, z));
        if !in_zones
            || self
                .inner
                .cfg
                .fallthrough
                .as_ref()
                .is_some_and(|f| f.applies(name))
        {
            return next.run(req);
        }
        Reply::Ready(Response::new(ResponseCode::NXDomain).authoritative())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::corefile::{Fallthrough, MemoryFiles};
    use crate::dns::handler::Chain;
    use std::path::PathBuf;
    use std::time::Duration;

    fn plugin(fallthrough: bool) -> Chain {
        let mut files = MemoryFiles::new();
        files.insert(
            "/etc/hosts",
            "127.0.0.1 localhost\n10.0.0.1 db.example.org db # comment\nbogus line\n",
        );
        let cfg = HostsConfig {
            file: PathBuf::from("/etc/hosts"),
            zones: vec!["example.org.".into(), "in-addr.arpa.".into()],
            inline: vec![HostEntry {
                ip: "fd00::1".parse().unwrap(),
                names: vec!["db.example.org.".into()],
            }],
            ttl: 60,
            no_reverse: false,
            reload: Duration::ZERO,
            fallthrough: fallthrough.then(Fallthrough::default),
        };
        Chain::new(vec![Arc::new(Hosts::new(cfg, Arc::new(files), None))])
    }

    fn ask(chain: &Chain, name: &str, t: RecordType) -> Response {
        let req = Request::new(Name::from_ascii(name).unwrap(), t);
        match chain.handle(&req) {
            Reply::Ready(r) => r,
            Reply::Pending(_) => panic!("hosts answers synchronously"),
        }
    }

    #[test]
    fn file_and_inline_entries() {
        let c = plugin(false);
        let a = ask(&c, "DB.example.org.", RecordType::A);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].ttl, 60);
        assert_eq!(a.answers[0].data.to_string(), "10.0.0.1");
        let aaaa = ask(&c, "db.example.org.", RecordType::AAAA);
        assert_eq!(aaaa.answers[0].data.to_string(), "fd00::1");
        let mx = ask(&c, "db.example.org.", RecordType::MX);
        assert_eq!((mx.rcode, mx.answers.len()), (ResponseCode::NoError, 0));
        let ptr = ask(&c, "1.0.0.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(ptr.answers[0].data.to_string(), "db.example.org.");
        let nx = ask(&c, "nope.example.org.", RecordType::A);
        assert_eq!(nx.rcode, ResponseCode::NXDomain);
        // localhost is outside the zones: passed on (end of chain: REFUSED).
        assert_eq!(
            ask(&c, "localhost.", RecordType::A).rcode,
            ResponseCode::Refused
        );
    }

    #[test]
    fn fallthrough_passes_unknown_names_on() {
        let c = plugin(true);
        assert_eq!(
            ask(&c, "nope.example.org.", RecordType::A).rcode,
            ResponseCode::Refused
        );
    }
}
