//! `cutover demo`: the real binary, end to end, as a newcomer runs it; and
//! its config passes `cutover check`.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cutover");
/// Generous: the demo takes a few seconds; this only catches a hang.
const LIMIT: Duration = Duration::from_secs(60);

fn demo_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml")
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Run the binary with `args`; kill it if it is still running after `limit`.
fn run_with_limit(args: &[&str], limit: Duration) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("CUTOVER_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cutover");
    // Drain both pipes on threads, so a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out.join().unwrap_or_default();
            let stderr = err.join().unwrap_or_default();
            panic!(
                "cutover {args:?} still running after {limit:?}; killed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        status,
        stdout: out.join().expect("stdout thread"),
        stderr: err.join().expect("stderr thread"),
    }
}

/// The transcript line that starts (after indentation) with `prefix`.
fn line_starting<'a>(transcript: &'a str, prefix: &str) -> Vec<&'a str> {
    transcript
        .lines()
        .filter(|l| l.trim_start().starts_with(prefix))
        .collect()
}

#[test]
fn demo_no_tty_plays_every_act_and_exits_0() {
    let run = run_with_limit(&["demo", "--no-tty"], LIMIT);
    let t = &run.stdout;
    assert!(
        run.status.success(),
        "demo failed ({:?})\n--- stdout\n{t}\n--- stderr\n{}",
        run.status,
        run.stderr
    );
    assert!(
        !t.contains('\x1b'),
        "--no-tty must print no ANSI escapes:\n{t}"
    );

    let expected = [
        "== Act 1: the sticky split ==",
        "Notice: about 90% of requests go to v1 and 10% to v2, and every user always gets the same version.",
        "== Act 2: ramp-up ==",
        "Notice: v2 grows from 10% to 25% by taking users from v1 only; nobody already on v2 is moved back.",
        "rewrote the config file: v1 90% / v2 10% -> v1 75% / v2 25%; reloaded without a restart (config generation 2)",
        "ok  0 moved out of v2",
        "The end: 2 acts, 2400 requests",
    ];
    for text in expected {
        assert!(t.contains(text), "missing {text:?} in:\n{t}");
    }
    // Once per act.
    assert_eq!(
        t.matches("ok  0 users changed version").count(),
        2,
        "every act checks stickiness:\n{t}"
    );
    // One split line per version per act: "v1  <requests>  <share>%  <users>".
    for version in ["v1", "v2"] {
        let rows: Vec<&str> = line_starting(t, &format!("{version} "))
            .into_iter()
            .filter(|l| l.contains('%'))
            .collect();
        assert_eq!(rows.len(), 2, "split rows for {version}:\n{t}");
    }
    // The move table: nobody left v2.
    let out_of_v2 = line_starting(t, "v2 -> v1");
    assert_eq!(out_of_v2.len(), 1, "{t}");
    assert_eq!(
        out_of_v2[0].split_whitespace().nth(3),
        Some("0"),
        "v2 -> v1 must be 0:\n{t}"
    );
}

#[test]
fn demo_config_passes_check() {
    let config = demo_config();
    let config = config.to_str().expect("utf-8 path");
    let run = run_with_limit(&["check", "--config", config], LIMIT);
    assert!(
        run.status.success(),
        "cutover check failed ({:?})\n--- stdout\n{}\n--- stderr\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
}

#[test]
fn demo_config_has_no_lint_warnings() {
    let loaded = cutover::config::load(&demo_config())
        .unwrap_or_else(|e| panic!("config/demo.toml invalid:\n{e}"));
    assert!(
        loaded.warnings.is_empty(),
        "a newcomer's first config should be lint-free: {:?}",
        loaded.warnings
    );
}
