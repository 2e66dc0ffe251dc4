//! The `rewrite` plugin: rewrites the question (name, type, class, EDNS0 local options) before
//! the rest of the chain sees it, and the response on its way back (owner names, names inside
//! records, TTLs), as CoreDNS's *rewrite* does.
//!
//! Rules run in the order written; a rule that applies ends processing unless it is marked
//! `continue`. The client always sees its own question (the server echoes the original one).
//! A rewrite that yields an invalid name answers SERVFAIL. Each rule applies at most once per
//! query, so rules cannot loop.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Edns, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{CNAME, MX, NS, PTR, SRV};
use hickory_proto::rr::{Name, RData, Record};

use crate::dns::corefile::{
    AnswerRewrite, EdnsAction, EdnsData, NameMatch, Pattern, RewriteAction, RewriteRule,
};
use crate::dns::handler::{Next, Plugin, Records, Reply, Request, Response};

/// The `rewrite` plugin of one server block (all its `rewrite` directives).
pub(crate) struct Rewrite {
    rules: Arc<[RewriteRule]>,
}

impl Rewrite {
    /// A plugin running `rules` in order.
    pub fn new(rules: Vec<RewriteRule>) -> Self {
        Self {
            rules: rules.into(),
        }
    }
}

/// A change to make to the response.
#[derive(Debug, Clone)]
enum Post {
    /// Owner names equal to `to` become the question name as asked.
    Exact { to: String, original: Name },
    /// Owner names starting with `to` get `from` back.
    Prefix { from: String, to: String },
    /// Owner names ending with `to` get `from` back.
    Suffix { from: String, to: String },
    /// `to` becomes `from` in owner names.
    Substring { from: String, to: String },
    /// Owner names matching `pattern` become `to`.
    OwnerRegex { pattern: Pattern, to: String },
    /// Names inside records matching `pattern` become `to`.
    ValueRegex { pattern: Pattern, to: String },
    /// Answer TTLs are clamped.
    Ttl { min: u32, max: u32 },
}

/// Whether a rule applied.
enum Outcome {
    /// The rule does not match.
    Ignored,
    /// The rule applied (with a new request when it changed the question).
    Applied(Option<Request>),
    /// The rewritten request is not valid.
    Invalid,
}

/// Where `matcher` matches `name` (lower case, fully qualified), the rewritten name.
fn rewrite_name(matcher: &NameMatch, name: &str) -> Option<String> {
    match matcher {
        NameMatch::Exact { from, to } => (name == from).then(|| to.clone()),
        NameMatch::Prefix { from, to } => {
            name.strip_prefix(from.as_str()).map(|r| format!("{to}{r}"))
        }
        NameMatch::Suffix { from, to } => {
            name.strip_suffix(from.as_str()).map(|r| format!("{r}{to}"))
        }
        NameMatch::Substring { from, to } => name
            .contains(from.as_str())
            .then(|| name.replace(from.as_str(), to)),
        NameMatch::Regex { pattern, to } => regex_replace(pattern, to, name),
    }
}

/// `to` with `{N}` replaced by group N of `pattern`'s match in `text`.
fn regex_replace(pattern: &Pattern, to: &str, text: &str) -> Option<String> {
    let caps = pattern.0.captures(text)?;
    let mut out = to.to_string();
    // Highest group first, so `{1}` does not eat the start of `{10}`.
    for i in (0..caps.len()).rev() {
        let key = format!("{{{i}}}");
        if out.contains(&key) {
            out = out.replace(&key, caps.get(i).map_or("", |m| m.as_str()));
        }
    }
    Some(out)
}

/// Parses a rewritten name; `None` when it is not a valid domain name.
fn parse_name(s: &str) -> Option<Name> {
    let mut s = s.to_string();
    if !s.ends_with('.') {
        s.push('.');
    }
    if s.is_empty() || s.starts_with('.') && s != "." || s.contains("..") {
        return None;
    }
    Name::from_ascii(&s).ok()
}

