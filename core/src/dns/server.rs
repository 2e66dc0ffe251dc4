//! The DNS listener: UDP and TCP on the same address, feeding a plugin [`Chain`].
//!
//! UDP runs one receive loop per worker, each on its own `SO_REUSEPORT` socket, so the kernel
//! spreads clients over the cores. A loop takes what is queued with one `recvmmsg` (up to 32
//! queries, [`super::udp_mmsg`]) and sends the answers that are ready with one `sendmmsg`.
//! A request whose answer is ready (the cluster zone) is answered from the loop itself; a pending one (forwarding) gets a task of its own, so a slow
//! upstream never stalls the loop. UDP answers are capped at the advertised payload size, and
//! large ones can be rate-limited per client network ([`super::rrl`]).
//!
//! TCP serves each connection on its own task. Pipelined queries are answered concurrently and
//! out of order (RFC 7766 §6.2.1.1): an answer that is ready goes out at once, a pending one
//! (forwarding) is awaited beside the next queries, up to
//! [`ServerConfig::max_tcp_in_flight`] per connection (then the connection is not read until
//! one completes). Connections are limited in total and per client address; when the server
//! is near its limit it closes the longest-idle connections (nothing in flight) to keep room
//! for new clients, as Knot and Unbound do, and an idle connection is closed after
//! [`ServerConfig::tcp_idle_timeout`]. A panic in a plugin becomes SERVFAIL and is counted.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use socket2::{Domain, Protocol, Socket, Type};
use std::os::fd::AsRawFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::answer_cache::{AnswerCache, AnswerReuse};
use super::error::DnsError;
use super::handler::{BoxFuture, Chain, Reply, Request, Response, Transport};
use super::metrics::{DnsMetrics, Exchange, Recorder};
use super::rrl::{LARGE_ANSWER, LargeAnswerLimit, LargeAnswerLimiter};
use super::udp_mmsg::{self, RecvBatch};
use super::wire::{Encoder, Parsed, parse_request};

/// Listener settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address for both UDP and TCP (port 0: any free port, the same for both).
    pub listen: SocketAddr,
    /// UDP receive loops (0: one per available core).
    pub udp_workers: usize,
    /// TCP connections are closed after this long without a request.
    pub tcp_idle_timeout: Duration,
    /// Concurrent TCP connections accepted. Near this limit (the last sixteenth is kept for
    /// new clients) the longest-idle connections are closed first.
    pub max_tcp_connections: usize,
    /// Concurrent TCP connections from one client address; beyond it, that address's own
    /// longest-idle connection is closed, or the new one is refused when all are busy.
    pub max_tcp_per_source: usize,
    /// Queries of one TCP connection answered concurrently; further ones wait unread.
    pub max_tcp_in_flight: usize,
    /// Rate limit of UDP answers larger than [`super::rrl::LARGE_ANSWER`] bytes (`None`:
    /// unlimited; every UDP answer is capped at the advertised payload size regardless).
    pub large_answers: Option<LargeAnswerLimit>,
    /// Bytes of encoded UDP answers each UDP worker keeps to send again to the same question
    /// ([`super::answer_cache`]; 0: none).
    pub answer_cache_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 53)),
            udp_workers: 0,
            tcp_idle_timeout: Duration::from_secs(10),
            max_tcp_connections: 1024,
            max_tcp_per_source: 64,
            max_tcp_in_flight: 32,
            large_answers: None,
            answer_cache_bytes: super::answer_cache::DEFAULT_LIMIT_BYTES,
        }
    }
}

/// Bound DNS sockets, ready to serve.
pub struct DnsServer {
    udp: Vec<UdpSocket>,
    tcp: TcpListener,
    local: SocketAddr,
    config: ServerConfig,
    limiter: Arc<LargeAnswerLimiter>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("local", &self.local)
            .field("udp_workers", &self.udp.len())
            .finish()
    }
}

fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Room for bursts: the kernel drops datagrams once the receive buffer is full.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

pub(crate) fn tcp_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

