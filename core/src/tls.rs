//! TLS material for the encrypted DNS transports: one rustls crypto provider for the process,
//! PEM parsing with errors that say what is wrong, a server certificate and client-certificate
//! policy that a reload swaps without closing the listener, and client configurations for DNS
//! over TLS upstreams.
//!
//! rustls panics at the first TLS connection when more than one crypto provider is compiled in
//! and none is installed. svcnet builds rustls with `ring` only (kube's choice too) and
//! [`install_crypto_provider`] installs it as the process default once, from the library
//! entry points (`dns::plugins::serve::start_corefile`, `agent::run`); every configuration here is
//! built from that default, never from a provider made per connection.

use std::fmt;
use std::sync::{Arc, Once};

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TlsError {
    /// A certificate file holds no PEM certificate, or one that does not parse.
    #[error("{what}: no usable PEM certificate ({detail})")]
    Certificate {
        /// Which file (its role and path).
        what: String,
        /// The parser's reason.
        detail: String,
    },
    /// A key file holds no PEM private key, or one rustls cannot use.
    #[error("{what}: no usable PEM private key ({detail})")]
    Key {
        /// Which file.
        what: String,
        /// The reason.
        detail: String,
    },
    /// The private key does not belong to the certificate.
    #[error("the key {key} does not match the certificate {cert}: {detail}")]
    Mismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// The reason.
        detail: String,
    },
    /// A CA bundle could not be turned into trust anchors or a verifier.
    #[error("{what}: {detail}")]
    Trust {
        /// Which file.
        what: String,
        /// The reason.
        detail: String,
    },
}

/// Installs rustls's `ring` provider as the process default (once; later calls and a provider
/// installed by someone else are left alone).
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The process-wide provider (installing `ring` first if nothing is installed yet).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    install_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// The certificates of a PEM text (`what` names the file in errors).
pub(crate) fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate {
            what: what.to_string(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Certificate {
            what: what.to_string(),
            detail: "no CERTIFICATE block".to_string(),
        });
    }
    // Parse each one now, so a corrupt body is reported at load rather than at a handshake.
    for c in &certs {
        webpki_parse(c).map_err(|detail| TlsError::Certificate {
            what: what.to_string(),
            detail,
        })?;
    }
    Ok(certs)
}

fn webpki_parse(cert: &CertificateDer<'_>) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    // Adding as a trust anchor parses the certificate's structure.
    roots.add(cert.clone()).map_err(|e| e.to_string())
}

/// The private key of a PEM text (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn parse_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::Key {
        what: what.to_string(),
        detail: e.to_string(),
    })
}

/// A certificate chain and its key, checked against each other.
pub(crate) fn certified_key(
    cert_pem: &str,
    cert_name: &str,
    key_pem: &str,
    key_name: &str,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = parse_certs(cert_pem, cert_name)?;
    let key = parse_key(key_pem, key_name)?;
    let provider = provider();
    CertifiedKey::from_der(certs, key, &provider)
        .map(Arc::new)
        .map_err(|e| TlsError::Mismatch {
            cert: cert_name.to_string(),
            key: key_name.to_string(),
            detail: e.to_string(),
        })
}

/// Trust anchors: the CA file's certificates, or the system's when there is none.
pub(crate) fn root_store(ca_pem: Option<(&str, &str)>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_pem {
        Some((pem, what)) => {
            for c in parse_certs(pem, what)? {
                roots.add(c).map_err(|e| TlsError::Trust {
                    what: what.to_string(),
                    detail: e.to_string(),
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "cannot read some system CA certificates");
            }
            let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
        }
    }
    Ok(roots)
}

/// How a DoT/DoH listener treats client certificates (CoreDNS `tls { client_auth }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificate is asked for (`nocert`, the default).
    #[default]
    NoCert,
    /// A certificate is asked for and verified when the client sends one (`verify_if_given`).
    VerifyIfGiven,
    /// A certificate signed by the CA is required (`require_and_verify`).
    RequireAndVerify,
}

/// What a listener serves with: its certificate and its client-certificate verifier.
struct ServerMaterial {
    key: Arc<CertifiedKey>,
    verifier: Arc<dyn ClientCertVerifier>,
}

