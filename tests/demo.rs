//! `cutover demo`: the real binary, end to end, as a newcomer runs it; and
//! its config passes `cutover check`.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cutover");
/// Generous: the transcript takes about 20 s; this only catches a hang.
const LIMIT: Duration = Duration::from_secs(150);

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

    // Every act, in order, each with its caption.
    let acts = [
        "== Act 1: the sticky split ==",
        "== Act 2: a shadow being compared ==",
        "== Act 3: a backend fails ==",
        "== Act 4: the version-aware cache ==",
        "== Act 5: a progressive rollout ==",
        "== Act 6: a bad canary rolled back ==",
    ];
    let mut last = 0;
    for act in acts {
        let at = t
            .find(act)
            .unwrap_or_else(|| panic!("missing {act:?} in:\n{t}"));
        assert!(at >= last, "{act:?} out of order in:\n{t}");
        last = at;
    }
    assert_eq!(t.matches("   Notice: ").count(), acts.len(), "{t}");

    // What each act must have shown: its events and the checks that held.
    let expected = [
        // 1: the split, then a reweight that only moves users into v2.
        "ok  0 users changed version",
        "shares match the weights (v1 90% / v2 10%)",
        "rewrote the config file: v1 90% / v2 10% -> v1 75% / v2 25%; reloaded without a restart",
        "ok  0 moved out of v2",
        "ok  after the ramp-up: 0 users changed version",
        // 2: the shadow, invisible to users, compared.
        "config edit: shadow v3 (tool-schema@3, upstream agent-v3) at 100% of route chat",
        "answers came from v3: its status, bytes and errors never reach a user",
        "ok  every request mirrored once",
        "ok  tool choice compared on",
        // 3: breaker, fallback, refusal, recovery.
        "agent-main starts failing",
        "breaker agent-main: closed -> open",
        "agent-backup answered all 300 (no user saw a 503)",
        "users got the polite refusal (200, a chat completion): \"Sorry, I can't look into this right now.",
        "ok  agent-main's breaker closed again after a successful probe",
        // 4: cache hits, a bypass, a prompt bump that misses.
        "ok  cold cache: 240 requests, agent-faq called 6 times (once per question)",
        "bypassed the cache (x-cutover-cache: bypass)",
        "config edit: faq prompt faq-prompt@7 -> faq-prompt@8",
        "ok  after the prompt bump: 240 requests, agent-faq called 6 times",
        "ok  0 stale answers",
        // 5: every step in order, then promoted.
        "rollout: step 0 (10%) -> step 1 (25%); every gate passed",
        "rollout: step 1 (25%) -> step 2 (50%); every gate passed",
        "rollout: step 2 (50%) -> promoted (100%); every gate passed",
        "ok  v2 walked 10% -> 25% -> 50% -> 100% and was promoted",
        // 6: a new rollout, rolled back, then nobody reaches v3.
        "v2 is the baseline now, v3 (tool-schema@3) the canary",
        "rollout: step 0 (10%) -> rolled_back (0%): ",
        "ok  v3 rolled back automatically",
        "ok  users never saw v3's errors",
        "ok  after the rollback: 0 of 600 requests reached v3",
        "The end: 6 acts, ",
    ];
    for text in expected {
        assert!(t.contains(text), "missing {text:?} in:\n{t}");
    }
    // The move table: nobody left v2.
    let out_of_v2 = line_starting(t, "v2 -> v1");
    assert_eq!(out_of_v2.len(), 1, "{t}");
    assert_eq!(
        out_of_v2[0].split_whitespace().nth(3),
        Some("0"),
        "v2 -> v1 must be 0:\n{t}"
    );
    // The breaker table: while agent-main was down, the backup answered.
    let rows = line_starting(t, "agent-backup ");
    assert!(
        rows.iter()
            .any(|r| r.split_whitespace().nth(2) == Some("300")),
        "agent-backup should have answered 300 requests:\n{t}"
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

/// `redis-server` on PATH, or `None` (skip, loudly) outside CI; in CI its
/// absence fails the test.
fn redis_server_on_path(test: &str) -> bool {
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| d.join("redis-server").is_file())
    });
    if !found {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "{test}: redis-server is not on PATH; CI must install it (see .ci/run)"
        );
        eprintln!("SKIPPED {test}: redis-server is not on PATH (apt-get install redis-server)");
    }
    found
}

#[test]
fn fleet_demo_survives_the_leader_and_promotes() {
    if !redis_server_on_path("fleet_demo") {
        return;
    }
    let run = run_with_limit(&["demo", "--fleet", "--no-tty"], LIMIT);
    assert!(
        run.status.success(),
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        run.status.code(),
        run.stdout,
        run.stderr
    );
    let t = &run.stdout;
    for needle in [
        "redis-server on 127.0.0.1:",
        "one fleet: replica-",
        "killed the leader replica-",
        "took the lease",
        "v2 promoted on the survivors: every step once and in order",
    ] {
        assert!(t.contains(needle), "missing {needle:?}:\n{t}");
    }
    // The story in order: one leader, the kill, a new leader, promotion.
    let at = |needle: &str| t.find(needle).unwrap_or(usize::MAX);
    assert!(at("one fleet") < at("killed the leader"));
    assert!(at("killed the leader") < at("took the lease"));
    assert!(at("took the lease") < at("promoted on the survivors"));
}

#[test]
fn fleet_demo_without_redis_server_says_how_to_install_it() {
    let empty = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["demo", "--fleet", "--no-tty"])
        .env("PATH", empty.path())
        .stdin(Stdio::null())
        .output()
        .expect("run cutover");
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("apt-get install redis-server"), "{err}");
    assert!(out.stdout.is_empty(), "nothing started");
}
