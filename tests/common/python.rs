//! The Python interpreter with the official SDKs (`openai`, `anthropic`,
//! `mcp`), for the tests that talk to cutover as real clients do.
//!
//! `.ci/run` builds the venv (`.venv/` at the repo root). The tests find it
//! through `CUTOVER_TEST_PYTHON`, defaulting to `.venv/bin/python`. Under
//! `CI=true` a missing interpreter or package fails the test; elsewhere the
//! test is skipped with a line on stderr saying so.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The interpreter, if it can import every module of `modules`.
pub fn python_with(modules: &[&str]) -> Option<PathBuf> {
    let python = match std::env::var_os("CUTOVER_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    };
    let probe = format!("import {}", modules.join(", "));
    let ok = Command::new(&python)
        .args(["-c", &probe])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    let why = format!(
        "{} cannot `{probe}` (build it: python3 -m venv .venv && .venv/bin/pip install openai anthropic mcp; or set CUTOVER_TEST_PYTHON)",
        python.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and the Python SDKs are missing: {why}");
    }
    eprintln!("SKIPPED (not CI): {why}");
    None
}

/// A script under `tests/python/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// Run `python script args...` to completion off the async runtime's
/// threads: (exit code, stdout, stderr).
pub async fn run(python: &Path, name: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(python);
    cmd.arg(script(name)).args(args);
    tokio::task::spawn_blocking(move || {
        let out = cmd.output().expect("run python");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}

/// Run a script that prints one JSON document, and parse it; panics with
/// the script's output when it fails.
pub async fn run_json(python: &Path, name: &str, args: &[&str]) -> serde_json::Value {
    let (code, stdout, stderr) = run(python, name, args).await;
    assert_eq!(
        code,
        Some(0),
        "{name} {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("{name} {args:?} printed no JSON ({e})\nstdout:\n{stdout}\nstderr:\n{stderr}")
    })
}
