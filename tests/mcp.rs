//! MCP session affinity (SPEC §3, `session_header`) over real sockets: a
//! canary of an MCP tool server behind cutover, with `cutover mock-backend
//! --mcp` servers as the versions.
//!
//! Each test drives the streamable HTTP transport: scripted JSON-RPC
//! (initialize, notifications, tools/call, the GET event stream, DELETE),
//! and the official `mcp` Python SDK client. Metrics are process-global in
//! this binary, so every test has its own route name.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use cutover::mock::{MockArgs, MockHandle};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const SESSION: &str = "mcp-session-id";

/// Two MCP tool servers, `tools-v1` and `tools-v2`.
async fn mcp_backends() -> (MockHandle, MockHandle) {
    let server = |name: &str| MockArgs {
        name: name.into(),
        mcp: true,
        ..MockArgs::new(loopback0())
    };
    (
        backend(server("tools-v1")).await,
        backend(server("tools-v2")).await,
    )
}

/// Route `route` on `/mcp` (GET, POST and DELETE: the transport uses all
/// three) with versions v1 and v2 on the two servers.
fn config(route: &str, v1: &MockHandle, v2: &MockHandle, w1: f64, w2: f64) -> String {
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
name = "tools-v1"
url = "{}"
[[upstreams]]
name = "tools-v2"
url = "{}"
[[routes]]
name = "{route}"
match = {{ path_prefix = "/mcp", methods = ["GET", "POST", "DELETE"] }}
sticky = ["header:x-user-id"]
session_header = "mcp-session-id"
[[routes.versions]]
name = "v1"
upstream = "tools-v1"
weight = {w1:.2}
deps = {{ tools = "tool-server@1" }}
[[routes.versions]]
name = "v2"
upstream = "tools-v2"
weight = {w2:.2}
deps = {{ tools = "tool-server@2" }}
"#,
        v1.url(),
        v2.url()
    )
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "scripted", "version": "1"}}})
}

fn whoami(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "whoami", "arguments": {}}})
}

async fn rpc(proxy: &Proxy, session: Option<&str>, message: &Value) -> reqwest::Response {
    let mut req = client()
        .post(format!("{}/mcp", proxy.url()))
        .header("accept", "application/json, text/event-stream")
        .json(message);
    if let Some(s) = session {
        req = req.header(SESSION, s);
    }
    req.send().await.expect("request")
}

/// The text of a tools/call answer, JSON or SSE.
async fn tool_text(response: reqwest::Response) -> String {
    let body = response.text().await.expect("body");
    let json = body
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or(&body);
    let doc: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    doc["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no tool text in {body}"))
        .to_owned()
}

