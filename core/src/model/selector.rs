//! Kubernetes label selectors in their string form (`app=web`, `tier in (a,b)`, `!canary`),
//! parsed as the API server's `labels.Parse` / `ParseToLabelSelector` accept them, and matched
//! against an object's [`Labels`].
//!
//! ```
//! use svcnet_core::model::{Labels, selector::LabelSelector};
//! let sel: LabelSelector = "environment in (staging, qa),application=nginx".parse().unwrap();
//! let web = Labels::from_pairs([("environment", "qa"), ("application", "nginx")]);
//! assert!(sel.matches(&web));
//! assert!(!sel.matches(&Labels::from_pairs([("environment", "prod")])));
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use super::Labels;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Requirement {
    /// `key=value` / `key==value`: the key is present with this value.
    Equals(String, String),
    /// `key!=value`: the key is absent or has another value.
    NotEquals(String, String),
    /// `key in (a,b)`: the key is present with one of the values.
    In(String, BTreeSet<String>),
    /// `key notin (a,b)`: the key is absent or has none of the values.
    NotIn(String, BTreeSet<String>),
    /// `key`: the key is present.
    Exists(String),
    /// `!key`: the key is absent.
    DoesNotExist(String),
}

impl Requirement {
    /// Whether `labels` satisfy the requirement.
    pub(crate) fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.get(k).is_some(),
            Requirement::DoesNotExist(k) => labels.get(k).is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |vs: &BTreeSet<String>| vs.iter().cloned().collect::<Vec<_>>().join(",");
        match self {
            Requirement::Equals(k, v) => write!(f, "{k}={v}"),
            Requirement::NotEquals(k, v) => write!(f, "{k}!={v}"),
            Requirement::In(k, vs) => write!(f, "{k} in ({})", set(vs)),
            Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", set(vs)),
            Requirement::Exists(k) => write!(f, "{k}"),
            Requirement::DoesNotExist(k) => write!(f, "!{k}"),
        }
    }
}

/// A label selector: every requirement must hold (an empty selector selects everything).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The requirements, in the order written.
    #[cfg(test)]
    pub(crate) fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(|r| r.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

/// Why a selector string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label selector {input:?}: {reason}")]
#[non_exhaustive]
pub struct SelectorError {
    /// The selector as given.
    pub input: String,
    /// What is wrong.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Comma,
    Open,
    Close,
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
}

fn tokens(s: &str) -> Result<Vec<Tok>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let two = b.get(i + 1).copied();
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            b'(' => {
                out.push(Tok::Open);
                i += 1;
            }
            b')' => {
                out.push(Tok::Close);
                i += 1;
            }
            b'!' if two == Some(b'=') => {
                out.push(Tok::NotEq);
                i += 2;
            }
            b'!' => {
                out.push(Tok::Bang);
                i += 1;
            }
            b'=' if two == Some(b'=') => {
                out.push(Tok::DoubleEq);
                i += 2;
            }
            b'=' => {
                out.push(Tok::Eq);
                i += 1;
            }
            b'>' => {
                out.push(Tok::Gt);
                i += 1;
            }
            b'<' => {
                out.push(Tok::Lt);
                i += 1;
            }
            _ => {
                let start = i;
                while i < b.len() && !b" \t\n\r,()!=<>".contains(&b[i]) {
                    i += 1;
                }
                let word = &s[start..i];
                if word.is_empty() {
                    return Err(format!("unexpected character at {start}"));
                }
                out.push(Tok::Word(word.to_string()));
            }
        }
    }
    Ok(out)
}

/// A label name part (or value): at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// A DNS-1123 subdomain (the optional prefix of a label key).
fn valid_prefix(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

fn check_key(k: &str) -> Result<(), String> {
    let ok = match k.split_once('/') {
        Some((prefix, name)) => valid_prefix(prefix) && valid_name(name),
        None => valid_name(k),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{k:?} is not a valid label key (an optional DNS subdomain prefix and '/', then at \
             most 63 of [A-Za-z0-9._-] beginning and ending with a letter or digit)"
        ))
    }
}

