//! `cutover hash` through the real binary: every SPEC §3 test vector, and
//! the weights in force of a running proxy rather than the file's.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Two routes: `chat` (v1 and v2 at these weights, then `chat_extra`)
/// and `other`, after `head` (the tables before the routes).
fn config_text(head: &str, v1: f64, v2: f64, chat_extra: &str) -> String {
    format!(
        r#"
{head}
[[upstreams]]
name = "a"
url = "http://127.0.0.1:1"
[[routes]]
name = "chat"
sticky = ["header:x-user-id"]
[[routes.versions]]
name = "v1"
upstream = "a"
weight = {v1:.2}
[[routes.versions]]
name = "v2"
upstream = "a"
weight = {v2:.2}
{chat_extra}
[[routes]]
name = "other"
salt = "support"
[[routes.versions]]
name = "only"
upstream = "a"
"#
    )
}

fn config(dir: &std::path::Path, v1: f64, v2: f64) -> std::path::PathBuf {
    let text = config_text("[server]\nlisten = \"127.0.0.1:0\"", v1, v2, "");
    let path = dir.join(format!("c-{v1}.toml"));
    std::fs::write(&path, text).expect("write");
    path
}

fn hash(config: &std::path::Path, route: &str, key: &str) -> (i32, String) {
    hash_with(config, route, key, &[])
}

fn hash_with(config: &std::path::Path, route: &str, key: &str, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args([
            "hash",
            "--config",
            config.to_str().expect("utf8"),
            "--route",
            route,
            key,
        ])
        .args(extra)
        .env_remove("CUTOVER_ADMIN_TOKEN")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string()
        + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn spec_vectors_through_the_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c95 = config(dir.path(), 95.0, 5.0);
    for (key, bucket) in [
        ("user-1", 4175),
        ("user-2", 2613),
        ("user-8", 9564),
        ("user-42", 565),
        ("alice", 2742),
        ("bob", 8887),
        ("", 3913),
    ] {
        let (code, out) = hash(&c95, "chat", key);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.starts_with(&format!("bucket={bucket} ")),
            "{key}: {out}"
        );
    }
    assert_eq!(hash(&c95, "other", "user-1").1, "bucket=2181 version=only");
    assert_eq!(hash(&c95, "chat", "user-8").1, "bucket=9564 version=v2");
    assert_eq!(hash(&c95, "chat", "bob").1, "bucket=8887 version=v1");
    let c85 = config(dir.path(), 85.0, 15.0);
    assert_eq!(hash(&c85, "chat", "bob").1, "bucket=8887 version=v2");
    assert_eq!(hash(&c85, "chat", "user-8").1, "bucket=9564 version=v2");
}

#[test]
fn unknown_route_is_a_user_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = config(dir.path(), 50.0, 50.0);
    let (code, out) = hash(&c, "nope", "k");
    assert_eq!(code, 1);
    assert!(out.contains("no route named \"nope\""), "{out}");
    assert!(out.contains("chat, other"), "{out}");
}

/// SPEC §1: the version a key maps to "under the current weights". A
/// rollout moves them: here the file gives v2 0 %, and the running
/// proxy's rollout gives it 20 % from its first step. `hash` reads them
/// from the config's admin listener, or from `--admin`; with no proxy
/// running it says so and uses the file's.
#[tokio::test]
async fn a_rollout_s_weights_in_force_are_the_current_ones() {
    let (sockets, traffic, admin) = traffic_and_admin();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    let state = dir.path().join("state");
    let head = format!(
        r#"
[server]
listen = "127.0.0.1:{traffic}"
[admin]
listen = "127.0.0.1:{admin}"
[log]
access_log = false
[state]
dir = "{}"
"#,
        state.display()
    );
    let rollout = r#"
[routes.rollout]
baseline = "v1"
canary = "v2"
steps = [20, 50, 100]
interval = "1h"
"#;
    std::fs::write(&path, config_text(&head, 100.0, 0.0, rollout)).expect("write");

    // Nothing serves yet (the admin socket is held, unanswered): the
    // file's weights, and a note saying why.
    let (code, out) = hash(&path, "chat", "user-8");
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("bucket=9564 version=v1note: "), "{out}");
    assert!(out.contains("configured weights are used"), "{out}");
    // A named admin that does not answer is an error, not a guess.
    let dead = format!("http://127.0.0.1:{}", dead_port());
    let (code, out) = hash_with(&path, "chat", "user-8", &["--admin", &dead]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("--admin"), "{out}");

    let _bin = Binary::spawn_with(
        &["serve", "--config", path.to_str().expect("utf-8")],
        &[],
        sockets,
    );
    let admin_addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    assert!(
        wait_ready(admin_addr, Duration::from_secs(20)).await,
        "the binary serves"
    );
    // 80/20 in force: bucket 9564 is the canary's, 4175 the baseline's.
    for extra in [&[][..], &["--admin", &format!("127.0.0.1:{admin}")]] {
        assert_eq!(
            hash_with(&path, "chat", "user-8", extra),
            (0, "bucket=9564 version=v2".to_string()),
            "{extra:?}"
        );
        assert_eq!(
            hash_with(&path, "chat", "user-1", extra),
            (0, "bucket=4175 version=v1".to_string()),
            "{extra:?}"
        );
    }
}
