//! Imports between the files of `src/` point one way. This reads every
//! module's source, collects the modules it names through `crate::`,
//! `super::` and `self::` paths (test modules and comments left out), and
//! fails on any cycle in the parts of the tree it checks.
//!
//! A name re-exported by another module (`pub use stats::RolloutStats;` in
//! `rollout/mod.rs`, or any `use` a child reaches through `super::`) is
//! followed to the module that defines it: `use crate::rollout::RolloutStats`
//! is an import of `rollout::stats`, not of all of `rollout`. A module's
//! own children and its ancestors are not imports across the tree.
//!
//! It also checks that the request path (`proxy`, `server::conn` and the
//! `gateway::data_plane` state they hold) never imports the control plane
//! (`gateway::Gateway`, admin, reload, the fleet's sync loop).
//!
//! It checks the whole crate. Run it alone with
//! `cargo test --test module_graph`; it prints every cycle it finds with
//! the modules in it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path prefixes whose files must not import each other in a
/// cycle ("" is the whole crate).
const CHECKED: &[&str] = &[""];

/// module path ("proxy::attempt", "" for the crate root) → its code, with
/// comments, string literals and unit-test modules left out.
fn modules() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path
                .strip_prefix(&root)
                .expect("under src")
                .with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
                parts.clear();
            }
            // Unit tests may reach anywhere: a `tests.rs` file too.
            if parts.last().is_some_and(|p| p == "tests") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read module");
            let text = match text.find("#[cfg(test)]\nmod tests") {
                Some(at) => &text[..at],
                None => &text,
            };
            out.insert(parts.join("::"), code(text));
        }
    }
    out
}

/// `text` without comments and without the contents of string and char
/// literals (a path in a doc comment or a message is not an import).
fn code(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if let Some(hashes) = raw_string_start(b, i) {
            // r"..." or r#"..."#: skip to the quote and as many hashes.
            i += 2 + hashes;
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            while i < b.len() && !b[i..].starts_with(&close) {
                i += 1;
            }
            i += close.len();
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && char_literal_len(&b[i..]).is_some() {
            i += char_literal_len(&b[i..]).unwrap_or(1);
            out.push_str("' '");
        } else {
            // Whole UTF-8 characters: copy up to the next ASCII byte.
            let start = i;
            i += 1;
            while i < b.len() && !b[i].is_ascii() {
                i += 1;
            }
            out.push_str(&text[start..i]);
        }
    }
    out
}

/// At `b[i]`, `r"` or `r#…#"` not inside an identifier: the hashes.
fn raw_string_start(b: &[u8], i: usize) -> Option<usize> {
    if b[i] != b'r' || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) {
        return None;
    }
    let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
    (b.get(i + 1 + hashes) == Some(&b'"')).then_some(hashes)
}

/// The length of a char literal at the start of `b` (`'a'`, `'\n'`,
/// `'\u{1F600}'`, `'é'`), or `None` for a lifetime.
fn char_literal_len(b: &[u8]) -> Option<usize> {
    if b.get(1) == Some(&b'\\') {
        let end = b[2..].iter().position(|&c| c == b'\'')?;
        return Some(end + 3);
    }
    let width = match b.get(1)? {
        c if *c < 0x80 => 1,
        c if *c >= 0xF0 => 4,
        c if *c >= 0xE0 => 3,
        _ => 2,
    };
    (b.get(1 + width) == Some(&b'\'')).then_some(width + 2)
}

