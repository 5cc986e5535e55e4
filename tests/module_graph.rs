//! Imports between the files of `src/` point one way. This reads every
//! module's source, collects the modules it names through `crate::`,
//! `super::` and `self::` paths (test modules left out), and fails on any
//! cycle in the parts of the tree it checks.
//!
//! Run it alone with `cargo test --test module_graph`; it prints every
//! cycle it finds with the modules in it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path prefixes whose files must not import each other in a
/// cycle ("" would be the whole crate).
const CHECKED: &[&str] = &["proxy"];

/// module path ("proxy::attempt", "" for the crate root) → source text
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
            let text = std::fs::read_to_string(&path).expect("read module");
            // Unit tests may reach anywhere.
            let text = match text.find("#[cfg(test)]\nmod tests") {
                Some(at) => text[..at].to_string(),
                None => text,
            };
            out.insert(parts.join("::"), text);
        }
    }
    out
}

/// The module a path like `super::tap::Taps` names, seen from `from`.
fn resolve(modules: &BTreeMap<String, String>, from: &str, path: &[&str]) -> Option<String> {
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
        _ => return None,
    }
    // The longest prefix that is a module of its own.
    (0..=rest.len()).rev().find_map(|n| {
        let mut m = base.clone();
        m.extend_from_slice(&rest[..n]);
        let m = m.join("::");
        modules.contains_key(&m).then_some(m)
    })
}

fn edges(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
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
            let mut targets = vec![resolve(modules, name, &path)];
            if text[end..].starts_with('{')
                && let Some(close) = text[end..].find('}')
            {
                for item in text[end + 1..end + close].split(',') {
                    let first = item.trim().split("::").next().unwrap_or("");
                    let first = first.split_whitespace().next().unwrap_or("");
                    if !first.is_empty() && first != "self" {
                        let mut p = path.clone();
                        p.push(first);
                        targets.push(resolve(modules, name, &p));
                    }
                }
            }
            for t in targets.into_iter().flatten() {
                // A module's own children and its ancestors (re-exports
                // through `mod.rs`) are not imports across the tree.
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
    assert!(modules.contains_key("proxy::pipeline"), "src/ was read");
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
