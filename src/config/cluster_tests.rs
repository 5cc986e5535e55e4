//! `[cluster]` and `cache.shared` (SPEC §2, §12): defaults, the password
//! that never prints, and each error with its place and what is valid.

use std::path::Path;
use std::time::Duration;

use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "REDIS_PASSWORD" => Some("s3cret-pw".into()),
        _ => None,
    }
}

fn load_text(text: &str) -> Result<Loaded, ConfigErrors> {
    load_str(text, Path::new("/etc/cutover/test.toml"), &env)
}

/// `cluster` text first (its first line is line 1), then a server, one
/// upstream and one route.
fn config(cluster: &str) -> String {
    format!(
        "{cluster}[server]\nlisten = \"127.0.0.1:8080\"\n[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:9001\"\n[[routes]]\nname = \"chat\"\n[[routes.versions]]\nname = \"v1\"\nupstream = \"a\"\n"
    )
}

#[track_caller]
fn error_at(text: &str, path: &str, line: usize, col: usize, needle: &str) -> String {
    let errs = match load_text(text) {
        Ok(_) => panic!("expected an error at {path}, the config loaded:\n{text}"),
        Err(e) => e,
    };
    let Some(e) = errs.0.iter().find(|e| e.path == path) else {
        panic!("no error at {path}; got:\n{errs}");
    };
    assert_eq!((e.line, e.col), (line, col), "place of {e}");
    assert!(e.message.contains(needle), "{e:?} should say {needle:?}");
    errs.to_string()
}

#[test]
fn defaults_and_without_cluster_nothing_changes() {
    let plain = load_text(&config("")).unwrap_or_else(|e| panic!("{e}"));
    assert!(plain.config.cluster.is_none());
    assert!(!plain.config.cache.shared);

    let text = config("[cluster]\nredis = \"redis://127.0.0.1:6379/0\"\n");
    let c = load_text(&text)
        .unwrap_or_else(|e| panic!("{e}"))
        .config
        .cluster
        .unwrap_or_else(|| panic!("a cluster"));
    assert_eq!(c.name, "cutover");
    assert_eq!(c.lease, Duration::from_secs(5));
    assert_eq!(c.sync_interval, Duration::from_secs(1));
    assert!(
        c.replica.ends_with(&format!("-{}", std::process::id())),
        "host and pid: {}",
        c.replica
    );
    assert!(!c.redis.tls());

    let text = config(
        "[cluster]\nredis = \"rediss://:${REDIS_PASSWORD}@redis.internal:6380/2\"\nname = \"chat-gateway\"\nreplica = \"pod-a\"\nlease = \"3s\"\nsync_interval = \"500ms\"\n[cache]\nshared = true\n",
    );
    let loaded = load_text(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.config.cache.shared);
    let c = loaded
        .config
        .cluster
        .clone()
        .unwrap_or_else(|| panic!("a cluster"));
    assert_eq!(
        (c.name.as_str(), c.replica.as_str()),
        ("chat-gateway", "pod-a")
    );
    assert_eq!(
        (c.lease, c.sync_interval),
        (Duration::from_secs(3), Duration::from_millis(500))
    );
    assert!(c.redis.tls());
    // The password reaches the client, and nothing else.
    assert_eq!(
        c.redis.expose(),
        "rediss://:s3cret-pw@redis.internal:6380/2"
    );
    assert_eq!(c.redis.redacted(), "rediss://:***@redis.internal:6380/2");
    let debug = format!("{:?}", loaded.config);
    assert!(!debug.contains("s3cret"), "{debug}");
    let summary = crate::cli::check::summary(&loaded);
    assert!(!summary.contains("s3cret"), "{summary}");
    assert!(
        summary.contains("cluster: chat-gateway as replica pod-a"),
        "{summary}"
    );
}

#[test]
fn redacting_keeps_the_user_and_hides_only_the_password() {
    let r = |u: &str| RedisUrl::new(u).map(|u| u.redacted().to_string());
    assert_eq!(
        r("redis://app:pw@h:6379/0").as_deref(),
        Some("redis://app:***@h:6379/0")
    );
    assert_eq!(r("redis://h:6379").as_deref(), Some("redis://h:6379"));
    assert_eq!(
        r("redis://:p@ss@h/1").as_deref(),
        Some("redis://:***@h/1"),
        "the last @ ends the user info"
    );
    assert_eq!(r("http://h"), None);
    assert_eq!(r("unix:///tmp/redis.sock"), None);
}

#[test]
fn redis_must_be_a_redis_url_and_errors_never_show_the_password() {
    error_at(
        &config("[cluster]\nredis = \"http://127.0.0.1:6379\"\n"),
        "cluster.redis",
        2,
        9,
        "valid: redis://[:PASSWORD@]HOST[:PORT][/DB] or rediss://",
    );
    error_at(
        &config("[cluster]\nredis = \"unix:///run/redis.sock\"\n"),
        "cluster.redis",
        2,
        9,
        "unsupported Redis URL scheme \"unix\"",
    );
    let shown = error_at(
        &config("[cluster]\nredis = \"redis://:${REDIS_PASSWORD}@h:notaport/0\"\n"),
        "cluster.redis",
        2,
        9,
        "malformed Redis URL redis://:***@h:notaport/0",
    );
    assert!(!shown.contains("s3cret"), "{shown}");
    error_at(
        &config("[cluster]\nname = \"x\"\n"),
        "cluster",
        1,
        1,
        "missing required key `redis`",
    );
}

#[test]
fn name_replica_lease_and_sync_interval_say_what_is_valid() {
    let base = "[cluster]\nredis = \"redis://127.0.0.1\"\n";
    error_at(
        &config(&format!("{base}name = \"chat gateway\"\n")),
        "cluster.name",
        3,
        8,
        "valid: 1 to 64 of A-Z a-z 0-9 . _ -",
    );
    error_at(
        &config(&format!("{base}replica = \"\"\n")),
        "cluster.replica",
        3,
        11,
        "valid: 1 to 128 visible ASCII characters",
    );
    error_at(
        &config(&format!(
            "{base}lease = \"1s\"\nsync_interval = \"600ms\"\n"
        )),
        "cluster.lease",
        3,
        9,
        "at least 2 × sync_interval",
    );
    error_at(
        &config(&format!("{base}sync_interval = \"5ms\"\n")),
        "cluster.sync_interval",
        3,
        17,
        "at least \"10ms\"",
    );
    error_at(
        &config(&format!("{base}sync_interval = \"0s\"\n")),
        "cluster.sync_interval",
        3,
        17,
        "must be more than 0s",
    );
    error_at(
        &config(&format!("{base}leader = \"me\"\n")),
        "cluster.leader",
        3,
        1,
        "valid keys here: redis, name, replica, lease, sync_interval",
    );
    error_at(
        &config("cluster = 1\n"),
        "cluster",
        1,
        11,
        "expected a table [cluster]",
    );
}

#[test]
fn a_shared_cache_needs_a_cluster() {
    error_at(
        &config("[cache]\nshared = true\n"),
        "cache.shared",
        2,
        10,
        "needs a [cluster] section",
    );
    let ok = config("[cache]\nshared = false\n");
    assert!(load_text(&ok).is_ok());
}
