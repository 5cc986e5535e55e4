//! Shadow mirroring over real sockets (SPEC §4): the mirrored copy, its
//! isolation from the client, the in-flight bound, stickiness and answer
//! comparison. Metrics are process-global within this binary, so every test
//! uses its own route names.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use cutover::mock::{MockArgs, MockHandle};
use http::StatusCode;

const SHADOW_REQUESTS: &str = "cutover_shadow_requests_total";
const SHADOW_COMPARE: &str = "cutover_shadow_compare_total";

/// A route `route` on `/{route}/` served by `primary`, with the given
/// `[[routes.shadows]]` blocks (each names its upstream, declared in
/// `upstreams`).
fn config(route: &str, primary: &str, upstreams: &str, shadows: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "1s"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
[[upstreams]]
name = "{route}-primary"
url = "{primary}"
{upstreams}
[[routes]]
name = "{route}"
match = {{ path_prefix = "/{route}/" }}
sticky = ["header:x-user-id"]
[[routes.versions]]
name = "v1"
upstream = "{route}-primary"
weight = 100.0
{shadows}
"#
    )
}

fn upstream(name: &str, url: &str) -> String {
    format!("[[upstreams]]\nname = \"{name}\"\nurl = \"{url}\"\n")
}

async fn post(
    proxy: &Proxy,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client()
        .post(format!("{}{path}", proxy.url()))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("request")
}

/// Wait until no mirror of `route` is in flight. A request takes its
/// mirrors' slots before its own answer is sent, and a mirror gives its
/// slot back once the shadow has answered it: with every client answered,
/// zero in flight means every mirror has reached its shadow.
async fn mirrors_settled(proxy: &Proxy, route: &str) {
    let url = format!("{}/status", proxy.admin_url());
    let settled = eventually_async(Duration::from_secs(5), || async {
        let status: serde_json::Value = match client().get(&url).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => return false,
        };
        status["routes"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == route))
            .and_then(|r| r["shadows"].as_array())
            .is_some_and(|s| s.iter().all(|s| s["in_flight"] == 0))
    })
    .await;
    assert!(settled, "mirrors of {route} still in flight");
}

async fn shadow_requests(mock: &MockHandle, want: u64) {
    assert!(
        eventually(Duration::from_secs(5), || mock.stats().requests() >= want).await,
        "the shadow saw {} requests, want {want}",
        mock.stats().requests()
    );
}

