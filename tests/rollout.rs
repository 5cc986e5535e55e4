//! Progressive rollout end to end (SPEC §9, §10): real sockets, mock
//! backends, the controller ticking once a second. Configs use short
//! intervals and generous margins so that a healthy canary passes in a few
//! seconds; the statistics themselves are proven in `rollout_sim.rs`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use cutover::mock::MockArgs;
use http::StatusCode;
use serde_json::Value;

/// A route `chat` on `/v1/` with baseline `v1` (upstream `base`) and
/// canary `v2` (upstream `canary`), under a rollout.
fn config(route: &str, base: &str, canary: &str, rollout: &str, state_dir: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "2s"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
[state]
dir = "{state_dir}"
[[upstreams]]
name = "base"
url = "{base}"
[[upstreams]]
name = "canary"
url = "{canary}"
connect_timeout = "200ms"
header_timeout = "1s"
[upstreams.breaker]
consecutive_failures = 3
open_for = "60s"
[[routes]]
name = "{route}"
match = {{ path_prefix = "/v1/" }}
sticky = ["header:x-user-id"]
pin_header = "x-cutover-version"
[[routes.versions]]
name = "v1"
upstream = "base"
weight = 100.0
[[routes.versions]]
name = "v2"
upstream = "canary"
weight = 0.0
deps = {{ prompt = "support@2" }}
{rollout}
"#
    )
}

/// Quick steps, generous gates: a healthy canary is promoted in seconds.
fn rollout(extra: &str, rollback: &str) -> String {
    format!(
        r#"
[routes.rollout]
baseline = "v1"
canary = "v2"
steps = [20, 50, 100]
interval = "1s"
min_requests = 15
{extra}
[routes.rollout.gates]
error_rate_margin = 0.5
confidence = 0.9
{rollback}
"#
    )
}

const ROLLBACK_ON_ERRORS: &str = r#"
[routes.rollout.rollback]
window = "30s"
min_requests = 10
error_rate = 0.5
on_breaker_open = false
"#;

async fn status(proxy: &Proxy) -> Value {
    client()
        .get(format!("{}/status", proxy.admin_url()))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json")
}

async fn rollout_of(proxy: &Proxy) -> Value {
    status(proxy).await["routes"][0]["rollout"].clone()
}

/// Send requests from many users until `done` says stop (or `limit`
/// passes); returns (requests sent, answered by v2).
async fn drive_until(
    proxy: &Proxy,
    limit: Duration,
    mut done: impl AsyncFnMut(&Value) -> bool,
) -> (u64, u64) {
    let c = client();
    let url = format!("{}/v1/chat", proxy.url());
    let deadline = tokio::time::Instant::now() + limit;
    let (mut sent, mut canary) = (0u64, 0u64);
    let mut user = 0u64;
    loop {
        for _ in 0..20 {
            user += 1;
            let r = c
                .post(&url)
                .header("x-user-id", format!("user-{user}"))
                .body(CHAT)
                .send()
                .await
                .expect("request");
            sent += 1;
            if r.headers()
                .get("x-cutover-version")
                .is_some_and(|v| v == "v2")
            {
                canary += 1;
            }
            let _ = r.bytes().await;
        }
        if done(&rollout_of(proxy).await).await || tokio::time::Instant::now() > deadline {
            return (sent, canary);
        }
    }
}

async fn act(proxy: &Proxy, route: &str, action: &str) -> (StatusCode, Value) {
    let r = client()
        .post(format!(
            "{}/routes/{route}/rollout/{action}",
            proxy.admin_url()
        ))
        .send()
        .await
        .expect("action");
    let code = r.status();
    (code, r.json().await.unwrap_or_default())
}

fn state_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("state dir")
}

