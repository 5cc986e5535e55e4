//! The version-aware response cache over real sockets (SPEC §6): hits and
//! misses, what the key includes and ignores, bypass and storage rules,
//! byte-identical streamed replay, the size bound, coalescing and purge.
//! Metrics are process-global within this binary, so every test uses its
//! own route names.

mod common;

use std::time::{Duration, Instant};

use common::*;
use cutover::mock::{MockArgs, MockHandle};
use http::StatusCode;

const CACHE_REQUESTS: &str = "cutover_cache_requests_total";

/// A caching route `route` on `/{route}/` with one version `v1` on
/// `primary`, plus extra route keys (e.g. fallbacks) and `[cache]` sizes.
fn config(route: &str, primary: &str, cache: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
[cache]
max_size = "16MiB"
max_entry_size = "1MiB"
{extra_top}
[[upstreams]]
name = "{route}-up"
url = "{primary}"
header_timeout = "2s"
idle_timeout = "1s"
[[routes]]
name = "{route}"
match = {{ path_prefix = "/{route}/" }}
cache = {{ {cache} }}
{extra}
[[routes.versions]]
name = "v1"
upstream = "{route}-up"
weight = 100.0
deps = {{ prompt = "support@1", model = "m-2024-01-01" }}
"#,
        extra_top = ""
    )
}

const TTL: &str = r#"ttl = "60s", deterministic_only = false"#;

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

