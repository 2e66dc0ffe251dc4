//! `file`: an RFC 1035 zone file served authoritatively (CoreDNS's file plugin).
//!
//! Answers carry AA. A name with records of the type: those records, the apex NS records in
//! the authority section and the addresses of in-zone MX/SRV targets in the additional
//! section. A CNAME is followed inside the zone (up to 8 steps). A name that exists without
//! the type (or an empty non-terminal): NODATA with the SOA. A name that does not exist:
//! NXDOMAIN with the SOA, unless a wildcard at its closest encloser synthesises the answer
//! (RFC 4592). Names at or below a delegation (NS records below the apex) get a referral: the
//! NS records in the authority section, their in-zone addresses as glue, AA unset.
//!
//! With `reload`, the file is checked at that interval and a new version replaces the zone when
//! its SOA serial increased (as CoreDNS); an edit that does not parse is logged and the zone in
//! force stays.
//!
//! Differences from CoreDNS: a CNAME whose target is outside the zone is answered alone (CoreDNS
//! resolves the target through itself); an SOA query for a name below the apex is NODATA (CoreDNS
//! answers the apex SOA); a zone file missing at load is an error even with `reload` (CoreDNS
//! waits for it); DNSSEC records are served as plain data, without NSEC proofs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::metrics::PluginMetrics;
use crate::dns::corefile::names::{in_zone, longest_zone};
use crate::dns::corefile::{FileConfig, FileSource};
use crate::dns::handler::{Next, Plugin, Records, Reply, Request, Response, empty_records};
use crate::dns::zonetext::parse_zone;

/// Records by type at one name.
type Node = HashMap<RecordType, Vec<Record>>;

/// How many CNAMEs are followed inside the zone.
const MAX_CHAIN: usize = 8;

/// One zone loaded from a file: records by lower-case owner name.
#[derive(Debug)]
pub struct ZoneData {
    origin: String,
    soa: Record,
    serial: u32,
    apex_ns: Vec<Record>,
    nodes: HashMap<String, Node>,
    /// Names without records that have descendants with records.
    empty_non_terminals: HashSet<String>,
    records: usize,
}

