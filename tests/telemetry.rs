//! Metrics after known traffic, tokens and cost for JSON and streamed
//! responses, outcomes from the upstream header and from client feedback,
//! and the access log's contents.

mod common;

use std::time::Duration;

use common::*;
use cutover::mock::{MockArgs, Outcome};

/// One route named `route` on `url`, priced at 2 / 8 USD per M tokens.
fn priced(route: &str, url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
[[upstreams]]
name = "{route}-up"
url = "{url}"
[[routes]]
name = "{route}"
sticky = ["header:x-user-id"]
[[routes.versions]]
name = "v1"
upstream = "{route}-up"
weight = 100.0
cost = {{ input_per_mtok = 2.0, output_per_mtok = 8.0 }}
"#
    )
}

/// The binary serving [`priced`]`(route, url)` with a JSON access log on
/// stdout, its config (edited by `edit`) written to `dir`: the binary, its
/// traffic port and its admin port.
fn spawn_logged(
    route: &str,
    url: &str,
    dir: &std::path::Path,
    edit: impl FnOnce(String) -> String,
) -> (Binary, u16, u16) {
    let (sockets, port, admin) = traffic_and_admin();
    let config = on_ports(&priced(route, url), port, admin)
        .replace("access_log = false", "access_log = true\nformat = \"json\"");
    let path = dir.join("c.toml");
    std::fs::write(&path, edit(config)).expect("write");
    let bin = Binary::spawn_with(
        &["serve", "--config", path.to_str().expect("utf8")],
        &[],
        sockets,
    );
    (bin, port, admin)
}

fn usage_of(json: &serde_json::Value) -> (f64, f64) {
    (
        json["usage"]["prompt_tokens"].as_f64().unwrap_or(-1.0),
        json["usage"]["completion_tokens"].as_f64().unwrap_or(-1.0),
    )
}

#[tokio::test]
async fn tokens_and_cost_from_json_and_sse_responses() {
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&priced("tok", &a.url())).await;
    let c = client();
    // JSON: the usage block of the body.
    let json: serde_json::Value = c
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .body(CHAT)
        .send()
        .await
        .expect("response")
        .json()
        .await
        .expect("json");
    let (input_json, output_json) = usage_of(&json);
    assert!(input_json > 0.0 && output_json > 0.0);
    // SSE: the usage chunk at the end of the stream.
    let sse = c
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .body(CHAT_STREAM)
        .send()
        .await
        .expect("response")
        .text()
        .await
        .expect("text");
    let usage_line = sse
        .lines()
        .find(|l| l.contains("\"usage\"") && l.starts_with("data: "))
        .expect("usage chunk");
    let chunk: serde_json::Value =
        serde_json::from_str(&usage_line["data: ".len()..]).expect("json");
    let (input_sse, output_sse) = usage_of(&chunk);

    let input = input_json + input_sse;
    let output = output_json + output_sse;
    let labels = |kind| [("route", "tok"), ("version", "v1"), ("kind", kind)];
    let m = scrape(&proxy).await;
    assert_eq!(
        metric(&m, "cutover_tokens_total", &labels("input")),
        Some(input),
        "{m}"
    );
    assert_eq!(
        metric(&m, "cutover_tokens_total", &labels("output")),
        Some(output)
    );
    let cost = metric(
        &m,
        "cutover_cost_usd_total",
        &[("route", "tok"), ("version", "v1")],
    )
    .expect("cost");
    let expected = (input * 2.0 + output * 8.0) / 1e6;
    assert!(
        (cost - expected).abs() < 1e-12,
        "cost {cost} expected {expected}"
    );
    assert_eq!(
        metric(
            &m,
            "cutover_requests_total",
            &[("route", "tok"), ("version", "v1"), ("status", "2xx")]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &m,
            "cutover_upstream_requests_total",
            &[("upstream", "tok-up"), ("result", "ok")]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &m,
            "cutover_route_weight",
            &[("route", "tok"), ("version", "v1")]
        ),
        Some(100.0)
    );
    assert_eq!(
        metric(&m, "cutover_overhead_seconds_count", &[("route", "tok")]),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &m,
            "cutover_request_duration_seconds_count",
            &[("route", "tok"), ("version", "v1")]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &m,
            "cutover_time_to_first_byte_seconds_count",
            &[("route", "tok"), ("version", "v1")]
        ),
        Some(2.0)
    );
    assert!(m.contains("# HELP cutover_cost_usd_total "));
    assert!(m.contains("# TYPE cutover_cost_usd_total counter"));
}

