//! `docs/configuration.md` checked against the config types, so the
//! reference cannot drift from the code.
//!
//! The doc's convention: every table of keys sits under a heading
//! `` ### `routes.rollout.gates` `` (several paths separated by `, ` when
//! they share a struct; `### Top level` for the file's root), followed by a
//! markdown table whose first column is the key in backticks and whose third
//! column is its default. These tests check that
//!
//! * the doc has exactly one section per table shape the loader knows
//!   (found by walking [`valid_keys`] from the root, so a new sub-table is
//!   caught too), and each section lists exactly the keys its struct
//!   accepts;
//! * every default written as a single code literal (`` `"30s"` ``,
//!   `` `4096` ``, `` `[]` ``) is what the loader uses when the key is left
//!   out: a config with the key set to that literal loads to the same
//!   `Config` as one without it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::raw::valid_keys;
use super::spans::KeyPath;

/// Read at test time, not embedded: the crate itself (and the Docker
/// build, which copies no docs) must not depend on the docs folder.
fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}
const DOC_NAME: &str = "docs/configuration.md";

/// One documented key.
struct Row {
    key: String,
    default: String,
    line: usize,
}

/// One documented table: its paths (`""` for the root) and rows.
struct Section {
    paths: Vec<String>,
    rows: Vec<Row>,
    line: usize,
}

/// The paths a `### ` heading names, if it is a section heading.
fn heading_paths(text: &str) -> Option<Vec<String>> {
    if text == "Top level" {
        return Some(vec![String::new()]);
    }
    let paths: Option<Vec<String>> = text
        .split(", ")
        .map(|p| {
            p.strip_prefix('`')
                .and_then(|p| p.strip_suffix('`'))
                .filter(|p| !p.is_empty() && !p.contains('`'))
                .map(str::to_string)
        })
        .collect();
    paths
}

/// The cells of a table row, trimmed.
fn cells(line: &str) -> Vec<&str> {
    line.trim()
        .trim_start_matches('|')
        .trim_end_matches('|')
        .split('|')
        .map(str::trim)
        .collect()
}

/// `text` if it is exactly one code span.
fn code_span(text: &str) -> Option<&str> {
    let inner = text.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.contains('`')).then_some(inner)
}

fn sections() -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    let mut current: Option<Section> = None;
    let doc = doc();
    for (i, line) in doc.lines().enumerate() {
        let n = i + 1;
        if line.starts_with("#") {
            out.extend(current.take());
            if let Some(text) = line.strip_prefix("### ") {
                current = heading_paths(text.trim()).map(|paths| Section {
                    paths,
                    rows: Vec::new(),
                    line: n,
                });
            }
            continue;
        }
        let Some(section) = current.as_mut() else {
            continue;
        };
        if !line.starts_with('|') {
            continue;
        }
        let c = cells(line);
        // The header row (`| key | ...`) and the separator have no code span.
        let Some(key) = c.first().and_then(|k| code_span(k)) else {
            continue;
        };
        section.rows.push(Row {
            key: key.to_string(),
            default: c.get(2).map_or(String::new(), |d| d.to_string()),
            line: n,
        });
    }
    out.extend(current);
    out
}

fn key_path(path: &str) -> KeyPath {
    path.split('.')
        .filter(|s| !s.is_empty())
        .fold(KeyPath::root(), |p, k| p.key(k))
}

/// Every table shape the loader knows, with its keys, found by walking
/// `valid_keys` from the root.
fn known_sections() -> BTreeMap<String, BTreeSet<&'static str>> {
    fn walk(path: String, out: &mut BTreeMap<String, BTreeSet<&'static str>>) {
        let Some(keys) = valid_keys(&key_path(&path)) else {
            return;
        };
        out.insert(path.clone(), keys.iter().copied().collect());
        for k in keys {
            let child = if path.is_empty() {
                (*k).to_string()
            } else {
                format!("{path}.{k}")
            };
            walk(child, out);
        }
    }
    let mut out = BTreeMap::new();
    walk(String::new(), &mut out);
    out
}

fn shown(path: &str) -> &str {
    if path.is_empty() { "(top level)" } else { path }
}

