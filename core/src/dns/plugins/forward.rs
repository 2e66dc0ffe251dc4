//! `forward`: sends queries to upstream resolvers (CoreDNS's forward plugin).
//!
//! Upstreams are tried in the policy's order, skipping those that are down (more than
//! `max_fails` failures in a row) unless all are; a failed exchange marks the upstream and
//! starts its health probe. UDP answers with TC=1 are retried over TCP. Queries beyond
//! `max_concurrent` in flight are answered REFUSED at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message};
use hickory_proto::rr::Name;

use super::metrics::PluginMetrics;
use super::upstream::{ExchangeError, ProbeSettings, Proto, Upstream, encode_query};
use crate::dns::corefile::names::in_zone;
use crate::dns::corefile::{ForwardConfig, Policy};
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

impl Forward {
    /// A forwarder for `cfg`.
    pub fn new(cfg: ForwardConfig, metrics: Option<PluginMetrics>) -> Self {
        let upstreams = cfg.to.iter().map(|a| Upstream::new(*a)).collect();
        let probe = ProbeSettings {
            interval: cfg.health_check,
            domain: Name::from_ascii(&cfg.health_check_domain).unwrap_or_else(|_| Name::root()),
            recursion_desired: !cfg.health_check_no_rec,
            tcp: cfg.force_tcp,
        };
        Self {
            inner: Arc::new(Inner {
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

    /// Queries currently waiting on upstreams.
    pub fn inflight(&self) -> u32 {
        self.inner.inflight.load(Ordering::Relaxed)
    }

    fn wants(&self, name: &str) -> bool {
        in_zone(name, &self.inner.cfg.from)
            && !self.inner.cfg.except.iter().any(|z| in_zone(name, z))
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
        let max = inner.cfg.max_concurrent;
        let before = inner.inflight.fetch_add(1, Ordering::AcqRel);
        let guard = InflightGuard(inner.clone());
        if max != 0 && before >= max {
            drop(guard);
            if let Some(m) = &inner.metrics {
                m.forward_max_concurrent_rejects.inc();
            }
            return Reply::Ready(Response::refused());
        }
        let req = req.clone();
        Reply::pending(async move {
            let _guard = guard;
            match inner.forward(&req).await {
                Some(resp) if inner.cfg.next.contains(&u16::from(resp.rcode)) => {
                    next.run(&req).resolve().await
                }
                Some(resp) => resp,
                None => Response::servfail(),
            }
        })
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
            let id = fastrand::u16(..);
            let bytes = match encode_query(
                id,
                req.query.clone(),
                req.recursion_desired,
                req.checking_disabled,
                Some(edns.clone()),
            ) {
                Ok(b) => b,
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
            let mut result = up
                .exchange(&bytes, id, proto, timeout, self.cfg.expire)
                .await;
            if proto == Proto::Udp && matches!(&result, Ok(m) if m.metadata.truncation) {
                result = up
                    .exchange(&bytes, id, Proto::Tcp, timeout, self.cfg.expire)
                    .await;
            }
            match result {
                Ok(msg) => {
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
    use crate::dns::handler::Chain;
    use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record, RecordType};
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
}
