//! `forward`: sends queries to upstream resolvers (CoreDNS's forward plugin).
//!
//! Upstreams are tried in the policy's order, skipping those that are down (more than
//! `max_fails` failures in a row) unless all are; a failed exchange marks the upstream and
//! starts its health probe. UDP answers with TC=1 are retried over TCP. Answers are accepted
//! only when they echo the query's random id and question (see [`super::upstream`]).
//!
//! `max_concurrent` bounds the queries in flight, shared fairly between clients: while slots
//! are free anyone takes one; when all are taken, a query from a client that holds at least
//! two fewer slots than the largest holder takes that holder's oldest slot (the evicted query
//! is answered REFUSED), and any other query is answered REFUSED at once. One client can thus
//! use the whole limit while alone, but a flooding client cannot starve the others. Clients
//! are told apart by address (IPv6 by /64, the block one host usually holds).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message};
use hickory_proto::rr::{Name, Record};
use tokio::sync::oneshot;

use super::metrics::PluginMetrics;
use super::upstream::{
    ExchangeError, ProbeSettings, Proto, SentQuery, SourcePort, TlsTarget, Upstream,
};
use crate::dns::corefile::names::in_zone;
use crate::dns::corefile::{ForwardConfig, Policy, SourcePortMode};
use crate::dns::handler::{Next, Plugin, Reply, Request, Response, Transport};

/// Longest time one query may spend on all upstreams together (CoreDNS: 5 s).
const OVERALL_DEADLINE: Duration = Duration::from_secs(5);
/// EDNS buffer size advertised upstream.
const UPSTREAM_PAYLOAD: u16 = 1232;

/// The forward plugin.
pub struct Forward {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ForwardConfig,
    upstreams: Vec<Arc<Upstream>>,
    probe: ProbeSettings,
    inflight: AtomicU32,
    limiter: Limiter,
    next_rr: AtomicUsize,
    metrics: Option<PluginMetrics>,
}

/// Decrements the in-flight count when a query ends (answered or cancelled).
struct InflightGuard(Arc<Inner>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Who a slot of `max_concurrent` is charged to: the client's IPv4 address or IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey(u128);

impl ClientKey {
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(u128::from(u32::from(v4))),
                None => Self((u128::from(v6) >> 64) | (1 << 127)),
            },
        }
    }
}

/// The slots of `max_concurrent`, shared fairly between clients (see the module docs).
pub(crate) struct Limiter {
    max: u32,
    state: Mutex<LimiterState>,
}

#[derive(Default)]
struct LimiterState {
    total: u32,
    next_ticket: u64,
    /// Per client, its queries in flight, oldest first: ticket and the sender whose drop
    /// evicts that query.
    clients: HashMap<ClientKey, VecDeque<(u64, oneshot::Sender<()>)>, foldhash::fast::RandomState>,
}

/// The outcome of asking for a slot.
pub(crate) enum Admission {
    /// Go ahead. Without a limit there is no slot; with one, `evicted` fires if a fairer
    /// client takes the slot back before the query ends.
    Admitted(Option<(Slot, oneshot::Receiver<()>)>),
    /// No slot for this client now: answer REFUSED.
    Refused,
}

/// One slot held; given back on drop.
pub(crate) struct Slot {
    inner: Arc<Inner>,
    key: ClientKey,
    ticket: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner.limiter.release(self.key, self.ticket);
    }
}

impl Limiter {
    pub(crate) fn new(max: u32) -> Self {
        Self {
            max,
            state: Mutex::new(LimiterState::default()),
        }
    }