#[tokio::test]
async fn the_mirror_carries_the_body_and_its_own_headers() {
    let primary = healthy_backend("primary").await;
    let shadow = healthy_backend("shadow").await;
    let toml = config(
        "mirror",
        &primary.url(),
        &upstream("mirror-shadow", &shadow.url()),
        r#"
[[routes.shadows]]
name = "v3"
upstream = "mirror-shadow"
percent = 100.0
max_in_flight = 8
set_json = { model = "shadow-model" }
set_headers = { x-shadow-key = "k3" }
"#,
    );
    let proxy = start_proxy(&toml).await;
    let body =
        r#"{"model":"m","temperature":0.5,"messages":[{"role":"user","content":"hello there"}]}"#;
    let r = post(
        &proxy,
        "/mirror/chat",
        body,
        &[("x-request-id", "req-mirror-1")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("x-cutover-shadow").is_none());
    assert_eq!(r.headers()["x-cutover-version"], "v1");
    assert!(r.text().await.expect("body").contains("Hello from primary"));

    shadow_requests(&shadow, 1).await;
    let mirrored = shadow.stats().last_record().expect("record");
    assert_eq!(mirrored.header("x-cutover-shadow"), Some("1"));
    assert_eq!(mirrored.header("x-cutover-version"), Some("v3"));
    assert_eq!(mirrored.header("x-request-id"), Some("req-mirror-1"));
    assert_eq!(mirrored.header("x-shadow-key"), Some("k3"));
    assert_eq!(mirrored.path, "/mirror/chat");
    let sent: serde_json::Value = serde_json::from_slice(&mirrored.body).expect("json");
    assert_eq!(sent["model"], "shadow-model");
    assert_eq!(sent["temperature"], 0.5);
    assert_eq!(sent["messages"][0]["content"], "hello there");

    let served = primary.stats().last_record().expect("record");
    assert_eq!(served.header("x-cutover-shadow"), None);
    assert_eq!(served.header("x-cutover-version"), Some("v1"));
    assert_eq!(served.header("x-shadow-key"), None);
    let sent: serde_json::Value = serde_json::from_slice(&served.body).expect("json");
    assert_eq!(sent["model"], "m");

    wait_metric(
        &proxy,
        SHADOW_REQUESTS,
        &[("route", "mirror"), ("shadow", "v3"), ("result", "ok")],
        1.0,
    )
    .await;
    // Usage from the shadow's answer is counted as the shadow's.
    let text = scrape(&proxy).await;
    let tokens = metric(
        &text,
        "cutover_shadow_tokens_total",
        &[("route", "mirror"), ("shadow", "v3"), ("kind", "input")],
    );
    assert!(tokens.is_some_and(|t| t > 0.0), "{tokens:?}");
}

#[tokio::test]
async fn a_client_forging_the_shadow_header_gets_it_stripped() {
    let primary = healthy_backend("primary").await;
    let toml = config("forge", &primary.url(), "", "");
    let proxy = start_proxy(&toml).await;
    let r = post(&proxy, "/forge/x", CHAT, &[("x-cutover-shadow", "1")]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let served = primary.stats().last_record().expect("record");
    assert_eq!(served.header("x-cutover-shadow"), None);
}

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test]
async fn a_hung_shadow_neither_slows_the_client_nor_queues() {
    let primary = healthy_backend("primary").await;
    let hung = backend(MockArgs {
        hang: true,
        ..MockArgs::new(loopback0())
    })
    .await;
    // Two routes on one proxy and one primary: /plain/ without a shadow,
    // /hung/ with a shadow that never answers.
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "1s"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
[[upstreams]]
name = "hang-primary"
url = "{}"
[[upstreams]]
name = "hang-shadow"
url = "{}"
[[routes]]
name = "plain"
match = {{ path_prefix = "/plain/" }}
[[routes.versions]]
name = "v1"
upstream = "hang-primary"
weight = 100.0
[[routes]]
name = "hung"
match = {{ path_prefix = "/hung/" }}
[[routes.versions]]
name = "v1"
upstream = "hang-primary"
weight = 100.0
[[routes.shadows]]
name = "v3"
upstream = "hang-shadow"
percent = 100.0
max_in_flight = 2
timeout = "30s"
"#,
        primary.url(),
        hung.url()
    );
    let proxy = start_proxy(&toml).await;
    let c = client();
    let timed = |path: &'static str| {
        let c = c.clone();
        let url = format!("{}{path}", proxy.url());
        async move {
            let mut samples = Vec::new();
            for _ in 0..40 {
                let t = Instant::now();
                let r = c.post(&url).body(CHAT).send().await.expect("request");
                assert_eq!(r.status(), StatusCode::OK);
                r.bytes().await.expect("body");
                samples.push(t.elapsed());
            }
            samples
        }
    };
    let plain = p50(timed("/plain/x").await);
    let hung_p50 = p50(timed("/hung/x").await);
    // A client that waited on the shadow would wait its 30 s timeout.
    assert!(
        hung_p50 < plain * 3 + Duration::from_millis(5),
        "p50 with a hung shadow {hung_p50:?}, without {plain:?}"
    );

    let status: serde_json::Value = reqwest::get(format!("{}/status", proxy.admin_url()))
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    let route = status["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "hung"))
        .expect("route");
    let shadow = &route["shadows"][0];
    assert_eq!(shadow["in_flight"], 2, "{shadow}");
    assert_eq!(shadow["dropped"], 38, "{shadow}");
    wait_metric(
        &proxy,
        SHADOW_REQUESTS,
        &[("route", "hung"), ("shadow", "v3"), ("result", "dropped")],
        38.0,
    )
    .await;
    assert_eq!(
        hung.stats().requests(),
        2,
        "only max_in_flight mirrors were sent"
    );

    // Shutdown waits for mirrors only within its grace (1 s), not for the
    // shadow's 30 s timeout.
    let t = Instant::now();
    proxy.shutdown().await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test]
