//! The admin API (SPEC §10) and `cutover status` (SPEC §1), over real
//! sockets: endpoint codes and JSON shapes, reloads, bearer tokens, and the
//! guarantee that the traffic listener never serves admin endpoints.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// A route that uses every field `/status` shows, plus a second route.
fn rich_config(a: &str, b: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"
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
name = "chat"
match = {{ path_prefix = "/v1/", methods = ["POST"], host = "api.example.com", headers = {{ x-tenant = "acme" }} }}
sticky = ["header:x-user-id", "cookie:uid", "client_ip"]
salt = "do-not-show-me"
pin_header = "x-cutover-version"
fallbacks = ["v1", {{ name = "small", upstream = "b" }}]
cache = {{ ttl = "10m", vary = ["authorization", "x-tenant"], deterministic_only = true }}
[[routes.versions]]
name = "v1"
upstream = "a"
weight = 87.5
deps = {{ prompt = "support@1.3", params = {{ temperature = 0.2 }} }}
[[routes.versions]]
name = "v2"
upstream = "b"
weight = 12.5
[[routes.shadows]]
name = "v3"
upstream = "b"
percent = 10.0
max_in_flight = 8
timeout = "2s"
[[routes]]
name = "rest"
[[routes.versions]]
name = "only"
upstream = "a"
weight = 100.0
"#
    )
}

async fn get(url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client().get(url).send().await.expect("GET");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.expect("body"))
}

async fn get_json(url: &str) -> (u16, Value) {
    let (status, headers, body) = get(url).await;
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{url}: {body}"
    );
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}")),
    )
}

async fn post_json(url: &str) -> (u16, Value) {
    let r = client().post(url).send().await.expect("POST");
    let status = r.status().as_u16();
    let body = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}")),
    )
}

async fn status_of(proxy: &Proxy) -> Value {
    let (code, v) = get_json(&format!("{}/status", proxy.admin_url())).await;
    assert_eq!(code, 200, "{v}");
    v
}

fn weights(status: &Value, route: usize) -> Vec<(f64, f64)> {
    status["routes"][route]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["weight"].as_f64().expect("weight"),
                v["effective_weight"].as_f64().expect("effective_weight"),
            )
        })
        .collect()
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&one_version(&a.url(), "", "")).await;
    let admin = proxy.admin_url();

    let (code, v) = get_json(&format!("{admin}/healthz")).await;
    assert_eq!((code, v), (200, json!({"status": "ok"})));
    let (code, v) = get_json(&format!("{admin}/readyz")).await;
    assert_eq!((code, v), (200, json!({"status": "ready"})));

    let (code, headers, body) = get(&format!("{admin}/metrics")).await;
    assert_eq!(code, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain; version=0.0.4"),
        "{headers:?}"
    );
    assert!(body.contains("cutover_config_generation"), "{body}");

    proxy
        .gateway
        .draining
        .store(true, std::sync::atomic::Ordering::Release);
    let (code, v) = get_json(&format!("{admin}/readyz")).await;
    assert_eq!((code, v), (503, json!({"status": "draining"})));
    // Liveness does not depend on draining.
    let (code, _) = get_json(&format!("{admin}/healthz")).await;
    assert_eq!(code, 200);
    let status = status_of(&proxy).await;
    assert_eq!(status["draining"], json!(true));
}

