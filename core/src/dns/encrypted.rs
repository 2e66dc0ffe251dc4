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
    /// Also returns what the metrics record: question type, response code and the plugin that answered.
    async fn answer(
        &self,
        bytes: &[u8],
        client: SocketAddr,
    ) -> Option<(
        Vec<u8>,
        Option<hickory_proto::rr::RecordType>,
        hickory_proto::op::ResponseCode,
        &'static str,
    )> {
        let mut encoder = Encoder::new();
        match parse_request(bytes, client, Transport::Tcp) {
            Parsed::Drop => None,
            Parsed::Reject(rej) => {
                let qtype = rej.question.as_ref().map(|q| q.query_type());
                Some((
                    encoder.encode_rejection(&rej).to_vec(),
                    qtype,
                    rej.rcode,
                    "",
                ))
            }
            Parsed::Query(req) => {
                let resp = run_chain(&self.chain, &req, &self.metrics).resolve().await;
                let (out, _) = encoder.encode(&req, &resp);
                Some((
                    out.to_vec(),
                    Some(req.record_type()),
                    resp.rcode,
                    resp.plugin.unwrap_or(""),
                ))
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
        let Some((bytes, qtype, rcode, plugin)) = self.answer(raw, request.src()).await else {
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
            plugin,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::corefile::{ForwardConfig, PemFile};
    use crate::dns::handler::{Next, Plugin, Reply, Request, Response, empty_records};
    use crate::dns::plugins::forward::Forward;
    use crate::tls::test_certs::generate;
    use crate::tls::{ClientAuth, ServerPem};
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    /// Answers `www.example.test.` A 192.0.2.7, NXDOMAIN for everything else.
    struct Fixed;
    impl Plugin for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn handle(&self, req: &Request, _next: Next) -> Reply {
            if req.lower_name() != "www.example.test." {
                return Reply::Ready(Response::new(ResponseCode::NXDomain).authoritative());
            }
            let rec = Record::from_rdata(req.name().clone(), 30, RData::A(A::new(192, 0, 2, 7)));
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

    fn pem_file(path: &std::path::Path) -> PemFile {
        PemFile {
            path: path.to_path_buf(),
            text: std::fs::read_to_string(path).unwrap(),
        }
    }

    async fn dot_listener(
        cert: &PemFile,
        key: &PemFile,
    ) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let tls = ServerTls::new(ServerPem {
            cert: cert.pair(),
            key: key.pair(),
            ca: None,
            client_auth: ClientAuth::NoCert,
        })
        .unwrap();
        let server = EncryptedServer::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            ServerTransport::Tls,
            tls,
        )
        .unwrap();
        let addr = server.local_addr();
        let chain = Chain::new(vec![Arc::new(Fixed)]);
        let task = tokio::spawn(server.serve(chain, DnsMetrics::new("tls://test", ".")));
        (addr, task)
    }

    fn dot_forward(addr: SocketAddr, servername: &str, ca: &PemFile) -> Forward {
        let mut cfg = ForwardConfig::new(".".into(), vec![addr]);
        cfg.to_tls = vec![true];
        cfg.tls.servername = Some(servername.to_string());
        cfg.tls.ca = Some(ca.clone());
        cfg.max_fails = 1;
        Forward::new(cfg, None)
    }

    async fn ask(chain: &Chain, name: &str) -> Response {
        let req = Request::new(Name::from_ascii(name).unwrap(), RecordType::A);
        chain.handle(&req).resolve().await
    }

    #[tokio::test]
    async fn dot_forward_to_the_hickory_listener_reuses_one_tls_connection() {
        crate::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let pki = generate(dir.path(), "a", "dns.test");
        let (cert, key, ca) = (pem_file(&pki.cert), pem_file(&pki.key), pem_file(&pki.ca));
        let (addr, task) = dot_listener(&cert, &key).await;

        let forward = Arc::new(dot_forward(addr, "dns.test", &ca));
        let chain = Chain::new(vec![forward.clone() as Arc<dyn Plugin>]);
        for _ in 0..5 {
            let resp = ask(&chain, "www.example.test.").await;
            assert_eq!(resp.rcode, ResponseCode::NoError);
            assert_eq!(resp.answers.len(), 1);
            assert_eq!(
                resp.answers[0].data,
                RData::A(A::new(192, 0, 2, 7)),
                "the listener's answer passes through"
            );
            assert!(resp.authoritative);
        }
        let resp = ask(&chain, "nope.example.test.").await;
        assert_eq!(resp.rcode, ResponseCode::NXDomain);
        let up = &forward.upstreams()[0];
        assert!(up.is_tls());
        assert_eq!(
            up.tls_handshakes(),
            1,
            "six sequential queries share one TLS connection"
        );
        assert_eq!(up.fails(), 0);

        // A certificate that does not carry the expected name fails verification: SERVFAIL,
        // the upstream counts a failure, and nothing goes out in clear text.
        let wrong = Arc::new(dot_forward(addr, "other.test", &ca));
        let chain = Chain::new(vec![wrong.clone() as Arc<dyn Plugin>]);
        assert_eq!(
            ask(&chain, "www.example.test.").await.rcode,
            ResponseCode::ServFail
        );
        assert!(wrong.upstreams()[0].fails() >= 1);
        assert_eq!(wrong.upstreams()[0].tls_handshakes(), 0);

        // A CA that did not sign the certificate fails too.
        let other = generate(dir.path(), "b", "dns.test");
        let untrusted = Arc::new(dot_forward(addr, "dns.test", &pem_file(&other.ca)));
        let chain = Chain::new(vec![untrusted as Arc<dyn Plugin>]);
        assert_eq!(
            ask(&chain, "www.example.test.").await.rcode,
            ResponseCode::ServFail
        );
        task.abort();
    }

    #[tokio::test]
    async fn a_down_dot_upstream_recovers_through_its_health_probe() {
        crate::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let pki = generate(dir.path(), "a", "dns.test");
        let (cert, key, ca) = (pem_file(&pki.cert), pem_file(&pki.key), pem_file(&pki.ca));
        // Reserve a port with nothing listening yet.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cfg = ForwardConfig::new(".".into(), vec![addr]);
        cfg.to_tls = vec![true];
        cfg.tls.servername = Some("dns.test".into());
        cfg.tls.ca = Some(ca);
        cfg.max_fails = 1;
        cfg.health_check = Duration::from_millis(50);
        let forward = Arc::new(Forward::new(cfg, None));
        let chain = Chain::new(vec![forward.clone() as Arc<dyn Plugin>]);
        for _ in 0..2 {
            assert_eq!(
                ask(&chain, "www.example.test.").await.rcode,
                ResponseCode::ServFail
            );
        }
        let up = forward.upstreams()[0].clone();
        assert!(up.is_down(1), "two failures with max_fails 1");
        // The listener comes up on that port: the probe (over TLS) marks it healthy.
        let tls = ServerTls::new(ServerPem {
            cert: cert.pair(),
            key: key.pair(),
            ca: None,
            client_auth: ClientAuth::NoCert,
        })
        .unwrap();
        let server = EncryptedServer::bind(addr, ServerTransport::Tls, tls).unwrap();
        let task = tokio::spawn(server.serve(
            Chain::new(vec![Arc::new(Fixed)]),
            DnsMetrics::new("tls://test", "."),
        ));
        let started = Instant::now();
        while up.fails() != 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the probe did not find the upstream healthy"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(up.tls_handshakes() >= 1, "the probe went over TLS");
        assert_eq!(
            ask(&chain, "www.example.test.").await.rcode,
            ResponseCode::NoError
        );
        task.abort();
    }

    #[tokio::test]
    async fn dot_answers_that_do_not_match_the_query_are_skipped() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        crate::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let pki = generate(dir.path(), "a", "dns.test");
        let (cert, key, ca) = (pem_file(&pki.cert), pem_file(&pki.key), pem_file(&pki.ca));
        let tls = ServerTls::new(ServerPem {
            cert: cert.pair(),
            key: key.pair(),
            ca: None,
            client_auth: ClientAuth::NoCert,
        })
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls.server_config(b"dot")));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A DoT server that first sends an answer with another id, then one for another
        // question, then the real answer.
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut s = acceptor.accept(tcp).await.unwrap();
            let len = s.read_u16().await.unwrap();
            let mut buf = vec![0u8; usize::from(len)];
            s.read_exact(&mut buf).await.unwrap();
            let q = Message::from_vec(&buf).unwrap();
            let reply = |id: u16, name: &str| {
                let mut m = Message::new(id, MessageType::Response, OpCode::Query);
                let mut query = q.queries[0].clone();
                query.set_name(Name::from_ascii(name).unwrap());
                m.add_query(query.clone());
                m.add_answer(Record::from_rdata(
                    query.name().clone(),
                    30,
                    RData::A(A::new(198, 51, 100, 1)),
                ));
                let b = m.to_vec().unwrap();
                let mut f = (b.len() as u16).to_be_bytes().to_vec();
                f.extend(b);
                f
            };
            let mut out = reply(q.metadata.id.wrapping_add(1), "www.example.test.");
            out.extend(reply(q.metadata.id, "evil.example.test."));
            out.extend(reply(q.metadata.id, "www.example.test."));
            s.write_all(&out).await.unwrap();
            s.flush().await.unwrap();
            // Keep the connection open until the client is done.
            let _ = s.read_u16().await;
        });
        let forward = Arc::new(dot_forward(addr, "dns.test", &ca));
        let chain = Chain::new(vec![forward.clone() as Arc<dyn Plugin>]);
        let resp = ask(&chain, "www.example.test.").await;
        assert_eq!(resp.rcode, ResponseCode::NoError);
        assert_eq!(
            resp.answers[0].name,
            Name::from_ascii("www.example.test.").unwrap()
        );
        assert_eq!(
            forward.upstreams()[0].mismatches(),
            2,
            "the wrong id and the wrong question were both skipped"
        );
        task.abort();
    }

    #[tokio::test]
    async fn require_and_verify_admits_only_clients_with_a_certificate_from_the_ca() {
        crate::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let server = generate(dir.path(), "a", "dns.test");
        let other = generate(dir.path(), "b", "dns.test");
        let (cert, key, ca) = (
            pem_file(&server.cert),
            pem_file(&server.key),
            pem_file(&server.ca),
        );
        let tls = ServerTls::new(ServerPem {
            cert: cert.pair(),
            key: key.pair(),
            ca: Some(ca.pair()),
            client_auth: ClientAuth::RequireAndVerify,
        })
        .unwrap();
        let bound = EncryptedServer::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            ServerTransport::Tls,
            tls,
        )
        .unwrap();
        let addr = bound.local_addr();
        let task = tokio::spawn(bound.serve(
            Chain::new(vec![Arc::new(Fixed)]),
            DnsMetrics::new("tls://test", "."),
        ));
        let client = |identity: Option<(&PemFile, &PemFile)>| {
            let mut cfg = ForwardConfig::new(".".into(), vec![addr]);
            cfg.to_tls = vec![true];
            cfg.tls.servername = Some("dns.test".into());
            cfg.tls.ca = Some(ca.clone());
            if let Some((c, k)) = identity {
                cfg.tls.cert = Some(c.clone());
                cfg.tls.key = Some(k.clone());
            }
            Chain::new(vec![Arc::new(Forward::new(cfg, None)) as Arc<dyn Plugin>])
        };
        // No client certificate: the handshake is refused.
        assert_eq!(
            ask(&client(None), "www.example.test.").await.rcode,
            ResponseCode::ServFail
        );
        // A certificate from another CA: refused.
        let (oc, ok) = (pem_file(&other.cert), pem_file(&other.key));
        assert_eq!(
            ask(&client(Some((&oc, &ok))), "www.example.test.")
                .await
                .rcode,
            ResponseCode::ServFail
        );
        // A certificate the CA signed: answered.
        assert_eq!(
            ask(&client(Some((&cert, &key))), "www.example.test.")
                .await
                .rcode,
            ResponseCode::NoError
        );
        task.abort();
    }
}
