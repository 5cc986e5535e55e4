//! Forwarding over real sockets: header rules, path prefixes, transforms,
//! the sticky split, pinning and streaming.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use cutover::mock::MockArgs;
use cutover::routing::bucket;
use futures_util::StreamExt;

#[tokio::test]
async fn forwards_with_header_rules_both_ways() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy(&two_versions(&a.url(), &b.url(), 100.0, 0.0, "")).await;
    let resp = client()
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .header("content-type", "application/json")
        .header("x-user-id", "user-1")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "secret")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "198.51.100.7")
        .header("accept-encoding", "gzip, br")
        .header("x-request-id", "req-abc")
        .header("x-cutover-shadow", "1")
        .header("x-cutover-outcome", "success")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(CHAT)
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-abc");
    assert_eq!(resp.headers()["x-cutover-version"], "v1");
    assert_eq!(resp.headers()["x-cutover-upstream"], "a");
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .contains("Hello from a")
    );

    let seen = a.stats().last_record().expect("upstream saw the request");
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.header("x-cutover-version"), Some("v1"));
    assert_eq!(seen.header("x-request-id"), Some("req-abc"));
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("198.51.100.7, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen.header("accept-encoding"),
        Some("identity"),
        "cutover reads answers, so it asks for them uncompressed"
    );
    assert_eq!(
        seen.header("x-drop-me"),
        None,
        "Connection-named header must be removed"
    );
    assert_eq!(seen.header("keep-alive"), None);
    assert_eq!(
        seen.header("x-cutover-shadow"),
        None,
        "clients cannot forge cutover headers"
    );
    assert_eq!(seen.header("x-cutover-outcome"), None);
    let tp = seen.header("traceparent").expect("traceparent");
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(
        !tp.contains("00f067aa0ba902b7"),
        "cutover adds its own span: {tp}"
    );
    assert_eq!(
        seen.body.as_ref(),
        CHAT.as_bytes(),
        "body forwarded unchanged"
    );
    assert_eq!(b.stats().requests(), 0);
}

/// `x-forwarded-host` is the host the client asked for: its `Host` on an
/// origin-form HTTP/1 request, the target's authority on an absolute-form
/// one (RFC 9112 §3.2.2: it wins over `Host`), `:authority` on HTTP/2,
/// whose clients may send no `Host` at all.
#[tokio::test]
async fn x_forwarded_host_is_the_host_the_client_asked_for() {
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&one_version(&a.url(), "", "")).await;
    let forwarded_host = || {
        a.stats()
            .last_record()
            .and_then(|seen| seen.header("x-forwarded-host").map(str::to_owned))
    };
    let origin = "POST /v1/chat HTTP/1.1\r\nhost: b.example:8080\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
    let out = raw_exchange(proxy.addr, origin.as_bytes(), Duration::from_secs(2)).await;
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    assert_eq!(forwarded_host().as_deref(), Some("b.example:8080"));

    let absolute = "POST http://a.example/v1/chat HTTP/1.1\r\nhost: b.example\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
    let out = raw_exchange(proxy.addr, absolute.as_bytes(), Duration::from_secs(2)).await;
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    assert_eq!(forwarded_host().as_deref(), Some("a.example"));

    let req = http::Request::post(format!("{}/v1/chat/completions", proxy.url()))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            CHAT.as_bytes(),
        )))
        .expect("request");
    let resp = h2c().request(req).await.expect("h2c response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(
        forwarded_host(),
        Some(proxy.addr.to_string()),
        "an HTTP/2 request's :authority"
    );
    assert_eq!(a.stats().requests(), 3);
}

#[tokio::test]
async fn generates_request_id_and_traceparent_when_absent_or_invalid() {
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&two_versions(&a.url(), &a.url(), 50.0, 50.0, "")).await;
    let resp = client()
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .header("x-request-id", "has spaces in it")
        .body(CHAT)
        .send()
        .await
        .expect("response");
    let id = resp.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
    let seen = a.stats().last_record().expect("seen");
    assert_eq!(seen.header("x-request-id"), Some(id.as_str()));
    let tp = seen.header("traceparent").expect("started a trace");
    assert_eq!(tp.len(), 55);
    assert!(tp.starts_with("00-") && tp.ends_with("-01"));
}