#[tokio::test]
async fn status_describes_the_running_config() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy(&rich_config(&a.url(), &b.url())).await;
    let s = status_of(&proxy).await;

    assert_eq!(s["generation"], json!(1));
    let loaded_at = s["loaded_at"].as_str().expect("loaded_at");
    assert!(
        humantime::parse_rfc3339(loaded_at).is_ok() && loaded_at.ends_with('Z'),
        "{loaded_at}"
    );
    assert_eq!(s["last_reload_error"], Value::Null);
    assert_eq!(s["restart_required"], json!([]));
    assert_eq!(s["draining"], json!(false));
    assert_eq!(s["in_flight"], json!(0));

    let routes = s["routes"].as_array().expect("routes");
    assert_eq!(routes.len(), 2);
    let chat = &routes[0];
    assert_eq!(chat["name"], "chat");
    assert_eq!(
        chat["match"],
        json!({"path_prefix": "/v1/", "methods": ["POST"], "host": "api.example.com", "headers": {"x-tenant": "acme"}})
    );
    assert_eq!(
        chat["sticky"],
        json!(["header:x-user-id", "cookie:uid", "client_ip"])
    );
    assert!(chat.get("salt").is_none(), "the salt is not shown: {chat}");
    assert!(!s.to_string().contains("do-not-show-me"));
    assert_eq!(chat["pin_header"], "x-cutover-version");
    assert_eq!(
        chat["versions"],
        json!([
            {"name": "v1", "upstream": "a", "weight": 87.5, "effective_weight": 87.5,
             "deps": {"params": {"temperature": 0.2}, "prompt": "support@1.3"}},
            {"name": "v2", "upstream": "b", "weight": 12.5, "effective_weight": 12.5, "deps": {}},
        ])
    );
    assert_eq!(
        chat["shadows"],
        json!([{"name": "v3", "upstream": "b", "percent": 10.0, "max_in_flight": 8, "timeout_ms": 2000,
                 "in_flight": 0, "ok": 0, "failure": 0, "dropped": 0, "failure_share": null,
                 "compare_match": 0, "compare_mismatch": 0, "match_share": null}])
    );
    assert_eq!(chat["fallbacks"], json!(["v1", "small"]));
    assert_eq!(
        chat["cache"],
        json!({"ttl_ms": 600_000, "vary": ["authorization", "x-tenant"], "deterministic_only": true})
    );

    let rest = &routes[1];
    assert_eq!(rest["name"], "rest");
    assert_eq!(
        rest["match"],
        json!({"path_prefix": "/", "methods": [], "host": null, "headers": {}})
    );
    assert_eq!(rest["sticky"], json!([]));
    assert_eq!(rest["pin_header"], Value::Null);
    assert_eq!(rest["shadows"], json!([]));
    assert_eq!(rest["fallbacks"], json!([]));
    assert_eq!(rest["cache"], Value::Null);

    let closed = json!({
        "state": "closed", "consecutive_failures": 0, "window_requests": 0,
        "window_failures": 0, "half_open_in_ms": null, "max_in_flight": 512
    });
    assert_eq!(
        s["upstreams"],
        json!([
            {"name": "a", "url": a.url(), "in_flight": 0, "breaker": closed},
            {"name": "b", "url": b.url(), "in_flight": 0, "breaker": closed},
        ])
    );
}

