//! `autopath [ZONES...] RESOLV-CONF|@kubernetes`: server-side search path completion.

use std::path::Path;

use super::{SetupContext, arg_count, no_block, plugin_error, zones};
use crate::dns::corefile::error::{CorefileError, Position};
use crate::dns::corefile::syntax::Directive;

const PLUGIN: &str = "autopath";

/// Where the search path comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchSource {
    /// `@kubernetes`: per query, from the namespace of the pod that asks (needs
    /// `kubernetes { pods verified }`); `host_search` (the search domains of
    /// `/etc/resolv.conf`, as CoreDNS reads them) follow the cluster ones.
    Kubernetes {
        /// Search domains of this host's resolv.conf (lower case, trailing dot).
        host_search: Vec<String>,
    },
    /// A resolv.conf file's `search` domains, the same for every client.
    Fixed(Vec<String>),
}

/// The autopath plugin's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutopathConfig {
    /// Queries in these zones are expanded (lower case, trailing dot).
    pub zones: Vec<String>,
    /// The search path's source.
    pub source: SearchSource,
    /// Where the directive is written.
    pub at: Position,
}

/// The search domains of a resolv.conf (the last `search` or `domain` line wins, as in the C
/// library), lower case with the trailing dot.
pub(crate) fn resolv_conf_search(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut f = line.split_whitespace();
        match f.next() {
            Some("search") => out = f.map(normalize_search).collect(),
            Some("domain") => out = f.next().map(normalize_search).into_iter().collect(),
            _ => {}
        }
    }
    out.retain(|d: &String| d != ".");
    out
}

fn normalize_search(d: &str) -> String {
    format!("{}.", d.trim_end_matches('.').to_ascii_lowercase())
}

/// Parses an `autopath` directive.
pub(crate) fn parse(
    d: &Directive,
    ctx: &mut SetupContext<'_>,
) -> Result<AutopathConfig, CorefileError> {
    arg_count(PLUGIN, d, 1, usize::MAX)?;
    no_block(PLUGIN, d)?;
    let (last, zone_args) = d.args.split_last().expect("at least one argument");
    let zones = if zone_args.is_empty() {
        ctx.server_zones.to_vec()
    } else {
        zones(PLUGIN, zone_args)?
    };
    let source = match last.text.strip_prefix('@') {
        Some("kubernetes") => {
            // CoreDNS's kubernetes plugin appends its host's search domains; a host without a
            // resolv.conf has none.
            let host_search = ctx
                .files
                .read(Path::new("/etc/resolv.conf"))
                .map(|t| resolv_conf_search(&t))
                .unwrap_or_default();
            SearchSource::Kubernetes { host_search }
        }
        Some(other) => {
            return Err(plugin_error(
                PLUGIN,
                &last.at,
                format!(
                    "@{other}: only @kubernetes provides a search path (or name a resolv.conf file)"
                ),
            ));
        }
        None => {
            let text = ctx.files.read(Path::new(&last.text)).map_err(|e| {
                plugin_error(
                    PLUGIN,
                    &last.at,
                    format!("failed to read resolv.conf {:?}: {e}", last.text),
                )
            })?;
            let search = resolv_conf_search(&text);
            if search.is_empty() {
                return Err(plugin_error(
                    PLUGIN,
                    &last.at,
                    format!("{:?} has no search domains", last.text),
                ));
            }
            SearchSource::Fixed(search)
        }
    };
    Ok(AutopathConfig {
        zones,
        source,
        at: d.name.at.clone(),
    })
}
