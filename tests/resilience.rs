//! Resilience over real sockets (SPEC §5): one test per failure mode, each
//! checking what the client got, which upstream served it, and what was
//! counted. Metrics are process-global within this binary, so every test
//! uses its own route and upstream names (prefixed by a tag).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use cutover::mock::{MockArgs, MockHandle};
use http::StatusCode;
use http_body_util::{BodyExt, Full};

/// Nothing listens on port 1: connects are refused at once.
const DEAD: &str = "http://127.0.0.1:1";
const HEADER_TIMEOUT: Duration = Duration::from_millis(300);
const IDLE_TIMEOUT: Duration = Duration::from_millis(300);

const UPSTREAMS: &str = "cutover_upstream_requests_total";
const FALLBACKS: &str = "cutover_fallbacks_total";
const REFUSALS: &str = "cutover_refusals_total";

/// An `[[upstreams]]` entry with the short timeouts this suite runs on.
fn upstream(name: &str, url: &str, header_timeout: &str) -> String {
    upstream_with(name, url, "200ms", header_timeout)
}

fn upstream_with(name: &str, url: &str, connect_timeout: &str, header_timeout: &str) -> String {
    format!(
        r#"
[[upstreams]]
name = "{name}"
url = "{url}"
connect_timeout = "{connect_timeout}"
header_timeout = "{header_timeout}"
idle_timeout = "300ms"
"#
    )
}

fn config(upstreams: &str, routes: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "1s"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
{upstreams}
{routes}
"#
    )
}

/// Route `tag` with one version `v1` on upstream `{tag}-p` (at `primary`)
/// and, when `fallback` is given, one fallback target `fb` on upstream
/// `{tag}-fb`. `route_extra` goes into the route table (e.g. `refusal`).
fn primary_and_fallback(
    tag: &str,
    primary: &str,
    fallback: Option<&str>,
    route_extra: &str,
) -> String {
    let mut ups = upstream(&format!("{tag}-p"), primary, "300ms");
    let mut fallbacks = String::new();
    if let Some(fb) = fallback {
        ups.push_str(&upstream(&format!("{tag}-fb"), fb, "300ms"));
        fallbacks = format!(r#"fallbacks = [{{ name = "fb", upstream = "{tag}-fb" }}]"#);
    }
    config(
        &ups,
        &format!(
            r#"
[[routes]]
name = "{tag}"
{fallbacks}
{route_extra}
[[routes.versions]]
name = "v1"
upstream = "{tag}-p"
weight = 100.0
"#
        ),
    )
}

async fn mock(name: &str, args: impl FnOnce(MockArgs) -> MockArgs) -> MockHandle {
    backend(args(MockArgs {
        name: name.into(),
        ..MockArgs::new(loopback0())
    }))
    .await
}

/// A chat request pinned to `version` (the routes' `pin_header`).
async fn post_pinned(proxy: &Proxy, version: &str) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .header("x-cutover-version", version)
        .body(CHAT)
        .send()
        .await
        .expect("response")
}

async fn post(proxy: &Proxy, body: &'static str) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("response")
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Reads a body chunk by chunk: what arrived, and whether it ended in an
/// error (a cut stream) rather than cleanly.
async fn read_until_end(mut resp: reqwest::Response) -> (String, bool) {
    let mut text = String::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(None) => return (text, false),
            Err(_) => return (text, true),
        }
    }
}

/// A chat request over HTTP/2 with prior knowledge (h2c).
async fn post_h2(proxy: &Proxy, body: &'static str) -> http::Response<hyper::body::Incoming> {
    let req = http::Request::post(format!("{}/v1/chat/completions", proxy.url()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("request");
    h2c().request(req).await.expect("h2c response")
}

/// `read_until_end` for an HTTP/2 answer: a reset stream is an error.
async fn read_h2_until_end(resp: http::Response<hyper::body::Incoming>) -> (String, bool) {
    let mut body = resp.into_body();
    let mut text = String::new();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    text.push_str(&String::from_utf8_lossy(data));
                }
            }
            Some(Err(_)) => return (text, true),
            None => return (text, false),
        }
    }
}

/// A counter's value; counters that were registered but never hit read 0.
fn count(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(text, name, labels).unwrap_or(0.0)
}

fn upstream_result<'a>(upstream: &'a str, result: &'a str) -> [(&'a str, &'a str); 2] {
    [("upstream", upstream), ("result", result)]
}