impl DnsServer {
    /// Binds UDP and TCP on `config.listen`. Must run inside a tokio runtime.
    pub fn bind(config: ServerConfig) -> Result<Self, DnsError> {
        let workers = if config.udp_workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.udp_workers
        };
        let bind_err = |source| DnsError::Bind {
            addr: config.listen,
            source,
        };
        // With port 0 the UDP port is chosen first; TCP must get the same one, retry if taken.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let first = udp_socket(config.listen).map_err(bind_err)?;
            let local = first.local_addr().map_err(bind_err)?;
            let tcp = match tcp_listener(local) {
                Ok(l) => l,
                Err(e) if config.listen.port() == 0 && attempts < 20 => {
                    tracing::debug!(%local, error = %e, "TCP port taken, picking another");
                    continue;
                }
                Err(e) => return Err(bind_err(e)),
            };
            let mut udp = vec![first];
            for _ in 1..workers {
                udp.push(udp_socket(local).map_err(bind_err)?);
            }
            let limiter = Arc::new(LargeAnswerLimiter::new(config.large_answers));
            return Ok(Self {
                udp,
                tcp,
                local,
                config,
                limiter,
            });
        }
    }

    /// The bound address (with the actual port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The large-answer limiter, to change its setting while serving (Corefile reload).
    pub(crate) fn limiter(&self) -> Arc<LargeAnswerLimiter> {
        self.limiter.clone()
    }

    /// Serves until the returned future is dropped (or the task is aborted).
    pub async fn serve(self, chain: Chain, metrics: Arc<DnsMetrics>) {
        let mut tasks = JoinSet::new();
        let answers = Arc::new(AnswerCache::new(self.config.answer_cache_bytes));
        for socket in self.udp {
            let chain = chain.clone();
            let metrics = metrics.clone();
            let limiter = self.limiter.clone();
            let reuse = AnswerReuse::new(answers.clone());
            tasks.spawn(udp_loop(Arc::new(socket), chain, metrics, limiter, reuse));
        }
        tasks.spawn(tcp_accept_loop(self.tcp, chain, metrics, self.config));
        // The loops only end if their task panics; keep serving with the others.
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "a DNS listener loop ended");
            }
        }
    }
}

/// Runs the chain on `req`, turning a panic into SERVFAIL.
pub(crate) fn run_chain(chain: &Chain, req: &Request, metrics: &DnsMetrics) -> Reply {
    match std::panic::catch_unwind(AssertUnwindSafe(|| chain.handle(req))) {
        Ok(reply) => reply,
        Err(_) => {
            metrics.panicked();
            tracing::error!(name = %req.name(), "a DNS plugin panicked; answered SERVFAIL");
            Reply::Ready(Response::servfail())
        }
    }
}

async fn udp_loop(
    socket: Arc<UdpSocket>,
    chain: Chain,
    metrics: Arc<DnsMetrics>,
    limiter: Arc<LargeAnswerLimiter>,
    mut cache: AnswerReuse,
) {
    let fd = socket.as_raw_fd();
    let mut batch = RecvBatch::new();
    let mut encoder = Encoder::new();
    let mut recorder = metrics.recorder();
    // Answers of one batch, sent together: the bytes (buffers reused across batches), where
    // they go, and what the metrics record once they are sent.
    let mut out_bufs: Vec<Vec<u8>> = (0..udp_mmsg::BATCH).map(|_| Vec::new()).collect();
    let mut outgoing: Vec<Outgoing> = Vec::with_capacity(udp_mmsg::BATCH);
    loop {
        if let Err(e) = socket.readable().await {
            tracing::debug!(error = %e, "UDP readiness error");
            continue;
        }
        let n = match socket.try_io(Interest::READABLE, || batch.recv(fd)) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                // ICMP errors of earlier sends surface here; they concern one client only.
                tracing::debug!(error = %e, "UDP receive error");
                continue;
            }
        };
        outgoing.clear();
        // Answers the chain gives in this batch are stored under the epoch read now, if the
        // chain (as configured now: a reload moves the epoch too) leaves them as it finds them.
        cache.sync();
        let chain_reusable = chain.passes_answers_unchanged();
        for i in 0..n {
            let got = batch.received()[i];
            if got.truncated {
                tracing::debug!(client = %got.peer, "UDP query longer than {} bytes dropped", udp_mmsg::SLOT);
                continue;
            }
            let started = Instant::now();
            let len = got.len;
            let slot = outgoing.len();
            if let Some(hit) = cache.lookup(batch.datagram(i), &mut out_bufs[slot]) {
                outgoing.push(Outgoing {
                    slot,
                    to: got.peer,
                    started,
                    exchange: udp_exchange(
                        got.peer,
                        Some(hit.record_type),
                        Some(hit.rcode),
                        hit.plugin,
                        len,
                        out_bufs[slot].len(),
                    ),
                });
                continue;
            }
            match parse_request(batch.datagram(i), got.peer, Transport::Udp) {
                Parsed::Drop => {}
                Parsed::Reject(rej) => {
                    let bytes = encoder.encode_rejection(&rej);
                    copy_into(&mut out_bufs[slot], bytes);
                    outgoing.push(Outgoing {
                        slot,
                        to: got.peer,
                        started,
                        exchange: udp_exchange(
                            got.peer,
                            rej.question.as_ref().map(|q| q.query_type()),
                            Some(rej.rcode),
                            "",
                            len,
                            bytes.len(),
                        ),
                    });
                }
                Parsed::Query(req) => match run_chain(&chain, &req, &metrics) {
                    Reply::Ready(resp) => {
                        let out = UdpOut {
                            limiter: &limiter,
                            metrics: &metrics,
                        };
                        match out.encode(&mut encoder, &req, &resp, len) {
                            Some((bytes, exchange)) => {
                                if resp.reusable && chain_reusable {
                                    cache.insert(bytes, resp.rcode, exchange.plugin);
                                }
                                copy_into(&mut out_bufs[slot], bytes);
                                outgoing.push(Outgoing {
                                    slot,
                                    to: req.client,
                                    started,
                                    exchange,
                                });
                            }
                            None => recorder.record(&Exchange {
                                duration: started.elapsed(),
                                ..out.no_reply(&req, &resp, len)
                            }),
                        }
                    }
                    Reply::Pending(fut) => {
                        let socket = socket.clone();
                        let metrics = metrics.clone();
                        let limiter = limiter.clone();
                        tokio::spawn(async move {
                            let resp = fut.await;
                            let mut encoder = Encoder::new();
                            let mut recorder = metrics.recorder();
                            let out = UdpOut {
                                limiter: &limiter,
                                metrics: &metrics,
                            };
                            match out.encode(&mut encoder, &req, &resp, len) {
                                Some((bytes, exchange)) => {
                                    if let Err(e) = socket.send_to(bytes, req.client).await {
                                        tracing::debug!(client = %req.client, error = %e, "UDP send failed");
                                    }
                                    recorder.record(&Exchange {
                                        duration: started.elapsed(),
                                        ..exchange
                                    });
                                }
                                None => recorder.record(&Exchange {
                                    duration: started.elapsed(),
                                    ..out.no_reply(&req, &resp, len)
                                }),
                            }
                        });
                    }
                },
            }
        }
        send_all(&socket, fd, &out_bufs, &outgoing).await;
        for o in &outgoing {
            // Each duration runs from the query's parse to the send of its batch.
            recorder.record(&Exchange {
                duration: o.started.elapsed(),
                ..o.exchange
            });
        }
    }
}

