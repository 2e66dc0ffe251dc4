//! `whoami`, `any`, `minimal` and `local`: plugins without arguments or options.

use super::{arg_count, no_block};
use crate::dns::corefile::error::CorefileError;
use crate::dns::corefile::syntax::Directive;

/// Parses a plugin that takes no arguments and no options block.
pub(crate) fn parse_flag(name: &str, d: &Directive) -> Result<(), CorefileError> {
    arg_count(name, d, 0, 0)?;
    no_block(name, d)
}
