//! CI cannot go green without its tools (issue 15, item 9): a test that
//! needs an outside tool fails under `CI=true` when the tool is missing and
//! skips, loudly, elsewhere; `.ci/run` stops when an install fails.

#[path = "common/tools.rs"]
mod tools;

use std::path::{Path, PathBuf};
use std::process::Command;

use tools::{Decision, decide};

#[test]
fn a_missing_tool_fails_under_ci_and_skips_loudly_elsewhere() {
    let install = "apt-get install prometheus";
    match decide("promtool", None, true, install) {
        Decision::Fail(m) => assert!(m.contains("promtool") && m.contains("CI=true"), "{m}"),
        other => panic!("under CI a missing tool must fail the test: {other:?}"),
    }
    match decide("promtool", None, false, install) {
        Decision::Skip(m) => assert!(m.contains("SKIP") && m.contains(install), "{m}"),
        other => panic!("{other:?}"),
    }
    let here = PathBuf::from("/usr/bin/promtool");
    assert_eq!(
        decide("promtool", Some(here.clone()), true, install),
        Decision::Run(here)
    );
}

/// `tools::require` really panics under CI: run in a child process (this
/// test binary itself, filtered to the helper below) with `CI=true` and a
/// PATH where no tool can be found.
#[test]
fn require_panics_under_ci_when_the_tool_is_missing() {
    if std::env::var_os("CUTOVER_CI_TOOLS_CHILD").is_some() {
        let _ = tools::require("cutover-no-such-tool", &[], "nothing to install");
        return;
    }
    let me = std::env::current_exe().expect("test binary");
    for (ci, should_pass) in [("true", false), ("false", true)] {
        let out = Command::new(&me)
            .args([
                "require_panics_under_ci_when_the_tool_is_missing",
                "--exact",
                "--nocapture",
            ])
            .env("CUTOVER_CI_TOOLS_CHILD", "1")
            .env("CI", ci)
            .env("PATH", "/nonexistent")
            .output()
            .expect("run the child");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), should_pass, "CI={ci}: {stderr}");
        assert!(stderr.contains("cutover-no-such-tool"), "CI={ci}: {stderr}");
    }
}

/// `.ci/run` with an `apt-get` that fails and no prometheus on PATH: it
/// must stop at the install, with the reason, not warn and go on.
#[test]
fn ci_run_stops_when_an_install_fails() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = tempfile::tempdir().expect("dir");
    // Only what the script needs to reach the install, and an apt-get that
    // always fails.
    for tool in ["bash", "dirname", "id", "sudo"] {
        if let Some(real) = which(tool) {
            std::os::unix::fs::symlink(real, bin.path().join(tool)).expect("symlink");
        }
    }
    // An apt-get that fails; a cargo and a rustup that would let the
    // script carry on if it ignored the failure.
    for (name, script) in [
        ("apt-get", "#!/bin/sh\necho 'E: no network' >&2\nexit 100\n"),
        ("cargo", "#!/bin/sh\nexit 0\n"),
        ("rustup", "#!/bin/sh\nexit 0\n"),
    ] {
        let path = bin.path().join(name);
        std::fs::write(&path, script).expect("write");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let out = Command::new(bin.path().join("bash"))
        .arg(root.join(".ci/run"))
        .env_clear()
        .env("PATH", bin.path())
        .output()
        .expect("run .ci/run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("could not install prometheus"), "{text}");
    assert!(!text.contains("cargo fmt --check"), "it went on: {text}");
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
