//! The import-cycle and layering check of `cargo xtask lint`.
//!
//! # The rule and its granularity
//! The team's rules are "no cycles between sibling modules" and "layering between the role
//! folders" (`config`, `protocol` < `datapath` < `control` < `daemon`, `cli`: a module only
//! uses those below it). Both are about siblings, so the check works on sibling modules at
//! every level of each crate's module tree: a use of module `A` from module `B` is an edge
//! between the two siblings just below their deepest common ancestor. `daemon::health`
//! using `datapath::keys::VipKey` is the edge `daemon -> datapath` of the crate root;
//! `datapath::keys` using `datapath::mmap` is the edge `keys -> mmap` inside `datapath`.
//! The lint fails on a cycle among the siblings of any one module. So
//! - a cycle between two files of one folder is found inside that folder, and
//! - `a::x -> b::y` with `b::z -> a::w` is a cycle `a -> b -> a` at the top level, though
//!   no two files use each other: two folders that need each other are not layered.
//!
//! A flat file-to-file graph would miss the second case, and a folder-only graph the first.
//! A module using its own descendants, or items of its ancestors (`super::Thing`), makes no
//! edge: a folder's `mod.rs` re-exporting its files, and the files using what `mod.rs`
//! defines, is the normal shape of a folder. (A name that `mod.rs` re-exports from a
//! sibling and a child then uses through `super::` is not followed: this reads paths, it
//! does not resolve names.)
//!
//! Acyclic siblings are necessary for layering but not enough (`datapath -> control`
//! alone is no cycle), so where a crate declares its layers ([`layering`], the table is in
//! `lint.rs`) every top-level edge must also point from a higher layer to a lower one.
//! Modules outside the table are not constrained by it.
//!
//! # How modules and uses are read
//! The module tree comes from the files: `src/lib.rs` (or `src/main.rs` in a binary-only
//! crate) is the root, `a.rs` and `a/mod.rs` are `a`, `a/b.rs` is `a::b`; `src/bin/` holds
//! separate crates and is skipped; inline `mod x { … }` blocks are modules too. In each file,
//! with comments, strings and character literals removed, every path that can name a module
//! of the crate is a use:
//! - `use` declarations, with their nested `{…}` groups over any number of lines
//!   (`use crate::{a::{b, c}, d};` uses `a::b`, `a::c` and `d`);
//! - paths in code starting with `crate::`, `super::`, `self::`, or the name of a child
//!   module or of a module brought in by a glob `use` (`owner::Owner::new()`).
//!
//! A path names the deepest module that exists along it (`crate::owner::Owner` is `owner`).
//! Test code is left out: `#[cfg(test)]` items (`#[cfg(test)] mod tests { … }`, and
//! `#[cfg(test)] mod fake;` with its files), files with `#![cfg(test)]`, and files named
//! `tests.rs`. Tests may use anything; the shape is about the code that ships.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    fmt,
    path::Path,
};

use anyhow::{Context, Result};

/// One source file of a crate.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the crate's `src/`, with `/` separators (`owner/tests.rs`).
    pub rel: String,
    /// Path shown in messages (`vip-user/src/owner/tests.rs`).
    pub display: String,
    pub text: String,
}

/// A module path below the crate root (`["datapath", "keys"]`; the root is empty).
type ModPath = Vec<String>;

/// A use of a sibling: where it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub file: String,
    pub line: u32,
    pub path: String,
}

/// The edges between sibling modules of one crate: (parent, from, to) -> first use seen.
#[derive(Debug, Default)]
pub struct Graph {
    edges: BTreeMap<(ModPath, String, String), Evidence>,
}

