//! The operator docs name real metrics, their links resolve, and the
//! runbook's alert rules are valid Prometheus rules.
//!
//! * Every `cutover_*` name in the pages of [`DOCS`] is a metric cutover
//!   exports (histograms may carry `_bucket`, `_sum`, `_count`).
//! * Every relative link in those pages and in `README.md` points at a file
//!   that exists, and a `#fragment` into a markdown file at one of its
//!   headings (GitHub's anchor rules).
//! * Every source file and module `docs/architecture.md` names exists.
//! * The `yaml` block under "## Alerts" in `docs/runbook.md`, wrapped in a
//!   rule group, passes `promtool check rules`. Skipped, loudly, where
//!   promtool is not installed; under `CI=true` that fails instead
//!   (`.ci/run` installs it).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use cutover::telemetry::names;

const DOCS: &[&str] = &[
    "runbook.md",
    "concepts.md",
    "migration.md",
    "configuration.md",
    "apis.md",
    "request-flow.md",
    "operations.md",
    "deploying.md",
    "spec-silent.md",
    "testing.md",
    "benchmarks.md",
    "demo.md",
];

/// Words that start like a metric but are not one.
const NOT_METRICS: &[&str] = &[
    // The refusal body's error code.
    "cutover_refusal",
];

fn read(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}

fn known_metrics() -> BTreeSet<&'static str> {
    let mut known: BTreeSet<&'static str> =
        names::DESCRIPTIONS.iter().map(|(name, _)| *name).collect();
    known.insert(names::COST_USD_TOTAL);
    known.insert(names::SHADOW_COST_USD_TOTAL);
    known
}

/// `cutover_...` words in `text`, with the line they are on.
fn metric_words(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("cutover_") {
            let before = rest[..at].chars().last();
            let word: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[at + word.len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            out.push((i + 1, word));
        }
    }
    out
}