/// Asserts a response was served by the fallback `fb` of route `tag` after
/// the primary failed with `result`, and that exactly that was counted.
async fn assert_fell_back(
    proxy: &Proxy,
    fb: &MockHandle,
    tag: &str,
    resp: reqwest::Response,
    result: &str,
) {
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-cutover-upstream"), format!("{tag}-fb"));
    assert_eq!(header(&resp, "x-cutover-version"), "v1");
    let body = resp.text().await.expect("body");
    assert!(
        body.contains("Hello from fb"),
        "not the fallback's body: {body}"
    );
    assert!(
        !body.contains("mock_error"),
        "the failing upstream's body leaked: {body}"
    );
    assert_eq!(fb.stats().requests(), 1);
    let primary = format!("{tag}-p");
    let fallback = format!("{tag}-fb");
    wait_metric(proxy, UPSTREAMS, &upstream_result(&primary, result), 1.0).await;
    wait_metric(proxy, UPSTREAMS, &upstream_result(&fallback, "ok"), 1.0).await;
    wait_metric(
        proxy,
        FALLBACKS,
        &[("route", tag), ("from", "v1"), ("to", "fb")],
        1.0,
    )
    .await;
}

// 1. Dead upstream.

#[tokio::test]
async fn dead_upstream_falls_back_to_the_next_target() {
    let fb = healthy_backend("fb").await;
    let proxy = start_proxy(&primary_and_fallback("dead1", DEAD, Some(&fb.url()), "")).await;
    let resp = post(&proxy, CHAT).await;
    assert_fell_back(&proxy, &fb, "dead1", resp, "connect_error").await;
    let m = scrape(&proxy).await;
    assert_eq!(
        count(&m, REFUSALS, &[("route", "dead1"), ("reason", "exhausted")]),
        0.0
    );
}

#[tokio::test]
async fn dead_upstream_without_fallbacks_gets_the_refusal() {
    let proxy = start_proxy(&primary_and_fallback("dead2", DEAD, None, "")).await;
    let resp = post(&proxy, CHAT).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&resp, "x-cutover-upstream"), "refusal");
    assert_eq!(header(&resp, "x-cutover-version"), "v1");
    assert_eq!(header(&resp, "retry-after"), "30");
    assert_eq!(header(&resp, "content-type"), "application/json");
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["error"]["type"], "service_unavailable");
    assert_eq!(json["error"]["code"], "cutover_refusal");
    assert!(
        json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    wait_metric(
        &proxy,
        UPSTREAMS,
        &upstream_result("dead2-p", "connect_error"),
        1.0,
    )
    .await;
    wait_metric(
        &proxy,
        REFUSALS,
        &[("route", "dead2"), ("reason", "exhausted")],
        1.0,
    )
    .await;
}

// 2. Hang before headers.

#[tokio::test]
async fn hang_before_headers_falls_back_after_header_timeout() {
    let hung = mock("hung", |a| MockArgs { hang: true, ..a }).await;
    let fb = healthy_backend("fb").await;
    let proxy = start_proxy(&primary_and_fallback(
        "hang",
        &hung.url(),
        Some(&fb.url()),
        "",
    ))
    .await;
    let started = Instant::now();
    let resp = post(&proxy, CHAT).await;
    let took = started.elapsed();
    assert!(
        took >= HEADER_TIMEOUT,
        "fell back before header_timeout: {took:?}"
    );
    assert!(
        took < HEADER_TIMEOUT + Duration::from_secs(2),
        "too slow: {took:?}"
    );
    assert_eq!(hung.stats().hung(), 1);
    assert_fell_back(&proxy, &fb, "hang", resp, "timeout").await;
}

// 3. Slow headers.

#[tokio::test]
async fn headers_slower_than_header_timeout_fall_back() {
    let slow = mock("slow", |a| MockArgs {
        latency: Duration::from_millis(800),
        ..a
    })
    .await;
    let fb = healthy_backend("fb").await;
    let proxy = start_proxy(&primary_and_fallback(
        "slow",
        &slow.url(),
        Some(&fb.url()),
        "",
    ))
    .await;
    let started = Instant::now();
    let resp = post(&proxy, CHAT).await;
    let took = started.elapsed();
    assert!(
        took >= HEADER_TIMEOUT,
        "fell back before header_timeout: {took:?}"
    );
    assert!(
        took < HEADER_TIMEOUT + Duration::from_secs(2),
        "too slow: {took:?}"
    );
    assert_fell_back(&proxy, &fb, "slow", resp, "timeout").await;
}

#[tokio::test]
async fn headers_within_header_timeout_are_served() {
    let slowish = mock("slowish", |a| MockArgs {
        latency: Duration::from_millis(100),
        ..a
    })
    .await;
    let fb = healthy_backend("fb").await;
    let proxy = start_proxy(&primary_and_fallback(
        "slowish",
        &slowish.url(),
        Some(&fb.url()),
        "",
    ))
    .await;
    let resp = post(&proxy, CHAT).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-cutover-upstream"), "slowish-p");
    let body = resp.text().await.expect("body");
    assert!(body.contains("Hello from slowish"), "{body}");
    assert_eq!(fb.stats().requests(), 0);
    wait_metric(&proxy, UPSTREAMS, &upstream_result("slowish-p", "ok"), 1.0).await;
    let m = scrape(&proxy).await;
    assert_eq!(
        count(&m, UPSTREAMS, &upstream_result("slowish-p", "timeout")),
        0.0
    );
    assert_eq!(
        count(
            &m,
            FALLBACKS,
            &[("route", "slowish"), ("from", "v1"), ("to", "fb")]
        ),
        0.0
    );
}

