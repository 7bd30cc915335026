//! The builder's top-level modules (`recipe`, `tree`, `plan`, `boot`,
//! `output`, `pipeline`, …) depend on each other in one direction, as
//! DESIGN.md's data flow runs one way (recipe → tree → plan → write →
//! output): no module reaches back into one that uses it.
//!
//! The test reads every `builder/src/**/*.rs` (a file under `boot/` belongs
//! to module `boot`), collects the paths that leave a module (`crate::X…`,
//! `use crate::{X, Y}`, `super::…` that climbs to the crate root), and
//! fails naming every cycle between modules with the lines that make it.
//! Comments, doc links and string literals are not references. No build
//! needed: `cargo test -p e2e-tests --test layering`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `(from, to)` → the `file:line`s that make the reference.
type Edges = BTreeMap<(String, String), Vec<String>>;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

/// Rust tokens with their line numbers, without comments, strings and
/// character literals (only identifiers, `::` and punctuation matter here).
fn tokens(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    // Skip a "…" string starting at the quote at `i`; returns the index after it.
    let skip_string = |mut i: usize, line: &mut usize| {
        i += 1;
        while i < c.len() && c[i] != '"' {
            if c[i] == '\\' {
                i += 1;
            }
            if i < c.len() && c[i] == '\n' {
                *line += 1;
            }
            i += 1;
        }
        i + 1
    };
    // Skip r#…#"…"#…# starting at the first `#` or quote.
    let skip_raw = |mut i: usize, line: &mut usize| {
        let mut hashes = 0;
        while i < c.len() && c[i] == '#' {
            hashes += 1;
            i += 1;
        }
        i += 1; // the opening quote
        while i < c.len() {
            if c[i] == '"' && (0..hashes).all(|h| c.get(i + 1 + h) == Some(&'#')) {
                return i + 1 + hashes;
            }
            if c[i] == '\n' {
                *line += 1;
            }
            i += 1;
        }
        i
    };
    // Skip a character literal at the quote at `i`, or step over a lifetime's quote.
    let skip_char = |i: usize| {
        if c.get(i + 1) == Some(&'\\') {
            let mut j = i + 3; // past the escaped character, which may be a quote
            while j < c.len() && c[j] != '\'' {
                j += 1;
            }
            j + 1
        } else if c.get(i + 2) == Some(&'\'') {
            i + 3
        } else {
            i + 1 // a lifetime: its name is read as an identifier
        }
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(i, &mut line);
        } else if ch == '\'' {
            i = skip_char(i);
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let next = c.get(i).copied();
            match (word.as_str(), next) {
                ("r" | "br" | "cr", Some('"')) => i = skip_raw(i, &mut line),
                ("r" | "br" | "cr", Some('#')) if matches!(c[i..].iter().find(|x| **x != '#'), Some('"')) => i = skip_raw(i, &mut line),
                ("b" | "c", Some('"')) => i = skip_string(i, &mut line),
                ("b", Some('\'')) => i = skip_char(i),
                ("r", Some('#')) => i += 1, // a raw identifier: r#type
                _ => out.push((Tok::Ident(word), line)),
            }
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// The first segment of each item of a `{a::X, b, c::{…}}` group that
/// starts at `toks[i]` (the `{`).
fn group_heads(toks: &[(Tok, usize)], mut i: usize) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    while i < toks.len() {
        match &toks[i].0 {
            Tok::Punct('{') => {
                depth += 1;
                item_start = depth == 1;
            }
            Tok::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            Tok::Punct(',') if depth == 1 => item_start = true,
            Tok::Ident(name) if depth == 1 && item_start => {
                if name != "self" {
                    heads.push(name.clone());
                }
                item_start = false;
            }
            _ => {
                if depth == 1 {
                    item_start = false;
                }
            }
        }
        i += 1;
    }
    heads
}

/// The top-level modules a file refers to, with line numbers. `module` is
/// the file's module path (`["boot", "assemble"]` for `boot/assemble.rs`):
/// `super::` that climbs to the crate root counts too.
fn references(src: &str, module: &[String]) -> Vec<(String, usize)> {
    let toks = tokens(src);
    let mut out = Vec::new();
    // Inline `mod name { … }` blocks: (name, brace depth inside them).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let push_target = |out: &mut Vec<(String, usize)>, at: usize| match toks.get(at) {
        Some((Tok::Ident(name), line)) => out.push((name.clone(), *line)),
        Some((Tok::Punct('{'), line)) => out.extend(group_heads(&toks, at).into_iter().map(|h| (h, *line))),
        _ => {}
    };
    let mut i = 0;
    while i < toks.len() {
        let after_sep = i > 0 && toks[i - 1].0 == Tok::PathSep;
        match &toks[i].0 {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(k) if k == "mod" => {
                if let (Some((Tok::Ident(name), _)), Some((Tok::Punct('{'), _))) = (toks.get(i + 1), toks.get(i + 2)) {
                    inline.push((name.clone(), depth + 1));
                }
            }
            Tok::Ident(k) if k == "crate" && !after_sep && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::PathSep) => {
                push_target(&mut out, i + 2);
            }
            Tok::Ident(k) if k == "super" && !after_sep && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::PathSep) => {
                let mut path: Vec<String> = module.iter().cloned().chain(inline.iter().map(|(n, _)| n.clone())).collect();
                let mut j = i;
                while matches!(toks.get(j).map(|t| &t.0), Some(Tok::Ident(s)) if s == "super")
                    && toks.get(j + 1).map(|t| &t.0) == Some(&Tok::PathSep)
                {
                    path.pop();
                    j += 2;
                }
                if path.is_empty() {
                    push_target(&mut out, j);
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The modules `lib.rs` declares (`mod x;`, `pub mod x;`).
fn declared_modules(lib: &str) -> BTreeSet<String> {
    let toks = tokens(lib);
    toks.windows(3)
        .filter_map(|w| match (&w[0].0, &w[1].0, &w[2].0) {
            (Tok::Ident(m), Tok::Ident(name), Tok::Punct(';')) if m == "mod" => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file below `src`: `boot/mod.rs` → `[boot]`,
/// `boot/assemble.rs` → `[boot, assemble]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    if last != "mod.rs" {
        parts.push(last.trim_end_matches(".rs").to_string());
    }
    parts
}

/// Every reference from one top-level module to another in `src`.
fn module_graph(src: &Path) -> (BTreeSet<String>, Edges, usize) {
    let modules = declared_modules(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut edges = Edges::new();
    let mut scanned = 0;
    for f in &files {
        let module = module_path(src, f);
        // The crate roots: lib.rs declares the modules, main.rs is the CLI (another crate).
        if module == ["lib"] || module == ["main"] {
            continue;
        }
        let from = module[0].clone();
        assert!(modules.contains(&from), "{}: module `{from}` is not declared in lib.rs", f.display());
        scanned += 1;
        let text = std::fs::read_to_string(f).unwrap();
        let shown = format!("builder/src/{}", f.strip_prefix(src).unwrap().display());
        for (to, line) in references(&text, &module) {
            if to != from && modules.contains(&to) {
                let at = edges.entry((from.clone(), to)).or_default();
                let here = format!("{shown}:{line}");
                if at.last() != Some(&here) {
                    at.push(here);
                }
            }
        }
    }
    (modules, edges, scanned)
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(nodes: &BTreeSet<String>, edges: &Edges) -> Vec<Vec<String>> {
    struct State<'a> {
        next: BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.next.get(v).cloned().unwrap_or_default() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                scc.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                s.out.push(scc);
            }
        }
    }
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        next.entry(a.as_str()).or_default().push(b.as_str());
    }
    let mut s = State { next, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on_stack: BTreeSet::new(), out: Vec::new() };
    for v in nodes {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

/// A readable report of each cycle: its modules and every edge inside it
/// with the lines that make it.
fn report(found: &[Vec<String>], edges: &Edges) -> String {
    let mut s = String::new();
    for scc in found {
        s.push_str(&format!("cycle between {}:\n", scc.join(", ")));
        for ((a, b), at) in edges {
            if scc.contains(a) && scc.contains(b) {
                let more = if at.len() > 3 { format!(" (+{} more)", at.len() - 3) } else { String::new() };
                s.push_str(&format!("  {a} → {b}: {}{more}\n", at.iter().take(3).cloned().collect::<Vec<_>>().join(", ")));
            }
        }
    }
    s
}

/// Modules by layer: layer 0 uses no other module, layer n uses only
/// layers below n (for the log; only meaningful without cycles).
fn layers(nodes: &BTreeSet<String>, edges: &Edges) -> Vec<Vec<String>> {
    let mut level: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..nodes.len() {
        for v in nodes {
            let l = edges.keys().filter(|(a, _)| a == v).map(|(_, b)| level.get(b.as_str()).map_or(0, |l| l + 1)).max().unwrap_or(0);
            level.insert(v, l);
        }
    }
    let mut out: Vec<Vec<String>> = Vec::new();
    for (v, l) in level {
        if out.len() <= l {
            out.resize(l + 1, Vec::new());
        }
        out[l].push(v.to_string());
    }
    out
}

#[test]
fn builder_modules_have_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../builder/src");
    let (modules, edges, scanned) = module_graph(&src);
    // The scanner sees the crate as it is (else an empty graph would pass).
    assert!(scanned >= 40, "only {scanned} files scanned under {}", src.display());
    for m in ["recipe", "tree", "plan", "boot", "output", "pipeline", "oem"] {
        assert!(modules.contains(m), "lib.rs declares no `{m}`: {modules:?}");
    }
    assert!(edges.contains_key(&("pipeline".to_string(), "recipe".to_string())), "pipeline uses recipe: {:?}", edges.keys());
    let found = cycles(&modules, &edges);
    assert!(
        found.is_empty(),
        "the builder's top-level modules must depend on each other in one direction; move the piece that makes the back edge down to the lower module:\n{}",
        report(&found, &edges)
    );
    for (i, l) in layers(&modules, &edges).iter().enumerate() {
        eprintln!("layer {i}: {}", l.join(", "));
    }
}

#[test]
fn references_skip_comments_and_strings_and_follow_groups_and_super() {
    let src = r##"
        //! [`crate::docs::x`] is a doc link, not a dependency.
        use crate::{alpha::A, beta, gamma::{g1, g2}, self as me};
        use super::delta::D; /* crate::inblock::x /* nested */ crate::still::x */
        fn f<'a>(s: &'a str) -> char {
            let _ = "crate::instring::x";
            let _ = r#"crate::inraw::" x"#;
            let _ = b"crate::inbytes::x";
            crate::epsilon::e();
            pub(crate) use other::crate_like;
            '"'
        }
        mod tests {
            use super::*;
            use super::super::zeta::Z;
        }
        // crate::incomment::x
    "##;
    let got: Vec<(String, usize)> = references(src, &["top".to_string()]);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"], "{got:?}");
    assert_eq!(got[3].1, 4, "line numbers count from 1");
    // One level deeper, `super::` stays inside the module.
    assert!(references("use super::delta::D;", &["top".to_string(), "sub".to_string()]).is_empty());
}

#[test]
fn a_back_edge_is_reported_as_a_cycle() {
    let nodes: BTreeSet<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
    let mut edges = Edges::new();
    for (a, b) in [("c", "b"), ("b", "a"), ("d", "a")] {
        edges.insert((a.to_string(), b.to_string()), vec![format!("{a}.rs:1")]);
    }
    assert!(cycles(&nodes, &edges).is_empty());
    assert_eq!(layers(&nodes, &edges), [vec!["a"], vec!["b", "d"], vec!["c"]]);
    edges.insert(("a".to_string(), "c".to_string()), vec!["a.rs:7".to_string()]);
    let found = cycles(&nodes, &edges);
    assert_eq!(found, [vec!["a", "b", "c"]]);
    let r = report(&found, &edges);
    assert!(r.contains("cycle between a, b, c") && r.contains("a → c: a.rs:7") && !r.contains("d →"), "{r}");
}
