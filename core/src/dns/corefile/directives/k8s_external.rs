//! `k8s_external [ZONES...] { apex APEX; ttl TTL; headless }`: the cluster's services under an
//! external zone.

use super::{SetupContext, arg_count, no_block, number, options, plugin_error, zones_or_server};
use crate::dns::corefile::error::{CorefileError, Position};
use crate::dns::corefile::syntax::Directive;

const PLUGIN: &str = "k8s_external";

/// The k8s_external plugin's settings (CoreDNS defaults: apex `dns`, TTL 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sExternalConfig {
    /// The external zones (lower case, trailing dot); reverse zones answer PTR.
    pub zones: Vec<String>,
    /// The label under each zone holding the name server records.
    pub apex: String,
    /// TTL of the answers, 0..=3600.
    pub ttl: u32,
    /// Headless services answer with their endpoints.
    pub headless: bool,
    /// Where the directive is written.
    pub at: Position,
}

/// Parses a `k8s_external` directive.
pub(crate) fn parse(
    d: &Directive,
    ctx: &mut SetupContext<'_>,
) -> Result<K8sExternalConfig, CorefileError> {
    let mut cfg = K8sExternalConfig {
        zones: zones_or_server(PLUGIN, &d.args, ctx)?,
        apex: "dns".into(),
        ttl: 5,
        headless: false,
        at: d.name.at.clone(),
    };
    for opt in options(d) {
        match opt.name.text.as_str() {
            "apex" => {
                arg_count(PLUGIN, opt, 1, 1)?;
                no_block(PLUGIN, opt)?;
                let apex = opt.args[0].text.trim_end_matches('.').to_ascii_lowercase();
                let label_ok = !apex.is_empty()
                    && apex.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    });
                if !label_ok {
                    return Err(plugin_error(
                        PLUGIN,
                        &opt.args[0].at,
                        format!("apex {:?} is not a domain name label", opt.args[0].text),
                    ));
                }
                cfg.apex = apex;
            }
            "ttl" => {
                arg_count(PLUGIN, opt, 1, 1)?;
                no_block(PLUGIN, opt)?;
                cfg.ttl = number(PLUGIN, &opt.args[0], 0, 3600)?;
            }
            "headless" => {
                arg_count(PLUGIN, opt, 0, 0)?;
                no_block(PLUGIN, opt)?;
                cfg.headless = true;
            }
            _ => ctx.unknown_option(PLUGIN, opt)?,
        }
    }
    Ok(cfg)
}
