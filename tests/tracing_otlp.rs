//! OTLP/HTTP trace export to a fake collector: a span per request and per
//! upstream attempt, tied to the traceparent the upstream saw, with the
//! version set as attributes.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// A collector that keeps every JSON body POSTed to /v1/traces.
async fn collector() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let (addr, got) = collector_on(None).await;
    (format!("http://{addr}"), got)
}

/// The same collector behind TLS (the acceptor's certificate) when given.
async fn collector_on(
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (std::net::SocketAddr, Arc<Mutex<Vec<serde_json::Value>>>) {
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
            let tls = tls.clone();
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
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = http
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    }
                    Some(acceptor) => {
                        // A client that does not trust the certificate
                        // fails the handshake: nothing is served.
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = http
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                        }
                    }
                }
            });
        }
    });
    (addr, got)
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
    // A route of its own: the metrics are shared by the tests in this process.
    let toml = traced(&a.url(), &endpoint, 0.0).replace("name = \"chat\"", "name = \"unsampled\"");
    let proxy = start_proxy(&toml).await;
    for _ in 0..5 {
        let resp = client()
            .post(format!("{}/v1/chat/completions", proxy.url()))
            .body(CHAT)
            .send()
            .await
            .expect("response");
        assert_eq!(resp.status(), 200);
        resp.bytes().await.expect("body");
    }
    // The five are written up, so any span of theirs is queued before the
    // next request's: the exporter sends its queue in order.
    wait_metric(
        &proxy,
        "cutover_requests_total",
        &[("route", "unsampled"), ("version", "v1"), ("status", "2xx")],
        5.0,
    )
    .await;
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
    // Its request and attempt spans arrived: whatever was queued before
    // them has been sent too.
    let exported = |name: &str| {
        spans(&got.lock().expect("lock"))
            .iter()
            .any(|s| s["name"] == name && s["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736")
    };
    assert!(
        eventually(Duration::from_secs(5), || exported("cutover.request")
            && exported("cutover.attempt"))
        .await
    );
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

/// OTLP export to an `https://` collector (rustls), whose certificate is
/// made now by rcgen and trusted through `tracing.otlp_ca_file`. Without
/// that file the collector's certificate is not trusted and nothing is
/// exported: the export really is TLS, and really checks the certificate.
#[tokio::test]
async fn spans_reach_an_https_collector_trusted_by_otlp_ca_file() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key, _) = test_certificate(dir.path());
    let loaded = cutover::config::load_str(
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = {cert:?}, key = {key:?} }}\n[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:9\"\n[[routes]]\nname = \"r\"\n[[routes.versions]]\nname = \"v\"\nupstream = \"a\"\n"
        ),
        &dir.path().join("tls.toml"),
        &|_| None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let server_tls =
        cutover::server::server_tls_config(loaded.config.server.tls.as_ref().expect("tls"))
            .expect("server tls");
    let acceptor = tokio_rustls::TlsAcceptor::from(server_tls);

    let a = healthy_backend("a").await;
    for trusted in [true, false] {
        let (addr, got) = collector_on(Some(acceptor.clone())).await;
        let endpoint = format!("https://localhost:{}", addr.port());
        let mut toml = traced(&a.url(), &endpoint, 1.0);
        if trusted {
            toml = toml.replace(
                "sample_ratio = 1.0",
                &format!("sample_ratio = 1.0\notlp_ca_file = {cert:?}"),
            );
        }
        let proxy = start_proxy(&toml).await;
        let resp = client()
            .post(format!("{}/v1/chat/completions", proxy.url()))
            .body(CHAT)
            .send()
            .await
            .expect("response");
        assert_eq!(resp.status(), 200);
        let exported = eventually(Duration::from_secs(5), || {
            !spans(&got.lock().expect("lock")).is_empty()
        })
        .await;
        assert_eq!(exported, trusted, "trusted={trusted}");
        if trusted {
            let all = spans(&got.lock().expect("lock"));
            assert!(
                all.iter().any(|s| s["name"] == "cutover.request"),
                "{all:?}"
            );
        }
    }
}

#[tokio::test]
async fn an_unreadable_otlp_ca_file_is_a_config_error() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("cutover.toml");
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "not a certificate").expect("write");
    for (ca, why) in [("ca.pem", "no certificate"), ("missing.pem", "unreadable")] {
        let toml = traced("http://127.0.0.1:9", "https://localhost:4318", 1.0).replace(
            "sample_ratio = 1.0",
            &format!("sample_ratio = 1.0\notlp_ca_file = \"{ca}\""),
        );
        std::fs::write(&path, toml).expect("write");
        let (code, _, err) =
            run_binary(&["check", "--config", path.to_str().expect("utf-8")], &[]).await;
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains("tracing.otlp_ca_file") && err.contains(why),
            "{err}"
        );
    }
}