/// (x-cutover-cache, status, body)
async fn ask(
    proxy: &Proxy,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (String, u16, bytes::Bytes) {
    let r = post(proxy, path, body, headers).await;
    let cache = r
        .headers()
        .get("x-cutover-cache")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let status = r.status().as_u16();
    (cache, status, r.bytes().await.expect("body"))
}

fn requests(mock: &MockHandle) -> u64 {
    mock.stats().requests()
}

async fn status(proxy: &Proxy) -> serde_json::Value {
    reqwest::get(format!("{}/status", proxy.admin_url()))
        .await
        .expect("status")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn a_hit_after_a_miss_calls_the_upstream_once() {
    let up = healthy_backend("up").await;
    let proxy = start_proxy(&config("hit", &up.url(), TTL, "")).await;
    let (c1, s1, b1) = ask(&proxy, "/hit/chat", CHAT, &[]).await;
    let r = post(&proxy, "/hit/chat", CHAT, &[]).await;
    assert_eq!(r.headers()["x-cutover-cache"], "hit");
    assert_eq!(r.headers()["x-cutover-version"], "v1");
    assert_eq!(r.headers()["x-cutover-upstream"], "hit-up");
    assert_eq!(r.headers()["content-type"], "application/json");
    let b2 = r.bytes().await.expect("body");
    assert_eq!((c1.as_str(), s1), ("miss", 200));
    assert_eq!(b1, b2);
    assert_eq!(requests(&up), 1);
    wait_metric(
        &proxy,
        CACHE_REQUESTS,
        &[("route", "hit"), ("result", "hit")],
        1.0,
    )
    .await;
    wait_metric(
        &proxy,
        CACHE_REQUESTS,
        &[("route", "hit"), ("result", "miss")],
        1.0,
    )
    .await;
    let st = status(&proxy).await;
    assert_eq!(st["cache"]["entries"], 1, "{}", st["cache"]);
    assert_eq!(st["cache"]["hit_ratio"], 0.5);
    let text = scrape(&proxy).await;
    let bytes = metric(&text, "cutover_cache_bytes", &[]).expect("cutover_cache_bytes");
    assert!(bytes >= b1.len() as f64, "{bytes}");
}

#[tokio::test]
async fn the_key_ignores_json_key_order_and_whitespace() {
    let up = healthy_backend("up").await;
    let proxy = start_proxy(&config("order", &up.url(), TTL, "")).await;
    let a = r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;
    let b = "{ \"messages\" : [ {\"content\":\"hi\", \"role\":\"user\"} ],\n  \"temperature\": 0, \"model\": \"m\" }";
    let different = r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi!"}]}"#;
    assert_eq!(ask(&proxy, "/order/x", a, &[]).await.0, "miss");
    assert_eq!(ask(&proxy, "/order/x", b, &[]).await.0, "hit");
    assert_eq!(ask(&proxy, "/order/x", different, &[]).await.0, "miss");
    // The path and query are part of the key too; the query's order is not.
    assert_eq!(ask(&proxy, "/order/x?a=1&b=2", a, &[]).await.0, "miss");
    assert_eq!(ask(&proxy, "/order/x?b=2&a=1", a, &[]).await.0, "hit");
    assert_eq!(ask(&proxy, "/order/y", a, &[]).await.0, "miss");
    assert_eq!(requests(&up), 4);
}

#[tokio::test]
async fn tenants_do_not_share_entries() {
    let up = healthy_backend("up").await;
    let proxy = start_proxy(&config("tenant", &up.url(), TTL, "")).await;
    let alice = [("authorization", "Bearer alice-key")];
    let bob = [("authorization", "Bearer bob-key")];
    assert_eq!(ask(&proxy, "/tenant/x", CHAT, &alice).await.0, "miss");
    assert_eq!(ask(&proxy, "/tenant/x", CHAT, &bob).await.0, "miss");
    assert_eq!(ask(&proxy, "/tenant/x", CHAT, &[]).await.0, "miss");
    assert_eq!(ask(&proxy, "/tenant/x", CHAT, &alice).await.0, "hit");
    assert_eq!(ask(&proxy, "/tenant/x", CHAT, &bob).await.0, "hit");
    assert_eq!(requests(&up), 3);
}

#[tokio::test]
async fn a_deps_change_misses_without_a_flush() {
    let up = healthy_backend("up").await;
    let v1 = config("deps", &up.url(), TTL, "");
    let proxy = start_proxy(&v1).await;
    assert_eq!(ask(&proxy, "/deps/x", CHAT, &[]).await.0, "miss");
    assert_eq!(ask(&proxy, "/deps/x", CHAT, &[]).await.0, "hit");

    // A new prompt version: same request, new answer.
    let v2 = v1.replace("support@1", "support@2");
    assert_ne!(v1, v2);
    proxy.reload_with(&v2).await;
    assert_eq!(ask(&proxy, "/deps/x", CHAT, &[]).await.0, "miss");
    assert_eq!(requests(&up), 2);
    // Nothing was flushed: both answers are held, and going back to the
    // old prompt finds the old answer.
    assert_eq!(status(&proxy).await["cache"]["entries"], 2);
    proxy.reload_with(&v1).await;
    assert_eq!(ask(&proxy, "/deps/x", CHAT, &[]).await.0, "hit");
    assert_eq!(requests(&up), 2);
}

#[tokio::test]
async fn nondeterministic_and_no_store_requests_bypass() {
    let up = healthy_backend("up").await;
    let proxy = start_proxy(&config(
        "bypass",
        &up.url(),
        r#"ttl = "60s", deterministic_only = true"#,
        "",
    ))
    .await;
    let hot = r#"{"model":"m","temperature":0.7,"messages":[{"role":"user","content":"hi"}]}"#;
    let cold = r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(
        ask(&proxy, "/bypass/x", CHAT, &[]).await.0,
        "bypass",
        "no temperature"
    );
    assert_eq!(ask(&proxy, "/bypass/x", hot, &[]).await.0, "bypass");
    assert_eq!(ask(&proxy, "/bypass/x", hot, &[]).await.0, "bypass");
    assert_eq!(ask(&proxy, "/bypass/x", cold, &[]).await.0, "miss");
    assert_eq!(ask(&proxy, "/bypass/x", cold, &[]).await.0, "hit");
    for directive in ["no-store", "no-cache", "max-age=0, No-Cache"] {
        let (cache, status, _) =
            ask(&proxy, "/bypass/x", cold, &[("cache-control", directive)]).await;
        assert_eq!((cache.as_str(), status), ("bypass", 200), "{directive}");
    }
    assert_eq!(requests(&up), 7);
    wait_metric(
        &proxy,
        CACHE_REQUESTS,
        &[("route", "bypass"), ("result", "bypass")],
        6.0,
    )
    .await;
}

#[tokio::test]
async fn fallback_answers_are_not_stored() {
    let broken = backend(MockArgs {
        status: Some(StatusCode::SERVICE_UNAVAILABLE),
        ..MockArgs::new(loopback0())
    })
    .await;
    let backup = healthy_backend("backup").await;
    let extra = r#"fallbacks = [{ name = "backup", upstream = "fb-backup" }]"#;
    let toml = config("fb", &broken.url(), TTL, extra).replace(
        "[[routes]]",
        &format!(
            "[[upstreams]]\nname = \"fb-backup\"\nurl = \"{}\"\n[[routes]]",
            backup.url()
        ),
    );
    let proxy = start_proxy(&toml).await;
    for _ in 0..2 {
        let r = post(&proxy, "/fb/x", CHAT, &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-cutover-upstream"], "fb-backup");
        assert_eq!(r.headers()["x-cutover-cache"], "miss");
        r.bytes().await.expect("body");
    }
    assert_eq!(
        requests(&backup),
        2,
        "the fallback's answer was not replayed"
    );
    assert_eq!(status(&proxy).await["cache"]["entries"], 0);
}

/// An upstream that compresses although cutover asked for `identity`: its
/// answer reaches the client with its `content-encoding`, and is never
/// stored, since an entry keeps only the content type and a hit would
/// replay the compressed bytes as plain JSON.
#[tokio::test]
async fn a_content_coded_answer_is_not_stored() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = std::sync::Arc::clone(&answered);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let count = std::sync::Arc::clone(&count);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                // One request a connection: read to its body's last brace.
                while !seen.ends_with(b"}") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = b"\x1f\x8b not really gzip";
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-encoding: gzip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body).await;
            });
        }
    });
    let proxy = start_proxy(&config("coded", &format!("http://{addr}"), TTL, "")).await;
    for _ in 0..2 {
        let r = post(&proxy, "/coded/x", CHAT, &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-cutover-cache"], "miss");
        assert_eq!(r.headers()["content-encoding"], "gzip");
        r.bytes().await.expect("body");
    }
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(status(&proxy).await["cache"]["entries"], 0);
}

