//! Every example config in `config/` and `config/golden/` passes
//! `cutover check` through the real binary, with the environment variables
//! it names set (and fails without them); and none prints a lint warning
//! that the file does not explain. Complete configs shown in `docs/*.md`
//! (a ```toml block with `[server]`) pass too, without warnings.
//!
//! The directories are listed at test time, so a new example is checked
//! without touching this file.
//!
//! A file explains a warning with a comment line
//!
//! ```toml
//! # lint-ok: routes[0].versions[0].deps.model why this is fine here
//! ```
//!
//! naming the warning's key path and giving a reason. Every warning needs
//! one, and every such line must still match a warning (a stale excuse
//! fails too).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn examples() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [root.join("config"), root.join("config/golden")] {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => panic!("cannot list {}: {e}", dir.display()),
        };
        for entry in entries {
            let path = match entry {
                Ok(e) => e.path(),
                Err(e) => panic!("cannot list {}: {e}", dir.display()),
            };
            if path.extension().is_some_and(|x| x == "toml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn read(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}

/// The environment variables a config needs: every `${NAME}` (not the
/// escaped `$${`) and the variable named by `token_env`. Comments count
/// too: setting a variable that is not used is harmless.
fn variables(text: &str) -> BTreeSet<String> {
    let mut vars = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("${") {
        let start = i + at;
        i = start + 2;
        if start > 0 && bytes[start - 1] == b'$' {
            continue;
        }
        if let Some(len) = text[i..].find('}') {
            vars.insert(text[i..i + len].to_string());
        }
    }
    for line in text.lines() {
        let line = line.trim_start_matches(['#', ' ']);
        if let Some(rest) = line.strip_prefix("token_env") {
            let name = rest.trim_start_matches([' ', '=']);
            if let Some(name) = name.strip_prefix('"')
                && let Some(end) = name.find('"')
            {
                vars.insert(name[..end].to_string());
            }
        }
    }
    vars
}

/// A value that is valid wherever the variable is used: URLs for names
/// that say so, a token otherwise.
fn value_for(name: &str) -> String {
    if name.ends_with("_URL") || name.ends_with("_ENDPOINT") {
        "http://127.0.0.1:9/hook".to_string()
    } else {
        format!("test-{}", name.to_ascii_lowercase())
    }
}

/// `cutover check --config PATH` with exactly `vars` set among the
/// variables the file names. Returns the exit code and stdout + stderr.
fn check(path: &Path, vars: &BTreeSet<String>, set: bool) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cutover"));
    cmd.arg("check")
        .arg("--config")
        .arg(path)
        .env_remove("CUTOVER_CONFIG");
    for v in vars {
        if set {
            cmd.env(v, value_for(v));
        } else {
            cmd.env_remove(v);
        }
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run cutover: {e}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The key paths of `warning: PATH: message` lines.
fn warnings(output: &str) -> BTreeSet<String> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("warning: "))
        .filter_map(|l| l.split_once(": ").map(|(p, _)| p.to_string()))
        .collect()
}

/// The key paths a file excuses with `# lint-ok: PATH reason`; panics on
/// one without a reason.
fn excused(path: &Path, text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.trim().strip_prefix("# lint-ok:") {
            let rest = rest.trim();
            match rest.split_once(' ') {
                Some((p, why)) if !why.trim().is_empty() => {
                    out.insert(p.to_string());
                }
                _ => panic!(
                    "{}: `# lint-ok: {rest}` gives no reason; write `# lint-ok: KEY.PATH why`",
                    path.display()
                ),
            }
        }
    }
    out
}

#[test]
fn the_examples_are_found() {
    let names: Vec<String> = examples()
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    for expected in [
        "example.toml",
        "demo.toml",
        "cutover.toml",
        "gateway.toml",
        "sidecar.toml",
        "rollout.toml",
        "multi-tenant-cache.toml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not found among {names:?}"
        );
    }
}