fn check_value(v: &str) -> Result<(), String> {
    if v.is_empty() || valid_name(v) {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not a valid label value (at most 63 of [A-Za-z0-9._-] beginning and ending \
             with a letter or digit)"
        ))
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn word(&mut self, what: &str) -> Result<String, String> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            Some(t) => Err(format!("expected {what}, found {}", describe(&t))),
            None => Err(format!("expected {what}, found the end")),
        }
    }

    /// The value after `=`, `==` or `!=`: may be empty (`app=`).
    fn value(&mut self) -> Result<String, String> {
        match self.peek() {
            Some(Tok::Word(_)) => self.word("a value"),
            None | Some(Tok::Comma) => Ok(String::new()),
            Some(t) => Err(format!("expected a value, found {}", describe(t))),
        }
    }

    fn set(&mut self) -> Result<BTreeSet<String>, String> {
        match self.next() {
            Some(Tok::Open) => {}
            Some(t) => return Err(format!("expected '(', found {}", describe(&t))),
            None => return Err("expected '(', found the end".into()),
        }
        let mut out = BTreeSet::new();
        loop {
            match self.next() {
                Some(Tok::Word(w)) => {
                    check_value(&w)?;
                    out.insert(w);
                }
                Some(Tok::Close) if out.is_empty() => {
                    return Err("for 'in' and 'notin' the set of values can't be empty".into());
                }
                Some(t) => return Err(format!("expected a value, found {}", describe(&t))),
                None => return Err("expected a value, found the end".into()),
            }
            match self.next() {
                Some(Tok::Comma) => continue,
                Some(Tok::Close) => return Ok(out),
                Some(t) => return Err(format!("expected ',' or ')', found {}", describe(&t))),
                None => return Err("expected ')', found the end".into()),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        if self.peek() == Some(&Tok::Bang) {
            self.pos += 1;
            let key = self.word("a label key after '!'")?;
            check_key(&key)?;
            return Ok(Requirement::DoesNotExist(key));
        }
        let key = self.word("a label key")?;
        check_key(&key)?;
        let req = match self.peek() {
            None | Some(Tok::Comma) => Requirement::Exists(key),
            Some(Tok::Eq) | Some(Tok::DoubleEq) => {
                self.pos += 1;
                let v = self.value()?;
                check_value(&v)?;
                Requirement::Equals(key, v)
            }
            Some(Tok::NotEq) => {
                self.pos += 1;
                let v = self.value()?;
                check_value(&v)?;
                Requirement::NotEquals(key, v)
            }
            Some(Tok::Word(w)) if w == "in" => {
                self.pos += 1;
                Requirement::In(key, self.set()?)
            }
            Some(Tok::Word(w)) if w == "notin" => {
                self.pos += 1;
                Requirement::NotIn(key, self.set()?)
            }
            Some(Tok::Gt) | Some(Tok::Lt) => {
                return Err(
                    "'>' and '<' are not valid label selector operators here (only =, ==, !=, \
                     in, notin, exists and !)"
                        .into(),
                );
            }
            Some(t) => return Err(format!("expected an operator, found {}", describe(t))),
        };
        Ok(req)
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("{w:?}"),
        Tok::Comma => "','".into(),
        Tok::Open => "'('".into(),
        Tok::Close => "')'".into(),
        Tok::Bang => "'!'".into(),
        Tok::Eq => "'='".into(),
        Tok::DoubleEq => "'=='".into(),
        Tok::NotEq => "'!='".into(),
        Tok::Gt => "'>'".into(),
        Tok::Lt => "'<'".into(),
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    /// Parses the string form; an empty string is the selector that selects everything.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| SelectorError {
            input: s.to_string(),
            reason,
        };
        let toks = tokens(s).map_err(err)?;
        let mut p = Parser { toks, pos: 0 };
        let mut requirements = Vec::new();
        if p.peek().is_none() {
            return Ok(Self { requirements });
        }
        loop {
            requirements.push(p.requirement().map_err(err)?);
            match p.next() {
                None => break,
                Some(Tok::Comma) => {}
                Some(t) => return Err(err(format!("expected ',', found {}", describe(&t)))),
            }
        }
        Ok(Self { requirements })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn parses_every_operator_and_matches_like_the_api_server() {
        // (selector, labels, selected) — cases from apimachinery's labels tests.
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
        let cases: &[Case<'_>] = &[
            ("", &[("x", "y")], true),
            ("x=y", &[("x", "y")], true),
            ("x==y", &[("x", "y")], true),
            ("x=y", &[("x", "z")], false),
            ("x=y", &[], false),
            ("x!=y", &[("x", "z")], true),
            ("x!=y", &[], true),
            ("x!=y", &[("x", "y")], false),
            ("x in (y,z)", &[("x", "z")], true),
            ("x in (y,z)", &[("x", "w")], false),
            ("x in (y,z)", &[], false),
            ("x notin (y,z)", &[("x", "w")], true),
            ("x notin (y,z)", &[], true),
            ("x notin (y,z)", &[("x", "y")], false),
            ("x", &[("x", "")], true),
            ("x", &[], false),
            ("!x", &[], true),
            ("!x", &[("x", "1")], false),
            ("x=", &[("x", "")], true),
            ("x=,y", &[("x", ""), ("y", "1")], true),
            (
                "environment in (staging, qa),application=nginx",
                &[("environment", "qa"), ("application", "nginx")],
                true,
            ),
            (
                "environment in (staging, qa),application=nginx",
                &[("environment", "prod"), ("application", "nginx")],
                false,
            ),
            (
                "app.kubernetes.io/name=web, !canary",
                &[("app.kubernetes.io/name", "web")],
                true,
            ),
        ];
        for (sel, l, want) in cases {
            let s: LabelSelector = sel.parse().unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&labels(l)), *want, "{sel} on {l:?}");
        }
    }

    #[test]
    fn displays_a_canonical_form_that_parses_back() {
        let s: LabelSelector = "b in (z, y) ,  a==x, !c,d notin (q),e!=f,g"
            .parse()
            .unwrap();
        assert_eq!(s.to_string(), "b in (y,z),a=x,!c,d notin (q),e!=f,g");
        assert_eq!(s.to_string().parse::<LabelSelector>().unwrap(), s);
        assert_eq!(s.requirements().len(), 6);
    }

    #[test]
    fn rejects_bad_selectors_with_the_reason() {
        for (sel, why) in [
            ("x in ()", "can't be empty"),
            ("x in (a", "expected ')'"),
            ("x in a", "expected '('"),
            ("x>1", "not valid label selector operators"),
            ("x=a b", "expected ','"),
            ("-x=1", "not a valid label key"),
            ("x=-a", "not a valid label value"),
            ("x,,y", "expected a label key"),
            ("!", "after '!'"),
            ("x=y,", "found the end"),
            ("Bad_Prefix/x=1", "not a valid label key"),
        ] {
            let e = sel.parse::<LabelSelector>().unwrap_err();
            assert!(e.to_string().contains(why), "{sel}: {e}");
            assert!(e.to_string().contains(sel), "{sel}: {e}");
        }
    }
}