#[test]
fn every_section_lists_exactly_the_keys_the_types_accept() {
    let known = known_sections();
    assert!(
        known.len() >= 20,
        "the walk found only {} sections",
        known.len()
    );
    let mut problems = Vec::new();
    let mut documented: BTreeSet<String> = BTreeSet::new();
    for section in sections() {
        let mut keys: BTreeSet<&str> = BTreeSet::new();
        for row in &section.rows {
            if !keys.insert(row.key.as_str()) {
                problems.push(format!(
                    "{DOC_NAME}:{}: `{}` is listed twice",
                    row.line, row.key
                ));
            }
        }
        for path in &section.paths {
            if !documented.insert(path.clone()) {
                problems.push(format!(
                    "{DOC_NAME}:{}: section `{}` appears twice",
                    section.line,
                    shown(path)
                ));
            }
            let Some(accepted) = known.get(path) else {
                problems.push(format!(
                    "{DOC_NAME}:{}: section `{}` is not a table the config accepts",
                    section.line,
                    shown(path)
                ));
                continue;
            };
            for k in accepted.difference(&keys) {
                problems.push(format!(
                    "{DOC_NAME}:{}: section `{}` does not document the key `{k}`",
                    section.line,
                    shown(path)
                ));
            }
            for k in keys.difference(accepted) {
                problems.push(format!(
                    "{DOC_NAME}:{}: section `{}` documents `{k}`, which the config does not accept",
                    section.line,
                    shown(path)
                ));
            }
        }
    }
    for path in known.keys() {
        if !documented.contains(path) {
            problems.push(format!(
                "{DOC_NAME}: no section for `{}` (add a `### `{}`` heading and a table of its keys)",
                shown(path),
                shown(path)
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A config with every table a documented default can live in, and no
/// optional key set that has a literal default in the doc.
const BASE: &str = r#"
[server]
listen = "127.0.0.1:8080"
[admin]
[log]
[tracing]
[cache]
[state]
[cluster]
redis = "redis://127.0.0.1:6379/0"

[[upstreams]]
name = "a"
url = "http://127.0.0.1:9"
[upstreams.breaker]

[[routes]]
name = "r"
match = {}
refusal = {}
cache = { ttl = "10m" }

[[routes.versions]]
name = "v1"
upstream = "a"
weight = 50.0
cost = {}

[[routes.versions]]
name = "v2"
upstream = "a"
weight = 50.0

[[routes.shadows]]
name = "s"
upstream = "a"
max_in_flight = 8
cost = {}

[[routes.fallbacks]]
name = "f"
upstream = "a"
cost = {}

[routes.rollout]
baseline = "v1"
canary = "v2"
shadow_first = {}
[routes.rollout.gates]
[routes.rollout.rollback]
"#;

/// The table at `path` in `root`, taking the first entry of arrays.
fn table_at<'a>(root: &'a mut toml::Table, path: &str) -> Result<&'a mut toml::Table, String> {
    let mut table = root;
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        let next = table
            .get_mut(seg)
            .ok_or_else(|| format!("the base config has no `{seg}` on the way to `{path}`"))?;
        let next = match next {
            toml::Value::Array(items) => items
                .first_mut()
                .ok_or_else(|| format!("`{seg}` is empty in the base config"))?,
            other => other,
        };
        table = match next {
            toml::Value::Table(t) => t,
            _ => return Err(format!("`{seg}` is not a table in the base config")),
        };
    }
    Ok(table)
}

fn load(root: &toml::Table) -> Result<String, String> {
    let text = toml::to_string(root).map_err(|e| format!("cannot write the config: {e}"))?;
    match super::load_str(&text, Path::new("/etc/cutover/t.toml"), &|_| None) {
        Ok(loaded) => Ok(format!("{:#?}", loaded.config)),
        Err(e) => Err(format!("{e}\n--- config ---\n{text}")),
    }
}

/// The `Config` (as Debug text) without `key` at `path`, and with it set
/// to `literal`.
fn without_and_with(path: &str, key: &str, literal: &str) -> Result<(String, String), String> {
    let value: toml::Table = toml::from_str(&format!("v = {literal}"))
        .map_err(|e| format!("`{literal}` is not a TOML value: {e}"))?;
    let value = value
        .get("v")
        .cloned()
        .ok_or_else(|| format!("`{literal}` is not a TOML value"))?;
    let mut root: toml::Table =
        toml::from_str(BASE).map_err(|e| format!("the base config: {e}"))?;
    table_at(&mut root, path)?.remove(key);
    let without = load(&root)?;
    table_at(&mut root, path)?.insert(key.to_string(), value);
    let with = load(&root)?;
    Ok((without, with))
}

#[test]
fn literal_defaults_are_what_the_loader_uses() {
    let mut problems = Vec::new();
    let mut tested = 0;
    for section in sections() {
        for row in &section.rows {
            let Some(literal) = code_span(&row.default) else {
                continue; // prose: "required", "none", "the route name", ...
            };
            for path in &section.paths {
                tested += 1;
                match without_and_with(path, &row.key, literal) {
                    Ok((without, with)) if without == with => {}
                    Ok(_) => problems.push(format!(
                        "{DOC_NAME}:{}: `{}.{}` is documented with default `{literal}`, but setting it to that changes the loaded config",
                        row.line,
                        shown(path),
                        row.key
                    )),
                    Err(e) => problems.push(format!(
                        "{DOC_NAME}:{}: `{}.{}` = `{literal}`: {e}",
                        row.line,
                        shown(path),
                        row.key
                    )),
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    assert!(
        tested >= 50,
        "only {tested} literal defaults were checked; write defaults as one code span"
    );
}

#[test]
fn the_doc_parser_reads_headings_and_rows() {
    assert_eq!(heading_paths("Top level"), Some(vec![String::new()]));
    assert_eq!(
        heading_paths("`a.b`, `c.b`"),
        Some(vec!["a.b".to_string(), "c.b".to_string()])
    );
    assert_eq!(heading_paths("Environment variables"), None);
    assert_eq!(heading_paths("`a` and more"), None);
    assert_eq!(code_span("`\"30s\"`"), Some("\"30s\""));
    assert_eq!(code_span("`a` (b)"), None);
    assert_eq!(
        cells("| `listen` | address | required | restart | x |"),
        ["`listen`", "address", "required", "restart", "x"]
    );
}
