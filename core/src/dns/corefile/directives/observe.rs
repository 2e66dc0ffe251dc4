//! `errors`, `log`, `health`, `ready`, `prometheus`: what the server reports about itself.

use std::net::SocketAddr;
use std::time::Duration;

use super::{SetupContext, arg_count, duration, no_block, options, plugin_error, zones};
use crate::dns::corefile::error::CorefileError;
use crate::dns::corefile::lexer::Token;
use crate::dns::corefile::names::parse_listen_addr;
use crate::dns::corefile::syntax::Directive;

/// `errors`: log every error answer (SERVFAIL from a plugin) with the query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorsConfig {
    /// `consolidate DURATION REGEXP [LEVEL]` rules, in the order written.
    pub consolidate: Vec<Consolidate>,
}

/// The level of a consolidated `errors` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ConsolidateLevel {
    /// `error` (the default).
    #[default]
    Error,
    /// `warning`.
    Warning,
    /// `info`.
    Info,
    /// `debug`.
    Debug,
}

/// `consolidate DURATION REGEXP [LEVEL]`: error lines matching REGEXP are counted, not logged;
/// DURATION after the first one, one line says how many there were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consolidate {
    /// How long errors are gathered before the summary line.
    pub period: Duration,
    /// Which error lines (svcnet's text: `2 NAME TYPE: no answer (SERVFAIL)`).
    pub pattern: super::rewrite::Pattern,
    /// The summary line's level.
    pub level: ConsolidateLevel,
}

/// Which answers `log` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogClasses {
    /// NOERROR with records.
    pub success: bool,
    /// NXDOMAIN and NODATA.
    pub denial: bool,
    /// SERVFAIL, NOTIMP, REFUSED, ...
    pub error: bool,
}

/// `log [NAMES...] [FORMAT] { class ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Only queries below these zones (default: `.`).
    pub names: Vec<String>,
    /// The line format with CoreDNS placeholders (`{remote}`, `{name}`, `{rcode}`, ...).
    pub format: String,
    /// Which answers are logged.
    pub classes: LogClasses,
}

/// CoreDNS's `{common}` log format.
pub(crate) const COMMON_LOG_FORMAT: &str = "{remote}:{port} - {>id} \"{type} {class} {name} {proto} {size} {>do} {>bufsize}\" {rcode} {>rflags} {rsize} {duration}";

/// `health [ADDRESS] { lameduck DURATION }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Listen address of `/health` (default `:8080`).
    pub addr: SocketAddr,
    /// How long to keep serving after SIGTERM while `/ready` fails.
    pub lameduck: Duration,
}

/// `ready [ADDRESS]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyConfig {
    /// Listen address of `/ready` (default `:8181`).
    pub addr: SocketAddr,
}

/// `prometheus [ADDRESS]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrometheusConfig {
    /// Listen address of `/metrics` (default `localhost:9153`).
    pub addr: SocketAddr,
}

fn addr(plugin: &str, tok: Option<&Token>, default: &str) -> Result<SocketAddr, CorefileError> {
    match tok {
        Some(t) => parse_listen_addr(&t.text).map_err(|e| plugin_error(plugin, &t.at, e)),
        None => Ok(parse_listen_addr(default).expect("valid default address")),
    }
}

