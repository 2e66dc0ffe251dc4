//! The structure of a Corefile: server blocks (keys and directives), nested option blocks,
//! snippets `(name) { ... }` and `import` of snippets or files (glob patterns, relative to the
//! importing file).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{CorefileError, Diagnostic, Position};
use super::files::FileSource;
use super::lexer::{Token, tokenize};

/// How deep imports may nest before the loader calls it a cycle.
const MAX_IMPORT_DEPTH: u8 = 16;

/// A directive: a name, its arguments on the same line, and an optional `{ ... }` block of
/// further directives (the plugin's options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The first token of the line.
    pub name: Token,
    /// The other tokens of the line (up to a `{`).
    pub args: Vec<Token>,
    /// The options block, if any.
    pub block: Option<Vec<Directive>>,
}

/// A server block as written: its keys (`.:53`, `example.org`) and its directives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerBlockSyntax {
    /// The keys before the `{`.
    pub keys: Vec<Token>,
    /// The directives inside.
    pub directives: Vec<Directive>,
}

/// Everything a parse needs from outside: files and environment.
pub struct SyntaxContext<'a> {
    /// Files for imports.
    pub files: &'a dyn FileSource,
    /// Environment lookups for `{$VAR}`.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// The result of the structural parse.
#[derive(Debug, Default)]
pub struct SyntaxTree {
    /// Server blocks in file order.
    pub blocks: Vec<ServerBlockSyntax>,
    /// Warnings (e.g. an import glob that matched nothing).
    pub warnings: Vec<Diagnostic>,
    /// Every file read (the main file first), for change detection.
    pub files: Vec<PathBuf>,
}

/// Parses the Corefile named `name` with content `text`.
pub fn parse(name: &str, text: &str, ctx: &SyntaxContext<'_>) -> Result<SyntaxTree, CorefileError> {
    let mut parser = Parser {
        tokens: Vec::new(),
        pos: 0,
        snippets: HashMap::new(),
        next_line: 1,
        ctx,
        tree: SyntaxTree::default(),
    };
    parser.tree.files.push(PathBuf::from(name));
    parser.tokens = parser.lex(name, text)?;
    parser.parse_top()?;
    Ok(parser.tree)
}

struct Parser<'a, 'c> {
    tokens: Vec<Token>,
    pos: usize,
    snippets: HashMap<String, Vec<Token>>,
    next_line: u64,
    ctx: &'a SyntaxContext<'c>,
    tree: SyntaxTree,
}

fn syntax(at: &Position, message: impl Into<String>) -> CorefileError {
    CorefileError::Syntax {
        at: at.clone(),
        message: message.into(),
    }
}

