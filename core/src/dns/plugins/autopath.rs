//! The `autopath` plugin: server-side search path completion, as CoreDNS's *autopath*.
//!
//! A pod's resolver (ndots 5) asks `web.<ns>.svc.cluster.local`, then `web.svc.cluster.local`, ...
//! until one is not NXDOMAIN. When a query is below the first element of the client's search
//! path, this plugin walks the rest of the path itself and answers with the first reply that is
//! not NXDOMAIN, behind a CNAME from the name asked to the name that answered, so the client gets
//! its answer in one round trip. When every element fails, the reply to the name asked is sent
//! (NXDOMAIN), and the client walks the path as it would have. Queries from addresses that are
//! not a known pod's, and names not below the first element, are answered plainly.
//!
//! The expansion itself is pure and reusable: [`pod_search_path`] (the path of a pod's
//! namespace), [`expansions`] (the names to try) and [`walk`] (ask them in order through any
//! lookup, synchronously while the answers are ready, asynchronously from the first that is
//! not).

use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{Name, RData, Record};

use crate::dns::corefile::{AutopathConfig, SearchSource};
use crate::dns::handler::{Next, Plugin, Reply, Request, Response};
use crate::dns::wire::is_internet_class;

/// The search path CoreDNS's kubernetes plugin gives a pod of `namespace` asking in cluster zone
/// `zone` (lower case with the trailing dot): `<ns>.svc.<zone>`, `svc.<zone>`, `<zone>`, then
/// `host_search` (the server's own search domains), then `""` for the bare name.
pub fn pod_search_path(namespace: &str, zone: &str, host_search: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(host_search.len() + 4);
    if zone == "." {
        out.push(format!("{namespace}.svc."));
        out.push("svc.".to_string());
        out.push(".".to_string());
    } else {
        out.push(format!("{namespace}.svc.{zone}"));
        out.push(format!("svc.{zone}"));
        out.push(zone.to_string());
    }
    out.extend(host_search.iter().cloned());
    out.push(String::new());
    out
}

/// The names to ask for `qname` (`lower_name`: lower case with the trailing dot) along `search`
/// (lower-case domains with trailing dots; `""` or `"."` is the bare name), in order. The first
/// is `qname` itself. `None` when `qname` is not strictly below the first element: no
/// expansion then. Names that would be too long are left out.
pub fn expansions(qname: &Name, lower_name: &str, search: &[String]) -> Option<Vec<Name>> {
    let first = search.first()?;
    if first.is_empty() || first == "." || lower_name.len() <= first.len() + 1 {
        return None;
    }
    if !lower_name.ends_with(first.as_str())
        || lower_name.as_bytes()[lower_name.len() - first.len() - 1] != b'.'
    {
        return None;
    }
    let base_len = lower_name.len() - first.len() - 1;
    // The asked name's own spelling (case kept), which has the same length as the lower-case.
    let mut text = qname.to_ascii();
    if !text.ends_with('.') {
        text.push('.');
    }
    if text.len() != lower_name.len() {
        return None;
    }
    let base = &text[..base_len];
    Some(
        search
            .iter()
            .filter_map(|s| {
                let full = if s.is_empty() || s == "." {
                    format!("{base}.")
                } else {
                    format!("{base}.{s}")
                };
                Name::from_ascii(&full).ok()
            })
            .collect(),
    )
}

/// `resp` answered `answered` for a question `original`: when its answer is owned by another
/// name, a CNAME from `original` to that name goes first (as CoreDNS's autopath does).
pub(crate) fn cname_to_answer(mut resp: Response, original: &Name) -> Response {
    let Some(other) = resp.answers.iter().find(|r| r.name != *original) else {
        return resp;
    };
    let cname = Record::from_rdata(
        original.clone(),
        other.ttl,
        RData::CNAME(CNAME(other.name.clone())),
    );
    let mut answers = Vec::with_capacity(resp.answers.len() + 1);
    answers.push(cname);
    answers.extend(resp.answers.iter().cloned());
    resp.answers = answers.into();
    resp
}

