//! One upstream DNS server: UDP, TCP or DNS over TLS exchanges, failure counting and a
//! background health probe with backoff while it fails.
//!
//! TCP and TLS connections are kept in a pool per upstream (up to 64 idle ones, closed after
//! `expire` unused) and reused: a query takes an idle connection, or opens one, and gives it
//! back after its answer. A DoT upstream is always reached over TLS (its health probe too), so
//! one TLS handshake serves many queries.
//!
//! Anti-spoofing (an off-path attacker must guess everything an answer has to echo):
//! - query ids come from a cryptographically secure generator ([`rand::rng`], ChaCha12
//!   reseeded from the operating system), not a predictable one;
//! - an answer is accepted only when its id, question name (case-insensitively, or exactly
//!   with 0x20 case randomisation), type and class are those of the query; other datagrams
//!   are counted, logged (rate-limited) and ignored while the exchange waits on;
//! - UDP sockets are connected, so the kernel drops datagrams from any other address or port;
//! - with a fresh source port per query (the default for non-loopback upstreams) each UDP
//!   query goes out from a new socket bound to port 0, for which Linux draws the port at
//!   random from `net.ipv4.ip_local_port_range`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use rand::RngExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::client::TlsStream;

use super::metrics::PluginMetrics;

/// Idle connections kept per upstream and protocol.
const POOL_LIMIT: usize = 64;
/// Longest pause between health probes of a failing upstream.
const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// Deadline of one health probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Receive buffer of one UDP exchange. Upstreams are told 1,232 bytes (EDNS); a datagram that
/// fills this buffer may have been cut and is retried over TCP like a truncated answer.
const UDP_BUFFER: usize = 4096;
/// At most one mismatch warning per upstream in this interval (the rest are counted).
const MISMATCH_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why an exchange with an upstream failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// Socket error (connection refused, unreachable, reset).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// No answer within the read timeout.
    #[error("timed out")]
    Timeout,
    /// The answer could not be parsed.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// A UDP datagram as large as the receive buffer: possibly cut, to be retried over TCP.
    #[error("UDP answer of {0} bytes or more")]
    Oversized(usize),
}

/// The transport used for one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// UDP (retried over TCP when truncated).
    Udp,
    /// TCP.
    Tcp,
    /// DNS over TLS.
    Tls,
}

/// Why a datagram or TCP message from an upstream was not taken as the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// Another query id (a late answer to an earlier query, or a guess).
    Id,
    /// The right id but another question name, type or class (or case, with 0x20).
    Question,
    /// The right id but not a parsable DNS response.
    Malformed,
}

impl Mismatch {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Mismatch::Id => "id",
            Mismatch::Question => "question",
            Mismatch::Malformed => "malformed",
        }
    }
}

/// A query as sent upstream: its wire form and what an answer must echo.
#[derive(Debug, Clone)]
pub struct SentQuery {
    bytes: Vec<u8>,
    id: u16,
    question: Query,
    exact_case: bool,
}

impl SentQuery {
    /// Encodes `query` with a fresh id from a cryptographically secure generator; with
    /// `randomise_case` the letters of the name get a random case (0x20) which the answer
    /// must echo exactly.
    pub fn new(
        query: Query,
        recursion_desired: bool,
        checking_disabled: bool,
        edns: Option<Edns>,
        randomise_case: bool,
    ) -> Result<Self, hickory_proto::ProtoError> {
        let mut rng = rand::rng();
        let id: u16 = rng.random();
        let mut question = query;
        if randomise_case {
            question.set_name(randomised_case(question.name(), &mut rng)?);
        }
        let bytes = encode_query(
            id,
            question.clone(),
            recursion_desired,
            checking_disabled,
            edns,
        )?;
        Ok(Self {
            bytes,
            id,
            question,
            exact_case: randomise_case,
        })
    }

    /// The query id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The question as sent (with its randomised case, if any).
    pub fn question(&self) -> &Query {
        &self.question
    }