    /// Takes a slot for `key`: a free one, or the oldest of the largest holder when that
    /// holder has at least two more than `key` (`None` when neither). Returns the ticket, the
    /// eviction receiver and whether another query was evicted for it.
    fn acquire(&self, key: ClientKey) -> Option<(u64, oneshot::Receiver<()>, bool)> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut evicted = false;
        if st.total >= self.max {
            let own = st.clients.get(&key).map_or(0, VecDeque::len);
            let (victim, held) = st
                .clients
                .iter()
                .filter(|(k, _)| **k != key)
                .map(|(k, q)| (*k, q.len()))
                .max_by_key(|(_, n)| *n)?;
            if held < own + 2 {
                return None;
            }
            let queue = st.clients.get_mut(&victim)?;
            // Dropping the sender wakes the evicted query, which answers REFUSED.
            queue.pop_front();
            if queue.is_empty() {
                st.clients.remove(&victim);
            }
            st.total -= 1;
            evicted = true;
        }
        let (tx, rx) = oneshot::channel();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.total += 1;
        st.clients.entry(key).or_default().push_back((ticket, tx));
        Some((ticket, rx, evicted))
    }

    /// Gives back `key`'s slot `ticket` (nothing when it was evicted already).
    fn release(&self, key: ClientKey, ticket: u64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(queue) = st.clients.get_mut(&key) else {
            return;
        };
        let Some(pos) = queue.iter().position(|(t, _)| *t == ticket) else {
            return;
        };
        queue.remove(pos);
        if queue.is_empty() {
            st.clients.remove(&key);
        }
        st.total -= 1;
    }

    /// Slots held now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> u32 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Forward {
    /// A forwarder for `cfg`.
    pub fn new(cfg: ForwardConfig, metrics: Option<PluginMetrics>) -> Self {
        // One client configuration for all `tls://` upstreams, built only when there are any.
        let tls_config = cfg.to_tls.contains(&true).then(|| {
            let t = &cfg.tls;
            let identity = match (&t.cert, &t.key) {
                (Some(c), Some(k)) => Some((c.pair(), k.pair())),
                _ => None,
            };
            crate::tls::client_config(crate::tls::ClientPem {
                identity,
                ca: t.ca.as_ref().map(|c| c.pair()),
            })
            .map_err(|e| {
                tracing::error!(error = %e, "plugin/forward: DNS over TLS client settings");
                e.to_string()
            })
        });
        let upstreams = cfg
            .to
            .iter()
            .enumerate()
            .map(|(i, a)| {
                if cfg.to_tls.get(i).copied().unwrap_or(false)
                    && let Some(config) = &tls_config
                {
                    let name = crate::tls::upstream_name(cfg.tls.servername.as_deref(), a.ip());
                    let target = TlsTarget::new(config.clone(), name);
                    return Upstream::with_tls(*a, target, metrics.clone());
                }
                let source_port = match cfg.source_port {
                    SourcePortMode::Random => SourcePort::Random,
                    SourcePortMode::Pooled => SourcePort::Pooled,
                    SourcePortMode::Auto if a.ip().is_loopback() => SourcePort::Pooled,
                    SourcePortMode::Auto => SourcePort::Random,
                };
                Upstream::with_options(*a, source_port, metrics.clone())
            })
            .collect();
        let probe = ProbeSettings {
            interval: cfg.health_check,
            domain: Name::from_ascii(&cfg.health_check_domain).unwrap_or_else(|_| Name::root()),
            recursion_desired: !cfg.health_check_no_rec,
            tcp: cfg.force_tcp,
        };
        Self {
            inner: Arc::new(Inner {
                limiter: Limiter::new(cfg.max_concurrent),
                cfg,
                upstreams,
                probe,
                inflight: AtomicU32::new(0),
                next_rr: AtomicUsize::new(0),
                metrics,
            }),
        }
    }

    /// The upstreams, in configured order (for tests and status).
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.inner.upstreams
    }

    #[cfg(test)]
    /// Queries currently waiting on upstreams.
    pub(crate) fn inflight(&self) -> u32 {
        self.inner.inflight.load(Ordering::Relaxed)
    }

    fn wants(&self, name: &str) -> bool {
        in_zone(name, &self.inner.cfg.from)
            && !self.inner.cfg.except.iter().any(|z| in_zone(name, z))
    }

    /// A slot of `max_concurrent` for a query from `client` (none needed without a limit).
    fn admit(&self, client: IpAddr) -> Admission {
        let inner = &self.inner;
        if inner.cfg.max_concurrent == 0 {
            return Admission::Admitted(None);
        }
        let key = ClientKey::of(client);
        match inner.limiter.acquire(key) {
            Some((ticket, evicted, took_other)) => {
                if took_other && let Some(m) = &inner.metrics {
                    m.forward_max_concurrent_rejects.inc();
                }
                let slot = Slot {
                    inner: inner.clone(),
                    key,
                    ticket,
                };
                Admission::Admitted(Some((slot, evicted)))
            }
            None => Admission::Refused,
        }
    }
}

