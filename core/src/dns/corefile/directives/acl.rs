//! `acl [ZONES...] { ACTION [type QTYPE...] [net SOURCE...] [file FILE...] }`: access control
//! by client address and query type (CoreDNS's acl plugin).
//!
//! Actions: `allow`, `block` (REFUSED), `filter` (NOERROR, empty answer) and `drop` (no reply).
//! The first policy of the first rule whose zones contain the name and whose type and source
//! match decides; `allow` stops the checks. Without `type` every type matches (`*` too);
//! without `net`/`file` every address matches (`*` too). A single address means /32 or /128.

use std::net::IpAddr;
use std::path::Path;

use hickory_proto::rr::RecordType;
use ipnetwork::IpNetwork;

use super::{SetupContext, no_block, options, plugin_error, zones_or_server};
use crate::dns::corefile::error::CorefileError;
use crate::dns::corefile::syntax::Directive;

const PLUGIN: &str = "acl";

/// What a matching policy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AclAction {
    /// Pass the query on; later policies and rules are not consulted.
    Allow,
    /// Answer REFUSED.
    Block,
    /// Answer NOERROR with an empty answer.
    Filter,
    /// Send no answer.
    Drop,
}

impl AclAction {
    /// The action as written.
    pub fn as_str(self) -> &'static str {
        match self {
            AclAction::Allow => "allow",
            AclAction::Block => "block",
            AclAction::Filter => "filter",
            AclAction::Drop => "drop",
        }
    }
}

/// One `ACTION [type ...] [net ...]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclPolicy {
    /// The action.
    pub action: AclAction,
    /// Matched query types (empty: all).
    pub types: Vec<RecordType>,
    /// Matched source networks (empty: all).
    pub nets: Vec<IpNetwork>,
}

impl AclPolicy {
    /// Whether the policy matches a query of `qtype` from `ip`.
    pub fn matches(&self, qtype: RecordType, ip: IpAddr) -> bool {
        (self.types.is_empty() || self.types.contains(&qtype))
            && (self.nets.is_empty() || self.nets.iter().any(|n| net_contains(n, ip)))
    }
}

/// Whether `net` holds `ip` (an IPv4-mapped IPv6 client counts as its IPv4 address).
fn net_contains(net: &IpNetwork, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    net.contains(ip)
}

/// One `acl` directive: its zones and policies in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRule {
    /// Zones the rule applies to (default: the server block's).
    pub zones: Vec<String>,
    /// Policies, first match wins.
    pub policies: Vec<AclPolicy>,
}

fn parse_net(text: &str) -> Result<Vec<IpNetwork>, String> {
    if text == "*" {
        return Ok(vec![
            "0.0.0.0/0".parse().expect("valid"),
            "::/0".parse().expect("valid"),
        ]);
    }
    let net = if text.contains('/') {
        text.parse::<IpNetwork>().map_err(|_| ())
    } else {
        text.parse::<IpAddr>().map(IpNetwork::from).map_err(|_| ())
    };
    match net {
        // Normalise to the network address, as Go's ParseCIDR does.
        Ok(n) => IpNetwork::new(n.network(), n.prefix())
            .map(|n| vec![n])
            .map_err(|e| e.to_string()),
        Err(_) => Err(format!("illegal CIDR notation {text:?}")),
    }
}

/// Parses one `acl` directive (each use in a server block adds a rule).
pub(crate) fn parse(d: &Directive, ctx: &mut SetupContext<'_>) -> Result<AclRule, CorefileError> {
    let zones = zones_or_server(PLUGIN, &d.args, ctx)?;
    let mut policies = Vec::new();
    for opt in options(d) {
        no_block(PLUGIN, opt)?;
        let action = match opt.name.text.to_ascii_lowercase().as_str() {
            "allow" => AclAction::Allow,
            "block" => AclAction::Block,
            "filter" => AclAction::Filter,
            "drop" => AclAction::Drop,
            other => {
                return Err(plugin_error(
                    PLUGIN,
                    &opt.name.at,
                    format!("unexpected token {other:?}; expect allow, block, filter or drop"),
                ));
            }
        };
        let mut types = Vec::new();
        let mut nets = Vec::new();
        let mut all_types = false;
        let mut section: Option<&str> = None;
        let mut section_at = &opt.name.at;
        let mut section_len = 0usize;
        for t in &opt.args {
            let lower = t.text.to_ascii_lowercase();
            if matches!(lower.as_str(), "type" | "net" | "file") {
                if section.is_some() && section_len == 0 {
                    return Err(plugin_error(
                        PLUGIN,
                        section_at,
                        format!("no token specified in {:?} section", section.unwrap_or("")),
                    ));
                }
                section = Some(match lower.as_str() {
                    "type" => "type",
                    "net" => "net",
                    _ => "file",
                });
                section_at = &t.at;
                section_len = 0;
                continue;
            }
            section_len += 1;
            match section {
                None => {
                    return Err(plugin_error(
                        PLUGIN,
                        &t.at,
                        format!("unexpected token {:?}; expect type, net or file", t.text),
                    ));
                }
                Some("type") => {
                    if t.text == "*" {
                        all_types = true;
                    } else {
                        let ty: RecordType = t.text.to_ascii_uppercase().parse().map_err(|_| {
                            plugin_error(
                                PLUGIN,
                                &t.at,
                                format!("unexpected token {:?}; expect legal QTYPE", t.text),
                            )
                        })?;
                        types.push(ty);
                    }
                }
                Some("net") => {
                    nets.extend(parse_net(&t.text).map_err(|e| plugin_error(PLUGIN, &t.at, e))?)
                }
                Some(_) => {
                    let text = ctx.files.read(Path::new(&t.text)).map_err(|e| {
                        plugin_error(
                            PLUGIN,
                            &t.at,
                            format!("unable to load networks from {:?}: {e}", t.text),
                        )
                    })?;
                    for (i, line) in text.lines().enumerate() {
                        let line = line.split('#').next().unwrap_or("").trim();
                        if line.is_empty() {
                            continue;
                        }
                        nets.extend(parse_net(line).map_err(|e| {
                            plugin_error(PLUGIN, &t.at, format!("{}:{}: {e}", t.text, i + 1))
                        })?);
                    }
                }
            }
        }
        if section.is_some() && section_len == 0 {
            return Err(plugin_error(
                PLUGIN,
                section_at,
                format!("no token specified in {:?} section", section.unwrap_or("")),
            ));
        }
        if all_types {
            types.clear();
        }
        policies.push(AclPolicy {
            action,
            types,
            nets,
        });
    }
    Ok(AclRule { zones, policies })
}