/// A copy of `req` with `query` changed (everything else kept).
fn with_query(req: &Request, query: hickory_proto::op::Query) -> Request {
    let mut out = Request::from_query(req.id, query, req.client, req.transport);
    out.hops = req.hops;
    out.recursion_desired = req.recursion_desired;
    out.checking_disabled = req.checking_disabled;
    out.edns = req.edns.clone();
    out
}

fn edns_data(data: &EdnsData, req: &Request) -> Vec<u8> {
    match data {
        EdnsData::Bytes(b) => b.clone(),
        EdnsData::Qname => req.name().to_ascii().into_bytes(),
        EdnsData::Qtype => u16::from(req.record_type()).to_be_bytes().to_vec(),
        EdnsData::ClientIp => match req.client.ip() {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        },
        EdnsData::ClientPort => req.client.port().to_be_bytes().to_vec(),
        EdnsData::Protocol => req.transport.as_str().as_bytes().to_vec(),
    }
}

fn apply(rule: &RewriteRule, req: &Request, post: &mut Vec<Post>) -> Outcome {
    match &rule.action {
        RewriteAction::Name { matcher, answers } => {
            let Some(new) = rewrite_name(matcher, req.lower_name()) else {
                return Outcome::Ignored;
            };
            let Some(name) = parse_name(&new) else {
                return Outcome::Invalid;
            };
            // An exact rule always turns its answer owner back (as CoreDNS does).
            if let NameMatch::Exact { to, .. } = matcher {
                post.push(Post::Exact {
                    to: to.clone(),
                    original: req.name().clone(),
                });
            }
            for a in answers {
                match a {
                    AnswerRewrite::Auto => match matcher {
                        NameMatch::Prefix { from, to } => post.push(Post::Prefix {
                            from: from.clone(),
                            to: to.clone(),
                        }),
                        NameMatch::Suffix { from, to } => post.push(Post::Suffix {
                            from: from.clone(),
                            to: to.clone(),
                        }),
                        NameMatch::Substring { from, to } => post.push(Post::Substring {
                            from: from.clone(),
                            to: to.clone(),
                        }),
                        _ => {}
                    },
                    AnswerRewrite::Name { pattern, to } => post.push(Post::OwnerRegex {
                        pattern: pattern.clone(),
                        to: to.clone(),
                    }),
                    AnswerRewrite::Value { pattern, to } => post.push(Post::ValueRegex {
                        pattern: pattern.clone(),
                        to: to.clone(),
                    }),
                }
            }
            let mut q = req.query.clone();
            q.set_name(name);
            Outcome::Applied(Some(with_query(req, q)))
        }
        RewriteAction::Type { from, to } => {
            if req.record_type() != *from {
                return Outcome::Ignored;
            }
            let mut q = req.query.clone();
            q.set_query_type(*to);
            Outcome::Applied(Some(with_query(req, q)))
        }
        RewriteAction::Class { from, to } => {
            if req.class() != *from {
                return Outcome::Ignored;
            }
            let mut q = req.query.clone();
            q.set_query_class(*to);
            Outcome::Applied(Some(with_query(req, q)))
        }
        RewriteAction::Ttl { matcher, min, max } => {
            if rewrite_name(matcher, req.lower_name()).is_none() {
                return Outcome::Ignored;
            }
            post.push(Post::Ttl {
                min: *min,
                max: *max,
            });
            Outcome::Applied(None)
        }
        RewriteAction::Edns0Local { action, code, data } => {
            let mut out = with_query(req, req.query.clone());
            let edns = out.edns.get_or_insert_with(|| {
                let mut e = Edns::new();
                e.set_max_payload(4096);
                e
            });
            let ecode = EdnsCode::from(*code);
            let exists = edns.option(ecode).is_some();
            let write = match action {
                EdnsAction::Set => true,
                EdnsAction::Replace => exists,
                EdnsAction::Append => !exists,
            };
            if !write {
                return Outcome::Ignored;
            }
            let opts = edns.options_mut();
            opts.remove(ecode);
            opts.insert(EdnsOption::Unknown(*code, edns_data(data, req)));
            Outcome::Applied(Some(out))
        }
    }
}