/// An answer of the current batch waiting for `sendmmsg`.
struct Outgoing {
    /// Its buffer in the batch's answer buffers.
    slot: usize,
    /// The client.
    to: SocketAddr,
    /// When its query was taken from the batch.
    started: Instant,
    /// What the metrics record once it is sent.
    exchange: Exchange,
}

/// Replaces the contents of `buf` with `bytes`, keeping its allocation.
fn copy_into(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.clear();
    buf.extend_from_slice(bytes);
}

/// Sends the batch's answers with `sendmmsg`; what the socket buffer does not take at once is
/// sent one by one as it drains.
async fn send_all(
    socket: &UdpSocket,
    fd: std::os::fd::RawFd,
    bufs: &[Vec<u8>],
    outgoing: &[Outgoing],
) {
    let mut sent = 0;
    while sent < outgoing.len() {
        let msgs: Vec<(&[u8], SocketAddr)> = outgoing[sent..]
            .iter()
            .take(udp_mmsg::BATCH)
            .map(|o| (&bufs[o.slot][..], o.to))
            .collect();
        match socket.try_io(Interest::WRITABLE, || udp_mmsg::send_batch(fd, &msgs)) {
            Ok(n) => sent += n.max(1),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let Outgoing { slot, to, .. } = &outgoing[sent];
                if let Err(e) = socket.send_to(&bufs[*slot], *to).await {
                    tracing::debug!(client = %to, error = %e, "UDP send failed");
                }
                sent += 1;
            }
            Err(e) => {
                // The first message failed (e.g. an unreachable client): skip it, keep the rest.
                tracing::debug!(client = %outgoing[sent].to, error = %e, "UDP send failed");
                sent += 1;
            }
        }
    }
}

/// The large-answer limit and the metrics of UDP answers.
struct UdpOut<'a> {
    limiter: &'a LargeAnswerLimiter,
    metrics: &'a DnsMetrics,
}

impl UdpOut<'_> {
    /// Encodes the answer (truncated when a large answer is over the rate limit) and what the
    /// metrics record of it; `None` when the chain chose not to answer.
    fn encode<'e>(
        &self,
        encoder: &'e mut Encoder,
        req: &Request,
        resp: &Response,
        request_size: usize,
    ) -> Option<(&'e [u8], Exchange)> {
        if resp.no_reply {
            return None;
        }
        let (size, _truncated) = {
            let (out, tc) = encoder.encode(req, resp);
            (out.len(), tc)
        };
        // Only large answers consult the limiter (a lock); the common path stays lock-free.
        let out = if size > LARGE_ANSWER && !self.limiter.allow(req.client.ip()) {
            self.metrics.large_answer_limited();
            encoder.encode_truncated(req, resp)
        } else {
            encoder.message()
        };
        let exchange = udp_exchange(
            req.client,
            Some(req.record_type()),
            Some(resp.rcode),
            resp.plugin.unwrap_or(""),
            request_size,
            out.len(),
        );
        Some((out, exchange))
    }

    /// What the metrics record of a request the chain chose not to answer.
    fn no_reply(&self, req: &Request, resp: &Response, request_size: usize) -> Exchange {
        udp_exchange(
            req.client,
            Some(req.record_type()),
            None,
            resp.plugin.unwrap_or(""),
            request_size,
            0,
        )
    }
}