fn lower(name: &Name) -> String {
    let mut s = name.to_lowercase().to_ascii();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

/// The parent of a lower-case fully qualified name (`None` for the root).
fn parent(name: &str) -> Option<&str> {
    if name == "." {
        return None;
    }
    name.split_once('.')
        .map(|(_, p)| if p.is_empty() { "." } else { p })
}

impl ZoneData {
    /// Parses zone-file `text` for `origin`. The zone needs an SOA at the apex; records outside
    /// the origin are errors (as CoreDNS).
    pub fn parse(text: &str, origin: &Name) -> Result<Self, String> {
        let (_, sets) = parse_zone(text, origin)?;
        let origin_l = lower(origin);
        let mut nodes: HashMap<String, Node> = HashMap::new();
        let mut records = 0;
        for set in sets.into_values() {
            for r in set.records_without_rrsigs() {
                let owner = lower(&r.name);
                if !in_zone(&owner, &origin_l) {
                    return Err(format!("out of zone data: {owner} is not in {origin_l}"));
                }
                records += 1;
                nodes
                    .entry(owner)
                    .or_default()
                    .entry(r.record_type())
                    .or_default()
                    .push(r.clone());
            }
        }
        let apex = nodes.get(&origin_l);
        let soa = apex
            .and_then(|n| n.get(&RecordType::SOA))
            .and_then(|v| v.first())
            .cloned()
            .ok_or_else(|| format!("no SOA record at the apex {origin_l}"))?;
        let serial = match &soa.data {
            RData::SOA(s) => s.serial,
            _ => 0,
        };
        let apex_ns = apex
            .and_then(|n| n.get(&RecordType::NS))
            .cloned()
            .unwrap_or_default();
        let mut empty_non_terminals = HashSet::new();
        for owner in nodes.keys() {
            let mut p = parent(owner);
            while let Some(name) = p {
                if !in_zone(name, &origin_l) || name == origin_l {
                    break;
                }
                if !nodes.contains_key(name) {
                    empty_non_terminals.insert(name.to_string());
                }
                p = parent(name);
            }
        }
        Ok(Self {
            origin: origin_l,
            soa,
            serial,
            apex_ns,
            nodes,
            empty_non_terminals,
            records,
        })
    }

    /// The SOA serial.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether the zone has no records (never: it has an SOA).
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    fn rrs(&self, name: &str, t: RecordType) -> &[Record] {
        self.nodes
            .get(name)
            .and_then(|n| n.get(&t))
            .map_or(&[], Vec::as_slice)
    }

    fn addresses(&self, name: &str, out: &mut Vec<Record>) {
        out.extend_from_slice(self.rrs(name, RecordType::A));
        out.extend_from_slice(self.rrs(name, RecordType::AAAA));
    }

    fn glue(&self, ns: &[Record]) -> Vec<Record> {
        let mut out = Vec::new();
        for r in ns {
            if let RData::NS(target) = &r.data {
                let t = lower(&target.0);
                if in_zone(&t, &lower(&r.name)) || in_zone(&t, &self.origin) {
                    self.addresses(&t, &mut out);
                }
            }
        }
        out
    }

    fn negative(&self, rcode: ResponseCode) -> Response {
        Response::with_records(
            rcode,
            empty_records(),
            vec![self.soa.clone()].into(),
            empty_records(),
        )
        .authoritative()
    }

    fn positive(&self, answers: Vec<Record>) -> Response {
        let mut extra = Vec::new();
        for r in &answers {
            let target = match &r.data {
                RData::MX(mx) => mx.exchange.clone(),
                RData::SRV(srv) => srv.target.clone(),
                _ => continue,
            };
            let t = lower(&target);
            if in_zone(&t, &self.origin) {
                self.addresses(&t, &mut extra);
            }
        }
        let ns: Records = self.apex_ns.clone().into();
        Response::with_records(ResponseCode::NoError, answers.into(), ns, extra.into())
            .authoritative()
    }

    /// The records of `node_name` for `qtype`, following CNAMEs inside the zone; owner names
    /// of wildcard records become `owner`.
    fn resolve(&self, node_name: &str, owner: &Name, qtype: RecordType) -> Response {
        let rename = |rs: &[Record]| -> Vec<Record> {
            rs.iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.name = owner.clone();
                    r
                })
                .collect()
        };
        let synthesized = node_name.starts_with("*.");
        let cnames = self.rrs(node_name, RecordType::CNAME);
        if !cnames.is_empty() && qtype != RecordType::CNAME {
            let mut answers = if synthesized {
                rename(cnames)
            } else {
                cnames.to_vec()
            };
            let mut target = match &cnames[0].data {
                RData::CNAME(c) => lower(&c.0),
                _ => return self.positive(answers),
            };
            for _ in 0..MAX_CHAIN {
                if !in_zone(&target, &self.origin) || !self.nodes.contains_key(&target) {
                    break;
                }
                let next = self.rrs(&target, RecordType::CNAME);
                if next.is_empty() {
                    answers.extend_from_slice(self.rrs(&target, qtype));
                    break;
                }
                answers.extend_from_slice(next);
                target = match &next[0].data {
                    RData::CNAME(c) => lower(&c.0),
                    _ => break,
                };
            }
            return self.positive(answers);
        }
        let rrs = self.rrs(node_name, qtype);
        if rrs.is_empty() {
            return self.negative(ResponseCode::NoError);
        }
        self.positive(if synthesized {
            rename(rrs)
        } else {
            rrs.to_vec()
        })
    }

    /// Answers `qname` (lower case, fully qualified, inside the zone) for `qtype`; `owner` is
    /// the name as the client wrote it.
    pub fn lookup(&self, qname: &str, owner: &Name, qtype: RecordType) -> Response {
        if qname == self.origin && qtype == RecordType::NS {
            let glue = self.glue(&self.apex_ns);
            return Response::with_records(
                ResponseCode::NoError,
                self.apex_ns.clone().into(),
                empty_records(),
                glue.into(),
            )
            .authoritative();
        }
        // The names from just below the apex down to qname.
        let mut chain: Vec<&str> = Vec::new();
        let mut n = Some(qname);
        while let Some(name) = n {
            if name == self.origin {
                break;
            }
            chain.push(name);
            n = parent(name);
        }
        for name in chain.into_iter().rev() {
            if let Some(node) = self.nodes.get(name) {
                if let Some(ns) = node.get(&RecordType::NS)
                    && !(qtype == RecordType::DS && name == qname)
                {
                    let glue = self.glue(ns);
                    return Response::with_records(
                        ResponseCode::NoError,
                        empty_records(),
                        ns.clone().into(),
                        glue.into(),
                    );
                }
                continue;
            }
            if self.empty_non_terminals.contains(name) {
                continue;
            }
            // `name` does not exist: its parent is the closest encloser.
            let wildcard = format!("*.{}", parent(name).unwrap_or("."));
            if self.nodes.contains_key(&wildcard) {
                return self.resolve(&wildcard, owner, qtype);
            }
            return self.negative(ResponseCode::NXDomain);
        }
        if !self.nodes.contains_key(qname) {
            // An empty non-terminal.
            return self.negative(ResponseCode::NoError);
        }
        self.resolve(qname, owner, qtype)
    }
}