/// Open a session through the proxy: (the id the client holds, the
/// upstream's own id).
async fn open(proxy: &Proxy, version: &str) -> (String, String) {
    let r = rpc(proxy, None, &initialize()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cutover-version"], version);
    let id = r.headers()[SESSION].to_str().expect("ascii").to_owned();
    let prefix = format!("{version}.");
    let bare = id
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("session id {id:?} does not start with {prefix:?}"))
        .to_owned();
    let r = rpc(
        proxy,
        Some(&id),
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(r.status(), 202);
    (id, bare)
}

/// The session header values an upstream received, in order.
fn sessions_seen(mock: &MockHandle) -> Vec<String> {
    mock.stats()
        .records()
        .iter()
        .filter_map(|r| r.header(SESSION).map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_session_stays_on_its_version_and_the_upstream_sees_its_own_id() {
    let (v1, v2) = mcp_backends().await;
    let proxy = start_proxy(&config("mcp-stay", &v1, &v2, 0.0, 100.0)).await;
    let (id, bare) = open(&proxy, "v2").await;
    // The upstream issued `bare` and got it back, never the prefixed id.
    assert_eq!(sessions_seen(&v2), std::slice::from_ref(&bare));

    let r = rpc(&proxy, Some(&id), &whoami(1)).await;
    assert_eq!(r.headers()["x-cutover-version"], "v2");
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(
        tool_text(r).await,
        format!("served by tools-v2, session {bare}")
    );

    // The split moves (a canary going back down): the session does not.
    for (w1, w2) in [(50.0, 50.0), (99.0, 1.0)] {
        proxy
            .reload_with(&config("mcp-stay", &v1, &v2, w1, w2))
            .await;
        for n in 0..10 {
            let r = rpc(&proxy, Some(&id), &whoami(10 + n)).await;
            assert_eq!(r.headers()["x-cutover-version"], "v2", "at {w1}/{w2}");
            assert!(tool_text(r).await.starts_with("served by tools-v2"));
        }
    }
    // A second replica (or this one restarted) agrees, with no shared
    // state: the version travels in the id.
    let replica = start_proxy(&config("mcp-stay", &v1, &v2, 99.0, 1.0)).await;
    let r = rpc(&replica, Some(&id), &whoami(99)).await;
    assert_eq!(r.headers()["x-cutover-version"], "v2");
    assert!(tool_text(r).await.contains(&bare));

    // The server-to-client event stream (GET) reaches the same version.
    let mut get = client()
        .get(format!("{}/mcp", proxy.url()))
        .header("accept", "text/event-stream")
        .header(SESSION, &id)
        .send()
        .await
        .expect("get");
    assert_eq!(get.status(), 200);
    assert_eq!(get.headers()["x-cutover-version"], "v2");
    assert_eq!(get.headers()["content-type"], "text/event-stream");
    let first = get.chunk().await.expect("read").expect("first event");
    let first = String::from_utf8_lossy(&first);
    assert!(
        first.contains("notifications/message") && first.contains("stream open on tools-v2"),
        "{first}"
    );
    drop(get);

    // DELETE ends it on its server; the server then answers 404, as MCP
    // says, and the client would start again.
    let r = client()
        .delete(format!("{}/mcp", proxy.url()))
        .header(SESSION, &id)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cutover-version"], "v2");
    let r = rpc(&proxy, Some(&id), &whoami(100)).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"]["code"],
        -32001
    );

    let methods: Vec<String> = v2
        .stats()
        .records()
        .iter()
        .map(|r| r.method.to_string())
        .collect();
    assert!(methods.contains(&"GET".to_owned()) && methods.contains(&"DELETE".to_owned()));
    assert!(
        sessions_seen(&v2).iter().all(|s| *s == bare),
        "{:?}",
        sessions_seen(&v2)
    );
    // v1 never saw the session.
    assert!(sessions_seen(&v1).is_empty());
    let text = scrape(&proxy).await;
    let session_requests = metric(
        &text,
        "cutover_assignments_total",
        &[
            ("route", "mcp-stay"),
            ("version", "v2"),
            ("assignment", "session"),
        ],
    );
    assert!(
        session_requests.is_some_and(|n| n >= 24.0),
        "{session_requests:?}"
    );
}

#[tokio::test]
async fn a_session_on_a_version_at_weight_0_gets_404_and_a_new_one_lands_on_the_baseline() {
    let (v1, v2) = mcp_backends().await;
    let proxy = start_proxy(&config("mcp-gone", &v1, &v2, 0.0, 100.0)).await;
    let (id, _) = open(&proxy, "v2").await;
    // The canary is rolled back.
    proxy
        .reload_with(&config("mcp-gone", &v1, &v2, 100.0, 0.0))
        .await;
    let before = v2.stats().requests();
    let r = rpc(&proxy, Some(&id), &whoami(1)).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-cutover-version"], "v2");
    let doc: Value = r.json().await.expect("json");
    assert_eq!(doc["error"]["code"], "session_gone", "{doc}");
    // Nothing reached the rolled-back server; the GET stream and DELETE
    // of that session get the same answer.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let r = client()
            .request(method.clone(), format!("{}/mcp", proxy.url()))
            .header(SESSION, &id)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 404, "{method}");
    }
    assert_eq!(v2.stats().requests(), before);
    // The client starts again, on the baseline.
    let (id, bare) = open(&proxy, "v1").await;
    let r = rpc(&proxy, Some(&id), &whoami(2)).await;
    assert_eq!(
        tool_text(r).await,
        format!("served by tools-v1, session {bare}")
    );
    wait_metric(
        &proxy,
        "cutover_requests_total",
        &[("route", "mcp-gone"), ("version", "v2"), ("status", "4xx")],
        3.0,
    )
    .await;
}