/// The owner name `name` after the owner rewrites in `post`, if any applies.
fn rewrite_owner(post: &[Post], name: &Name) -> Option<Name> {
    let lower = crate::dns::zone::lower_fqdn(name);
    let mut cur = lower.clone();
    let mut exact: Option<Name> = None;
    for p in post {
        match p {
            Post::Exact { to, original } if *to == cur => exact = Some(original.clone()),
            Post::Prefix { from, to } => {
                if let Some(r) = cur.strip_prefix(to.as_str()) {
                    cur = format!("{from}{r}");
                }
            }
            Post::Suffix { from, to } => {
                if let Some(r) = cur.strip_suffix(to.as_str()) {
                    cur = format!("{r}{from}");
                }
            }
            Post::Substring { from, to } if cur.contains(to.as_str()) => {
                cur = cur.replace(to.as_str(), from);
            }
            Post::OwnerRegex { pattern, to } => {
                if let Some(n) = regex_replace(pattern, to, &cur) {
                    cur = n;
                }
            }
            _ => {}
        }
    }
    if exact.is_some() {
        return exact;
    }
    if cur == lower {
        return None;
    }
    parse_name(&cur)
}

/// A name inside record data after the value rewrites in `post`.
fn rewrite_value(post: &[Post], name: &Name) -> Option<Name> {
    let lower = crate::dns::zone::lower_fqdn(name);
    let mut cur = lower.clone();
    for p in post {
        if let Post::ValueRegex { pattern, to } = p
            && let Some(n) = regex_replace(pattern, to, &cur)
        {
            cur = n;
        }
    }
    (cur != lower).then(|| parse_name(&cur)).flatten()
}

fn rewrite_section(post: &[Post], records: &Records, ttl: Option<(u32, u32)>) -> Records {
    let values = post.iter().any(|p| matches!(p, Post::ValueRegex { .. }));
    let mut changed = false;
    let out: Vec<Record> = records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if let Some(n) = rewrite_owner(post, &r.name) {
                r.name = n;
                changed = true;
            }
            if values {
                let data = match &r.data {
                    RData::CNAME(c) => rewrite_value(post, &c.0).map(|n| RData::CNAME(CNAME(n))),
                    RData::PTR(c) => rewrite_value(post, &c.0).map(|n| RData::PTR(PTR(n))),
                    RData::NS(c) => rewrite_value(post, &c.0).map(|n| RData::NS(NS(n))),
                    RData::SRV(s) => rewrite_value(post, &s.target)
                        .map(|n| RData::SRV(SRV::new(s.priority, s.weight, s.port, n))),
                    RData::MX(m) => rewrite_value(post, &m.exchange)
                        .map(|n| RData::MX(MX::new(m.preference, n))),
                    _ => None,
                };
                if let Some(d) = data {
                    r.data = d;
                    changed = true;
                }
            }
            if let Some((min, max)) = ttl {
                let t = r.ttl.clamp(min, max);
                if t != r.ttl {
                    r.ttl = t;
                    changed = true;
                }
            }
            r
        })
        .collect();
    if changed { out.into() } else { records.clone() }
}

fn rewrite_response(mut resp: Response, post: &[Post]) -> Response {
    let ttl = post.iter().rev().find_map(|p| match p {
        Post::Ttl { min, max } => Some((*min, *max)),
        _ => None,
    });
    resp.answers = rewrite_section(post, &resp.answers, ttl);
    resp.authority = rewrite_section(post, &resp.authority, None);
    resp.additionals = rewrite_section(post, &resp.additionals, None);
    resp
}