#[tokio::test]
async fn reload_endpoint_swaps_valid_configs_and_rejects_invalid_ones() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy(&two_versions(&a.url(), &b.url(), 90.0, 10.0, "")).await;
    let admin = proxy.admin_url();
    assert_eq!(
        weights(&status_of(&proxy).await, 0),
        [(90.0, 90.0), (10.0, 10.0)]
    );
    let first_loaded_at = status_of(&proxy).await["loaded_at"].clone();

    // A valid file: 200 with the new generation, and /status follows.
    std::fs::write(
        &proxy.config_path,
        two_versions(&a.url(), &b.url(), 50.0, 50.0, ""),
    )
    .expect("write");
    let (code, v) = post_json(&format!("{admin}/reload")).await;
    assert_eq!((code, v), (200, json!({"generation": 2})));
    let s = status_of(&proxy).await;
    assert_eq!(s["generation"], json!(2));
    assert_eq!(weights(&s, 0), [(50.0, 50.0), (50.0, 50.0)]);
    assert_eq!(s["last_reload_error"], Value::Null);
    assert_ne!(s["loaded_at"], first_loaded_at);

    // An invalid file (weights sum to 110 and an unknown upstream): 400
    // with every validation error, and the running config stays.
    std::fs::write(
        &proxy.config_path,
        two_versions(&a.url(), &b.url(), 60.0, 50.0, "")
            .replace("upstream = \"b\"\nweight", "upstream = \"nope\"\nweight"),
    )
    .expect("write");
    let (code, v) = post_json(&format!("{admin}/reload")).await;
    assert_eq!(code, 400, "{v}");
    let error = v["error"].as_str().expect("error text");
    assert!(error.contains("nope"), "{error}");
    assert!(error.contains("100"), "weights error missing: {error}");

    let s = status_of(&proxy).await;
    assert_eq!(s["generation"], json!(2));
    assert_eq!(weights(&s, 0), [(50.0, 50.0), (50.0, 50.0)]);
    let last = &s["last_reload_error"];
    assert_eq!(last["error"].as_str(), Some(error));
    assert!(humantime::parse_rfc3339(last["at"].as_str().expect("at")).is_ok());

    // The old config keeps serving.
    let r = client()
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .header("x-cutover-version", "v2")
        .body(CHAT)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cutover-version"], "v2");

    // A good reload clears the error.
    std::fs::write(
        &proxy.config_path,
        two_versions(&a.url(), &b.url(), 0.0, 100.0, ""),
    )
    .expect("write");
    let (code, v) = post_json(&format!("{admin}/reload")).await;
    assert_eq!((code, v), (200, json!({"generation": 3})));
    let s = status_of(&proxy).await;
    assert_eq!(s["last_reload_error"], Value::Null);
    assert_eq!(weights(&s, 0), [(0.0, 0.0), (100.0, 100.0)]);
}

#[tokio::test]
async fn status_reflects_reloads_made_elsewhere() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy(&two_versions(&a.url(), &b.url(), 90.0, 10.0, "")).await;
    let generation = proxy
        .reload_with(&two_versions(&a.url(), &b.url(), 75.0, 25.0, ""))
        .await;
    let s = status_of(&proxy).await;
    assert_eq!(s["generation"], json!(generation));
    assert_eq!(weights(&s, 0), [(75.0, 75.0), (25.0, 25.0)]);
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_are_json_errors() {
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&one_version(&a.url(), "", "")).await;
    let admin = proxy.admin_url();

    for path in ["/nope", "/status/", "/", "/routes/chat/rollout"] {
        let (code, v) = get_json(&format!("{admin}{path}")).await;
        assert_eq!(code, 404, "{path}");
        assert!(v["error"].is_string(), "{path}: {v}");
    }
    let (code, _) = get_json(&format!("{admin}/routes/chat/rollout/advance")).await;
    assert_eq!(code, 405, "rollout actions are POST");
    for path in [
        "/routes/chat/rollout/advance",
        "/routes/chat/rollout/explode",
    ] {
        let r = client()
            .post(format!("{admin}{path}"))
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 404, "{path}: the route has no rollout");
    }

    let r = client()
        .get(format!("{admin}/reload"))
        .send()
        .await
        .expect("GET /reload");
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let v: Value = r.json().await.expect("json");
    assert!(v["error"].as_str().expect("error").contains("POST"), "{v}");

    for path in ["/status", "/healthz", "/readyz", "/metrics"] {
        let r = client()
            .post(format!("{admin}{path}"))
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 405, "{path}");
        assert_eq!(r.headers()["allow"], "GET, HEAD", "{path}");
        let v: Value = r.json().await.expect("json");
        assert!(v["error"].is_string());
    }
    // A wrong method never reloads.
    assert_eq!(proxy.gateway.generation(), 1);
}

const TOKEN_VAR: &str = "CUTOVER_TEST_ADMIN_TOKEN_4F2A";