#[tokio::test]
async fn a_truncated_stream_is_not_stored() {
    let cut = backend(MockArgs {
        abort_after: Some(2),
        ..MockArgs::new(loopback0())
    })
    .await;
    let proxy = start_proxy(&config("trunc", &cut.url(), TTL, "")).await;
    for _ in 0..2 {
        let r = post(&proxy, "/trunc/x", CHAT_STREAM, &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-cutover-cache"], "miss");
        assert!(r.bytes().await.is_err(), "the client sees the stream break");
    }
    assert_eq!(requests(&cut), 2);
    assert_eq!(status(&proxy).await["cache"]["entries"], 0);
}

#[tokio::test]
async fn a_streamed_answer_is_replayed_byte_for_byte() {
    let up = backend(MockArgs {
        name: "streamer".into(),
        chunks: 8,
        chunk_delay: Duration::from_millis(5),
        ..MockArgs::new(loopback0())
    })
    .await;
    let proxy = start_proxy(&config("replay", &up.url(), TTL, "")).await;
    let first = post(&proxy, "/replay/x", CHAT_STREAM, &[]).await;
    assert_eq!(first.headers()["x-cutover-cache"], "miss");
    let ct = first.headers()["content-type"].clone();
    assert!(ct.as_bytes().starts_with(b"text/event-stream"));
    let b1 = first.bytes().await.expect("body");
    assert!(b1.windows(6).any(|w| w == b"[DONE]"));

    let second = post(&proxy, "/replay/x", CHAT_STREAM, &[]).await;
    assert_eq!(second.headers()["x-cutover-cache"], "hit");
    assert_eq!(second.headers()["content-type"], ct);
    let b2 = second.bytes().await.expect("body");
    assert_eq!(b1, b2, "byte-identical replay");
    assert_eq!(requests(&up), 1);
}

#[tokio::test]
async fn the_size_bounds_hold() {
    let up = healthy_backend("up").await;
    let toml = config("bound", &up.url(), TTL, "")
        .replace("max_size = \"16MiB\"", "max_size = \"32KiB\"")
        .replace("max_entry_size = \"1MiB\"", "max_entry_size = \"1KiB\"");
    let proxy = start_proxy(&toml).await;
    // A streamed answer (about 2 KiB of SSE) is over the entry limit: the
    // client gets all of it, the cache keeps none of it.
    let (c, _, body) = ask(&proxy, "/bound/x", CHAT_STREAM, &[]).await;
    assert_eq!(c, "miss");
    assert!(body.len() > 1024, "{}", body.len());
    assert_eq!(ask(&proxy, "/bound/x", CHAT_STREAM, &[]).await.0, "miss");
    assert_eq!(status(&proxy).await["cache"]["entries"], 0);

    // Many small distinct answers: the store stays within max_size.
    for i in 0..200 {
        let body =
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":"question {i}"}}]}}"#);
        assert_eq!(ask(&proxy, "/bound/x", &body, &[]).await.1, 200);
    }
    let st = status(&proxy).await;
    let bytes = st["cache"]["bytes"].as_u64().expect("bytes");
    let entries = st["cache"]["entries"].as_u64().expect("entries");
    assert!(bytes <= 32 * 1024, "{}", st["cache"]);
    assert!(entries > 10 && entries < 200, "{}", st["cache"]);
}

#[tokio::test]
async fn purge_drops_every_entry() {
    let up = healthy_backend("up").await;
    let proxy = start_proxy(&config("purge", &up.url(), TTL, "")).await;
    assert_eq!(ask(&proxy, "/purge/x", CHAT, &[]).await.0, "miss");
    assert_eq!(ask(&proxy, "/purge/x", CHAT, &[]).await.0, "hit");
    let c = client();
    let r = c
        .post(format!("{}/cache/purge", proxy.admin_url()))
        .send()
        .await
        .expect("purge");
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["purged"], 1);
    assert_eq!(status(&proxy).await["cache"]["entries"], 0);
    assert_eq!(ask(&proxy, "/purge/x", CHAT, &[]).await.0, "miss");
    // GET is refused with the allowed method named.
    let r = c
        .get(format!("{}/cache/purge", proxy.admin_url()))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    // The traffic port does not serve it.
    let r = c
        .post(format!("{}/cache/purge", proxy.url()))
        .send()
        .await
        .expect("traffic");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn concurrent_identical_misses_call_the_upstream_once() {
    let slow = backend(MockArgs {
        latency: Duration::from_millis(300),
        ..MockArgs::new(loopback0())
    })
    .await;
    let proxy = start_proxy(&config("herd", &slow.url(), TTL, "")).await;
    let started = Instant::now();
    let asks = (0..6).map(|_| ask(&proxy, "/herd/x", CHAT, &[]));
    let answers = futures_util::future::join_all(asks).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        requests(&slow),
        1,
        "one upstream call for six identical misses"
    );
    let first = &answers[0].2;
    let mut results: Vec<&str> = answers.iter().map(|a| a.0.as_str()).collect();
    results.sort();
    assert_eq!(results, ["hit", "hit", "hit", "hit", "hit", "miss"]);
    assert!(answers.iter().all(|a| a.1 == 200 && a.2 == *first));
}