#[tokio::test]
async fn a_healthy_canary_walks_every_step_to_promoted() {
    const ROUTE: &str = "healthy";
    let base = healthy_backend("base").await;
    let canary = healthy_backend("canary").await;
    let dir = state_dir();
    let toml = config(
        ROUTE,
        &base.url(),
        &canary.url(),
        &rollout("", ROLLBACK_ON_ERRORS),
        &dir.path().display().to_string(),
    );
    let proxy = start_proxy(&toml).await;
    let r = rollout_of(&proxy).await;
    assert_eq!(
        (r["state"].as_str(), r["step"].as_i64()),
        (Some("canary"), Some(0)),
        "{r}"
    );
    assert_eq!(r["canary_weight"], 20.0);
    assert_eq!(
        status(&proxy).await["routes"][0]["versions"][1]["effective_weight"],
        20.0
    );

    let mut steps_seen = Vec::new();
    let (_, served_by_canary) = drive_until(&proxy, Duration::from_secs(40), async |r| {
        if let Some(step) = r["step"].as_i64()
            && steps_seen.last() != Some(&step)
        {
            steps_seen.push(step);
        }
        r["state"] == "promoted"
    })
    .await;
    let r = rollout_of(&proxy).await;
    assert_eq!(r["state"], "promoted", "{r}");
    assert_eq!(r["canary_weight"], 100.0);
    assert!(
        steps_seen.starts_with(&[0]) && steps_seen.contains(&1),
        "{steps_seen:?}"
    );
    assert!(served_by_canary > 0);
    // Promoted: every user is on the canary now.
    let c = client();
    for u in 0..20 {
        let r = c
            .post(format!("{}/v1/chat", proxy.url()))
            .header("x-user-id", format!("after-{u}"))
            .body(CHAT)
            .send()
            .await
            .expect("request");
        assert_eq!(r.headers()["x-cutover-version"], "v2");
    }
    let text = scrape(&proxy).await;
    assert_eq!(
        metric(
            &text,
            "cutover_rollout_state",
            &[("route", ROUTE), ("state", "promoted")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "cutover_rollout_state",
            &[("route", ROUTE), ("state", "canary")]
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "cutover_route_weight",
            &[("route", ROUTE), ("version", "v2")]
        ),
        Some(100.0)
    );
    // The state was persisted (off the tick, on a blocking thread).
    let file = dir.path().join(format!("{ROUTE}.json"));
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    eventually(Duration::from_secs(3), || read().contains("promoted")).await;
    let saved = read();
    assert!(saved.contains("promoted"), "{saved}");
}

#[tokio::test]
async fn a_failing_canary_is_rolled_back_and_then_reaches_no_user() {
    const ROUTE: &str = "failing";
    let base = healthy_backend("base").await;
    let bad = backend(MockArgs {
        status: Some(StatusCode::INTERNAL_SERVER_ERROR),
        ..MockArgs::new(loopback0())
    })
    .await;
    let dir = state_dir();
    let toml = config(
        ROUTE,
        &base.url(),
        &bad.url(),
        &rollout("", ROLLBACK_ON_ERRORS),
        &dir.path().display().to_string(),
    );
    let proxy = start_proxy(&toml).await;
    drive_until(&proxy, Duration::from_secs(20), async |r| {
        r["state"] == "rolled_back"
    })
    .await;
    let r = rollout_of(&proxy).await;
    assert_eq!(r["state"], "rolled_back", "{r}");
    let reason = r["detail"]["reason"]["kind"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason == "error_rate" || reason == "error_rate_margin",
        "rolled back for {reason}: {r}"
    );
    // SPEC §10: `/status` shows the rollout's reason beside its state.
    assert!(
        r["reason"]
            .as_str()
            .is_some_and(|text| text.starts_with(&format!("{reason}: "))),
        "{r}"
    );
    assert_eq!(r["canary_weight"], 0.0);
    let before = bad.stats().requests();
    let (sent, on_canary) = drive_until(&proxy, Duration::ZERO, async |_| true).await;
    assert_eq!(sent, 20);
    assert_eq!(on_canary, 0, "no user reaches a rolled-back canary");
    assert_eq!(bad.stats().requests(), before);
    let text = scrape(&proxy).await;
    let rollbacks = metric(
        &text,
        "cutover_rollbacks_total",
        &[("route", ROUTE), ("reason", &reason)],
    );
    assert_eq!(rollbacks, Some(1.0), "{text}");
    assert_eq!(
        metric(&text, "cutover_rollout_step", &[("route", ROUTE)]),
        Some(-1.0)
    );
}

#[tokio::test]
async fn an_open_canary_breaker_rolls_back() {
    const ROUTE: &str = "breaker";
    let base = healthy_backend("base").await;
    let dir = state_dir();
    let rollback = r#"
[routes.rollout.rollback]
window = "30s"
min_requests = 1000
on_breaker_open = true
"#;
    // Nothing listens on port 1: every canary attempt is a connect error.
    let toml = config(
        ROUTE,
        &base.url(),
        "http://127.0.0.1:1",
        &rollout("", rollback),
        &dir.path().display().to_string(),
    )
    .replace(
        "[[routes.versions]]\nname = \"v1\"",
        "fallbacks = [\"v1\"]\n[[routes.versions]]\nname = \"v1\"",
    );
    let proxy = start_proxy(&toml).await;
    let (sent, _) = drive_until(&proxy, Duration::from_secs(20), async |r| {
        r["state"] == "rolled_back"
    })
    .await;
    let r = rollout_of(&proxy).await;
    assert_eq!(r["state"], "rolled_back", "after {sent} requests: {r}");
    assert_eq!(r["detail"]["reason"]["kind"], "breaker_open", "{r}");
}

#[tokio::test]
async fn pinned_requests_are_not_judged() {
    const ROUTE: &str = "pinned";
    let base = healthy_backend("base").await;
    let canary = healthy_backend("canary").await;
    let dir = state_dir();
    let toml = config(
        ROUTE,
        &base.url(),
        &canary.url(),
        &rollout("", ROLLBACK_ON_ERRORS),
        &dir.path().display().to_string(),
    );
    let proxy = start_proxy(&toml).await;
    let c = client();
    for i in 0..30 {
        let r = c
            .post(format!("{}/v1/chat", proxy.url()))
            .header("x-user-id", format!("tester-{i}"))
            .header("x-cutover-version", "v2")
            .body(CHAT)
            .send()
            .await
            .expect("request");
        assert_eq!(r.headers()["x-cutover-version"], "v2");
        r.bytes().await.expect("body");
    }
    assert_eq!(canary.stats().requests(), 30);
    // All 30 are written up (counted, and judged or not, in one step).
    wait_metric(
        &proxy,
        "cutover_requests_total",
        &[("route", ROUTE), ("version", "v2"), ("status", "2xx")],
        30.0,
    )
    .await;
    let r = rollout_of(&proxy).await;
    assert_eq!(
        r["canary"]["requests"], 0,
        "pinned requests were judged: {r}"
    );
    assert_eq!(r["state"], "canary");
    // Unpinned traffic is judged.
    drive_until(&proxy, Duration::ZERO, async |_| true).await;
    let r = rollout_of(&proxy).await;
    assert!(r["baseline"]["requests"].as_u64().unwrap_or(0) > 0, "{r}");
    // The step's stats by version name too (SPEC §10): the same figures.
    assert_eq!(r["versions"]["v1"], r["baseline"], "{r}");
    assert_eq!(r["versions"]["v2"], r["canary"], "{r}");
}

#[tokio::test]
async fn admin_actions_answer_404_and_409() {
    const ROUTE: &str = "actions";
    let base = healthy_backend("base").await;
    let canary = healthy_backend("canary").await;
    let dir = state_dir();
    let toml = config(
        ROUTE,
        &base.url(),
        &canary.url(),
        &rollout("", ROLLBACK_ON_ERRORS),
        &dir.path().display().to_string(),
    );
    let proxy = start_proxy(&toml).await;
    let r = client()
        .post(format!("{}/routes/nope/rollout/pause", proxy.admin_url()))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (code, body) = act(&proxy, ROUTE, "resume").await;
    assert_eq!(
        code,
        StatusCode::CONFLICT,
        "resume while not paused: {body}"
    );
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("resume")),
        "{body}"
    );
    let (code, body) = act(&proxy, ROUTE, "advance").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["rollout"]["step"], 1);
    // "200 with the new state" (SPEC §10), at the top as in the rollout.
    assert_eq!(body["state"], "canary", "{body}");
    assert_eq!(body["rollout"]["reason"], Value::Null, "{body}");
    let (code, body) = act(&proxy, ROUTE, "pause").await;
    assert_eq!(
        (code, body["state"].as_str()),
        (StatusCode::OK, Some("paused"))
    );
    assert_eq!(body["rollout"]["reason"], "paused by the operator");
    let (code, _) = act(&proxy, ROUTE, "resume").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(rollout_of(&proxy).await["canary_weight"], 50.0);
    let (code, body) = act(&proxy, ROUTE, "promote").await;
    assert_eq!(
        (code, body["rollout"]["state"].as_str()),
        (StatusCode::OK, Some("promoted"))
    );
    let (code, _) = act(&proxy, ROUTE, "advance").await;
    assert_eq!(
        code,
        StatusCode::CONFLICT,
        "nothing to advance to once promoted"
    );
    let (code, body) = act(&proxy, ROUTE, "abort").await;
    assert_eq!(
        (
            code,
            body["state"].as_str(),
            body["rollout"]["state"].as_str()
        ),
        (StatusCode::OK, Some("rolled_back"), Some("rolled_back"))
    );
    assert_eq!(
        body["rollout"]["reason"], "abort: aborted by the operator",
        "{body}"
    );
    let (code, _) = act(&proxy, ROUTE, "pause").await;
    assert_eq!(code, StatusCode::CONFLICT);
    let (code, body) = act(&proxy, ROUTE, "restart").await;
    assert_eq!(
        (code, body["rollout"]["state"].as_str()),
        (StatusCode::OK, Some("canary"))
    );
    assert_eq!(body["rollout"]["step"], 0);
}