/// What the metrics record of a UDP exchange with `client` (its duration set when it is sent).
fn udp_exchange(
    client: SocketAddr,
    record_type: Option<RecordType>,
    rcode: Option<ResponseCode>,
    plugin: &'static str,
    request_size: usize,
    response_size: usize,
) -> Exchange {
    Exchange {
        transport: Transport::Udp,
        ipv6: client.is_ipv6(),
        record_type,
        rcode,
        plugin,
        duration: Duration::ZERO,
        request_size,
        response_size,
    }
}

/// The TCP limits of a listener.
#[derive(Debug, Clone, Copy)]
struct TcpLimits {
    max_connections: usize,
    per_source: usize,
    /// Connections beyond `max_connections - reserved` close the longest-idle one first.
    reserved: usize,
}

impl TcpLimits {
    fn new(config: &ServerConfig) -> Self {
        let max_connections = config.max_tcp_connections.max(1);
        Self {
            max_connections,
            per_source: config.max_tcp_per_source.max(1),
            reserved: if max_connections > 1 {
                (max_connections / 16).max(1)
            } else {
                0
            },
        }
    }
}

/// One open TCP connection, as the accept loop sees it.
#[derive(Debug)]
struct Conn {
    id: u64,
    ip: IpAddr,
    /// Milliseconds since the listener started, at the last complete query or answer.
    last_active_ms: AtomicU64,
    /// Queries awaiting their answer.
    in_flight: AtomicUsize,
    /// Told when the connection is to be closed (eviction).
    close: Notify,
}

impl Conn {
    fn touch(&self, now_ms: u64) {
        self.last_active_ms.store(now_ms, Ordering::Relaxed);
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }
}

/// What the accept loop decides for a new connection.
#[derive(Debug)]
enum Admission {
    /// Serve it; `evicted` was closed to make room.
    Accepted {
        conn: Arc<Conn>,
        evicted: Option<Arc<Conn>>,
    },
    /// Close it: at a limit with nothing idle to close.
    Refused,
}

/// The open TCP connections of a listener (pure logic; time is passed in).
#[derive(Debug, Default)]
struct Registry {
    conns: HashMap<u64, Arc<Conn>>,
    per_ip: HashMap<IpAddr, usize>,
    next_id: u64,
}

impl Registry {
    /// Admits a connection from `ip` at `now_ms`, closing the longest-idle connection of that
    /// address when it is at its own limit, or of any address when the server is near its
    /// limit.
    fn admit(&mut self, ip: IpAddr, now_ms: u64, limits: &TcpLimits) -> Admission {
        let mut evicted = None;
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= limits.per_source {
            match self.longest_idle(Some(ip)) {
                Some(victim) => evicted = Some(self.evict(victim)),
                None => return Admission::Refused,
            }
        } else if self.conns.len() >= limits.max_connections - limits.reserved {
            if let Some(victim) = self.longest_idle(None) {
                evicted = Some(self.evict(victim));
            } else if self.conns.len() >= limits.max_connections {
                return Admission::Refused;
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let conn = Arc::new(Conn {
            id,
            ip,
            last_active_ms: AtomicU64::new(now_ms),
            in_flight: AtomicUsize::new(0),
            close: Notify::new(),
        });
        self.conns.insert(id, conn.clone());
        *self.per_ip.entry(ip).or_insert(0) += 1;
        Admission::Accepted { conn, evicted }
    }

    /// The connection (of `ip`, if given) idle the longest, with no query in flight.
    fn longest_idle(&self, ip: Option<IpAddr>) -> Option<u64> {
        self.conns
            .values()
            .filter(|c| ip.is_none_or(|ip| c.ip == ip) && c.idle())
            .min_by_key(|c| (c.last_active_ms.load(Ordering::Relaxed), c.id))
            .map(|c| c.id)
    }

    /// Removes `id` and tells its task to close it.
    fn evict(&mut self, id: u64) -> Arc<Conn> {
        let conn = self.remove(id).expect("evicting a registered connection");
        conn.close.notify_one();
        conn
    }

    /// Forgets `id` (closed or evicted); `None` if it was already gone.
    fn remove(&mut self, id: u64) -> Option<Arc<Conn>> {
        let conn = self.conns.remove(&id)?;
        if let Some(n) = self.per_ip.get_mut(&conn.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&conn.ip);
            }
        }
        Some(conn)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.conns.len()
    }
}

