//! The import structure of `core/src`, checked by reading the source (issue #18):
//!
//! (a) no cycle between the top-level concept modules inside `dns/` and inside `ipvs/` (a file
//!     `dns/x.rs` or a folder `dns/x/` is one module);
//! (b) no import from `dns/` or `ipvs/` into `source/` (composition roots in `agent/` start the
//!     cluster source and hand the subsystems a cache), except the files in [`SOURCE_ALLOWED`].
//!
//! How it reads the code: a text scan, not a compiler. Comments and string/char literals are
//! blanked, then every item under `#[cfg(test)]` (test modules, test-only `mod x;` files and
//! their folders, test-only `use`s and functions) is dropped, so test code may import anything.
//! What remains is searched for paths starting with `crate::`, `super::` or `self::`, including
//! `use` groups (`crate::dns::{handler::Request, wire}`); `super`/`self` are resolved against the
//! file's module path. A path `crate::dns::Item` naming an item the area's `mod.rs` re-exports
//! (`pub use child::Item`) counts as an import of `child`; the crate root's re-exports likewise.
//!
//! Limits: paths written without a `crate::`/`super::`/`self::` prefix (a child module used by
//! its bare name, or a name brought in by a glob `use`) are not seen; `super` inside an inline
//! non-test `mod x { .. }` block resolves as if at the file's level; `cfg` attributes other than
//! exactly `#[cfg(test)]` are not treated as test code. The area's own `mod.rs` (which declares
//! and re-exports its children) is no node of graph (a).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Files of `dns/` and `ipvs/` allowed to import `source/`: none since the `agent/` composition
/// root landed. An entry whose file does not import `source/` fails the test, so the list cannot
/// go stale.
const SOURCE_ALLOWED: &[&str] = &[];

/// Import edges (`area/from`, `area/to`) that close a cycle which exists today and is not
/// broken yet; the cycle check leaves them out of the graph. Each entry must name who should
/// break it; an entry whose edge no longer exists fails the test. Empty: the last two
/// (`ipvs/config -> ipvs/conntrack`, `ipvs/netlink -> ipvs/conntrack`) went when
/// `ConntrackConfig` moved into `ipvs::config` and `ctnetlink` under `ipvs::conntrack`.
const KNOWN_CYCLE_EDGES: &[(&str, &str)] = &[];

/// The areas whose top-level modules must form no cycle.
const AREAS: &[&str] = &["dns", "ipvs"];

/// One import found in the code.
#[derive(Debug, Clone)]
struct Import {
    /// File relative to `core/src`, with `/`.
    file: String,
    /// 1-based line of the path's first segment.
    line: usize,
    /// The path as written, e.g. `super::wire::encode`.
    written: String,
    /// The path resolved from the crate root, e.g. `["dns", "wire", "encode"]`.
    resolved: Vec<String>,
}