#[test]
fn every_example_passes_check() {
    let mut failures = Vec::new();
    for path in examples() {
        let vars = variables(&read(&path));
        let (code, output) = check(&path, &vars, true);
        if code != 0 {
            failures.push(format!(
                "{} (with {vars:?} set): exit {code}\n{output}",
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn an_example_that_names_variables_fails_without_them() {
    let mut tried = 0;
    for path in examples() {
        let vars = variables(&read(&path));
        // Only variables used outside comments make the check fail.
        let used: BTreeSet<String> = vars
            .into_iter()
            .filter(|v| {
                read(&path).lines().any(|l| {
                    let code = l.split('#').next().unwrap_or("");
                    code.contains(&format!("${{{v}}}")) || code.contains(&format!("\"{v}\""))
                })
            })
            .collect();
        if used.is_empty() {
            continue;
        }
        tried += 1;
        let (code, output) = check(&path, &used, false);
        assert_eq!(code, 1, "{} without {used:?}:\n{output}", path.display());
        for v in &used {
            assert!(
                output.contains(&format!("`{v}`")),
                "{}: no error names `{v}`:\n{output}",
                path.display()
            );
        }
    }
    assert!(tried >= 3, "only {tried} examples use variables");
}

#[test]
fn no_example_has_an_unexplained_lint_warning() {
    let mut problems = Vec::new();
    for path in examples() {
        let text = read(&path);
        let (code, output) = check(&path, &variables(&text), true);
        if code != 0 {
            continue; // reported by every_example_passes_check
        }
        let warned = warnings(&output);
        let excused = excused(&path, &text);
        for w in warned.difference(&excused) {
            problems.push(format!(
                "{}: unexplained warning at {w} (fix it, or add `# lint-ok: {w} why`):\n{output}",
                path.display()
            ));
        }
        for e in excused.difference(&warned) {
            problems.push(format!(
                "{}: `# lint-ok: {e}` but check no longer warns there; remove the line",
                path.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every complete config (a ```toml block with a `[server]` section) in
/// `docs/*.md`, as (doc, line, text).
fn doc_configs() -> Vec<(String, usize, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) => panic!("cannot list {}: {e}", dir.display()),
    };
    let mut docs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    let mut out = Vec::new();
    for doc in docs {
        let text = read(&doc);
        let name = doc
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let mut block: Option<(usize, String)> = None;
        for (i, line) in text.lines().enumerate() {
            match &mut block {
                None if line.trim_start() == "```toml" => block = Some((i + 2, String::new())),
                None => {}
                Some(_) if line.trim_start() == "```" => {
                    if let Some((at, body)) = block.take()
                        && body.lines().any(|l| l.trim() == "[server]")
                    {
                        out.push((name.clone(), at, body));
                    }
                }
                Some((_, body)) => {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    out
}

#[test]
fn every_complete_config_in_the_docs_passes_check() {
    let configs = doc_configs();
    assert!(
        configs
            .iter()
            .filter(|(d, _, _)| d == "migration.md")
            .count()
            >= 2,
        "docs/migration.md should hold the nginx and LiteLLM equivalents"
    );
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let mut failures = Vec::new();
    for (doc, line, text) in configs {
        let path = dir.path().join(format!("{doc}-{line}.toml"));
        if let Err(e) = std::fs::write(&path, &text) {
            panic!("{e}");
        }
        let (code, output) = check(&path, &variables(&text), true);
        if code != 0 || !warnings(&output).is_empty() {
            failures.push(format!(
                "docs/{doc}:{line}: exit {code}, warnings {:?}\n{output}",
                warnings(&output)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_variable_scan_finds_what_the_loader_substitutes() {
    let text = "a = \"${ONE}\"\nb = \"$${NOT}\"\n# c = \"${TWO}\"\ntoken_env = \"THREE\"\n";
    let vars: Vec<String> = variables(text).into_iter().collect();
    assert_eq!(vars, ["ONE", "THREE", "TWO"]);
}