/// A copy of `req` asking `name` (everything else kept).
fn asking(req: &Request, name: &Name) -> Request {
    let mut q = req.query.clone();
    q.set_name(name.clone());
    let mut out = Request::from_query(req.id, q, req.client, req.transport);
    out.hops = req.hops;
    out.recursion_desired = req.recursion_desired;
    out.checking_disabled = req.checking_disabled;
    out.edns = req.edns.clone();
    out
}

/// Whether a reply ends the walk: anything but NXDOMAIN and the codes CoreDNS's plugins return
/// without writing a reply (SERVFAIL, REFUSED, FORMERR, NOTIMP).
fn ends_walk(resp: &Response) -> bool {
    !matches!(
        resp.rcode,
        ResponseCode::NXDomain
            | ResponseCode::ServFail
            | ResponseCode::Refused
            | ResponseCode::FormErr
            | ResponseCode::NotImp
    )
}

/// Asks `names` (from [`expansions`]) in order through `run` and answers with the first reply
/// that ends the walk — behind a CNAME from the name asked when it came from a later name —;
/// when none does, with the reply to the first name (the one asked). Ready replies are handled
/// at once; from the first pending one on, the rest of the walk runs in the returned future.
pub fn walk<F>(req: &Request, names: Vec<Name>, run: F) -> Reply
where
    F: Fn(&Request) -> Reply + Send + Sync + 'static,
{
    walk_counted(req, names, run, || {})
}

/// [`walk`], calling `expanded` when the answer came from a name after the first.
fn walk_counted<F, C>(req: &Request, names: Vec<Name>, run: F, expanded: C) -> Reply
where
    F: Fn(&Request) -> Reply + Send + Sync + 'static,
    C: Fn() + Send + Sync + 'static,
{
    let original = req.name().clone();
    // The reply for step `i` when it ends the walk.
    let found = move |i: usize, resp: Response| -> Response {
        if i == 0 {
            return resp;
        }
        expanded();
        cname_to_answer(resp, &original)
    };
    let mut first: Option<Response> = None;
    for (i, name) in names.iter().enumerate() {
        let step = asking(req, name);
        match run(&step) {
            Reply::Ready(resp) => {
                if ends_walk(&resp) {
                    return Reply::Ready(found(i, resp));
                }
                if i == 0 {
                    first = Some(resp);
                }
            }
            Reply::Pending(fut) => {
                let req = req.clone();
                return Reply::pending(async move {
                    let resp = fut.await;
                    if ends_walk(&resp) {
                        return found(i, resp);
                    }
                    if i == 0 {
                        first = Some(resp);
                    }
                    for (j, name) in names.iter().enumerate().skip(i + 1) {
                        let resp = run(&asking(&req, name)).resolve().await;
                        if ends_walk(&resp) {
                            return found(j, resp);
                        }
                    }
                    first.unwrap_or_else(Response::servfail)
                });
            }
        }
    }
    Reply::Ready(first.unwrap_or_else(Response::servfail))
}

/// The `autopath` plugin of one server block.
pub(crate) struct AutoPath {
    /// Zones whose queries are expanded (lower case, trailing dot).
    zones: Vec<String>,
    source: Source,
    /// `coredns_autopath_success_total`, when metrics are kept.
    success: Option<prometheus_client::metrics::counter::Counter>,
}

enum Source {
    /// The path of the asking pod's namespace, from the block's `kubernetes` plugin.
    Kubernetes {
        cluster: Arc<dyn Plugin>,
        host_search: Vec<String>,
    },
    /// One path for every client.
    Fixed(Vec<String>),
}

impl AutoPath {
    /// The plugin for `config`; `cluster` is the block's `kubernetes` plugin (needed for
    /// `@kubernetes`: without it nothing is expanded).
    pub fn new(
        config: &AutopathConfig,
        cluster: Option<Arc<dyn Plugin>>,
        success: Option<prometheus_client::metrics::counter::Counter>,
    ) -> Self {
        let source = match (&config.source, cluster) {
            (SearchSource::Kubernetes { host_search }, Some(cluster)) => Source::Kubernetes {
                cluster,
                host_search: host_search.clone(),
            },
            (SearchSource::Kubernetes { .. }, None) => Source::Fixed(Vec::new()),
            (SearchSource::Fixed(search), _) => {
                let mut s = search.clone();
                s.push(String::new());
                Source::Fixed(s)
            }
        };
        Self {
            zones: config.zones.clone(),
            source,
            success,
        }
    }