/// A source file with its module path.
struct SourceFile {
    rel: String,
    module: Vec<String>,
    code: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file relative to `src/`: `dns/zone/mod.rs` → `[dns, zone]`,
/// `dns/wire.rs` → `[dns, wire]`, `lib.rs` → `[]`.
fn module_path(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

/// `text` with comments and the contents of string and char literals replaced by spaces
/// (newlines kept, so byte offsets and line numbers stay valid).
fn blank_comments_and_literals(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = text[i..].find('\n').map_or(b.len(), |n| i + n);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let (mut depth, mut j) = (1, i + 2);
                while j < b.len() && depth > 0 {
                    if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            b'r' if !ident_byte(prev(b, i))
                && (b.get(i + 1) == Some(&b'"')
                    || (b.get(i + 1) == Some(&b'#')
                        && b[i + 1..].iter().find(|c| **c != b'#') == Some(&b'"'))) =>
            {
                let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
                let start = i + 1 + hashes + 1;
                let close = format!("\"{}", "#".repeat(hashes));
                let end = text[start..]
                    .find(&close)
                    .map_or(b.len(), |n| start + n + close.len());
                blank(&mut out, start, end.saturating_sub(close.len()).max(start));
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i + 1, j.min(b.len()));
                i = j + 1;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
                if b.get(i + 1) == Some(&b'\\') {
                    let end = text[i + 2..].find('\'').map_or(b.len(), |n| i + 2 + n);
                    blank(&mut out, i + 1, end);
                    i = end + 1;
                } else if let Some(c) = text[i + 1..].chars().next()
                    && text[i + 1 + c.len_utf8()..].starts_with('\'')
                {
                    blank(&mut out, i + 1, i + 1 + c.len_utf8());
                    i += 2 + c.len_utf8();
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8(out).expect("blanking keeps UTF-8 (multi-byte text only inside blanks)")
}

fn prev(b: &[u8], i: usize) -> u8 {
    if i == 0 { b' ' } else { b[i - 1] }
}

fn ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// `code` (already blanked) without the items under `#[cfg(test)]`; also returns the names of
/// test-only file modules (`#[cfg(test)] mod x;`).
fn drop_test_items(code: &str) -> (String, Vec<String>) {
    const ATTR: &str = "#[cfg(test)]";
    let b = code.as_bytes();
    let mut out = b.to_vec();
    let mut test_mods = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find(ATTR) {
        let start = from + found;
        let mut i = start + ATTR.len();
        // Skip whitespace and further attributes.
        loop {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if b.get(i) == Some(&b'#') {
                i = matching(b, i + 1, b'[', b']');
            } else {
                break;
            }
        }
        let item_start = i;
        // The item ends at the first `;` or the `}` closing the first `{`, outside brackets.
        let mut depth = 0i32;
        let mut end = b.len();
        while i < b.len() {
            match b[i] {
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth -= 1,
                b';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                b'{' if depth == 0 => {
                    end = matching(b, i, b'{', b'}');
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        let item = &code[item_start..end];
        let words: Vec<&str> = item
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ';'))
            .filter(|w| !w.is_empty())
            .collect();
        if let Some(pos) = words.iter().position(|w| *w == "mod")
            && let Some(name) = words.get(pos + 1)
            && item.trim_end().ends_with(';')
        {
            test_mods.push(name.trim_end_matches(';').to_string());
        }
        for c in &mut out[start..end] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
        from = end;
    }
    (String::from_utf8(out).expect("UTF-8"), test_mods)
}

/// The index just past the bracket closing the one at `open_at` (`b[open_at] == open`).
fn matching(b: &[u8], open_at: usize, open: u8, close: u8) -> usize {
    let mut depth = 0;
    for (j, c) in b.iter().enumerate().skip(open_at) {
        if *c == open {
            depth += 1;
        } else if *c == close {
            depth -= 1;
            if depth == 0 {
                return j + 1;
            }
        }
    }
    b.len()
}

/// Every path starting with `crate::`, `super::` or `self::` in `code`, expanded through `use`
/// groups, as (byte offset, written path, segments as written).
fn paths(code: &str) -> Vec<(usize, String, Vec<String>)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !ident_byte(prev(b, i)) && prev(b, i) != b':' {
            for root in ["crate::", "super::", "self::"] {
                if code[i..].starts_with(root) && !is_visibility(code, i) {
                    let mut found = Vec::new();
                    let end = parse_tree(code, i, Vec::new(), &mut found);
                    for segs in found {
                        out.push((i, segs.join("::"), segs));
                    }
                    i = end.max(i + 1);
                    break;
                }
            }
        }
        i += 1;
    }
    out
}

/// `pub(in crate::x)` is a visibility, no import.
fn is_visibility(code: &str, at: usize) -> bool {
    code[..at].trim_end().ends_with("(in")
}

/// Parses a path (or `use` tree) at `i` after `prefix`; pushes each complete path to `out`;
/// returns where it stopped.
fn parse_tree(
    code: &str,
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    let b = code.as_bytes();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b.get(i) == Some(&b'{') {
            i += 1;
            loop {
                while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
                    i += 1;
                }
                if i >= b.len() || b[i] == b'}' {
                    return i + 1;
                }
                let before = i;
                i = parse_tree(code, i, prefix.clone(), out);
                if i == before {
                    return i + 1;
                }
            }
        }
        let start = i;
        while i < b.len() && ident_byte(b[i]) {
            i += 1;
        }
        if start == i {
            // `*` or something else: the path so far.
            if b.get(i) == Some(&b'*') {
                i += 1;
            }
            if !prefix.is_empty() {
                out.push(prefix);
            }
            return i;
        }
        let seg = &code[start..i];
        if seg != "self" || prefix.is_empty() {
            prefix.push(seg.to_string());
        }
        if code[i..].starts_with("::") {
            i += 2;
        } else {
            out.push(prefix);
            return i;
        }
    }
}

/// Resolves `segs` (as written in a file of module `module`) from the crate root; `None` for
/// paths that leave the crate.
fn resolve(module: &[String], segs: &[String]) -> Option<Vec<String>> {
    let mut base: Vec<String> = module.to_vec();
    let mut rest = segs;
    match segs.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &segs[1..];
        }
        Some("self") => rest = &segs[1..],
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// `pub use child::{A, B}` / `pub use child::A` lines of a `mod.rs`/`lib.rs`: item → child.
fn reexports(code: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for (_, _, segs) in paths(code) {
        // Only `self::child::Item` style paths show up here; plain `pub use child::X` is read
        // below.
        if segs.len() == 3 && segs[0] == "self" {
            map.insert(segs[2].clone(), segs[1].clone());
        }
    }
    for stmt in code.split(';') {
        let s = stmt.trim();
        let Some(rest) = s.strip_prefix("pub use ") else {
            continue;
        };
        let Some((child, items)) = rest.split_once("::") else {
            continue;
        };
        if child.contains(['{', ' ']) || ["crate", "super", "self"].contains(&child) {
            continue;
        }
        for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
            let name = item.rsplit("::").next().unwrap_or("").trim();
            let name = name.rsplit(" as ").next().unwrap_or(name).trim();
            if !name.is_empty() {
                map.insert(name.to_string(), child.to_string());
            }
        }
    }
    map
}

