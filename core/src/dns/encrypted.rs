//! DNS over TLS (RFC 7858) and DNS over HTTPS (RFC 8484) listeners, served by hickory-server.
//!
//! hickory-server's [`Server`] owns the sockets, the TLS handshakes (rustls, with the
//! certificate of [`crate::tls::ServerTls`], swapped on reload without closing the listener),
//! DoT framing and HTTP/2; [`ChainHandler`] is its request handler and runs each query through
//! the same plugin [`Chain`] as the UDP/TCP listener of [`super::server`], which stays
//! hand-written for speed. Each query is parsed and its answer encoded by [`super::wire`]
//! exactly as over TCP (same FORMERR/NOTIMP/BADVERS rules, no size limit), then handed to
//! hickory's response writer.
//!
//! Limits of hickory-server 0.26 that show here: DoH accepts `POST` only (a `GET
//! /dns-query?dns=` is answered with a reset stream) over HTTP/2 only, on the path
//! `/dns-query`; queries of one DoT connection are answered one after another, not
//! concurrently; an idle DoT/DoH connection is closed after the handshake timeout (10 s).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Header, HeaderCounts, Message, MessageType, Metadata, OpCode};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{
    Request as HickoryRequest, RequestHandler, ResponseHandler, ResponseInfo,
};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::TcpListener;

use super::error::DnsError;
use super::handler::{Chain, Transport};
use super::metrics::{DnsMetrics, Exchange};
use super::server::{run_chain, tcp_listener};
use super::wire::{Encoder, Parsed, parse_request};
use crate::dns::corefile::ServerTransport;
use crate::tls::ServerTls;

/// How long a TLS handshake may take; hickory also closes a connection idle this long.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The DoH path (RFC 8484's example, and what CoreDNS and kdig use).
pub(crate) const DOH_PATH: &str = "/dns-query";

/// hickory-server's request handler: the plugin chain behind the wire codec of the UDP/TCP
/// listener.
pub(crate) struct ChainHandler {
    chain: Chain,
    metrics: Arc<DnsMetrics>,
}

impl ChainHandler {
    /// A handler running `chain`, counting in `metrics` (as TCP, like CoreDNS counts DoT).
    pub(crate) fn new(chain: Chain, metrics: Arc<DnsMetrics>) -> Self {
        Self { chain, metrics }
    }

    /// The answer to the raw query `bytes` from `client`, encoded; `None` to send nothing.
    /// Also returns what the metrics record: question type and response code.
    async fn answer(
        &self,
        bytes: &[u8],
        client: SocketAddr,
    ) -> Option<(
        Vec<u8>,
        Option<hickory_proto::rr::RecordType>,
        hickory_proto::op::ResponseCode,
    )> {
        let mut encoder = Encoder::new();
        match parse_request(bytes, client, Transport::Tcp) {
            Parsed::Drop => None,
            Parsed::Reject(rej) => {
                let qtype = rej.question.as_ref().map(|q| q.query_type());
                Some((encoder.encode_rejection(&rej).to_vec(), qtype, rej.rcode))
            }
            Parsed::Query(req) => {
                let resp = run_chain(&self.chain, &req, &self.metrics).resolve().await;
                let (out, _) = encoder.encode(&req, &resp);
                Some((out.to_vec(), Some(req.record_type()), resp.rcode))
            }
        }
    }
}

/// The header hickory reports for a request nothing was sent for.
fn nothing_sent(request: &HickoryRequest) -> ResponseInfo {
    let mut metadata = Metadata::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    metadata.response_code = hickory_proto::op::ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for ChainHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &HickoryRequest,
        mut response_handle: R,
    ) -> ResponseInfo {
        let started = Instant::now();
        let raw = request.as_slice();
        let Some((bytes, qtype, rcode)) = self.answer(raw, request.src()).await else {
            return nothing_sent(request);
        };
        // hickory writes responses from records: decode the answer encoded above (our own
        // output, so it parses) and hand its parts over unchanged.
        let msg = match Message::from_vec(&bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "encrypted DNS: cannot re-read an encoded answer");
                let mut metadata =
                    Metadata::new(request.metadata.id, MessageType::Response, OpCode::Query);
                metadata.response_code = hickory_proto::op::ResponseCode::ServFail;
                let builder = MessageResponseBuilder::new(&request.queries, None);
                return response_handle
                    .send_response(builder.build_no_records(metadata))
                    .await
                    .unwrap_or_else(|_| nothing_sent(request));
            }
        };
        let builder = MessageResponseBuilder::new(&request.queries, msg.edns.as_ref());
        let response = builder.build(
            msg.metadata,
            msg.answers.iter(),
            msg.authorities.iter(),
            std::iter::empty(),
            msg.additionals.iter(),
        );
        let info = match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(client = %request.src(), error = %e, "encrypted DNS: send failed");
                return nothing_sent(request);
            }
        };
        self.metrics.recorder().record(&Exchange {
            transport: Transport::Tcp,
            ipv6: request.src().is_ipv6(),
            record_type: qtype,
            rcode: Some(rcode),
            duration: started.elapsed(),
            request_size: raw.len(),
            response_size: bytes.len(),
        });
        info
    }
}

/// A bound DoT or DoH listener, ready to serve.
pub(crate) struct EncryptedServer {
    listener: TcpListener,
    transport: ServerTransport,
    tls: Arc<ServerTls>,
    local: SocketAddr,
}

impl std::fmt::Debug for EncryptedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedServer")
            .field("local", &self.local)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl EncryptedServer {
    /// Binds TCP on `addr` for `transport` (`Tls` or `Https`) with the settings of `tls`.
    pub(crate) fn bind(
        addr: SocketAddr,
        transport: ServerTransport,
        tls: Arc<ServerTls>,
    ) -> Result<Self, DnsError> {
        let listener = tcp_listener(addr).map_err(|source| DnsError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| DnsError::Bind { addr, source })?;
        Ok(Self {
            listener,
            transport,
            tls,
            local,
        })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until the task is aborted (dropping the hickory server stops its listener and
    /// connection tasks).
    pub(crate) async fn serve(self, chain: Chain, metrics: Arc<DnsMetrics>) {
        let mut server = Server::new(ChainHandler::new(chain, metrics));
        let registered = match self.transport {
            ServerTransport::Https => server.register_https_listener_with_tls_config(
                self.listener,
                HANDSHAKE_TIMEOUT,
                Arc::new(self.tls.server_config(b"h2")),
                None,
                DOH_PATH.to_string(),
            ),
            _ => server.register_tls_listener_with_tls_config(
                self.listener,
                HANDSHAKE_TIMEOUT,
                Arc::new(self.tls.server_config(b"dot")),
            ),
        };
        if let Err(e) = registered {
            tracing::error!(listen = %self.local, error = %e, "cannot start the encrypted DNS listener");
            return;
        }
        if let Err(e) = server.block_until_done().await {
            tracing::error!(listen = %self.local, error = %e, "an encrypted DNS listener ended");
        }
    }
}
