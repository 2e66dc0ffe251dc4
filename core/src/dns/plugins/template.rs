//! `template`: answers built from templates (CoreDNS's template plugin).
//!
//! Templates are tried in the order written. One whose zones, class and type fit the query
//! (a query of class or type ANY fits every template) answers when one of its regexes matches
//! the name: AA set, its `rcode`, and the rendered `answer`/`additional`/`authority` records
//! (`rcode SERVFAIL` answers SERVFAIL without records). When no regex matches, the query goes
//! on to the next template if `fallthrough` covers the name, else it is answered SERVFAIL.
//! Names outside every template's zones, and queries no template fits, go on to the next
//! plugin. A template that fails to render, or renders no valid record, answers SERVFAIL and
//! is counted (`coredns_template_template_failures_total`, `coredns_template_rr_failures_total`).

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, Record, RecordType};

use super::metrics::PluginMetrics;
use crate::dns::corefile::TemplateConfig;
use crate::dns::corefile::directives::template::{Expr, Field, RrTemplate, Segment, render_static};
use crate::dns::corefile::names::longest_zone;
use crate::dns::handler::{Next, Plugin, Records, Reply, Request, Response};
use crate::dns::zonetext::parse_rr;

/// A template with its constant records parsed once.
struct Compiled {
    cfg: TemplateConfig,
    /// Per section: for each template, its record when the template has no actions.
    fixed: [Vec<Option<Record>>; 3],
}

/// The template plugin.
pub(crate) struct Template {
    templates: Vec<Compiled>,
    metrics: Option<PluginMetrics>,
}

/// What a template's actions can refer to.
struct Data<'a> {
    name: &'a str,
    zone: &'a str,
    class: String,
    qtype: String,
    regex: &'a str,
    remote: IpAddr,
    matches: Vec<&'a str>,
    names: Vec<Option<&'a str>>,
}

#[derive(Debug)]
enum Value<'a> {
    Str(std::borrow::Cow<'a, str>),
    Int(i64),
}

impl Value<'_> {
    fn text(&self) -> String {
        match self {
            Value::Str(s) => s.to_string(),
            Value::Int(n) => n.to_string(),
        }
    }
}

impl<'a> Data<'a> {
    fn group(&self, key: &str) -> Option<&'a str> {
        if let Some(i) = self.names.iter().position(|n| *n == Some(key)) {
            return self.matches.get(i).copied();
        }
        key.parse::<usize>()
            .ok()
            .and_then(|i| self.matches.get(i).copied())
    }

    fn eval(&self, e: &Expr) -> Result<Value<'a>, String> {
        use std::borrow::Cow;
        Ok(match e {
            Expr::Str(s) => Value::Str(Cow::Owned(s.clone())),
            Expr::Int(n) => Value::Int(*n),
            Expr::Field(f) => Value::Str(match f {
                Field::Name => Cow::Borrowed(self.name),
                Field::Zone => Cow::Borrowed(self.zone),
                Field::Class => Cow::Owned(self.class.clone()),
                Field::Type => Cow::Owned(self.qtype.clone()),
                Field::Regex => Cow::Borrowed(self.regex),
                Field::Remote => Cow::Owned(self.remote.to_string()),
                // Go prints "<no value>" for a missing map key.
                Field::GroupNamed(k) => Cow::Borrowed(self.group(k).unwrap_or("<no value>")),
                Field::Match | Field::Group => {
                    return Err("cannot print a collection".to_string());
                }
            }),
            Expr::Index(coll, key) => {
                let key = self.eval(key)?;
                match (&**coll, key) {
                    (Expr::Field(Field::Match), Value::Int(i)) => {
                        let v = usize::try_from(i)
                            .ok()
                            .and_then(|i| self.matches.get(i).copied())
                            .ok_or_else(|| {
                                format!("error calling index: index out of range: {i}")
                            })?;
                        Value::Str(Cow::Borrowed(v))
                    }
                    (Expr::Field(Field::Group), Value::Str(k)) => {
                        Value::Str(Cow::Borrowed(self.group(&k).unwrap_or("<no value>")))
                    }
                    (_, k) => return Err(format!("error calling index: bad key {k:?}")),
                }
            }
            Expr::ParseInt(v, base, bits) => {
                let text = self.eval(v)?.text();
                let base = match self.eval(base)? {
                    Value::Int(b) if b == 0 || (2..=36).contains(&b) => b as u32,
                    other => return Err(format!("parseInt: bad base {other:?}")),
                };
                let bits = match self.eval(bits)? {
                    Value::Int(b) if (0..=64).contains(&b) => b as u32,
                    other => return Err(format!("parseInt: bad bit size {other:?}")),
                };
                let (digits, base) = if base == 0 {
                    if let Some(h) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
                        (h, 16)
                    } else if let Some(b) = text.strip_prefix("0b") {
                        (b, 2)
                    } else if let Some(o) = text.strip_prefix("0o") {
                        (o, 8)
                    } else if text.len() > 1 && text.starts_with('0') {
                        (&text[1..], 8)
                    } else {
                        (text.as_str(), 10)
                    }
                } else {
                    (text.as_str(), base)
                };
                let n = u64::from_str_radix(digits, base)
                    .map_err(|e| format!("parseInt {text:?}: {e}"))?;
                let bits = if bits == 0 { 64 } else { bits };
                if bits < 64 && n >> bits != 0 {
                    return Err(format!("parseInt {text:?}: value out of range"));
                }
                Value::Int(i64::try_from(n).map_err(|_| format!("parseInt {text:?}: too large"))?)
            }
        })
    }

    fn render(&self, t: &RrTemplate) -> Result<String, String> {
        let mut out = String::new();
        for s in &t.segments {
            match s {
                Segment::Text(x) => out.push_str(x),
                Segment::Action(e) => out.push_str(&self.eval(e)?.text()),
            }
        }
        Ok(out)
    }
}