// 4. Failure statuses, and client errors that are not failures.

#[tokio::test]
async fn failure_statuses_fall_back_and_never_reach_the_client() {
    let fb = healthy_backend("fb").await;
    for code in [429u16, 500, 502, 503, 504] {
        let bad = mock("bad", |a| MockArgs {
            status: Some(StatusCode::from_u16(code).expect("status")),
            ..a
        })
        .await;
        let tag = format!("st{code}");
        let proxy = start_proxy(&primary_and_fallback(&tag, &bad.url(), Some(&fb.url()), "")).await;
        let before = fb.stats().requests();
        let resp = post(&proxy, CHAT).await;
        assert_eq!(resp.status(), 200, "status {code} was not failed over");
        assert_eq!(header(&resp, "x-cutover-upstream"), format!("{tag}-fb"));
        assert_eq!(header(&resp, "x-mock-name"), "fb");
        let body = resp.text().await.expect("body");
        assert!(body.contains("Hello from fb"), "{code}: {body}");
        assert!(
            !body.contains("injected HTTP"),
            "{code}: the failing body leaked: {body}"
        );
        assert_eq!(bad.stats().injected_errors(), 1);
        assert_eq!(fb.stats().requests(), before + 1);
        let primary = format!("{tag}-p");
        wait_metric(
            &proxy,
            UPSTREAMS,
            &upstream_result(&primary, "failure_status"),
            1.0,
        )
        .await;
        wait_metric(
            &proxy,
            FALLBACKS,
            &[("route", &tag), ("from", "v1"), ("to", "fb")],
            1.0,
        )
        .await;
    }
}

#[tokio::test]
async fn client_errors_pass_through_without_fallback() {
    let fb = healthy_backend("fb").await;
    for code in [400u16, 404, 422] {
        let status = StatusCode::from_u16(code).expect("status");
        let picky = mock("picky", |a| MockArgs {
            status: Some(status),
            ..a
        })
        .await;
        let tag = format!("cl{code}");
        let proxy = start_proxy(&primary_and_fallback(
            &tag,
            &picky.url(),
            Some(&fb.url()),
            "",
        ))
        .await;
        let resp = post(&proxy, CHAT).await;
        assert_eq!(resp.status(), status);
        assert_eq!(header(&resp, "x-cutover-upstream"), format!("{tag}-p"));
        let json: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(
            json["error"]["code"], code,
            "the upstream's error body, unchanged"
        );
        assert_eq!(json["error"]["type"], "mock_error");
        let primary = format!("{tag}-p");
        wait_metric(&proxy, UPSTREAMS, &upstream_result(&primary, "ok"), 1.0).await;
        let m = scrape(&proxy).await;
        assert_eq!(
            count(&m, UPSTREAMS, &upstream_result(&primary, "failure_status")),
            0.0
        );
        assert_eq!(
            count(
                &m,
                FALLBACKS,
                &[("route", &tag), ("from", "v1"), ("to", "fb")]
            ),
            0.0
        );
    }
    assert_eq!(fb.stats().requests(), 0, "a client error was failed over");
}

// 5. A 200 whose body breaks before its first byte.

#[tokio::test]
async fn body_error_before_first_byte_falls_back() {
    let broken = mock("broken", |a| MockArgs {
        fail_before_body: true,
        ..a
    })
    .await;
    let fb = healthy_backend("fb").await;
    let proxy = start_proxy(&primary_and_fallback(
        "fbb",
        &broken.url(),
        Some(&fb.url()),
        "",
    ))
    .await;
    let resp = post(&proxy, CHAT).await;
    assert_eq!(broken.stats().aborted(), 1);
    assert_fell_back(&proxy, &fb, "fbb", resp, "stream_error").await;
}

// 6. An abort mid-stream: no retry, and the client's stream is cut.

fn aborting(a: MockArgs) -> MockArgs {
    MockArgs {
        abort_after: Some(2),
        chunk_delay: Duration::from_millis(50),
        ..a
    }
}