    /// The names to ask for `req`, or `None` to answer it plainly.
    fn plan(&self, req: &Request) -> Option<Vec<Name>> {
        let lower = req.lower_name();
        if !self
            .zones
            .iter()
            .any(|z| crate::dns::corefile::names::in_zone(lower, z))
        {
            return None;
        }
        match &self.source {
            Source::Fixed(search) => expansions(req.name(), lower, search),
            Source::Kubernetes {
                cluster,
                host_search,
            } => {
                let zone = cluster.cluster_zone()?;
                let origin = zone.origin_of(lower)?;
                let o = &zone.origins()[origin];
                if o.reverse.is_some() {
                    return None;
                }
                // A dual-stack listener sees IPv4 clients as IPv4-mapped IPv6 addresses.
                let ns = zone.client_namespace(req.client.ip().to_canonical(), lower, origin)?;
                let search = pod_search_path(ns, &o.name, host_search);
                expansions(req.name(), lower, &search)
            }
        }
    }
}

impl Plugin for AutoPath {
    fn name(&self) -> &'static str {
        "autopath"
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        if !is_internet_class(req.class()) {
            return next.run(req);
        }
        let Some(names) = self.plan(req) else {
            return next.run(req);
        };
        let success = self.success.clone();
        walk_counted(
            req,
            names,
            move |r| next.clone().run(r),
            move || {
                if let Some(c) = &success {
                    c.inc();
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::handler::{Chain, empty_records};
    use hickory_proto::rr::RecordType;
    use hickory_proto::rr::rdata::A;
    use std::sync::Mutex;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn texts(names: &[Name]) -> Vec<String> {
        names.iter().map(|n| n.to_ascii()).collect()
    }

    #[test]
    fn the_search_path_of_a_pod_is_coredns_s() {
        assert_eq!(
            pod_search_path("demo", "cluster.local.", &["corp.example.".into()]),
            vec![
                "demo.svc.cluster.local.",
                "svc.cluster.local.",
                "cluster.local.",
                "corp.example.",
                ""
            ]
        );
        assert_eq!(
            pod_search_path("demo", ".", &[]),
            vec!["demo.svc.", "svc.", ".", ""]
        );
    }

    #[test]
    fn expansions_start_with_the_asked_name_and_keep_its_case() {
        let search = pod_search_path("demo", "cluster.local.", &["corp.example.".into()]);
        let q = name("Web.Default.demo.svc.cluster.local.");
        let got = expansions(&q, "web.default.demo.svc.cluster.local.", &search).unwrap();
        assert_eq!(
            texts(&got),
            vec![
                "Web.Default.demo.svc.cluster.local.",
                "Web.Default.svc.cluster.local.",
                "Web.Default.cluster.local.",
                "Web.Default.corp.example.",
                "Web.Default.",
            ]
        );
        // Not below the first element, or the element itself: no expansion.
        for q in [
            "web.default.svc.cluster.local.",
            "demo.svc.cluster.local.",
            "example.com.",
            "xdemo.svc.cluster.local.",
        ] {
            assert!(expansions(&name(q), q, &search).is_none(), "{q}");
        }
        assert!(expansions(&name("a.b."), "a.b.", &[]).is_none());
    }

    /// Answers A 10.0.0.1 for the names it knows; NXDOMAIN (or REFUSED past the zone) else.
    struct Known {
        names: Vec<&'static str>,
        asked: Mutex<Vec<String>>,
        pending: bool,
    }

    impl Plugin for Known {
        fn name(&self) -> &'static str {
            "known"
        }
        fn handle(&self, req: &Request, _next: Next) -> Reply {
            self.asked
                .lock()
                .unwrap()
                .push(req.lower_name().to_string());
            let resp = if self.names.contains(&req.lower_name()) {
                Response::with_records(
                    ResponseCode::NoError,
                    vec![Record::from_rdata(
                        req.name().clone(),
                        30,
                        RData::A(A::new(10, 0, 0, 1)),
                    )]
                    .into(),
                    empty_records(),
                    empty_records(),
                )
            } else if req.lower_name().ends_with("cluster.local.") {
                Response::new(ResponseCode::NXDomain)
            } else {
                Response::refused()
            };
            if self.pending {
                Reply::pending(async move { resp })
            } else {
                Reply::Ready(resp)
            }
        }
    }

    async fn run_walk(pending: bool, known: Vec<&'static str>, q: &str) -> (Response, Vec<String>) {
        let plugin = Arc::new(Known {
            names: known,
            asked: Mutex::new(Vec::new()),
            pending,
        });
        let chain = Chain::new(vec![plugin.clone()]);
        let search = pod_search_path("demo", "cluster.local.", &["corp.example.".into()]);
        let req = Request::new(name(q), RecordType::A);
        let names = expansions(req.name(), req.lower_name(), &search).unwrap();
        let reply = walk(&req, names, move |r| chain.handle(r));
        assert_eq!(matches!(reply, Reply::Pending(_)), pending);
        let resp = reply.resolve().await;
        let asked = plugin.asked.lock().unwrap().clone();
        (resp, asked)
    }

    #[tokio::test]
    async fn the_walk_answers_with_a_cname_to_the_first_name_that_exists() {
        for pending in [false, true] {
            let (resp, asked) = run_walk(
                pending,
                vec!["web.default.svc.cluster.local."],
                "web.default.demo.svc.cluster.local.",
            )
            .await;
            assert_eq!(resp.rcode, ResponseCode::NoError);
            let lines: Vec<String> = resp.answers.iter().map(|r| r.to_string()).collect();
            assert_eq!(
                lines,
                vec![
                    "web.default.demo.svc.cluster.local. 30 IN CNAME web.default.svc.cluster.local.",
                    "web.default.svc.cluster.local. 30 IN A 10.0.0.1",
                ]
            );
            assert_eq!(asked.len(), 2, "stops at the first answer: {asked:?}");
        }
    }

    #[tokio::test]
    async fn the_bare_name_is_tried_last_and_failures_return_the_first_reply() {
        for pending in [false, true] {
            // Found only as the bare name (through the rest of the chain): REFUSED and NXDOMAIN
            // on the way are skipped.
            let (resp, asked) = run_walk(
                pending,
                vec!["example.com."],
                "example.com.demo.svc.cluster.local.",
            )
            .await;
            assert_eq!(resp.rcode, ResponseCode::NoError);
            assert_eq!(resp.answers.len(), 2);
            assert_eq!(
                asked,
                vec![
                    "example.com.demo.svc.cluster.local.",
                    "example.com.svc.cluster.local.",
                    "example.com.cluster.local.",
                    "example.com.corp.example.",
                    "example.com.",
                ]
            );
            // Nothing anywhere: the first reply (NXDOMAIN for the name asked), no CNAME.
            let (resp, asked) = run_walk(pending, vec![], "nope.demo.svc.cluster.local.").await;
            assert_eq!(resp.rcode, ResponseCode::NXDomain);
            assert!(resp.answers.is_empty());
            assert_eq!(asked.len(), 5);
            // The name asked exists: answered as is, nothing else asked.
            let (resp, asked) = run_walk(
                pending,
                vec!["x.demo.svc.cluster.local."],
                "x.demo.svc.cluster.local.",
            )
            .await;
            assert_eq!((resp.rcode, resp.answers.len()), (ResponseCode::NoError, 1));
            assert_eq!(asked.len(), 1);
        }
    }

    #[test]
    fn nodata_ends_the_walk_without_a_cname() {
        let resp = cname_to_answer(
            Response::new(ResponseCode::NoError),
            &name("a.demo.svc.cluster.local."),
        );
        assert!(resp.answers.is_empty());
        assert!(ends_walk(&resp));
        assert!(!ends_walk(&Response::servfail()));
    }

    #[test]
    fn a_fixed_search_path_expands_for_every_client() {
        let cfg = AutopathConfig {
            zones: vec![".".into()],
            source: SearchSource::Fixed(vec!["a.example.".into(), "b.example.".into()]),
            at: crate::dns::corefile::Position {
                file: "Corefile".into(),
                line: 1,
                column: 1,
            },
        };
        let ap = Arc::new(AutoPath::new(&cfg, None, None));
        let known = Arc::new(Known {
            names: vec!["host.b.example."],
            asked: Mutex::new(Vec::new()),
            pending: false,
        });
        let chain = Chain::new(vec![ap, known]);
        let req = Request::new(name("host.a.example."), RecordType::A);
        let Reply::Ready(resp) = chain.handle(&req) else {
            panic!("ready expected");
        };
        assert_eq!(resp.answers.len(), 2);
        assert_eq!(
            resp.answers[0].to_string(),
            "host.a.example. 30 IN CNAME host.b.example."
        );
    }

    #[test]
    fn with_the_cluster_plugin_the_asking_pod_s_namespace_drives_the_walk() {
        use crate::dns::cluster::ClusterPlugin;
        use crate::dns::zone::fixtures::{FIXTURE, snapshot};
        use crate::dns::zone::{PodMode, ZoneOptions};
        let cluster = ClusterPlugin::new(ZoneOptions {
            pods: PodMode::Verified,
            ..ZoneOptions::default()
        });
        cluster.install(&snapshot(FIXTURE));
        let cfg = AutopathConfig {
            zones: vec![".".into()],
            source: SearchSource::Kubernetes {
                host_search: vec![],
            },
            at: crate::dns::corefile::Position {
                file: "Corefile".into(),
                line: 1,
                column: 1,
            },
        };
        let counter = prometheus_client::metrics::counter::Counter::default();
        let ap = Arc::new(AutoPath::new(
            &cfg,
            Some(cluster.clone() as Arc<dyn Plugin>),
            Some(counter.clone()),
        ));
        let chain = Chain::new(vec![ap, cluster]);
        // The fixture's pod demoapp-a (default) is at 10.244.1.10.
        let ask = |q: &str, from: &str| {
            let mut req = Request::new(name(q), RecordType::A);
            req.client = std::net::SocketAddr::new(from.parse().unwrap(), 5353);
            match chain.handle(&req) {
                Reply::Ready(r) => r,
                Reply::Pending(_) => panic!("cluster answers are ready"),
            }
        };
        let lines = |r: &Response| r.answers.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let pod = "10.244.1.10";
        let r = ask("lonely.default.default.svc.cluster.local.", pod);
        assert_eq!(
            lines(&r),
            vec![
                "lonely.default.default.svc.cluster.local. 5 IN CNAME lonely.default.svc.cluster.local.",
                "lonely.default.svc.cluster.local. 5 IN A 10.96.10.20",
            ]
        );
        assert_eq!(counter.get(), 1);
        // A chain answered for the name asked is left as it is (no second CNAME), uncounted.
        let r = ask("alias.default.svc.cluster.local.", pod);
        assert_eq!(
            lines(&r),
            vec![
                "alias.default.svc.cluster.local. 5 IN CNAME demoapp-svc.default.svc.cluster.local.",
                "demoapp-svc.default.svc.cluster.local. 5 IN A 10.96.10.11",
            ]
        );
        // A chain found later gets one CNAME to the name that answered.
        let r = ask("alias.default.default.svc.cluster.local.", pod);
        assert_eq!(
            lines(&r),
            vec![
                "alias.default.default.svc.cluster.local. 5 IN CNAME alias.default.svc.cluster.local.",
                "alias.default.svc.cluster.local. 5 IN CNAME demoapp-svc.default.svc.cluster.local.",
                "demoapp-svc.default.svc.cluster.local. 5 IN A 10.96.10.11",
            ]
        );
        assert_eq!(counter.get(), 2);
        // Another address: plain NXDOMAIN.
        let r = ask("lonely.default.default.svc.cluster.local.", "10.244.1.99");
        assert_eq!((r.rcode, r.answers.len()), (ResponseCode::NXDomain, 0));
        assert_eq!(counter.get(), 2);
    }
}