#[tokio::test]
async fn upstream_path_prefix_and_transforms() {
    let a = healthy_backend("a").await;
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
[[upstreams]]
name = "a"
url = "{}/api/base"
set_headers = {{ authorization = "Bearer upstream-key", x-up = "1" }}
remove_headers = ["x-client-secret"]
[[routes]]
name = "chat"
[[routes.versions]]
name = "v1"
upstream = "a"
weight = 100.0
set_headers = {{ x-up = "version-wins", x-version-header = "yes" }}
set_json = {{ model = "gpt-4o-2024-08-06", temperature = 0 }}
"#,
        a.url()
    );
    let proxy = start_proxy(&config).await;
    let resp = client()
        .post(format!("{}/v1/chat/completions?x=1", proxy.url()))
        .header("authorization", "Bearer client-key")
        .header("x-client-secret", "s3cret")
        .body(CHAT)
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(
        body["model"], "gpt-4o-2024-08-06",
        "the upstream saw the set_json model"
    );
    let seen = a.stats().last_record().expect("seen");
    assert_eq!(seen.path, "/api/base/v1/chat/completions");
    assert_eq!(seen.query.as_deref(), Some("x=1"));
    assert_eq!(seen.header("authorization"), Some("Bearer upstream-key"));
    assert_eq!(seen.header("x-client-secret"), None);
    assert_eq!(seen.header("x-up"), Some("version-wins"));
    assert_eq!(seen.header("x-version-header"), Some("yes"));
    let json = seen.body_json().expect("json body");
    assert_eq!(json["model"], "gpt-4o-2024-08-06");
    assert_eq!(json["temperature"], 0);
    assert_eq!(json["messages"][0]["content"], "hello there");

    // A body that is not JSON passes through unchanged.
    let resp = client()
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .body("plain text, not json")
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    let seen = a.stats().last_record().expect("seen");
    assert_eq!(seen.body.as_ref(), b"plain text, not json");

    // SPEC §3: the client's key order and the exact text of every number
    // survive; an existing key keeps its place, a new one is appended.
    let sent = r#"{"temperature": 0.70, "messages": [{"role": "user", "content": "hi"}], "seed": 12345678901234567890123, "top_p": 1.0e0, "model": "x"}"#;
    let resp = client()
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .body(sent)
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    let seen = a.stats().last_record().expect("seen");
    assert_eq!(
        String::from_utf8_lossy(&seen.body),
        r#"{"temperature": 0, "messages": [{"role": "user", "content": "hi"}], "seed": 12345678901234567890123, "top_p": 1.0e0, "model": "gpt-4o-2024-08-06"}"#
    );
}

/// Send one request per key and return the version that served each.
async fn versions_for(proxy: &Proxy, keys: &[String]) -> HashMap<String, String> {
    let c = client();
    let mut out = HashMap::new();
    for key in keys {
        let resp = c
            .post(format!("{}/v1/chat/completions", proxy.url()))
            .header("x-user-id", key)
            .body(CHAT)
            .send()
            .await
            .expect("response");
        assert_eq!(resp.status(), 200);
        let v = resp.headers()["x-cutover-version"]
            .to_str()
            .expect("ascii")
            .to_string();
        out.insert(key.clone(), v);
    }
    out
}

#[tokio::test]
async fn sticky_split_matches_the_spec_and_only_grows_into_the_last_version() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy(&two_versions(&a.url(), &b.url(), 90.0, 10.0, "")).await;
    let keys: Vec<String> = (0..2000).map(|i| format!("user-{i}")).collect();
    let before = versions_for(&proxy, &keys).await;

    // Exactly the function of SPEC §3, and the share within tolerance.
    let mut v2 = 0;
    for key in &keys {
        let expected = if bucket(b"chat", key.as_bytes()) < 9000 {
            "v1"
        } else {
            "v2"
        };
        assert_eq!(before[key], expected, "{key}");
        v2 += usize::from(before[key] == "v2");
    }
    let share = v2 as f64 / keys.len() as f64;
    assert!((0.08..=0.12).contains(&share), "v2 share {share}");

    // The same key always lands on the same version.
    let again = versions_for(&proxy, &keys[..200]).await;
    for (k, v) in &again {
        assert_eq!(&before[k], v);
    }

    // Grow v2 to 25 %: keys only move into v2, never out.
    proxy
        .reload_with(&two_versions(&a.url(), &b.url(), 75.0, 25.0, ""))
        .await;
    let after = versions_for(&proxy, &keys).await;
    let mut moved = 0;
    for key in &keys {
        if before[key] == "v2" {
            assert_eq!(after[key], "v2", "{key} moved out of v2");
        } else if after[key] == "v2" {
            moved += 1;
        }
    }
    assert!(moved > 200, "only {moved} keys moved into v2");
}

#[tokio::test]
async fn pinned_and_unsticky_assignment() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy(&two_versions(&a.url(), &b.url(), 70.0, 30.0, "")).await;
    let c = client();
    // `user-8` hashes to v1 at 70/30 (bucket 9564 is in v2's range, so use
    // a key in v1's range) and the pin overrides it.
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| bucket(b"chat", k.as_bytes()) < 7000)
        .expect("a v1 key");
    let resp = c
        .post(format!("{}/v1/x", proxy.url()))
        .header("x-user-id", &key)
        .header("x-cutover-version", "v2")
        .body(CHAT)
        .send()
        .await
        .expect("response");
    assert_eq!(resp.headers()["x-cutover-version"], "v2");
    // The pin header itself reaches the upstream only as cutover's own value.
    assert_eq!(
        b.stats()
            .last_record()
            .and_then(|r| r.header("x-cutover-version").map(str::to_owned)),
        Some("v2".into())
    );

    // An unknown pin is ignored: the sticky split decides.
    let resp = c
        .post(format!("{}/v1/x", proxy.url()))
        .header("x-user-id", &key)
        .header("x-cutover-version", "v9")
        .body(CHAT)
        .send()
        .await
        .expect("response");
    assert_eq!(resp.headers()["x-cutover-version"], "v1");

    // No sticky key: random by weight.
    let mut v2 = 0;
    for _ in 0..600 {
        let resp = c
            .post(format!("{}/v1/x", proxy.url()))
            .body(CHAT)
            .send()
            .await
            .expect("response");
        v2 += usize::from(resp.headers()["x-cutover-version"] == "v2");
    }
    let share = v2 as f64 / 600.0;
    assert!((0.2..=0.4).contains(&share), "unsticky v2 share {share}");
}