/// Removes a connection from the registry when its task ends.
struct ConnGuard {
    registry: Arc<Mutex<Registry>>,
    id: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.remove(self.id);
    }
}

/// Milliseconds since the listener started.
#[derive(Debug, Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

async fn tcp_accept_loop(
    listener: TcpListener,
    chain: Chain,
    metrics: Arc<DnsMetrics>,
    config: ServerConfig,
) {
    let limits = TcpLimits::new(&config);
    let registry = Arc::new(Mutex::new(Registry::default()));
    let clock = Clock(Instant::now());
    let settings = TcpSettings {
        idle: config.tcp_idle_timeout,
        max_in_flight: config.max_tcp_in_flight.max(1),
        clock,
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admission = {
            let mut reg = registry.lock().unwrap_or_else(|e| e.into_inner());
            reg.admit(peer.ip(), clock.ms(), &limits)
        };
        let conn = match admission {
            Admission::Refused => {
                metrics.tcp_refused();
                tracing::debug!(%peer, "too many busy TCP connections; closing the new one");
                continue;
            }
            Admission::Accepted { conn, evicted } => {
                if let Some(old) = evicted {
                    metrics.tcp_evicted();
                    tracing::debug!(%peer, evicted = %old.ip, "TCP connections near the limit; closed the longest idle");
                }
                conn
            }
        };
        let chain = chain.clone();
        let metrics = metrics.clone();
        let guard = ConnGuard {
            registry: registry.clone(),
            id: conn.id,
        };
        tokio::spawn(async move {
            let _guard = guard;
            let _ = stream.set_nodelay(true);
            serve_tcp(stream, peer, chain, metrics, settings, &conn).await;
        });
    }
}

/// Per-connection settings.
#[derive(Debug, Clone, Copy)]
struct TcpSettings {
    idle: Duration,
    max_in_flight: usize,
    clock: Clock,
}

/// A pending answer of a TCP connection: the request, its answer, when it arrived, its size.
type TcpAnswer = (Box<Request>, Response, Instant, usize);

/// The length of the first complete length-prefixed message in `buf`, if there is one.
fn complete_frame(buf: &[u8]) -> Option<usize> {
    let len = usize::from(u16::from_be_bytes([*buf.first()?, *buf.get(1)?]));
    (buf.len() >= 2 + len).then_some(len)
}

