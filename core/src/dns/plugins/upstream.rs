//! One upstream DNS server: UDP and TCP exchanges with connection reuse, failure counting and
//! a background health probe with backoff while it fails.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Idle connections kept per upstream and protocol.
const POOL_LIMIT: usize = 64;
/// Longest pause between health probes of a failing upstream.
const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// Deadline of one health probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

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
}

/// The transport used for one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// UDP (retried over TCP when truncated).
    Udp,
    /// TCP.
    Tcp,
}

/// An upstream server and its state.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    fails: AtomicU32,
    probing: AtomicBool,
    udp: Mutex<Vec<(UdpSocket, Instant)>>,
    tcp: Mutex<Vec<(TcpStream, Instant)>>,
}

/// Settings of the health probe.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
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
    /// A new upstream, healthy.
    pub fn new(addr: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            addr,
            fails: AtomicU32::new(0),
            probing: AtomicBool::new(false),
            udp: Mutex::new(Vec::new()),
            tcp: Mutex::new(Vec::new()),
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Failures since the last successful probe.
    pub fn fails(&self) -> u32 {
        self.fails.load(Ordering::Relaxed)
    }

    /// Down when it failed more than `max_fails` times (never with `max_fails` 0).
    pub fn is_down(&self, max_fails: u32) -> bool {
        max_fails != 0 && self.fails() > max_fails
    }

    /// Records a failed exchange and starts the health probe if it is not running.
    pub fn record_failure(self: &Arc<Self>, probe: &ProbeSettings) {
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

    /// Sends `query` (wire bytes, id `id`) and waits for the matching answer.
    pub async fn exchange(
        &self,
        query: &[u8],
        id: u16,
        proto: Proto,
        timeout: Duration,
        expire: Duration,
    ) -> Result<Message, ExchangeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        match proto {
            Proto::Udp => self.exchange_udp(query, id, deadline, expire).await,
            Proto::Tcp => self.exchange_tcp(query, id, deadline, expire).await,
        }
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
        query: &[u8],
        id: u16,
        deadline: tokio::time::Instant,
        expire: Duration,
    ) -> Result<Message, ExchangeError> {
        let sock = match Self::take(&self.udp, expire) {
            Some(s) => s,
            None => {
                let local: IpAddr = if self.addr.is_ipv4() {
                    Ipv4Addr::UNSPECIFIED.into()
                } else {
                    Ipv6Addr::UNSPECIFIED.into()
                };
                let s = UdpSocket::bind(SocketAddr::new(local, 0)).await?;
                s.connect(self.addr).await?;
                s
            }
        };
        sock.send(query).await?;
        let mut buf = vec![0u8; 65535];
        loop {
            let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Ok(r) => r?,
                Err(_) => return Err(ExchangeError::Timeout),
            };
            // Late answers to earlier queries on a reused socket carry other ids: skip them.
            let Some(msg) = parse_reply(&buf[..n], id)? else {
                continue;
            };
            Self::give(&self.udp, sock);
            return Ok(msg);
        }
    }

    async fn exchange_tcp(
        &self,
        query: &[u8],
        id: u16,
        deadline: tokio::time::Instant,
        expire: Duration,
    ) -> Result<Message, ExchangeError> {
        // A pooled connection may have been closed by the upstream: one retry on a fresh one.
        if let Some(stream) = Self::take(&self.tcp, expire)
            && let Ok(Ok((msg, stream))) =
                tokio::time::timeout_at(deadline, tcp_roundtrip(stream, query, id)).await
        {
            Self::give(&self.tcp, stream);
            return Ok(msg);
        }
        let fut = async {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            tcp_roundtrip(stream, query, id).await
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
}

async fn tcp_roundtrip(
    mut stream: TcpStream,
    query: &[u8],
    id: u16,
) -> Result<(Message, TcpStream), ExchangeError> {
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    loop {
        let len = stream.read_u16().await? as usize;
        let mut buf = vec![0u8; len];
        stream.read_exact(&mut buf).await?;
        let Some(msg) = parse_reply(&buf, id)? else {
            continue;
        };
        return Ok((msg, stream));
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
        let id = fastrand::u16(..);
        let mut q = Query::query(probe.domain.clone(), RecordType::NS);
        q.set_query_class(DNSClass::IN);
        let ok = match encode_query(id, q, probe.recursion_desired, false, None) {
            Ok(bytes) => {
                let proto = if probe.tcp { Proto::Tcp } else { Proto::Udp };
                up.exchange(&bytes, id, proto, PROBE_TIMEOUT, Duration::ZERO)
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