#[tokio::test]
async fn abort_mid_stream_cuts_the_http1_client_without_fallback() {
    let cut = mock("cut", aborting).await;
    let fb = healthy_backend("fb").await;
    let proxy = start_proxy(&primary_and_fallback(
        "abort1",
        &cut.url(),
        Some(&fb.url()),
        "",
    ))
    .await;
    let resp = post(&proxy, CHAT_STREAM).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_11);
    assert_eq!(header(&resp, "x-cutover-upstream"), "abort1-p");
    let (text, errored) = read_until_end(resp).await;
    assert!(errored, "the cut stream ended cleanly: {text}");
    assert!(
        text.starts_with("data: "),
        "the first events did not arrive: {text}"
    );
    assert!(!text.contains("[DONE]"), "{text}");
    assert_eq!(cut.stats().aborted(), 1);
    wait_metric(
        &proxy,
        UPSTREAMS,
        &upstream_result("abort1-p", "stream_error"),
        1.0,
    )
    .await;
    assert_eq!(
        fb.stats().requests(),
        0,
        "retried after bytes reached the client"
    );
    let m = scrape(&proxy).await;
    assert_eq!(
        count(&m, UPSTREAMS, &upstream_result("abort1-p", "ok")),
        0.0
    );
    assert_eq!(
        count(
            &m,
            FALLBACKS,
            &[("route", "abort1"), ("from", "v1"), ("to", "fb")]
        ),
        0.0
    );
}

#[tokio::test]
async fn abort_mid_stream_resets_the_http2_stream_without_fallback() {
    let cut = mock("cut", aborting).await;
    let fb = healthy_backend("fb").await;
    let proxy = start_proxy(&primary_and_fallback(
        "abort2",
        &cut.url(),
        Some(&fb.url()),
        "",
    ))
    .await;
    let resp = post_h2(&proxy, CHAT_STREAM).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.headers()["x-cutover-upstream"], "abort2-p");
    let (text, errored) = read_h2_until_end(resp).await;
    assert!(
        errored,
        "the h2 stream ended cleanly instead of being reset: {text}"
    );
    assert!(text.starts_with("data: "), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    wait_metric(
        &proxy,
        UPSTREAMS,
        &upstream_result("abort2-p", "stream_error"),
        1.0,
    )
    .await;
    assert_eq!(
        fb.stats().requests(),
        0,
        "retried after bytes reached the client"
    );
}

/// An upstream that answers every request in one write: its head and
/// `partial` of a longer body, then closes. The answer is committed (a
/// body byte arrived) and then breaks, all in one read.
async fn cut_in_one_write(partial: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Read the whole request first: closing on unread bytes
                // would reset the connection and lose the answer.
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if request_is_whole(&seen) {
                        break;
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                     content-length: 10000\r\n\r\n{partial}"
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

/// Whether `seen` holds a request's head and its Content-Length of body.
fn request_is_whole(seen: &[u8]) -> bool {
    let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    seen.len() >= end + 4 + length
}

/// An answer that breaks in the same read as its head still reaches the
/// client as far as it came, then is cut: what arrived before the break is
/// not dropped with the connection.
#[tokio::test]
async fn a_stream_cut_in_the_same_read_as_its_head_reaches_the_client_as_far_as_it_came() {
    const PARTIAL: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n";
    let cut = cut_in_one_write(PARTIAL).await;
    let fb = healthy_backend("fb").await;
    let proxy = start_proxy(&primary_and_fallback("onecut", &cut, Some(&fb.url()), "")).await;
    let resp = post(&proxy, CHAT_STREAM).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-cutover-upstream"), "onecut-p");
    let (text, errored) = read_until_end(resp).await;
    assert!(errored, "the cut stream ended cleanly: {text}");
    assert_eq!(text, PARTIAL, "what came before the break was lost");
    wait_metric(
        &proxy,
        UPSTREAMS,
        &upstream_result("onecut-p", "stream_error"),
        1.0,
    )
    .await;
    assert_eq!(fb.stats().requests(), 0, "retried after the commit point");

    // HTTP/2: the DATA frame goes out before the RST_STREAM.
    let resp = post_h2(&proxy, CHAT_STREAM).await;
    assert_eq!(resp.status(), 200);
    let (text, errored) = read_h2_until_end(resp).await;
    assert!(errored, "the h2 stream ended cleanly: {text}");
    assert_eq!(text, PARTIAL, "what came before the break was lost on h2");
}

// 7. Idle timeout mid-stream.

#[tokio::test]
async fn idle_timeout_mid_stream_cuts_the_client_without_fallback() {
    let stalling = mock("stall", |a| MockArgs {
        chunk_delay: Duration::from_millis(800),
        ..a
    })
    .await;
    let fb = healthy_backend("fb").await;
    let proxy = start_proxy(&primary_and_fallback(
        "idle",
        &stalling.url(),
        Some(&fb.url()),
        "",
    ))
    .await;
    let started = Instant::now();
    let resp = post(&proxy, CHAT_STREAM).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-cutover-upstream"), "idle-p");
    let (text, errored) = read_until_end(resp).await;
    let took = started.elapsed();
    assert!(errored, "the stalled stream ended cleanly: {text}");
    assert!(
        text.starts_with("data: "),
        "the first chunk did not arrive: {text}"
    );
    assert_eq!(
        text.matches("data: ").count(),
        1,
        "only the first event beats the idle timeout: {text}"
    );
    assert!(!text.contains("[DONE]"), "{text}");
    assert!(took >= IDLE_TIMEOUT, "cut before idle_timeout: {took:?}");
    assert!(
        took < IDLE_TIMEOUT + Duration::from_secs(2),
        "too slow: {took:?}"
    );
    wait_metric(
        &proxy,
        UPSTREAMS,
        &upstream_result("idle-p", "stream_error"),
        1.0,
    )
    .await;
    assert_eq!(fb.stats().requests(), 0);
}

// 8. Refusal formats.

#[tokio::test]
async fn refusal_openai_error() {
    let proxy = start_proxy(&primary_and_fallback(
        "ref-err",
        DEAD,
        None,
        r#"refusal = { format = "openai-error", status = 503, retry_after = "7s", message = "back soon" }"#,
    ))
    .await;
    let resp = post(&proxy, CHAT).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&resp, "retry-after"), "7");
    assert_eq!(header(&resp, "content-type"), "application/json");
    assert_eq!(header(&resp, "x-cutover-upstream"), "refusal");
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(
        json,
        serde_json::json!({"error": {"message": "back soon", "type": "service_unavailable", "code": "cutover_refusal"}})
    );
    wait_metric(
        &proxy,
        REFUSALS,
        &[("route", "ref-err"), ("reason", "exhausted")],
        1.0,
    )
    .await;
}

