//! The request path of the DNS server: a chain of [`Plugin`]s, CoreDNS style.
//!
//! The server ([`crate::dns::server`]) parses each packet into a [`Request`] with exactly one
//! question (bad packets never reach plugins: the server answers FORMERR/NOTIMP itself), runs
//! the [`Chain`], and encodes the [`Response`] (EDNS, truncation, name compression).
//!
//! A plugin either answers or passes the request on with [`Next::run`]. Answers that need no IO
//! (the cluster zone: a hash lookup) are returned as [`Reply::Ready`] and sent from the receive
//! loop without spawning; plugins that wait on IO (forward) return [`Reply::Pending`] with a
//! `'static` future, which the server awaits on a task of its own.
//!
//! ```
//! use svcnet_core::dns::handler::{Next, Plugin, Reply, Request, Response};
//! use hickory_proto::op::ResponseCode;
//!
//! /// Answers REFUSED for every `*.example.` name, passes everything else on.
//! struct RefuseExample;
//!
//! impl Plugin for RefuseExample {
//!     fn name(&self) -> &'static str {
//!         "refuse_example"
//!     }
//!     fn handle(&self, req: &Request, next: Next) -> Reply {
//!         if req.lower_name().ends_with(".example.") {
//!             return Reply::Ready(Response::new(ResponseCode::Refused));
//!         }
//!         // A plugin that post-processes another's answer maps the reply (sync or async).
//!         next.run(req).map(|mut resp| {
//!             resp.recursion_available = false;
//!             resp
//!         })
//!     }
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use hickory_proto::op::{Edns, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};

/// The UDP payload size this server advertises in its OPT record (DNS flag day 2020), and the
/// cap of [`Request::max_payload`] (re-exported as `wire::ADVERTISED_PAYLOAD`).
pub const ADVERTISED_PAYLOAD: u16 = 1232;

/// A boxed, sendable future (what [`Reply::Pending`] carries).
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The transport a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP: answers are limited to [`Request::max_payload`] bytes, larger ones get TC=1.
    Udp,
    /// TCP (or a caller without size limit): answers up to 65535 bytes.
    Tcp,
}

impl Transport {
    /// `udp` / `tcp`, as CoreDNS labels its metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// One parsed DNS query with exactly one question, as plugins see it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Message id (echoed by the server; plugins need not copy it).
    pub id: u16,
    /// The question as received (case preserved).
    pub query: Query,
    /// The question name in lower case with the trailing dot (`demoapp.default.svc.cluster.local.`),
    /// for case-insensitive matching.
    lower_name: Arc<str>,
    /// RD bit.
    pub recursion_desired: bool,
    /// CD bit.
    pub checking_disabled: bool,
    /// The client's EDNS(0) OPT record, if it sent one.
    pub edns: Option<Edns>,
    /// Where the request came from.
    pub client: SocketAddr,
    /// UDP or TCP.
    pub transport: Transport,
    /// How many times this query re-entered the server's own chain (an ExternalName target
    /// resolved through it); bounds such re-entry as CoreDNS's upstream does.
    pub(crate) hops: u8,
}

impl Request {
    /// Builds a request for `name`/`record_type` in class IN, as if received over UDP from
    /// 127.0.0.1 without EDNS (for tests and for plugins that issue internal queries).
    pub fn new(name: Name, record_type: RecordType) -> Self {
        let mut query = Query::query(name, record_type);
        query.set_query_class(DNSClass::IN);
        Self::from_query(
            0,
            query,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            Transport::Udp,
        )
    }

    /// Builds a request from a parsed question (used by the server).
    pub(crate) fn from_query(
        id: u16,
        query: Query,
        client: SocketAddr,
        transport: Transport,
    ) -> Self {
        let lower_name = lower_fqdn(query.name());
        Self {
            id,
            query,
            lower_name,
            recursion_desired: true,
            checking_disabled: false,
            edns: None,
            client,
            transport,
            hops: 0,
        }
    }

    /// The question name (case as received).
    pub fn name(&self) -> &Name {
        self.query.name()
    }

    /// The question name lower-cased, fully qualified with the trailing dot.
    pub fn lower_name(&self) -> &str {
        &self.lower_name
    }

    /// The question type.
    pub fn record_type(&self) -> RecordType {
        self.query.query_type()
    }

    /// The question class.
    pub fn class(&self) -> DNSClass {
        self.query.query_class()
    }

