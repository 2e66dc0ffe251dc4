//! Tokens of the Corefile (Caddyfile) syntax.
//!
//! Tokens are separated by white space; `"..."` quotes a token (a backslash escapes a quote),
//! an unquoted `#` starts a comment that runs to the end of the line. A line break ends a directive, and so
//! does an unquoted `;` (an extension, so that one-line forms such as
//! `forward . 10.0.0.1 { max_concurrent 1000; except example.org }` load). Environment
//! references `{$VAR}`, `{env.VAR}` and `{%VAR%}` are replaced inside every token.

use std::fmt;
use std::sync::Arc;

/// Where a token starts: file, line and column (both 1-based, columns in characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// The file the token was read from (as named when it was loaded).
    pub file: Arc<str>,
    /// Line number, from 1.
    pub line: u32,
    /// Column number in characters, from 1.
    pub column: u32,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One token with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The text, after environment substitution and with quotes removed.
    pub text: String,
    /// Where the token starts.
    pub at: Position,
    /// Logical line: tokens with equal values belong to the same directive line. Unique across
    /// every file of one load, so imported tokens never join the importing line.
    pub logical_line: u64,
    /// Whether the token was quoted (a quoted `{` or `}` is plain text).
    pub quoted: bool,
    /// How many `import`s deep this token came from (guards against import cycles).
    pub import_depth: u8,
}

impl Token {
    /// An unquoted token equal to `s`.
    pub fn is(&self, s: &str) -> bool {
        !self.quoted && self.text == s
    }
}

/// An error found while splitting text into tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexError {
    /// Where the problem starts.
    pub at: Position,
    /// What is wrong.
    pub message: String,
}

/// Splits `text` (the content of `file`) into tokens. `next_line` is the first logical line
/// number to use and is advanced past the last one used; `env` resolves environment references.
pub(crate) fn tokenize(
    file: &Arc<str>,
    text: &str,
    next_line: &mut u64,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Token>, LexError> {
    let mut tokens = Vec::new();
    let mut line: u32 = 1;
    let mut column: u32 = 0;
    let mut logical = *next_line;
    let chars = text.chars();
    // Current token being built.
    let mut val = String::new();
    let mut start: Option<(u32, u32, u64)> = None;
    let mut quoted = false;
    let mut was_quoted = false;
    let mut escaped = false;
    let mut comment = false;

    let at = |line: u32, column: u32| Position {
        file: file.clone(),
        line,
        column,
    };

    macro_rules! flush {
        () => {
            if let Some((l, c, lg)) = start.take() {
                tokens.push(Token {
                    text: substitute_env(&std::mem::take(&mut val), env),
                    at: at(l, c),
                    logical_line: lg,
                    quoted: was_quoted,
                    import_depth: 0,
                });
            }
        };
    }

    for ch in chars {
        column += 1;
        if quoted {
            if ch == '\n' {
                line += 1;
                column = 0;
            }
            if escaped {
                if ch != '"' && ch != '\\' {
                    val.push('\\');
                }
                val.push(ch);
                escaped = false;
                continue;
            }
            match ch {
                '\\' => escaped = true,
                '"' => {
                    quoted = false;
                    flush!();
                }
                _ => val.push(ch),
            }
            continue;
        }
        if ch == '\n' {
            flush!();
            line += 1;
            column = 0;
            logical += 1;
            comment = false;
            continue;
        }
        if comment {
            continue;
        }
        if ch.is_whitespace() {
            flush!();
            continue;
        }
        if ch == '#' {
            // As in Caddy: an unquoted `#` starts a comment even inside a word.
            flush!();
            comment = true;
            continue;
        }
        if ch == ';' {
            flush!();
            logical += 1;
            continue;
        }
        if start.is_none() {
            start = Some((line, column, logical));
            was_quoted = ch == '"';
            if ch == '"' {
                quoted = true;
                continue;
            }
        }
        val.push(ch);
    }
    if quoted {
        let (l, c, _) = start.unwrap_or((line, column, logical));
        return Err(LexError {
            at: at(l, c),
            message: "unterminated quoted string".to_string(),
        });
    }
    flush!();
    *next_line = logical + 1;
    Ok(tokens)
}

/// Replaces `{$VAR}`, `{env.VAR}` and `{%VAR%}` in `s`; unset variables become empty.
pub(crate) fn substitute_env(s: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    if !s.contains('{') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let (prefix_len, closer) = if after.starts_with('$') {
            (1, "}")
        } else if after.starts_with("env.") {
            (4, "}")
        } else if after.starts_with('%') {
            (1, "%}")
        } else {
            out.push('{');
            rest = after;
            continue;
        };
        let body = &after[prefix_len..];
        match body.find(closer) {
            Some(end) if end > 0 && is_env_name(&body[..end]) => {
                out.push_str(&env(&body[..end]).unwrap_or_default());
                rest = &body[end + closer.len()..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn is_env_name(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lex(text: &str) -> Vec<Token> {
        let mut n = 1;
        let env = |k: &str| match k {
            "UP" => Some("127.0.0.1:53".to_string()),
            "SP" => Some("a b".to_string()),
            _ => None,
        };
        tokenize(&Arc::from("Corefile"), text, &mut n, &env).unwrap()
    }

    fn texts(tokens: &[Token]) -> Vec<(&str, u32, u32, u64)> {
        tokens
            .iter()
            .map(|t| (t.text.as_str(), t.at.line, t.at.column, t.logical_line))
            .collect()
    }

    #[test]
    fn words_lines_and_columns() {
        let t = lex(".:53 {\n    errors # trailing comment\n  cache 30\n}\n");
        assert_eq!(
            texts(&t),
            vec![
                (".:53", 1, 1, 1),
                ("{", 1, 6, 1),
                ("errors", 2, 5, 2),
                ("cache", 3, 3, 3),
                ("30", 3, 9, 3),
                ("}", 4, 1, 4),
            ]
        );
    }

    #[test]
    fn quotes_escapes_and_multiline_quotes() {
        let t = lex("log \"a \\\"b\\\" c\" \"x\\ny\"\n\"{\"");
        assert_eq!(t[1].text, "a \"b\" c");
        assert!(t[1].quoted);
        assert_eq!(t[2].text, "x\\ny");
        assert_eq!(t[3].text, "{");
        assert!(t[3].quoted && !t[3].is("{"));
    }

    #[test]
    fn semicolon_ends_a_line() {
        let t = lex("{ pods insecure; ttl 30 }");
        let lines: Vec<_> = t.iter().map(|t| t.logical_line).collect();
        assert_eq!(lines, vec![1, 1, 1, 2, 2, 2]);
        assert_eq!(t[2].text, "insecure");
    }

    #[test]
    fn unterminated_quote_is_an_error_at_its_start() {
        let mut n = 1;
        let err = tokenize(&Arc::from("F"), "a\n  \"open", &mut n, &|_| None).unwrap_err();
        assert_eq!((err.at.line, err.at.column), (2, 3));
    }

    #[test]
    fn environment_substitution() {
        let t = lex("forward . {$UP} {env.UP}x {%UP%} {$NOPE}y {notenv} {$SP}");
        let v: Vec<_> = t.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(
            v,
            vec![
                "forward",
                ".",
                "127.0.0.1:53",
                "127.0.0.1:53x",
                "127.0.0.1:53",
                "y",
                "{notenv}",
                "a b"
            ]
        );
    }

    #[test]
    fn comment_starts_anywhere_unquoted() {
        let t = lex("a#b #c\nd \"#e\"");
        let v: Vec<_> = t.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(v, vec!["a", "d", "#e"]);
    }
}
