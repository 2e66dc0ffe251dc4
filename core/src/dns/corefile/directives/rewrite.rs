//! `rewrite [continue|stop] FIELD ...`: CoreDNS's request/response rewriting rules.
//!
//! Supported fields: `name` (`exact` (default), `prefix`, `suffix`, `substring`, `regex` with
//! `{N}` groups) with `answer auto`, `answer name FROM TO` and `answer value FROM TO`; `type`,
//! `class`, `ttl` (`SECONDS` or `MIN-MAX`, with the same match kinds as `name`) and
//! `edns0 local set|replace|append CODE DATA`. The block form
//! `rewrite [continue|stop] { name ...\n answer name ... }` is one rule. Other fields
//! (`rcode`, `cname`, `edns0 nsid|subnet`) are errors naming file:line (or warnings with
//! `--allow-unknown`). Every `rewrite` directive of a server block adds one rule, in order.

use std::fmt;

use hickory_proto::rr::{DNSClass, RecordType};

use super::{SetupContext, plugin_error};
use crate::dns::corefile::error::{CorefileError, Position};
use crate::dns::corefile::lexer::Token;
use crate::dns::corefile::syntax::Directive;

const PLUGIN: &str = "rewrite";

/// A compiled regular expression that compares by its source text (configs compare by value).
#[derive(Clone)]
pub struct Pattern(pub(crate) regex::Regex);

impl Pattern {
    /// The expression as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/", self.0.as_str())
    }
}

/// How a rule matches the (lower-case, fully qualified) question name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameMatch {
    /// The whole name (both sides fully qualified).
    Exact {
        /// Matched name.
        from: String,
        /// Replacement.
        to: String,
    },
    /// The name starts with `from`, which is replaced by `to`.
    Prefix {
        /// Matched prefix.
        from: String,
        /// Replacement.
        to: String,
    },
    /// The name ends with `from`, which is replaced by `to`.
    Suffix {
        /// Matched suffix.
        from: String,
        /// Replacement.
        to: String,
    },
    /// Every occurrence of `from` is replaced by `to`.
    Substring {
        /// Matched text.
        from: String,
        /// Replacement.
        to: String,
    },
    /// The name matches `pattern`; the new name is `to` with `{N}` replaced by group N.
    Regex {
        /// The expression.
        pattern: Pattern,
        /// Replacement template.
        to: String,
    },
}

/// A rewrite of the response that goes with a `name` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnswerRewrite {
    /// `answer auto`: owner names the request rewrite produced are turned back.
    Auto,
    /// `answer name FROM TO`: owner names matching FROM become TO (`{N}` groups).
    Name {
        /// The expression.
        pattern: Pattern,
        /// Replacement template.
        to: String,
    },
    /// `answer value FROM TO`: names inside records (CNAME, SRV, MX, NS, PTR targets).
    Value {
        /// The expression.
        pattern: Pattern,
        /// Replacement template.
        to: String,
    },
}

/// An EDNS0 local option's data.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EdnsData {
    /// Fixed bytes (`0x...` hex, else the text's bytes).
    Bytes(Vec<u8>),
    /// `{qname}`: the question name (text).
    Qname,
    /// `{qtype}`: the question type (2 bytes, big-endian).
    Qtype,
    /// `{client_ip}`: the client address (4 or 16 bytes).
    ClientIp,
    /// `{client_port}`: the client port (2 bytes, big-endian).
    ClientPort,
    /// `{protocol}`: `udp` or `tcp`.
    Protocol,
}

/// How an EDNS0 option is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdnsAction {
    /// Replace an option with the code, or add one.
    Set,
    /// Replace an option with the code only if there is one.
    Replace,
    /// Add the option only if none with the code exists.
    Append,
}

/// What one rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RewriteAction {
    /// Rewrites the question name; `answers` rewrite the response.
    Name {
        /// The match and replacement.
        matcher: NameMatch,
        /// Response rewrites.
        answers: Vec<AnswerRewrite>,
    },
    /// Rewrites the question type.
    Type {
        /// Matched type.
        from: RecordType,
        /// New type.
        to: RecordType,
    },
    /// Rewrites the question class.
    Class {
        /// Matched class.
        from: DNSClass,
        /// New class.
        to: DNSClass,
    },
    /// Clamps the answer TTLs of matching names to `min..=max`.
    Ttl {
        /// The name match (the replacement part is unused).
        matcher: NameMatch,
        /// Lowest TTL.
        min: u32,
        /// Highest TTL.
        max: u32,
    },
    /// Sets an EDNS0 local option on the request.
    Edns0Local {
        /// Set, replace or append.
        action: EdnsAction,
        /// Option code.
        code: u16,
        /// Option data.
        data: EdnsData,
    },
}