#[tokio::test]
async fn values_naming_no_version_or_not_visible_ascii_are_forwarded_unchanged() {
    let (v1, v2) = mcp_backends().await;
    let proxy = start_proxy(&config("mcp-other", &v1, &v2, 100.0, 0.0)).await;
    for value in ["zz.abc", "v3.abc", "abc", "v1.", "v1.has space", "v2"] {
        let before = v1.stats().requests();
        let r = rpc(&proxy, Some(value), &whoami(1)).await;
        // Split as usual (all of it on v1), and the server does not know
        // the id: its own 404.
        assert_eq!(r.headers()["x-cutover-version"], "v1", "{value:?}");
        assert_eq!(r.status(), 404, "{value:?}");
        assert_eq!(v1.stats().requests(), before + 1);
        assert_eq!(
            v1.stats()
                .last_record()
                .and_then(|r| r.header(SESSION).map(str::to_owned))
                .as_deref(),
            Some(value)
        );
    }
    // Bytes outside visible ASCII, too.
    let r = client()
        .post(format!("{}/mcp", proxy.url()))
        .header(
            SESSION,
            reqwest::header::HeaderValue::from_bytes(b"v2.caf\xe9").expect("value"),
        )
        .json(&whoami(2))
        .send()
        .await
        .expect("request");
    assert_eq!(r.headers()["x-cutover-version"], "v1");
    let seen = v1.stats().last_record().expect("record");
    assert_eq!(
        seen.headers.get(SESSION).map(|v| v.as_bytes()),
        Some(&b"v2.caf\xe9"[..])
    );
    let text = scrape(&proxy).await;
    assert_eq!(
        metric(
            &text,
            "cutover_assignments_total",
            &[
                ("route", "mcp-other"),
                ("version", "v1"),
                ("assignment", "session")
            ],
        ),
        Some(0.0)
    );
}

/// The official SDK client, driven one command per line (see
/// tests/python/mcp_client.py).
struct SdkClient {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl SdkClient {
    fn spawn(python: &std::path::Path, url: &str) -> SdkClient {
        let mut child = tokio::process::Command::new(python)
            .arg(python::script("mcp_client.py"))
            .arg(url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the mcp client");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        SdkClient {
            child,
            stdin,
            lines,
        }
    }

    async fn send(&mut self, command: &str) -> Value {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .expect("write");
        self.stdin.flush().await.expect("flush");
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("`{command}`: no answer in 60 s"))
            .expect("read")
            .unwrap_or_else(|| panic!("`{command}`: the client exited"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("`{command}`: {e}: {line}"))
    }

    async fn quit(mut self) {
        let _ = self.stdin.write_all(b"quit\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
    }
}

#[tokio::test]
async fn the_official_mcp_client_keeps_its_session_through_a_canary_and_restarts_after_rollback() {
    let Some(python) = python::python_with(&["mcp", "httpx2"]) else {
        return;
    };
    let (v1, v2) = mcp_backends().await;
    let proxy = start_proxy(&config("mcp-sdk", &v1, &v2, 0.0, 100.0)).await;
    let mut sdk = SdkClient::spawn(&python, &format!("{}/mcp", proxy.url()));

    let opened = sdk.send("open").await;
    assert_eq!(opened["event"], "opened", "{opened}");
    let first = opened["whoami"].as_str().unwrap_or("").to_owned();
    assert!(first.starts_with("served by tools-v2, session "), "{first}");

    // The split changes under the session: it stays on v2.
    proxy
        .reload_with(&config("mcp-sdk", &v1, &v2, 50.0, 50.0))
        .await;
    for _ in 0..3 {
        let called = sdk.send("call").await;
        assert_eq!(called["whoami"], first.as_str(), "{called}");
    }

    // Rolled back: the session's next request is a 404, and the SDK says
    // its session is over.
    proxy
        .reload_with(&config("mcp-sdk", &v1, &v2, 100.0, 0.0))
        .await;
    let failed = sdk.send("call").await;
    assert_eq!(failed["event"], "error", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("Session terminated")),
        "{failed}"
    );
    assert_eq!(sdk.send("close").await["event"], "closed");