/// The module a path like `super::tap::Taps` names, seen from `from`, and
/// the segments after it (`["Taps"]`). A path that does not start with
/// `crate`, `super` or `self` names another crate, or a child of `from`
/// when `bare` is set (a `use` inside `from`).
fn resolve<'p>(
    modules: &BTreeMap<String, String>,
    from: &str,
    path: &'p [&'p str],
    bare: bool,
) -> Option<(String, &'p [&'p str])> {
    let mut base: Vec<&str> = if from.is_empty() {
        Vec::new()
    } else {
        from.split("::").collect()
    };
    let mut rest = path;
    match *rest.first()? {
        "crate" => {
            base.clear();
            rest = &rest[1..];
        }
        "self" => rest = &rest[1..],
        "super" => {
            while rest.first() == Some(&"super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        first if bare => {
            let mut child = base.clone();
            child.push(first);
            if !modules.contains_key(&child.join("::")) {
                return None;
            }
        }
        _ => return None,
    }
    // The longest prefix that is a module of its own.
    (0..=rest.len()).rev().find_map(|n| {
        let mut m = base.clone();
        m.extend_from_slice(&rest[..n]);
        let m = m.join("::");
        modules.contains_key(&m).then_some((m, &rest[n..]))
    })
}

/// The paths a use tree brings in (`a::{b, c::d as e}` → `a::b` as `b`,
/// `a::c::d` as `e`), each with the name it binds. Globs are left out.
fn use_tree(tree: &str) -> Vec<(Vec<String>, String)> {
    fn parse(
        tokens: &[String],
        at: &mut usize,
        prefix: &[String],
        out: &mut Vec<(Vec<String>, String)>,
    ) {
        let mut path = prefix.to_vec();
        while *at < tokens.len() {
            match tokens[*at].as_str() {
                "{" => {
                    *at += 1;
                    while *at < tokens.len() && tokens[*at] != "}" {
                        parse(tokens, at, &path, out);
                        if tokens.get(*at).is_some_and(|t| t == ",") {
                            *at += 1;
                        }
                    }
                    *at += 1;
                    return;
                }
                "::" => *at += 1,
                "*" => {
                    *at += 1;
                    return;
                }
                "," | "}" => break,
                "as" => {
                    *at += 1;
                    if let (Some(alias), false) = (tokens.get(*at), path.is_empty()) {
                        out.push((path.clone(), alias.clone()));
                    }
                    *at += 1;
                    return;
                }
                "self" if !path.is_empty() => {
                    // `a::{self}` binds `a`.
                    *at += 1;
                    if tokens.get(*at).is_some_and(|t| t == "as") {
                        continue;
                    }
                    if let Some(last) = path.last() {
                        out.push((path.clone(), last.clone()));
                    }
                    return;
                }
                name => {
                    path.push(name.to_string());
                    *at += 1;
                }
            }
        }
        if path.len() > prefix.len()
            && let Some(last) = path.last()
        {
            out.push((path.clone(), last.clone()));
        }
    }
    let mut tokens = Vec::new();
    let mut word = String::new();
    let mut chars = tree.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
        match c {
            ':' if chars.peek() == Some(&':') => {
                chars.next();
                tokens.push("::".into());
            }
            '{' | '}' | ',' | '*' => tokens.push(c.to_string()),
            _ => {}
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < tokens.len() {
        parse(&tokens, &mut at, &[], &mut out);
        at += 1;
    }
    out
}

/// The `use` declarations of a module's code, as use trees.
fn uses(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("use ") {
        let at = from + at;
        from = at + 4;
        let word_start =
            at == 0 || !text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_');
        if !word_start {
            continue;
        }
        if let Some(end) = text[from..].find(';') {
            out.push(&text[from..from + end]);
        }
    }
    out
}

/// (module, name it binds by `use`) → the module the name comes from.
fn bindings(modules: &BTreeMap<String, String>) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for (name, text) in modules {
        for tree in uses(text) {
            for (path, bound) in use_tree(tree) {
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                if let Some((target, _)) = resolve(modules, name, &path, true)
                    && target != *name
                {
                    out.insert((name.clone(), bound), target);
                }
            }
        }
    }
    out
}

/// Follow `module::first` through `use` bindings to where it is defined.
fn defining(
    bindings: &BTreeMap<(String, String), String>,
    mut module: String,
    rest: &[&str],
) -> String {
    let Some(first) = rest.first() else {
        return module;
    };
    for _ in 0..16 {
        match bindings.get(&(module.clone(), (*first).to_string())) {
            Some(next) => module = next.clone(),
            None => break,
        }
    }
    module
}

fn edges(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let bindings = bindings(modules);
    let mut graph = BTreeMap::new();
    for (name, text) in modules {
        let mut to = BTreeSet::new();
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let starts = ["crate::", "super::", "self::"]
                .iter()
                .any(|p| bytes[i..].starts_with(p.as_bytes()))
                && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
            if !starts {
                i += 1;
                continue;
            }
            // A path, and the names of a `{...}` group after it.
            let end = text[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(text.len(), |e| i + e);
            let path: Vec<&str> = text[i..end].split("::").filter(|s| !s.is_empty()).collect();
            let mut paths = vec![path.clone()];
            if text[end..].starts_with('{')
                && let Some(close) = text[end..].find('}')
            {
                for item in text[end + 1..end + close].split(',') {
                    let first = item.trim().split("::").next().unwrap_or("");
                    let first = first.split_whitespace().next().unwrap_or("");
                    if !first.is_empty() && first != "self" {
                        let mut p = path.clone();
                        p.push(first);
                        paths.push(p);
                    }
                }
            }
            for p in &paths {
                let Some((t, rest)) = resolve(modules, name, p, false) else {
                    continue;
                };
                let t = defining(&bindings, t, rest);
                // A module's own children and its ancestors (`mod.rs`)
                // are not imports across the tree.
                let child = t.starts_with(&format!("{name}::"));
                let ancestor = name.starts_with(&format!("{t}::")) || t.is_empty();
                if t != *name && !child && !ancestor {
                    to.insert(t);
                }
            }
            i = end;
        }
        graph.insert(name.clone(), to);
    }
    graph
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let lw = s.low[w.as_str()];
                let lv = s.low[v];
                s.low.insert(v, lv.min(lw));
            } else if s.on.contains(w.as_str()) {
                let iw = s.index[w.as_str()];
                let lv = s.low[v];
                s.low.insert(v, lv.min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

fn checked(module: &str) -> bool {
    CHECKED
        .iter()
        .any(|p| p.is_empty() || module == *p || module.starts_with(&format!("{p}::")))
}

#[test]
fn no_import_cycle_between_modules() {
    let modules = modules();
    for m in [
        "proxy::pipeline",
        "runtime",
        "runtime::target",
        "shadow",
        "clock",
    ] {
        assert!(modules.contains_key(m), "src/ was read: {m} is missing");
    }
    let graph = edges(&modules);
    let bad: Vec<_> = cycles(&graph)
        .into_iter()
        .filter(|c| c.iter().any(|m| checked(m)))
        .collect();
    assert!(bad.is_empty(), "import cycles between modules: {bad:#?}");
}

#[test]
fn the_checker_finds_a_cycle() {
    let mut modules = BTreeMap::new();
    modules.insert("a".to_string(), "use crate::b::X;".to_string());
    modules.insert("b".to_string(), "use super::c;".to_string());
    modules.insert("c".to_string(), "use crate::{a::Y, d};".to_string());
    modules.insert("d".to_string(), String::new());
    let graph = edges(&modules);
    assert_eq!(
        cycles(&graph),
        vec![vec!["a".to_string(), "b".to_string(), "c".to_string()]]
    );
}

#[test]
fn comments_and_strings_are_not_imports() {
    let mut modules = BTreeMap::new();
    modules.insert(
        "a".to_string(),
        code("//! see `crate::b`\nuse crate::c::X; /* crate::b */ const S: &str = \"crate::b\";\nfn f<'a>(x: &'a str) -> char { 'b' }"),
    );
    modules.insert("b".to_string(), "use crate::a::Y;".to_string());
    modules.insert("c".to_string(), String::new());
    let graph = edges(&modules);
    assert_eq!(graph["a"], BTreeSet::from(["c".to_string()]));
    assert!(cycles(&graph).is_empty());
}

#[test]
fn a_reexported_name_is_an_import_of_the_module_that_defines_it() {
    let mut modules = BTreeMap::new();
    modules.insert(
        "r".to_string(),
        "pub use stats::{Role, RolloutStats as Stats};\nuse crate::t::Handle;".to_string(),
    );
    modules.insert("r::stats".to_string(), String::new());
    modules.insert("r::registry".to_string(), "use super::Handle;".to_string());
    modules.insert("t".to_string(), "pub use m::{Metrics};".to_string());
    modules.insert("t::m".to_string(), "use crate::r::Stats;".to_string());
    let graph = edges(&modules);
    assert_eq!(graph["t::m"], BTreeSet::from(["r::stats".to_string()]));
    assert_eq!(graph["r::registry"], BTreeSet::from(["t".to_string()]));
    assert!(cycles(&graph).is_empty());
    // t::m → r::stats, and r::stats → t::m: a cycle.
    modules.insert("r::stats".to_string(), "use crate::t::Metrics;".to_string());
    assert_eq!(
        cycles(&edges(&modules)),
        vec![vec!["r::stats".to_string(), "t::m".to_string()]]
    );
}

/// Modules a request runs through: the traffic connection and the
/// pipeline, and the state they hold.
fn request_path(module: &str) -> bool {
    module == "proxy"
        || module.starts_with("proxy::")
        || [
            "server::conn",
            "server::activity",
            "server::sniff",
            "gateway::data_plane",
        ]
        .contains(&module)
}

/// Control-plane modules the request path must not reach, even through
/// other modules: the gateway's reload and rollout side, the admin API,
/// the config watcher, the fleet's lease and sync loop, the control
/// plane's thread.
const CONTROL: &[&str] = &[
    "gateway",
    "admin",
    "admin::status",
    "reload",
    "cluster::sync",
    "cluster::lease",
    "server::control",
];

/// Control-plane modules the request path must not import itself. The
/// compile in `runtime` reads the rollout registry's live weights, so a
/// request reaches these through the `Runtime` type's module, and sees
/// only what the compile left in the `Runtime`.
const CONTROL_DIRECT: &[&str] = &["rollout::registry", "rollout::controller"];

#[test]
fn the_request_path_never_imports_the_control_plane() {
    let modules = modules();
    for m in CONTROL.iter().chain(CONTROL_DIRECT).chain(&[
        "gateway::data_plane",
        "server::conn",
        "proxy::pipeline",
    ]) {
        assert!(modules.contains_key(*m), "src/ was read: {m} is missing");
    }
    let graph = edges(&modules);
    let mut bad = Vec::new();
    for (m, to) in graph.iter().filter(|(m, _)| request_path(m)) {
        for c in to.iter().filter(|t| CONTROL_DIRECT.contains(&t.as_str())) {
            bad.push(format!("{c} (imported by {m})"));
        }
    }
    // What the request path reaches, import by import.
    let mut reached = BTreeSet::new();
    let mut via = BTreeMap::new();
    let mut stack: Vec<String> = graph.keys().filter(|m| request_path(m)).cloned().collect();
    while let Some(m) = stack.pop() {
        if !reached.insert(m.clone()) {
            continue;
        }
        for to in &graph[&m] {
            via.entry(to.clone()).or_insert_with(|| m.clone());
            stack.push(to.clone());
        }
    }
    for c in CONTROL.iter().filter(|c| reached.contains(**c)) {
        bad.push(format!("{c} (imported by {})", via[*c]));
    }
    assert!(
        bad.is_empty(),
        "the request path reaches the control plane: {bad:#?}"
    );
}