const SECTIONS: [&str; 3] = ["answer", "additional", "authority"];

fn class_name(c: DNSClass) -> String {
    match c {
        DNSClass::IN => "IN".to_string(),
        DNSClass::CH => "CH".to_string(),
        DNSClass::HS => "HS".to_string(),
        DNSClass::NONE => "NONE".to_string(),
        DNSClass::ANY => "ANY".to_string(),
        other => format!("CLASS{}", u16::from(other)),
    }
}

impl Template {
    /// A template plugin over `templates` (in order).
    pub fn new(templates: Vec<TemplateConfig>, metrics: Option<PluginMetrics>) -> Self {
        let templates = templates
            .into_iter()
            .map(|cfg| {
                let fix = |ts: &[RrTemplate]| {
                    ts.iter()
                        .map(|t| {
                            t.is_static()
                                .then(|| parse_rr(&render_static(t)).ok())
                                .flatten()
                        })
                        .collect()
                };
                let fixed = [fix(&cfg.answer), fix(&cfg.additional), fix(&cfg.authority)];
                Compiled { cfg, fixed }
            })
            .collect();
        Self { templates, metrics }
    }

    fn answer(&self, t: &Compiled, data: &Data<'_>) -> Response {
        if let Some(m) = &self.metrics {
            m.template_matches
                .get_or_create(&vec![
                    ("zone", data.zone.to_string()),
                    ("class", data.class.clone()),
                    ("type", data.qtype.clone()),
                ])
                .inc();
        }
        if t.cfg.rcode == ResponseCode::ServFail {
            return Response::servfail().attribute("");
        }
        let mut sections: [Vec<Record>; 3] = Default::default();
        let lists = [&t.cfg.answer, &t.cfg.additional, &t.cfg.authority];
        for (i, list) in lists.iter().enumerate() {
            for (j, tpl) in list.iter().enumerate() {
                if let Some(Some(rec)) = t.fixed[i].get(j) {
                    sections[i].push(rec.clone());
                    continue;
                }
                let fail = |e: &str| {
                    tracing::warn!(section = SECTIONS[i], template = %tpl.source, "plugin/template: {e}");
                };
                let text = match data.render(tpl) {
                    Ok(t) => t,
                    Err(e) => {
                        if let Some(m) = &self.metrics {
                            m.template_failures
                                .get_or_create(&self.failure_labels(data, i, tpl))
                                .inc();
                        }
                        fail(&e);
                        return Response::servfail().attribute("");
                    }
                };
                match parse_rr(&text) {
                    Ok(r) => sections[i].push(r),
                    Err(e) => {
                        if let Some(m) = &self.metrics {
                            m.template_rr_failures
                                .get_or_create(&self.failure_labels(data, i, tpl))
                                .inc();
                        }
                        fail(&e);
                        return Response::servfail().attribute("");
                    }
                }
            }
        }
        let [answers, additionals, authority] = sections;
        let records = |v: Vec<Record>| -> Records { v.into() };
        Response::with_records(
            t.cfg.rcode,
            records(answers),
            records(authority),
            records(additionals),
        )
        .authoritative()
    }

