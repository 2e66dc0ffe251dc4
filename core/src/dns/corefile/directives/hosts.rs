//! `hosts [FILE [ZONES...]] { ... }`: answers from a hosts file and inline entries.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    Fallthrough, SetupContext, arg_count, duration, number, options, plugin_error, zones,
    zones_or_server,
};
use crate::dns::corefile::error::CorefileError;
use crate::dns::corefile::syntax::Directive;

const PLUGIN: &str = "hosts";

/// One `IP NAME...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// The address.
    pub ip: IpAddr,
    /// Its names, lower case and fully qualified.
    pub names: Vec<String>,
}

/// The hosts plugin's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsConfig {
    /// The hosts file (default `/etc/hosts`).
    pub file: PathBuf,
    /// Zones answered (default: the server block's zones).
    pub zones: Vec<String>,
    /// Entries written in the block.
    pub inline: Vec<HostEntry>,
    /// TTL of answers (default 3600).
    pub ttl: u32,
    /// No PTR records for the entries.
    pub no_reverse: bool,
    /// How often the file is re-read (0: never; default 5 s).
    pub reload: Duration,
    /// Names it has no entry for go on to the next plugin.
    pub fallthrough: Option<Fallthrough>,
}

/// Parses one hosts-file line (`IP NAME...`, `#` comments); `None` for blank/comment lines.
pub(crate) fn parse_hosts_line(line: &str) -> Option<Result<HostEntry, String>> {
    let line = line.split('#').next().unwrap_or("");
    let mut words = line.split_whitespace();
    let ip = words.next()?;
    let ip: IpAddr = match ip.split('%').next().unwrap_or(ip).parse() {
        Ok(ip) => ip,
        Err(_) => return Some(Err(format!("{ip:?} is not an IP address"))),
    };
    let names: Vec<String> = words
        .map(|w| {
            let mut n = w.to_ascii_lowercase();
            if !n.ends_with('.') {
                n.push('.');
            }
            n
        })
        .collect();
    if names.is_empty() {
        return Some(Err(format!("no names for {ip}")));
    }
    Some(Ok(HostEntry { ip, names }))
}

/// Parses a `hosts` directive.
pub(crate) fn parse(
    d: &Directive,
    ctx: &mut SetupContext<'_>,
) -> Result<HostsConfig, CorefileError> {
    let mut cfg = HostsConfig {
        file: PathBuf::from("/etc/hosts"),
        zones: zones_or_server(PLUGIN, d.args.get(1..).unwrap_or(&[]), ctx)?,
        inline: Vec::new(),
        ttl: 3600,
        no_reverse: false,
        reload: Duration::from_secs(5),
        fallthrough: None,
    };
    if let Some(f) = d.args.first() {
        cfg.file = PathBuf::from(&f.text);
    }
    for opt in options(d) {
        match opt.name.text.as_str() {
            "ttl" => {
                arg_count(PLUGIN, opt, 1, 1)?;
                cfg.ttl = number(PLUGIN, &opt.args[0], 1, u32::MAX)?;
            }
            "no_reverse" => {
                arg_count(PLUGIN, opt, 0, 0)?;
                cfg.no_reverse = true;
            }
            "reload" => {
                arg_count(PLUGIN, opt, 1, 1)?;
                cfg.reload = duration(PLUGIN, &opt.args[0])?;
            }
            "fallthrough" => cfg.fallthrough = Some(Fallthrough::parse(PLUGIN, opt)?),
            first
                if first
                    .split('%')
                    .next()
                    .unwrap_or(first)
                    .parse::<IpAddr>()
                    .is_ok() =>
            {
                let mut line = opt.name.text.clone();
                for a in &opt.args {
                    line.push(' ');
                    line.push_str(&a.text);
                }
                match parse_hosts_line(&line) {
                    Some(Ok(e)) => {
                        zones(PLUGIN, &opt.args)?; // the names must be valid
                        cfg.inline.push(e);
                    }
                    Some(Err(e)) => return Err(plugin_error(PLUGIN, &opt.name.at, e)),
                    None => {}
                }
            }
            _ => ctx.unknown_option(PLUGIN, opt)?,
        }
    }
    Ok(cfg)
}