impl Plugin for Forward {
    fn name(&self) -> &'static str {
        "forward"
    }

    fn handle(&self, req: &Request, next: Next) -> Reply {
        if !self.wants(req.lower_name()) {
            return next.run(req);
        }
        let inner = self.inner.clone();
        let slot = match self.admit(req.client.ip()) {
            Admission::Admitted(slot) => slot,
            Admission::Refused => {
                if let Some(m) = &inner.metrics {
                    m.forward_max_concurrent_rejects.inc();
                }
                // Not a written answer in CoreDNS (an error the server turns into REFUSED).
                return Reply::Ready(Response::unattributed_refused());
            }
        };
        inner.inflight.fetch_add(1, Ordering::AcqRel);
        let guard = InflightGuard(inner.clone());
        let req = req.clone();
        Reply::pending(async move {
            let _guard = guard;
            let work = async {
                match inner.forward(&req).await {
                    Some(resp) if inner.cfg.next.contains(&u16::from(resp.rcode)) => {
                        next.run(&req).resolve().await
                    }
                    Some(resp) => resp.attribute("forward"),
                    // No upstream answered: CoreDNS's server writes this SERVFAIL, not forward.
                    None => Response::servfail().attribute(""),
                }
            };
            let Some((_slot, evicted)) = slot else {
                return work.await;
            };
            tokio::select! {
                biased;
                resp = work => resp,
                // Evicted by a fairer client: this query gives its slot up.
                _ = evicted => Response::unattributed_refused(),
            }
        })
    }
}

/// Gives the records of `records` named `sent` (the 0x20-cased name) the client's `original`.
fn restore_case(records: &mut [Record], sent: &Name, original: &Name) {
    for r in records {
        if r.name == *sent {
            r.name = original.clone();
        }
    }
}