#[tokio::test]
async fn failures_fallbacks_and_refusals_are_counted() {
    let broken = backend(MockArgs {
        status: Some(http::StatusCode::SERVICE_UNAVAILABLE),
        ..MockArgs::new(loopback0())
    })
    .await;
    let good = healthy_backend("good").await;
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
[[upstreams]]
name = "fb-broken"
url = "{}"
[[upstreams]]
name = "fb-good"
url = "{}"
[[upstreams]]
name = "fb-dead"
url = "http://127.0.0.1:1"
[[routes]]
name = "fb"
match = {{ path_prefix = "/fb/" }}
fallbacks = [{{ name = "rescue", upstream = "fb-good" }}]
[[routes.versions]]
name = "v1"
upstream = "fb-broken"
[[routes]]
name = "fbx"
match = {{ path_prefix = "/fbx/" }}
[[routes.versions]]
name = "v1"
upstream = "fb-dead"
"#,
        broken.url(),
        good.url()
    );
    let proxy = start_proxy(&config).await;
    let c = client();
    let rescued = c
        .post(format!("{}/fb/x", proxy.url()))
        .body(CHAT)
        .send()
        .await
        .expect("response");
    assert_eq!(rescued.status(), 200);
    assert_eq!(rescued.headers()["x-cutover-upstream"], "fb-good");
    assert_eq!(rescued.headers()["x-cutover-version"], "v1");
    let refused = c
        .post(format!("{}/fbx/x", proxy.url()))
        .body(CHAT)
        .send()
        .await
        .expect("response");
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["x-cutover-upstream"], "refusal");

    let m = scrape(&proxy).await;
    assert_eq!(
        metric(
            &m,
            "cutover_upstream_requests_total",
            &[("upstream", "fb-broken"), ("result", "failure_status")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "cutover_upstream_requests_total",
            &[("upstream", "fb-dead"), ("result", "connect_error")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "cutover_fallbacks_total",
            &[("route", "fb"), ("from", "v1"), ("to", "rescue")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "cutover_refusals_total",
            &[("route", "fbx"), ("reason", "exhausted")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "cutover_requests_total",
            &[("route", "fbx"), ("version", "v1"), ("status", "5xx")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn upstream_outcome_header_is_counted_and_stripped_and_clients_cannot_forge_it() {
    let a = backend(MockArgs {
        outcome: Some(Outcome::Success),
        ..MockArgs::new(loopback0())
    })
    .await;
    let proxy = start_proxy(&priced("outh", &a.url())).await;
    let resp = client()
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .header("x-cutover-outcome", "failure")
        .body(CHAT)
        .send()
        .await
        .expect("response");
    assert!(
        !resp.headers().contains_key("x-cutover-outcome"),
        "stripped from the response"
    );
    assert_eq!(
        a.stats()
            .last_record()
            .and_then(|r| r.header("x-cutover-outcome").map(str::to_owned)),
        None
    );
    let m = scrape(&proxy).await;
    let outcome = |o| {
        [
            ("route", "outh"),
            ("version", "v1"),
            ("outcome", o),
            ("source", "header"),
        ]
    };
    assert_eq!(
        metric(&m, "cutover_outcomes_total", &outcome("success")),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "cutover_outcomes_total", &outcome("failure")),
        Some(0.0)
    );
}

#[tokio::test]
async fn feedback_rules() {
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&priced("feed", &a.url())).await;
    let c = client();
    let resp = c
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .header("x-request-id", "fb-req-1")
        .body(CHAT)
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    let url = format!("{}/_cutover/feedback", proxy.url());
    let send = |body: String| c.post(&url).body(body).send();

    let ok = send(r#"{"request_id":"fb-req-1","outcome":"success"}"#.into())
        .await
        .expect("r");
    assert_eq!(ok.status(), 200);
    let again = send(r#"{"request_id":"fb-req-1","outcome":"failure"}"#.into())
        .await
        .expect("r");
    assert_eq!(again.status(), 409);
    let unknown = send(r#"{"request_id":"never-seen","outcome":"success"}"#.into())
        .await
        .expect("r");
    assert_eq!(unknown.status(), 404);
    let bad = send("{not json".into()).await.expect("r");
    assert_eq!(bad.status(), 400);
    let bad_outcome = send(r#"{"request_id":"fb-req-1","outcome":"great"}"#.into())
        .await
        .expect("r");
    assert_eq!(bad_outcome.status(), 400);
    let huge = send(format!(
        r#"{{"request_id":"{}","outcome":"success"}}"#,
        "x".repeat(70 * 1024)
    ))
    .await
    .expect("r");
    assert_eq!(huge.status(), 413);
    let get = c.get(&url).send().await.expect("r");
    assert_eq!(get.status(), 405);
    assert_eq!(
        a.stats().requests(),
        1,
        "feedback never reaches an upstream"
    );

    let m = scrape(&proxy).await;
    let outcome = |o| {
        [
            ("route", "feed"),
            ("version", "v1"),
            ("outcome", o),
            ("source", "feedback"),
        ]
    };
    assert_eq!(
        metric(&m, "cutover_outcomes_total", &outcome("success")),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "cutover_outcomes_total", &outcome("failure")),
        Some(0.0)
    );
}

#[tokio::test]
async fn access_log_lines_explain_each_request_without_secrets() {
    let a = healthy_backend("a").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut bin, port, admin) = spawn_logged("logged", &a.url(), dir.path(), |config| {
        config
            .replace(
                "sticky = [",
                "match = { path_prefix = \"/v1/\" }\nsticky = [",
            )
            .replace(
                "cost = {",
                "deps = { prompt = \"p@1\", model = \"m-2025-01-01\" }\ncost = {",
            )
    });
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(wait_ready(([127, 0, 0, 1], admin).into(), Duration::from_secs(10)).await);
    let c = client();
    let secret_user = "user-with-a-secret-id-123";
    let token = "Bearer sk-very-secret-token";
    for body in [CHAT, CHAT_STREAM] {
        let resp = c
            .post(format!(
                "http://{addr}/v1/chat/completions?user=query-secret"
            ))
            .header("x-user-id", secret_user)
            .header("authorization", token)
            .body(body)
            .send()
            .await
            .expect("response");
        assert_eq!(resp.status(), 200);
        let _ = resp.bytes().await;
    }
    let too_big = c
        .post(format!("http://{addr}/nowhere"))
        .body("x")
        .send()
        .await
        .expect("response");
    assert_eq!(too_big.status(), 404);
    bin.signal("TERM");
    let status = tokio::task::spawn_blocking(move || {
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
    let (status, out) = status;
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert_eq!(lines.len(), 3, "one line per request, 404 included:\n{out}");
    for line in &lines[..2] {
        assert_eq!(line["route"], "logged");
        assert_eq!(line["version"], "v1");
        assert_eq!(line["upstream"], "logged-up");
        assert_eq!(line["assignment"], "sticky");
        assert_eq!(line["deps"]["prompt"], "p@1");
        assert_eq!(line["status"], 200);
        assert_eq!(line["end"], "complete");
        assert_eq!(line["key_hash"].as_str().map(str::len), Some(16));
        assert!(line["input_tokens"].as_u64().unwrap_or(0) > 0, "{line}");
        assert!(line["output_tokens"].as_u64().unwrap_or(0) > 0, "{line}");
        assert!(line["cost_usd"].as_f64().unwrap_or(0.0) > 0.0, "{line}");
        assert!(line["ttfb_ms"].as_f64().is_some());
        assert!(line["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    }
    assert_eq!(lines[2]["status"], 404);
    assert!(!out.contains(secret_user), "raw sticky key logged");
    assert!(!out.contains("sk-very-secret-token"), "credential logged");
    assert!(!out.contains("query-secret"), "query string logged");
    assert!(!out.contains("hello there"), "request body logged");
}

/// The access log's writer thread: its voluntary context switches, read
/// from `/proc` (Linux).
#[cfg(target_os = "linux")]
fn writer_wakeups(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "cutover-access-" {
            let status = std::fs::read_to_string(task.path().join("status")).ok()?;
            return status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse().ok());
        }
    }
    None
}

/// An idle gateway's access-log writer sleeps until a line comes, instead
/// of waking every 20 ms to find nothing; the first line after the pause
/// is still written at once.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn an_idle_access_log_writer_sleeps_until_a_line_comes() {
    let a = healthy_backend("a").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut bin, port, admin) = spawn_logged("idle", &a.url(), dir.path(), |config| config);
    let stdout = bin.child.stdout.take().expect("stdout");
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    assert!(wait_ready(([127, 0, 0, 1], admin).into(), Duration::from_secs(10)).await);
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let c = client();
    let send = || async {
        let resp = c.post(&url).body(CHAT).send().await.expect("response");
        assert_eq!(resp.status(), 200);
        let _ = resp.bytes().await;
    };
    send().await;
    let first = tokio::time::timeout(Duration::from_secs(5), lines.recv()).await;
    assert!(matches!(first, Ok(Some(_))), "the first line: {first:?}");

    // Idle past the writer's tenth of a second of empty drains, then count
    // its wake-ups over a second: polling every 20 ms would be ~50.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = bin.child.id();
    let before = writer_wakeups(pid).expect("the access-log thread");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = writer_wakeups(pid).expect("the access-log thread");
    assert!(
        after - before < 20,
        "an idle writer woke {} times in a second",
        after - before
    );

    send().await;
    let second = tokio::time::timeout(Duration::from_secs(2), lines.recv()).await;
    let second = match second {
        Ok(Some(line)) => line,
        other => panic!("the line after the pause was not written at once: {other:?}"),
    };
    let line: serde_json::Value = serde_json::from_str(&second).expect("JSON line");
    assert_eq!(line["route"], "idle");
    assert_eq!(line["status"], 200);
}

#[tokio::test]
async fn every_exposed_metric_has_help_and_type() {
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&priced("helped", &a.url())).await;
    let _ = client()
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .body(CHAT)
        .send()
        .await
        .expect("response");
    let m = scrape(&proxy).await;
    let typed: Vec<&str> = m
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    assert!(typed.len() >= 10, "{m}");
    for name in typed {
        assert!(
            m.contains(&format!("# HELP {name} ")),
            "{name} has no HELP text"
        );
    }
}

/// A fallback's `cost` prices the tokens it served: when the expensive
/// version fails and a cheaper-model fallback answers, the route's spend
/// (`cutover_cost_usd_total` on the assigned version) and the access log
/// show the fallback's price, not the version's.
#[tokio::test]
async fn a_fallback_prices_the_tokens_it_served() {
    let big = backend(MockArgs {
        name: "big".into(),
        status: Some(http::StatusCode::SERVICE_UNAVAILABLE),
        ..MockArgs::new(loopback0())
    })
    .await;
    let small = healthy_backend("small").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (sockets, port, admin) = traffic_and_admin();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[admin]
listen = "127.0.0.1:{admin}"
[log]
access_log = true
format = "json"
[[upstreams]]
name = "big"
url = "{big}"
[[upstreams]]
name = "small"
url = "{small}"
[[routes]]
name = "priced"
fallbacks = [{{ name = "small-model", upstream = "small", set_json = {{ model = "gpt-4o-mini-2024-07-18" }}, cost = {{ input_per_mtok = 0.15, output_per_mtok = 0.6 }} }}]
[[routes.versions]]
name = "v1"
upstream = "big"
cost = {{ input_per_mtok = 10.0, output_per_mtok = 30.0 }}
"#,
        big = big.url(),
        small = small.url()
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).expect("write");
    let mut bin = Binary::spawn_with(
        &["serve", "--config", path.to_str().expect("utf8")],
        &[],
        sockets,
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(wait_ready(([127, 0, 0, 1], admin).into(), Duration::from_secs(10)).await);
    let resp = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .body(CHAT)
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-cutover-upstream"], "small");
    let json: serde_json::Value = resp.json().await.expect("json");
    let (input, output) = usage_of(&json);
    assert!(input > 0.0 && output > 0.0);
    let cheap = (input * 0.15 + output * 0.6) / 1e6;
    let metrics = client()
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let cost = metric(
        &metrics,
        "cutover_cost_usd_total",
        &[("route", "priced"), ("version", "v1")],
    )
    .expect("cost");
    assert!(
        (cost - cheap).abs() < 1e-12,
        "cost {cost}, the fallback's price is {cheap}, the version's {}",
        (input * 10.0 + output * 30.0) / 1e6
    );
    bin.signal("TERM");
    let out = tokio::task::spawn_blocking(move || {
        let _ = bin.wait_timeout(Duration::from_secs(10));
        let mut out = String::new();
        if let Some(mut stdout) = bin.child.stdout.take() {
            use std::io::Read;
            let _ = stdout.read_to_string(&mut out);
        }
        out
    })
    .await
    .expect("join");
    let line: serde_json::Value = out
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no access log line:\n{out}"));
    assert_eq!(line["fallback_path"], "v1>small-model", "{line}");
    let logged = line["cost_usd"].as_f64().expect("cost_usd");
    assert!((logged - cheap).abs() < 1e-12, "{line}");
}