    /// The DO bit of the client's EDNS record.
    pub(crate) fn dnssec_ok(&self) -> bool {
        self.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok)
    }

    /// The largest answer sent to the client: 65535 over TCP; over UDP the client's EDNS
    /// buffer size kept within 512 and the size this server advertises
    /// ([`ADVERTISED_PAYLOAD`], 1232), or 512 without EDNS. Capping at the
    /// advertised size keeps a small spoofed query from drawing a many times larger answer.
    pub fn max_payload(&self) -> u16 {
        match self.transport {
            Transport::Tcp => u16::MAX,
            Transport::Udp => self
                .edns
                .as_ref()
                .map_or(512, |e| e.max_payload().clamp(512, ADVERTISED_PAYLOAD)),
        }
    }

    /// The UDP buffer size the client advertised (512 without EDNS, 65535 over TCP), before
    /// the server's own cap; for logs.
    pub(crate) fn client_payload(&self) -> u16 {
        match self.transport {
            Transport::Tcp => u16::MAX,
            Transport::Udp => self.edns.as_ref().map_or(512, |e| e.max_payload().max(512)),
        }
    }
}

/// The lower-cased textual form of `name`, always ending in a dot.
fn lower_fqdn(name: &Name) -> Arc<str> {
    let mut s = name.to_lowercase().to_ascii();
    if !s.ends_with('.') {
        s.push('.');
    }
    Arc::from(s)
}

/// Shared, immutable record list (a section of a response). Prepared answers are shared between
/// queries without copying; to change one, build a new list (`let mut v = s.to_vec(); ...;
/// resp.answers = v.into();`).
pub type Records = Arc<[Record]>;

/// An answer produced by a plugin. The server fills in id, question, QR/RD/CD flags and EDNS.
#[derive(Clone)]
pub struct Response {
    /// Response code (NOERROR, NXDOMAIN, ...). Extended codes (BADVERS) are split by the server.
    pub rcode: ResponseCode,
    /// AA bit: set by authoritative plugins.
    pub authoritative: bool,
    /// RA bit: set by plugins that recurse or forward.
    pub recursion_available: bool,
    /// Answer section.
    pub answers: Records,
    /// Authority section (the SOA of negative answers, NS).
    pub authority: Records,
    /// Additional section (without OPT: the server adds it).
    pub additionals: Records,
    /// The plugin that wrote the answer, for `coredns_dns_responses_total{plugin}`: `None`
    /// until a plugin returns it ([`Next::run`] then names that plugin), `Some("")` for
    /// answers no plugin wrote (REFUSED at the end of the chain or outside every zone).
    pub plugin: Option<&'static str>,
    /// Send nothing back (`acl ... drop`): the server drops the query silently.
    pub no_reply: bool,
    /// Made from served data only (the `kubernetes` plugin's zone answers), so the UDP
    /// listener may send its bytes again to the same question until served data changes
    /// ([`super::answer_cache`]). A plugin that adds anything else to it clears it.
    pub reusable: bool,
}

impl Response {
    /// An empty response with `rcode` (no records, AA and RA unset).
    pub fn new(rcode: ResponseCode) -> Self {
        Self {
            rcode,
            authoritative: false,
            recursion_available: false,
            answers: empty_records(),
            authority: empty_records(),
            additionals: empty_records(),
            plugin: None,
            no_reply: false,
            reusable: false,
        }
    }

    /// REFUSED: what the end of the chain answers for names no plugin serves.
    pub fn refused() -> Self {
        Self::new(ResponseCode::Refused)
    }

    /// REFUSED written by no plugin (end of the chain, no zone): `plugin` label empty.
    pub(crate) fn unattributed_refused() -> Self {
        Self {
            plugin: Some(""),
            ..Self::new(ResponseCode::Refused)
        }
    }

    /// Marks the answer as written by `plugin` unless a plugin is already named.
    pub(crate) fn attribute(mut self, plugin: &'static str) -> Self {
        if self.plugin.is_none() {
            self.plugin = Some(plugin);
        }
        self
    }

    /// SERVFAIL.
    pub(crate) fn servfail() -> Self {
        Self::new(ResponseCode::ServFail)
    }

    /// A response with the given sections.
    pub(crate) fn with_records(
        rcode: ResponseCode,
        answers: Records,
        authority: Records,
        additionals: Records,
    ) -> Self {
        Self {
            answers,
            authority,
            additionals,
            ..Self::new(rcode)
        }
    }