impl Parser<'_, '_> {
    fn lex(&mut self, name: &str, text: &str) -> Result<Vec<Token>, CorefileError> {
        let file: Arc<str> = Arc::from(name);
        tokenize(&file, text, &mut self.next_line, self.ctx.env)
            .map_err(|e| syntax(&e.at, e.message))
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn at_line_start(&self) -> bool {
        self.pos == 0
            || self.tokens[self.pos - 1].logical_line != self.tokens[self.pos].logical_line
    }

    fn parse_top(&mut self) -> Result<(), CorefileError> {
        while let Some(tok) = self.peek() {
            if tok.is("import") && self.at_line_start() {
                self.expand_import()?;
                continue;
            }
            if !tok.quoted
                && tok.text.len() > 2
                && tok.text.starts_with('(')
                && tok.text.ends_with(')')
            {
                self.parse_snippet()?;
                continue;
            }
            if tok.is("}") {
                return Err(syntax(&tok.at, "unexpected '}' outside of a block"));
            }
            if tok.is("{") {
                return Err(syntax(
                    &tok.at,
                    "expected server block keys (such as .:53) before '{'",
                ));
            }
            let block = self.parse_server_block()?;
            self.tree.blocks.push(block);
        }
        Ok(())
    }

    fn parse_snippet(&mut self) -> Result<(), CorefileError> {
        let name_tok = self.tokens[self.pos].clone();
        let name = name_tok.text[1..name_tok.text.len() - 1].to_string();
        self.pos += 1;
        match self.peek() {
            Some(t) if t.is("{") => self.pos += 1,
            _ => {
                return Err(syntax(
                    &name_tok.at,
                    format!("snippet ({name}) must be followed by '{{'"),
                ));
            }
        }
        let start = self.pos;
        let mut depth = 1usize;
        while let Some(t) = self.peek() {
            if t.is("{") {
                depth += 1;
            } else if t.is("}") {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            self.pos += 1;
        }
        if depth != 0 {
            return Err(syntax(
                &name_tok.at,
                format!("snippet ({name}) has no closing '}}'"),
            ));
        }
        let body = self.tokens[start..self.pos].to_vec();
        self.pos += 1; // the closing brace
        if self.snippets.insert(name.clone(), body).is_some() {
            return Err(syntax(
                &name_tok.at,
                format!("snippet ({name}) is defined more than once"),
            ));
        }
        Ok(())
    }

    /// Keys end at `{`, or at the end of the line unless the last key ends with a comma.
    fn parse_server_block(&mut self) -> Result<ServerBlockSyntax, CorefileError> {
        let mut keys = Vec::new();
        let mut expecting_another = false;
        loop {
            let Some(tok) = self.peek().cloned() else {
                if expecting_another {
                    let last: &Token = keys.last().expect("a key before the comma");
                    return Err(syntax(
                        &last.at,
                        "expected another server block key after ','",
                    ));
                }
                break;
            };
            if tok.is("{") {
                if expecting_another {
                    return Err(syntax(
                        &tok.at,
                        "expected another server block key after ',' but found '{'",
                    ));
                }
                self.pos += 1;
                let directives = self.parse_directives(Some(&tok))?;
                return Ok(ServerBlockSyntax { keys, directives });
            }
            if !keys.is_empty() && !expecting_another && self.at_line_start() {
                break;
            }
            if tok.is("}") {
                return Err(syntax(&tok.at, "unexpected '}' among server block keys"));
            }
            self.pos += 1;
            let mut key = tok;
            expecting_another = key.text.ends_with(',');
            if expecting_another {
                key.text.pop();
            }
            for part in key.text.clone().split(',') {
                if !part.is_empty() {
                    keys.push(Token {
                        text: part.to_string(),
                        ..key.clone()
                    });
                }
            }
            // An empty quoted key (`""`) or a lone `,` names no zone: without a key before it
            // there is nothing to attach the block to.
            if keys.is_empty() {
                return Err(syntax(&key.at, "empty server block key"));
            }
        }
        // The opening brace may stand on the next line.
        if let Some(tok) = self.peek().cloned()
            && tok.is("{")
        {
            self.pos += 1;
            let directives = self.parse_directives(Some(&tok))?;
            return Ok(ServerBlockSyntax { keys, directives });
        }
        // A block without braces: the rest of the file is its body.
        let directives = self.parse_directives(None)?;
        if directives.is_empty() {
            let first = keys.first().expect("at least one key was read");
            return Err(syntax(
                &first.at,
                format!("server block {:?} has no body (missing '{{'?)", first.text),
            ));
        }
        Ok(ServerBlockSyntax { keys, directives })
    }

    /// Directives until the `}` that closes `open` (or the end of the file when `open` is None).
    fn parse_directives(&mut self, open: Option<&Token>) -> Result<Vec<Directive>, CorefileError> {
        let mut out = Vec::new();
        loop {
            let Some(tok) = self.peek().cloned() else {
                return match open {
                    Some(o) => Err(syntax(&o.at, "this '{' is never closed (missing '}')")),
                    None => Ok(out),
                };
            };
            if tok.is("}") {
                if open.is_some() {
                    self.pos += 1;
                    return Ok(out);
                }
                return Err(syntax(&tok.at, "unexpected '}'"));
            }
            if tok.is("{") {
                return Err(syntax(
                    &tok.at,
                    "unexpected '{' (a block must follow a directive on its line)",
                ));
            }
            if tok.is("import") {
                self.expand_import()?;
                continue;
            }
            self.pos += 1;
            let mut args = Vec::new();
            let mut block = None;
            while let Some(t) = self.peek().cloned() {
                if t.logical_line != tok.logical_line || t.is("}") {
                    break;
                }
                self.pos += 1;
                if t.is("{") {
                    block = Some(self.parse_directives(Some(&t))?);
                    break;
                }
                args.push(t);
            }
            out.push(Directive {
                name: tok,
                args,
                block,
            });
        }
    }

    /// Replaces `import ARG` at the cursor by the tokens of a snippet or of matching files.
    fn expand_import(&mut self) -> Result<(), CorefileError> {
        let import = self.tokens[self.pos].clone();
        let mut end = self.pos + 1;
        while end < self.tokens.len() && self.tokens[end].logical_line == import.logical_line {
            end += 1;
        }
        let args: Vec<Token> = self.tokens[self.pos + 1..end].to_vec();
        if args.len() != 1 {
            return Err(syntax(
                &import.at,
                "import needs exactly one snippet name or file pattern",
            ));
        }
        if import.import_depth >= MAX_IMPORT_DEPTH {
            return Err(syntax(
                &import.at,
                format!(
                    "import of {} nests too deeply (an import cycle?)",
                    args[0].text
                ),
            ));
        }
        let depth = import.import_depth + 1;
        let mut spliced = Vec::new();
        if let Some(snippet) = self.snippets.get(&args[0].text) {
            let snippet = snippet.clone();
            spliced = self.renumber(snippet, depth);
        } else {
            for path in self.import_paths(&import, &args[0])? {
                let name = path.to_string_lossy().into_owned();
                let text =
                    self.ctx.files.read(&path).map_err(|e| {
                        syntax(&args[0].at, format!("import: cannot read {name}: {e}"))
                    })?;
                if !self.tree.files.contains(&path) {
                    self.tree.files.push(path.clone());
                }
                let mut toks = self.lex(&name, &text)?;
                for t in &mut toks {
                    t.import_depth = depth;
                }
                spliced.extend(toks);
            }
        }
        self.tokens.splice(self.pos..end, spliced);
        Ok(())
    }

    /// Gives copied tokens fresh logical lines (keeping which of them share a line).
    fn renumber(&mut self, mut toks: Vec<Token>, depth: u8) -> Vec<Token> {
        let mut map: HashMap<u64, u64> = HashMap::new();
        for t in &mut toks {
            let next = &mut self.next_line;
            t.logical_line = *map.entry(t.logical_line).or_insert_with(|| {
                *next += 1;
                *next
            });
            t.import_depth = depth;
        }
        toks
    }

    fn import_paths(&mut self, import: &Token, arg: &Token) -> Result<Vec<PathBuf>, CorefileError> {
        let raw = Path::new(&arg.text);
        let path = if raw.is_absolute() {
            raw.to_path_buf()
        } else {
            Path::new(&*import.at.file)
                .parent()
                .map(|d| d.join(raw))
                .unwrap_or_else(|| raw.to_path_buf())
        };
        let pattern = path.to_string_lossy().into_owned();
        if pattern.contains(['*', '?', '[']) {
            let matches =
                self.ctx.files.glob(&pattern).map_err(|e| {
                    syntax(&arg.at, format!("import: bad glob pattern {pattern}: {e}"))
                })?;
            if matches.is_empty() {
                self.tree.warnings.push(Diagnostic {
                    at: arg.at.clone(),
                    message: format!("import: no files match {pattern}"),
                });
            }
            Ok(matches)
        } else {
            Ok(vec![path])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::corefile::files::MemoryFiles;

    fn parse_with(files: &MemoryFiles, name: &str) -> Result<SyntaxTree, CorefileError> {
        let text = files.read(Path::new(name)).unwrap();
        let env = |_: &str| None;
        parse(name, &text, &SyntaxContext { files, env: &env })
    }

    fn one(text: &str) -> Result<SyntaxTree, CorefileError> {
        let mut files = MemoryFiles::new();
        files.insert("/etc/coredns/Corefile", text);
        parse_with(&files, "/etc/coredns/Corefile")
    }

    fn shape(d: &Directive) -> String {
        let mut s = d.name.text.clone();
        for a in &d.args {
            s.push(' ');
            s.push_str(&a.text);
        }
        if let Some(b) = &d.block {
            s.push_str(" {");
            for o in b {
                s.push(' ');
                s.push_str(&shape(o));
                s.push(';');
            }
            s.push_str(" }");
        }
        s
    }

    fn shapes(b: &ServerBlockSyntax) -> Vec<String> {
        b.directives.iter().map(shape).collect()
    }

    #[test]
    fn blocks_keys_and_nested_options() {
        let t = one(".:53 example.org:1053 {\n  errors\n  forward . 1.2.3.4 {\n    max_concurrent 1000\n  }\n  cache 30\n}\nexample.com,\n  example.net {\n  log\n}\n")
            .unwrap();
        assert_eq!(t.blocks.len(), 2);
        let keys: Vec<_> = t.blocks[0].keys.iter().map(|k| k.text.as_str()).collect();
        assert_eq!(keys, vec![".:53", "example.org:1053"]);
        assert_eq!(
            shapes(&t.blocks[0]),
            vec![
                "errors",
                "forward . 1.2.3.4 { max_concurrent 1000; }",
                "cache 30"
            ]
        );
        let keys: Vec<_> = t.blocks[1].keys.iter().map(|k| k.text.as_str()).collect();
        assert_eq!(keys, vec!["example.com", "example.net"]);
    }

    #[test]
    fn one_line_blocks_with_semicolons() {
        let t =
            one(".:53 { kubernetes cluster.local { pods insecure; ttl 30 }; cache 30 }").unwrap();
        assert_eq!(
            shapes(&t.blocks[0]),
            vec![
                "kubernetes cluster.local { pods insecure; ttl 30; }",
                "cache 30"
            ]
        );
    }

    #[test]
    fn block_without_braces() {
        let t = one(".:1053\nforward . 127.0.0.1\nlog\n").unwrap();
        assert_eq!(t.blocks.len(), 1);
        assert_eq!(shapes(&t.blocks[0]), vec!["forward . 127.0.0.1", "log"]);
    }

    #[test]
    fn snippets_are_imported_with_their_own_lines() {
        let t =
            one("(common) { log; errors }\n.:53 {\n import common\n import common\n cache\n}\n")
                .unwrap();
        assert_eq!(
            shapes(&t.blocks[0]),
            vec!["log", "errors", "log", "errors", "cache"]
        );
    }

    #[test]
    fn file_imports_are_relative_and_globbed() {
        let mut files = MemoryFiles::new();
        files
            .insert(
                "/cfg/Corefile",
                "import conf.d/*.server\n.:53 {\n  import /shared/opts\n}\n",
            )
            .insert("/cfg/conf.d/a.server", "a.example { log }\n")
            .insert("/cfg/conf.d/b.server", "b.example {\n  errors\n}\n")
            .insert("/shared/opts", "cache 10\n");
        let t = parse_with(&files, "/cfg/Corefile").unwrap();
        let keys: Vec<_> = t.blocks.iter().map(|b| b.keys[0].text.as_str()).collect();
        assert_eq!(keys, vec!["a.example", "b.example", ".:53"]);
        assert_eq!(shapes(&t.blocks[2]), vec!["cache 10"]);
        assert_eq!(
            &*t.blocks[1].directives[0].name.at.file,
            "/cfg/conf.d/b.server"
        );
        assert_eq!(t.blocks[1].directives[0].name.at.line, 2);
        assert_eq!(t.files.len(), 4);
    }

    #[test]
    fn glob_without_matches_warns_missing_file_errors() {
        let t = one("import nothing/*.conf\n.:53 { log }\n").unwrap();
        assert_eq!(t.warnings.len(), 1);
        let e = one(".:53 {\n  import missing.conf\n}\n").unwrap_err();
        let at = e.position().unwrap();
        assert_eq!((at.line, at.column), (2, 10));
        assert!(
            e.to_string()
                .contains("cannot read /etc/coredns/missing.conf"),
            "{e}"
        );
    }

    #[test]
    fn import_cycle_is_an_error() {
        let mut files = MemoryFiles::new();
        files
            .insert("/a", "import /b\n")
            .insert("/b", "import /a\n");
        let e = parse_with(&files, "/a").unwrap_err();
        assert!(e.to_string().contains("import cycle"), "{e}");
    }

    #[test]
    fn brace_errors_have_positions() {
        let e = one(".:53 {\n  forward . 1.1.1.1 {\n    max_fails 3\n}\n").unwrap_err();
        let at = e.position().unwrap();
        assert_eq!((at.line, at.column), (1, 6), "{e}");
        let e = one(".:53 {\n}\n}\n").unwrap_err();
        assert_eq!(e.position().unwrap().line, 3);
        let e = one("{ log }").unwrap_err();
        assert!(e.to_string().contains("server block keys"));
        let e = one(".:53 {\n log\n}\nbogus\n").unwrap_err();
        assert!(e.to_string().contains("\"bogus\" has no body"), "{e}");
        assert_eq!(e.position().unwrap().line, 4);
        let e = one("a.example, {\n}").unwrap_err();
        assert!(e.to_string().contains("after ','"), "{e}");
    }
}