#[test]
fn the_docs_name_only_real_metrics() {
    let known = known_metrics();
    let mut problems = Vec::new();
    let mut seen = 0;
    for doc in DOCS {
        for (line, word) in metric_words(&read(doc)) {
            // `cutover_shadow_*` stands for a family.
            if word.ends_with('_') || NOT_METRICS.contains(&word.as_str()) {
                continue;
            }
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| word.strip_suffix(s))
                .filter(|b| known.contains(b))
                .unwrap_or(&word);
            seen += 1;
            if !known.contains(base) {
                problems.push(format!(
                    "docs/{doc}:{line}: `{word}` is not a cutover metric"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(seen >= 30, "only {seen} metric names found in the docs");
}

#[test]
fn metric_words_are_found_whole() {
    let words: Vec<String> = metric_words("a cutover_x_total{y} and my_cutover_no, `cutover_b_`")
        .into_iter()
        .map(|(_, w)| w)
        .collect();
    assert_eq!(words, ["cutover_x_total", "cutover_b_"]);
}

/// The first ```yaml block after `## Alerts`.
fn alert_rules() -> String {
    let text = read("runbook.md");
    let Some(section) = text.split("\n## Alerts\n").nth(1) else {
        panic!("docs/runbook.md has no `## Alerts` section");
    };
    let Some(block) = section.split("```yaml\n").nth(1) else {
        panic!("docs/runbook.md: no ```yaml block under ## Alerts");
    };
    match block.split("\n```").next() {
        Some(b) => b.to_string(),
        None => panic!("docs/runbook.md: unterminated yaml block"),
    }
}

#[path = "common/tools.rs"]
mod tools;

#[test]
fn the_runbook_alerts_pass_promtool() {
    let rules = alert_rules();
    let alerts = rules.matches("- alert: ").count();
    assert!(alerts >= 8, "only {alerts} alerts in the runbook");
    let Some(promtool) = tools::require("promtool", &[], "apt-get install prometheus") else {
        return;
    };
    let mut file = String::from("groups:\n  - name: cutover\n    rules:\n");
    for line in rules.lines() {
        file.push_str("      ");
        file.push_str(line);
        file.push('\n');
    }
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let path = dir.path().join("cutover.rules.yml");
    if let Err(e) = std::fs::write(&path, &file) {
        panic!("{e}");
    }
    let out = match Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    let _ = std::io::stderr().write_all(&out.stdout);
    assert!(
        out.status.success(),
        "promtool check rules failed:\n{}{}\n--- rules ---\n{file}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped (but `-`
/// and `_`), spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        if !in_code && line.starts_with('#') {
            out.insert(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

/// `(line, target)` of every `](target)` link outside code blocks.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut in_code = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                out.push((i + 1, rest[..end].to_string()));
                rest = &rest[end..];
            }
        }
    }
    out
}

/// Problems with the relative links of `text`, the file at `page` (shown
/// as `name`), and how many links were checked.
fn broken_links(page: &Path, name: &str, text: &str) -> (Vec<String>, usize) {
    let dir = page.parent().unwrap_or(page);
    let mut problems = Vec::new();
    let mut checked = 0;
    for (line, target) in links(text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        checked += 1;
        let (file, fragment) = match target.split_once('#') {
            Some((f, a)) => (f, Some(a)),
            None => (target.as_str(), None),
        };
        let (path, body) = if file.is_empty() {
            (page.to_path_buf(), text.to_string())
        } else {
            let path = dir.join(file);
            let body = std::fs::read_to_string(&path).unwrap_or_default();
            (path, body)
        };
        if !path.exists() {
            problems.push(format!("{name}:{line}: `{target}`: no such file"));
            continue;
        }
        if let Some(fragment) = fragment
            && path.extension().is_some_and(|x| x == "md")
            && !anchors(&body).contains(fragment)
        {
            problems.push(format!(
                "{name}:{line}: `{target}`: no heading with that anchor"
            ));
        }
    }
    (problems, checked)
}

#[test]
fn the_docs_links_resolve() {
    let docs_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut problems = Vec::new();
    let mut checked = 0;
    for doc in DOCS {
        let (p, n) = broken_links(&docs_dir.join(doc), &format!("docs/{doc}"), &read(doc));
        problems.extend(p);
        checked += n;
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 20, "only {checked} links checked");
}

/// The README is the front door: its links resolve too.
#[test]
fn the_readme_links_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let (problems, checked) = broken_links(&root.join("README.md"), "README.md", &text);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 20, "only {checked} links checked");
}

#[test]
fn anchors_follow_github() {
    assert_eq!(anchor(" `routes.rollout.gates`"), "routesrolloutgates");
    assert_eq!(
        anchor(" Reading `cutover status`"),
        "reading-cutover-status"
    );
    assert_eq!(
        anchor(" Time to decision against effect size"),
        "time-to-decision-against-effect-size"
    );
}

/// The feedback-index figures in docs/spec-silent.md are the code's.
#[test]
fn spec_silent_feedback_index_figures_match_the_code() {
    use cutover::telemetry::feedback_index::{KEPT_AT_LEAST, MAX_IDS};
    let page = read("spec-silent.md");
    let line = page
        .lines()
        .find(|l| l.starts_with("| feedback index |"))
        .expect("a feedback index row in docs/spec-silent.md");
    let grouped = |n: usize| {
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(' ');
            }
            out.push(c);
        }
        out
    };
    assert!(line.contains(&grouped(MAX_IDS)), "{line}");
    assert!(line.contains(&grouped(KEPT_AT_LEAST)), "{line}");
    assert!(
        line.contains(&format!("about {} requests a second", KEPT_AT_LEAST / 3600)),
        "{line}"
    );
}