    /// Sets the AA bit (builder style).
    pub fn authoritative(mut self) -> Self {
        self.authoritative = true;
        self
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("rcode", &self.rcode)
            .field("authoritative", &self.authoritative)
            .field("recursion_available", &self.recursion_available)
            .field("answers", &self.answers)
            .field("authority", &self.authority)
            .field("additionals", &self.additionals)
            .field("plugin", &self.plugin)
            .field("no_reply", &self.no_reply)
            .finish()
    }
}

/// An empty record list (shared, no allocation per call).
pub(crate) fn empty_records() -> Records {
    static EMPTY: std::sync::OnceLock<Records> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::from(Vec::new())).clone()
}

/// What a plugin returns: an answer now, or a future answer (for plugins that do IO).
pub enum Reply {
    /// The answer is ready; the server sends it from the receive loop.
    Ready(Response),
    /// The answer needs IO; the server awaits it on its own task.
    Pending(BoxFuture<Response>),
}

impl Reply {
    /// Wraps a future answer.
    pub fn pending(fut: impl Future<Output = Response> + Send + 'static) -> Self {
        Reply::Pending(Box::pin(fut))
    }

    /// Waits for the answer.
    pub async fn resolve(self) -> Response {
        match self {
            Reply::Ready(r) => r,
            Reply::Pending(f) => f.await,
        }
    }

    /// Transforms the answer, now if it is ready, else when it arrives.
    pub fn map(self, f: impl FnOnce(Response) -> Response + Send + 'static) -> Reply {
        match self {
            Reply::Ready(r) => Reply::Ready(f(r)),
            Reply::Pending(fut) => Reply::pending(async move { f(fut.await) }),
        }
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Ready(r) => f.debug_tuple("Ready").field(r).finish(),
            Reply::Pending(_) => f.write_str("Pending(..)"),
        }
    }
}

/// One step of the request path (kubernetes/cluster zone, forward, cache, hosts, ...).
pub trait Plugin: Send + Sync + 'static {
    /// Short name, as in a Corefile (`kubernetes`, `forward`), for logs and metrics.
    fn name(&self) -> &'static str;

    /// Answers `req`, or passes it on with `next.run(req)` (possibly mapping the result).
    /// Must not block: do IO inside a [`Reply::Pending`] future.
    fn handle(&self, req: &Request, next: Next) -> Reply;

    /// Whether the plugin is ready to serve (the `/ready` endpoint reports 503 until every
    /// plugin is ready). Default: always ready.
    fn ready(&self) -> bool {
        true
    }

    /// The cluster zone this plugin answers from, for plugins that build on it (`k8s_external`,
    /// `autopath @kubernetes`; CoreDNS's `Externaler`/`AutoPather` interfaces): `Some` only for
    /// the `kubernetes` plugin, once it serves. Default: `None`.
    fn cluster_zone(&self) -> Option<Arc<super::zone::ClusterZone>> {
        None
    }

    /// Whether this plugin's answers, and its choice to pass a request on, depend on nothing
    /// but the request's bytes and served data (no client address, clock, counter or
    /// randomness), and it leaves the answers of later plugins as they made them. The UDP
    /// listener reuses encoded answers ([`super::answer_cache`]) only when every plugin of its
    /// chain says so. Default: `false`.
    fn passes_answers_unchanged(&self) -> bool {
        false
    }
}

/// The rest of the chain after the current plugin. Cheap to clone; `'static`, so an async
/// plugin can move it into its future.
#[derive(Clone)]
pub struct Next {
    plugins: Arc<[Arc<dyn Plugin>]>,
    index: usize,
}

impl Next {
    /// Runs the remaining plugins. At the end of the chain the answer is REFUSED (no plugin
    /// serves the name; this is also what a server with no forwarder answers for foreign zones).
    /// A ready answer that names no plugin yet is attributed to the plugin that returned it
    /// (plugins returning a pending answer name themselves, see [`Response::plugin`]).
    pub fn run(self, req: &Request) -> Reply {
        match self.plugins.get(self.index).cloned() {
            Some(plugin) => match plugin.handle(
                req,
                Next {
                    plugins: self.plugins,
                    index: self.index + 1,
                },
            ) {
                Reply::Ready(r) => Reply::Ready(r.attribute(plugin.name())),
                pending => pending,
            },
            None => Reply::Ready(Response::unattributed_refused()),
        }
    }

    /// Whether any plugin follows (e.g. for `fallthrough` to know whether passing on is useful).
    pub(crate) fn is_end(&self) -> bool {
        self.index >= self.plugins.len()
    }
}

