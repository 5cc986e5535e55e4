//! Clients cannot steer the rollout (SPEC §2, §3): feedback with
//! `feedback_token_env` needs the bearer token, a pin with `pin_token_env`
//! needs `x-cutover-pin-token` (otherwise the request is split as usual,
//! and the token never reaches an upstream), and the feedback endpoint is
//! no way around `max_in_flight` or `max_body`.

mod common;

use std::time::Duration;

use common::*;
use cutover::mock::MockArgs;

fn config(a: &str, b: &str, server_extra: &str, route_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{server_extra}
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
[[upstreams]]
name = "a"
url = "{a}"
[[upstreams]]
name = "b"
url = "{b}"
[[routes]]
name = "r"
match = {{ path_prefix = "/v1/" }}
sticky = ["header:x-user-id"]
pin_header = "x-cutover-version"
{route_extra}
[[routes.versions]]
name = "v1"
upstream = "a"
weight = 100.0
[[routes.versions]]
name = "v2"
upstream = "b"
weight = 0.0
"#
    )
}

async fn chat(proxy: &Proxy, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client()
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .header("x-user-id", "user-1")
        .body(CHAT);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("response")
}

async fn feedback(proxy: &Proxy, auth: Option<&str>, body: String) -> reqwest::Response {
    let mut req = client()
        .post(format!("{}/_cutover/feedback", proxy.url()))
        .body(body);
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    req.send().await.expect("response")
}

#[tokio::test]
async fn a_pin_needs_the_pin_token_and_the_token_is_never_forwarded() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy_with_env(
        &config(&a.url(), &b.url(), "", r#"pin_token_env = "PIN_TOKEN""#),
        &[("PIN_TOKEN", "letmein")],
    )
    .await;
    // No token, or a wrong one: the pin is ignored, the split decides.
    for headers in [
        vec![("x-cutover-version", "v2")],
        vec![
            ("x-cutover-version", "v2"),
            ("x-cutover-pin-token", "guess"),
        ],
        vec![
            ("x-cutover-version", "v2"),
            ("x-cutover-pin-token", "letmei"),
        ],
    ] {
        let r = chat(&proxy, &headers).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-cutover-version"], "v1", "{headers:?}");
    }
    assert_eq!(b.stats().requests(), 0);
    // The token: pinned.
    let r = chat(
        &proxy,
        &[
            ("x-cutover-version", "v2"),
            ("x-cutover-pin-token", "letmein"),
        ],
    )
    .await;
    assert_eq!(r.headers()["x-cutover-version"], "v2");
    let seen = b.stats().last_record().expect("b got the pinned request");
    assert!(
        seen.header("x-cutover-pin-token").is_none(),
        "the token was forwarded"
    );
    let seen = a.stats().last_record().expect("a got the others");
    assert!(
        seen.header("x-cutover-pin-token").is_none(),
        "the token was forwarded"
    );
    let text = scrape(&proxy).await;
    assert_eq!(
        metric(
            &text,
            "cutover_requests_total",
            &[("route", "r"), ("version", "v2"), ("status", "2xx")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn feedback_needs_the_bearer_token() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy_with_env(
        &config(
            &a.url(),
            &b.url(),
            r#"feedback_token_env = "FEEDBACK_TOKEN""#,
            "",
        ),
        &[("FEEDBACK_TOKEN", "server-side")],
    )
    .await;
    let served = chat(&proxy, &[]).await;
    let id = served.headers()["x-request-id"]
        .to_str()
        .expect("id")
        .to_string();
    let vote = format!(r#"{{"request_id": "{id}", "outcome": "failure"}}"#);
    for auth in [None, Some("Bearer wrong"), Some("Basic server-side")] {
        let r = feedback(&proxy, auth, vote.clone()).await;
        assert_eq!(r.status(), 401, "{auth:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
    }
    let text = scrape(&proxy).await;
    assert_eq!(
        metric(
            &text,
            "cutover_outcomes_total",
            &[
                ("route", "r"),
                ("version", "v1"),
                ("outcome", "failure"),
                ("source", "feedback")
            ]
        )
        .unwrap_or(0.0),
        0.0,
        "an unauthenticated vote counted"
    );
    let r = feedback(&proxy, Some("Bearer server-side"), vote.clone()).await;
    assert_eq!(r.status(), 200);
    wait_metric(
        &proxy,
        "cutover_outcomes_total",
        &[
            ("route", "r"),
            ("version", "v1"),
            ("outcome", "failure"),
            ("source", "feedback"),
        ],
        1.0,
    )
    .await;
}

#[tokio::test]
async fn feedback_stays_behind_max_in_flight_and_max_body() {
    let slow = backend(MockArgs {
        name: "slow".into(),
        latency: Duration::from_millis(1500),
        ..MockArgs::new(loopback0())
    })
    .await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy(&config(
        &slow.url(),
        &b.url(),
        "max_in_flight = 1\nmax_body = 100",
        "",
    ))
    .await;
    let busy = tokio::spawn({
        let url = format!("{}/v1/chat/completions", proxy.url());
        async move { client().post(url).body("{}").send().await.expect("busy") }
    });
    assert!(eventually(Duration::from_secs(2), || slow.stats().requests() == 1).await);
    let vote = r#"{"request_id": "x", "outcome": "success"}"#.to_string();
    let shed = feedback(&proxy, None, vote.clone()).await;
    assert_eq!(shed.status(), 503, "feedback went around max_in_flight");
    assert!(shed.headers().contains_key("retry-after"));
    assert_eq!(busy.await.expect("busy").status(), 200);
    // Within max_in_flight again, but past max_body (100 bytes).
    let big = format!(
        r#"{{"request_id": "x", "outcome": "success", "note": "{}"}}"#,
        "n".repeat(200)
    );
    assert_eq!(feedback(&proxy, None, big).await.status(), 413);
    assert_eq!(feedback(&proxy, None, vote).await.status(), 404);
}

#[tokio::test]
async fn a_missing_token_variable_is_a_config_error() {
    let dir = tempfile::tempdir().expect("dir");
    for (text, key) in [
        (
            config(
                "http://127.0.0.1:9",
                "http://127.0.0.1:9",
                r#"feedback_token_env = "CUTOVER_TEST_UNSET_FEEDBACK_TOKEN""#,
                "",
            ),
            "server.feedback_token_env",
        ),
        (
            config(
                "http://127.0.0.1:9",
                "http://127.0.0.1:9",
                "",
                r#"pin_token_env = "CUTOVER_TEST_UNSET_PIN_TOKEN""#,
            ),
            "routes[0].pin_token_env",
        ),
    ] {
        let path = dir.path().join("cutover.toml");
        std::fs::write(&path, text).expect("write");
        let (code, _out, err) =
            run_binary(&["check", "--config", path.to_str().expect("utf-8")], &[]).await;
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(key) && err.contains("is not set"), "{err}");
    }
}