/// A cycle among the children of `parent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    pub parent: ModPath,
    /// The modules along the cycle, the first repeated at the end (`a -> b -> a`).
    pub path: Vec<String>,
    /// Other siblings caught in the same knot (strongly connected component).
    pub also: Vec<String>,
    /// One use for each edge of `path`.
    pub evidence: Vec<Evidence>,
}

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |m: &String| qualified(&self.parent, m);
        let path: Vec<String> = self.path.iter().map(name).collect();
        write!(f, "cycle {}", path.join(" -> "))?;
        if !self.also.is_empty() {
            let also: Vec<String> = self.also.iter().map(name).collect();
            write!(f, " (in the same knot: {})", also.join(", "))?;
        }
        for (pair, ev) in self.path.windows(2).zip(&self.evidence) {
            write!(
                f,
                "\n    {} -> {}: {}:{} `{}`",
                name(&pair[0]),
                name(&pair[1]),
                ev.file,
                ev.line,
                ev.path
            )?;
        }
        Ok(())
    }
}

fn qualified(parent: &[String], module: &str) -> String {
    parent
        .iter()
        .map(String::as_str)
        .chain([module])
        .collect::<Vec<_>>()
        .join("::")
}

/// Reads the `.rs` files of the crate whose sources are in `src_dir`.
pub fn read_crate(src_dir: &Path, display_prefix: &str) -> Result<Vec<SourceFile>> {
    let mut files = Vec::new();
    let mut dirs = vec![src_dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(src_dir)
                    .expect("below src_dir")
                    .to_string_lossy()
                    .replace('\\', "/");
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                files.push(SourceFile {
                    display: format!("{display_prefix}{rel}"),
                    rel,
                    text,
                });
            }
        }
    }
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(files)
}

/// The module a file is, or `None` for files outside the library's (or binary's) tree
/// and test files.
fn module_of(rel: &str, has_lib: bool) -> Option<ModPath> {
    let parts: Vec<&str> = rel.split('/').collect();
    match parts.as_slice() {
        ["lib.rs"] => return Some(Vec::new()),
        ["main.rs"] => return (!has_lib).then(Vec::new),
        ["bin", ..] => return None,
        _ => {}
    }
    let (last, dirs) = parts.split_last()?;
    if *last == "tests.rs" {
        return None;
    }
    let mut module: ModPath = dirs.iter().map(|d| d.to_string()).collect();
    if *last != "mod.rs" {
        module.push(last.strip_suffix(".rs")?.to_string());
    }
    Some(module)
}

/// Builds the sibling graph of one crate from its files.
pub fn graph(files: &[SourceFile]) -> Graph {
    let has_lib = files.iter().any(|f| f.rel == "lib.rs");
    let mut modules: BTreeSet<ModPath> = BTreeSet::new();
    let mut excluded: Vec<ModPath> = Vec::new();
    let mut refs: Vec<(usize, Ref)> = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let Some(module) = module_of(&file.rel, has_lib) else {
            continue;
        };
        let parsed = parse(&module, &lex(&file.text));
        modules.insert(module);
        modules.extend(parsed.inline_mods);
        excluded.extend(parsed.test_only);
        refs.extend(parsed.refs.into_iter().map(|r| (index, r)));
    }
    let is_excluded = |m: &[String]| excluded.iter().any(|e| m.starts_with(e));
    modules.retain(|m| !is_excluded(m));
    let globs: Vec<(ModPath, ModPath)> = refs
        .iter()
        .filter(|(_, r)| r.glob && !is_excluded(&r.origin))
        .filter_map(|(_, r)| {
            Some((
                r.origin.clone(),
                resolve(&modules, &[], &r.origin, &r.path)?,
            ))
        })
        .collect();
    let mut graph = Graph::default();
    for (index, r) in &refs {
        if is_excluded(&r.origin) {
            continue;
        }
        let Some(target) = resolve(&modules, &globs, &r.origin, &r.path) else {
            continue;
        };
        let common = r
            .origin
            .iter()
            .zip(&target)
            .take_while(|(a, b)| a == b)
            .count();
        if common == r.origin.len() || common == target.len() {
            continue; // a descendant or an ancestor, not a sibling
        }
        let key = (
            r.origin[..common].to_vec(),
            r.origin[common].clone(),
            target[common].clone(),
        );
        graph.edges.entry(key).or_insert_with(|| Evidence {
            file: files[*index].display.clone(),
            line: r.line,
            path: r.path.join("::"),
        });
    }
    graph
}