/// An ordered list of plugins; the first one sees each request first.
#[derive(Clone)]
pub struct Chain {
    plugins: Arc<[Arc<dyn Plugin>]>,
}

/// A [`Chain`] held without keeping it alive, for a plugin that re-enters its own server
/// (a strong reference from a plugin to its chain would be a cycle that is never freed).
#[derive(Clone)]
pub(crate) struct WeakChain(std::sync::Weak<[Arc<dyn Plugin>]>);

impl WeakChain {
    /// The chain, while it is still served.
    pub(crate) fn upgrade(&self) -> Option<Chain> {
        self.0.upgrade().map(|plugins| Chain { plugins })
    }
}

impl Chain {
    /// A chain of `plugins`, in order.
    pub fn new(plugins: Vec<Arc<dyn Plugin>>) -> Self {
        Self {
            plugins: plugins.into(),
        }
    }

    /// Runs `req` through the chain.
    pub fn handle(&self, req: &Request) -> Reply {
        Next {
            plugins: self.plugins.clone(),
            index: 0,
        }
        .run(req)
    }

    /// A weak handle on this chain.
    pub(crate) fn downgrade(&self) -> WeakChain {
        WeakChain(Arc::downgrade(&self.plugins))
    }

    /// Whether every plugin passes answers unchanged
    /// ([`Plugin::passes_answers_unchanged`]).
    pub fn passes_answers_unchanged(&self) -> bool {
        self.plugins.iter().all(|p| p.passes_answers_unchanged())
    }

    /// Whether every plugin reports ready.
    pub fn ready(&self) -> bool {
        self.plugins.iter().all(|p| p.ready())
    }

    /// Names of the plugins that are not ready (empty when all are).
    pub fn not_ready(&self) -> Vec<&'static str> {
        self.plugins
            .iter()
            .filter(|p| !p.ready())
            .map(|p| p.name())
            .collect()
    }

    /// Names of the plugins, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.plugins.iter().map(|p| p.name()).collect()
    }
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::RData;
    use hickory_proto::rr::rdata::A;

    struct Fixed(&'static str);
    impl Plugin for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn handle(&self, req: &Request, next: Next) -> Reply {
            if req.lower_name() != self.0 {
                return next.run(req);
            }
            let rec = Record::from_rdata(req.name().clone(), 5, RData::A(A::new(10, 0, 0, 1)));
            Reply::Ready(
                Response::with_records(
                    ResponseCode::NoError,
                    vec![rec].into(),
                    empty_records(),
                    empty_records(),
                )
                .authoritative(),
            )
        }
    }

    struct Delayed;
    impl Plugin for Delayed {
        fn name(&self) -> &'static str {
            "delayed"
        }
        fn handle(&self, _req: &Request, _next: Next) -> Reply {
            Reply::pending(async { Response::new(ResponseCode::NXDomain) })
        }
    }

    #[test]
    fn chain_passes_on_and_ends_refused() {
        let chain = Chain::new(vec![Arc::new(Fixed("a.example."))]);
        let hit = Request::new(Name::from_ascii("A.Example.").unwrap(), RecordType::A);
        match chain.handle(&hit) {
            Reply::Ready(r) => {
                assert_eq!(r.rcode, ResponseCode::NoError);
                assert!(r.authoritative);
                assert_eq!(r.answers.len(), 1);
            }
            other => panic!("expected ready, got {other:?}"),
        }
        let miss = Request::new(Name::from_ascii("b.example").unwrap(), RecordType::A);
        assert_eq!(miss.lower_name(), "b.example.");
        match chain.handle(&miss) {
            Reply::Ready(r) => assert_eq!(r.rcode, ResponseCode::Refused),
            other => panic!("expected ready, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn pending_replies_resolve_and_map() {
        let chain = Chain::new(vec![Arc::new(Fixed("a.example.")), Arc::new(Delayed)]);
        let req = Request::new(Name::from_ascii("c.example.").unwrap(), RecordType::A);
        let reply = chain.handle(&req).map(|mut r| {
            r.recursion_available = true;
            r
        });
        assert!(matches!(reply, Reply::Pending(_)));
        let resp = reply.resolve().await;
        assert_eq!(resp.rcode, ResponseCode::NXDomain);
        assert!(resp.recursion_available);
        assert_eq!(chain.names(), vec!["fixed", "delayed"]);
    }
}
