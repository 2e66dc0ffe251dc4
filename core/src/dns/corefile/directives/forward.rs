//! `forward FROM TO... { ... }`: send queries to upstream resolvers.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::tls::{PemFile, check_certs, check_pair, read_pem};
use super::{SetupContext, arg_count, duration, no_block, number, options, plugin_error, zones};
use crate::dns::corefile::error::CorefileError;
use crate::dns::corefile::names::parse_upstream;
use crate::dns::corefile::syntax::Directive;

const PLUGIN: &str = "forward";

/// CoreDNS's limit on upstreams per forward.
pub(crate) const MAX_UPSTREAMS: usize = 15;

/// How an upstream is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// A random healthy upstream first (default).
    #[default]
    Random,
    /// The next upstream in turn.
    RoundRobin,
    /// Always in the written order.
    Sequential,
}

/// How UDP source ports are used for queries to upstreams (`source_port` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourcePortMode {
    /// `random` for non-loopback upstreams, `pooled` for loopback ones (default).
    #[default]
    Auto,
    /// `source_port random`: a new socket, so a new random port, for every UDP query.
    Random,
    /// `source_port pooled`: UDP sockets reused from a pool (CoreDNS's behaviour).
    Pooled,
}

/// DNS over TLS settings of `forward`: `tls_servername NAME` and `tls [CERT KEY] [CA]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ForwardTls {
    /// The name the upstreams' certificates must carry and the SNI sent (`tls_servername`);
    /// without it the certificate must carry the upstream's IP address.
    pub servername: Option<String>,
    /// Client certificate for client authentication (with `key`).
    pub cert: Option<PemFile>,
    /// Its private key.
    pub key: Option<PemFile>,
    /// The CA verifying the upstreams' certificates (the system's CAs without it).
    pub ca: Option<PemFile>,
}

/// The forward plugin's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardConfig {
    /// The zone whose queries are forwarded (`.` for all).
    pub from: String,
    /// Upstream servers, in the written order (a resolv.conf expands to its name servers).
    pub to: Vec<SocketAddr>,
    /// For each entry of `to`, whether it is reached over TLS (`tls://IP[:853]`).
    pub to_tls: Vec<bool>,
    /// DNS over TLS settings for the `tls://` upstreams.
    pub tls: ForwardTls,
    /// Zones not forwarded (passed to the next plugin).
    pub except: Vec<String>,
    /// Always use TCP.
    pub force_tcp: bool,
    /// Use UDP even when the client came over TCP (truncated answers then retry over TCP).
    pub prefer_udp: bool,
    /// Upstream selection.
    pub policy: Policy,
    /// Failures in a row that mark an upstream down (0: never; default 2).
    pub max_fails: u32,
    /// Interval between health probes of a failing upstream (default 0.5 s).
    pub health_check: Duration,
    /// Health probes without the RD bit.
    pub health_check_no_rec: bool,
    /// The name probed (default `.`).
    pub health_check_domain: String,
    /// Idle upstream connections are closed after this (default 10 s).
    pub expire: Duration,
    /// Queries in flight beyond this get REFUSED (0: no limit).
    pub max_concurrent: u32,
    /// How long to wait for an upstream's answer before trying another (default 2 s).
    pub read_timeout: Duration,
    /// Upstream response codes that make the query go on to the next plugin instead.
    pub next: Vec<u16>,
    /// Upstream response codes that make the query try the next upstream.
    pub failover: Vec<u16>,
    /// Answer SERVFAIL at once when every upstream is down (instead of trying one anyway).
    pub failfast_all_unhealthy_upstreams: bool,
    /// UDP source port use (`source_port random|pooled`; default: random unless loopback).
    pub source_port: SourcePortMode,
    /// 0x20: randomise the case of the question name and require it echoed exactly
    /// (`case_randomization`; off by default).
    pub case_randomization: bool,
}

impl ForwardConfig {
    /// Defaults for forwarding `from` to `to`.
    pub fn new(from: String, to: Vec<SocketAddr>) -> Self {
        Self {
            from,
            to_tls: vec![false; to.len()],
            tls: ForwardTls::default(),
            to,
            except: Vec::new(),
            force_tcp: false,
            prefer_udp: false,
            policy: Policy::Random,
            max_fails: 2,
            health_check: Duration::from_millis(500),
            health_check_no_rec: false,
            health_check_domain: ".".to_string(),
            expire: Duration::from_secs(10),
            max_concurrent: 0,
            read_timeout: Duration::from_secs(2),
            next: Vec::new(),
            failover: Vec::new(),
            failfast_all_unhealthy_upstreams: false,
            source_port: SourcePortMode::Auto,
            case_randomization: false,
        }
    }
}

