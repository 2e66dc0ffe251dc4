//! `cache [TTL] [ZONES...] { ... }`: answer repeated queries from memory.

use std::time::Duration;

use super::{
    SetupContext, arg_count, duration, no_block, number, options, plugin_error, zones,
    zones_or_server,
};
use crate::dns::corefile::error::CorefileError;
use crate::dns::corefile::syntax::Directive;

const PLUGIN: &str = "cache";

/// Capacity and TTL bounds of one kind of cached answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheTier {
    /// Most entries kept (default 9984).
    pub capacity: usize,
    /// Upper bound on the TTL an entry is kept with.
    pub max_ttl: Duration,
    /// Lower bound on the TTL (default 5 s).
    pub min_ttl: Duration,
}

/// `prefetch AMOUNT [DURATION [PERCENTAGE%]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefetch {
    /// Queries for one entry within `window` that make it worth refreshing (default 1).
    pub amount: u32,
    /// The window in which hits are counted (default 1 min).
    pub window: Duration,
    /// Refresh when this share of the TTL is left (default 10 %).
    pub percentage: u8,
}

/// `serve_stale [DURATION] [immediate|verify]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeStale {
    /// How long after expiry an entry may still be served (default 1 h).
    pub duration: Duration,
    /// `verify`: try the upstream first and serve stale only when it fails.
    pub verify: bool,
}

/// The cache plugin's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Zones cached (default: the server block's zones).
    pub zones: Vec<String>,
    /// Positive answers.
    pub success: CacheTier,
    /// NXDOMAIN/NODATA answers.
    pub denial: CacheTier,
    /// TTL of cached SERVFAIL answers (0: not cached; default 5 s).
    pub servfail_ttl: Duration,
    /// Prefetching of popular entries.
    pub prefetch: Option<Prefetch>,
    /// Serving of expired entries.
    pub serve_stale: Option<ServeStale>,
    /// Zones where success answers are not cached.
    pub disable_success: Vec<String>,
    /// Zones where denial answers are not cached.
    pub disable_denial: Vec<String>,
    /// Answer with the original TTL instead of the remaining one.
    pub keepttl: bool,
}

impl CacheConfig {
    /// CoreDNS's defaults for `zones`.
    pub fn new(zones: Vec<String>) -> Self {
        Self {
            zones,
            success: CacheTier {
                capacity: 9984,
                max_ttl: Duration::from_secs(3600),
                min_ttl: Duration::from_secs(5),
            },
            denial: CacheTier {
                capacity: 9984,
                max_ttl: Duration::from_secs(1800),
                min_ttl: Duration::from_secs(5),
            },
            servfail_ttl: Duration::from_secs(5),
            prefetch: None,
            serve_stale: None,
            disable_success: Vec::new(),
            disable_denial: Vec::new(),
            keepttl: false,
        }
    }
}

fn tier(opt: &Directive, t: &mut CacheTier) -> Result<(), CorefileError> {
    arg_count(PLUGIN, opt, 1, 3)?;
    no_block(PLUGIN, opt)?;
    t.capacity = number(PLUGIN, &opt.args[0], 1, 100_000_000)?;
    if let Some(ttl) = opt.args.get(1) {
        t.max_ttl = Duration::from_secs(number(PLUGIN, ttl, 1, u32::MAX as u64)?);
    }
    if let Some(min) = opt.args.get(2) {
        t.min_ttl = Duration::from_secs(number(PLUGIN, min, 0, u32::MAX as u64)?);
    }
    if t.min_ttl > t.max_ttl {
        if opt.args.len() == 3 {
            return Err(plugin_error(
                PLUGIN,
                &opt.args[2].at,
                "minimum TTL is above the maximum TTL",
            ));
        }
        t.min_ttl = t.max_ttl;
    }
    Ok(())
}

/// Parses a `cache` directive.
pub(crate) fn parse(
    d: &Directive,
    ctx: &mut SetupContext<'_>,
) -> Result<CacheConfig, CorefileError> {
    let mut args = &d.args[..];
    let mut max_ttl = None;
    if let Some(first) = args.first()
        && first.text.bytes().all(|b| b.is_ascii_digit())
    {
        max_ttl = Some(Duration::from_secs(number(
            PLUGIN,
            first,
            1,
            u32::MAX as u64,
        )?));
        args = &args[1..];
    }
    let mut cfg = CacheConfig::new(zones_or_server(PLUGIN, args, ctx)?);
    if let Some(ttl) = max_ttl {
        for t in [&mut cfg.success, &mut cfg.denial] {
            t.max_ttl = ttl;
            t.min_ttl = t.min_ttl.min(ttl);
        }
    }
    for opt in options(d) {
        match opt.name.text.as_str() {
            "success" => tier(opt, &mut cfg.success)?,
            "denial" => tier(opt, &mut cfg.denial)?,
            "prefetch" => {
                arg_count(PLUGIN, opt, 1, 3)?;
                let mut p = Prefetch {
                    amount: number(PLUGIN, &opt.args[0], 1, u32::MAX)?,
                    window: Duration::from_secs(60),
                    percentage: 10,
                };
                for t in &opt.args[1..] {
                    if let Some(pct) = t.text.strip_suffix('%') {
                        p.percentage = pct.parse().ok().filter(|v| *v <= 100).ok_or_else(|| {
                            plugin_error(
                                PLUGIN,
                                &t.at,
                                format!("{:?} is not a percentage 0%..100%", t.text),
                            )
                        })?;
                    } else {
                        p.window = duration(PLUGIN, t)?;
                    }
                }
                cfg.prefetch = Some(p);
            }
            "serve_stale" => {
                arg_count(PLUGIN, opt, 0, 2)?;
                let mut s = ServeStale {
                    duration: Duration::from_secs(3600),
                    verify: false,
                };
                if let Some(t) = opt.args.first() {
                    s.duration = duration(PLUGIN, t)?;
                }
                if let Some(t) = opt.args.get(1) {
                    s.verify = match t.text.as_str() {
                        "immediate" => false,
                        "verify" => true,
                        other => {
                            return Err(plugin_error(
                                PLUGIN,
                                &t.at,
                                format!(
                                    "serve_stale refresh mode must be immediate or verify, not {other:?}"
                                ),
                            ));
                        }
                    };
                }
                cfg.serve_stale = Some(s);
            }
            "servfail" => {
                arg_count(PLUGIN, opt, 1, 1)?;
                let t = duration(PLUGIN, &opt.args[0])?;
                if t > Duration::from_secs(300) {
                    return Err(plugin_error(
                        PLUGIN,
                        &opt.args[0].at,
                        "servfail TTL can be at most 5m",
                    ));
                }
                cfg.servfail_ttl = t;
            }
            "disable" => {
                arg_count(PLUGIN, opt, 1, usize::MAX)?;
                let zs = if opt.args.len() > 1 {
                    zones(PLUGIN, &opt.args[1..])?
                } else {
                    cfg.zones.clone()
                };
                match opt.args[0].text.as_str() {
                    "success" => cfg.disable_success = zs,
                    "denial" => cfg.disable_denial = zs,
                    other => {
                        return Err(plugin_error(
                            PLUGIN,
                            &opt.args[0].at,
                            format!("disable takes success or denial, not {other:?}"),
                        ));
                    }
                }
            }
            "keepttl" => {
                arg_count(PLUGIN, opt, 0, 0)?;
                cfg.keepttl = true;
            }
            _ => ctx.unknown_option(PLUGIN, opt)?,
        }
    }
    Ok(cfg)
}