impl Inner {
    /// The order in which upstreams are tried for one query.
    fn order(&self) -> Vec<usize> {
        let n = self.upstreams.len();
        let mut idx: Vec<usize> = (0..n).collect();
        match self.cfg.policy {
            Policy::Sequential => {}
            Policy::RoundRobin => {
                let start = self.next_rr.fetch_add(1, Ordering::Relaxed) % n.max(1);
                idx.rotate_left(start);
            }
            Policy::Random => fastrand::shuffle(&mut idx),
        }
        let healthy: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|i| !self.upstreams[*i].is_down(self.cfg.max_fails))
            .collect();
        if healthy.is_empty() {
            if self.cfg.failfast_all_unhealthy_upstreams {
                return Vec::new();
            }
            // All down: try one anyway (it may have recovered before its probe noticed).
            idx.truncate(1);
            return idx;
        }
        healthy
    }

    /// Sends `req` upstream; `None` when no upstream answered.
    async fn forward(&self, req: &Request) -> Option<Response> {
        let started = Instant::now();
        let proto = if self.cfg.force_tcp {
            Proto::Tcp
        } else if self.cfg.prefer_udp {
            Proto::Udp
        } else {
            match req.transport {
                Transport::Udp => Proto::Udp,
                Transport::Tcp => Proto::Tcp,
            }
        };
        let mut edns = Edns::new();
        edns.set_max_payload(UPSTREAM_PAYLOAD);
        edns.set_dnssec_ok(req.dnssec_ok());
        let order = self.order();
        if order.is_empty() {
            tracing::warn!(name = %req.lower_name(), "plugin/forward: no healthy upstream");
        }
        let mut last_answer = None;
        for i in order {
            if started.elapsed() >= OVERALL_DEADLINE {
                break;
            }
            let up = &self.upstreams[i];
            // A DoT upstream is a stream: no UDP, no truncation retry.
            let proto = if up.is_tls() { Proto::Tls } else { proto };
            let sent = match SentQuery::new(
                req.query.clone(),
                req.recursion_desired,
                req.checking_disabled,
                Some(edns.clone()),
                self.cfg.case_randomization,
            ) {
                Ok(q) => q,
                Err(e) => {
                    tracing::warn!(error = %e, "plugin/forward: cannot encode query");
                    return None;
                }
            };
            let timeout = self
                .cfg
                .read_timeout
                .min(OVERALL_DEADLINE.saturating_sub(started.elapsed()));
            let t0 = Instant::now();
            let mut result = up.exchange(&sent, proto, timeout, self.cfg.expire).await;
            if proto == Proto::Udp
                && matches!(&result, Ok(m) if m.metadata.truncation)
                    | matches!(&result, Err(ExchangeError::Oversized(_)))
            {
                result = up
                    .exchange(&sent, Proto::Tcp, timeout, self.cfg.expire)
                    .await;
            }
            match result {
                Ok(mut msg) => {
                    if self.cfg.case_randomization {
                        let (sent_name, original) = (sent.question().name(), req.query.name());
                        restore_case(&mut msg.answers, sent_name, original);
                        restore_case(&mut msg.authorities, sent_name, original);
                        restore_case(&mut msg.additionals, sent_name, original);
                    }
                    let rcode = msg.metadata.response_code;
                    if let Some(m) = &self.metrics {
                        m.observe_forward(up.addr(), rcode, t0.elapsed());
                    }
                    let resp = upstream_response(msg);
                    if self.cfg.failover.contains(&u16::from(rcode)) {
                        last_answer = Some(resp);
                        continue;
                    }
                    return Some(resp);
                }
                Err(e) => {
                    if let Some(m) = &self.metrics {
                        m.forward_errors(up.addr());
                    }
                    log_failure(up, &e);
                    up.record_failure(&self.probe);
                }
            }
        }
        last_answer
    }
}

/// The answer passed to the client for an upstream's reply: its rcode, AA and RA flags and its
/// three record sections (fuzzed, with [`super::upstream::parse_reply`], by
/// `fuzz/fuzz_targets/forward_reply.rs`).
pub fn upstream_response(msg: Message) -> Response {
    Response {
        authoritative: msg.metadata.authoritative,
        recursion_available: msg.metadata.recursion_available,
        ..Response::with_records(
            msg.metadata.response_code,
            msg.answers.into(),
            msg.authorities.into(),
            msg.additionals.into(),
        )
    }
}