/// Parses `errors`.
pub(crate) fn parse_errors(
    d: &Directive,
    ctx: &mut SetupContext<'_>,
) -> Result<ErrorsConfig, CorefileError> {
    arg_count("errors", d, 0, 1)?;
    if let Some(t) = d.args.first()
        && t.text != "stdout"
    {
        return Err(plugin_error(
            "errors",
            &t.at,
            format!("only stdout is supported, not {:?}", t.text),
        ));
    }
    let mut cfg = ErrorsConfig::default();
    for opt in options(d) {
        match opt.name.text.as_str() {
            "consolidate" => {
                arg_count("errors", opt, 2, 3)?;
                no_block("errors", opt)?;
                let period = duration("errors", &opt.args[0])?;
                if period.is_zero() {
                    return Err(plugin_error(
                        "errors",
                        &opt.args[0].at,
                        "the consolidation period must be positive",
                    ));
                }
                let re = regex::Regex::new(&opt.args[1].text).map_err(|e| {
                    plugin_error(
                        "errors",
                        &opt.args[1].at,
                        format!("bad regular expression {:?}: {e}", opt.args[1].text),
                    )
                })?;
                let level = match opt.args.get(2).map(|t| (t, t.text.as_str())) {
                    None | Some((_, "error")) => ConsolidateLevel::Error,
                    Some((_, "warning")) => ConsolidateLevel::Warning,
                    Some((_, "info")) => ConsolidateLevel::Info,
                    Some((_, "debug")) => ConsolidateLevel::Debug,
                    Some((t, other)) => {
                        return Err(plugin_error(
                            "errors",
                            &t.at,
                            format!("unknown level {other:?} (warning, error, info, debug)"),
                        ));
                    }
                };
                cfg.consolidate.push(Consolidate {
                    period,
                    pattern: super::rewrite::Pattern(re),
                    level,
                });
            }
            "stacktrace" => arg_count("errors", opt, 0, 0)?,
            _ => ctx.unknown_option("errors", opt)?,
        }
    }
    Ok(cfg)
}

/// Parses `log`.
pub(crate) fn parse_log(
    d: &Directive,
    ctx: &mut SetupContext<'_>,
) -> Result<LogConfig, CorefileError> {
    let mut names_toks = &d.args[..];
    let mut format = COMMON_LOG_FORMAT.to_string();
    if let Some(last) = d.args.last()
        && (last.quoted || last.text.contains('{'))
    {
        format = match last.text.as_str() {
            "{common}" => COMMON_LOG_FORMAT.to_string(),
            "{combined}" => format!("{COMMON_LOG_FORMAT} \"{{>opcode}}\""),
            other => other.to_string(),
        };
        names_toks = &d.args[..d.args.len() - 1];
    }
    let names = if names_toks.is_empty() {
        vec![".".to_string()]
    } else {
        zones("log", names_toks)?
    };
    let mut classes = LogClasses {
        success: true,
        denial: true,
        error: true,
    };
    for opt in options(d) {
        match opt.name.text.as_str() {
            "class" => {
                arg_count("log", opt, 1, 3)?;
                no_block("log", opt)?;
                classes = LogClasses {
                    success: false,
                    denial: false,
                    error: false,
                };
                for t in &opt.args {
                    match t.text.as_str() {
                        "all" => {
                            classes = LogClasses {
                                success: true,
                                denial: true,
                                error: true,
                            }
                        }
                        "success" => classes.success = true,
                        "denial" => classes.denial = true,
                        "error" => classes.error = true,
                        other => {
                            return Err(plugin_error(
                                "log",
                                &t.at,
                                format!("unknown class {other:?} (all, success, denial, error)"),
                            ));
                        }
                    }
                }
            }
            _ => ctx.unknown_option("log", opt)?,
        }
    }
    Ok(LogConfig {
        names,
        format,
        classes,
    })
}

/// Parses `health`.
pub(crate) fn parse_health(
    d: &Directive,
    ctx: &mut SetupContext<'_>,
) -> Result<HealthConfig, CorefileError> {
    arg_count("health", d, 0, 1)?;
    let mut cfg = HealthConfig {
        addr: addr("health", d.args.first(), ":8080")?,
        lameduck: Duration::ZERO,
    };
    for opt in options(d) {
        match opt.name.text.as_str() {
            "lameduck" => {
                arg_count("health", opt, 1, 1)?;
                cfg.lameduck = duration("health", &opt.args[0])?;
            }
            _ => ctx.unknown_option("health", opt)?,
        }
    }
    Ok(cfg)
}

/// Parses `ready`.
pub(crate) fn parse_ready(d: &Directive) -> Result<ReadyConfig, CorefileError> {
    arg_count("ready", d, 0, 1)?;
    no_block("ready", d)?;
    Ok(ReadyConfig {
        addr: addr("ready", d.args.first(), ":8181")?,
    })
}

/// Parses `prometheus`.
pub(crate) fn parse_prometheus(d: &Directive) -> Result<PrometheusConfig, CorefileError> {
    arg_count("prometheus", d, 0, 1)?;
    no_block("prometheus", d)?;
    Ok(PrometheusConfig {
        addr: addr("prometheus", d.args.first(), "localhost:9153")?,
    })
}