impl Plugin for Rewrite {
    fn name(&self) -> &'static str {
        "rewrite"
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        let mut changed: Option<Request> = None;
        let mut post: Vec<Post> = Vec::new();
        for rule in self.rules.iter() {
            let cur = changed.as_ref().unwrap_or(req);
            match apply(rule, cur, &mut post) {
                Outcome::Ignored => continue,
                Outcome::Invalid => {
                    tracing::debug!(
                        "plugin/rewrite: rule at {} made {} invalid",
                        rule.at,
                        req.lower_name()
                    );
                    return Reply::Ready(Response::new(ResponseCode::ServFail));
                }
                Outcome::Applied(new) => {
                    if let Some(new) = new {
                        changed = Some(new);
                    }
                    if rule.stop {
                        break;
                    }
                }
            }
        }
        let reply = next.run(changed.as_ref().unwrap_or(req));
        if post.is_empty() {
            reply
        } else {
            reply.map(move |resp| rewrite_response(resp, &post))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::corefile::{LoadOptions, MemoryFiles, load_from};
    use crate::dns::handler::{Chain, empty_records};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{DNSClass, RecordType};
    use std::sync::Mutex;

    /// Records what it saw; answers A 10.0.0.1 (TTL 300) owned by the asked name, a CNAME to
    /// `target.internal.` and an SRV to `srv.internal.`.
    #[derive(Default)]
    struct Backend(Mutex<Vec<Request>>);
    impl Plugin for Backend {
        fn name(&self) -> &'static str {
            "backend"
        }
        fn handle(&self, req: &Request, _next: Next) -> Reply {
            self.0.lock().unwrap().push(req.clone());
            let n = req.name().clone();
            let answers = vec![
                Record::from_rdata(n.clone(), 300, RData::A(A::new(10, 0, 0, 1))),
                Record::from_rdata(
                    n.clone(),
                    300,
                    RData::CNAME(CNAME(Name::from_ascii("target.internal.").unwrap())),
                ),
                Record::from_rdata(
                    n,
                    300,
                    RData::SRV(SRV::new(
                        0,
                        100,
                        80,
                        Name::from_ascii("srv.internal.").unwrap(),
                    )),
                ),
            ];
            Reply::Ready(Response::with_records(
                ResponseCode::NoError,
                answers.into(),
                empty_records(),
                empty_records(),
            ))
        }
    }

    fn rules(text: &str) -> Vec<RewriteRule> {
        let cf = load_from(
            "Corefile",
            &format!(".:53 {{\n{text}\n}}\n"),
            &MemoryFiles::new(),
            &|_| None,
            &LoadOptions::default(),
        )
        .unwrap();
        cf.servers[0].plugins.rewrite.clone()
    }

    fn load_err(text: &str) -> String {
        load_from(
            "Corefile",
            &format!(".:53 {{\n{text}\n}}\n"),
            &MemoryFiles::new(),
            &|_| None,
            &LoadOptions::default(),
        )
        .unwrap_err()
        .to_string()
    }

    /// Runs `name`/`t` through the rules; (what the backend saw, the response).
    fn run(text: &str, name: &str, t: RecordType) -> (Option<Request>, Response) {
        let backend = Arc::new(Backend::default());
        let chain = Chain::new(vec![Arc::new(Rewrite::new(rules(text))), backend.clone()]);
        let req = Request::new(Name::from_ascii(name).unwrap(), t);
        let resp = match chain.handle(&req) {
            Reply::Ready(r) => r,
            Reply::Pending(_) => panic!("ready expected"),
        };
        let seen = backend.0.lock().unwrap().first().cloned();
        (seen, resp)
    }

    fn owners(r: &Response) -> Vec<String> {
        r.answers.iter().map(|r| r.name.to_ascii()).collect()
    }

    #[test]
    fn exact_rewrites_the_question_and_turns_answer_owners_back() {
        let (seen, resp) = run(
            "rewrite name foo.example.com demoapp-svc.default.svc.cluster.local",
            "Foo.Example.com.",
            RecordType::A,
        );
        assert_eq!(
            seen.unwrap().lower_name(),
            "demoapp-svc.default.svc.cluster.local."
        );
        assert_eq!(owners(&resp), vec!["Foo.Example.com."; 3]);
        // Other names pass untouched.
        let (seen, resp) = run(
            "rewrite name foo.example.com bar.example.com",
            "other.example.com.",
            RecordType::A,
        );
        assert_eq!(seen.unwrap().lower_name(), "other.example.com.");
        assert_eq!(owners(&resp), vec!["other.example.com."; 3]);
    }