    /// The wire bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The answer in `buf` when it answers this query, else why not.
    pub(crate) fn check(&self, buf: &[u8]) -> Result<Message, Mismatch> {
        if buf.len() < 12 || u16::from_be_bytes([buf[0], buf[1]]) != self.id {
            return Err(Mismatch::Id);
        }
        // Not a response, another opcode than QUERY, or unparsable: [`parse_reply`] decides.
        let Ok(Some(msg)) = parse_reply(buf, self.id) else {
            return Err(Mismatch::Malformed);
        };
        let [q] = msg.queries.as_slice() else {
            return Err(Mismatch::Question);
        };
        let name_ok = if self.exact_case {
            q.name().eq_case(self.question.name())
        } else {
            q.name() == self.question.name()
        };
        if !name_ok
            || q.query_type() != self.question.query_type()
            || q.query_class() != self.question.query_class()
        {
            return Err(Mismatch::Question);
        }
        Ok(msg)
    }
}

/// `name` with each ASCII letter's case drawn at random.
fn randomised_case(
    name: &Name,
    rng: &mut impl rand::Rng,
) -> Result<Name, hickory_proto::ProtoError> {
    let mut bits = 0u64;
    let mut left = 0u32;
    let labels: Vec<Vec<u8>> = name
        .iter()
        .map(|label| {
            label
                .iter()
                .map(|&b| {
                    if !b.is_ascii_alphabetic() {
                        return b;
                    }
                    if left == 0 {
                        bits = rng.next_u64();
                        left = 64;
                    }
                    let upper = bits & 1 == 1;
                    bits >>= 1;
                    left -= 1;
                    if upper {
                        b.to_ascii_uppercase()
                    } else {
                        b.to_ascii_lowercase()
                    }
                })
                .collect()
        })
        .collect();
    let mut out = Name::from_labels(labels)?;
    out.set_fqdn(name.is_fqdn());
    Ok(out)
}

/// How UDP sockets are used for an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourcePort {
    /// A new socket, hence a new random source port, for every query (not reused).
    Random,
    /// Sockets reused from a pool (faster; the port stays the same for a while).
    Pooled,
}

/// Mismatch counting and its rate-limited log.
#[derive(Debug)]
struct MismatchLog {
    total: AtomicU64,
    /// (last warning, mismatches not yet reported).
    last: Mutex<(Option<Instant>, u64)>,
}

/// How a DNS over TLS upstream is reached: the client settings and the name its certificate
/// must carry (an error, reported at each exchange, when they could not be built).
#[derive(Clone)]
pub(crate) struct TlsTarget {
    connector: Result<
        (
            tokio_rustls::TlsConnector,
            rustls::pki_types::ServerName<'static>,
        ),
        String,
    >,
}

impl TlsTarget {
    /// A target from built settings.
    pub(crate) fn new(
        config: Result<Arc<rustls::ClientConfig>, String>,
        name: Result<rustls::pki_types::ServerName<'static>, String>,
    ) -> Self {
        Self {
            connector: config.and_then(|c| Ok((tokio_rustls::TlsConnector::from(c), name?))),
        }
    }
}

/// An upstream server and its state.
pub struct Upstream {
    addr: SocketAddr,
    /// Set for a DNS over TLS upstream.
    tls: Option<TlsTarget>,
    tls_pool: Mutex<Vec<(TlsStream<TcpStream>, Instant)>>,
    /// TLS handshakes completed (connections opened to a DoT upstream).
    tls_handshakes: AtomicU64,
    source_port: SourcePort,
    fails: AtomicU32,
    probing: AtomicBool,
    udp: Mutex<Vec<(UdpSocket, Instant)>>,
    tcp: Mutex<Vec<(TcpStream, Instant)>>,
    mismatches: MismatchLog,
    metrics: Option<PluginMetrics>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.addr)
            .field("source_port", &self.source_port)
            .field("fails", &self.fails())
            .field("mismatches", &self.mismatches())
            .finish_non_exhaustive()
    }
}