/// The zones of one `file` directive, swapped whole on reload.
struct Inner {
    cfg: FileConfig,
    files: Arc<dyn FileSource>,
    zones: ArcSwap<Vec<(String, Arc<ZoneData>)>>,
    metrics: Option<PluginMetrics>,
}

impl Inner {
    /// Reads and parses the file for every zone; zones whose serial did not increase (or that
    /// do not parse) keep their data.
    fn load(&self, initial: bool) {
        let text = match self.files.read(&self.cfg.path) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(file = %self.cfg.path.display(), "plugin/file: cannot read zone file, keeping the zone in force: {e}");
                return;
            }
        };
        let current = self.zones.load_full();
        let mut next = Vec::new();
        let mut changed = false;
        for zone in &self.cfg.zones {
            let old = current
                .iter()
                .find(|(z, _)| z == zone)
                .map(|(_, d)| d.clone());
            let parsed = Name::from_ascii(zone)
                .map_err(|e| e.to_string())
                .and_then(|origin| ZoneData::parse(&text, &origin));
            match (parsed, old) {
                (Ok(data), Some(old)) if !initial && data.serial() <= old.serial() => {
                    tracing::warn!(zone = %zone, serial = data.serial(), "plugin/file: zone file changed but its SOA serial did not increase; not reloaded");
                    next.push((zone.clone(), old));
                }
                (Ok(data), _) => {
                    if !initial {
                        tracing::info!(zone = %zone, serial = data.serial(), "plugin/file: zone reloaded");
                    }
                    if let Some(m) = &self.metrics {
                        m.file_entries
                            .get_or_create(&vec![("dns_name", zone.clone())])
                            .set(data.len() as i64);
                    }
                    next.push((zone.clone(), Arc::new(data)));
                    changed = true;
                }
                (Err(e), old) => {
                    tracing::error!(zone = %zone, file = %self.cfg.path.display(), "plugin/file: zone file rejected, the zone in force stays: {e}");
                    if let Some(old) = old {
                        next.push((zone.clone(), old));
                    }
                }
            }
        }
        if changed || initial {
            self.zones.store(Arc::new(next));
        }
    }
}

/// The file plugin.
pub struct File {
    inner: Arc<Inner>,
}

impl File {
    /// A file plugin: reads the zone file now and (with a `reload` interval, inside a tokio
    /// runtime) checks it for changes.
    pub fn new(
        cfg: FileConfig,
        files: Arc<dyn FileSource>,
        metrics: Option<PluginMetrics>,
    ) -> Self {
        let inner = Arc::new(Inner {
            cfg,
            files,
            zones: ArcSwap::from_pointee(Vec::new()),
            metrics,
        });
        inner.load(true);
        super::file_poll::spawn_reload(&inner, inner.cfg.reload, inner.cfg.path.clone(), |inner| {
            inner.load(false)
        });
        Self { inner }
    }

    #[cfg(test)]
    /// Re-reads the zone file now (what the reload timer does).
    pub(crate) fn reload_now(&self) {
        self.inner.load(false);
    }
}

