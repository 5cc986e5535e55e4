//! Outside tools some tests need: `promtool` and `prometheus` (Debian's
//! prometheus package), and, on other branches, `redis-server` and the
//! Python SDKs.
//!
//! Under `CI=true` a missing tool FAILS the test: CI must never go green
//! without running what it claims to check (`.ci/run` installs the tools
//! and stops when an install fails). Anywhere else the test is skipped,
//! loudly: one line on stderr saying what was not checked and how to
//! install it.

use std::path::PathBuf;

/// Whether this run is CI (`CI=true`, or `CI=1`, as CI services set it).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// What to do about a tool found (or not) at `found`.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Run(PathBuf),
    /// Outside CI: skip, after saying so.
    Skip(String),
    /// Under CI: fail with this message.
    Fail(String),
}

/// The rule, without the environment (tested in `tests/ci_tools.rs`).
pub fn decide(tool: &str, found: Option<PathBuf>, ci: bool, install: &str) -> Decision {
    match found {
        Some(path) => Decision::Run(path),
        None if ci => Decision::Fail(format!(
            "`{tool}` is missing and CI=true: this test must run in CI ({install}; .ci/run does)"
        )),
        None => Decision::Skip(format!(
            "\n*** SKIP: `{tool}` is not installed, so this test checked nothing ({install}; .ci/run does). Under CI=true this fails. ***\n"
        )),
    }
}

/// `tool` on PATH (or at one of `also`).
pub fn find(tool: &str, also: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| also.iter().map(PathBuf::from).find(|p| p.is_file()))
}

/// The tool's path, or `None` when the test should skip (outside CI, after
/// a loud line on stderr). Panics under `CI=true` when the tool is missing.
pub fn require(tool: &str, also: &[&str], install: &str) -> Option<PathBuf> {
    match decide(tool, find(tool, also), in_ci(), install) {
        Decision::Run(path) => Some(path),
        Decision::Skip(message) => {
            eprintln!("{message}");
            None
        }
        Decision::Fail(message) => panic!("{message}"),
    }
}