async fn a_failing_shadow_is_invisible_to_the_client() {
    let primary = healthy_backend("primary").await;
    let failing = backend(MockArgs {
        name: "SHADOWNAME".into(),
        status: Some(StatusCode::INTERNAL_SERVER_ERROR),
        ..MockArgs::new(loopback0())
    })
    .await;
    let toml = config(
        "fail500",
        &primary.url(),
        &upstream("fail500-shadow", &failing.url()),
        r#"
[[routes.shadows]]
name = "v3"
upstream = "fail500-shadow"
percent = 100.0
max_in_flight = 8
"#,
    );
    let proxy = start_proxy(&toml).await;
    for _ in 0..5 {
        let r = post(&proxy, "/fail500/x", CHAT, &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-cutover-upstream"], "fail500-primary");
        let text = r.text().await.expect("body");
        assert!(text.contains("Hello from primary"), "{text}");
    }
    wait_metric(
        &proxy,
        SHADOW_REQUESTS,
        &[
            ("route", "fail500"),
            ("shadow", "v3"),
            ("result", "failure"),
        ],
        5.0,
    )
    .await;
    let status: serde_json::Value = reqwest::get(format!("{}/status", proxy.admin_url()))
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["routes"][0]["shadows"][0]["failure_share"], 1.0);
}

