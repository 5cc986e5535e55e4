//! Circuit breakers over real sockets and real time (SPEC §2
//! `[upstreams.breaker]`, `max_in_flight`; SPEC §5). The state machine is
//! unit-tested on a manual clock in `src/upstream/breaker.rs`; these tests
//! check the wiring: what the proxy sends (or does not send) upstream, what
//! the client gets, what `/status` and `/metrics` show, and what survives a
//! reload. Metrics are process-global within this binary, so every test uses
//! its own route and upstream names (prefixed by a tag).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use cutover::mock::MockArgs;
use serde_json::Value;

const UPSTREAMS: &str = "cutover_upstream_requests_total";
const BREAKER_STATE: &str = "cutover_breaker_state";
const WAIT: Duration = Duration::from_secs(3);

/// A test upstream whose answer can be changed while it runs: every request
/// is counted on arrival, waits `delay`, then gets `status` with a small
/// JSON body. (The mock backend's behaviour is fixed at spawn, and a
/// breaker is keyed by the upstream's url, so a test that needs the same
/// upstream to fail and then recover needs one it can switch.)
struct Switch {
    url: String,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
    hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Switch {
    async fn start(status: u16) -> Switch {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let status = Arc::new(AtomicU16::new(status));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let hits = Arc::new(AtomicU64::new(0));
        let (s, d, h) = (
            Arc::clone(&status),
            Arc::clone(&delay_ms),
            Arc::clone(&hits),
        );
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, d, h) = (Arc::clone(&s), Arc::clone(&d), Arc::clone(&h));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (s, d, h) = (Arc::clone(&s), Arc::clone(&d), Arc::clone(&h));
                            async move {
                                use http_body_util::BodyExt;
                                let _ = req.into_body().collect().await;
                                h.fetch_add(1, Ordering::SeqCst);
                                let delay = d.load(Ordering::SeqCst);
                                if delay > 0 {
                                    tokio::time::sleep(Duration::from_millis(delay)).await;
                                }
                                let code = s.load(Ordering::SeqCst);
                                let mut resp = http::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from(format!(r#"{{"switch":{code}}}"#)),
                                ));
                                *resp.status_mut() =
                                    http::StatusCode::from_u16(code).expect("status");
                                resp.headers_mut().insert(
                                    http::header::CONTENT_TYPE,
                                    http::HeaderValue::from_static("application/json"),
                                );
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Switch {
            url: format!("http://{addr}"),
            status,
            delay_ms,
            hits,
            task,
        }
    }

    fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Requests that reached this upstream.
    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An `[[upstreams]]` entry: short timeouts, `extra` upstream keys (e.g.
/// `max_in_flight`), and the `[upstreams.breaker]` table.
fn upstream(name: &str, url: &str, extra: &str, breaker: &str) -> String {
    format!(
        r#"
[[upstreams]]
name = "{name}"
url = "{url}"
connect_timeout = "300ms"
header_timeout = "3s"
idle_timeout = "2s"
{extra}
[upstreams.breaker]
{breaker}
"#
    )
}

/// Route `route` (matching `/{route}/`) with version `v1` on `primary` and,
/// when given, one fallback target `fb` on upstream `fallback`.
fn route(route: &str, primary: &str, fallback: Option<&str>) -> String {
    let fallbacks = fallback
        .map(|fb| format!(r#"fallbacks = [{{ name = "fb", upstream = "{fb}" }}]"#))
        .unwrap_or_default();
    format!(
        r#"
[[routes]]
name = "{route}"
match = {{ path_prefix = "/{route}/" }}
{fallbacks}
[[routes.versions]]
name = "v1"
upstream = "{primary}"
weight = 100.0
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

/// The usual shape: route `tag` on upstream `{tag}-a` (at `primary`, with
/// `breaker`) falling back to upstream `{tag}-fb` (at `fallback`).
fn with_fallback(tag: &str, primary: &str, fallback: &str, breaker: &str) -> String {
    let a = format!("{tag}-a");
    let fb = format!("{tag}-fb");
    config(
        &format!(
            "{}{}",
            upstream(&a, primary, "", breaker),
            upstream(&fb, fallback, "", "")
        ),
        &route(tag, &a, Some(&fb)),
    )
}

async fn post_body(proxy: &Proxy, route: &str, body: &'static str) -> reqwest::Response {
    client()
        .post(format!("{}/{route}/chat/completions", proxy.url()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("response")
}

async fn post(proxy: &Proxy, route: &str) -> reqwest::Response {
    post_body(proxy, route, CHAT).await
}

/// Which upstream produced the response (`x-cutover-upstream`).
fn served_by(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-cutover-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// POSTs and asserts a 200 produced by `upstream`.
async fn expect_served(proxy: &Proxy, route: &str, upstream: &str) {
    let resp = post(proxy, route).await;
    let (status, by) = (resp.status(), served_by(&resp));
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(
        (status.as_u16(), by.as_str()),
        (200, upstream),
        "route {route}: {body}"
    );
}

/// `/status` upstreams[] entry for `name`.
async fn upstream_status(proxy: &Proxy, name: &str) -> Value {
    let doc: Value = reqwest::get(format!("{}/status", proxy.admin_url()))
        .await
        .expect("status")
        .json()
        .await
        .expect("status json");
    doc["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("no upstream {name} in /status: {doc}"))
        .clone()
}

async fn breaker_state(proxy: &Proxy, name: &str) -> String {
    upstream_status(proxy, name).await["breaker"]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Polls `/status` until the breaker of `name` reads `state`; returns that
/// upstream entry, or panics with the last one.
async fn wait_state(proxy: &Proxy, name: &str, state: &str) -> Value {
    let reached =
        eventually_async(WAIT, || async { breaker_state(proxy, name).await == state }).await;
    let last = upstream_status(proxy, name).await;
    assert!(reached, "breaker of {name} never read {state}: {last}");
    last
}

async fn gauge(proxy: &Proxy, name: &str) -> Option<f64> {
    metric(&scrape(proxy).await, BREAKER_STATE, &[("upstream", name)])
}

async fn count(proxy: &Proxy, upstream: &str, result: &str) -> f64 {
    metric(
        &scrape(proxy).await,
        UPSTREAMS,
        &[("upstream", upstream), ("result", result)],
    )
    .unwrap_or(0.0)
}

fn breaker_u64(status: &Value, field: &str) -> u64 {
    status["breaker"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("breaker.{field} missing: {status}"))
}

/// 1. Closed -> open on a failure streak; open refuses without touching
/// the upstream; after `open_for` it half-opens, one probe goes through
/// (a second request meanwhile is refused), the probe succeeds -> closed.
#[tokio::test]
async fn streak_opens_then_a_good_probe_closes_it() {
    let a = Switch::start(500).await;
    let fb = healthy_backend("br1-fb").await;
    let proxy = start_proxy(&with_fallback(
        "br1",
        &a.url,
        &fb.url(),
        "consecutive_failures = 3\nopen_for = \"500ms\"\nhalf_open_probes = 1",
    ))
    .await;

    // Two failures: still closed, the streak shows.
    for _ in 0..2 {
        expect_served(&proxy, "br1", "br1-fb").await;
    }
    let s = upstream_status(&proxy, "br1-a").await;
    assert_eq!(s["breaker"]["state"], "closed", "{s}");
    assert_eq!(breaker_u64(&s, "consecutive_failures"), 2, "{s}");
    assert!(s["breaker"]["half_open_in_ms"].is_null(), "{s}");

    // The third opens it: the next request is served by the fallback
    // without reaching `a`, and counted as rejected.
    expect_served(&proxy, "br1", "br1-fb").await;
    assert_eq!(a.hits(), 3);
    expect_served(&proxy, "br1", "br1-fb").await;
    assert_eq!(a.hits(), 3, "an open breaker let a request through");
    assert_eq!(count(&proxy, "br1-a", "rejected").await, 1.0);
    assert_eq!(count(&proxy, "br1-a", "failure_status").await, 3.0);

    let s = upstream_status(&proxy, "br1-a").await;
    assert_eq!(s["breaker"]["state"], "open", "{s}");
    let ms = breaker_u64(&s, "half_open_in_ms");
    assert!(ms > 0 && ms <= 500, "half_open_in_ms = {ms}");
    assert_eq!(gauge(&proxy, "br1-a").await, Some(2.0));

    // `a` recovers (slowly, so its probe stays out a while).
    a.set_status(200);
    a.set_delay(Duration::from_millis(400));
    wait_state(&proxy, "br1-a", "half-open").await;
    assert_eq!(gauge(&proxy, "br1-a").await, Some(1.0));
    assert_eq!(a.hits(), 3, "half-opening sent nothing by itself");

    let probe = {
        let url = format!("{}/br1/chat/completions", proxy.url());
        tokio::spawn(async move { client().post(url).body(CHAT).send().await })
    };
    assert!(
        eventually(WAIT, || a.hits() == 4).await,
        "the probe never reached a"
    );
    // The one probe slot is taken: this one is refused and falls back.
    expect_served(&proxy, "br1", "br1-fb").await;
    assert_eq!(a.hits(), 4, "a second request went through while half-open");
    assert_eq!(count(&proxy, "br1-a", "rejected").await, 2.0);
    assert_eq!(breaker_state(&proxy, "br1-a").await, "half-open");

    let probe = probe.await.expect("join").expect("probe response");
    assert_eq!(probe.status(), 200);
    assert_eq!(served_by(&probe), "br1-a");

    let s = wait_state(&proxy, "br1-a", "closed").await;
    assert_eq!(breaker_u64(&s, "consecutive_failures"), 0, "{s}");
    assert!(s["breaker"]["half_open_in_ms"].is_null(), "{s}");
    assert_eq!(gauge(&proxy, "br1-a").await, Some(0.0));

    a.set_delay(Duration::ZERO);
    for _ in 0..3 {
        expect_served(&proxy, "br1", "br1-a").await;
    }
    assert_eq!(a.hits(), 7);
}

/// 2. A probe that fails opens the breaker again for a fresh `open_for`.
#[tokio::test]
async fn failed_probe_opens_it_again() {
    let a = Switch::start(503).await;
    let fb = healthy_backend("br2-fb").await;
    let proxy = start_proxy(&with_fallback(
        "br2",
        &a.url,
        &fb.url(),
        "consecutive_failures = 3\nopen_for = \"400ms\"\nhalf_open_probes = 1",
    ))
    .await;
    for _ in 0..3 {
        expect_served(&proxy, "br2", "br2-fb").await;
    }
    wait_state(&proxy, "br2-a", "open").await;
    assert_eq!(a.hits(), 3);

    // The old deadline passes; the probe reaches `a`, which still fails.
    wait_state(&proxy, "br2-a", "half-open").await;
    expect_served(&proxy, "br2", "br2-fb").await;
    assert_eq!(a.hits(), 4, "the probe did not reach a");
    assert_eq!(count(&proxy, "br2-a", "failure_status").await, 4.0);

    // Open again, with a new deadline (the old one has already passed, so
    // a reused one would read 0 or half-open).
    let s = upstream_status(&proxy, "br2-a").await;
    assert_eq!(s["breaker"]["state"], "open", "{s}");
    let ms = breaker_u64(&s, "half_open_in_ms");
    assert!(ms > 200 && ms <= 400, "half_open_in_ms = {ms}: not fresh");
    assert_eq!(gauge(&proxy, "br2-a").await, Some(2.0));

    // And refusing again.
    let rejected = count(&proxy, "br2-a", "rejected").await;
    expect_served(&proxy, "br2", "br2-fb").await;
    assert_eq!(a.hits(), 4, "reopened breaker let a request through");
    assert_eq!(count(&proxy, "br2-a", "rejected").await, rejected + 1.0);
}

/// 3. The failure rate over the window opens the breaker even though the
/// streak never gets near `consecutive_failures`, but only once the window
/// holds `min_requests`.
#[tokio::test]
async fn failure_rate_opens_only_with_min_requests() {
    let a = Switch::start(200).await;
    let fb = healthy_backend("br3-fb").await;
    let proxy = start_proxy(&with_fallback(
        "br3",
        &a.url,
        &fb.url(),
        "consecutive_failures = 1000\nfailure_rate = 0.5\nmin_requests = 10\nwindow = \"10s\"\nopen_for = \"30s\"",
    ))
    .await;

    // F S F S F S F S F: 5 of 9 failed (56%), but fewer than 10 requests.
    for i in 0..9 {
        let fail = i % 2 == 0;
        a.set_status(if fail { 500 } else { 200 });
        expect_served(&proxy, "br3", if fail { "br3-fb" } else { "br3-a" }).await;
    }
    let s = upstream_status(&proxy, "br3-a").await;
    assert_eq!(s["breaker"]["state"], "closed", "{s}");
    assert_eq!(breaker_u64(&s, "window_requests"), 9, "{s}");
    assert_eq!(breaker_u64(&s, "window_failures"), 5, "{s}");
    assert_eq!(breaker_u64(&s, "consecutive_failures"), 1, "{s}");
    assert_eq!(gauge(&proxy, "br3-a").await, Some(0.0));

    // The tenth (a failure, a streak of only 2): 6 of 10 -> open.
    a.set_status(500);
    expect_served(&proxy, "br3", "br3-fb").await;
    let s = upstream_status(&proxy, "br3-a").await;
    assert_eq!(s["breaker"]["state"], "open", "{s}");
    assert!(breaker_u64(&s, "consecutive_failures") < 1000, "{s}");
    assert_eq!(gauge(&proxy, "br3-a").await, Some(2.0));

    a.set_status(200);
    expect_served(&proxy, "br3", "br3-fb").await;
    assert_eq!(a.hits(), 10, "an open breaker let a request through");
    assert_eq!(count(&proxy, "br3-a", "rejected").await, 1.0);
}

/// 4a. `max_in_flight`: the third concurrent request is refused at once
/// (and falls back) without reaching the upstream; the breaker does not
/// count it as a failure; once the first two end, requests are admitted.
#[tokio::test]
async fn max_in_flight_rejects_without_reaching_the_upstream() {
    let slow = backend(MockArgs {
        name: "br4-slow".into(),
        latency: Duration::from_millis(800),
        ..MockArgs::new(loopback0())
    })
    .await;
    let fb = healthy_backend("br4-fb").await;
    let proxy = start_proxy(&config(
        &format!(
            "{}{}",
            upstream("br4-a", &slow.url(), "max_in_flight = 2", ""),
            upstream("br4-fb", &fb.url(), "", "")
        ),
        &route("br4", "br4-a", Some("br4-fb")),
    ))
    .await;

    let url = format!("{}/br4/chat/completions", proxy.url());
    let first: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { client().post(url).body(CHAT).send().await })
        })
        .collect();
    assert!(
        eventually(WAIT, || slow.stats().requests() == 2).await,
        "the first two never reached the upstream"
    );
    let s = upstream_status(&proxy, "br4-a").await;
    assert_eq!(s["in_flight"], 2, "{s}");
    assert_eq!(breaker_u64(&s, "max_in_flight"), 2, "{s}");

    let started = Instant::now();
    expect_served(&proxy, "br4", "br4-fb").await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "rejection took {took:?}");
    assert_eq!(slow.stats().requests(), 2, "the third reached the upstream");
    assert_eq!(count(&proxy, "br4-a", "rejected").await, 1.0);

    for task in first {
        let resp = task.await.expect("join").expect("response");
        assert_eq!(resp.status(), 200);
        assert_eq!(served_by(&resp), "br4-a");
    }
    let drained = eventually_async(WAIT, || async {
        upstream_status(&proxy, "br4-a").await["in_flight"] == 0
    })
    .await;
    assert!(drained, "in_flight never went back to 0");

    // Admitted again; the rejection was not held against the upstream.
    expect_served(&proxy, "br4", "br4-a").await;
    assert_eq!(slow.stats().requests(), 3);
    let s = upstream_status(&proxy, "br4-a").await;
    assert_eq!(s["breaker"]["state"], "closed", "{s}");
    assert_eq!(breaker_u64(&s, "consecutive_failures"), 0, "{s}");
    assert_eq!(breaker_u64(&s, "window_failures"), 0, "{s}");
}

/// 4b. A streamed response holds its in-flight slot until the stream ends,
/// not just until the commit point.
#[tokio::test]
async fn a_stream_holds_its_slot_until_it_ends() {
    let sse = backend(MockArgs {
        name: "br4s-sse".into(),
        chunks: 6,
        chunk_delay: Duration::from_millis(150),
        ..MockArgs::new(loopback0())
    })
    .await;
    let fb = healthy_backend("br4s-fb").await;
    let proxy = start_proxy(&config(
        &format!(
            "{}{}",
            upstream("br4s-a", &sse.url(), "max_in_flight = 1", ""),
            upstream("br4s-fb", &fb.url(), "", "")
        ),
        &route("br4s", "br4s-a", Some("br4s-fb")),
    ))
    .await;

    let mut stream = post_body(&proxy, "br4s", CHAT_STREAM).await;
    assert_eq!(stream.status(), 200);
    assert_eq!(served_by(&stream), "br4s-a");
    let mut body = String::new();
    let first = stream.chunk().await.expect("chunk").expect("a first chunk");
    body.push_str(&String::from_utf8_lossy(&first));

    // Committed and streaming: the slot is still taken.
    let s = upstream_status(&proxy, "br4s-a").await;
    assert_eq!(s["in_flight"], 1, "{s}");
    expect_served(&proxy, "br4s", "br4s-fb").await;
    assert_eq!(
        sse.stats().requests(),
        1,
        "max_in_flight = 1 let a second in"
    );
    assert_eq!(count(&proxy, "br4s-a", "rejected").await, 1.0);

    while let Some(chunk) = stream.chunk().await.expect("chunk") {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(body.contains("[DONE]"), "stream not complete: {body}");
    let freed = eventually_async(WAIT, || async {
        upstream_status(&proxy, "br4s-a").await["in_flight"] == 0
    })
    .await;
    assert!(freed, "the stream's slot was never given back");
    expect_served(&proxy, "br4s", "br4s-a").await;
    assert_eq!(sse.stats().requests(), 2);
}

/// 5. One breaker per upstream, shared by every route that uses it.
#[tokio::test]
async fn breaker_is_shared_by_routes() {
    let shared = Switch::start(200).await;
    let fb = healthy_backend("br5-fb").await;
    let proxy = start_proxy(&config(
        &format!(
            "{}{}",
            upstream(
                "br5-shared",
                &shared.url,
                "",
                "consecutive_failures = 3\nopen_for = \"30s\""
            ),
            upstream("br5-fb", &fb.url(), "", "")
        ),
        &format!(
            "{}{}",
            route("br5-x", "br5-shared", Some("br5-fb")),
            route("br5-y", "br5-shared", Some("br5-fb"))
        ),
    ))
    .await;

    expect_served(&proxy, "br5-y", "br5-shared").await;
    shared.set_status(500);
    for _ in 0..3 {
        expect_served(&proxy, "br5-x", "br5-fb").await;
    }
    assert_eq!(shared.hits(), 4);
    wait_state(&proxy, "br5-shared", "open").await;

    // Route y never saw a failure, but the breaker is the upstream's.
    shared.set_status(200);
    expect_served(&proxy, "br5-y", "br5-fb").await;
    assert_eq!(
        shared.hits(),
        4,
        "route y reached an upstream whose breaker is open"
    );
    assert_eq!(count(&proxy, "br5-shared", "rejected").await, 1.0);
}

/// 6. Across reloads: kept (and still open, same deadline) while the url is
/// unchanged; a changed url starts with a fresh closed breaker.
#[tokio::test]
async fn breaker_survives_reload_unless_the_url_changes() {
    let a = Switch::start(500).await;
    let a2 = Switch::start(200).await;
    let fb = healthy_backend("br6-fb").await;
    let cfg = |url: &str, header_timeout: &str| {
        config(
            &format!(
                "{}{}",
                upstream(
                    "br6-a",
                    url,
                    "",
                    "consecutive_failures = 2\nopen_for = \"30s\""
                )
                .replace(
                    "header_timeout = \"3s\"",
                    &format!("header_timeout = \"{header_timeout}\"")
                ),
                upstream("br6-fb", &fb.url(), "", "")
            ),
            &route("br6", "br6-a", Some("br6-fb")),
        )
    };
    let proxy = start_proxy(&cfg(&a.url, "3s")).await;
    for _ in 0..2 {
        expect_served(&proxy, "br6", "br6-fb").await;
    }
    let before = wait_state(&proxy, "br6-a", "open").await;
    let until_before = breaker_u64(&before, "half_open_in_ms");

    // Same url, another header_timeout: the same breaker, still open.
    let generation = proxy.reload_with(&cfg(&a.url, "4s")).await;
    assert!(generation >= 2, "generation {generation}");
    let s = upstream_status(&proxy, "br6-a").await;
    assert_eq!(
        s["breaker"]["state"], "open",
        "reload lost the breaker: {s}"
    );
    let until_after = breaker_u64(&s, "half_open_in_ms");
    assert!(
        until_after <= until_before,
        "reload restarted open_for: {until_before} ms -> {until_after} ms"
    );
    assert_eq!(gauge(&proxy, "br6-a").await, Some(2.0));
    a.set_status(200);
    expect_served(&proxy, "br6", "br6-fb").await;
    assert_eq!(a.hits(), 2, "still-open breaker let a request through");

    // Another url under the same name: a fresh, closed breaker.
    proxy.reload_with(&cfg(&a2.url, "4s")).await;
    let s = upstream_status(&proxy, "br6-a").await;
    assert_eq!(s["url"], a2.url.as_str(), "{s}");
    assert_eq!(s["breaker"]["state"], "closed", "{s}");
    assert_eq!(breaker_u64(&s, "consecutive_failures"), 0, "{s}");
    assert_eq!(breaker_u64(&s, "window_requests"), 0, "{s}");
    assert!(s["breaker"]["half_open_in_ms"].is_null(), "{s}");
    assert_eq!(gauge(&proxy, "br6-a").await, Some(0.0));
    expect_served(&proxy, "br6", "br6-a").await;
    assert_eq!(a2.hits(), 1);
    assert_eq!(a.hits(), 2);
}

/// 7. A client that gives up says nothing about the upstream: its dropped
/// attempts count neither as failures nor as successes.
#[tokio::test]
async fn client_abort_is_not_a_failure() {
    let slow = backend(MockArgs {
        name: "br7-slow".into(),
        latency: Duration::from_secs(1),
        ..MockArgs::new(loopback0())
    })
    .await;
    let proxy = start_proxy(&config(
        &upstream(
            "br7-a",
            &slow.url(),
            "",
            "consecutive_failures = 3\nopen_for = \"30s\"",
        ),
        &route("br7", "br7-a", None),
    ))
    .await;

    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .expect("client");
    for i in 0..3 {
        let sent = impatient
            .post(format!("{}/br7/chat/completions", proxy.url()))
            .body(CHAT)
            .send()
            .await;
        assert!(sent.is_err(), "request {i} did not time out: {sent:?}");
    }
    assert!(
        eventually(WAIT, || slow.stats().requests() == 3).await,
        "the requests never reached the upstream ({})",
        slow.stats().requests()
    );
    // The proxy drops each abandoned attempt (and its permit).
    let dropped = eventually_async(WAIT, || async {
        upstream_status(&proxy, "br7-a").await["in_flight"] == 0
    })
    .await;
    assert!(dropped, "abandoned attempts still in flight");

    let s = upstream_status(&proxy, "br7-a").await;
    assert_eq!(s["breaker"]["state"], "closed", "{s}");
    assert_eq!(breaker_u64(&s, "consecutive_failures"), 0, "{s}");
    assert_eq!(breaker_u64(&s, "window_requests"), 0, "{s}");
    assert_eq!(breaker_u64(&s, "window_failures"), 0, "{s}");
    assert_eq!(gauge(&proxy, "br7-a").await, Some(0.0));
    for result in ["failure_status", "timeout", "rejected"] {
        assert_eq!(count(&proxy, "br7-a", result).await, 0.0, "{result}");
    }
}

/// SPEC §5: a stream that breaks after its first byte (the commit point)
/// counts as a failure of its upstream in the breaker, as it does in the
/// rollout judge. Two streams cut mid-way open a breaker set to open at
/// two failures in a row; the next request then falls back without
/// reaching the upstream. An upstream error and an idle timeout both count.
#[tokio::test]
async fn a_stream_broken_after_its_first_byte_counts_against_its_upstream() {
    let cut = backend(MockArgs {
        name: "br8-cut".into(),
        chunks: 4,
        abort_after: Some(2),
        ..MockArgs::new(loopback0())
    })
    .await;
    let fb = healthy_backend("br8-fb").await;
    let proxy = start_proxy(&with_fallback(
        "br8",
        &cut.url(),
        &fb.url(),
        "consecutive_failures = 2\nopen_for = \"30s\"",
    ))
    .await;
    for i in 0..2 {
        let resp = post_body(&proxy, "br8", CHAT_STREAM).await;
        // Committed: the client gets the upstream's head and first bytes,
        // then a broken stream (no fallback after the commit point).
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(served_by(&resp), "br8-a");
        assert!(
            resp.bytes().await.is_err(),
            "request {i} passed as complete"
        );
    }
    let s = wait_state(&proxy, "br8-a", "open").await;
    assert_eq!(count(&proxy, "br8-a", "stream_error").await, 2.0, "{s}");
    let before = cut.stats().requests();
    expect_served(&proxy, "br8", "br8-fb").await;
    assert_eq!(
        cut.stats().requests(),
        before,
        "the open breaker let one through"
    );

    // The same for a stream that falls silent past idle_timeout.
    let silent = backend(MockArgs {
        name: "br8-silent".into(),
        chunks: 3,
        // Past the upstream's idle_timeout (2s) after the first chunk.
        chunk_delay: Duration::from_secs(5),
        ..MockArgs::new(loopback0())
    })
    .await;
    let proxy = start_proxy(&config(
        &upstream(
            "br8-s",
            &silent.url(),
            "",
            "consecutive_failures = 1\nopen_for = \"30s\"",
        ),
        &route("br8s", "br8-s", None),
    ))
    .await;
    let resp = post_body(&proxy, "br8s", CHAT_STREAM).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err(), "passed as complete");
    wait_state(&proxy, "br8-s", "open").await;
}
