//! The DNS listener: UDP and TCP on the same address, feeding a plugin [`Chain`].
//!
//! UDP runs one receive loop per worker, each on its own `SO_REUSEPORT` socket, so the kernel
//! spreads clients over the cores. A request whose answer is ready (the cluster zone) is
//! answered from the loop itself; a pending one (forwarding) gets a task of its own, so a slow
//! upstream never stalls the loop. TCP serves each connection on its own task with an idle
//! timeout and a connection limit. A panic in a plugin becomes SERVFAIL and is counted.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::error::DnsError;
use super::handler::{Chain, Reply, Request, Response, Transport};
use super::metrics::{DnsMetrics, Exchange, Recorder};
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
    /// Concurrent TCP connections accepted.
    pub max_tcp_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 53)),
            udp_workers: 0,
            tcp_idle_timeout: Duration::from_secs(10),
            max_tcp_connections: 1024,
        }
    }
}

/// Bound DNS sockets, ready to serve.
pub struct DnsServer {
    udp: Vec<UdpSocket>,
    tcp: TcpListener,
    local: SocketAddr,
    config: ServerConfig,
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

fn tcp_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
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
            return Ok(Self {
                udp,
                tcp,
                local,
                config,
            });
        }
    }

    /// The bound address (with the actual port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until the returned future is dropped (or the task is aborted).
    pub async fn serve(self, chain: Chain, metrics: Arc<DnsMetrics>) {
        let mut tasks = JoinSet::new();
        for socket in self.udp {
            let chain = chain.clone();
            let metrics = metrics.clone();
            tasks.spawn(udp_loop(Arc::new(socket), chain, metrics));
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
fn run_chain(chain: &Chain, req: &Request, metrics: &DnsMetrics) -> Reply {
    match std::panic::catch_unwind(AssertUnwindSafe(|| chain.handle(req))) {
        Ok(reply) => reply,
        Err(_) => {
            metrics.panicked();
            tracing::error!(name = %req.name(), "a DNS plugin panicked; answered SERVFAIL");
            Reply::Ready(Response::servfail())
        }
    }
}

async fn udp_loop(socket: Arc<UdpSocket>, chain: Chain, metrics: Arc<DnsMetrics>) {
    let mut buf = vec![0u8; 65535];
    let mut encoder = Encoder::new();
    let mut recorder = metrics.recorder();
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors of earlier sends surface here; they concern one client only.
                tracing::debug!(error = %e, "UDP receive error");
                continue;
            }
        };
        let started = Instant::now();
        match parse_request(&buf[..len], peer, Transport::Udp) {
            Parsed::Drop => {}
            Parsed::Reject(rej) => {
                let out = encoder.encode_rejection(&rej);
                let _ = socket.send_to(out, peer).await;
                recorder.record(&Exchange {
                    transport: Transport::Udp,
                    ipv6: peer.is_ipv6(),
                    record_type: rej.question.as_ref().map(|q| q.query_type()),
                    rcode: Some(rej.rcode),
                    duration: started.elapsed(),
                    request_size: len,
                    response_size: out.len(),
                });
            }
            Parsed::Query(req) => match run_chain(&chain, &req, &metrics) {
                Reply::Ready(resp) => {
                    send_udp(
                        &socket,
                        &mut encoder,
                        &mut recorder,
                        &req,
                        &resp,
                        started,
                        len,
                    )
                    .await;
                }
                Reply::Pending(fut) => {
                    let socket = socket.clone();
                    let metrics = metrics.clone();
                    tokio::spawn(async move {
                        let resp = fut.await;
                        let mut encoder = Encoder::new();
                        let mut recorder = metrics.recorder();
                        send_udp(
                            &socket,
                            &mut encoder,
                            &mut recorder,
                            &req,
                            &resp,
                            started,
                            len,
                        )
                        .await;
                    });
                }
            },
        }
    }
}

async fn send_udp(
    socket: &UdpSocket,
    encoder: &mut Encoder,
    recorder: &mut Recorder,
    req: &Request,
    resp: &Response,
    started: Instant,
    request_size: usize,
) {
    let (out, _truncated) = encoder.encode(req, resp);
    if let Err(e) = socket.send_to(out, req.client).await {
        tracing::debug!(client = %req.client, error = %e, "UDP send failed");
    }
    recorder.record(&Exchange {
        transport: Transport::Udp,
        ipv6: req.client.is_ipv6(),
        record_type: Some(req.record_type()),
        rcode: Some(resp.rcode),
        duration: started.elapsed(),
        request_size,
        response_size: out.len(),
    });
}

async fn tcp_accept_loop(
    listener: TcpListener,
    chain: Chain,
    metrics: Arc<DnsMetrics>,
    config: ServerConfig,
) {
    let limit = Arc::new(Semaphore::new(config.max_tcp_connections.max(1)));
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
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many TCP connections; closing");
            continue;
        };
        let chain = chain.clone();
        let metrics = metrics.clone();
        let idle = config.tcp_idle_timeout;
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            serve_tcp(stream, peer, chain, metrics, idle).await;
            drop(permit);
        });
    }
}

async fn serve_tcp(
    mut stream: TcpStream,
    peer: SocketAddr,
    chain: Chain,
    metrics: Arc<DnsMetrics>,
    idle: Duration,
) {
    let mut encoder = Encoder::new();
    let mut recorder = metrics.recorder();
    let mut buf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(512);
    loop {
        let len = match tokio::time::timeout(idle, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            _ => return, // idle, closed or reset
        };
        if tokio::time::timeout(idle, stream.read_exact(&mut buf[..len]))
            .await
            .map_or(true, |r| r.is_err())
        {
            return;
        }
        let started = Instant::now();
        let (bytes, rcode, qtype): (&[u8], ResponseCode, _) =
            match parse_request(&buf[..len], peer, Transport::Tcp) {
                // Garbage on a stream: the framing can no longer be trusted.
                Parsed::Drop => return,
                Parsed::Reject(rej) => {
                    let qtype = rej.question.as_ref().map(|q| q.query_type());
                    (encoder.encode_rejection(&rej), rej.rcode, qtype)
                }
                Parsed::Query(req) => {
                    let resp = run_chain(&chain, &req, &metrics).resolve().await;
                    let (bytes, _) = encoder.encode(&req, &resp);
                    (bytes, resp.rcode, Some(req.record_type()))
                }
            };
        out.clear();
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
        let response_size = bytes.len();
        if tokio::time::timeout(idle, stream.write_all(&out))
            .await
            .map_or(true, |r| r.is_err())
        {
            return;
        }
        recorder.record(&Exchange {
            transport: Transport::Tcp,
            ipv6: peer.is_ipv6(),
            record_type: qtype,
            rcode: Some(rcode),
            duration: started.elapsed(),
            request_size: len,
            response_size,
        });
    }
}