#[tokio::test]
async fn shadow_bytes_never_reach_the_client() {
    let primary = healthy_backend("primary").await;
    // A shadow that streams slowly and a lot: its bytes must go nowhere.
    let shadow = backend(MockArgs {
        name: "SHADOWNAME".into(),
        chunks: 20,
        chunk_delay: Duration::from_millis(5),
        ..MockArgs::new(loopback0())
    })
    .await;
    let toml = config(
        "bytes",
        &primary.url(),
        &upstream("bytes-shadow", &shadow.url()),
        r#"
[[routes.shadows]]
name = "v3"
upstream = "bytes-shadow"
percent = 100.0
max_in_flight = 64
"#,
    );
    let proxy = start_proxy(&toml).await;
    for body in [CHAT, CHAT_STREAM, CHAT, CHAT_STREAM] {
        let r = post(&proxy, "/bytes/x", body, &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        for (name, value) in r.headers() {
            let v = value.to_str().unwrap_or("");
            assert!(!v.contains("SHADOWNAME"), "{name}: {v}");
        }
        assert_eq!(r.headers()["x-mock-name"], "primary");
        let streamed = r
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let bytes = r.bytes().await.expect("body");
        let doc = if streamed {
            cutover::shadow::compare::reassemble_sse(&bytes).expect("a chat stream")
        } else {
            serde_json::from_slice(&bytes).expect("json")
        };
        assert_eq!(
            doc["choices"][0]["message"]["content"],
            "Hello from primary: hello there"
        );
    }
    shadow_requests(&shadow, 4).await;
}

#[tokio::test]
async fn percent_is_sticky_by_the_route_key() {
    let primary = healthy_backend("primary").await;
    let shadow = healthy_backend("shadow").await;
    let shadows = |percent: f64| {
        format!(
            r#"
[[routes.shadows]]
name = "v3"
upstream = "sticky-shadow"
percent = {percent:.1}
max_in_flight = 256
"#
        )
    };
    let upstreams = upstream("sticky-shadow", &shadow.url());
    let proxy = start_proxy(&config(
        "sticky",
        &primary.url(),
        &upstreams,
        &shadows(20.0),
    ))
    .await;
    // The mock keeps its last 64 requests: 100 users at 20 % then 40 %
    // stay under that per pass.
    let users: Vec<String> = (0..100).map(|i| format!("user-{i}")).collect();
    let mirrored_users = |count: usize| {
        let records = shadow.stats().records();
        records[records.len() - count..]
            .iter()
            .filter_map(|r| r.header("x-user-id").map(str::to_string))
            .collect::<Vec<_>>()
    };

    let mut passes: Vec<HashSet<String>> = Vec::new();
    for pass in 0..2 {
        // The second pass goes in reverse order: stickiness is by key, not
        // by arrival.
        let order: Vec<&String> = if pass == 0 {
            users.iter().collect()
        } else {
            users.iter().rev().collect()
        };
        let before = shadow.stats().requests();
        let mut sent = 0;
        for u in order {
            let r = post(&proxy, "/sticky/x", CHAT, &[("x-user-id", u)]).await;
            assert_eq!(r.status(), StatusCode::OK);
            sent += 1;
        }
        assert_eq!(sent, 100);
        // Let the mirrors land before reading the set.
        mirrors_settled(&proxy, "sticky").await;
        let after = shadow.stats().requests();
        let got: Vec<String> = mirrored_users((after - before) as usize);
        let set: HashSet<String> = got.into_iter().collect();
        assert_eq!(
            set.len() as u64,
            after - before,
            "each user at most once per pass"
        );
        passes.push(set);
    }
    assert_eq!(
        passes[0], passes[1],
        "the same users are mirrored every time"
    );
    let share = passes[0].len() as f64 / 100.0;
    assert!((0.08..=0.34).contains(&share), "mirrored share {share}");

    // Raising the percent only adds users.
    proxy
        .reload_with(&config(
            "sticky",
            &primary.url(),
            &upstreams,
            &shadows(40.0),
        ))
        .await;
    let before = shadow.stats().requests();
    for u in &users {
        post(&proxy, "/sticky/x", CHAT, &[("x-user-id", u)]).await;
    }
    mirrors_settled(&proxy, "sticky").await;
    let count = (shadow.stats().requests() - before) as usize;
    let wider: HashSet<String> = mirrored_users(count).into_iter().collect();
    assert!(
        passes[0].is_subset(&wider),
        "users left the mirror when it grew"
    );
    assert!(wider.len() > passes[0].len());
}

#[tokio::test]
async fn compare_counts_tool_call_names_on_json_and_sse() {
    let primary = healthy_backend("primary").await;
    let same = healthy_backend("same-tool").await;
    let other = healthy_backend("other-tool").await;
    let upstreams = format!(
        "{}{}",
        upstream("cmp-same", &same.url()),
        upstream("cmp-other", &other.url())
    );
    let toml = config(
        "cmp",
        &primary.url(),
        &upstreams,
        r#"
[[routes.shadows]]
name = "same"
upstream = "cmp-same"
percent = 100.0
max_in_flight = 8
compare = ["/choices/0/message/tool_calls/0/function/name", "/choices/0/message/role", "/absent/on/both"]

[[routes.shadows]]
name = "other"
upstream = "cmp-other"
percent = 100.0
max_in_flight = 8
compare = ["/choices/0/message/tool_calls/0/function/name"]
set_json = { tools = [{ type = "function", function = { name = "refund_order" } }] }
"#,
    );
    let proxy = start_proxy(&toml).await;
    let tools = r#""tools":[{"type":"function","function":{"name":"lookup_order"}}]"#;
    let json_body = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"where is my order"}}],{tools}}}"#
    );
    let sse_body = format!(
        r#"{{"model":"m","stream":true,"messages":[{{"role":"user","content":"where is my order"}}],{tools}}}"#
    );
    for body in [&json_body, &sse_body] {
        let r = post(&proxy, "/cmp/x", body, &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        let text = r.text().await.expect("body");
        assert!(text.contains("lookup_order"), "{text}");
    }
    let labels = |shadow: &'static str, result: &'static str| {
        [("route", "cmp"), ("shadow", shadow), ("result", result)]
    };
    wait_metric(&proxy, SHADOW_COMPARE, &labels("same", "match"), 2.0).await;
    wait_metric(&proxy, SHADOW_COMPARE, &labels("other", "mismatch"), 2.0).await;
    let text = scrape(&proxy).await;
    assert_eq!(
        metric(&text, SHADOW_COMPARE, &labels("same", "mismatch")),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, SHADOW_COMPARE, &labels("other", "match")),
        Some(0.0)
    );
    // The streamed mirror really streamed: the shadow got stream:true.
    let last = other.stats().last_record().expect("record");
    let sent: serde_json::Value = serde_json::from_slice(&last.body).expect("json");
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["tools"][0]["function"]["name"], "refund_order");

    let status: serde_json::Value = reqwest::get(format!("{}/status", proxy.admin_url()))
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    let shadows = &status["routes"][0]["shadows"];
    assert_eq!(shadows[0]["match_share"], 1.0);
    assert_eq!(shadows[1]["match_share"], 0.0);
}