#[tokio::test]
async fn a_body_that_is_not_json_is_keyed_by_its_bytes_and_forwarded_unchanged() {
    let up = healthy_backend("up").await;
    let toml = config("raw", &up.url(), TTL, "").replace(
        "weight = 100.0",
        "weight = 100.0\nset_json = { model = \"pinned-model\" }",
    );
    let proxy = start_proxy(&toml).await;
    let send = |body: &'static str| {
        let proxy = &proxy;
        async move {
            let r = client()
                .post(format!("{}/raw/x", proxy.url()))
                .header("content-type", "text/plain")
                .body(body)
                .send()
                .await
                .expect("request");
            r.headers()["x-cutover-cache"]
                .to_str()
                .unwrap_or("")
                .to_string()
        }
    };
    assert_eq!(send("plain words, not json").await, "miss");
    assert_eq!(
        up.stats().last_record().expect("record").body,
        "plain words, not json"
    );
    assert_eq!(send("plain words, not json").await, "hit");
    assert_eq!(
        send("plain words,  not json").await,
        "miss",
        "bytes, not meaning"
    );
    assert_eq!(requests(&up), 2);
    wait_metric(
        &proxy,
        "cutover_set_json_skipped_total",
        &[("route", "raw"), ("target", "v1")],
        2.0,
    )
    .await;
}