impl Plugin for File {
    fn name(&self) -> &'static str {
        "file"
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        let name = req.lower_name();
        let cfg_zones = &self.inner.cfg.zones;
        let Some(zone) = longest_zone(name, cfg_zones.iter().map(String::as_str)) else {
            return next.run(req);
        };
        let zones = self.inner.zones.load();
        match zones.iter().find(|(z, _)| z == zone) {
            Some((_, data)) => Reply::Ready(data.lookup(name, req.name(), req.record_type())),
            // The file could not be loaded at all.
            None => Reply::Ready(Response::servfail()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::corefile::MemoryFiles;
    use std::path::PathBuf;
    use std::time::Duration;

    /// CoreDNS's plugin/file test zone (example_org.go, trimmed), plus a wildcard, an empty
    /// non-terminal and a delegation with glue.
    const ZONE: &str = "$TTL    1M
$ORIGIN example.org.

@       IN  SOA     linode.atoom.net. miek.miek.nl. (
                    1282630057 ; Serial
                    4H         ; Refresh
                    1H         ; Retry
                    7D         ; Expire
                    4H )       ; Negative Cache TTL
        IN  NS      linode.atoom.net.
        IN  NS      ns-ext.nlnetlabs.nl.

        IN  MX      1  aspmx.l.google.com.
        IN  MX      5  alt1.aspmx.l.google.com.

a       IN  A       139.162.196.78
        IN  AAAA    2a01:7e00::f03c:91ff:fef1:6735
www     IN  CNAME   a
archive IN  CNAME   a
loop1   IN  CNAME   loop2
loop2   IN  CNAME   loop1
ext     IN  CNAME   www.example.net.
_sip._udp IN SRV    10 60 5060 a
*.wild  IN  A       10.0.0.9
x.y.ent IN  TXT     \"deep\"
child   IN  NS      ns1.child
ns1.child IN A      10.0.0.53
";

    fn zone() -> ZoneData {
        ZoneData::parse(ZONE, &Name::from_ascii("example.org.").unwrap()).unwrap()
    }

    fn q(z: &ZoneData, name: &str, t: RecordType) -> Response {
        let n = Name::from_ascii(name).unwrap();
        z.lookup(&lower(&n), &n, t)
    }

    fn strings(rs: &Records) -> Vec<String> {
        rs.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn lookup_table() {
        let z = zone();
        // Positive: answer, apex NS in authority.
        let r = q(&z, "a.example.org.", RecordType::A);
        assert!(r.authoritative);
        assert_eq!(
            strings(&r.answers),
            vec!["a.example.org. 60 IN A 139.162.196.78"]
        );
        assert_eq!(r.authority.len(), 2);
        // CNAME chased inside the zone.
        let r = q(&z, "www.example.org.", RecordType::AAAA);
        assert_eq!(
            strings(&r.answers),
            vec![
                "www.example.org. 60 IN CNAME a.example.org.",
                "a.example.org. 60 IN AAAA 2a01:7e00::f03c:91ff:fef1:6735"
            ]
        );
        // Asking for the CNAME itself.
        let r = q(&z, "www.example.org.", RecordType::CNAME);
        assert_eq!(r.answers.len(), 1);
        // A CNAME loop stops after 8 steps.
        let r = q(&z, "loop1.example.org.", RecordType::A);
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1 + MAX_CHAIN);
        // An out-of-zone target: the CNAME alone.
        assert_eq!(q(&z, "ext.example.org.", RecordType::A).answers.len(), 1);
        // MX at the apex; SRV with its in-zone target's addresses as additional records.
        assert_eq!(q(&z, "example.org.", RecordType::MX).answers.len(), 2);
        let r = q(&z, "_sip._udp.example.org.", RecordType::SRV);
        assert_eq!(r.additionals.len(), 2);
        // NODATA and NXDOMAIN carry the SOA.
        let r = q(&z, "a.example.org.", RecordType::MX);
        assert_eq!((r.rcode, r.answers.len()), (ResponseCode::NoError, 0));
        assert_eq!(r.authority[0].record_type(), RecordType::SOA);
        let r = q(&z, "b.example.org.", RecordType::A);
        assert_eq!(r.rcode, ResponseCode::NXDomain);
        assert_eq!(r.authority[0].record_type(), RecordType::SOA);
        assert!(r.authoritative);
        // Apex SOA and NS.
        assert_eq!(q(&z, "example.org.", RecordType::SOA).answers.len(), 1);
        assert_eq!(q(&z, "example.org.", RecordType::NS).answers.len(), 2);
        // Empty non-terminals exist: NODATA, not NXDOMAIN.
        for ent in ["ent.example.org.", "y.ent.example.org."] {
            let r = q(&z, ent, RecordType::A);
            assert_eq!(
                (r.rcode, r.answers.len()),
                (ResponseCode::NoError, 0),
                "{ent}"
            );
        }
        assert_eq!(
            q(&z, "x.y.ent.example.org.", RecordType::TXT).answers.len(),
            1
        );
        assert_eq!(
            q(&z, "z.y.ent.example.org.", RecordType::TXT).rcode,
            ResponseCode::NXDomain
        );
        // Case is kept from the question.
        let r = q(&z, "A.Example.ORG.", RecordType::A);
        assert_eq!(r.answers.len(), 1);
    }

    #[test]
    fn wildcards_per_rfc4592() {
        let z = zone();
        let r = q(&z, "host.wild.example.org.", RecordType::A);
        assert_eq!(
            strings(&r.answers),
            vec!["host.wild.example.org. 60 IN A 10.0.0.9"]
        );
        let r = q(&z, "a.b.wild.example.org.", RecordType::A);
        assert_eq!(
            strings(&r.answers),
            vec!["a.b.wild.example.org. 60 IN A 10.0.0.9"]
        );
        // NODATA from the wildcard.
        let r = q(&z, "host.wild.example.org.", RecordType::MX);
        assert_eq!((r.rcode, r.answers.len()), (ResponseCode::NoError, 0));
        // The wildcard's own parent does not match it.
        assert_eq!(q(&z, "wild.example.org.", RecordType::A).answers.len(), 0);
        assert_eq!(
            q(&z, "wild.example.org.", RecordType::A).rcode,
            ResponseCode::NoError
        );
    }

    /// CoreDNS's TestLookupDoubleWildcard, TestLookupApexWildcard and TestLookupMultiWildcard.
    #[test]
    fn coredns_wildcard_tables() {
        let origin = Name::from_ascii("example.org.").unwrap();
        let head = "$TTL 3600\nexample.org. IN SOA sns.dns.icann.org. noc.dns.icann.org. 2015082541 7200 3600 1209600 3600\nexample.org. IN NS b.iana-servers.net.\n";
        let example_org = format!(
            "{head}example.org. IN NS a.iana-servers.net.\nexample.org. IN A 127.0.0.1\nexample.org. IN A 127.0.0.2\n*.w.example.org. IN TXT \"Wildcard\"\na.b.c.w.example.org. IN TXT \"Not a wildcard\"\n*.c.example.org. IN TXT \"c Wildcard\"\n*.d.example.org. IN CNAME alias.example.org.\nalias.example.org. IN TXT \"Wildcard CNAME expansion\"\n"
        );
        let z = ZoneData::parse(&example_org, &origin).unwrap();
        let txt = |r: &Response| -> Vec<String> {
            r.answers
                .iter()
                .map(|a| match &a.data {
                    RData::TXT(t) => format!("{} TXT {t}", a.name),
                    RData::CNAME(c) => format!("{} CNAME {}", a.name, c.0),
                    other => format!("{other:?}"),
                })
                .collect()
        };
        let r = q(&z, "wild.w.example.org.", RecordType::TXT);
        assert_eq!(txt(&r), vec!["wild.w.example.org. TXT Wildcard"]);
        assert_eq!(r.authority.len(), 2);
        let r = q(&z, "wild.c.example.org.", RecordType::TXT);
        assert_eq!(txt(&r), vec!["wild.c.example.org. TXT c Wildcard"]);
        let r = q(&z, "wild.d.example.org.", RecordType::TXT);
        assert_eq!(
            txt(&r),
            vec![
                "wild.d.example.org. CNAME alias.example.org.",
                "alias.example.org. TXT Wildcard CNAME expansion"
            ]
        );
        let r = q(&z, "alias.example.org.", RecordType::TXT);
        assert_eq!(
            txt(&r),
            vec!["alias.example.org. TXT Wildcard CNAME expansion"]
        );

        let apex =
            format!("{head}*.example.org. IN A 127.0.0.53\nfoo.example.org. IN A 127.0.0.54\n");
        let z = ZoneData::parse(&apex, &origin).unwrap();
        assert_eq!(
            strings(&q(&z, "foo.example.org.", RecordType::A).answers),
            vec!["foo.example.org. 3600 IN A 127.0.0.54"]
        );
        assert_eq!(
            strings(&q(&z, "bar.example.org.", RecordType::A).answers),
            vec!["bar.example.org. 3600 IN A 127.0.0.53"]
        );
        let multi = format!("{apex}*.intern.example.org. IN A 127.0.1.52\n");
        let z = ZoneData::parse(&multi, &origin).unwrap();
        assert_eq!(
            strings(&q(&z, "bar.intern.example.org.", RecordType::A).answers),
            vec!["bar.intern.example.org. 3600 IN A 127.0.1.52"]
        );
        assert_eq!(
            strings(&q(&z, "bar.example.org.", RecordType::A).answers),
            vec!["bar.example.org. 3600 IN A 127.0.0.53"]
        );
    }

    #[test]
    fn delegation_with_glue() {
        let z = zone();
        for name in [
            "child.example.org.",
            "www.child.example.org.",
            "ns1.child.example.org.",
        ] {
            let r = q(&z, name, RecordType::A);
            assert!(!r.authoritative, "{name}");
            assert_eq!(r.answers.len(), 0, "{name}");
            assert_eq!(
                strings(&r.authority),
                vec!["child.example.org. 60 IN NS ns1.child.example.org."]
            );
            assert_eq!(
                strings(&r.additionals),
                vec!["ns1.child.example.org. 60 IN A 10.0.0.53"]
            );
        }
    }

    #[test]
    fn bad_zones() {
        let o = Name::from_ascii("example.org.").unwrap();
        let e = ZoneData::parse("a 60 IN A 10.0.0.1\n", &o).unwrap_err();
        assert!(e.contains("no SOA"), "{e}");
        let e = ZoneData::parse(
            "@ 60 IN SOA ns h 1 2 3 4 5\nwww.example.net. 60 IN A 10.0.0.1\n",
            &o,
        )
        .unwrap_err();
        assert!(e.contains("out of zone"), "{e}");
        let e =
            ZoneData::parse("@ 60 IN SOA ns h 1 2 3 4 5\nb 60 IN A 10.0.0.256\n", &o).unwrap_err();
        assert!(e.starts_with("line 2"), "{e}");
    }

    #[test]
    fn reload_needs_a_higher_serial_and_keeps_the_zone_on_errors() {
        let mut files = MemoryFiles::new();
        let v1 = "@ 60 IN SOA ns h 1 2 3 4 5\na 60 IN A 10.0.0.1\n";
        files.insert("/z/db.example", v1);
        let files = Arc::new(std::sync::Mutex::new(files));
        struct Shared(Arc<std::sync::Mutex<MemoryFiles>>);
        impl FileSource for Shared {
            fn read(&self, p: &std::path::Path) -> std::io::Result<String> {
                self.0.lock().unwrap().read(p)
            }
            fn glob(&self, p: &str) -> Result<Vec<PathBuf>, String> {
                self.0.lock().unwrap().glob(p)
            }
        }
        let m = PluginMetrics::default();
        let f = File::new(
            FileConfig {
                path: "/z/db.example".into(),
                zones: vec!["example.org.".into()],
                reload: Duration::ZERO,
            },
            Arc::new(Shared(files.clone())),
            Some(m.clone()),
        );
        let a = |f: &File| {
            let req = Request::new(Name::from_ascii("a.example.org.").unwrap(), RecordType::A);
            let chain = crate::dns::handler::Chain::new(vec![Arc::new(File {
                inner: f.inner.clone(),
            })]);
            match chain.handle(&req) {
                Reply::Ready(r) => strings(&r.answers),
                Reply::Pending(_) => panic!("file answers at once"),
            }
        };
        assert_eq!(a(&f), vec!["a.example.org. 60 IN A 10.0.0.1"]);
        assert_eq!(
            m.file_entries
                .get_or_create(&vec![("dns_name", "example.org.".into())])
                .get(),
            2
        );
        // Same serial: not reloaded.
        files.lock().unwrap().insert(
            "/z/db.example",
            "@ 60 IN SOA ns h 1 2 3 4 5\na 60 IN A 10.0.0.2\n",
        );
        f.reload_now();
        assert_eq!(a(&f), vec!["a.example.org. 60 IN A 10.0.0.1"]);
        // Broken edit: the old zone stays.
        files.lock().unwrap().insert(
            "/z/db.example",
            "@ 60 IN SOA ns h 2 2 3 4 5\na 60 IN A 10.0.0.\n",
        );
        f.reload_now();
        assert_eq!(a(&f), vec!["a.example.org. 60 IN A 10.0.0.1"]);
        // Higher serial: reloaded.
        files.lock().unwrap().insert(
            "/z/db.example",
            "@ 60 IN SOA ns h 2 2 3 4 5\na 60 IN A 10.0.0.2\n",
        );
        f.reload_now();
        assert_eq!(a(&f), vec!["a.example.org. 60 IN A 10.0.0.2"]);
    }
}