/// Settings of the health probe.
#[derive(Debug, Clone)]
pub(crate) struct ProbeSettings {
    /// First interval between probes (doubles while it keeps failing, up to 5 s).
    pub interval: Duration,
    /// The name probed (NS query).
    pub domain: Name,
    /// Set RD on probes.
    pub recursion_desired: bool,
    /// Probe over TCP.
    pub tcp: bool,
}

impl Upstream {
    /// A new upstream, healthy, with the default source port use: [`SourcePort::Pooled`] for a
    /// loopback address, [`SourcePort::Random`] for any other.
    pub fn new(addr: SocketAddr) -> Arc<Self> {
        let source_port = if addr.ip().is_loopback() {
            SourcePort::Pooled
        } else {
            SourcePort::Random
        };
        Self::with_options(addr, source_port, None)
    }

    /// A new upstream, healthy, using UDP sockets as `source_port` says and counting
    /// mismatched answers in `metrics`.
    pub(crate) fn with_options(
        addr: SocketAddr,
        source_port: SourcePort,
        metrics: Option<PluginMetrics>,
    ) -> Arc<Self> {
        Self::build(addr, source_port, None, metrics)
    }

    /// A new DNS over TLS upstream, healthy.
    pub(crate) fn with_tls(
        addr: SocketAddr,
        target: TlsTarget,
        metrics: Option<PluginMetrics>,
    ) -> Arc<Self> {
        Self::build(addr, SourcePort::Pooled, Some(target), metrics)
    }

    fn build(
        addr: SocketAddr,
        source_port: SourcePort,
        tls: Option<TlsTarget>,
        metrics: Option<PluginMetrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            addr,
            tls,
            tls_pool: Mutex::new(Vec::new()),
            tls_handshakes: AtomicU64::new(0),
            source_port,
            fails: AtomicU32::new(0),
            probing: AtomicBool::new(false),
            udp: Mutex::new(Vec::new()),
            tcp: Mutex::new(Vec::new()),
            mismatches: MismatchLog {
                total: AtomicU64::new(0),
                last: Mutex::new((None, 0)),
            },
            metrics,
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it is reached over TLS (`tls://`).
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    #[cfg(test)]
    /// TLS connections opened to it so far (each a full handshake); the rest of its queries
    /// reused them.
    pub(crate) fn tls_handshakes(&self) -> u64 {
        self.tls_handshakes.load(Ordering::Relaxed)
    }

    /// How its UDP sockets are used.
    pub fn source_port(&self) -> SourcePort {
        self.source_port
    }

    /// Failures since the last successful probe.
    pub fn fails(&self) -> u32 {
        self.fails.load(Ordering::Relaxed)
    }

    /// Messages received from it (or from a spoofer) that did not answer the query they were
    /// read for.
    pub fn mismatches(&self) -> u64 {
        self.mismatches.total.load(Ordering::Relaxed)
    }

    /// Down when it failed more than `max_fails` times (never with `max_fails` 0).
    pub(crate) fn is_down(&self, max_fails: u32) -> bool {
        max_fails != 0 && self.fails() > max_fails
    }

    /// Records a failed exchange and starts the health probe if it is not running.
    pub(crate) fn record_failure(self: &Arc<Self>, probe: &ProbeSettings) {
        self.fails.fetch_add(1, Ordering::Relaxed);
        if !self.probing.swap(true, Ordering::AcqRel) {
            let weak = Arc::downgrade(self);
            let probe = probe.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(probe_loop(weak, probe));
            } else {
                self.probing.store(false, Ordering::Release);
            }
        }
    }

