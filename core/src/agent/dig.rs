//! A small dig (`agentctl dns query`): one question over UDP (retried over TCP when the answer
//! is truncated) or TCP, messages encoded and decoded with hickory-proto, printed like dig.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Errors of a query.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DigError {
    /// The name is not a valid domain name.
    #[error("invalid name {name:?}: {reason}")]
    Name {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The type is unknown.
    #[error("unknown record type {0:?}")]
    Type(String),
    /// Network failure.
    #[error("{transport} query to {server}: {source}")]
    Io {
        /// `UDP` or `TCP`.
        transport: &'static str,
        /// The server.
        server: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("no answer from {server} over {transport} within {timeout:?}")]
    Timeout {
        /// `UDP` or `TCP`.
        transport: &'static str,
        /// The server.
        server: SocketAddr,
        /// The limit.
        timeout: Duration,
    },
    /// The answer does not decode, or the query does not encode.
    #[error("{server}: malformed DNS message: {reason}")]
    Malformed {
        /// The server.
        server: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// One answered query.
#[derive(Debug, Clone)]
pub struct DigResult {
    /// The response.
    pub response: Message,
    /// The server asked.
    pub server: SocketAddr,
    /// `UDP` or `TCP` (the transport of the final answer).
    pub transport: &'static str,
    /// Round trip.
    pub elapsed: Duration,
    /// The response size in bytes.
    pub size: usize,
}

/// Parses a record type name (`A`, `aaaa`, `SRV`, `PTR`, ...).
pub fn parse_type(s: &str) -> Result<RecordType, DigError> {
    RecordType::from_str(&s.to_ascii_uppercase()).map_err(|_| DigError::Type(s.to_string()))
}

/// Builds a query message for `name`/`rtype` with recursion desired, as dig does.
pub fn build_query(name: &str, rtype: RecordType, id: u16) -> Result<Message, DigError> {
    let mut qname = Name::from_utf8(name).map_err(|e| DigError::Name {
        name: name.to_string(),
        reason: e.to_string(),
    })?;
    qname.set_fqdn(true);
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(qname, rtype));
    Ok(msg)
}

/// Sends one question to `server`; over UDP unless `tcp`, falling back to TCP on truncation.
pub async fn query(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    tcp: bool,
    timeout: Duration,
) -> Result<DigResult, DigError> {
    let id: u16 = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        & 0xffff) as u16;
    let msg = build_query(name, rtype, id)?;
    let bytes = msg.to_vec().map_err(|e| DigError::Malformed {
        server,
        reason: e.to_string(),
    })?;
    let start = Instant::now();
    if !tcp {
        let (response, size) = udp_exchange(server, &bytes, id, timeout).await?;
        if !response.metadata.truncation {
            return Ok(DigResult {
                response,
                server,
                transport: "UDP",
                elapsed: start.elapsed(),
                size,
            });
        }
    }
    let (response, size) = tcp_exchange(server, &bytes, timeout).await?;
    Ok(DigResult {
        response,
        server,
        transport: "TCP",
        elapsed: start.elapsed(),
        size,
    })
}