/// Writes one length-prefixed message; false when the connection is gone or stalled.
async fn write_frame(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    msg: &[u8],
    idle: Duration,
) -> bool {
    out.clear();
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
    tokio::time::timeout(idle, stream.write_all(out))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// Serves one TCP connection: answers go out as soon as each is ready, in any order.
async fn serve_tcp(
    mut stream: TcpStream,
    peer: SocketAddr,
    chain: Chain,
    metrics: Arc<DnsMetrics>,
    settings: TcpSettings,
    conn: &Conn,
) {
    let TcpSettings {
        idle,
        max_in_flight,
        clock,
    } = settings;
    let mut encoder = Encoder::new();
    let mut recorder = metrics.recorder();
    let mut rbuf = BytesMut::with_capacity(1024);
    let mut out = Vec::with_capacity(512);
    let mut pending: FuturesUnordered<BoxFuture<TcpAnswer>> = FuturesUnordered::new();
    let mut eof = false;
    let mut deadline = tokio::time::Instant::now() + idle;
    let record = |recorder: &mut Recorder,
                  qtype,
                  rcode: Option<ResponseCode>,
                  plugin: &'static str,
                  started: Instant,
                  len,
                  size| {
        recorder.record(&Exchange {
            transport: Transport::Tcp,
            ipv6: peer.is_ipv6(),
            record_type: qtype,
            rcode,
            plugin,
            duration: started.elapsed(),
            request_size: len,
            response_size: size,
        });
    };
    loop {
        // Every complete query received, while the in-flight cap allows.
        while pending.len() < max_in_flight {
            let Some(len) = complete_frame(&rbuf) else {
                break;
            };
            let frame = rbuf.split_to(2 + len);
            let started = Instant::now();
            deadline = tokio::time::Instant::now() + idle;
            conn.touch(clock.ms());
            match parse_request(&frame[2..], peer, Transport::Tcp) {
                // Garbage on a stream: the framing can no longer be trusted.
                Parsed::Drop => return,
                Parsed::Reject(rej) => {
                    let qtype = rej.question.as_ref().map(|q| q.query_type());
                    let bytes = encoder.encode_rejection(&rej);
                    let size = bytes.len();
                    if !write_frame(&mut stream, &mut out, bytes, idle).await {
                        return;
                    }
                    record(
                        &mut recorder,
                        qtype,
                        Some(rej.rcode),
                        "",
                        started,
                        len,
                        size,
                    );
                }
                Parsed::Query(req) => match run_chain(&chain, &req, &metrics) {
                    Reply::Ready(resp) => {
                        let qtype = Some(req.record_type());
                        let plugin = resp.plugin.unwrap_or("");
                        if resp.no_reply {
                            record(&mut recorder, qtype, None, plugin, started, len, 0);
                            continue;
                        }
                        let (bytes, _) = encoder.encode(&req, &resp);
                        let size = bytes.len();
                        if !write_frame(&mut stream, &mut out, bytes, idle).await {
                            return;
                        }
                        record(
                            &mut recorder,
                            qtype,
                            Some(resp.rcode),
                            plugin,
                            started,
                            len,
                            size,
                        );
                    }
                    Reply::Pending(fut) => pending.push(Box::pin(async move {
                        let resp = fut.await;
                        (req, resp, started, len)
                    })),
                },
            }
        }
        conn.in_flight.store(pending.len(), Ordering::Relaxed);
        if eof && pending.is_empty() {
            return;
        }
        let can_read = !eof && pending.len() < max_in_flight;
        if can_read && rbuf.capacity() - rbuf.len() < 512 {
            rbuf.reserve(4096);
        }
        tokio::select! {
            _ = conn.close.notified() => return,
            Some((req, resp, started, len)) = pending.next(), if !pending.is_empty() => {
                let plugin = resp.plugin.unwrap_or("");
                if resp.no_reply {
                    record(&mut recorder, Some(req.record_type()), None, plugin, started, len, 0);
                } else {
                    let (bytes, _) = encoder.encode(&req, &resp);
                    let size = bytes.len();
                    if !write_frame(&mut stream, &mut out, bytes, idle).await {
                        return;
                    }
                    record(&mut recorder, Some(req.record_type()), Some(resp.rcode), plugin, started, len, size);
                }
                deadline = tokio::time::Instant::now() + idle;
                conn.touch(clock.ms());
            }
            r = stream.read_buf(&mut rbuf), if can_read => match r {
                // The client closed its side: finish what is in flight, then close.
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(_) => return,
            },
            _ = tokio::time::sleep_until(deadline), if pending.is_empty() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_source: usize) -> TcpLimits {
        TcpLimits::new(&ServerConfig {
            max_tcp_connections: max,
            max_tcp_per_source: per_source,
            ..ServerConfig::default()
        })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn accepted(a: Admission) -> (Arc<Conn>, Option<Arc<Conn>>) {
        match a {
            Admission::Accepted { conn, evicted } => (conn, evicted),
            Admission::Refused => panic!("refused"),
        }
    }

    #[test]
    fn one_address_is_capped_at_its_own_expense() {
        let l = limits(100, 3);
        let mut reg = Registry::default();
        let first: Vec<Arc<Conn>> = (0..3)
            .map(|t| accepted(reg.admit(ip(1), t, &l)).0)
            .collect();
        // The fourth from the same address closes that address's longest idle one.
        let (_, evicted) = accepted(reg.admit(ip(1), 10, &l));
        assert_eq!(evicted.map(|c| c.id), Some(first[0].id));
        assert_eq!(reg.per_ip[&ip(1)], 3);
        // Busy connections are kept: with all three in flight, the next one is refused.
        for c in reg.conns.values() {
            c.in_flight.store(1, Ordering::Relaxed);
        }
        assert!(matches!(reg.admit(ip(1), 11, &l), Admission::Refused));
        // Another address is unaffected.
        let (_, evicted) = accepted(reg.admit(ip(2), 12, &l));
        assert!(evicted.is_none());
    }

    #[test]
    fn near_the_limit_the_longest_idle_connection_makes_room() {
        // 32 connections, 2 kept for new clients: from the 31st on, each new one closes the
        // longest idle.
        let l = limits(32, 64);
        assert_eq!(l.reserved, 2);
        let mut reg = Registry::default();
        let conns: Vec<Arc<Conn>> = (0..30u64)
            .map(|t| {
                let (c, evicted) = accepted(reg.admit(ip(t as u8), t, &l));
                assert!(evicted.is_none(), "below the reserve nothing is closed");
                c
            })
            .collect();
        assert_eq!(reg.len(), 30);
        // The oldest becomes active again; the second oldest is now the longest idle.
        conns[0].touch(100);
        let (_, evicted) = accepted(reg.admit(ip(200), 101, &l));
        assert_eq!(evicted.map(|c| c.id), Some(conns[1].id));
        assert_eq!(reg.len(), 30);
        // A connection waiting on an answer is never chosen.
        conns[2].in_flight.store(1, Ordering::Relaxed);
        let (_, evicted) = accepted(reg.admit(ip(201), 102, &l));
        assert_eq!(evicted.map(|c| c.id), Some(conns[3].id));
    }

    #[test]
    fn all_busy_fills_the_reserve_then_refuses() {
        let l = limits(4, 64);
        let mut reg = Registry::default();
        for t in 0..4u64 {
            let (c, _) = accepted(reg.admit(ip(t as u8), t, &l));
            c.in_flight.store(1, Ordering::Relaxed);
        }
        assert_eq!(reg.len(), 4);
        assert!(matches!(reg.admit(ip(9), 9, &l), Admission::Refused));
        // A connection that closes frees its slot and its address's count.
        let id = *reg.conns.keys().next().unwrap();
        let gone = reg.remove(id).unwrap();
        assert!(!reg.per_ip.contains_key(&gone.ip));
        assert!(reg.remove(id).is_none());
        accepted(reg.admit(ip(9), 10, &l));
    }

    /// Answers `slow.*` names only once `release` turns true, everything else at once.
    struct Gate(tokio::sync::watch::Receiver<bool>);
    impl crate::dns::handler::Plugin for Gate {
        fn name(&self) -> &'static str {
            "gate"
        }
        fn handle(&self, req: &Request, _next: crate::dns::handler::Next) -> Reply {
            let rcode = hickory_proto::op::ResponseCode::NXDomain;
            if !req.lower_name().starts_with("slow.") {
                return Reply::Ready(Response::new(rcode));
            }
            let mut rx = self.0.clone();
            Reply::pending(async move {
                let _ = rx.wait_for(|open| *open).await;
                Response::new(rcode)
            })
        }
    }

    fn tcp_query(id: u16, name: &str) -> Vec<u8> {
        let mut m = hickory_proto::op::Message::query();
        m.metadata.id = id;
        m.add_query(hickory_proto::op::Query::query(
            hickory_proto::rr::Name::from_ascii(name).unwrap(),
            hickory_proto::rr::RecordType::A,
        ));
        let bytes = m.to_vec().unwrap();
        let mut f = (bytes.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(&bytes);
        f
    }

    async fn read_id(s: &mut TcpStream) -> u16 {
        let len = s.read_u16().await.unwrap();
        let mut msg = vec![0u8; usize::from(len)];
        s.read_exact(&mut msg).await.unwrap();
        u16::from_be_bytes([msg[0], msg[1]])
    }

    #[tokio::test]
    async fn pipelined_queries_answer_out_of_order_up_to_the_in_flight_cap() {
        let (open, rx) = tokio::sync::watch::channel(false);
        let server = DnsServer::bind(ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            udp_workers: 1,
            max_tcp_in_flight: 2,
            ..ServerConfig::default()
        })
        .unwrap();
        let addr = server.local_addr();
        let chain = Chain::new(vec![Arc::new(Gate(rx))]);
        let task = tokio::spawn(server.serve(chain, DnsMetrics::new("dns://test", ".")));
        let mut s = TcpStream::connect(addr).await.unwrap();
        // One slow query, then a fast one: the fast one is answered first.
        let mut batch = tcp_query(1, "slow.a.");
        batch.extend(tcp_query(2, "fast.a."));
        s.write_all(&batch).await.unwrap();
        assert_eq!(read_id(&mut s).await, 2);
        // A second slow query reaches the cap of 2: the fast query behind it waits unread.
        let mut batch = tcp_query(3, "slow.b.");
        batch.extend(tcp_query(4, "fast.b."));
        s.write_all(&batch).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(300), read_id(&mut s)).await;
        assert!(
            waited.is_err(),
            "nothing is answered while the cap is reached"
        );
        // Releasing the slow ones answers all three.
        open.send(true).unwrap();
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(read_id(&mut s).await);
        }
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 3, 4]);
        task.abort();
    }

    /// A raw UDP query for `name` (as spelled) of `record_type`, RD set, with an OPT record
    /// when `edns`.
    fn udp_query(id: u16, name: &str, record_type: u16, edns: bool) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
        for label in name.trim_end_matches('.').split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&record_type.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        if edns {
            q.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0x80, 0, 0, 0]);
        }
        q
    }

    async fn ask(socket: &UdpSocket, to: SocketAddr, query: &[u8]) -> Vec<u8> {
        socket.send_to(query, to).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        buf.truncate(n);
        buf
    }

    async fn serve_udp(chain: Chain, answer_cache_bytes: usize) -> (SocketAddr, JoinHandle) {
        let server = DnsServer::bind(ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            udp_workers: 2,
            answer_cache_bytes,
            ..ServerConfig::default()
        })
        .unwrap();
        let addr = server.local_addr();
        let task = tokio::spawn(server.serve(chain, DnsMetrics::new("dns://test", ".")));
        (addr, task)
    }

    type JoinHandle = tokio::task::JoinHandle<()>;

    /// The fixture's cluster zone behind a [`Counting`] plugin that vouches or not.
    fn counted_cluster(
        vouches: bool,
    ) -> (
        Arc<crate::dns::cluster::ClusterPlugin>,
        Arc<Counting>,
        Chain,
    ) {
        use crate::dns::zone::fixtures::{FIXTURE, snapshot};
        let plugin =
            crate::dns::cluster::ClusterPlugin::new(crate::dns::zone::ZoneOptions::default());
        plugin.install(&snapshot(FIXTURE));
        let counting = Arc::new(Counting(AtomicUsize::new(0), vouches));
        let chain = Chain::new(vec![
            counting.clone() as Arc<dyn super::super::handler::Plugin>,
            plugin.clone(),
        ]);
        (plugin, counting, chain)
    }

    #[tokio::test]
    async fn reused_answers_are_byte_for_byte_the_chains_and_follow_zone_changes() {
        use crate::dns::zone::fixtures::snapshot;
        let (plugin, counting, chain) = counted_cluster(true);
        assert!(chain.passes_answers_unchanged());
        let (cached, t1) = serve_udp(chain.clone(), 1 << 20).await;
        let (plain, t2) = serve_udp(chain, 0).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let names = [
            ("demoapp-svc.default.svc.cluster.local.", 1),
            ("DemoApp-SVC.default.svc.Cluster.Local.", 1),
            ("_http._tcp.demoapp-svc.default.svc.cluster.local.", 33),
            ("11.10.96.10.in-addr.arpa.", 12),
            ("nope.default.svc.cluster.local.", 1),
            ("NOPE.default.svc.cluster.local.", 28),
        ];
        let mut id = 0u16;
        // Rounds until one is answered from reuse alone (the epoch is process-wide: zone
        // changes of tests running beside this one empty the cache too).
        let mut reused_round = None;
        for round in 0..20 {
            let before = counting.0.load(Ordering::Relaxed);
            for (name, t) in names {
                for edns in [false, true] {
                    id = id.wrapping_add(4099);
                    let q = udp_query(id, name, t, edns);
                    let a = ask(&client, cached, &q).await;
                    let b = ask(&client, plain, &q).await;
                    assert_eq!(a, b, "round {round}: {name} type {t} edns {edns}");
                    assert_eq!(&a[..2], &id.to_be_bytes());
                    assert_eq!(&a[12..12 + name.len() + 1], &q[12..12 + name.len() + 1]);
                }
            }
            // The chain ran for each of the 12 queries of the uncached listener; for the
            // cached one only on a miss (the two spellings of a name share an entry).
            if counting.0.load(Ordering::Relaxed) - before == names.len() * 2 {
                reused_round = Some(round);
                break;
            }
        }
        assert!(reused_round.is_some(), "no round was answered from reuse");
        // The service goes away: the next query sees it at once, from either listener.
        let q = udp_query(1, "demoapp-svc.default.svc.cluster.local.", 1, false);
        assert_eq!(
            ask(&client, cached, &q).await[3] & 0x0f,
            0,
            "NOERROR before"
        );
        plugin.install(&snapshot(""));
        let after = ask(&client, cached, &q).await;
        assert_eq!(after[3] & 0x0f, 3, "NXDOMAIN after the change");
        assert_eq!(after, ask(&client, plain, &q).await);
        t1.abort();
        t2.abort();
    }

    /// Counts the queries it sees and passes them on; vouches for the answers it passes on
    /// (as a counter should not, to observe reuse) when `.1`.
    struct Counting(AtomicUsize, bool);
    impl super::super::handler::Plugin for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn handle(&self, req: &Request, next: super::super::handler::Next) -> Reply {
            self.0.fetch_add(1, Ordering::Relaxed);
            next.run(req)
        }
        fn passes_answers_unchanged(&self) -> bool {
            self.1
        }
    }

    #[tokio::test]
    async fn a_chain_with_a_plugin_that_does_not_vouch_for_its_answers_runs_every_time() {
        let (_plugin, counting, chain) = counted_cluster(false);
        assert!(!chain.passes_answers_unchanged());
        let (addr, task) = serve_udp(chain, 1 << 20).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let q = udp_query(9, "demoapp-svc.default.svc.cluster.local.", 1, false);
        for _ in 0..5 {
            ask(&client, addr, &q).await;
        }
        assert_eq!(counting.0.load(Ordering::Relaxed), 5);
        task.abort();
    }

    #[test]
    fn frames_are_found_only_when_complete() {
        assert_eq!(complete_frame(&[]), None);
        assert_eq!(complete_frame(&[0]), None);
        assert_eq!(complete_frame(&[0, 3, 1, 2]), None);
        assert_eq!(complete_frame(&[0, 3, 1, 2, 3, 9]), Some(3));
        assert_eq!(complete_frame(&[0, 0]), Some(0));
    }
}
