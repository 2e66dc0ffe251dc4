//! `tls CERT KEY [CA] { client_auth MODE }`: the certificate of a `tls://` (DoT) or `https://`
//! (DoH) server block, and the PEM files that forward's `tls` option names.
//!
//! Files are read and checked when the Corefile loads (certificates parse, the key belongs to
//! the certificate), so a missing or bad file is an error naming the directive's file:line and
//! a reload keeps the previous configuration. Their contents become part of the
//! configuration: a reload that finds them changed applies the new certificate.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{SetupContext, arg_count, no_block, options, plugin_error};
use crate::dns::corefile::error::CorefileError;
use crate::dns::corefile::lexer::Token;
use crate::dns::corefile::syntax::Directive;
use crate::tls::{self, ClientAuth};

const PLUGIN: &str = "tls";

/// A PEM file read at load: its path and text. `Debug` shows the path only (keys are secret).
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    /// The path as written in the Corefile.
    pub path: PathBuf,
    /// The file's content.
    pub(crate) text: String,
}

impl fmt::Debug for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PemFile {
    /// (text, path) as the TLS helpers take them.
    pub(crate) fn pair(&self) -> (&str, &str) {
        (&self.text, self.path.to_str().unwrap_or("(non-UTF-8 path)"))
    }
}

/// The `tls` directive of a server block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The certificate chain (server certificate first).
    pub cert: PemFile,
    /// Its private key.
    pub key: PemFile,
    /// The CA verifying client certificates (system CAs without it, when verifying).
    pub ca: Option<PemFile>,
    /// The client-certificate policy (`client_auth`, default `nocert`).
    pub client_auth: ClientAuth,
}

impl TlsConfig {
    /// The PEM texts for [`crate::tls::ServerTls`].
    pub(crate) fn pem(&self) -> tls::ServerPem<'_> {
        tls::ServerPem {
            cert: self.cert.pair(),
            key: self.key.pair(),
            ca: self.ca.as_ref().map(PemFile::pair),
            client_auth: self.client_auth,
        }
    }
}

/// Reads the PEM file named by `tok` (`role` says what it is for, in errors).
pub(crate) fn read_pem(
    plugin: &str,
    tok: &Token,
    role: &str,
    ctx: &SetupContext<'_>,
) -> Result<PemFile, CorefileError> {
    let path = PathBuf::from(&tok.text);
    let text = ctx.files.read(Path::new(&tok.text)).map_err(|e| {
        plugin_error(
            plugin,
            &tok.at,
            format!("cannot read {role} file {}: {e}", tok.text),
        )
    })?;
    Ok(PemFile { path, text })
}

/// Checks that `pem` holds certificates.
pub(crate) fn check_certs(plugin: &str, tok: &Token, pem: &PemFile) -> Result<(), CorefileError> {
    let (text, name) = pem.pair();
    tls::parse_certs(text, name)
        .map(|_| ())
        .map_err(|e| plugin_error(plugin, &tok.at, e.to_string()))
}

/// Checks that `key` is a usable private key for the first certificate of `cert`.
pub(crate) fn check_pair(
    plugin: &str,
    at: &Token,
    cert: &PemFile,
    key: &PemFile,
) -> Result<(), CorefileError> {
    let (ct, cn) = cert.pair();
    let (kt, kn) = key.pair();
    tls::certified_key(ct, cn, kt, kn)
        .map(|_| ())
        .map_err(|e| plugin_error(plugin, &at.at, e.to_string()))
}

/// Parses `tls CERT KEY [CA] { client_auth ... }`.
pub(crate) fn parse(d: &Directive, ctx: &mut SetupContext<'_>) -> Result<TlsConfig, CorefileError> {
    arg_count(PLUGIN, d, 2, 3)?;
    let cert = read_pem(PLUGIN, &d.args[0], "certificate", ctx)?;
    let key = read_pem(PLUGIN, &d.args[1], "key", ctx)?;
    check_certs(PLUGIN, &d.args[0], &cert)?;
    check_pair(PLUGIN, &d.args[1], &cert, &key)?;
    let ca = match d.args.get(2) {
        Some(t) => {
            let ca = read_pem(PLUGIN, t, "CA", ctx)?;
            check_certs(PLUGIN, t, &ca)?;
            Some(ca)
        }
        None => None,
    };
    let mut client_auth = ClientAuth::NoCert;
    for opt in options(d) {
        match opt.name.text.as_str() {
            "client_auth" => {
                arg_count(PLUGIN, opt, 1, 1)?;
                no_block(PLUGIN, opt)?;
                let t = &opt.args[0];
                client_auth = match t.text.as_str() {
                    "nocert" => ClientAuth::NoCert,
                    "verify_if_given" => ClientAuth::VerifyIfGiven,
                    "require_and_verify" => ClientAuth::RequireAndVerify,
                    "request" | "require" => {
                        // Go's RequestClientCert/RequireAnyClientCert accept unverified
                        // certificates; rustls verifies every certificate it is given.
                        ctx.unsupported(
                            PLUGIN,
                            &t.at,
                            &format!("client_auth {} (an unverified client certificate)", t.text),
                        )?;
                        ClientAuth::NoCert
                    }
                    other => {
                        return Err(plugin_error(
                            PLUGIN,
                            &t.at,
                            format!(
                                "unknown client_auth {other:?} (nocert, verify_if_given or require_and_verify)"
                            ),
                        ));
                    }
                };
            }
            _ => ctx.unknown_option(PLUGIN, opt)?,
        }
    }
    Ok(TlsConfig {
        cert,
        key,
        ca,
        client_auth,
    })
}