/// Collects every JSON body POSTed to it.
async fn webhook_sink() -> (String, Arc<Mutex<Vec<Value>>>) {
    use http_body_util::BodyExt;
    let events = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sink = Arc::clone(&events);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let sink = Arc::clone(&sink);
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                                sink.lock().expect("lock").push(v);
                            }
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::new()),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}/hooks/rollout"), events)
}

#[tokio::test]
async fn the_webhook_receives_every_transition() {
    const ROUTE: &str = "hook";
    let base = healthy_backend("base").await;
    let canary = healthy_backend("canary").await;
    let (url, events) = webhook_sink().await;
    let dir = state_dir();
    let rollback = format!("{ROLLBACK_ON_ERRORS}webhook = \"{url}\"\n");
    let toml = config(
        ROUTE,
        &base.url(),
        &canary.url(),
        &rollout("", &rollback),
        &dir.path().display().to_string(),
    );
    let proxy = start_proxy(&toml).await;
    for action in ["advance", "pause", "resume", "abort", "restart"] {
        let (code, body) = act(&proxy, ROUTE, action).await;
        assert_eq!(code, StatusCode::OK, "{action}: {body}");
    }
    let got = eventually(Duration::from_secs(5), || {
        events.lock().expect("lock").len() >= 5
    })
    .await;
    let events = events.lock().expect("lock").clone();
    assert!(got, "{events:?}");
    let pairs: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap_or("").into(),
                e["to"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    let want = [
        ("canary", "canary"),
        ("canary", "paused"),
        ("paused", "canary"),
        ("canary", "rolled_back"),
        ("rolled_back", "canary"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(pairs, want, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e["route"] == ROUTE && e["time"].is_string())
    );
    assert_eq!(events[0]["step"], 1);
}

#[tokio::test]
async fn shadow_first_goes_live_when_the_shadow_is_good() {
    const ROUTE: &str = "sfgood";
    let base = healthy_backend("base").await;
    let canary = healthy_backend("canary").await;
    let dir = state_dir();
    let toml = config(
        ROUTE,
        &base.url(),
        &canary.url(),
        &rollout(
            r#"shadow_first = { min_duration = "1s", min_requests = 20 }"#,
            ROLLBACK_ON_ERRORS,
        ),
        &dir.path().display().to_string(),
    );
    let proxy = start_proxy(&toml).await;
    let r = rollout_of(&proxy).await;
    assert_eq!(
        (r["state"].as_str(), r["step"].as_i64()),
        (Some("shadowing"), Some(-1)),
        "{r}"
    );
    assert_eq!(r["canary_weight"], 0.0);
    // A live answer from the canary is only allowed once the state has
    // left shadowing (transitions here are one-way, so checking after the
    // answer is sound).
    let c = client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    loop {
        i += 1;
        let r = c
            .post(format!("{}/v1/chat", proxy.url()))
            .header("x-user-id", format!("user-{i}"))
            .body(CHAT)
            .send()
            .await
            .expect("request");
        let live_canary = r.headers()["x-cutover-version"] == "v2";
        r.bytes().await.expect("body");
        if live_canary || i % 10 == 0 {
            let state = rollout_of(&proxy).await["state"].clone();
            assert!(
                !(live_canary && state == "shadowing"),
                "live traffic reached the canary while shadowing"
            );
            if state != "shadowing" {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "still shadowing");
    }
    let mirrored = canary.stats().records();
    assert!(!mirrored.is_empty());
    assert!(
        mirrored
            .iter()
            .take(10)
            .all(|m| m.header("x-cutover-shadow") == Some("1"))
    );
    let r = rollout_of(&proxy).await;
    assert_eq!(
        (r["state"].as_str(), r["step"].as_i64()),
        (Some("canary"), Some(0)),
        "{r}"
    );
}

#[tokio::test]
async fn shadow_first_rolls_back_when_the_shadow_is_bad() {
    const ROUTE: &str = "sfbad";
    let base = healthy_backend("base").await;
    let bad = backend(MockArgs {
        status: Some(StatusCode::INTERNAL_SERVER_ERROR),
        ..MockArgs::new(loopback0())
    })
    .await;
    let dir = state_dir();
    let toml = config(
        ROUTE,
        &base.url(),
        &bad.url(),
        &rollout(
            r#"shadow_first = { min_duration = "1s", min_requests = 20 }"#,
            ROLLBACK_ON_ERRORS,
        ),
        &dir.path().display().to_string(),
    );
    let proxy = start_proxy(&toml).await;
    let (_, live_on_canary) = drive_until(&proxy, Duration::from_secs(20), async |r| {
        r["state"] != "shadowing"
    })
    .await;
    // Shadowing fails straight to rolled_back: the canary never goes live.
    assert_eq!(live_on_canary, 0);
    let r = rollout_of(&proxy).await;
    assert_eq!(r["state"], "rolled_back", "{r}");
    // The client never saw the shadow's 500s.
    assert!(bad.stats().requests() > 0);
}

#[tokio::test]
async fn pause_survives_a_restart_of_the_binary_on_the_same_step() {
    const ROUTE: &str = "paused";
    let base = healthy_backend("base").await;
    let canary = healthy_backend("canary").await;
    let dir = state_dir();
    // Held here across the restart and handed to each process, as a
    // socket unit keeps them: connections queue while neither serves.
    let (sockets, port, admin_port) = traffic_and_admin();
    let toml = config(
        ROUTE,
        &base.url(),
        &canary.url(),
        &rollout("", ROLLBACK_ON_ERRORS),
        &dir.path().join("state").display().to_string(),
    )
    .replace(
        "[server]\nlisten = \"127.0.0.1:0\"",
        &format!("[server]\nlisten = \"127.0.0.1:{port}\""),
    )
    .replace(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        &format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\""),
    );
    let path = dir.path().join("cutover.toml");
    std::fs::write(&path, &toml).expect("write");
    let admin = format!("http://127.0.0.1:{admin_port}");
    let serve = || {
        let handed = sockets
            .iter()
            .map(|s| s.try_clone().expect("dup socket"))
            .collect();
        Binary::spawn_with(
            &[
                "serve",
                "--config",
                path.to_str().expect("utf-8"),
                "--no-watch",
            ],
            &[("CUTOVER_WORKERS", "1")],
            handed,
        )
    };
    let rollout_now = |admin: String| async move {
        let s: Value = client()
            .get(format!("{admin}/status"))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        s["routes"][0]["rollout"].clone()
    };

    let mut first = serve();
    assert!(wait_ready(([127, 0, 0, 1], admin_port).into(), Duration::from_secs(10)).await);
    for action in ["advance", "pause"] {
        let (code, out, err) =
            run_binary(&["rollout", action, ROUTE, "--admin", &admin], &[]).await;
        assert_eq!(code, Some(0), "{action}: {out}{err}");
        assert!(out.contains(ROUTE), "{out}");
    }
    let r = rollout_now(admin.clone()).await;
    assert_eq!(r["state"], "paused", "{r}");
    assert_eq!(
        r["detail"]["stage"],
        serde_json::json!({"stage": "canary", "step": 1}),
        "{r}"
    );
    first.signal("TERM");
    assert!(
        first.wait_timeout(Duration::from_secs(10)).is_some(),
        "drained and exited"
    );

    let _second = serve();
    assert!(wait_ready(([127, 0, 0, 1], admin_port).into(), Duration::from_secs(10)).await);
    let r = rollout_now(admin.clone()).await;
    assert_eq!(r["state"], "paused", "the pause survived the restart: {r}");
    assert_eq!(r["detail"]["stage"]["step"], 1);
    assert_eq!(r["canary_weight"], 50.0);
    let (code, out, err) = run_binary(&["rollout", "resume", ROUTE, "--admin", &admin], &[]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let r = rollout_now(admin.clone()).await;
    assert_eq!(
        (r["state"].as_str(), r["step"].as_i64()),
        (Some("canary"), Some(1)),
        "{r}"
    );
    // An unknown route through the CLI: exit 1 with the API's message.
    let (code, _, err) = run_binary(&["rollout", "pause", "nope", "--admin", &admin], &[]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("404"), "{err}");
}

/// A rollout removed from the config takes its `cutover_rollout_*` series
/// with it: a stale `state="canary"` would keep alerts firing for a
/// rollout that no longer exists. Other routes' series stay.
#[tokio::test]
async fn a_rollout_removed_from_the_config_takes_its_series_with_it() {
    const ROUTE: &str = "removed";
    let base = healthy_backend("base").await;
    let canary = healthy_backend("canary").await;
    let dir = state_dir();
    let dir_text = dir.path().display().to_string();
    let with = config(
        ROUTE,
        &base.url(),
        &canary.url(),
        &rollout("", ROLLBACK_ON_ERRORS),
        &dir_text,
    );
    let proxy = start_proxy(&with).await;
    let text = scrape(&proxy).await;
    assert_eq!(
        metric(&text, "cutover_rollout_step", &[("route", ROUTE)]),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "cutover_rollout_state",
            &[("route", ROUTE), ("state", "canary")]
        ),
        Some(1.0)
    );
    assert!(
        text.contains("# TYPE cutover_rollout_state gauge"),
        "{text}"
    );

    // Same route, no rollout (the canary keeps weight 0).
    let without = config(ROUTE, &base.url(), &canary.url(), "", &dir_text);
    proxy.reload_with(&without).await;
    let text = scrape(&proxy).await;
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("cutover_rollout_") && l.contains(&format!("route=\"{ROUTE}\""))),
        "stale rollout series:\n{text}"
    );
    assert!(proxy.gateway.rollouts.status(ROUTE).is_none());

    // And back: the series return.
    proxy.reload_with(&with).await;
    let text = scrape(&proxy).await;
    assert_eq!(
        metric(&text, "cutover_rollout_step", &[("route", ROUTE)]),
        Some(0.0)
    );
}