/// One `rewrite` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteRule {
    /// `stop` (default): no later rule runs once this one applied; `continue`: they do.
    pub stop: bool,
    /// What it does.
    pub action: RewriteAction,
    /// Where the directive is written.
    pub at: Position,
}

/// Parses one `rewrite` directive into its rule (`None` if ignored under `--allow-unknown`).
pub(crate) fn parse(
    d: &Directive,
    ctx: &mut SetupContext<'_>,
) -> Result<Option<RewriteRule>, CorefileError> {
    let mut args: &[Token] = &d.args;
    let mut stop = true;
    if let Some(first) = args.first()
        && !first.quoted
    {
        match first.text.to_ascii_lowercase().as_str() {
            "stop" => args = &args[1..],
            "continue" => {
                stop = false;
                args = &args[1..];
            }
            _ => {}
        }
    }
    // The block form: its lines are one rule (a field line, then `answer` lines).
    let mut toks: Vec<Token> = args.to_vec();
    if let Some(block) = &d.block {
        if !toks.is_empty() {
            return Err(plugin_error(
                PLUGIN,
                &toks[0].at,
                "a rule is written either on the directive line or in its block, not both",
            ));
        }
        for (i, line) in block.iter().enumerate() {
            if i > 0 && !line.name.is("answer") {
                return Err(plugin_error(
                    PLUGIN,
                    &line.name.at,
                    format!(
                        "a rewrite block holds one rule: only `answer` lines may follow its first line, found {:?}",
                        line.name.text
                    ),
                ));
            }
            if let Some(b) = &line.block
                && let Some(first) = b.first()
            {
                return Err(plugin_error(PLUGIN, &first.name.at, "unexpected block"));
            }
            toks.push(line.name.clone());
            toks.extend(line.args.iter().cloned());
        }
    }
    let Some(field) = toks.first() else {
        return Err(plugin_error(
            PLUGIN,
            &d.name.at,
            "rewrite needs a field (name, type, class, ttl, edns0)",
        ));
    };
    let rest = &toks[1..];
    let action = match field.text.to_ascii_lowercase().as_str() {
        "name" => parse_name(field, rest)?,
        "type" => {
            let [from, to] = exactly::<2>(field, rest)?;
            RewriteAction::Type {
                from: record_type(from)?,
                to: record_type(to)?,
            }
        }
        "class" => {
            let [from, to] = exactly::<2>(field, rest)?;
            RewriteAction::Class {
                from: class(from)?,
                to: class(to)?,
            }
        }
        "ttl" => parse_ttl(field, rest)?,
        "edns0" => match parse_edns0(field, rest, ctx)? {
            Some(a) => a,
            None => return Ok(None),
        },
        "rcode" | "cname" => {
            ctx.unsupported(PLUGIN, &field.at, &format!("field {:?}", field.text))?;
            return Ok(None);
        }
        other => {
            return Err(plugin_error(
                PLUGIN,
                &field.at,
                format!("unknown field {other:?} (name, type, class, ttl, edns0)"),
            ));
        }
    };
    Ok(Some(RewriteRule {
        stop,
        action,
        at: d.name.at.clone(),
    }))
}

fn exactly<'a, const N: usize>(
    field: &Token,
    rest: &'a [Token],
) -> Result<&'a [Token; N], CorefileError> {
    rest.try_into().map_err(|_| {
        let at = rest.get(N).map_or(&field.at, |t| &t.at);
        plugin_error(
            PLUGIN,
            at,
            format!("{} takes {N} arguments, got {}", field.text, rest.len()),
        )
    })
}

fn record_type(t: &Token) -> Result<RecordType, CorefileError> {
    t.text
        .to_ascii_uppercase()
        .parse::<RecordType>()
        .map_err(|_| plugin_error(PLUGIN, &t.at, format!("{:?} is not a record type", t.text)))
}