    fn failure_labels(
        &self,
        data: &Data<'_>,
        section: usize,
        tpl: &RrTemplate,
    ) -> super::metrics::Labels {
        vec![
            ("zone", data.zone.to_string()),
            ("class", data.class.clone()),
            ("type", data.qtype.clone()),
            ("section", SECTIONS[section].to_string()),
            ("template", tpl.source.clone()),
        ]
    }
}

impl Plugin for Template {
    fn name(&self) -> &'static str {
        "template"
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        let name = req.lower_name();
        let (qclass, qtype) = (req.class(), req.record_type());
        for t in &self.templates {
            let Some(zone) = longest_zone(name, t.cfg.zones.iter().map(String::as_str)) else {
                continue;
            };
            if t.cfg.class != DNSClass::ANY && qclass != DNSClass::ANY && qclass != t.cfg.class {
                continue;
            }
            if t.cfg.qtype != RecordType::ANY && qtype != RecordType::ANY && qtype != t.cfg.qtype {
                continue;
            }
            for re in &t.cfg.regexes {
                let Some(caps) = re.0.captures(name) else {
                    continue;
                };
                let data = Data {
                    name,
                    zone,
                    class: class_name(if qclass == DNSClass::ANY {
                        t.cfg.class
                    } else {
                        qclass
                    }),
                    qtype: if qtype == RecordType::ANY {
                        t.cfg.qtype
                    } else {
                        qtype
                    }
                    .to_string(),
                    regex: re.0.as_str(),
                    remote: req.client.ip(),
                    matches: caps.iter().map(|m| m.map_or("", |m| m.as_str())).collect(),
                    names: re.0.capture_names().collect(),
                };
                return Reply::Ready(self.answer(t, &data));
            }
            if t.cfg.fallthrough.as_ref().is_some_and(|f| f.applies(name)) {
                continue;
            }
            return Reply::Ready(Response::servfail().attribute(""));
        }
        next.run(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::corefile::directives::template::compile;
    use crate::dns::corefile::{LoadOptions, MemoryFiles, load_from};
    use crate::dns::handler::{Chain, Transport};
    use hickory_proto::op::Query;
    use hickory_proto::rr::{Name, RData};
    use std::sync::Arc;

    /// The plugin of the first block of `corefile`, then a stand-in for the next plugin that
    /// answers NXDOMAIN (so "fell through" is visible).
    fn chain(corefile: &str) -> (Chain, PluginMetrics) {
        let cf = load_from(
            "Corefile",
            corefile,
            &MemoryFiles::new(),
            &|_| None,
            &LoadOptions::default(),
        )
        .unwrap();
        let m = PluginMetrics::default();
        struct Next;
        impl Plugin for Next {
            fn name(&self) -> &'static str {
                "next"
            }
            fn handle(&self, _: &Request, _: crate::dns::handler::Next) -> Reply {
                Reply::Ready(Response::new(ResponseCode::NXDomain))
            }
        }
        let t = Template::new(cf.servers[0].plugins.template.clone(), Some(m.clone()));
        (Chain::new(vec![Arc::new(t), Arc::new(Next)]), m)
    }

    fn ask(c: &Chain, name: &str, class: DNSClass, qtype: RecordType) -> Response {
        let mut q = Query::query(Name::from_ascii(name).unwrap(), qtype);
        q.set_query_class(class);
        let req = Request::from_query(1, q, "192.0.2.7:5300".parse().unwrap(), Transport::Udp);
        match c.handle(&req) {
            Reply::Ready(r) => r,
            Reply::Pending(_) => panic!("template answers at once"),
        }
    }

    const IN: DNSClass = DNSClass::IN;