#[tokio::test]
async fn a_token_guards_status_and_reload_but_not_probes() {
    let a = healthy_backend("a").await;
    let config = one_version(&a.url(), "", "").replace(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"{TOKEN_VAR}\""),
    );
    assert!(config.contains(TOKEN_VAR));
    let proxy = start_proxy_with_env(&config, &[(TOKEN_VAR, "s3cret-token")]).await;
    let admin = proxy.admin_url();
    let http = client();

    for (method, path) in [("GET", "/status"), ("POST", "/reload")] {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer s3cret-toke"),
            Some("Basic s3cret-token"),
        ] {
            let mut req = http.request(method.parse().expect("method"), format!("{admin}{path}"));
            if let Some(auth) = auth {
                req = req.header("authorization", auth);
            }
            let r = req.send().await.expect("request");
            assert_eq!(r.status(), 401, "{method} {path} with {auth:?}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            let body = r.text().await.expect("body");
            let v: Value = serde_json::from_str(&body).expect("json");
            assert!(v["error"].is_string());
            assert!(!body.contains("s3cret"), "the token leaked: {body}");
        }
    }
    // Nothing was reloaded by the refused requests.
    assert_eq!(proxy.gateway.generation(), 1);

    let r = http
        .get(format!("{admin}/status"))
        .header("authorization", "Bearer s3cret-token")
        .send()
        .await
        .expect("status");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["generation"], json!(1));
    assert!(!v.to_string().contains("s3cret"), "the token leaked: {v}");

    // A reload reads the real environment, where the variable is missing:
    // authorized, then rejected as invalid with the variable named.
    let r = http
        .post(format!("{admin}/reload"))
        .header("authorization", "bearer s3cret-token")
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert!(
        v["error"].as_str().expect("error").contains(TOKEN_VAR),
        "{v}"
    );

    for path in ["/healthz", "/readyz", "/metrics"] {
        let (code, _, _) = get(&format!("{admin}{path}")).await;
        assert_eq!(code, 200, "{path} needs no token");
    }
}

fn binary_config(traffic: u16, admin: u16, backend: &str, token_env: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{traffic}"
shutdown_grace = "1s"
[admin]
listen = "127.0.0.1:{admin}"
token_env = "{token_env}"
[log]
access_log = false
level = "warn"
[[upstreams]]
name = "a"
url = "{backend}"
[[routes]]
name = "chat"
[[routes.versions]]
name = "v1"
upstream = "a"
weight = 100.0
"#
    )
}

/// The real binary, real environment: a reload that points `token_env` at
/// another variable rotates the token at once.
#[tokio::test]
async fn a_reload_rotates_the_token() {
    let a = healthy_backend("a").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cutover.toml");
    let (traffic_socket, admin_socket) = (listener(), listener());
    let (traffic, admin_port) = (port(&traffic_socket), port(&admin_socket));
    std::fs::write(
        &path,
        binary_config(traffic, admin_port, &a.url(), "TOKEN_ONE"),
    )
    .expect("write");
    let path_arg = path.to_str().expect("utf-8 path");
    let _bin = Binary::spawn_with(
        &["serve", "--config", path_arg],
        &[("TOKEN_ONE", "first"), ("TOKEN_TWO", "second")],
        vec![traffic_socket, admin_socket],
    );
    let admin_addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin_port));
    assert!(wait_ready(admin_addr, Duration::from_secs(20)).await);
    let admin = format!("http://{admin_addr}");
    let http = client();
    let code = |token: &'static str, method: &'static str, path: &'static str| {
        let http = http.clone();
        let admin = admin.clone();
        async move {
            http.request(method.parse().expect("method"), format!("{admin}{path}"))
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }
    };
    assert_eq!(code("first", "GET", "/status").await, 200);
    assert_eq!(code("second", "GET", "/status").await, 401);

    std::fs::write(
        &path,
        binary_config(traffic, admin_port, &a.url(), "TOKEN_TWO"),
    )
    .expect("write");
    assert_eq!(code("first", "POST", "/reload").await, 200);
    assert_eq!(code("first", "GET", "/status").await, 401);
    assert_eq!(code("second", "GET", "/status").await, 200);

    // `cutover status` with the token from the environment, and without.
    let (exit, out, err) = run_binary(
        &["status", "--admin", &admin],
        &[("CUTOVER_ADMIN_TOKEN", "second")],
    )
    .await;
    assert_eq!(exit, Some(0), "{out}\n{err}");
    assert!(out.contains("generation        2"), "{out}");
    let (exit, out, err) =
        run_binary(&["status", "--admin", &admin, "--token", "first"], &[]).await;
    assert_eq!(exit, Some(1), "{out}\n{err}");
    assert!(err.contains("401") && err.contains(&admin), "{err}");
    assert!(!err.contains("second"), "{err}");
}