async fn udp_exchange(
    server: SocketAddr,
    bytes: &[u8],
    id: u16,
    timeout: Duration,
) -> Result<(Message, usize), DigError> {
    let io = |source| DigError::Io {
        transport: "UDP",
        server,
        source,
    };
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(bind).await.map_err(io)?;
    sock.connect(server).await.map_err(io)?;
    sock.send(bytes).await.map_err(io)?;
    let work = async {
        let mut buf = vec![0u8; 65_535];
        loop {
            let n = sock.recv(&mut buf).await.map_err(io)?;
            match Message::from_vec(&buf[..n]) {
                Ok(m) if m.metadata.id == id => return Ok((m, n)),
                Ok(_) => continue, // a stray answer: keep waiting, as dig does
                Err(e) => {
                    return Err(DigError::Malformed {
                        server,
                        reason: e.to_string(),
                    });
                }
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| DigError::Timeout {
            transport: "UDP",
            server,
            timeout,
        })?
}

async fn tcp_exchange(
    server: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(Message, usize), DigError> {
    let io = |source| DigError::Io {
        transport: "TCP",
        server,
        source,
    };
    let work = async {
        let mut stream = TcpStream::connect(server).await.map_err(io)?;
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        framed.extend_from_slice(bytes);
        stream.write_all(&framed).await.map_err(io)?;
        let len = stream.read_u16().await.map_err(io)? as usize;
        let mut buf = vec![0u8; len];
        stream.read_exact(&mut buf).await.map_err(io)?;
        let m = Message::from_vec(&buf).map_err(|e| DigError::Malformed {
            server,
            reason: e.to_string(),
        })?;
        Ok((m, len))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| DigError::Timeout {
            transport: "TCP",
            server,
            timeout,
        })?
}

fn record_line(out: &mut String, r: &Record) {
    let _ = writeln!(
        out,
        "{}\t{}\t{}\t{}\t{}",
        r.name,
        r.ttl,
        r.dns_class,
        r.record_type(),
        r.data
    );
}

impl DigResult {
    /// dig's default output.
    pub fn to_text(&self) -> String {
        let m = &self.response;
        let md = &m.metadata;
        let mut o = String::new();
        let _ = writeln!(
            o,
            ";; ->>HEADER<<- opcode: {}, status: {}, id: {}",
            format!("{:?}", md.op_code).to_uppercase(),
            format!("{:?}", md.response_code).to_uppercase(),
            md.id
        );
        let mut flags = vec![];
        if md.message_type == MessageType::Response {
            flags.push("qr");
        }
        if md.authoritative {
            flags.push("aa");
        }
        if md.truncation {
            flags.push("tc");
        }
        if md.recursion_desired {
            flags.push("rd");
        }
        if md.recursion_available {
            flags.push("ra");
        }
        let _ = writeln!(
            o,
            ";; flags: {}; QUERY: {}, ANSWER: {}, AUTHORITY: {}, ADDITIONAL: {}",
            flags.join(" "),
            m.queries.len(),
            m.answers.len(),
            m.authorities.len(),
            m.additionals.len() + usize::from(m.edns.is_some())
        );
        let _ = writeln!(o, "\n;; QUESTION SECTION:");
        for q in &m.queries {
            let _ = writeln!(
                o,
                ";{}\t\t{}\t{}",
                q.name(),
                q.query_class(),
                q.query_type()
            );
        }
        for (title, records) in [
            ("ANSWER", &m.answers),
            ("AUTHORITY", &m.authorities),
            ("ADDITIONAL", &m.additionals),
        ] {
            if records.is_empty() {
                continue;
            }
            let _ = writeln!(o, "\n;; {title} SECTION:");
            for r in records.iter() {
                record_line(&mut o, r);
            }
        }
        let _ = writeln!(o, "\n;; Query time: {} msec", self.elapsed.as_millis());
        let _ = writeln!(
            o,
            ";; SERVER: {}#{}({}) ({})",
            self.server.ip(),
            self.server.port(),
            self.server.ip(),
            self.transport
        );
        let _ = writeln!(o, ";; MSG SIZE  rcvd: {}", self.size);
        o
    }

    /// dig `+short`: the answers' data, one per line.
    pub fn to_short(&self) -> String {
        let mut o = String::new();
        for r in &self.response.answers {
            let _ = writeln!(o, "{}", r.data);
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trips_through_the_wire_format() {
        let q = build_query("demoapp.default.svc.cluster.local", RecordType::A, 42).unwrap();
        let back = Message::from_vec(&q.to_vec().unwrap()).unwrap();
        assert_eq!(back.metadata.id, 42);
        assert!(back.metadata.recursion_desired);
        assert_eq!(
            back.queries[0].name().to_string(),
            "demoapp.default.svc.cluster.local."
        );
        assert_eq!(parse_type("srv").unwrap(), RecordType::SRV);
        assert!(parse_type("NOPE").is_err());
        assert!(build_query("a..b", RecordType::A, 1).is_err());
    }
}