fn line_of(code: &str, offset: usize) -> usize {
    code[..offset].bytes().filter(|c| *c == b'\n').count() + 1
}

/// Re-export tables by module path (`[]` the crate root, `[dns]`): item → child module.
type Tables = BTreeMap<Vec<String>, BTreeMap<String, String>>;

/// Reads `core/src`: every non-test file with its imports, and the re-export tables.
fn read_tree() -> (Vec<Import>, Tables, BTreeSet<Vec<String>>) {
    let root = src_dir();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut sources = Vec::new();
    let mut test_only: BTreeSet<Vec<String>> = BTreeSet::new();
    for path in &files {
        let rel = path
            .strip_prefix(&root)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {rel}: {e}"));
        let (code, test_mods) = drop_test_items(&blank_comments_and_literals(&text));
        let module = module_path(&rel);
        for m in test_mods {
            let mut p = module.clone();
            p.push(m);
            test_only.insert(p);
        }
        sources.push(SourceFile { rel, module, code });
    }
    // Files whose module is (inside) a test-only module are test code.
    sources.retain(|s| !test_only.iter().any(|t| s.module.starts_with(t)));
    let mut modules: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut tables = BTreeMap::new();
    for s in &sources {
        modules.insert(s.module.clone());
        if s.rel == "lib.rs" || s.rel.ends_with("/mod.rs") {
            tables.insert(s.module.clone(), reexports(&s.code));
        }
    }
    let mut imports = Vec::new();
    for s in &sources {
        for (offset, written, segs) in paths(&s.code) {
            if let Some(resolved) = resolve(&s.module, &segs) {
                imports.push(Import {
                    file: s.rel.clone(),
                    line: line_of(&s.code, offset),
                    written,
                    resolved,
                });
            }
        }
    }
    (imports, tables, modules)
}

/// The top-level module of `area` that `path` (from the crate root) names, following the
/// re-exports of the crate root and of the area's `mod.rs`.
fn unit_of(
    path: &[String],
    area: &str,
    tables: &Tables,
    modules: &BTreeSet<Vec<String>>,
) -> Option<String> {
    let mut path = path.to_vec();
    if path.len() == 1
        && let Some(child) = tables.get(&Vec::new()).and_then(|t| t.get(&path[0]))
    {
        path = vec![child.clone(), path[0].clone()];
    }
    if path.first().map(String::as_str) != Some(area) || path.len() < 2 {
        return None;
    }
    let candidate = vec![area.to_string(), path[1].clone()];
    if modules.iter().any(|m| m.starts_with(&candidate)) {
        return Some(path[1].clone());
    }
    tables
        .get(&vec![area.to_string()])
        .and_then(|t| t.get(&path[1]))
        .cloned()
}

/// The top-level module of `area` a file belongs to (`None` for the area's `mod.rs` and for
/// files outside the area).
fn file_unit(file: &str, area: &str) -> Option<String> {
    let rest = file.strip_prefix(area)?.strip_prefix('/')?;
    if rest == "mod.rs" {
        return None;
    }
    Some(rest.split('/').next()?.trim_end_matches(".rs").to_string())
}

/// Every elementary cycle's node set, via strongly connected components (Tarjan).
fn strongly_connected(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(edges) = s.graph.get(v) {
            for w in edges {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if s.on_stack.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    let nodes: Vec<&String> = graph.keys().collect();
    for v in nodes {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v.as_str());
        }
    }
    s.out
}