/// The module a path names: the deepest existing module along it.
fn resolve(
    modules: &BTreeSet<ModPath>,
    globs: &[(ModPath, ModPath)],
    origin: &[String],
    path: &[String],
) -> Option<ModPath> {
    let first = path.first()?;
    let (mut current, rest): (ModPath, &[String]) = match first.as_str() {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (origin.to_vec(), &path[1..]),
        "super" => {
            let ups = path.iter().take_while(|s| *s == "super").count();
            let base = origin.len().checked_sub(ups)?;
            (origin[..base].to_vec(), &path[ups..])
        }
        name => {
            let child = |m: &[String]| {
                let mut c = m.to_vec();
                c.push(name.to_string());
                modules.contains(&c)
            };
            let base = if child(origin) {
                origin.to_vec()
            } else {
                globs
                    .iter()
                    .find(|(from, to)| from == origin && child(to))
                    .map(|(_, to)| to.clone())?
            };
            (base, path)
        }
    };
    for segment in rest {
        current.push(segment.clone());
        if !modules.contains(&current) {
            current.pop();
            break;
        }
    }
    Some(current)
}

/// Cycles among siblings, one per knot (strongly connected component), sorted.
pub fn cycles(graph: &Graph) -> Vec<Cycle> {
    let mut by_parent: BTreeMap<&ModPath, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    for (parent, from, to) in graph.edges.keys() {
        by_parent
            .entry(parent)
            .or_default()
            .entry(from)
            .or_default()
            .insert(to);
    }
    let mut found = Vec::new();
    for (parent, adj) in by_parent {
        let reach = |start: &str| -> BTreeSet<&str> {
            let mut seen = BTreeSet::new();
            let mut queue = VecDeque::from([start]);
            while let Some(n) = queue.pop_front() {
                for &next in adj.get(n).into_iter().flatten() {
                    if seen.insert(next) {
                        queue.push_back(next);
                    }
                }
            }
            seen
        };
        let reachable: BTreeMap<&str, BTreeSet<&str>> =
            adj.keys().map(|&n| (n, reach(n))).collect();
        let mut done: BTreeSet<&str> = BTreeSet::new();
        for (&start, from_start) in &reachable {
            if done.contains(start) || !from_start.contains(start) {
                continue;
            }
            let knot: BTreeSet<&str> = from_start
                .iter()
                .copied()
                .filter(|n| reachable.get(n).is_some_and(|r| r.contains(start)))
                .collect();
            done.extend(&knot);
            let path = shortest_cycle(&adj, &knot, start);
            let evidence = path
                .windows(2)
                .map(|w| graph.edges[&(parent.clone(), w[0].clone(), w[1].clone())].clone())
                .collect();
            let also = knot
                .iter()
                .filter(|n| !path.iter().any(|p| p == *n))
                .map(|n| n.to_string())
                .collect();
            found.push(Cycle {
                parent: parent.clone(),
                path,
                also,
                evidence,
            });
        }
    }
    found
}

/// The shortest way from `start` back to itself inside `knot` (breadth first, names in
/// order, so the result is stable).
fn shortest_cycle(
    adj: &BTreeMap<&str, BTreeSet<&str>>,
    knot: &BTreeSet<&str>,
    start: &str,
) -> Vec<String> {
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    'search: while let Some(n) = queue.pop_front() {
        for &next in adj.get(n).into_iter().flatten() {
            if !knot.contains(next) || prev.contains_key(next) {
                continue;
            }
            prev.insert(next, n);
            if next == start {
                break 'search;
            }
            queue.push_back(next);
        }
    }
    let mut path = vec![start.to_string()];
    let mut at = prev[start];
    while at != start {
        path.push(at.to_string());
        at = prev[at];
    }
    path.push(start.to_string());
    path.reverse();
    path
}