#[tokio::test]
async fn refusal_openai_chat_plain_and_streamed() {
    let proxy = start_proxy(&primary_and_fallback(
        "ref-chat",
        DEAD,
        None,
        r#"refusal = { format = "openai-chat", message = "Sorry, try later." }"#,
    ))
    .await;
    let resp = post(&proxy, CHAT).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-cutover-upstream"), "refusal");
    assert!(header(&resp, "content-type").starts_with("application/json"));
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["object"], "chat.completion");
    assert_eq!(json["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        json["choices"][0]["message"]["content"],
        "Sorry, try later."
    );

    let resp = post(&proxy, CHAT_STREAM).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "text/event-stream");
    let text = resp.text().await.expect("body");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data event: {e:?}"))
        })
        .collect();
    let (done, chunks) = events.split_last().expect("events");
    assert_eq!(*done, "[DONE]");
    assert!(!chunks.is_empty());
    let mut content = String::new();
    for chunk in chunks {
        let v: serde_json::Value = serde_json::from_str(chunk).expect("chunk json");
        assert_eq!(v["object"], "chat.completion.chunk");
        content.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
    }
    assert_eq!(content, "Sorry, try later.");
    let last: serde_json::Value = serde_json::from_str(chunks[chunks.len() - 1]).expect("json");
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    wait_metric(
        &proxy,
        REFUSALS,
        &[("route", "ref-chat"), ("reason", "exhausted")],
        2.0,
    )
    .await;
}

#[tokio::test]
async fn refusal_raw() {
    let proxy = start_proxy(&primary_and_fallback(
        "ref-raw",
        DEAD,
        None,
        r#"refusal = { format = "raw", status = 429, body = "busy", content_type = "text/plain" }"#,
    ))
    .await;
    let resp = post(&proxy, CHAT).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&resp, "content-type"), "text/plain");
    assert_eq!(header(&resp, "retry-after"), "30");
    assert_eq!(header(&resp, "x-cutover-upstream"), "refusal");
    assert_eq!(resp.text().await.expect("body"), "busy");
    wait_metric(
        &proxy,
        REFUSALS,
        &[("route", "ref-raw"), ("reason", "exhausted")],
        1.0,
    )
    .await;
}

// 9. What fallbacks send.

#[tokio::test]
async fn fallback_set_json_reaches_its_upstream() {
    let primary = mock("primary", |a| MockArgs {
        status: Some(StatusCode::INTERNAL_SERVER_ERROR),
        ..a
    })
    .await;
    let small = healthy_backend("small").await;
    let ups =
        upstream("sj-p", &primary.url(), "300ms") + &upstream("sj-small", &small.url(), "300ms");
    let proxy = start_proxy(&config(
        &ups,
        r#"
[[routes]]
name = "sj"
fallbacks = [{ name = "small", upstream = "sj-small", set_json = { model = "small-model-2024-07-18" } }]
[[routes.versions]]
name = "v1"
upstream = "sj-p"
weight = 100.0
"#,
    ))
    .await;
    let resp = post(&proxy, CHAT).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-cutover-upstream"), "sj-small");
    assert_eq!(header(&resp, "x-cutover-version"), "v1");
    let seen = small
        .stats()
        .last_record()
        .expect("fallback saw the request");
    let body = seen.body_json().expect("json body");
    assert_eq!(body["model"], "small-model-2024-07-18");
    assert_eq!(
        body["messages"][0]["content"], "hello there",
        "other fields kept"
    );
    assert_eq!(seen.header("x-cutover-version"), Some("small"));
    let original = primary
        .stats()
        .last_record()
        .expect("primary saw the request");
    assert_eq!(original.body_json().expect("json")["model"], "m");
    wait_metric(
        &proxy,
        FALLBACKS,
        &[("route", "sj"), ("from", "v1"), ("to", "small")],
        1.0,
    )
    .await;
}