#[tokio::test]
async fn no_route_is_a_json_404() {
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&two_versions(&a.url(), &a.url(), 50.0, 50.0, "")).await;
    let resp = client()
        .get(format!("{}/other", proxy.url()))
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), 404);
    assert!(resp.headers().contains_key("x-request-id"));
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "no_route");
    assert_eq!(a.stats().requests(), 0);
}

#[tokio::test]
async fn route_match_on_method_host_and_headers_first_match_wins() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
[[upstreams]]
name = "a"
url = "{}"
[[upstreams]]
name = "b"
url = "{}"
[[routes]]
name = "acme"
match = {{ path_prefix = "/v1/", methods = ["POST"], host = "api.acme.test", headers = {{ x-tenant = "acme" }} }}
[[routes.versions]]
name = "acme-v1"
upstream = "b"
weight = 100.0
[[routes]]
name = "chat"
match = {{ path_prefix = "/v1/" }}
[[routes.versions]]
name = "v1"
upstream = "a"
weight = 100.0
"#,
        a.url(),
        b.url()
    );
    let proxy = start_proxy(&config).await;
    let c = client();
    let send = |method: reqwest::Method, host: &'static str, tenant: Option<&'static str>| {
        let mut r = c
            .request(method, format!("{}/v1/chat", proxy.url()))
            .header("host", host)
            .body(CHAT);
        if let Some(t) = tenant {
            r = r.header("x-tenant", t);
        }
        r.send()
    };
    let version = |r: reqwest::Response| {
        r.headers()["x-cutover-version"]
            .to_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(
        version(
            send(reqwest::Method::POST, "api.acme.test:8080", Some("acme"))
                .await
                .expect("r")
        ),
        "acme-v1"
    );
    assert_eq!(
        version(
            send(reqwest::Method::GET, "api.acme.test", Some("acme"))
                .await
                .expect("r")
        ),
        "v1"
    );
    assert_eq!(
        version(
            send(reqwest::Method::POST, "other.test", Some("acme"))
                .await
                .expect("r")
        ),
        "v1"
    );
    assert_eq!(
        version(
            send(reqwest::Method::POST, "api.acme.test", Some("other"))
                .await
                .expect("r")
        ),
        "v1"
    );
    assert_eq!(
        version(
            send(reqwest::Method::POST, "api.acme.test", None)
                .await
                .expect("r")
        ),
        "v1"
    );
}

#[tokio::test]
async fn sse_reaches_the_client_chunk_by_chunk() {
    let slow = backend(MockArgs {
        name: "slow".into(),
        chunks: 5,
        chunk_delay: Duration::from_millis(300),
        ..MockArgs::new(loopback0())
    })
    .await;
    let proxy = start_proxy(&two_versions(&slow.url(), &slow.url(), 50.0, 50.0, "")).await;
    let start = Instant::now();
    let resp = client()
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .body(CHAT_STREAM)
        .send()
        .await
        .expect("response");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.bytes_stream();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        arrivals.push(start.elapsed());
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let total = start.elapsed();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(text.contains("\"usage\""));
    // The upstream takes ≥ 6 × 300 ms; the first chunk must arrive long
    // before it finishes, and chunks must arrive spread out, not at once.
    assert!(total >= Duration::from_millis(1500), "{total:?}");
    assert!(
        arrivals[0] < total - Duration::from_millis(900),
        "first chunk at {:?} of {total:?}",
        arrivals[0]
    );
    assert!(arrivals.len() >= 4, "{} reads", arrivals.len());
}

/// An upstream that counts the TCP connections it accepts.
async fn counting_upstream() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"{\"ok\":true}")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), accepted)
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_kept_alive() {
    let (url, accepted) = counting_upstream().await;
    let proxy = start_proxy(&one_version(&url, "", "")).await;
    let c = client();
    for _ in 0..30 {
        let resp = c
            .post(format!("{}/v1/chat", proxy.url()))
            .body(CHAT)
            .send()
            .await
            .expect("response");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().await.expect("body").as_ref(), b"{\"ok\":true}");
    }
    let n = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        n, 1,
        "30 sequential requests should reuse one upstream connection, saw {n}"
    );
}