/// Top-level edges that go against the crate's layers (`layers[0]` is the lowest; a
/// module may use modules of its own layer or lower ones). Modules not in any layer are
/// not checked.
pub fn layering(graph: &Graph, layers: &[&[&str]]) -> Vec<String> {
    let layer_of = |m: &str| layers.iter().position(|l| l.contains(&m));
    graph
        .edges
        .iter()
        .filter(|((parent, _, _), _)| parent.is_empty())
        .filter_map(|((_, from, to), ev)| {
            let (lf, lt) = (layer_of(from)?, layer_of(to)?);
            (lt > lf).then(|| {
                format!(
                    "layering: {from} uses {to}, a higher layer ({} < {})\n    {from} -> {to}: \
                     {}:{} `{}`",
                    layers[lf].join(", "),
                    layers[lt].join(", "),
                    ev.file,
                    ev.line,
                    ev.path
                )
            })
        })
        .collect()
}

// ---- reading one file ------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: u32,
}

impl Token {
    fn is(&self, c: char) -> bool {
        self.tok == Tok::Punct(c)
    }
    fn ident(&self) -> Option<&str> {
        match &self.tok {
            Tok::Ident(s) => Some(s),
            _ => None,
        }
    }
}

/// Splits Rust source into identifiers, `::` and punctuation, dropping comments,
/// string, byte-string, raw-string and character literals, numbers and lifetimes' quotes.
fn lex(text: &str) -> Vec<Token> {
    let c: Vec<char> = text.chars().collect();
    let at = |i: usize| c.get(i).copied();
    let mut out = Vec::new();
    let mut line = 1u32;
    let mut i = 0;
    // Skips a "…" literal starting at `i` (the opening quote); returns the index after it.
    let skip_string = |mut i: usize, line: &mut u32| -> usize {
        i += 1;
        while let Some(ch) = at(i) {
            match ch {
                '\\' => {
                    if at(i + 1) == Some('\n') {
                        *line += 1;
                    }
                    i += 2;
                }
                '"' => return i + 1,
                '\n' => {
                    *line += 1;
                    i += 1;
                }
                _ => i += 1,
            }
        }
        i
    };
    // Skips a character literal or a lifetime's quote at `i`.
    let skip_quote = |i: usize| -> usize {
        if at(i + 1) == Some('\\') {
            let mut j = i + 3;
            while at(j).is_some_and(|ch| ch != '\'') {
                j += 1;
            }
            j + 1
        } else if at(i + 2) == Some('\'') {
            i + 3
        } else {
            i + 1 // a lifetime or label: its name follows as an identifier
        }
    };
    while let Some(ch) = at(i) {
        match ch {
            '\n' => {
                line += 1;
                i += 1;
            }
            _ if ch.is_whitespace() => i += 1,
            '/' if at(i + 1) == Some('/') => {
                while at(i).is_some_and(|ch| ch != '\n') {
                    i += 1;
                }
            }
            '/' if at(i + 1) == Some('*') => {
                let mut depth = 0;
                while let Some(ch) = at(i) {
                    if ch == '/' && at(i + 1) == Some('*') {
                        depth += 1;
                        i += 2;
                    } else if ch == '*' && at(i + 1) == Some('/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if ch == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
            }
            '"' => i = skip_string(i, &mut line),
            '\'' => i = skip_quote(i),
            _ if ch.is_ascii_digit() => {
                while at(i).is_some_and(|ch| ch.is_alphanumeric() || ch == '_') {
                    i += 1;
                }
            }
            _ if ch.is_alphabetic() || ch == '_' => {
                let start = i;
                while at(i).is_some_and(|ch| ch.is_alphanumeric() || ch == '_') {
                    i += 1;
                }
                let word: String = c[start..i].iter().collect();
                match (word.as_str(), at(i)) {
                    ("b" | "c", Some('"')) => {
                        i = skip_string(i, &mut line);
                        continue;
                    }
                    ("b", Some('\'')) => {
                        i = skip_quote(i);
                        continue;
                    }
                    ("r" | "br" | "cr", Some('"' | '#')) => {
                        let mut j = i;
                        while at(j) == Some('#') {
                            j += 1;
                        }
                        let hashes = j - i;
                        if at(j) == Some('"') {
                            // raw string: ends at a quote followed by as many hashes
                            j += 1;
                            while let Some(ch) = at(j) {
                                if ch == '\n' {
                                    line += 1;
                                }
                                j += 1;
                                if ch == '"' && (0..hashes).all(|k| at(j + k) == Some('#')) {
                                    j += hashes;
                                    break;
                                }
                            }
                            i = j;
                            continue;
                        }
                        if word == "r" && hashes == 1 {
                            // raw identifier r#name
                            let start = j;
                            while at(j).is_some_and(|ch| ch.is_alphanumeric() || ch == '_') {
                                j += 1;
                            }
                            out.push(Token {
                                tok: Tok::Ident(c[start..j].iter().collect()),
                                line,
                            });
                            i = j;
                            continue;
                        }
                    }
                    _ => {}
                }
                out.push(Token {
                    tok: Tok::Ident(word),
                    line,
                });
            }
            ':' if at(i + 1) == Some(':') => {
                out.push(Token {
                    tok: Tok::PathSep,
                    line,
                });
                i += 2;
            }
            _ => {
                out.push(Token {
                    tok: Tok::Punct(ch),
                    line,
                });
                i += 1;
            }
        }
    }
    out
}

/// A path seen in module `origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ref {
    origin: ModPath,
    path: Vec<String>,
    /// `use path::*`
    glob: bool,
    line: u32,
}

#[derive(Debug, Default)]
struct Parsed {
    refs: Vec<Ref>,
    inline_mods: Vec<ModPath>,
    /// Modules that exist only under `cfg(test)`.
    test_only: Vec<ModPath>,
}

/// Reads the uses of one file, which is module `module`.
fn parse(module: &[String], toks: &[Token]) -> Parsed {
    let mut parsed = Parsed::default();
    let mut current: ModPath = module.to_vec();
    // Brace depth, and the depths at which inline modules close.
    let mut depth = 0usize;
    let mut inline_closes: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        match &t.tok {
            Tok::Punct('#') => {
                let inner = toks.get(i + 1).is_some_and(|t| t.is('!'));
                let open = if inner { i + 2 } else { i + 1 };
                if !toks.get(open).is_some_and(|t| t.is('[')) {
                    i += 1;
                    continue;
                }
                let close = matching(toks, open);
                let attr: Vec<&Tok> = toks[open + 1..close].iter().map(|t| &t.tok).collect();
                i = close + 1;
                if !is_cfg_test(&attr) {
                    continue;
                }
                if inner {
                    parsed.test_only.push(current.clone());
                } else {
                    i = skip_test_item(toks, i, &current, &mut parsed.test_only);
                }
            }
            Tok::Ident(word) if word == "mod" => {
                let name = toks.get(i + 1).and_then(Token::ident);
                match (name, toks.get(i + 2)) {
                    (Some(name), Some(open)) if open.is('{') => {
                        current.push(name.to_string());
                        parsed.inline_mods.push(current.clone());
                        depth += 1;
                        inline_closes.push(depth);
                        i += 3;
                    }
                    _ => i += 1,
                }
            }
            Tok::Ident(word) if word == "use" && !follows_path(toks, i) => {
                let mut j = i + 1;
                let mut paths = Vec::new();
                use_tree(toks, &mut j, &[], &mut paths);
                for (path, glob, line) in paths {
                    parsed.refs.push(Ref {
                        origin: current.clone(),
                        path,
                        glob,
                        line,
                    });
                }
                i = j.max(i + 1);
            }
            Tok::Ident(first)
                if toks.get(i + 1).is_some_and(|t| t.tok == Tok::PathSep)
                    && !follows_path(toks, i) =>
            {
                let mut path = vec![first.clone()];
                let mut j = i + 1;
                while toks.get(j).is_some_and(|t| t.tok == Tok::PathSep) {
                    match toks.get(j + 1).and_then(Token::ident) {
                        Some(segment) => path.push(segment.to_string()),
                        None => break,
                    }
                    j += 2;
                }
                parsed.refs.push(Ref {
                    origin: current.clone(),
                    path,
                    glob: false,
                    line: t.line,
                });
                i = j;
            }
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                if inline_closes.last() == Some(&depth) {
                    inline_closes.pop();
                    current.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
    parsed
}

/// True when the token at `i` continues a path or is a field/method (`a::b`, `x.b`,
/// `$crate`), so it does not start one.
fn follows_path(toks: &[Token], i: usize) -> bool {
    i.checked_sub(1)
        .and_then(|p| toks.get(p))
        .is_some_and(|p| p.tok == Tok::PathSep || p.is('.') || p.is('$'))
}

fn is_cfg_test(attr: &[&Tok]) -> bool {
    matches!(
        attr,
        [Tok::Ident(cfg), Tok::Punct('('), Tok::Ident(test), Tok::Punct(')')]
            if cfg == "cfg" && test == "test"
    )
}

/// The index of the bracket closing the one at `open` (or the last token).
fn matching(toks: &[Token], open: usize) -> usize {
    let mut depth = 0usize;
    for (j, t) in toks.iter().enumerate().skip(open) {
        match &t.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    toks.len().saturating_sub(1)
}

/// Skips the item after `#[cfg(test)]` (from `i`); records `mod name;` as test-only.
fn skip_test_item(
    toks: &[Token],
    mut i: usize,
    current: &[String],
    test_only: &mut Vec<ModPath>,
) -> usize {
    // further attributes
    while toks.get(i).is_some_and(|t| t.is('#')) && toks.get(i + 1).is_some_and(|t| t.is('[')) {
        i = matching(toks, i + 1) + 1;
    }
    let mut j = i;
    if toks.get(j).and_then(Token::ident) == Some("pub") {
        j += 1;
        if toks.get(j).is_some_and(|t| t.is('(')) {
            j = matching(toks, j) + 1;
        }
    }
    if toks.get(j).and_then(Token::ident) == Some("mod")
        && let Some(name) = toks.get(j + 1).and_then(Token::ident)
    {
        let mut m = current.to_vec();
        m.push(name.to_string());
        test_only.push(m);
    }
    let mut depth = 0usize;
    while let Some(t) = toks.get(i) {
        match &t.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(c @ (')' | ']' | '}')) => {
                if depth == 0 {
                    return i; // the end of the enclosing block: not ours
                }
                depth -= 1;
                if depth == 0 && *c == '}' {
                    return i + 1;
                }
            }
            Tok::Punct(';') if depth == 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

/// Reads a use tree at `*i` below `prefix`, pushing (path, glob, line) for each leaf;
/// leaves `*i` after the tree.
fn use_tree(
    toks: &[Token],
    i: &mut usize,
    prefix: &[String],
    out: &mut Vec<(Vec<String>, bool, u32)>,
) {
    let mut path = prefix.to_vec();
    if toks.get(*i).is_some_and(|t| t.tok == Tok::PathSep) {
        // `use ::name`: an external crate
        path.push("::".to_string());
        *i += 1;
    }
    while let Some(t) = toks.get(*i) {
        match &t.tok {
            Tok::Ident(segment) => {
                path.push(segment.clone());
                *i += 1;
                if toks.get(*i).is_some_and(|t| t.tok == Tok::PathSep) {
                    *i += 1;
                    continue;
                }
                if toks.get(*i).and_then(Token::ident) == Some("as") {
                    *i += 2;
                }
                if path.last().is_some_and(|s| s == "self") && path.len() > 1 {
                    path.pop(); // `a::{self}` is `a`
                }
                out.push((path, false, t.line));
                return;
            }
            Tok::Punct('*') => {
                *i += 1;
                out.push((path, true, t.line));
                return;
            }
            Tok::Punct('{') => {
                *i += 1;
                while let Some(t) = toks.get(*i) {
                    if t.is('}') {
                        *i += 1;
                        return;
                    }
                    if t.is(',') {
                        *i += 1;
                        continue;
                    }
                    let before = *i;
                    use_tree(toks, i, &path, out);
                    if *i == before {
                        *i += 1; // not a use tree: do not loop
                    }
                }
                return;
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<SourceFile> {
        list.iter()
            .map(|(rel, text)| SourceFile {
                rel: rel.to_string(),
                display: rel.to_string(),
                text: text.to_string(),
            })
            .collect()
    }

    fn found(list: &[(&str, &str)]) -> Vec<String> {
        cycles(&graph(&files(list)))
            .iter()
            .map(|c| c.to_string().lines().next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn direct_cycle_between_siblings() {
        let tree = [
            ("lib.rs", "pub mod a;\npub mod b;\npub mod c;"),
            ("a.rs", "use crate::b::Thing;\n"),
            ("b.rs", "pub struct Thing;\nfn f() { crate::a::g() }"),
            ("c.rs", "use crate::a;"),
        ];
        assert_eq!(found(&tree), ["cycle a -> b -> a"]);
        let c = &cycles(&graph(&files(&tree)))[0];
        assert_eq!(c.evidence[0].line, 1);
        assert_eq!(c.evidence[0].path, "crate::b::Thing");
        assert_eq!(c.evidence[1].line, 2);
    }

    #[test]
    fn no_cycle_in_a_chain() {
        let tree = [
            ("lib.rs", "mod a; mod b; mod c;"),
            ("a.rs", "use crate::b;"),
            ("b.rs", "use super::c::X;"),
            ("c.rs", "pub struct X;"),
        ];
        assert!(found(&tree).is_empty());
    }

    #[test]
    fn longer_cycle_and_knot() {
        let tree = [
            ("lib.rs", ""),
            ("a.rs", "use crate::b::X;"),
            ("b.rs", "use crate::c::X;"),
            ("c.rs", "use crate::a::X; use crate::d::Y;"),
            ("d.rs", "use crate::c::Z;"),
        ];
        assert_eq!(
            found(&tree),
            ["cycle a -> b -> c -> a (in the same knot: d)"]
        );
    }

    #[test]
    fn folders_that_need_each_other_are_a_cycle() {
        // a::x uses b::y and b::z uses a::w: no two files form a cycle, the folders do.
        let tree = [
            ("lib.rs", "mod a; mod b;"),
            ("a/mod.rs", "mod x; mod w;"),
            ("a/x.rs", "use crate::b::y::Y;"),
            ("a/w.rs", "pub struct W;"),
            ("b/mod.rs", "mod y; mod z;"),
            ("b/y.rs", "pub struct Y;"),
            ("b/z.rs", "fn f(_: crate::a::w::W) {}"),
        ];
        assert_eq!(found(&tree), ["cycle a -> b -> a"]);
    }

    #[test]
    fn cycle_inside_a_folder_is_named_with_its_parent() {
        let tree = [
            ("lib.rs", "mod d;"),
            ("d/mod.rs", "mod x; mod y; pub use x::X;"),
            ("d/x.rs", "use super::y::Y; pub struct X;"),
            ("d/y.rs", "use crate::d::x::X; pub struct Y;"),
        ];
        assert_eq!(found(&tree), ["cycle d::x -> d::y -> d::x"]);
    }

    #[test]
    fn parent_and_child_are_not_siblings() {
        let tree = [
            ("lib.rs", "mod d;"),
            (
                "d/mod.rs",
                "mod x; pub struct Top; pub use self::x::X; fn f() { x::g() }",
            ),
            (
                "d/x.rs",
                "use super::Top; use crate::d::Top as T; pub struct X;",
            ),
        ];
        assert!(found(&tree).is_empty());
    }

    #[test]
    fn multi_line_use_groups() {
        let tree = [
            ("lib.rs", ""),
            (
                "a.rs",
                "use crate::{\n    c::X,\n    d::{\n        self,\n        Y as Z,\n    },\n};\n",
            ),
            ("c.rs", ""),
            ("d.rs", "use crate::{b, a::*};"),
            ("b.rs", ""),
        ];
        assert_eq!(found(&tree), ["cycle a -> d -> a"]);
        let c = &cycles(&graph(&files(&tree)))[0];
        assert_eq!(c.evidence[0].line, 4, "{c}"); // the `self` leaf
    }

    #[test]
    fn test_code_is_left_out() {
        let tree = [
            ("lib.rs", "mod a; mod b; #[cfg(test)]\nmod fake;"),
            (
                "a.rs",
                "use crate::b::X;\n#[cfg(test)]\nmod tests {\n    use crate::a::Y;\n}\n",
            ),
            (
                "b.rs",
                "pub struct X;\n#[cfg(test)]\nuse crate::a::Y;\n#[cfg(test)]\nfn t() { crate::a::f(); }\n\
                 #[cfg(test)]\nmod tests;",
            ),
            ("b/tests.rs", "use crate::a::Y;"),
            ("fake.rs", "use crate::a; use crate::b;"),
            ("fake/inner.rs", "use crate::b;"),
        ];
        assert!(found(&tree).is_empty());
        let g = graph(&files(&tree));
        assert_eq!(g.edges.len(), 1, "{:?}", g.edges);
    }

    #[test]
    fn comments_strings_and_literals_are_not_uses() {
        let tree = [
            ("lib.rs", ""),
            ("a.rs", "use crate::b::X;"),
            (
                "b.rs",
                "// crate::a::x\n/* crate::a::y /* nested */ crate::a::z */\n\
                 /// [`crate::a::W`]\nconst S: &str = \"crate::a::v\";\n\
                 const R: &str = r#\"crate::a::\"u\"#;\nconst C: char = '\"';\n\
                 fn f<'a>(x: &'a str) -> char { 'a' }\nconst B: &[u8] = b\"crate::a::q\";",
            ),
        ];
        assert!(found(&tree).is_empty());
    }

    #[test]
    fn child_relative_and_glob_paths() {
        // The root's `use a::X;` (a child) and a glob of the parent bring siblings in.
        let tree = [
            ("lib.rs", "mod a; mod b; use a::X;"),
            ("a.rs", "use super::*; fn f() { b::g(); }"),
            ("b.rs", "use crate::a;"),
        ];
        assert_eq!(found(&tree), ["cycle a -> b -> a"]);
    }

    #[test]
    fn inline_modules_and_super() {
        // `super` in an inline module is the file's module, not its parent.
        let tree = [
            ("lib.rs", "mod a; mod b;"),
            ("a.rs", "mod inner { use super::Z; } pub struct Z;"),
            ("b.rs", "use crate::a::Z;"),
        ];
        assert!(found(&tree).is_empty());
        let tree = [
            ("lib.rs", "mod a; mod b;"),
            ("a.rs", "mod inner { use super::super::b::Y; }"),
            ("b.rs", "use crate::a::Z;"),
        ];
        assert_eq!(found(&tree), ["cycle a -> b -> a"]);
    }

    #[test]
    fn binaries_and_external_paths_are_ignored() {
        let tree = [
            ("lib.rs", "mod a;"),
            (
                "a.rs",
                "use std::fmt; use ::b::X; fn f() { core::mem::drop(()); x.a::<u8>(); }",
            ),
            ("bin/tool.rs", "use crate::a;"),
            ("main.rs", "mod b;"),
        ];
        assert!(graph(&files(&tree)).edges.is_empty());
    }

    #[test]
    fn layering_flags_uses_of_higher_layers() {
        let tree = [
            ("lib.rs", ""),
            ("config.rs", ""),
            (
                "datapath.rs",
                "use crate::config; use crate::control::Plan;",
            ),
            ("control.rs", "use crate::datapath;"),
            ("daemon.rs", "use crate::{cli, control, datapath};"),
            ("cli.rs", ""),
            ("other.rs", "use crate::daemon;"),
        ];
        let layers: &[&[&str]] = &[
            &["config", "protocol"],
            &["datapath"],
            &["control"],
            &["daemon", "cli"],
        ];
        let g = graph(&files(&tree));
        let found: Vec<String> = layering(&g, layers)
            .iter()
            .map(|l| l.lines().next().unwrap().to_string())
            .collect();
        assert_eq!(
            found,
            ["layering: datapath uses control, a higher layer (datapath < control)"]
        );
    }
}