/// The cycles of `area` as messages naming the imports that form them (empty: none).
fn cycles_in(area: &str) -> Vec<String> {
    let (imports, tables, modules) = read_tree();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut witness: BTreeMap<(String, String), Vec<&Import>> = BTreeMap::new();
    let mut seen_known: BTreeSet<(String, String)> = BTreeSet::new();
    for imp in &imports {
        let Some(from) = file_unit(&imp.file, area) else {
            continue;
        };
        let Some(to) = unit_of(&imp.resolved, area, &tables, &modules) else {
            continue;
        };
        if from == to {
            continue;
        }
        let edge = (format!("{area}/{from}"), format!("{area}/{to}"));
        if KNOWN_CYCLE_EDGES.contains(&(edge.0.as_str(), edge.1.as_str())) {
            seen_known.insert(edge);
            continue;
        }
        graph.entry(from.clone()).or_default().insert(to.clone());
        witness.entry((from, to)).or_default().push(imp);
    }
    let mut messages = Vec::new();
    for comp in strongly_connected(&graph) {
        let mut msg = format!("import cycle between {area}/{{{}}}:", comp.join(", "));
        for ((from, to), imps) in &witness {
            if comp.contains(from) && comp.contains(to) {
                let imp = imps[0];
                let more = match imps.len() - 1 {
                    0 => String::new(),
                    n => format!(" (and {n} more)"),
                };
                msg.push_str(&format!(
                    "\n  {area}/{from} -> {area}/{to}: {}:{} `{}`{more}",
                    imp.file, imp.line, imp.written
                ));
            }
        }
        messages.push(msg);
    }
    for (from, to) in KNOWN_CYCLE_EDGES {
        if from.starts_with(&format!("{area}/"))
            && !seen_known.contains(&(from.to_string(), to.to_string()))
        {
            messages.push(format!(
                "{from} no longer imports {to}: remove it from KNOWN_CYCLE_EDGES"
            ));
        }
    }
    messages
}

#[test]
fn no_import_cycle_between_the_top_level_modules_of_dns_and_ipvs() {
    let mut failures = Vec::new();
    for area in AREAS {
        failures.extend(cycles_in(area));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn dns_and_ipvs_do_not_import_source() {
    let (imports, tables, _) = read_tree();
    let mut violations: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for imp in &imports {
        if !AREAS.iter().any(|a| imp.file.starts_with(&format!("{a}/"))) {
            continue;
        }
        let mut target = imp.resolved.clone();
        if target.len() == 1
            && let Some(child) = tables.get(&Vec::new()).and_then(|t| t.get(&target[0]))
        {
            target.insert(0, child.clone());
        }
        if target.first().map(String::as_str) == Some("source") {
            violations
                .entry(imp.file.clone())
                .or_default()
                .push(format!("{}:{} `{}`", imp.file, imp.line, imp.written));
        }
    }
    let mut failures = Vec::new();
    for (file, found) in &violations {
        if !SOURCE_ALLOWED.contains(&file.as_str()) {
            failures.push(format!(
                "{file} imports source/ (dns/ and ipvs/ must not):\n  {}",
                found.join("\n  ")
            ));
        }
    }
    for allowed in SOURCE_ALLOWED {
        if !violations.contains_key(*allowed) {
            failures.push(format!(
                "{allowed} no longer imports source/: remove it from SOURCE_ALLOWED"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The scanner itself: test code, comments, strings and visibilities are no imports; groups,
/// `super` and `self` are resolved.
#[test]
fn the_scanner_finds_real_imports_only() {
    let text = r#"
//! Docs naming crate::source::Nothing.
use crate::dns::{handler::{Request, Response}, wire};
use super::zone::Lookup;
pub(in crate::dns) fn f() -> &'static str { let c = '{'; "crate::source::x" }
/* crate::source::y */
#[cfg(test)]
mod tests {
    use crate::source::manifests::parse_manifest;
}
#[cfg(test)]
mod fixtures;
fn g() { self::h(); }
"#;
    let (code, test_mods) = drop_test_items(&blank_comments_and_literals(text));
    assert_eq!(test_mods, vec!["fixtures".to_string()]);
    let module = vec!["dns".to_string(), "cluster".to_string()];
    let found: Vec<String> = paths(&code)
        .into_iter()
        .filter_map(|(_, _, segs)| resolve(&module, &segs))
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(
        found,
        [
            "dns::handler::Request",
            "dns::handler::Response",
            "dns::wire",
            "dns::zone::Lookup",
            "dns::cluster::h",
        ]
    );
    let table = reexports("pub use error::DnsError;\npub use runner::{DnsOptions, run};\n");
    assert_eq!(table.get("run").map(String::as_str), Some("runner"));
    assert_eq!(table.get("DnsError").map(String::as_str), Some("error"));
}
