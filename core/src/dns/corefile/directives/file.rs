//! `file DBFILE [ZONES...] { reload DURATION }`: an RFC 1035 zone file served
//! authoritatively (CoreDNS's file plugin).
//!
//! The file is read and parsed once per zone at load, so a missing or broken file is an error
//! naming the Corefile's file:line and the zone file's line. `reload` (default 1m, `0`: never)
//! re-reads it when its SOA serial increased, as CoreDNS; a broken edit keeps the old zone.

use std::path::PathBuf;
use std::time::Duration;

use hickory_proto::rr::Name;

use super::{SetupContext, arg_count, duration, options, plugin_error, zones_or_server};
use crate::dns::corefile::error::CorefileError;
use crate::dns::corefile::syntax::Directive;

const PLUGIN: &str = "file";

/// The file plugin's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    /// The zone file.
    pub path: PathBuf,
    /// The zones (origins) read from it (default: the server block's zones).
    pub zones: Vec<String>,
    /// How often the file is checked for a new serial (0: never; default 1 minute).
    pub reload: Duration,
}

/// Parses a `file` directive and checks that the zone file loads for each zone.
pub(crate) fn parse(
    d: &Directive,
    ctx: &mut SetupContext<'_>,
) -> Result<FileConfig, CorefileError> {
    arg_count(PLUGIN, d, 1, usize::MAX)?;
    let path = PathBuf::from(&d.args[0].text);
    let zones = zones_or_server(PLUGIN, &d.args[1..], ctx)?;
    let mut cfg = FileConfig {
        path,
        zones,
        reload: Duration::from_secs(60),
    };
    for opt in options(d) {
        match opt.name.text.as_str() {
            "reload" => {
                arg_count(PLUGIN, opt, 1, 1)?;
                cfg.reload = duration(PLUGIN, &opt.args[0])?;
            }
            "transfer" | "upstream" => {
                ctx.unsupported(PLUGIN, &opt.name.at, &format!("option {:?}", opt.name.text))?
            }
            _ => ctx.unknown_option(PLUGIN, opt)?,
        }
    }
    let text = ctx.files.read(&cfg.path).map_err(|e| {
        plugin_error(
            PLUGIN,
            &d.args[0].at,
            format!("cannot read zone file {}: {e}", cfg.path.display()),
        )
    })?;
    for z in &cfg.zones {
        let origin =
            Name::from_ascii(z).map_err(|e| plugin_error(PLUGIN, &d.name.at, e.to_string()))?;
        crate::dns::zonetext::validate_zone(&text, &origin).map_err(|e| {
            plugin_error(
                PLUGIN,
                &d.args[0].at,
                format!("zone file {} for {z}: {e}", cfg.path.display()),
            )
        })?;
    }
    Ok(cfg)
}
