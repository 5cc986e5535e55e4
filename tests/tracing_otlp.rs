//! OTLP/HTTP trace export to a fake collector: a span per request and per
//! upstream attempt, tied to the traceparent the upstream saw, with the
//! version set as attributes.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// A collector that keeps every JSON body POSTed to /v1/traces.
async fn collector() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::clone(&got);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let store = Arc::clone(&store);
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            if path == "/v1/traces"
                                && let Ok(v) = serde_json::from_slice(&body)
                            {
                                store.lock().expect("lock").push(v);
                            }
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"{}")),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), got)
}

fn spans(batches: &[serde_json::Value]) -> Vec<serde_json::Value> {
    batches
        .iter()
        .flat_map(|b| {
            b["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

fn attr<'a>(span: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .and_then(|a| a["value"]["stringValue"].as_str())
}

fn traced(url: &str, endpoint: &str, ratio: f64) -> String {
    one_version(url, "", "").replace(
        "[[upstreams]]",
        &format!(
            "[tracing]\notlp_endpoint = \"{endpoint}\"\nsample_ratio = {ratio:.1}\n[[upstreams]]"
        ),
    ) + "deps = { prompt = \"support@1.4\", model = \"m-2025-01-01\" }\n"
}

#[tokio::test]
async fn request_and_attempt_spans_reach_the_collector() {
    let (endpoint, got) = collector().await;
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&traced(&a.url(), &endpoint, 1.0)).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = client()
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .body(CHAT)
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    let upstream_tp = a
        .stats()
        .last_record()
        .and_then(|r| r.header("traceparent").map(str::to_owned))
        .expect("traceparent upstream");
    let our_span = &upstream_tp[36..52];

    assert!(
        eventually(Duration::from_secs(5), || spans(&got.lock().expect("lock"))
            .len()
            >= 2)
        .await
    );
    let all = spans(&got.lock().expect("lock"));
    let request = all
        .iter()
        .find(|s| s["name"] == "cutover.request")
        .expect("request span");
    assert_eq!(request["traceId"], trace_id);
    assert_eq!(request["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(
        request["spanId"], our_span,
        "the upstream's parent is cutover's request span"
    );
    assert_eq!(attr(request, "cutover.route"), Some("chat"));
    assert_eq!(attr(request, "cutover.version"), Some("v1"));
    assert_eq!(attr(request, "cutover.deps.prompt"), Some("support@1.4"));
    assert_eq!(attr(request, "http.response.status_code"), Some("200"));
    let attempt = all
        .iter()
        .find(|s| s["name"] == "cutover.attempt")
        .expect("attempt span");
    assert_eq!(attempt["parentSpanId"], our_span);
    assert_eq!(attr(attempt, "cutover.upstream"), Some("a"));
    assert_eq!(attr(attempt, "cutover.result"), Some("ok"));
}

#[tokio::test]
async fn unsampled_traces_are_not_exported() {
    let (endpoint, got) = collector().await;
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&traced(&a.url(), &endpoint, 0.0)).await;
    for _ in 0..5 {
        let resp = client()
            .post(format!("{}/v1/chat/completions", proxy.url()))
            .body(CHAT)
            .send()
            .await
            .expect("response");
        assert_eq!(resp.status(), 200);
    }
    // A caller's sampled flag still wins over the ratio.
    let resp = client()
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(CHAT)
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    assert!(
        eventually(Duration::from_secs(5), || !spans(
            &got.lock().expect("lock")
        )
        .is_empty())
        .await
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all = spans(&got.lock().expect("lock"));
    let requests: Vec<_> = all
        .iter()
        .filter(|s| s["name"] == "cutover.request")
        .collect();
    assert_eq!(
        requests.len(),
        1,
        "only the caller-sampled request is exported"
    );
    assert_eq!(requests[0]["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
}