/// The TLS settings of a DoT/DoH listener, swappable while it serves (reload).
pub(crate) struct ServerTls {
    current: ArcSwap<ServerMaterial>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

/// The PEM texts of a listener's TLS settings (with the file names, for errors).
#[derive(Clone, Copy)]
pub(crate) struct ServerPem<'a> {
    /// (certificate chain PEM, file name).
    pub cert: (&'a str, &'a str),
    /// (private key PEM, file name).
    pub key: (&'a str, &'a str),
    /// (CA PEM, file name), if given.
    pub ca: Option<(&'a str, &'a str)>,
    /// The client-certificate policy.
    pub client_auth: ClientAuth,
}

fn server_material(pem: ServerPem<'_>) -> Result<ServerMaterial, TlsError> {
    let key = certified_key(pem.cert.0, pem.cert.1, pem.key.0, pem.key.1)?;
    let verifier = match pem.client_auth {
        ClientAuth::NoCert => WebPkiClientVerifier::no_client_auth(),
        mode => {
            let roots = Arc::new(root_store(pem.ca)?);
            let mut b = WebPkiClientVerifier::builder_with_provider(roots, provider());
            if mode == ClientAuth::VerifyIfGiven {
                b = b.allow_unauthenticated();
            }
            b.build().map_err(|e| TlsError::Trust {
                what: pem.ca.map_or("system CAs", |c| c.1).to_string(),
                detail: e.to_string(),
            })?
        }
    };
    Ok(ServerMaterial { key, verifier })
}

impl ServerTls {
    /// Settings from PEM texts.
    pub(crate) fn new(pem: ServerPem<'_>) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(server_material(pem)?),
        }))
    }

    /// Serves `other`'s certificate and client policy from the next handshake on.
    pub(crate) fn replace_from(&self, other: &ServerTls) {
        self.current.store(other.current.load_full());
    }

    /// A rustls server configuration that reads these settings at every handshake, offering
    /// `alpn` (`dot`, `h2`).
    pub(crate) fn server_config(self: &Arc<Self>, alpn: &[u8]) -> rustls::ServerConfig {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the default provider supports the default protocol versions")
            .with_client_cert_verifier(Arc::new(SwapVerifier(self.clone())))
            .with_cert_resolver(Arc::new(SwapResolver(self.clone())));
        cfg.alpn_protocols = vec![alpn.to_vec()];
        cfg
    }

    /// The certificate chain served now (for tests).
    #[cfg(test)]
    pub(crate) fn served_chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.load().key.cert.clone()
    }
}

#[derive(Debug)]
struct SwapResolver(Arc<ServerTls>);

impl ResolvesServerCert for SwapResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load().key.clone())
    }
}

/// Delegates to the current verifier. It sends no CA names in its certificate request (the
/// list would have to outlive a swap); clients then offer any certificate they have.
#[derive(Debug)]
struct SwapVerifier(Arc<ServerTls>);

impl ClientCertVerifier for SwapVerifier {
    fn offer_client_auth(&self) -> bool {
        self.0.current.load().verifier.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.current.load().verifier.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .current
            .load()
            .verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current
            .load()
            .verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current
            .load()
            .verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current.load().verifier.supported_verify_schemes()
    }
}

/// A PEM text and the name of its file.
pub(crate) type Pem<'a> = (&'a str, &'a str);

/// The PEM texts of a DoT upstream's client settings (CoreDNS forward `tls [CERT KEY] [CA]`).
#[derive(Clone, Copy, Default)]
pub(crate) struct ClientPem<'a> {
    /// Client certificate and key (PEM, file name) for client authentication.
    pub identity: Option<(Pem<'a>, Pem<'a>)>,
    /// CA (PEM, file name) verifying the server; the system's CAs without it.
    pub ca: Option<(&'a str, &'a str)>,
}

/// A rustls client configuration for DNS over TLS upstreams (ALPN `dot`).
pub(crate) fn client_config(pem: ClientPem<'_>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = root_store(pem.ca)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default protocol versions")
        .with_root_certificates(roots);
    let mut cfg = match pem.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = parse_certs(cert.0, cert.1)?;
            let k = parse_key(key.0, key.1)?;
            builder
                .with_client_auth_cert(certs, k)
                .map_err(|e| TlsError::Mismatch {
                    cert: cert.1.to_string(),
                    key: key.1.to_string(),
                    detail: e.to_string(),
                })?
        }
    };
    cfg.alpn_protocols = vec![b"dot".to_vec()];
    Ok(Arc::new(cfg))
}