/// A request that never left (the primary refused the connection) is
/// handed back and its head re-pointed at the fallback; the primary's own
/// header rules must not travel with it, and what it removed must come back.
#[tokio::test]
async fn fallback_after_an_unsent_request_carries_only_its_own_headers() {
    let fb = healthy_backend("fb").await;
    let ups = format!(
        "{}set_headers = {{ x-primary-only = \"p\", x-both = \"primary\" }}\nremove_headers = [\"x-client\"]\n{}",
        upstream("hb-p", DEAD, "300ms"),
        upstream("hb-fb", &fb.url(), "300ms")
    );
    let proxy = start_proxy(&config(
        &ups,
        r#"
[[routes]]
name = "hb"
fallbacks = [{ name = "fb", upstream = "hb-fb", set_headers = { x-both = "fallback" } }]
[[routes.versions]]
name = "v1"
upstream = "hb-p"
weight = 100.0
set_headers = { x-version-only = "v1" }
"#,
    ))
    .await;
    for _ in 0..2 {
        let resp = client()
            .post(format!("{}/v1/chat/completions", proxy.url()))
            .header("x-client", "kept")
            .body(CHAT)
            .send()
            .await
            .expect("response");
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-cutover-upstream"), "hb-fb");
        let seen = fb.stats().last_record().expect("fallback saw the request");
        assert_eq!(seen.header("x-cutover-version"), Some("fb"));
        assert_eq!(
            seen.header("host"),
            Some(fb.url().trim_start_matches("http://"))
        );
        assert_eq!(seen.header("x-both"), Some("fallback"));
        assert_eq!(
            seen.header("x-client"),
            Some("kept"),
            "removed only for hb-p"
        );
        assert_eq!(seen.header("x-primary-only"), None, "hb-p's header leaked");
        assert_eq!(seen.header("x-version-only"), None, "v1's header leaked");
    }
    wait_metric(
        &proxy,
        UPSTREAMS,
        &upstream_result("hb-p", "connect_error"),
        2.0,
    )
    .await;
}

#[tokio::test]
async fn version_name_fallback_is_served_by_that_versions_upstream() {
    let a = healthy_backend("a").await;
    let ups = upstream("vf-a", &a.url(), "300ms") + &upstream("vf-b", DEAD, "300ms");
    let proxy = start_proxy(&config(
        &ups,
        r#"
[[routes]]
name = "vf"
pin_header = "x-cutover-version"
fallbacks = ["v1"]
[[routes.versions]]
name = "v1"
upstream = "vf-a"
weight = 50.0
[[routes.versions]]
name = "v2"
upstream = "vf-b"
weight = 50.0
"#,
    ))
    .await;
    let resp = post_pinned(&proxy, "v2").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "x-cutover-version"),
        "v2",
        "the chosen version"
    );
    assert_eq!(header(&resp, "x-cutover-upstream"), "vf-a");
    assert!(resp.text().await.expect("body").contains("Hello from a"));
    assert_eq!(a.stats().requests(), 1);
    let seen = a.stats().last_record().expect("seen");
    assert_eq!(
        seen.header("x-cutover-version"),
        Some("v1"),
        "the target actually sent to"
    );
    // vf-b adds no headers of its own, so its unsent head was re-pointed.
    assert_eq!(
        seen.header("host"),
        Some(a.url().trim_start_matches("http://"))
    );
    wait_metric(
        &proxy,
        UPSTREAMS,
        &upstream_result("vf-b", "connect_error"),
        1.0,
    )
    .await;
    wait_metric(
        &proxy,
        FALLBACKS,
        &[("route", "vf"), ("from", "v2"), ("to", "v1")],
        1.0,
    )
    .await;
}