/// A 200 MiB answer through the real binary: the process grows by at most
/// the entry limit plus a few MiB, because capture stops at the limit and
/// nothing is read ahead of a slow client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_answer_passes_without_growing_the_process() {
    const TOTAL: usize = 200 * 1024 * 1024;
    let upstream = big_upstream(TOTAL).await;
    let (sockets, port, admin) = traffic_and_admin();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cutover.toml");
    let toml = on_ports(
        &config("huge", &format!("http://{upstream}"), TTL, ""),
        port,
        admin,
    )
    .replace("max_entry_size = \"1MiB\"", "max_entry_size = \"4MiB\"")
    .replace("idle_timeout = \"1s\"", "idle_timeout = \"30s\"");
    std::fs::write(&path, toml).expect("write");
    let bin = Binary::spawn_with(
        &[
            "serve",
            "--config",
            path.to_str().expect("utf-8"),
            "--no-watch",
        ],
        &[("CUTOVER_WORKERS", "2")],
        sockets,
    );
    assert!(wait_ready(([127, 0, 0, 1], admin).into(), Duration::from_secs(10)).await);
    let pid = bin.child.id();
    let c = client();
    let url = format!("http://127.0.0.1:{port}/huge/x");
    // Warm up with a 32 MiB answer the cache does not keep (no-store):
    // connection pools, I/O buffers and the allocator's arenas reach their
    // working size, so what follows measures growth with the answer's size.
    let mut warm = c
        .post(&url)
        .body("warm-up")
        .header("x-size", "33554432")
        .header("cache-control", "no-store")
        .send()
        .await
        .expect("warm");
    while warm.chunk().await.expect("warm chunk").is_some() {}
    let base = rss_kib(pid);

    let mut r = c.post(&url).body(CHAT).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let mut received = 0usize;
    let mut peak = base;
    let mut chunks = 0u64;
    while let Some(chunk) = r.chunk().await.expect("chunk") {
        received += chunk.len();
        chunks += 1;
        // A slow client for the first 16 MiB.
        if received < 16 * 1024 * 1024 && chunks.is_multiple_of(16) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if chunks.is_multiple_of(64) {
            peak = peak.max(rss_kib(pid));
        }
    }
    peak = peak.max(rss_kib(pid));
    assert_eq!(received, TOTAL);
    let grown_mib = (peak.saturating_sub(base)) as f64 / 1024.0;
    eprintln!("RSS base {base} KiB, peak {peak} KiB, grown {grown_mib:.1} MiB");
    // The entry limit (4 MiB) plus slack for buffers in flight and for
    // what the allocator holds for a moment after they are freed (mimalloc
    // returns a freed page 10-100 ms later: 6-8 MiB here, glibc 2). A
    // cache that kept the answer would grow by its 200 MiB.
    assert!(
        grown_mib < 4.0 + 8.0,
        "RSS grew {grown_mib:.1} MiB (base {base} KiB, peak {peak} KiB)"
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// An upstream that answers with `x-size` bytes (default `total`) of
/// filler in 64 KiB frames, produced only as fast as they are read.
async fn big_upstream(total: usize) -> std::net::SocketAddr {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let n = req
                            .headers()
                            .get("x-size")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(total);
                        let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
                        let frames = (0..n.div_ceil(64 * 1024)).map(move |i| {
                            let len = (n - i * 64 * 1024).min(64 * 1024);
                            Ok::<_, std::convert::Infallible>(Frame::data(chunk.slice(..len)))
                        });
                        let body = StreamBody::new(futures_util::stream::iter(frames));
                        let mut resp = http::Response::new(body);
                        resp.headers_mut().insert(
                            "content-type",
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(resp)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn entries_expire_after_their_routes_ttl() {
    let up = healthy_backend("up").await;
    let proxy = start_proxy(&config(
        "ttl",
        &up.url(),
        r#"ttl = "400ms", deterministic_only = false"#,
        "",
    ))
    .await;
    assert_eq!(ask(&proxy, "/ttl/x", CHAT, &[]).await.0, "miss");
    assert_eq!(ask(&proxy, "/ttl/x", CHAT, &[]).await.0, "hit");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(ask(&proxy, "/ttl/x", CHAT, &[]).await.0, "miss");
    assert_eq!(requests(&up), 2);
}

/// Read a response's body frame by frame: (time of the first frame since
/// `t0`, the whole body, whether it ended complete).
async fn read_timed(mut r: reqwest::Response, t0: Instant) -> (Option<Duration>, Vec<u8>, bool) {
    let mut first = None;
    let mut body = Vec::new();
    loop {
        match r.chunk().await {
            Ok(Some(chunk)) => {
                if first.is_none() && !chunk.is_empty() {
                    first = Some(t0.elapsed());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return (first, body, true),
            Err(_) => return (first, body, false),
        }
    }
}

/// SPEC §6: a follower of an identical miss gets the leader's stream as it
/// arrives, chunk by chunk, not the whole answer at its end; both get the
/// same bytes from one upstream call.
#[tokio::test]
async fn a_follower_streams_the_leaders_answer_as_it_arrives() {
    let slow = backend(MockArgs {
        name: "trickle".into(),
        chunks: 2,
        // 6 events, 600 ms apart: the answer takes 3 s.
        chunk_delay: Duration::from_millis(600),
        ..MockArgs::new(loopback0())
    })
    .await;
    let proxy = start_proxy(&config("follow", &slow.url(), TTL, "")).await;
    let t0 = Instant::now();
    let leader = post(&proxy, "/follow/x", CHAT_STREAM, &[]).await;
    assert_eq!(leader.headers()["x-cutover-cache"], "miss");
    let leading = tokio::spawn(read_timed(leader, t0));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let follower = post(&proxy, "/follow/x", CHAT_STREAM, &[]).await;
    assert_eq!(follower.status(), 200);
    assert_eq!(follower.headers()["x-cutover-cache"], "hit");
    assert!(
        follower.headers()["content-type"]
            .as_bytes()
            .starts_with(b"text/event-stream")
    );
    let (first, followed, complete) = read_timed(follower, t0).await;
    let (_, led, led_complete) = leading.await.expect("leader");
    let first = first.expect("a first chunk");
    assert!(
        first < Duration::from_millis(1500),
        "the follower's first chunk came at {first:?}, with the leader's stream taking {:?}",
        t0.elapsed()
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        t0.elapsed()
    );
    assert!(complete && led_complete);
    assert_eq!(followed, led, "the follower's bytes are the leader's");
    assert_eq!(requests(&slow), 1, "one upstream call");
    // And it was stored for the next one.
    let (cache, _, body) = ask(&proxy, "/follow/x", CHAT_STREAM, &[]).await;
    assert_eq!((cache.as_str(), &body[..]), ("hit", &led[..]));
}

/// When the leader's answer is not storable (here its own upstream fails
/// and a slow fallback answers), the followers still waiting go upstream
/// on their own at once, not when the leader's answer is done.
#[tokio::test]
async fn followers_of_an_unstorable_answer_go_upstream_at_once() {
    let failing = backend(MockArgs {
        name: "fails".into(),
        status: Some(StatusCode::INTERNAL_SERVER_ERROR),
        latency: Duration::from_millis(400),
        ..MockArgs::new(loopback0())
    })
    .await;
    let fallback = backend(MockArgs {
        name: "slow-fb".into(),
        latency: Duration::from_secs(3),
        ..MockArgs::new(loopback0())
    })
    .await;
    let fallback_upstream = format!(
        "[[upstreams]]\nname = \"unstorable-fb\"\nurl = \"{}\"\nheader_timeout = \"10s\"\n",
        fallback.url()
    );
    let toml = config(
        "unstorable",
        &failing.url(),
        TTL,
        r#"fallbacks = [{ name = "fb", upstream = "unstorable-fb" }]"#,
    )
    .replacen("[[routes]]", &format!("{fallback_upstream}[[routes]]"), 1);
    let proxy = start_proxy(&toml).await;
    let t0 = Instant::now();
    let leader = tokio::spawn({
        let url = format!("{}/unstorable/x", proxy.url());
        async move {
            client()
                .post(url)
                .header("content-type", "application/json")
                .body(CHAT)
                .send()
                .await
                .expect("leader")
        }
    });
    assert!(eventually(Duration::from_secs(2), || requests(&failing) == 1).await);
    let follower = tokio::spawn({
        let url = format!("{}/unstorable/x", proxy.url());
        async move {
            client()
                .post(url)
                .header("content-type", "application/json")
                .body(CHAT)
                .send()
                .await
                .expect("follower")
        }
    });
    // The leader's own attempt fails at ~400 ms; the follower must reach
    // the upstream itself soon after, long before the fallback's 3 s.
    assert!(
        eventually(Duration::from_millis(1500), || requests(&failing) == 2).await,
        "the follower waited for the leader's fallback ({:?})",
        t0.elapsed()
    );
    let (leader, follower) = (
        leader.await.expect("leader"),
        follower.await.expect("follower"),
    );
    for r in [&leader, &follower] {
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-cutover-upstream"], "unstorable-fb");
    }
    assert_eq!(status(&proxy).await["cache"]["entries"], 0);
}

/// `[cache] lock_timeout` bounds a follower's wait for the leader's first
/// byte: past it, the follower goes upstream on its own.
#[tokio::test]
async fn a_follower_goes_alone_after_the_lock_timeout() {
    let slow = backend(MockArgs {
        name: "slow-head".into(),
        latency: Duration::from_secs(1),
        ..MockArgs::new(loopback0())
    })
    .await;
    let toml = config("locktimeout", &slow.url(), TTL, "").replace(
        "max_entry_size = \"1MiB\"",
        "max_entry_size = \"1MiB\"\nlock_timeout = \"300ms\"",
    );
    let proxy = start_proxy(&toml).await;
    let leader = tokio::spawn({
        let url = format!("{}/locktimeout/x", proxy.url());
        async move { client().post(url).body(CHAT).send().await.expect("leader") }
    });
    assert!(eventually(Duration::from_secs(2), || requests(&slow) == 1).await);
    let t0 = Instant::now();
    let follower = tokio::spawn({
        let url = format!("{}/locktimeout/x", proxy.url());
        async move {
            client()
                .post(url)
                .body(CHAT)
                .send()
                .await
                .expect("follower")
        }
    });
    assert!(
        eventually(Duration::from_millis(700), || requests(&slow) == 2).await,
        "the follower did not go upstream after the lock timeout"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    let follower = follower.await.expect("follower");
    assert_eq!(follower.status(), 200);
    assert_eq!(follower.headers()["x-cutover-cache"], "miss");
    assert_eq!(leader.await.expect("leader").status(), 200);
}

/// A leader's stream that breaks mid-way: a follower already streaming it
/// keeps the bytes it got, and its stream ends broken too (never framed as
/// complete); nothing is stored.
#[tokio::test]
async fn a_broken_leader_stream_breaks_its_followers_streams() {
    let cut = backend(MockArgs {
        name: "cut".into(),
        chunks: 4,
        chunk_delay: Duration::from_millis(300),
        abort_after: Some(4),
        ..MockArgs::new(loopback0())
    })
    .await;
    let proxy = start_proxy(&config("brokenlead", &cut.url(), TTL, "")).await;
    let t0 = Instant::now();
    let leader = post(&proxy, "/brokenlead/x", CHAT_STREAM, &[]).await;
    let leading = tokio::spawn(read_timed(leader, t0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let follower = post(&proxy, "/brokenlead/x", CHAT_STREAM, &[]).await;
    assert_eq!(follower.headers()["x-cutover-cache"], "hit");
    let (first, followed, complete) = read_timed(follower, t0).await;
    let (_, led, led_complete) = leading.await.expect("leader");
    assert!(first.is_some() && !followed.is_empty());
    assert!(
        !complete && !led_complete,
        "a broken stream passed as complete"
    );
    assert_eq!(followed, led);
    assert_eq!(requests(&cut), 1);
    assert_eq!(status(&proxy).await["cache"]["entries"], 0);
}

/// `x-cutover-cache` is on every answer of a caching route, those of
/// cutover's own included: a body too large (413), a broken body (400) and
/// a shed request carry `bypass` (the cache was not consulted), and count
/// as such.
#[tokio::test]
async fn every_answer_of_a_caching_route_says_what_the_cache_did() {
    let slow = backend(MockArgs {
        name: "every".into(),
        latency: Duration::from_millis(800),
        ..MockArgs::new(loopback0())
    })
    .await;
    let toml = config("every", &slow.url(), TTL, "").replacen(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nmax_body = 1024\nmax_in_flight = 1",
        1,
    );
    let proxy = start_proxy(&toml).await;
    let too_large = post(&proxy, "/every/x", &"x".repeat(2000), &[]).await;
    assert_eq!(too_large.status(), 413);
    assert_eq!(too_large.headers()["x-cutover-cache"], "bypass");

    // A chunk size that is not hex: the body cannot be read.
    let close = raw_exchange(
        proxy.addr,
        b"POST /every/x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n\r\n",
        Duration::from_millis(1500),
    )
    .await;
    assert!(close.starts_with("HTTP/1.1 400"), "{close}");
    assert!(
        close
            .to_ascii_lowercase()
            .contains("x-cutover-cache: bypass"),
        "{close}"
    );

    let busy = tokio::spawn({
        let url = format!("{}/every/x", proxy.url());
        async move { client().post(url).body(CHAT).send().await.expect("busy") }
    });
    assert!(eventually(Duration::from_secs(2), || requests(&slow) == 1).await);
    let shed = post(&proxy, "/every/y", CHAT, &[]).await;
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["x-cutover-upstream"], "refusal");
    assert_eq!(shed.headers()["x-cutover-cache"], "bypass");
    assert_eq!(
        busy.await.expect("busy").headers()["x-cutover-cache"],
        "miss"
    );
    let text = scrape(&proxy).await;
    assert!(
        metric(
            &text,
            CACHE_REQUESTS,
            &[("route", "every"), ("result", "bypass")]
        )
        .is_some_and(|n| n >= 3.0),
        "{text}"
    );
}

/// Followers of an identical miss wait without a `max_in_flight` slot
/// (and at most `lock_timeout`): waiting costs the process nothing and
/// must not crowd out requests that work. They take a slot again when the
/// first answer arrives.
#[tokio::test]
async fn followers_wait_without_an_admission_slot() {
    let slow = backend(MockArgs {
        name: "slots".into(),
        latency: Duration::from_millis(1500),
        ..MockArgs::new(loopback0())
    })
    .await;
    let toml = config("slots", &slow.url(), TTL, "").replacen(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nmax_in_flight = 10",
        1,
    );
    let proxy = start_proxy(&toml).await;
    let ask_one = || {
        let url = format!("{}/slots/x", proxy.url());
        tokio::spawn(async move {
            let r = client()
                .post(url)
                .header("content-type", "application/json")
                .body(CHAT)
                .send()
                .await
                .expect("response");
            let cache = r.headers()["x-cutover-cache"]
                .to_str()
                .unwrap_or("")
                .to_string();
            (r.status().as_u16(), cache)
        })
    };
    let leader = ask_one();
    assert!(eventually(Duration::from_secs(2), || requests(&slow) == 1).await);
    let followers: Vec<_> = (0..3).map(|_| ask_one()).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let in_flight = proxy
        .gateway
        .data_plane
        .in_flight
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(in_flight, 1, "waiting followers hold admission slots");
    assert_eq!(leader.await.expect("leader"), (200, "miss".to_string()));
    for f in followers {
        assert_eq!(f.await.expect("follower"), (200, "hit".to_string()));
    }
    assert_eq!(requests(&slow), 1);
}
