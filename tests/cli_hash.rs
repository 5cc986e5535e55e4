//! `cutover hash` through the real binary: every SPEC §3 test vector.

use std::process::Command;

fn config(dir: &std::path::Path, v1: f64, v2: f64) -> std::path::PathBuf {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
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
[[routes]]
name = "other"
salt = "support"
[[routes.versions]]
name = "only"
upstream = "a"
"#
    );
    let path = dir.join(format!("c-{v1}.toml"));
    std::fs::write(&path, text).expect("write");
    path
}

fn hash(config: &std::path::Path, route: &str, key: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args([
            "hash",
            "--config",
            config.to_str().expect("utf8"),
            "--route",
            route,
            key,
        ])
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
