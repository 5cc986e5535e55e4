//! `server.max_buffered` (SPEC §2) over real sockets: every request body
//! held in memory counts against one budget from its first byte until no
//! attempt, fallback or mirror needs it; a request that would pass the
//! budget is shed with the route's refusal (`reason="overload"`), nothing
//! forwarded; `cutover_buffered_bytes` shows the figure. One test in this
//! binary: the gauge is process-wide.

mod common;

use std::time::Duration;

use common::*;
use cutover::mock::MockArgs;

const BODY: usize = 40 * 1024;

fn big_chat() -> String {
    let filler = "x".repeat(BODY - 64);
    let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{filler}"}}]}}"#);
    format!("{body}{}", " ".repeat(BODY - body.len()))
}

#[tokio::test]
async fn bodies_past_max_buffered_are_shed_until_the_held_ones_are_released() {
    let slow = backend(MockArgs {
        name: "slow".into(),
        latency: Duration::from_millis(1500),
        ..MockArgs::new(loopback0())
    })
    .await;
    let shadow = backend(MockArgs {
        name: "slow-shadow".into(),
        latency: Duration::from_millis(2500),
        ..MockArgs::new(loopback0())
    })
    .await;
    let fast = healthy_backend("fast").await;
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body = "40KiB"
max_buffered = "64KiB"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
[[upstreams]]
name = "slow"
url = "{slow}"
[[upstreams]]
name = "fast"
url = "{fast}"
[[upstreams]]
name = "shadow"
url = "{shadow}"
[[routes]]
name = "slow"
match = {{ path_prefix = "/slow/" }}
[[routes.versions]]
name = "v1"
upstream = "slow"
[[routes]]
name = "mirrored"
match = {{ path_prefix = "/mirrored/" }}
[[routes.versions]]
name = "v1"
upstream = "fast"
[[routes.shadows]]
name = "s"
upstream = "shadow"
percent = 100.0
max_in_flight = 4
"#,
        slow = slow.url(),
        fast = fast.url(),
        shadow = shadow.url(),
    );
    let proxy = start_proxy(&toml).await;
    let body = big_chat();
    assert_eq!(body.len(), BODY);
    let held = || proxy.gateway.data_plane.buffered.held();
    let send = |path: &'static str, chunked: bool| {
        let url = format!("{}{path}", proxy.url());
        let body = body.clone();
        async move {
            let req = client().post(url);
            let req = if chunked {
                // No Content-Length: the budget is only known as it grows.
                let stream = futures_util::stream::iter(
                    body.into_bytes()
                        .chunks(4096)
                        .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
                        .collect::<Vec<_>>(),
                );
                req.body(reqwest::Body::wrap_stream(stream))
            } else {
                req.body(body)
            };
            req.send().await.expect("response")
        }
    };

    // One body held while its slow upstream answers.
    let first = tokio::spawn(send("/slow/chat", false));
    assert!(eventually(Duration::from_secs(2), || slow.stats().requests() == 1).await);
    assert_eq!(held(), BODY as u64);
    wait_metric(&proxy, "cutover_buffered_bytes", &[], BODY as f64).await;

    // A second one would pass 64 KiB: shed, with a declared length or not.
    for chunked in [false, true] {
        let shed = send("/slow/chat", chunked).await;
        assert_eq!(shed.status(), 503, "chunked={chunked}");
        assert_eq!(shed.headers()["x-cutover-upstream"], "refusal");
        let json: serde_json::Value = shed.json().await.expect("json");
        assert_eq!(json["error"]["code"], "cutover_refusal");
    }
    assert_eq!(slow.stats().requests(), 1, "a shed body was forwarded");
    let text = scrape(&proxy).await;
    assert_eq!(
        metric(
            &text,
            "cutover_refusals_total",
            &[("route", "slow"), ("reason", "overload")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(held(), BODY as u64, "a shed body was kept");

    // Released when its request is done: the next one passes.
    assert_eq!(first.await.expect("first").status(), 200);
    assert!(eventually(Duration::from_secs(2), || held() == 0).await);
    wait_metric(&proxy, "cutover_buffered_bytes", &[], 0.0).await;

    // A mirror needs the body after the client's answer: it stays held
    // until the slow shadow is done with it.
    let r = send("/mirrored/chat", false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        held(),
        BODY as u64,
        "released while the mirror still needs it"
    );
    let during = send("/slow/chat", false).await;
    assert_eq!(during.status(), 503, "the mirror's body is not counted");
    assert!(
        eventually(Duration::from_secs(5), || shadow.stats().requests() == 1
            && held() == 0)
        .await,
        "held {} after the mirror",
        held()
    );
    let after = send("/slow/chat", true).await;
    assert_eq!(after.status(), 200);
    assert!(eventually(Duration::from_secs(2), || held() == 0).await);
}
