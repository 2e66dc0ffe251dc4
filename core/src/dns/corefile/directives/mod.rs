//! Typed configuration of each plugin, parsed from its directive with CoreDNS's defaults.

pub mod acl;
pub mod autopath;
pub mod cache;
pub mod file;
pub mod flags;
pub mod forward;
pub mod hosts;
pub mod k8s_external;
pub mod kubernetes;
pub mod observe;
pub mod rewrite;
pub mod rrl;
pub mod simple;
pub mod template;
pub mod tls;

use std::str::FromStr;
use std::time::Duration;

use super::error::{CorefileError, Diagnostic, Position};
use super::files::FileSource;
use super::lexer::Token;
use super::names::{normalize_zone, parse_duration};
use super::syntax::Directive;

/// What parsing a directive may consult or record.
pub(crate) struct SetupContext<'a> {
    /// Unknown plugins/options are warnings rather than errors.
    pub allow_unknown: bool,
    /// Warnings collected so far.
    pub warnings: &'a mut Vec<Diagnostic>,
    /// Files (for `/etc/resolv.conf` as upstream list).
    pub files: &'a dyn FileSource,
    /// The zones of the server block the directive is in.
    pub server_zones: &'a [String],
}

impl SetupContext<'_> {
    /// Records a warning.
    pub fn warn(&mut self, at: &Position, message: impl Into<String>) {
        self.warnings.push(Diagnostic {
            at: at.clone(),
            message: message.into(),
        });
    }

    /// An unknown option inside `plugin`'s block: an error, or a warning with `--allow-unknown`.
    pub(crate) fn unknown_option(
        &mut self,
        plugin: &str,
        opt: &Directive,
    ) -> Result<(), CorefileError> {
        if self.allow_unknown {
            self.warn(
                &opt.name.at,
                format!(
                    "plugin/{plugin}: unknown option {:?} ignored",
                    opt.name.text
                ),
            );
            Ok(())
        } else {
            Err(CorefileError::UnknownOption {
                at: opt.name.at.clone(),
                plugin: plugin.to_string(),
                option: opt.name.text.clone(),
            })
        }
    }

    /// Something this server does not support: an error, or (with `--allow-unknown`) a warning
    /// saying it is ignored.
    pub(crate) fn unsupported(
        &mut self,
        plugin: &str,
        at: &Position,
        what: &str,
    ) -> Result<(), CorefileError> {
        if self.allow_unknown {
            self.warn(
                at,
                format!("plugin/{plugin}: {what} is not supported and is ignored"),
            );
            Ok(())
        } else {
            Err(plugin_error(
                plugin,
                at,
                format!("{what} is not supported (use --allow-unknown to ignore it)"),
            ))
        }
    }
}

/// Parses an rcode name as Go's `dns.StringToRcode` (case-insensitive here).
pub(crate) fn parse_rcode(text: &str) -> Option<hickory_proto::op::ResponseCode> {
    let code = match text.to_ascii_uppercase().as_str() {
        "NOERROR" => 0,
        "FORMERR" => 1,
        "SERVFAIL" => 2,
        "NXDOMAIN" => 3,
        "NOTIMP" => 4,
        "REFUSED" => 5,
        "YXDOMAIN" => 6,
        "YXRRSET" => 7,
        "NXRRSET" => 8,
        "NOTAUTH" => 9,
        "NOTZONE" => 10,
        _ => return None,
    };
    Some(hickory_proto::op::ResponseCode::from_low(code))
}

/// A plugin error at a token.
pub(crate) fn plugin_error(
    plugin: &str,
    at: &Position,
    message: impl Into<String>,
) -> CorefileError {
    CorefileError::Plugin {
        at: at.clone(),
        plugin: plugin.to_string(),
        message: message.into(),
    }
}

/// Checks the argument count of a directive or option.
pub(crate) fn arg_count(
    plugin: &str,
    d: &Directive,
    min: usize,
    max: usize,
) -> Result<(), CorefileError> {
    let n = d.args.len();
    if n < min {
        let at = d.args.last().map_or(&d.name.at, |t| &t.at);
        return Err(plugin_error(
            plugin,
            at,
            format!(
                "{} needs {} argument{}, got {n}",
                d.name.text,
                if min == max {
                    format!("{min}")
                } else {
                    format!("at least {min}")
                },
                if min == 1 { "" } else { "s" }
            ),
        ));
    }
    if n > max {
        return Err(plugin_error(
            plugin,
            &d.args[max].at,
            format!(
                "{} takes at most {max} argument{}, unexpected {:?}",
                d.name.text,
                if max == 1 { "" } else { "s" },
                d.args[max].text
            ),
        ));
    }
    Ok(())
}

/// Rejects a `{ ... }` block on a directive that takes none.
pub(crate) fn no_block(plugin: &str, d: &Directive) -> Result<(), CorefileError> {
    match &d.block {
        Some(b) if !b.is_empty() => Err(plugin_error(
            plugin,
            &b[0].name.at,
            format!("{} takes no options block", d.name.text),
        )),
        _ => Ok(()),
    }
}

/// The options of a directive's block (empty without one).
pub(crate) fn options(d: &Directive) -> &[Directive] {
    d.block.as_deref().unwrap_or(&[])
}

/// Parses a duration argument.
pub(crate) fn duration(plugin: &str, tok: &Token) -> Result<Duration, CorefileError> {
    parse_duration(&tok.text).map_err(|e| plugin_error(plugin, &tok.at, e))
}

/// Parses a number within `min..=max`.
pub(crate) fn number<T>(plugin: &str, tok: &Token, min: T, max: T) -> Result<T, CorefileError>
where
    T: FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let v: T = tok
        .text
        .parse()
        .map_err(|_| plugin_error(plugin, &tok.at, format!("{:?} is not a number", tok.text)))?;
    if v < min || v > max {
        return Err(plugin_error(
            plugin,
            &tok.at,
            format!("{} is out of range {min}..{max}", tok.text),
        ));
    }
    Ok(v)
}

/// Normalises zone arguments; none means the server block's zones.
pub(crate) fn zones_or_server(
    plugin: &str,
    toks: &[Token],
    ctx: &SetupContext<'_>,
) -> Result<Vec<String>, CorefileError> {
    if toks.is_empty() {
        return Ok(ctx.server_zones.to_vec());
    }
    zones(plugin, toks)
}

/// Normalises zone arguments.
pub(crate) fn zones(plugin: &str, toks: &[Token]) -> Result<Vec<String>, CorefileError> {
    let mut out = Vec::new();
    for t in toks {
        for z in normalize_zone(&t.text).map_err(|e| plugin_error(plugin, &t.at, e))? {
            if !out.contains(&z) {
                out.push(z);
            }
        }
    }
    Ok(out)
}

/// `fallthrough [ZONES...]`: pass queries the plugin cannot answer on to the next plugin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fallthrough {
    /// The zones where it applies; empty means everywhere.
    pub zones: Vec<String>,
}

impl Fallthrough {
    /// Parses the arguments of a `fallthrough` option.
    pub(crate) fn parse(plugin: &str, d: &Directive) -> Result<Self, CorefileError> {
        no_block(plugin, d)?;
        Ok(Self {
            zones: zones(plugin, &d.args)?,
        })
    }

    /// Whether a query for `name` (lower case, fully qualified) falls through.
    pub fn applies(&self, name: &str) -> bool {
        self.zones.is_empty() || self.zones.iter().any(|z| super::names::in_zone(name, z))
    }
}