    #[test]
    fn prefix_suffix_substring_with_answer_auto() {
        let (seen, resp) = run(
            "rewrite name suffix .schmoogle.com. .google.com. answer auto",
            "www.schmoogle.com.",
            RecordType::A,
        );
        assert_eq!(seen.unwrap().lower_name(), "www.google.com.");
        assert_eq!(owners(&resp), vec!["www.schmoogle.com."; 3]);
        // Without `answer auto` the owners stay as the backend answered.
        let (_, resp) = run(
            "rewrite name suffix .schmoogle.com. .google.com.",
            "www.schmoogle.com.",
            RecordType::A,
        );
        assert_eq!(owners(&resp), vec!["www.google.com."; 3]);
        let (seen, resp) = run(
            "rewrite name prefix api. api-v2. answer auto",
            "api.example.org.",
            RecordType::A,
        );
        assert_eq!(seen.unwrap().lower_name(), "api-v2.example.org.");
        assert_eq!(owners(&resp), vec!["api.example.org."; 3]);
        let (seen, resp) = run(
            "rewrite name substring service.us-west-1.example.org service.us-west-1.consul answer auto",
            "ftp.service.us-west-1.example.org.",
            RecordType::A,
        );
        assert_eq!(seen.unwrap().lower_name(), "ftp.service.us-west-1.consul.");
        assert_eq!(owners(&resp), vec!["ftp.service.us-west-1.example.org."; 3]);
    }

    #[test]
    fn regex_groups_with_answer_name_and_value_in_both_syntaxes() {
        let block = "rewrite stop {\n name regex (.*)-(us-west-1)\\.example\\.org {1}.service.{2}.consul\n answer name (.*)\\.service\\.(us-west-1)\\.consul {1}-{2}.example.org\n}";
        let line = "rewrite name regex (.*)-(us-west-1)\\.example\\.org {1}.service.{2}.consul answer name (.*)\\.service\\.(us-west-1)\\.consul {1}-{2}.example.org answer value (.*)\\.internal {1}.example.org";
        for text in [block, line] {
            let (seen, resp) = run(text, "ftp-us-west-1.example.org.", RecordType::A);
            assert_eq!(seen.unwrap().lower_name(), "ftp.service.us-west-1.consul.");
            assert_eq!(owners(&resp), vec!["ftp-us-west-1.example.org."; 3]);
            let cname = resp.answers[1].data.to_string();
            let srv = resp.answers[2].data.to_string();
            if text == line {
                assert_eq!(cname, "target.example.org.");
                assert!(srv.ends_with("srv.example.org."), "{srv}");
            } else {
                assert_eq!(cname, "target.internal.");
            }
        }
    }

    #[test]
    fn stop_and_continue() {
        let two =
            "rewrite name a.example.org b.example.org\nrewrite name b.example.org c.example.org";
        let (seen, _) = run(two, "a.example.org.", RecordType::A);
        assert_eq!(
            seen.unwrap().lower_name(),
            "b.example.org.",
            "stop is the default"
        );
        let two = "rewrite continue name a.example.org b.example.org\nrewrite name b.example.org c.example.org";
        let (seen, _) = run(two, "a.example.org.", RecordType::A);
        assert_eq!(seen.unwrap().lower_name(), "c.example.org.");
        // A rule that does not match does not stop the next one.
        let two =
            "rewrite name x.example.org y.example.org\nrewrite name a.example.org c.example.org";
        let (seen, _) = run(two, "a.example.org.", RecordType::A);
        assert_eq!(seen.unwrap().lower_name(), "c.example.org.");
    }

