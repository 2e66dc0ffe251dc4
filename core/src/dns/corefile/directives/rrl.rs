//! `rrl`: response-rate limiting of large UDP answers (svcnet's own plugin, in the style of
//! the external CoreDNS `rrl` plugin and Knot's `rrl` module).
//!
//! ```text
//! rrl [RATE] {
//!     large-responses-per-second RATE
//!     ipv4-prefix-length LENGTH
//!     ipv6-prefix-length LENGTH
//! }
//! ```
//!
//! Only answers larger than 512 bytes count; over the rate, a client network gets an empty
//! truncated answer (TC=1) and retries over TCP. Small answers are never limited.

use super::{SetupContext, arg_count, number, options, plugin_error};
use crate::dns::corefile::error::CorefileError;
use crate::dns::corefile::syntax::Directive;
use crate::dns::rrl::LargeAnswerLimit;

/// The default rate when `rrl` names none (large answers per second per network).
pub(crate) const DEFAULT_RATE: u32 = 100;

/// Parses `rrl`.
pub(crate) fn parse(
    d: &Directive,
    ctx: &mut SetupContext<'_>,
) -> Result<LargeAnswerLimit, CorefileError> {
    const P: &str = "rrl";
    arg_count(P, d, 0, 1)?;
    let mut limit = LargeAnswerLimit::new(DEFAULT_RATE);
    if let Some(t) = d.args.first() {
        limit.per_second = number(P, t, 1, 1_000_000)?;
    }
    let mut rate_given = !d.args.is_empty();
    for opt in options(d) {
        match opt.name.text.as_str() {
            "large-responses-per-second" => {
                arg_count(P, opt, 1, 1)?;
                if rate_given {
                    return Err(plugin_error(
                        P,
                        &opt.name.at,
                        "the rate is given twice (argument and option)",
                    ));
                }
                limit.per_second = number(P, &opt.args[0], 1, 1_000_000)?;
                rate_given = true;
            }
            "ipv4-prefix-length" => {
                arg_count(P, opt, 1, 1)?;
                limit.ipv4_prefix_length = number(P, &opt.args[0], 1, 32)?;
            }
            "ipv6-prefix-length" => {
                arg_count(P, opt, 1, 1)?;
                limit.ipv6_prefix_length = number(P, &opt.args[0], 1, 128)?;
            }
            _ => ctx.unknown_option(P, opt)?,
        }
    }
    Ok(limit)
}
