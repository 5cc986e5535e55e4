//! `cutover check` through the real binary: exit codes and output.

use std::process::Command;

fn cutover(args: &[&str]) -> (i32, String, String) {
    let out = match Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(args)
        .env_remove("CUTOVER_CONFIG")
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("cannot run cutover: {e}"),
    };
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn example() -> String {
    format!("{}/config/example.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_example_config_is_valid_and_summarised() {
    let (code, stdout, stderr) = cutover(&["check", "--config", &example()]);
    assert_eq!(code, 0, "stderr: {stderr}");
    for needle in [
        "agent-v1     http://127.0.0.1:9001  connect 2s, header 1m, idle 30s",
        "  chat\n",
        "sticky: header:x-session-id, header:x-user-id, cookie:uid, query:user, client_ip",
        "pin header: x-cutover-version",
        "v1             95.00%  upstream agent-v1",
        "v2              5.00%  upstream agent-v2",
        "fallbacks: v1 (version) -> small-model (upstream openai",
        "-> refusal 503 openai-error",
        "cache: ttl 10m, vary [authorization], deterministic only",
        "rollout: v1 -> v2, steps [1.00%, 5.00%, 10.00%, 25.00%, 50.00%, 100.00%]",
        "warning: routes[0].versions[0].deps.model: `text-embedding-3-small` looks like a floating model alias",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    assert!(
        stdout.ends_with("config OK: 2 routes, 4 upstreams, 1 warning\n"),
        "{stdout}"
    );
}

#[test]
fn an_invalid_config_lists_every_error_and_exits_1() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let path = dir.path().join("bad.toml");
    let text = r#"[server]
listen = "0.0.0.0:80800"
max_body = "lots"

[[upstreams]]
name = "a"
url = "ftp://x"
set_headers = { authorization = "Bearer ${CUTOVER_TEST_SURELY_UNSET_VAR}" }

[[routes]]
name = "chat"
fallbacks = ["nope"]

[[routes.versions]]
name = "v1"
upstream = "zzz"
weight = 90.001
colour = "blue"
"#;
    if let Err(e) = std::fs::write(&path, text) {
        panic!("{e}");
    }
    let p = path.display().to_string();
    let (code, stdout, stderr) = cutover(&["check", "--config", &p]);
    assert_eq!(code, 1, "stdout: {stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    let expected = [
        format!("error: {p}:2:10: server.listen: bad listen address"),
        format!("error: {p}:3:12: server.max_body: bad size \"lots\""),
        format!("error: {p}:7:7: upstreams[0].url: malformed URL \"ftp://x\""),
        format!(
            "error: {p}:8:33: upstreams[0].set_headers.authorization: environment variable `CUTOVER_TEST_SURELY_UNSET_VAR` is not set"
        ),
        format!("error: {p}:12:14: routes[0].fallbacks[0]: unknown fallback name `nope`"),
        format!(
            "error: {p}:16:12: routes[0].versions[0].upstream: unknown upstream `zzz`; valid: one of a"
        ),
        format!(
            "error: {p}:17:10: routes[0].versions[0].weight: weight 90.001 has more than two decimals"
        ),
        format!(
            "error: {p}:18:1: routes[0].versions[0].colour: unknown key `colour`; valid keys here: name, upstream, weight"
        ),
    ];
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, want) in lines.iter().zip(&expected) {
        assert!(
            line.starts_with(want.as_str()),
            "{line}\n  should start with\n{want}"
        );
    }
}

#[test]
fn a_missing_file_is_a_user_error() {
    let (code, _, stderr) = cutover(&["check", "--config", "/nonexistent/cutover.toml"]);
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("error: /nonexistent/cutover.toml:0:0: cannot read the config file"),
        "{stderr}"
    );
}

#[test]
fn bad_usage_exits_2() {
    let (code, _, stderr) = cutover(&["check", "--no-such-flag"]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, _) = cutover(&["check", "--config"]);
    assert_eq!(code, 2);
}