// 10. Many clients while one upstream hangs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_while_one_upstream_hangs() {
    const CLIENTS: usize = 200;
    let a = healthy_backend("a").await;
    let hung = mock("hung", |a| MockArgs { hang: true, ..a }).await;
    // Roomy connect timeouts, and a roomy header timeout for the healthy
    // upstream: 200 clients at once on two cores must not turn into
    // refusals; how fast it really answered is what the bounds below check.
    let ups = upstream_with("cc-a", &a.url(), "2s", "5s")
        + &upstream_with("cc-b", &hung.url(), "2s", "500ms");
    let proxy = start_proxy(&config(
        &ups,
        r#"
[[routes]]
name = "cc"
salt = "cc-salt"
sticky = ["header:x-user-id"]
fallbacks = ["v1"]
[[routes.versions]]
name = "v1"
upstream = "cc-a"
weight = 50.0
[[routes.versions]]
name = "v2"
upstream = "cc-b"
weight = 50.0
"#,
    ))
    .await;
    let c = client();
    let url = format!("{}/v1/chat/completions", proxy.url());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let (c, url) = (c.clone(), url.clone());
        tasks.spawn(async move {
            let user = format!("user-{i}");
            let started = Instant::now();
            let resp = c
                .post(url)
                .header("x-user-id", &user)
                .body(CHAT)
                .send()
                .await
                .expect("response");
            let status = resp.status();
            let version = header(&resp, "x-cutover-version").to_owned();
            let upstream = header(&resp, "x-cutover-upstream").to_owned();
            let body = resp.text().await.expect("body");
            (user, status, version, upstream, body, started.elapsed())
        });
    }
    let (mut on_v1, mut on_v2) = (Vec::new(), Vec::new());
    while let Some(done) = tasks.join_next().await {
        let (user, status, version, upstream, body, took) = done.expect("task");
        assert_eq!(status, 200, "{user} ({upstream}): {body}");
        assert_eq!(upstream, "cc-a", "{user}");
        assert!(body.contains("Hello from a"), "{user}: {body}");
        let expected = if cutover::routing::bucket(b"cc-salt", user.as_bytes()) < 5000 {
            on_v1.push(took);
            "v1"
        } else {
            on_v2.push(took);
            "v2"
        };
        assert_eq!(version, expected, "{user}");
    }
    assert!(
        on_v1.len() > 50 && on_v2.len() > 50,
        "split {} / {}",
        on_v1.len(),
        on_v2.len()
    );
    let max_v1 = on_v1.iter().max().copied().unwrap_or_default();
    let max_v2 = on_v2.iter().max().copied().unwrap_or_default();
    let min_v2 = on_v2.iter().min().copied().unwrap_or_default();
    assert!(
        min_v2 >= Duration::from_millis(500),
        "v2 fell back before its header_timeout: {min_v2:?}"
    );
    assert!(
        max_v2 < Duration::from_millis(2500),
        "v2 requests waited too long: {max_v2:?}"
    );
    assert!(
        max_v1 < Duration::from_secs(1),
        "v1 requests were slowed by the hang: {max_v1:?}"
    );
    let v2 = on_v2.len() as f64;
    assert_eq!(hung.stats().hung() as f64, v2);
    wait_metric(&proxy, UPSTREAMS, &upstream_result("cc-b", "timeout"), v2).await;
    wait_metric(
        &proxy,
        FALLBACKS,
        &[("route", "cc"), ("from", "v2"), ("to", "v1")],
        v2,
    )
    .await;
    wait_metric(
        &proxy,
        UPSTREAMS,
        &upstream_result("cc-a", "ok"),
        CLIENTS as f64,
    )
    .await;
}

// 11. The fallback path of a two-step chain.

#[tokio::test]
async fn two_step_fallback_chain_counts_each_edge() {
    let b = healthy_backend("b").await;
    let ups = upstream("ch-v2", DEAD, "300ms")
        + &upstream("ch-a", DEAD, "300ms")
        + &upstream("ch-b", &b.url(), "300ms");
    let proxy = start_proxy(&config(
        &ups,
        r#"
[[routes]]
name = "ch"
fallbacks = [{ name = "a", upstream = "ch-a" }, { name = "b", upstream = "ch-b" }]
[[routes.versions]]
name = "v2"
upstream = "ch-v2"
weight = 100.0
"#,
    ))
    .await;
    let resp = post(&proxy, CHAT).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-cutover-upstream"), "ch-b");
    assert_eq!(header(&resp, "x-cutover-version"), "v2");
    assert!(resp.text().await.expect("body").contains("Hello from b"));
    wait_metric(
        &proxy,
        FALLBACKS,
        &[("route", "ch"), ("from", "v2"), ("to", "a")],
        1.0,
    )
    .await;
    wait_metric(
        &proxy,
        FALLBACKS,
        &[("route", "ch"), ("from", "a"), ("to", "b")],
        1.0,
    )
    .await;
    wait_metric(
        &proxy,
        UPSTREAMS,
        &upstream_result("ch-v2", "connect_error"),
        1.0,
    )
    .await;
    wait_metric(
        &proxy,
        UPSTREAMS,
        &upstream_result("ch-a", "connect_error"),
        1.0,
    )
    .await;
    wait_metric(&proxy, UPSTREAMS, &upstream_result("ch-b", "ok"), 1.0).await;
    let m = scrape(&proxy).await;
    assert_eq!(
        count(
            &m,
            FALLBACKS,
            &[("route", "ch"), ("from", "v2"), ("to", "b")]
        ),
        0.0
    );
}