fn log_failure(up: &Upstream, e: &ExchangeError) {
    tracing::warn!(upstream = %up.addr(), error = %e, "plugin/forward: upstream failed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::corefile::CacheConfig;
    use crate::dns::handler::Chain;
    use crate::dns::plugins::cache::Cache;
    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{DNSClass, RData, RecordType};
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, UdpSocket};

    fn answer(query: &Message, n: u8) -> Vec<u8> {
        let mut m = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
        m.metadata.recursion_available = true;
        m.add_query(query.queries[0].clone());
        for i in 0..n {
            m.add_answer(Record::from_rdata(
                query.queries[0].name().clone(),
                60,
                RData::A(A::new(192, 0, 2, i + 1)),
            ));
        }
        m.to_vec().unwrap()
    }

    /// An upstream that answers UDP with TC=1 and no records, TCP with `n` A records.
    async fn truncating_upstream(n: u8) -> SocketAddr {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(addr).await.unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (len, peer) = udp.recv_from(&mut buf).await.unwrap();
                let q = Message::from_vec(&buf[..len]).unwrap();
                let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
                m.metadata.truncation = true;
                m.add_query(q.queries[0].clone());
                udp.send_to(&m.to_vec().unwrap(), peer).await.unwrap();
            }
        });
        tokio::spawn(async move {
            loop {
                let (mut s, _) = tcp.accept().await.unwrap();
                tokio::spawn(async move {
                    while let Ok(len) = s.read_u16().await {
                        let mut buf = vec![0u8; len as usize];
                        s.read_exact(&mut buf).await.unwrap();
                        let q = Message::from_vec(&buf).unwrap();
                        let out = answer(&q, n);
                        s.write_u16(out.len() as u16).await.unwrap();
                        s.write_all(&out).await.unwrap();
                    }
                });
            }
        });
        addr
    }

    fn request(name: &str) -> Request {
        Request::new(Name::from_ascii(name).unwrap(), RecordType::A)
    }

    #[tokio::test]
    async fn truncated_udp_answers_are_retried_over_tcp() {
        let up = truncating_upstream(40).await;
        let chain = Chain::new(vec![Arc::new(Forward::new(
            ForwardConfig::new(".".into(), vec![up]),
            None,
        ))]);
        let resp = chain.handle(&request("big.example.")).resolve().await;
        assert_eq!(resp.rcode, ResponseCode::NoError);
        assert_eq!(resp.answers.len(), 40);
        assert!(resp.recursion_available);
        // The TCP connection is reused for the next query.
        let resp = chain.handle(&request("big2.example.")).resolve().await;
        assert_eq!(resp.answers.len(), 40);
    }

    #[tokio::test]
    async fn except_and_foreign_zones_pass_on() {
        let up = truncating_upstream(1).await;
        let mut cfg = ForwardConfig::new("example.".into(), vec![up]);
        cfg.except = vec!["private.example.".into()];
        let chain = Chain::new(vec![Arc::new(Forward::new(cfg, None))]);
        for name in ["a.private.example.", "other.test."] {
            let resp = chain.handle(&request(name)).resolve().await;
            assert_eq!(resp.rcode, ResponseCode::Refused, "{name}: end of chain");
        }
        let resp = chain.handle(&request("a.example.")).resolve().await;
        assert_eq!(resp.answers.len(), 1);
    }

    #[tokio::test]
    async fn failing_upstreams_go_down_and_policies_order_the_rest() {
        let dead: SocketAddr = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        }; // closed again: port unreachable
        let up = truncating_upstream(1).await;
        let mut cfg = ForwardConfig::new(".".into(), vec![dead, up]);
        cfg.policy = Policy::Sequential;
        cfg.max_fails = 1;
        cfg.health_check = Duration::from_secs(60);
        let fwd = Arc::new(Forward::new(cfg, None));
        let chain = Chain::new(vec![fwd.clone()]);
        for _ in 0..3 {
            let resp = chain.handle(&request("x.example.")).resolve().await;
            assert_eq!(resp.answers.len(), 1);
        }
        // Failed twice (> max_fails 1): now skipped without being tried.
        assert_eq!(fwd.upstreams()[0].fails(), 2);
        assert!(fwd.upstreams()[0].is_down(1));
        assert_eq!(fwd.inner.order(), vec![1]);
        assert_eq!(fwd.inflight(), 0);

        let mut rr = ForwardConfig::new(".".into(), vec![up, up, up]);
        rr.policy = Policy::RoundRobin;
        let rr = Forward::new(rr, None);
        let firsts: Vec<usize> = (0..3).map(|_| rr.inner.order()[0]).collect();
        assert_eq!(firsts, vec![0, 1, 2]);
    }

    /// What the spoofing upstream sends before its real answer.
    #[derive(Clone, Copy)]
    struct Spoofs {
        /// Also send the right id and question with the letters' case flipped (0x20 breaker).
        flipped_case: bool,
        /// Send the real answer (192.0.2.1) after the spoofs.
        real: bool,
    }

    fn spoof_answer(id: u16, query: Query, last: u8) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Response, OpCode::Query);
        m.metadata.recursion_available = true;
        m.add_answer(Record::from_rdata(
            query.name().clone(),
            3600,
            RData::A(A::new(6, 6, 6, last)),
        ));
        m.add_query(query);
        m.to_vec().unwrap()
    }

    /// An upstream answering every query first with forged answers (A 6.6.6.x): a wrong id, a
    /// wrong name, a wrong type, a wrong class, the right everything from another port (and
    /// optionally the name's case flipped), then (optionally) the real answer 192.0.2.1.
    /// Reports the source port of each query it sees.
    async fn spoofing_upstream(
        spoofs: Spoofs,
    ) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<u16>) {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (len, peer) = udp.recv_from(&mut buf).await.unwrap();
                let _ = tx.send(peer.port());
                let q = Message::from_vec(&buf[..len]).unwrap();
                let id = q.metadata.id;
                let question = q.queries[0].clone();
                let mut wrong_name = question.clone();
                wrong_name.set_name(Name::from_ascii("evil.example.").unwrap());
                let mut wrong_type = question.clone();
                wrong_type.set_query_type(RecordType::AAAA);
                let mut wrong_class = question.clone();
                wrong_class.set_query_class(DNSClass::CH);
                udp.send_to(&spoof_answer(id.wrapping_add(1), question.clone(), 1), peer)
                    .await
                    .unwrap();
                udp.send_to(&spoof_answer(id, wrong_name, 2), peer)
                    .await
                    .unwrap();
                udp.send_to(&spoof_answer(id, wrong_type, 3), peer)
                    .await
                    .unwrap();
                udp.send_to(&spoof_answer(id, wrong_class, 4), peer)
                    .await
                    .unwrap();
                other
                    .send_to(&spoof_answer(id, question.clone(), 5), peer)
                    .await
                    .unwrap();
                if spoofs.flipped_case {
                    let flipped: String = question
                        .name()
                        .to_ascii()
                        .chars()
                        .map(|c| {
                            if c.is_ascii_uppercase() {
                                c.to_ascii_lowercase()
                            } else {
                                c.to_ascii_uppercase()
                            }
                        })
                        .collect();
                    let mut f = question.clone();
                    f.set_name(Name::from_ascii(&flipped).unwrap());
                    udp.send_to(&spoof_answer(id, f, 6), peer).await.unwrap();
                }
                if spoofs.real {
                    udp.send_to(&answer(&q, 1), peer).await.unwrap();
                }
            }
        });
        (addr, rx)
    }

    fn spoofed(resp: &Response) -> bool {
        resp.answers
            .iter()
            .any(|r| matches!(r.data, RData::A(a) if a.octets()[0] == 6))
    }

    fn addrs(resp: &Response) -> Vec<String> {
        resp.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.to_string()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn forged_answers_reach_neither_the_client_nor_the_cache() {
        for (mode, case) in [
            (SourcePortMode::Random, false),
            (SourcePortMode::Pooled, false),
            (SourcePortMode::Random, true),
        ] {
            let (up, mut ports) = spoofing_upstream(Spoofs {
                flipped_case: case,
                real: true,
            })
            .await;
            let mut cfg = ForwardConfig::new(".".into(), vec![up]);
            cfg.source_port = mode;
            cfg.case_randomization = case;
            let metrics = PluginMetrics::default();
            let fwd = Arc::new(Forward::new(cfg, Some(metrics.clone())));
            let cache = Arc::new(Cache::new(CacheConfig::new(vec![".".into()]), None));
            let chain = Chain::new(vec![cache, fwd.clone()]);
            let label = format!("{mode:?}, 0x20 {case}");
            for _ in 0..3 {
                let resp = chain.handle(&request("WwW.Example.")).resolve().await;
                assert_eq!(resp.rcode, ResponseCode::NoError, "{label}");
                assert_eq!(
                    addrs(&resp),
                    vec!["192.0.2.1"],
                    "{label}: the real answer only"
                );
                // The client's own spelling comes back, whatever case went upstream.
                assert_eq!(resp.answers[0].name.to_ascii(), "WwW.Example.", "{label}");
            }
            // Once from upstream, then from the cache (which holds the real answer).
            assert!(ports.try_recv().is_ok(), "{label}");
            assert!(
                ports.try_recv().is_err(),
                "{label}: answered from the cache"
            );
            // Wrong id, name, type, class (and case) were seen and counted; the datagram from
            // another port never reached the socket (connected).
            let seen = fwd.upstreams()[0].mismatches();
            assert_eq!(seen, 4 + u64::from(case), "{label}");
            let m = metrics
                .forward_mismatches
                .get_or_create(&vec![("to", up.to_string()), ("reason", "question".into())])
                .get();
            assert_eq!(m, 3 + u64::from(case), "{label}: metric by reason");
        }
    }

    #[tokio::test]
    async fn only_forged_answers_time_out_and_nothing_is_cached() {
        let (up, _ports) = spoofing_upstream(Spoofs {
            flipped_case: true,
            real: false,
        })
        .await;
        let mut cfg = ForwardConfig::new(".".into(), vec![up]);
        cfg.read_timeout = Duration::from_millis(300);
        cfg.case_randomization = true;
        cfg.max_fails = 0;
        let fwd = Arc::new(Forward::new(cfg, None));
        let cache = Arc::new(Cache::new(CacheConfig::new(vec![".".into()]), None));
        let chain = Chain::new(vec![cache.clone(), fwd.clone()]);
        for _ in 0..2 {
            let resp = chain.handle(&request("www.example.")).resolve().await;
            assert_eq!(resp.rcode, ResponseCode::ServFail);
            assert!(!spoofed(&resp));
        }
        assert_eq!(cache.len().0, 0, "no positive entry cached");
        // Five forged answers per query that went upstream (the cache may hold the SERVFAIL).
        assert!(fwd.upstreams()[0].mismatches() >= 5);
    }

    #[tokio::test]
    async fn random_source_ports_change_per_query_and_pooled_ones_are_reused() {
        for (mode, distinct) in [
            (SourcePortMode::Random, true),
            (SourcePortMode::Pooled, false),
        ] {
            let (up, mut ports) = spoofing_upstream(Spoofs {
                flipped_case: false,
                real: true,
            })
            .await;
            let mut cfg = ForwardConfig::new(".".into(), vec![up]);
            cfg.source_port = mode;
            let chain = Chain::new(vec![Arc::new(Forward::new(cfg, None))]);
            let mut seen = std::collections::HashSet::new();
            for i in 0..8 {
                let resp = chain
                    .handle(&request(&format!("n{i}.example.")))
                    .resolve()
                    .await;
                assert_eq!(addrs(&resp), vec!["192.0.2.1"]);
                seen.insert(ports.recv().await.unwrap());
            }
            if distinct {
                // The kernel draws each port at random: eight in a row could repeat only by a
                // rare coincidence, so allow one repeat.
                assert!(seen.len() >= 7, "{mode:?}: {seen:?}");
            } else {
                assert_eq!(seen.len(), 1, "{mode:?}: {seen:?}");
            }
        }
        // The default follows the upstream: pooled on loopback, random elsewhere.
        let auto = Forward::new(
            ForwardConfig::new(
                ".".into(),
                vec![
                    "127.0.0.1:53".parse().unwrap(),
                    "192.0.2.53:53".parse().unwrap(),
                ],
            ),
            None,
        );
        let modes: Vec<SourcePort> = auto.upstreams().iter().map(|u| u.source_port()).collect();
        assert_eq!(modes, vec![SourcePort::Pooled, SourcePort::Random]);
    }

    #[test]
    fn query_ids_and_cases_are_random() {
        let mut q = Query::query(
            Name::from_ascii("abcdefghijklmnop.example.").unwrap(),
            RecordType::A,
        );
        q.set_query_class(DNSClass::IN);
        let sent: Vec<SentQuery> = (0..64)
            .map(|_| SentQuery::new(q.clone(), true, false, None, true).unwrap())
            .collect();
        let ids: std::collections::HashSet<u16> = sent.iter().map(SentQuery::id).collect();
        // 64 draws from 65,536 values: a collision or two at most.
        assert!(ids.len() >= 62, "{} distinct ids", ids.len());
        let names: std::collections::HashSet<String> = sent
            .iter()
            .map(|s| s.question().name().to_ascii())
            .collect();
        assert!(names.len() >= 60, "{} distinct spellings", names.len());
        for s in &sent {
            assert_eq!(s.question().name(), q.name(), "same name, case aside");
            // The wire form carries the id and the randomised spelling.
            let m = Message::from_vec(s.bytes()).unwrap();
            assert_eq!(m.metadata.id, s.id());
            assert!(m.queries[0].name().eq_case(s.question().name()));
        }
    }

    fn client(ip: [u8; 4]) -> Request {
        let mut q = Query::query(Name::from_ascii("x.example.").unwrap(), RecordType::A);
        q.set_query_class(DNSClass::IN);
        Request::from_query(1, q, SocketAddr::from((ip, 5353)), Transport::Udp)
    }

    #[tokio::test]
    async fn a_flooding_client_cannot_starve_the_others() {
        // A silent upstream: every admitted query waits for its read timeout.
        let hole = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut cfg = ForwardConfig::new(".".into(), vec![hole.local_addr().unwrap()]);
        cfg.max_concurrent = 10;
        cfg.read_timeout = Duration::from_secs(30);
        cfg.max_fails = 0;
        let fwd = Arc::new(Forward::new(cfg, Some(PluginMetrics::default())));
        let chain = Arc::new(Chain::new(vec![fwd.clone()]));
        // Alone, the flooder may use the whole limit; the excess is refused at once.
        let mut flood = Vec::new();
        let mut refused_at_once = 0;
        for _ in 0..20 {
            match chain.handle(&client([10, 0, 0, 66])) {
                Reply::Ready(r) => {
                    assert_eq!(r.rcode, ResponseCode::Refused);
                    refused_at_once += 1;
                }
                pending => flood.push(tokio::spawn(pending.resolve())),
            }
        }
        tokio::task::yield_now().await;
        assert_eq!(refused_at_once, 10);
        assert_eq!(fwd.inner.limiter.held(), 10);
        // Newcomers still get slots: each takes the flooder's oldest.
        let mut others = Vec::new();
        for i in 1..=4u8 {
            match chain.handle(&client([10, 0, 0, i])) {
                Reply::Ready(r) => panic!("client {i} refused: {:?}", r.rcode),
                pending => others.push(tokio::spawn(pending.resolve())),
            }
        }
        assert_eq!(fwd.inner.limiter.held(), 10, "the limit holds");
        // The four evicted flood queries were answered REFUSED.
        let mut evicted = 0;
        for h in flood {
            if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_millis(50), h).await {
                assert_eq!(r.rcode, ResponseCode::Refused);
                evicted += 1;
            }
        }
        assert_eq!(evicted, 4);
        // The flooder now holds 6, each newcomer 1: a newcomer's second query may still take
        // one (6 >= 1 + 2), but the flooder's next one is refused (the others hold fewer).
        assert!(
            matches!(chain.handle(&client([10, 0, 0, 66])), Reply::Ready(r) if r.rcode == ResponseCode::Refused)
        );
        let second = chain.handle(&client([10, 0, 0, 1]));
        assert!(
            !matches!(second, Reply::Ready(_)),
            "a light client's second query is admitted"
        );
        drop(second);
        // Cancelled queries give their slots back.
        for h in others {
            h.abort();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The light client's second query had evicted a fifth flood query.
        assert_eq!(fwd.inner.limiter.held(), 5);
    }
}