    #[test]
    fn type_class_ttl_and_edns0_local() {
        let (seen, _) = run("rewrite type ANY HINFO", "x.example.", RecordType::ANY);
        assert_eq!(seen.unwrap().record_type(), RecordType::HINFO);
        let (seen, _) = run("rewrite type ANY HINFO", "x.example.", RecordType::A);
        assert_eq!(seen.unwrap().record_type(), RecordType::A);
        let (seen, _) = run("rewrite class IN CH", "x.example.", RecordType::TXT);
        assert_eq!(seen.unwrap().class(), DNSClass::CH);

        let (_, resp) = run(
            "rewrite ttl suffix .example. 15",
            "x.example.",
            RecordType::A,
        );
        assert!(resp.answers.iter().all(|r| r.ttl == 15));
        let (_, resp) = run(
            "rewrite ttl regex (.*)\\.example\\. 30-100",
            "x.example.",
            RecordType::A,
        );
        assert!(resp.answers.iter().all(|r| r.ttl == 100));
        let (_, resp) = run(
            "rewrite ttl exact y.example. 15",
            "x.example.",
            RecordType::A,
        );
        assert!(
            resp.answers.iter().all(|r| r.ttl == 300),
            "no match, no change"
        );

        let (seen, _) = run(
            "rewrite edns0 local set 0xffee 0x61626364",
            "x.example.",
            RecordType::A,
        );
        let seen = seen.unwrap();
        let opt = seen.edns.as_ref().unwrap().option(EdnsCode::from(0xffee));
        assert_eq!(opt, Some(&EdnsOption::Unknown(0xffee, b"abcd".to_vec())));
        let (seen, _) = run(
            "rewrite edns0 local replace 0xffee abcd",
            "x.example.",
            RecordType::A,
        );
        assert!(
            seen.unwrap().edns.is_none(),
            "replace needs an existing option"
        );
        let (seen, _) = run(
            "rewrite edns0 local append 0xffed {client_ip}",
            "x.example.",
            RecordType::A,
        );
        let seen = seen.unwrap();
        let opt = seen.edns.as_ref().unwrap().option(EdnsCode::from(0xffed));
        assert_eq!(opt, Some(&EdnsOption::Unknown(0xffed, vec![127, 0, 0, 1])));
    }

    #[test]
    fn a_rewrite_to_an_invalid_name_is_servfail() {
        let long = "a".repeat(70);
        let (seen, resp) = run(
            &format!("rewrite name regex (.*)\\.example\\. {{1}}{long}.example."),
            "x.example.",
            RecordType::A,
        );
        assert!(seen.is_none(), "the chain does not run");
        assert_eq!(resp.rcode, ResponseCode::ServFail);
        let (seen, resp) = run("rewrite name substring x ..", "x.example.", RecordType::A);
        assert!(seen.is_none());
        assert_eq!(resp.rcode, ResponseCode::ServFail);
    }

    #[test]
    fn bad_rules_are_errors_naming_file_and_line() {
        for (text, want) in [
            (
                "rewrite name regex (.*)[ x",
                "Corefile:2:20: plugin/rewrite: invalid regular expression",
            ),
            ("rewrite name regex (.*)\\.org {2}.net", "uses group {2}"),
            (
                "rewrite name regex a b answer auto",
                "answer auto cannot reverse a regex",
            ),
            (
                "rewrite name exact a b answer bogus x y",
                "unknown answer rewrite",
            ),
            ("rewrite type A BOGUS", "is not a record type"),
            ("rewrite class IN XX", "is not a class"),
            ("rewrite ttl exact a.example. ten", "is not a TTL"),
            ("rewrite ttl exact a.example. 100-10", "is not a TTL range"),
            ("rewrite edns0 local set 0xzz abc", "is not an option code"),
            (
                "rewrite edns0 local set 0xffee 0x6",
                "is not valid hex data",
            ),
            ("rewrite edns0 nsid set", "is not supported"),
            ("rewrite rcode SERVFAIL NXDOMAIN", "is not supported"),
            ("rewrite bogus a b", "unknown field \"bogus\""),
            ("rewrite", "needs a field"),
            (
                "rewrite stop {\n name regex a b\n name regex c d\n}",
                "only `answer` lines",
            ),
        ] {
            let e = load_err(text);
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.starts_with("Corefile:"), "{e}");
        }
    }
}