/// A version named in the chain is skipped for its own requests: pinned to
/// v1, the chain is `a` then `v2`, and v1's upstream is tried once. The
/// series announced at start follow the same rule: v2's chain is v1, then
/// `a`, and no version falls back to itself.
#[tokio::test]
async fn chain_skips_the_version_itself() {
    let v2 = healthy_backend("v2").await;
    let ups = upstream("sk-v1", DEAD, "300ms")
        + &upstream("sk-a", DEAD, "300ms")
        + &upstream("sk-v2", &v2.url(), "300ms");
    let proxy = start_proxy(&config(
        &ups,
        r#"
[[routes]]
name = "sk"
pin_header = "x-cutover-version"
fallbacks = ["v1", { name = "a", upstream = "sk-a" }, "v2"]
[[routes.versions]]
name = "v1"
upstream = "sk-v1"
weight = 50.0
[[routes.versions]]
name = "v2"
upstream = "sk-v2"
weight = 50.0
"#,
    ))
    .await;
    let announced = scrape(&proxy).await;
    for (from, to) in [("v2", "v1"), ("v1", "a"), ("a", "v2")] {
        assert_eq!(
            metric(
                &announced,
                FALLBACKS,
                &[("route", "sk"), ("from", from), ("to", to)]
            ),
            Some(0.0),
            "{from} -> {to} announced"
        );
    }
    for v in ["v1", "v2"] {
        assert_eq!(
            metric(
                &announced,
                FALLBACKS,
                &[("route", "sk"), ("from", v), ("to", v)]
            ),
            None,
            "{v} never falls back to itself"
        );
    }
    let resp = post_pinned(&proxy, "v1").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-cutover-upstream"), "sk-v2");
    assert!(resp.text().await.expect("body").contains("Hello from v2"));
    wait_metric(
        &proxy,
        FALLBACKS,
        &[("route", "sk"), ("from", "a"), ("to", "v2")],
        1.0,
    )
    .await;
    let m = scrape(&proxy).await;
    assert_eq!(
        count(&m, UPSTREAMS, &upstream_result("sk-v1", "connect_error")),
        1.0
    );
    assert_eq!(
        count(&m, UPSTREAMS, &upstream_result("sk-a", "connect_error")),
        1.0
    );
    assert_eq!(
        count(
            &m,
            FALLBACKS,
            &[("route", "sk"), ("from", "v1"), ("to", "a")]
        ),
        1.0
    );
}

/// `connect_timeout` bounds the whole connection setup, the TLS handshake
/// included: an https upstream that accepts the TCP connection and never
/// answers the ClientHello fails as a connect error within
/// connect_timeout, and the fallback answers, long before header_timeout.
#[tokio::test]
async fn connect_timeout_covers_the_tls_handshake() {
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stall_addr = stall.local_addr().expect("addr");
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = std::sync::Arc::clone(&held);
    tokio::spawn(async move {
        // Accept, read nothing, answer nothing: the handshake never ends.
        while let Ok((socket, _)) = stall.accept().await {
            keep.lock().unwrap_or_else(|p| p.into_inner()).push(socket);
        }
    });
    let fb = healthy_backend("tls-stall-fb").await;
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
[[upstreams]]
name = "tls-stall"
url = "https://{stall_addr}"
connect_timeout = "300ms"
header_timeout = "6s"
[[upstreams]]
name = "tls-stall-fb"
url = "{fb}"
[[routes]]
name = "tls-stall"
fallbacks = [{{ name = "fb", upstream = "tls-stall-fb" }}]
[[routes.versions]]
name = "v1"
upstream = "tls-stall"
"#,
        fb = fb.url()
    );
    let proxy = start_proxy(&toml).await;
    let started = std::time::Instant::now();
    let resp = client()
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .body(CHAT)
        .send()
        .await
        .expect("response");
    let took = started.elapsed();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-cutover-upstream"], "tls-stall-fb");
    assert!(
        took < Duration::from_secs(2),
        "the stalled handshake held the attempt for {took:?}"
    );
    assert!(
        !held.lock().unwrap_or_else(|p| p.into_inner()).is_empty(),
        "no TCP connection was made"
    );
    wait_metric(
        &proxy,
        "cutover_upstream_requests_total",
        &[("upstream", "tls-stall"), ("result", "connect_error")],
        1.0,
    )
    .await;
}