    /// Sends `query` and waits for its answer: the first message whose id and question match
    /// (others are counted as mismatches and skipped).
    pub async fn exchange(
        &self,
        query: &SentQuery,
        proto: Proto,
        timeout: Duration,
        expire: Duration,
    ) -> Result<Message, ExchangeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        if let Some(target) = &self.tls {
            return self.exchange_tls(target, query, deadline, expire).await;
        }
        match proto {
            Proto::Udp => self.exchange_udp(query, deadline, expire).await,
            Proto::Tcp | Proto::Tls => self.exchange_tcp(query, deadline, expire).await,
        }
    }

    fn mismatch(&self, query: &SentQuery, why: Mismatch, proto: Proto) {
        // Late answers to earlier queries on a pooled socket are expected and not logged.
        let expected = why == Mismatch::Id && self.source_port == SourcePort::Pooled;
        self.mismatches.total.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.forward_mismatch(self.addr, why.label());
        }
        if expected {
            return;
        }
        let mut last = self
            .mismatches
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        last.1 += 1;
        if last.0.is_some_and(|t| t.elapsed() < MISMATCH_LOG_INTERVAL) {
            return;
        }
        let count = std::mem::take(&mut last.1);
        last.0 = Some(Instant::now());
        drop(last);
        tracing::warn!(
            upstream = %self.addr,
            reason = why.label(),
            ?proto,
            name = %query.question.name(),
            count,
            "plugin/forward: ignored answers that do not match the query (possible spoofing); \
             at most one such warning per upstream every 10 s"
        );
    }

    fn take<T>(pool: &Mutex<Vec<(T, Instant)>>, expire: Duration) -> Option<T> {
        let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((conn, used)) = pool.pop() {
            if used.elapsed() < expire {
                return Some(conn);
            }
        }
        None
    }

    fn give<T>(pool: &Mutex<Vec<(T, Instant)>>, conn: T) {
        let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_LIMIT {
            pool.push((conn, Instant::now()));
        }
    }

    async fn exchange_udp(
        &self,
        query: &SentQuery,
        deadline: tokio::time::Instant,
        expire: Duration,
    ) -> Result<Message, ExchangeError> {
        let pooled = self.source_port == SourcePort::Pooled;
        let sock = match pooled.then(|| Self::take(&self.udp, expire)).flatten() {
            Some(s) => s,
            None => {
                let local: IpAddr = if self.addr.is_ipv4() {
                    Ipv4Addr::UNSPECIFIED.into()
                } else {
                    Ipv6Addr::UNSPECIFIED.into()
                };
                // Port 0: the kernel draws a random free port.
                let s = UdpSocket::bind(SocketAddr::new(local, 0)).await?;
                // Connected: datagrams from any other address or port are dropped.
                s.connect(self.addr).await?;
                s
            }
        };
        sock.send(query.bytes()).await?;
        let mut buf = vec![0u8; UDP_BUFFER];
        loop {
            let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Ok(r) => r?,
                Err(_) => return Err(ExchangeError::Timeout),
            };
            if n == buf.len() {
                return Err(ExchangeError::Oversized(n));
            }
            match query.check(&buf[..n]) {
                Ok(msg) => {
                    if pooled {
                        Self::give(&self.udp, sock);
                    }
                    return Ok(msg);
                }
                Err(why) => self.mismatch(query, why, Proto::Udp),
            }
        }
    }

    async fn exchange_tcp(
        &self,
        query: &SentQuery,
        deadline: tokio::time::Instant,
        expire: Duration,
    ) -> Result<Message, ExchangeError> {
        // A pooled connection may have been closed by the upstream: one retry on a fresh one.
        if let Some(stream) = Self::take(&self.tcp, expire)
            && let Ok(Ok((msg, stream))) =
                tokio::time::timeout_at(deadline, self.tcp_roundtrip(stream, query)).await
        {
            Self::give(&self.tcp, stream);
            return Ok(msg);
        }
        let fut = async {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.tcp_roundtrip(stream, query).await
        };
        match tokio::time::timeout_at(deadline, fut).await {
            Ok(Ok((msg, stream))) => {
                Self::give(&self.tcp, stream);
                Ok(msg)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ExchangeError::Timeout),
        }
    }

    async fn exchange_tls(
        &self,
        target: &TlsTarget,
        query: &SentQuery,
        deadline: tokio::time::Instant,
        expire: Duration,
    ) -> Result<Message, ExchangeError> {
        let (connector, name) = target
            .connector
            .as_ref()
            .map_err(|e| ExchangeError::Io(io::Error::other(e.clone())))?;
        // A pooled connection may have been closed by the upstream: one retry on a fresh one.
        if let Some(stream) = Self::take(&self.tls_pool, expire)
            && let Ok(Ok((msg, stream))) =
                tokio::time::timeout_at(deadline, self.stream_roundtrip(stream, query, Proto::Tls))
                    .await
        {
            Self::give(&self.tls_pool, stream);
            return Ok(msg);
        }
        let fut = async {
            let tcp = TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let stream = connector.connect(name.clone(), tcp).await?;
            self.tls_handshakes.fetch_add(1, Ordering::Relaxed);
            self.stream_roundtrip(stream, query, Proto::Tls).await
        };
        match tokio::time::timeout_at(deadline, fut).await {
            Ok(Ok((msg, stream))) => {
                Self::give(&self.tls_pool, stream);
                Ok(msg)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ExchangeError::Timeout),
        }
    }

    async fn tcp_roundtrip(
        &self,
        stream: TcpStream,
        query: &SentQuery,
    ) -> Result<(Message, TcpStream), ExchangeError> {
        self.stream_roundtrip(stream, query, Proto::Tcp).await
    }

    /// One length-prefixed exchange on a TCP or TLS stream.
    async fn stream_roundtrip<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        query: &SentQuery,
        proto: Proto,
    ) -> Result<(Message, S), ExchangeError> {
        let bytes = query.bytes();
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        framed.extend_from_slice(bytes);
        stream.write_all(&framed).await?;
        stream.flush().await?;
        loop {
            let len = stream.read_u16().await? as usize;
            let mut buf = vec![0u8; len];
            stream.read_exact(&mut buf).await?;
            match query.check(&buf) {
                Ok(msg) => return Ok((msg, stream)),
                Err(why) => self.mismatch(query, why, proto),
            }
        }
    }
}