fn class(t: &Token) -> Result<DNSClass, CorefileError> {
    match t.text.to_ascii_uppercase().as_str() {
        "IN" => Ok(DNSClass::IN),
        "CH" => Ok(DNSClass::CH),
        "HS" => Ok(DNSClass::HS),
        "NONE" => Ok(DNSClass::NONE),
        "ANY" => Ok(DNSClass::ANY),
        _ => Err(plugin_error(
            PLUGIN,
            &t.at,
            format!("{:?} is not a class (IN, CH, HS)", t.text),
        )),
    }
}

/// Compiles `t` and checks that `to` uses no group the expression lacks.
fn pattern(t: &Token, to: &str) -> Result<Pattern, CorefileError> {
    let re = regex::Regex::new(&t.text).map_err(|e| {
        plugin_error(
            PLUGIN,
            &t.at,
            format!("invalid regular expression {:?}: {e}", t.text),
        )
    })?;
    let groups = re.captures_len() - 1;
    for n in 0..=100 {
        if n > groups && to.contains(&format!("{{{n}}}")) {
            return Err(plugin_error(
                PLUGIN,
                &t.at,
                format!(
                    "the replacement {to:?} uses group {{{n}}} but {:?} has {groups} group{}",
                    t.text,
                    if groups == 1 { "" } else { "s" }
                ),
            ));
        }
    }
    Ok(Pattern(re))
}