/// Through the real binary: a request with a compared shadow on a caching
/// route writes a request line (with its cache result) and a shadow line
/// (same request id, the shadow's name, deps and compare result).
#[tokio::test]
async fn the_access_log_has_a_shadow_line_beside_the_request_line() {
    let primary = healthy_backend("primary").await;
    let shadow = healthy_backend("shadow").await;
    let (sockets, port, admin) = traffic_and_admin();
    let toml = config(
        "logged",
        &primary.url(),
        &upstream("logged-shadow", &shadow.url()),
        r#"
[[routes.shadows]]
name = "v3"
upstream = "logged-shadow"
percent = 100.0
max_in_flight = 8
compare = ["/choices/0/message/role"]
deps = { prompt = "support@3" }
"#,
    )
    .replace(
        "listen = \"127.0.0.1:0\"\nshutdown_grace",
        &format!("listen = \"127.0.0.1:{port}\"\nshutdown_grace"),
    )
    .replace(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        &format!("[admin]\nlisten = \"127.0.0.1:{admin}\""),
    )
    .replace("access_log = false", "access_log = true\nformat = \"json\"")
    .replace(
        "sticky = [\"header:x-user-id\"]",
        "sticky = [\"header:x-user-id\"]\ncache = { ttl = \"60s\", deterministic_only = false }",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).expect("write");
    let mut bin = Binary::spawn_with(
        &["serve", "--config", path.to_str().expect("utf8")],
        &[],
        sockets,
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(wait_ready(([127, 0, 0, 1], admin).into(), Duration::from_secs(10)).await);
    let r = client()
        .post(format!("http://{addr}/logged/x"))
        .header("x-request-id", "req-logged-1")
        .header("x-user-id", "someone")
        .body(CHAT)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    r.bytes().await.expect("body");
    shadow_requests(&shadow, 1).await;
    // The shadow line is written once its comparison is done (and the
    // drain waits for the mirror to end).
    let metrics_url = format!("http://127.0.0.1:{admin}/metrics");
    let compared = eventually_async(Duration::from_secs(5), || async {
        let Ok(r) = client().get(&metrics_url).send().await else {
            return false;
        };
        let text = r.text().await.unwrap_or_default();
        ["match", "mismatch"].iter().any(|result| {
            metric(
                &text,
                SHADOW_COMPARE,
                &[("route", "logged"), ("shadow", "v3"), ("result", result)],
            ) == Some(1.0)
        })
    })
    .await;
    assert!(compared, "the shadow's comparison did not end");
    bin.signal("TERM");
    let (status, out) = tokio::task::spawn_blocking(move || {
        let status = bin.wait_timeout(Duration::from_secs(10));
        let mut out = String::new();
        if let Some(mut stdout) = bin.child.stdout.take() {
            use std::io::Read;
            let _ = stdout.read_to_string(&mut out);
        }
        (status, out)
    })
    .await
    .expect("join");
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    let request = lines
        .iter()
        .find(|l| l["kind"] == "request")
        .expect("request line");
    let mirror = lines
        .iter()
        .find(|l| l["kind"] == "shadow")
        .expect("shadow line");
    assert_eq!(request["request_id"], "req-logged-1");
    assert_eq!(request["version"], "v1");
    assert_eq!(request["cache"], "miss");
    assert_eq!(mirror["request_id"], "req-logged-1");
    assert_eq!(mirror["version"], "v3");
    assert_eq!(mirror["upstream"], "logged-shadow");
    assert_eq!(mirror["deps"]["prompt"], "support@3");
    assert_eq!(mirror["status"], 200);
    assert_eq!(mirror["compare"], "match");
    assert_eq!(mirror["key_hash"], request["key_hash"]);
    assert!(mirror["input_tokens"].as_u64().unwrap_or(0) > 0, "{mirror}");
    assert!(!out.contains("someone"), "raw sticky key logged");
}