/// Parses one message read from an upstream as the reply to the query with id `id`:
/// `Ok(None)` when it is not that reply (too short for a header, another id, not a response,
/// or an opcode other than QUERY: skip it and keep reading), `Ok(Some(_))` for the reply,
/// `Err(Malformed)` when the id matches but the message does not parse. The only place
/// upstream bytes are decoded (fuzzed by `fuzz/fuzz_targets/forward_reply.rs`).
///
/// The opcode check matters beyond spoofing: an UPDATE message may carry records with empty
/// data, which are invalid in a QUERY answer, so passing them on would send the client an
/// answer it cannot parse.
pub fn parse_reply(bytes: &[u8], id: u16) -> Result<Option<Message>, ExchangeError> {
    if bytes.len() < 12 || u16::from_be_bytes([bytes[0], bytes[1]]) != id {
        return Ok(None);
    }
    let msg = Message::from_vec(bytes).map_err(|e| ExchangeError::Malformed(e.to_string()))?;
    if msg.metadata.message_type != MessageType::Response || msg.metadata.op_code != OpCode::Query {
        return Ok(None);
    }
    Ok(Some(msg))
}

/// Encodes a query for `name`/`record_type` with id `id`.
pub fn encode_query(
    id: u16,
    query: Query,
    recursion_desired: bool,
    checking_disabled: bool,
    edns: Option<Edns>,
) -> Result<Vec<u8>, hickory_proto::ProtoError> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = recursion_desired;
    msg.metadata.checking_disabled = checking_disabled;
    msg.add_query(query);
    if let Some(e) = edns {
        msg.set_edns(e);
    }
    msg.to_vec()
}