    /// CoreDNS's TestHandler table, as Corefile text.
    #[test]
    fn coredns_handler_table() {
        let ip_a = r#". {
 template ANY ANY {
  match "(^|[.])ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$"
  answer "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
  fallthrough
 }
}"#;
        let (c, m) = chain(ip_a);
        let r = ask(&c, "ip-10-95-12-8.example.", IN, RecordType::A);
        assert!(r.authoritative);
        assert_eq!(r.plugin, Some("template"));
        assert_eq!(
            r.answers[0].to_string(),
            "ip-10-95-12-8.example. 60 IN A 10.95.12.8"
        );
        assert_eq!(
            m.template_matches
                .get_or_create(&vec![
                    ("zone", ".".to_string()),
                    ("class", "IN".to_string()),
                    ("type", "A".to_string())
                ])
                .get(),
            1
        );
        // Name mismatch with fallthrough: the next plugin answers.
        let r = ask(&c, "test.invalid.", IN, RecordType::A);
        assert_eq!((r.rcode, r.plugin), (ResponseCode::NXDomain, Some("next")));

        let ans = r#". {
 template ANY ANY {
  match "(^|[.])ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$"
  answer "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
  additional "ns0.example. IN A 203.0.113.8"
  authority "example. IN NS ns0.example.com."
  fallthrough
 }
}"#;
        let (c, _) = chain(ans);
        let r = ask(&c, "ip-10-95-12-8.example.", IN, RecordType::A);
        assert_eq!(
            (r.answers.len(), r.additionals.len(), r.authority.len()),
            (1, 1, 1)
        );
        assert_eq!(r.authority[0].record_type(), RecordType::NS);
        assert_eq!(
            r.additionals[0].to_string(),
            "ns0.example. 3600 IN A 203.0.113.8"
        );

        let mx = r#". {
 template ANY ANY {
  match "(^|[.])ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$"
  answer "{{ .Name }} 60 MX 10 {{ .Name }}"
  additional "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
  fallthrough
 }
}"#;
        let (c, _) = chain(mx);
        let r = ask(&c, "ip-10-95-12-8.example.", IN, RecordType::MX);
        assert_eq!(r.answers[0].record_type(), RecordType::MX);
        assert_eq!(r.additionals[0].record_type(), RecordType::A);

        let invalid = r#". {
 template ANY ANY {
  match "[.]invalid[.]$"
  rcode NXDOMAIN
  answer "invalid. 60 {{ .Class }} SOA a.invalid. b.invalid. (1 60 60 60 60)"
  fallthrough
 }
}"#;
        let (c, _) = chain(invalid);
        let r = ask(&c, "test.invalid.", IN, RecordType::MX);
        assert_eq!(r.rcode, ResponseCode::NXDomain);
        assert_eq!(r.answers[0].record_type(), RecordType::SOA);

        let servfail = ". {\n template ANY ANY {\n  rcode SERVFAIL\n  fallthrough\n }\n}";
        let (c, _) = chain(servfail);
        let r = ask(&c, "test.invalid.", IN, RecordType::A);
        assert_eq!(
            (r.rcode, r.answers.len(), r.plugin),
            (ResponseCode::ServFail, 0, Some(""))
        );

        // A template that fails when executed (index out of range) and one that renders no RR.
        let broken = ". {\n template ANY ANY {\n  match \"[.]example[.]$\"\n  answer \"{{ .Name }} 60 IN TXT \\\"{{ index .Match 2 }}\\\"\"\n  fallthrough\n }\n}";
        let (c, m) = chain(broken);
        let r = ask(&c, "test.example.", IN, RecordType::ANY);
        assert_eq!(r.rcode, ResponseCode::ServFail);
        assert_eq!(
            m.template_failures
                .get_or_create(&vec![
                    ("zone", ".".to_string()),
                    ("class", "IN".to_string()),
                    ("type", "ANY".to_string()),
                    ("section", "answer".to_string()),
                    (
                        "template",
                        "{{ .Name }} 60 IN TXT \"{{ index .Match 2 }}\"".to_string()
                    ),
                ])
                .get(),
            1
        );
        for section in ["answer", "additional", "authority"] {
            let non_rr = format!(
                ". {{\n template ANY ANY {{\n  match \"[.]example[.]$\"\n  {section} \"{{{{ .Name }}}}\"\n  fallthrough\n }}\n}}"
            );
            let (c, m) = chain(&non_rr);
            let r = ask(&c, "test.example.", IN, RecordType::ANY);
            assert_eq!(r.rcode, ResponseCode::ServFail, "{section}");
            assert_eq!(
                m.template_rr_failures
                    .get_or_create(&vec![
                        ("zone", ".".to_string()),
                        ("class", "IN".to_string()),
                        ("type", "ANY".to_string()),
                        ("section", section.to_string()),
                        ("template", "{{ .Name }}".to_string()),
                    ])
                    .get(),
                1
            );
        }

        let cname = ". {\n template ANY ANY {\n  match \"example[.]net[.]\"\n  answer \"example.net 60 IN CNAME target.example.com\"\n  fallthrough\n }\n}";
        let (c, _) = chain(cname);
        let r = ask(&c, "example.net.", IN, RecordType::A);
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(
            r.answers[0].to_string(),
            "example.net. 60 IN CNAME target.example.com."
        );
    }

    /// CoreDNS's TestMultiSection, for the server block `test.:8053`.
    #[test]
    fn coredns_multi_section() {
        let cf = r#"test.:8053 {
  template IN A {
   rcode REFUSED
  }
  template IN TXT {
   match "$^"
   rcode SERVFAIL
   fallthrough
  }
  template CH TXT coredns.invalid {
   answer "{{ .Name }} 60 CH TXT \"test\""
  }
  template IN A example {
   match ^ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$
   answer "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
   fallthrough
  }
  template IN MX example {
   match ^ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$
   answer "{{ .Name }} 60 IN MX 10 {{ .Name }}"
   additional "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
  }
  template IN ANY . {
   match ^nowana[.](.*)$
   answer "{{ .Name }} 60 IN A 1.2.3.4"
   fallthrough
  }
  template IN ANY . {
   match ^(www[.])?cnamewitha[.](.*)$
   answer "{{ .Name }} 60 IN CNAME nowana.com."
   fallthrough
  }
}"#;
        let (c, _) = chain(cf);
        assert_eq!(
            ask(&c, "some.test.", IN, RecordType::A).rcode,
            ResponseCode::Refused
        );
        // IN TXT for test. falls through to the next plugin.
        let r = ask(&c, "some.test.", IN, RecordType::TXT);
        assert_eq!(r.plugin, Some("next"));
        let r = ask(&c, "coredns.invalid.", DNSClass::CH, RecordType::TXT);
        assert_eq!(r.rcode, ResponseCode::NoError);
        match &r.answers[0].data {
            RData::TXT(t) => assert_eq!(t.to_string(), "test"),
            other => panic!("TXT expected, got {other:?}"),
        }
        let r = ask(&c, "ip-10-11-12-13.example.", IN, RecordType::A);
        assert_eq!(
            r.answers[0].to_string(),
            "ip-10-11-12-13.example. 60 IN A 10.11.12.13"
        );
        let r = ask(&c, "ip-10-11-12-13.example.", IN, RecordType::MX);
        assert_eq!(r.answers[0].record_type(), RecordType::MX);
        // something.example. A falls through (next plugin), MX does not (SERVFAIL).
        assert_eq!(
            ask(&c, "something.example.", IN, RecordType::A).plugin,
            Some("next")
        );
        assert_eq!(
            ask(&c, "something.example.", IN, RecordType::MX).rcode,
            ResponseCode::ServFail
        );
        let r = ask(&c, "nowana.com.", IN, RecordType::A);
        assert_eq!(r.answers[0].to_string(), "nowana.com. 60 IN A 1.2.3.4");
        let r = ask(&c, "cnamewitha.com.", IN, RecordType::A);
        assert_eq!(r.answers[0].record_type(), RecordType::CNAME);
    }

    #[test]
    fn popular_uses() {
        // Block AAAA: NOERROR, empty answer, for every AAAA query; A goes on.
        let (c, _) = chain(". {\n template ANY AAAA {\n  rcode NOERROR\n }\n}");
        let r = ask(&c, "www.example.com.", IN, RecordType::AAAA);
        assert_eq!(
            (r.rcode, r.answers.len(), r.authoritative),
            (ResponseCode::NoError, 0, true)
        );
        assert_eq!(
            ask(&c, "www.example.com.", IN, RecordType::A).plugin,
            Some("next")
        );
        // A fixed A for a zone (and NXDOMAIN for the rest of the world).
        let (c, _) = chain(
            ". {\n template IN A corp.example {\n  answer \"{{ .Name }} 60 IN A 192.0.2.10\"\n }\n}",
        );
        let r = ask(&c, "host.corp.example.", IN, RecordType::A);
        assert_eq!(
            r.answers[0].to_string(),
            "host.corp.example. 60 IN A 192.0.2.10"
        );
        assert_eq!(
            ask(&c, "host.other.example.", IN, RecordType::A).plugin,
            Some("next")
        );
        // parseInt and .Remote.
        let (c, _) = chain(
            ". {\n template IN A example {\n  match \"^ip0a(?P<b>[a-f0-9]{2})(?P<c>[a-f0-9]{2})(?P<d>[a-f0-9]{2})[.]example[.]$\"\n  answer \"{{ .Name }} 60 IN A 10.{{ parseInt .Group.b 16 8 }}.{{ parseInt .Group.c 16 8 }}.{{ parseInt .Group.d 16 8 }}\"\n  additional \"{{ .Name }} 60 IN TXT {{ .Remote }}\"\n  fallthrough\n }\n}",
        );
        let r = ask(&c, "ip0a7b7b7b.example.", IN, RecordType::A);
        assert_eq!(
            r.answers[0].to_string(),
            "ip0a7b7b7b.example. 60 IN A 10.123.123.123"
        );
        match &r.additionals[0].data {
            RData::TXT(t) => assert_eq!(t.to_string(), "192.0.2.7"),
            other => panic!("TXT expected, got {other:?}"),
        }
    }

    /// Random templates built from the language's pieces: each one compiles or is refused
    /// with a message, and one that compiles answers NOERROR or SERVFAIL, never panics.
    #[test]
    fn random_templates_never_panic() {
        const PIECES: &[&str] = &[
            "{{",
            "}}",
            "{{-",
            "-}}",
            " ",
            ".Name",
            ".Zone",
            ".Class",
            ".Type",
            ".Remote",
            ".Regex",
            ".Group",
            ".Group.a",
            ".Match",
            "index",
            "parseInt",
            "(",
            ")",
            "\"a\"",
            "0",
            "1",
            "16",
            "-1",
            "99999999999999999999",
            "8",
            "`",
            "\\",
            "60",
            "IN",
            "A",
            "TXT",
            "CNAME",
            "SOA",
            "10.0.0.",
            "x.",
            "$",
            "|",
            "\"",
            ";",
            "(1 2 3 4 5)",
            "@",
        ];
        let mut rng = fastrand::Rng::with_seed(13);
        let mut compiled = 0;
        let re = crate::dns::corefile::Pattern(regex::Regex::new("^(?P<a>[^.]*)(.*)$").unwrap());
        for _ in 0..3000 {
            let n = rng.usize(1..14);
            let text: String = (0..n).map(|_| PIECES[rng.usize(..PIECES.len())]).collect();
            let tpl = match compile(&text) {
                Ok(t) => t,
                Err(e) => {
                    assert!(!e.is_empty(), "{text:?}");
                    continue;
                }
            };
            compiled += 1;
            let cfg = TemplateConfig {
                class: DNSClass::ANY,
                qtype: RecordType::ANY,
                zones: vec![".".into()],
                regexes: vec![re.clone()],
                answer: vec![tpl],
                additional: Vec::new(),
                authority: Vec::new(),
                rcode: ResponseCode::NoError,
                fallthrough: None,
            };
            let c = Chain::new(vec![Arc::new(Template::new(vec![cfg], None))]);
            let r = ask(&c, "ab.example.", IN, RecordType::A);
            assert!(
                matches!(r.rcode, ResponseCode::NoError | ResponseCode::ServFail),
                "{text:?}: {r:?}"
            );
        }
        assert!(compiled > 100, "only {compiled} random templates compiled");
    }

    #[test]
    fn bad_templates_name_file_and_line() {
        for (body, line) in [
            ("template IN A {\n  match \"(unclosed\"\n }", 3),
            ("template IN A {\n  answer \"{{ .Name }\"\n }", 3),
            ("template IN A {\n  answer \"{{ .Message }}\"\n }", 3),
            ("template IN A {\n  answer \"not a record\"\n }", 3),
            ("template IN A {\n  rcode BOGUS\n }", 3),
            ("template IN A {\n  ederror 21\n }", 3),
            ("template IN A {\n  bogus\n }", 3),
            ("template XX A", 2),
            ("template IN XX", 2),
            ("template IN", 2),
        ] {
            let text = format!(". {{\n {body}\n}}\n");
            let e = load_from(
                "Corefile",
                &text,
                &MemoryFiles::new(),
                &|_| None,
                &LoadOptions::default(),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(&format!("Corefile:{line}")), "{body:?}: {e}");
        }
    }
}