fn fqdn(s: &str) -> String {
    let mut s = s.to_ascii_lowercase();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

/// The match kind (`exact` when omitted), the match string and the rest of the arguments.
fn match_kind(rest: &[Token]) -> (&'static str, &[Token]) {
    let kind = rest.first().map(|t| t.text.to_ascii_lowercase());
    match kind.as_deref() {
        Some("exact") => ("exact", &rest[1..]),
        Some("prefix") => ("prefix", &rest[1..]),
        Some("suffix") => ("suffix", &rest[1..]),
        Some("substring") => ("substring", &rest[1..]),
        Some("regex") => ("regex", &rest[1..]),
        _ => ("exact", rest),
    }
}

fn name_match(kind: &str, from: &Token, to: &Token) -> Result<NameMatch, CorefileError> {
    if from.text.is_empty() {
        return Err(plugin_error(PLUGIN, &from.at, "empty match string"));
    }
    Ok(match kind {
        "exact" => NameMatch::Exact {
            from: fqdn(&from.text),
            to: fqdn(&to.text),
        },
        "prefix" => NameMatch::Prefix {
            from: from.text.to_ascii_lowercase(),
            to: to.text.to_ascii_lowercase(),
        },
        "suffix" => NameMatch::Suffix {
            from: fqdn(&from.text),
            to: fqdn(&to.text),
        },
        "substring" => NameMatch::Substring {
            from: from.text.to_ascii_lowercase(),
            to: to.text.to_ascii_lowercase(),
        },
        _ => NameMatch::Regex {
            pattern: pattern(from, &to.text)?,
            to: to.text.clone(),
        },
    })
}

fn parse_name(field: &Token, rest: &[Token]) -> Result<RewriteAction, CorefileError> {
    let (kind, rest) = match_kind(rest);
    if rest.len() < 2 {
        let at = rest.last().map_or(&field.at, |t| &t.at);
        return Err(plugin_error(
            PLUGIN,
            at,
            "name needs a match string and a replacement",
        ));
    }
    let matcher = name_match(kind, &rest[0], &rest[1])?;
    let mut answers = Vec::new();
    let mut i = 2;
    while i < rest.len() {
        let t = &rest[i];
        if !t.text.eq_ignore_ascii_case("answer") {
            return Err(plugin_error(
                PLUGIN,
                &t.at,
                format!(
                    "unexpected {:?} after the name rule (expected `answer auto`, `answer name FROM TO` or `answer value FROM TO`)",
                    t.text
                ),
            ));
        }
        let Some(what) = rest.get(i + 1) else {
            return Err(plugin_error(
                PLUGIN,
                &t.at,
                "answer needs auto, name or value",
            ));
        };
        match what.text.to_ascii_lowercase().as_str() {
            "auto" => {
                if kind == "regex" {
                    return Err(plugin_error(
                        PLUGIN,
                        &what.at,
                        "answer auto cannot reverse a regex rule: use answer name FROM TO",
                    ));
                }
                answers.push(AnswerRewrite::Auto);
                i += 2;
            }
            w @ ("name" | "value") => {
                let (Some(from), Some(to)) = (rest.get(i + 2), rest.get(i + 3)) else {
                    return Err(plugin_error(
                        PLUGIN,
                        &what.at,
                        format!("answer {w} needs FROM and TO"),
                    ));
                };
                let pattern = pattern(from, &to.text)?;
                let to = to.text.clone();
                answers.push(if w == "name" {
                    AnswerRewrite::Name { pattern, to }
                } else {
                    AnswerRewrite::Value { pattern, to }
                });
                i += 4;
            }
            _ => {
                return Err(plugin_error(
                    PLUGIN,
                    &what.at,
                    format!("unknown answer rewrite {:?} (auto, name, value)", what.text),
                ));
            }
        }
    }
    Ok(RewriteAction::Name { matcher, answers })
}

fn parse_ttl(field: &Token, rest: &[Token]) -> Result<RewriteAction, CorefileError> {
    let (kind, rest) = match_kind(rest);
    let [from, ttl] = exactly::<2>(field, rest)?;
    let matcher = name_match(kind, from, from)?;
    let num = |s: &str| -> Result<u32, CorefileError> {
        s.parse::<u32>().map_err(|_| {
            plugin_error(
                PLUGIN,
                &ttl.at,
                format!("{:?} is not a TTL (SECONDS or MIN-MAX)", ttl.text),
            )
        })
    };
    let (min, max) = match ttl.text.split_once('-') {
        None => {
            let v = num(&ttl.text)?;
            (v, v)
        }
        Some((a, b)) => {
            let min = if a.is_empty() { 0 } else { num(a)? };
            let max = if b.is_empty() { u32::MAX } else { num(b)? };
            if a.is_empty() && b.is_empty() || min > max {
                return Err(plugin_error(
                    PLUGIN,
                    &ttl.at,
                    format!("{:?} is not a TTL range (MIN-MAX)", ttl.text),
                ));
            }
            (min, max)
        }
    };
    Ok(RewriteAction::Ttl { matcher, min, max })
}

fn parse_edns0(
    field: &Token,
    rest: &[Token],
    ctx: &mut SetupContext<'_>,
) -> Result<Option<RewriteAction>, CorefileError> {
    let Some(kind) = rest.first() else {
        return Err(plugin_error(PLUGIN, &field.at, "edns0 needs local"));
    };
    if !kind.text.eq_ignore_ascii_case("local") {
        ctx.unsupported(PLUGIN, &kind.at, &format!("edns0 {:?}", kind.text))?;
        return Ok(None);
    }
    let [action, code, data] = exactly::<3>(kind, &rest[1..])?;
    let action = match action.text.to_ascii_lowercase().as_str() {
        "set" => EdnsAction::Set,
        "replace" => EdnsAction::Replace,
        "append" => EdnsAction::Append,
        _ => {
            return Err(plugin_error(
                PLUGIN,
                &action.at,
                format!("{:?} is not an action (set, replace, append)", action.text),
            ));
        }
    };
    let code_num = match code
        .text
        .strip_prefix("0x")
        .or_else(|| code.text.strip_prefix("0X"))
    {
        Some(hex) => u16::from_str_radix(hex, 16).ok(),
        None => code.text.parse::<u16>().ok(),
    }
    .ok_or_else(|| {
        plugin_error(
            PLUGIN,
            &code.at,
            format!("{:?} is not an option code (such as 0xffee)", code.text),
        )
    })?;
    let data = match data.text.as_str() {
        "{qname}" => EdnsData::Qname,
        "{qtype}" => EdnsData::Qtype,
        "{client_ip}" => EdnsData::ClientIp,
        "{client_port}" => EdnsData::ClientPort,
        "{protocol}" => EdnsData::Protocol,
        t if t.starts_with('{') && t.ends_with('}') => {
            ctx.unsupported(PLUGIN, &data.at, &format!("variable {t}"))?;
            return Ok(None);
        }
        t => match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(hex) => EdnsData::Bytes(decode_hex(hex).ok_or_else(|| {
                plugin_error(PLUGIN, &data.at, format!("{t:?} is not valid hex data"))
            })?),
            None => EdnsData::Bytes(t.as_bytes().to_vec()),
        },
    };
    Ok(Some(RewriteAction::Edns0Local {
        action,
        code: code_num,
        data,
    }))
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