async fn probe_loop(upstream: Weak<Upstream>, probe: ProbeSettings) {
    let mut interval = probe.interval.max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(interval).await;
        let Some(up) = upstream.upgrade() else {
            return; // the forwarder was replaced (reload) or dropped
        };
        let mut q = Query::query(probe.domain.clone(), RecordType::NS);
        q.set_query_class(DNSClass::IN);
        let ok = match SentQuery::new(q, probe.recursion_desired, false, None, false) {
            Ok(sent) => {
                let proto = if probe.tcp { Proto::Tcp } else { Proto::Udp };
                up.exchange(&sent, proto, PROBE_TIMEOUT, Duration::ZERO)
                    .await
                    .is_ok()
            }
            Err(_) => false,
        };
        if ok {
            tracing::info!(upstream = %up.addr, "plugin/forward: upstream is healthy again");
            up.fails.store(0, Ordering::Relaxed);
            up.probing.store(false, Ordering::Release);
            return;
        }
        tracing::debug!(upstream = %up.addr, "plugin/forward: health probe failed");
        interval = (interval * 2).min(MAX_PROBE_INTERVAL.max(probe.interval));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record};
    use std::net::Ipv4Addr;

    /// Found by the `forward_reply` fuzz target: a reply with the query's id but opcode UPDATE
    /// whose additional section holds a record with empty data (valid only in UPDATE). Passed
    /// on, it made an answer the client could not parse.
    const UPDATE_REPLY: &[u8] = &[
        0xbe, 0xef, 0x2f, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x07, 0x64, 0x78,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x70, 0x6c, 0x65, 0x03, 0x6f, 0x72, 0x67, 0x00,
        0x32, 0x01, 0x00, 0x01, 0xc0, 0x0c, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2c, 0x00,
        0x04, 0x5d, 0xb8, 0xd8, 0x22, 0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x61, 0x6d,
        0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x70, 0x6c, 0x65, 0x03, 0x6f, 0x72, 0x67,
        0x00, 0x00, 0x01, 0x00, 0x01, 0xc0, 0x0c, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2c,
        0x00, 0x04, 0x5d, 0xb8, 0xd8, 0x22, 0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00,
    ];

    fn reply(id: u16, message_type: MessageType, op_code: OpCode) -> Vec<u8> {
        let mut msg = Message::new(id, message_type, op_code);
        let name = Name::from_ascii("example.org.").unwrap();
        msg.add_query(Query::query(name.clone(), RecordType::A));
        msg.add_answer(Record::from_rdata(
            name,
            60,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
        ));
        msg.to_vec().unwrap()
    }

    #[test]
    fn parse_reply_accepts_the_matching_response() {
        let msg = parse_reply(&reply(7, MessageType::Response, OpCode::Query), 7)
            .unwrap()
            .expect("the reply");
        assert_eq!(msg.metadata.id, 7);
        assert_eq!(msg.answers.len(), 1);
    }

    #[test]
    fn parse_reply_skips_other_ids_short_messages_queries_and_other_opcodes() {
        let skipped = |bytes: &[u8], id: u16| matches!(parse_reply(bytes, id), Ok(None));
        assert!(skipped(&reply(8, MessageType::Response, OpCode::Query), 7));
        assert!(skipped(&[0, 7, 0x81], 7));
        assert!(skipped(&reply(7, MessageType::Query, OpCode::Query), 7));
        assert!(skipped(&reply(7, MessageType::Response, OpCode::Status), 7));
        assert!(skipped(UPDATE_REPLY, 0xbeef));
    }

    #[test]
    fn parse_reply_reports_a_malformed_reply_with_the_id() {
        let mut bytes = reply(7, MessageType::Response, OpCode::Query);
        bytes.truncate(bytes.len() - 3);
        match parse_reply(&bytes, 7) {
            Err(ExchangeError::Malformed(m)) => assert!(!m.is_empty()),
            other => panic!("expected Malformed, got {other:?}"),
        }
    }
}