#[tokio::test]
async fn the_traffic_listener_does_not_serve_admin_endpoints() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    // The only route matches /v1/: admin paths reach no route.
    let proxy = start_proxy(&two_versions(&a.url(), &b.url(), 50.0, 50.0, "")).await;
    let http = client();
    for (method, path) in [
        ("GET", "/status"),
        ("POST", "/reload"),
        ("GET", "/metrics"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
    ] {
        let r = http
            .request(
                method.parse().expect("method"),
                format!("{}{path}", proxy.url()),
            )
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 404, "{method} {path}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["error"]["code"], "no_route", "{method} {path}: {v}");
    }
    assert_eq!(
        proxy.gateway.generation(),
        1,
        "POST /reload on traffic reloaded"
    );
    assert_eq!(a.stats().requests() + b.stats().requests(), 0);
}

#[tokio::test]
async fn cutover_status_prints_routes_versions_and_upstreams() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy(&rich_config(&a.url(), &b.url())).await;
    let (exit, out, err) = run_binary(&["status", "--admin", &proxy.admin_url()], &[]).await;
    assert_eq!(exit, Some(0), "{out}\n{err}");
    for needle in [
        "generation        1",
        "last reload error none",
        "route chat",
        "route rest",
        "v1 -> a",
        "v2 -> b",
        "87.50%",
        "12.50%",
        "prompt=support@1.3",
        "v3 -> b",
        "v1 -> small",
        "header:x-user-id",
        "upstreams",
        &a.url(),
        "in flight 0",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert!(!out.contains("do-not-show-me"));
}

#[tokio::test]
async fn cutover_status_fails_clearly_when_the_admin_api_is_down() {
    let admin = format!("http://127.0.0.1:{}", dead_port());
    let (exit, out, err) = run_binary(&["status", "--admin", &admin], &[]).await;
    assert_eq!(exit, Some(1), "{out}\n{err}");
    assert!(err.contains(&admin) && err.contains("unreachable"), "{err}");

    let (exit, _, err) = run_binary(&["status", "--admin", "https://127.0.0.1:1"], &[]).await;
    assert_eq!(exit, Some(2), "{err}");
    let (exit, _, err) = run_binary(&["status", "--bogus"], &[]).await;
    assert_eq!(exit, Some(2), "{err}");
}

/// The admin API lives on the control plane's own thread: it answers (and
/// renders `/metrics`) while the runtime that serves traffic is blocked.
#[tokio::test]
async fn the_admin_api_answers_while_the_traffic_runtime_is_blocked() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy(&two_versions(&a.url(), &b.url(), 50.0, 50.0, "")).await;
    // Once it answers, the server has started its control plane.
    assert!(scrape(&proxy).await.contains("cutover_config_generation"));
    let admin = proxy.admin;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        let get = |path: &str| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(admin)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            )?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        };
        let _ = tx.send((get("/healthz"), get("/metrics")));
    });
    // Blocks this test's runtime, where the traffic listener runs, until
    // the answers arrive (or the timeout says they never would).
    let answers = rx.recv_timeout(Duration::from_secs(10));
    let (health, metrics) = answers.expect("the admin API answered while traffic was blocked");
    let health = health.expect("healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = metrics.expect("metrics");
    assert!(
        metrics.contains("# TYPE cutover_request_duration_seconds histogram"),
        "{metrics}"
    );
    proxy.shutdown().await;
}