/// The README's tour shows keys that exist: its ```toml snippets, put
/// together in one route (each snippet's bare keys on the route, its
/// tables after), load without an error or a lint.
#[test]
fn the_readme_config_snippets_load_together() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let blocks: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert!(blocks.len() >= 4, "only {} toml snippets", blocks.len());
    let (mut keys, mut tables, mut upstreams) = (String::new(), String::new(), BTreeSet::new());
    for block in &blocks {
        let at = block
            .lines()
            .position(|l| l.starts_with('['))
            .unwrap_or(block.lines().count());
        for (i, line) in block.lines().enumerate() {
            let out = if i < at { &mut keys } else { &mut tables };
            out.push_str(line);
            out.push('\n');
            if let Some(rest) = line.split("upstream = \"").nth(1)
                && let Some(name) = rest.split('"').next()
            {
                upstreams.insert(name.to_string());
            }
        }
    }
    let mut text = String::from(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = \"state\"\n",
    );
    for (i, name) in upstreams.iter().enumerate() {
        text.push_str(&format!(
            "[[upstreams]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:{}\"\n",
            9000 + i
        ));
    }
    text.push_str("[[routes]]\nname = \"chat\"\nmatch = { path_prefix = \"/v1/\" }\n");
    text.push_str(&keys);
    text.push_str(&tables);
    let env = |_: &str| None;
    match cutover::config::load_str(&text, Path::new("/tmp/readme/cutover.toml"), &env) {
        Ok(loaded) => assert!(
            loaded.warnings.is_empty(),
            "{:?}\n--- config ---\n{text}",
            loaded.warnings
        ),
        Err(e) => panic!("{e}\n--- config ---\n{text}"),
    }
}

/// The source files and modules `docs/architecture.md` names: every word
/// ending in `.rs` (`proxy/pipeline.rs`, or a bare `matching.rs`), and each
/// entry of its source tree (`name/` or `name.rs` at the start of a line
/// inside the code block under "## The source tree"). With its line.
fn architecture_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_tree = false;
    let mut in_block = false;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("## ") {
            in_tree = line == "## The source tree";
        }
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || "_/.".contains(c))) {
            let word = word.trim_matches('.');
            if word.ends_with(".rs") {
                out.push((i + 1, word.trim_start_matches("src/").to_string()));
            }
        }
        if in_tree && in_block {
            let entry = line.split_whitespace().next().unwrap_or("");
            let is_module = entry.ends_with('/') || entry.ends_with(".rs");
            if line.starts_with("  ") && is_module && entry != "src/" {
                out.push((i + 1, entry.to_string()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The names of [`architecture_paths`] that no file or directory under
/// `root/src` has: a path with a `/` is taken from `src/` (or from the
/// checkout for `tests/`, `benches/`, `examples/`, `fuzz/`), a bare file
/// name may be in any directory of `src/` or at the checkout's root.
fn missing_sources(root: &Path, text: &str) -> Vec<String> {
    fn file_names(dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                file_names(&path, out);
            } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                out.insert(name.to_string());
            }
        }
    }
    let src = root.join("src");
    let mut names = BTreeSet::new();
    file_names(&src, &mut names);
    architecture_paths(text)
        .into_iter()
        .filter(|(_, p)| {
            let here = p.trim_end_matches('/');
            let exists = if ["tests/", "benches/", "examples/", "fuzz/"]
                .iter()
                .any(|top| here.starts_with(top))
            {
                root.join(here).exists()
            } else if here.contains('/') || p.ends_with('/') {
                src.join(here).exists()
            } else {
                // Or the checkout's own: build.rs.
                names.contains(here) || root.join(here).is_file()
            };
            !exists
        })
        .map(|(line, p)| format!("docs/architecture.md:{line}: {p}"))
        .collect()
}

#[test]
fn the_architecture_names_only_modules_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = read("architecture.md");
    assert!(
        architecture_paths(&text).len() > 30,
        "the page should name the modules: {:?}",
        architecture_paths(&text)
    );
    let missing = missing_sources(root, &text);
    assert!(
        missing.is_empty(),
        "docs/architecture.md names sources that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn a_module_the_architecture_names_that_is_gone_is_reported() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = "## The source tree\n\n```\nsrc/\n  proxy/             phases\n  \
                vanished/          gone\n```\n\nproxy/pipeline.rs and proxy/service.rs, \
                then matching.rs and exchange.rs.\n";
    assert_eq!(
        missing_sources(root, text),
        [
            "docs/architecture.md:6: vanished/",
            "docs/architecture.md:9: exchange.rs",
            "docs/architecture.md:9: proxy/service.rs",
        ]
    );
}