/// The `nameserver` lines of a resolv.conf.
pub(crate) fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(|w| parse_upstream(w.split('%').next().unwrap_or(w), 53))
        })
        .collect()
}

/// Parses a `forward` directive.
pub(crate) fn parse(
    d: &Directive,
    ctx: &mut SetupContext<'_>,
) -> Result<ForwardConfig, CorefileError> {
    arg_count(PLUGIN, d, 2, usize::MAX)?;
    let from = zones(PLUGIN, &d.args[..1])?;
    if from.len() != 1 {
        return Err(plugin_error(
            PLUGIN,
            &d.args[0].at,
            "FROM must be a single zone",
        ));
    }
    let mut to = Vec::new();
    let mut to_tls = Vec::new();
    for t in &d.args[1..] {
        let text = t.text.as_str();
        if let Some(rest) = text.strip_prefix("tls://") {
            let sa = parse_upstream(rest, 853).ok_or_else(|| {
                plugin_error(
                    PLUGIN,
                    &t.at,
                    format!("{text:?} is not tls://IP or tls://IP:port"),
                )
            })?;
            to.push(sa);
            to_tls.push(true);
            continue;
        }
        if let Some(sa) = parse_upstream(text, 53) {
            to.push(sa);
            to_tls.push(false);
            continue;
        }
        if text.contains('/') {
            let content = ctx.files.read(Path::new(text)).map_err(|e| {
                plugin_error(
                    PLUGIN,
                    &t.at,
                    format!("cannot read upstreams from {text}: {e}"),
                )
            })?;
            let servers = resolv_conf_nameservers(&content);
            if servers.is_empty() {
                return Err(plugin_error(
                    PLUGIN,
                    &t.at,
                    format!("no nameserver lines in {text}"),
                ));
            }
            to_tls.extend(servers.iter().map(|_| false));
            to.extend(servers);
            continue;
        }
        return Err(plugin_error(
            PLUGIN,
            &t.at,
            format!("{text:?} is not an IP address, IP:port, dns:// address or resolv.conf path"),
        ));
    }
    if to.is_empty() {
        return Err(plugin_error(PLUGIN, &d.name.at, "no usable upstream"));
    }
    if to.len() > MAX_UPSTREAMS {
        return Err(plugin_error(
            PLUGIN,
            &d.args[1].at,
            format!("more than {MAX_UPSTREAMS} upstreams ({})", to.len()),
        ));
    }
    let mut cfg = ForwardConfig::new(from.into_iter().next().unwrap_or_default(), to);
    cfg.to_tls = to_tls;
    for opt in options(d) {
        let name = opt.name.text.as_str();
        match name {
            "except" => {
                arg_count(PLUGIN, opt, 1, usize::MAX)?;
                no_block(PLUGIN, opt)?;
                cfg.except.extend(zones(PLUGIN, &opt.args)?);
            }
            "force_tcp"
            | "prefer_udp"
            | "failfast_all_unhealthy_upstreams"
            | "case_randomization" => {
                arg_count(PLUGIN, opt, 0, 0)?;
                no_block(PLUGIN, opt)?;
                match name {
                    "force_tcp" => cfg.force_tcp = true,
                    "prefer_udp" => cfg.prefer_udp = true,
                    "case_randomization" => cfg.case_randomization = true,
                    _ => cfg.failfast_all_unhealthy_upstreams = true,
                }
            }
            "source_port" => {
                arg_count(PLUGIN, opt, 1, 1)?;
                no_block(PLUGIN, opt)?;
                cfg.source_port = match opt.args[0].text.as_str() {
                    "random" => SourcePortMode::Random,
                    "pooled" => SourcePortMode::Pooled,
                    other => {
                        return Err(plugin_error(
                            PLUGIN,
                            &opt.args[0].at,
                            format!("unknown source_port {other:?} (random or pooled)"),
                        ));
                    }
                };
            }
            "policy" => {
                arg_count(PLUGIN, opt, 1, 1)?;
                cfg.policy = match opt.args[0].text.as_str() {
                    "random" => Policy::Random,
                    "round_robin" => Policy::RoundRobin,
                    "sequential" => Policy::Sequential,
                    other => {
                        return Err(plugin_error(
                            PLUGIN,
                            &opt.args[0].at,
                            format!("unknown policy {other:?} (random, round_robin or sequential)"),
                        ));
                    }
                };
            }
            "max_fails" => {
                arg_count(PLUGIN, opt, 1, 1)?;
                cfg.max_fails = number(PLUGIN, &opt.args[0], 0, u32::MAX)?;
            }
            "health_check" => {
                arg_count(PLUGIN, opt, 1, 4)?;
                cfg.health_check = duration(PLUGIN, &opt.args[0])?;
                let mut rest = opt.args[1..].iter();
                while let Some(t) = rest.next() {
                    match t.text.as_str() {
                        "no_rec" => cfg.health_check_no_rec = true,
                        "domain" => {
                            let dom = rest.next().ok_or_else(|| {
                                plugin_error(PLUGIN, &t.at, "health_check domain needs a name")
                            })?;
                            cfg.health_check_domain =
                                zones(PLUGIN, std::slice::from_ref(dom))?.remove(0);
                        }
                        other => {
                            return Err(plugin_error(
                                PLUGIN,
                                &t.at,
                                format!(
                                    "health_check: unexpected {other:?} (no_rec or domain NAME)"
                                ),
                            ));
                        }
                    }
                }
            }
            "expire" => {
                arg_count(PLUGIN, opt, 1, 1)?;
                cfg.expire = duration(PLUGIN, &opt.args[0])?;
            }
            "max_concurrent" => {
                arg_count(PLUGIN, opt, 1, 1)?;
                cfg.max_concurrent = number(PLUGIN, &opt.args[0], 0, u32::MAX)?;
            }
            "read_timeout" => {
                arg_count(PLUGIN, opt, 1, 1)?;
                let t = duration(PLUGIN, &opt.args[0])?;
                if t.is_zero() {
                    return Err(plugin_error(
                        PLUGIN,
                        &opt.args[0].at,
                        "read_timeout must be above 0",
                    ));
                }
                cfg.read_timeout = t;
            }
            "next" | "failover" => {
                arg_count(PLUGIN, opt, 1, usize::MAX)?;
                let mut codes = Vec::new();
                for t in &opt.args {
                    codes.push(super::parse_rcode(&t.text).map(u16::from).ok_or_else(|| {
                        plugin_error(
                            PLUGIN,
                            &t.at,
                            format!("{:?} is not a response code", t.text),
                        )
                    })?);
                }
                if name == "next" {
                    cfg.next = codes;
                } else {
                    cfg.failover = codes;
                }
            }
            "tls_servername" => {
                arg_count(PLUGIN, opt, 1, 1)?;
                no_block(PLUGIN, opt)?;
                let n = &opt.args[0];
                crate::tls::upstream_name(Some(&n.text), std::net::Ipv4Addr::LOCALHOST.into())
                    .map_err(|e| plugin_error(PLUGIN, &n.at, e))?;
                cfg.tls.servername = Some(n.text.clone());
            }
            "tls" => {
                // CoreDNS: no argument (system CAs), CA, CERT KEY, or CERT KEY CA.
                arg_count(PLUGIN, opt, 0, 3)?;
                no_block(PLUGIN, opt)?;
                let a = &opt.args;
                let (pair, ca) = match a.len() {
                    0 => (None, None),
                    1 => (None, Some(&a[0])),
                    2 => (Some((&a[0], &a[1])), None),
                    _ => (Some((&a[0], &a[1])), Some(&a[2])),
                };
                if let Some((c, k)) = pair {
                    let cert = read_pem(PLUGIN, c, "client certificate", ctx)?;
                    let key = read_pem(PLUGIN, k, "client key", ctx)?;
                    check_certs(PLUGIN, c, &cert)?;
                    check_pair(PLUGIN, k, &cert, &key)?;
                    cfg.tls.cert = Some(cert);
                    cfg.tls.key = Some(key);
                }
                if let Some(t) = ca {
                    let ca: PemFile = read_pem(PLUGIN, t, "CA", ctx)?;
                    check_certs(PLUGIN, t, &ca)?;
                    cfg.tls.ca = Some(ca);
                }
            }
            _ => ctx.unknown_option(PLUGIN, opt)?,
        }
    }
    let tls_options = cfg.tls != ForwardTls::default();
    if tls_options && !cfg.to_tls.contains(&true) {
        ctx.warn(
            &d.name.at,
            "plugin/forward: tls options have no effect without tls:// upstreams",
        );
    }
    if cfg.force_tcp && cfg.prefer_udp {
        return Err(plugin_error(
            PLUGIN,
            &d.name.at,
            "force_tcp and prefer_udp are mutually exclusive",
        ));
    }
    Ok(cfg)
}