    // A new session lands on the baseline.
    let reopened = sdk.send("open").await;
    assert!(
        reopened["whoami"]
            .as_str()
            .is_some_and(|w| w.starts_with("served by tools-v1, session ")),
        "{reopened}"
    );
    assert_eq!(sdk.send("close").await["event"], "closed");

    // What the client sent: every session request carried a VERSION.VALUE
    // id; the GET stream and DELETE were among them.
    let seen = sdk.send("requests").await;
    let seen = seen["seen"].as_array().cloned().unwrap_or_default();
    let methods: Vec<&str> = seen.iter().filter_map(|r| r["method"].as_str()).collect();
    assert!(methods.contains(&"GET"), "{methods:?}");
    assert!(methods.contains(&"DELETE"), "{methods:?}");
    for r in &seen {
        if let Some(id) = r["session"].as_str() {
            assert!(id.starts_with("v1.") || id.starts_with("v2."), "{id}");
        }
    }
    sdk.quit().await;

    // What the servers received: their own ids, never a prefixed one.
    for (mock, name) in [(&v1, "tools-v1"), (&v2, "tools-v2")] {
        let seen = sessions_seen(mock);
        assert!(!seen.is_empty(), "{name} saw no session request");
        assert!(
            seen.iter()
                .all(|s| !s.starts_with("v1.") && !s.starts_with("v2.")),
            "{name}: {seen:?}"
        );
        let got_get = mock.stats().records().iter().any(|r| r.method == "GET");
        assert!(got_get, "{name} never got the SDK's GET stream");
    }
}

#[tokio::test]
async fn session_requests_are_judged_like_sticky_ones() {
    let (v1, v2) = mcp_backends().await;
    let toml = config("mcp-judged", &v1, &v2, 50.0, 50.0)
        + r#"
[routes.rollout]
baseline = "v1"
canary = "v2"
steps = [50, 100]
interval = "1h"
min_requests = 1000
[routes.rollout.rollback]
window = "1m"
min_requests = 1000
"#;
    let proxy = start_proxy(&toml).await;
    // Open sessions (each initialize is sticky by its user) until one is
    // on the canary.
    let mut on_canary = None;
    let mut sent = 0.0;
    for user in 0..64 {
        let r = client()
            .post(format!("{}/mcp", proxy.url()))
            .header("accept", "application/json, text/event-stream")
            .header("x-user-id", format!("user-{user}"))
            .json(&initialize())
            .send()
            .await
            .expect("initialize");
        if r.headers()["x-cutover-version"] == "v2" {
            on_canary = Some(r.headers()[SESSION].to_str().expect("ascii").to_owned());
            sent += 1.0;
            break;
        }
    }
    let id = on_canary.expect("no user of 64 landed on a 50 % canary");
    // The session's requests carry no user key: only the session id
    // assigns them, and each is judged as the canary's.
    for n in 0..5 {
        let r = rpc(&proxy, Some(&id), &whoami(n)).await;
        assert_eq!(r.headers()["x-cutover-version"], "v2");
        r.bytes().await.expect("body");
        sent += 1.0;
    }
    let judged = eventually_async(Duration::from_secs(5), || async {
        let status: Value = reqwest::get(format!("{}/status", proxy.admin_url()))
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        let route = status["routes"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "mcp-judged").cloned())
            .unwrap_or(Value::Null);
        assert_eq!(route["session_header"], SESSION);
        route["rollout"]["canary"]["requests"].as_f64() == Some(sent)
    })
    .await;
    assert!(judged, "the canary's judged requests never reached {sent}");
}
