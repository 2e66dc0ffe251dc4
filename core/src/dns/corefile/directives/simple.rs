//! `loadbalance`, `loop`, `reload` and `bind`: plugins with few settings.

use std::net::IpAddr;
use std::time::Duration;

use super::{SetupContext, arg_count, duration, no_block, plugin_error};
use crate::dns::corefile::error::CorefileError;
use crate::dns::corefile::syntax::Directive;

/// `reload [INTERVAL [JITTER]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadConfig {
    /// How often the Corefile is checked (default 30 s, at least 2 s).
    pub interval: Duration,
    /// Random spread added to each interval (default 15 s, at least 1 s, at most half the
    /// interval).
    pub jitter: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            jitter: Duration::from_secs(15),
        }
    }
}

/// Parses `loadbalance [round_robin]`.
pub(crate) fn parse_loadbalance(
    d: &Directive,
    ctx: &mut SetupContext<'_>,
) -> Result<(), CorefileError> {
    arg_count("loadbalance", d, 0, usize::MAX)?;
    no_block("loadbalance", d)?;
    match d.args.first().map(|t| t.text.as_str()) {
        None | Some("round_robin") if d.args.len() <= 1 => Ok(()),
        Some("weighted") => ctx.unsupported("loadbalance", &d.args[0].at, "policy \"weighted\""),
        _ => Err(plugin_error(
            "loadbalance",
            &d.args[0].at,
            format!("unknown policy {:?} (round_robin)", d.args[0].text),
        )),
    }
}

/// Parses `loop`.
pub(crate) fn parse_loop(d: &Directive) -> Result<(), CorefileError> {
    arg_count("loop", d, 0, 0)?;
    no_block("loop", d)
}

/// Parses `reload`.
pub(crate) fn parse_reload(d: &Directive) -> Result<ReloadConfig, CorefileError> {
    arg_count("reload", d, 0, 2)?;
    no_block("reload", d)?;
    let mut cfg = ReloadConfig::default();
    if let Some(t) = d.args.first() {
        cfg.interval = duration("reload", t)?;
        if cfg.interval < Duration::from_secs(2) {
            return Err(plugin_error(
                "reload",
                &t.at,
                "interval must be at least 2s",
            ));
        }
    }
    if let Some(t) = d.args.get(1) {
        cfg.jitter = duration("reload", t)?;
        if cfg.jitter < Duration::from_secs(1) {
            return Err(plugin_error("reload", &t.at, "jitter must be at least 1s"));
        }
    }
    cfg.jitter = cfg.jitter.min(cfg.interval / 2);
    Ok(cfg)
}

/// Parses `bind ADDRESS|IFACE... [{ except ADDRESS|IFACE... }]`: IP addresses and the addresses
/// of the named interfaces (read now, so again at each reload), less those of `except`. IPv6
/// link-local addresses of an interface are left out (they need a scope to bind).
pub(crate) fn parse_bind(
    d: &Directive,
    ctx: &mut SetupContext<'_>,
) -> Result<Vec<IpAddr>, CorefileError> {
    arg_count("bind", d, 1, usize::MAX)?;
    let mut out = bind_targets(&d.args, ctx)?;
    for opt in d.block.as_deref().unwrap_or(&[]) {
        match opt.name.text.as_str() {
            "except" => {
                if opt.args.is_empty() {
                    return Err(plugin_error(
                        "bind",
                        &opt.name.at,
                        "except needs at least one address or interface name",
                    ));
                }
                if let Some(b) = &opt.block {
                    let at = b.first().map_or(&opt.name.at, |x| &x.name.at);
                    return Err(plugin_error("bind", at, "except takes no block"));
                }
                let except = bind_targets(&opt.args, ctx)?;
                out.retain(|ip| !except.contains(ip));
            }
            _ => ctx.unknown_option("bind", opt)?,
        }
    }
    if out.is_empty() {
        return Err(plugin_error(
            "bind",
            &d.name.at,
            "no address left to bind to",
        ));
    }
    Ok(out)
}

fn bind_targets(
    toks: &[crate::dns::corefile::lexer::Token],
    ctx: &mut SetupContext<'_>,
) -> Result<Vec<IpAddr>, CorefileError> {
    let mut out = Vec::new();
    for t in toks {
        let found = match t.text.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => match ctx.files.interface_addrs(&t.text) {
                Some(addrs) => {
                    let usable: Vec<IpAddr> = addrs
                        .into_iter()
                        .filter(|ip| !is_v6_link_local(ip))
                        .collect();
                    if usable.is_empty() {
                        ctx.warn(
                            &t.at,
                            format!("plugin/bind: interface {:?} has no usable address", t.text),
                        );
                    }
                    usable
                }
                None => {
                    return Err(plugin_error(
                        "bind",
                        &t.at,
                        format!(
                            "{:?} is neither an IP address nor the name of an interface of this host",
                            t.text
                        ),
                    ));
                }
            },
        };
        for ip in found {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    Ok(out)
}

fn is_v6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}