/// The name a DoT upstream's certificate must carry: `tls_servername`, else its IP address.
pub(crate) fn upstream_name(
    servername: Option<&str>,
    ip: std::net::IpAddr,
) -> Result<ServerName<'static>, String> {
    match servername {
        Some(n) => ServerName::try_from(n.to_string())
            .map_err(|e| format!("tls_servername {n:?} is not a valid server name: {e}")),
        None => Ok(ServerName::IpAddress(ip.into())),
    }
}

#[cfg(test)]
pub(crate) mod test_certs {
    //! Certificates generated at test time with the `openssl` command line tool.

    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// A CA and a server certificate for `name` (DNS SAN, plus IP 127.0.0.1) signed by it.
    pub(crate) struct Pki {
        /// The CA certificate (PEM file).
        pub ca: PathBuf,
        /// The server certificate (PEM file).
        pub cert: PathBuf,
        /// The server key (PEM file).
        pub key: PathBuf,
    }

    fn run(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Generates the files under `dir` with prefix `tag`.
    pub(crate) fn generate(dir: &Path, tag: &str, name: &str) -> Pki {
        let f = |s: &str| format!("{tag}-{s}");
        run(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={tag} test CA"),
                "-keyout",
                &f("ca.key"),
                "-out",
                &f("ca.pem"),
            ],
        );
        run(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &f("key.pem"),
                "-out",
                &f("csr.pem"),
            ],
        );
        std::fs::write(
            dir.join(f("ext.cnf")),
            format!("subjectAltName=DNS:{name},IP:127.0.0.1\n"),
        )
        .unwrap();
        run(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &f("csr.pem"),
                "-CA",
                &f("ca.pem"),
                "-CAkey",
                &f("ca.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &f("ext.cnf"),
                "-out",
                &f("cert.pem"),
            ],
        );
        Pki {
            ca: dir.join(f("ca.pem")),
            cert: dir.join(f("cert.pem")),
            key: dir.join(f("key.pem")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: &std::path::Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn pem_errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let a = test_certs::generate(dir.path(), "a", "dns.test");
        let b = test_certs::generate(dir.path(), "b", "dns.test");
        let e = parse_certs("not pem", "cert.pem").unwrap_err().to_string();
        assert!(
            e.contains("cert.pem") && e.contains("no CERTIFICATE"),
            "{e}"
        );
        let e = parse_key(&read(&a.cert), "key.pem")
            .unwrap_err()
            .to_string();
        assert!(e.contains("key.pem") && e.contains("private key"), "{e}");
        // A's certificate with B's key.
        let e = certified_key(&read(&a.cert), "a.pem", &read(&b.key), "b.key")
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match"), "{e}");
        certified_key(&read(&a.cert), "a.pem", &read(&a.key), "a.key").unwrap();
    }

    #[test]
    fn a_bad_pair_is_refused_and_a_good_one_replaces_the_served_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let a = test_certs::generate(dir.path(), "a", "dns.test");
        let b = test_certs::generate(dir.path(), "b", "dns.test");
        let (ac, ak, bc, bk) = (read(&a.cert), read(&a.key), read(&b.cert), read(&b.key));
        fn pem<'a>(c: &'a str, k: &'a str) -> ServerPem<'a> {
            ServerPem {
                cert: (c, "cert"),
                key: (k, "key"),
                ca: None,
                client_auth: ClientAuth::NoCert,
            }
        }
        let tls = ServerTls::new(pem(&ac, &ak)).unwrap();
        let first = tls.served_chain();
        // B's certificate with A's key is refused before anything is swapped.
        assert!(ServerTls::new(pem(&bc, &ak)).is_err());
        assert_eq!(tls.served_chain(), first);
        tls.replace_from(&ServerTls::new(pem(&bc, &bk)).unwrap());
        assert_ne!(tls.served_chain(), first);
        assert_eq!(tls.served_chain(), parse_certs(&bc, "b").unwrap());
    }
}
