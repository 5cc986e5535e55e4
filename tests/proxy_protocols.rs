//! Protocols over real sockets: HTTP/2 prior knowledge, TLS with ALPN, an
//! https upstream, and graceful shutdown.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use cutover::mock::MockArgs;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A client that speaks HTTP/2 with prior knowledge (h2c).
fn h2c() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A chat request to `proxy` with one extra header.
fn chat_with(proxy: &Proxy, name: &str, value: String) -> http::Request<Full<Bytes>> {
    http::Request::post(format!("{}/v1/chat/completions", proxy.url()))
        .header(name, value)
        .body(Full::new(Bytes::from_static(CHAT.as_bytes())))
        .expect("request")
}

#[tokio::test]
async fn http2_prior_knowledge_client() {
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&one_version(&a.url(), "", "")).await;
    let client = h2c();
    let req = http::Request::post(format!("{}/v1/chat/completions", proxy.url()))
        .header("x-request-id", "h2-req")
        .body(Full::new(Bytes::from_static(CHAT.as_bytes())))
        .expect("request");
    let resp = client.request(req).await.expect("h2c response");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-cutover-version"], "v1");
    assert_eq!(resp.headers()["x-request-id"], "h2-req");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("Hello from a"));
    // The upstream leg is HTTP/1.1 with the client's path and a real Host.
    let seen = a.stats().last_record().expect("seen");
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.header("host"), Some(a.addr().to_string().as_str()));
}

/// An HTTP/2 connection with no stream open is closed (GOAWAY) after
/// `request_header_timeout`, as an idle HTTP/1 connection is; a stream
/// that outlasts the timeout is not cut.
#[tokio::test]
async fn an_idle_http2_connection_is_closed_and_a_slow_stream_is_not() {
    let a = backend(MockArgs {
        name: "a".into(),
        latency: Duration::from_millis(1200),
        ..MockArgs::new(loopback0())
    })
    .await;
    let proxy = start_proxy(&one_version(
        &a.url(),
        r#"request_header_timeout = "400ms""#,
        "",
    ))
    .await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    let mut conn = tokio::spawn(conn);
    // Three timeouts' worth of waiting for the upstream: the open stream
    // keeps the connection.
    let req = http::Request::post(format!("{}/v1/chat/completions", proxy.url()))
        .body(Full::new(Bytes::from_static(CHAT.as_bytes())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.expect("whole body");
    assert!(
        !conn.is_finished(),
        "the connection outlived the slow stream"
    );
    // Then idle: closed within the timeout and a look or two.
    let ended = tokio::time::timeout(Duration::from_secs(3), &mut conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection is closed");
}

/// HTTP/2 takes the same 64 KiB of request head as HTTP/1 (hyper's own
/// default was 16 KiB), and no more.
#[tokio::test]
async fn http2_request_heads_are_bounded_like_http1() {
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&one_version(&a.url(), "", "")).await;
    let client = h2c();
    let send = |filler: usize| client.request(chat_with(&proxy, "x-filler", "a".repeat(filler)));
    let resp = send(40 * 1024).await.expect("h2c response");
    assert_eq!(resp.status(), 200);
    let refused = send(70 * 1024).await;
    assert!(
        refused.as_ref().map_or(true, |r| r.status() == 431),
        "{refused:?}"
    );
    assert_eq!(
        a.stats().requests(),
        1,
        "the oversized head was not forwarded"
    );
}

/// On HTTP/2 a `Host` beside `:authority` must name the same host (RFC
/// 9113 §8.3.1); one that does not is refused, not forwarded.
#[tokio::test]
async fn http2_host_that_contradicts_authority_is_refused() {
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&one_version(&a.url(), "", "")).await;
    let client = h2c();
    let send = |host: String| client.request(chat_with(&proxy, "host", host));
    let resp = send("elsewhere.example".into())
        .await
        .expect("h2c response");
    assert_eq!(resp.status(), 400);
    assert_eq!(a.stats().requests(), 0, "nothing reached the upstream");
    // The same authority, in another case, is the same host.
    let same = proxy.addr.to_string().to_uppercase();
    let resp = send(same).await.expect("h2c response");
    assert_eq!(resp.status(), 200);
    assert_eq!(a.stats().requests(), 1);
}

fn tls_client(
    cert_der: Vec<u8>,
) -> Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(cert_der))
        .expect("root");
    let config = rustls::ClientConfig::builder_with_provider(cutover::crypto::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    Client::builder(TokioExecutor::new()).build(https)
}

#[tokio::test]
async fn tls_listener_negotiates_h2_by_alpn() {
    let a = healthy_backend("a").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, der) = test_certificate(dir.path());
    let server_extra = format!(
        "tls = {{ cert = {:?}, key = {:?} }}",
        cert.display().to_string(),
        key.display().to_string()
    );
    let proxy = start_proxy(&one_version(&a.url(), &server_extra, "")).await;
    let client = tls_client(der);
    let req = http::Request::post(format!(
        "https://localhost:{}/v1/chat/completions",
        proxy.addr.port()
    ))
    .body(Full::new(Bytes::from_static(CHAT_STREAM.as_bytes())))
    .expect("request");
    let resp = client.request(req).await.expect("TLS response");
    assert_eq!(resp.version(), http::Version::HTTP_2, "ALPN must pick h2");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert!(String::from_utf8_lossy(&body).ends_with("data: [DONE]\n\n"));
    let seen = a.stats().last_record().expect("seen");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));

    // A plain-text client on the TLS port gets nothing forwarded.
    let out = raw_exchange(
        proxy.addr,
        b"POST /v1/x HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(!out.contains("200 OK"), "{out}");
    assert_eq!(a.stats().requests(), 1);
}

/// client → cutover (the real binary) → https upstream (an in-process
/// cutover with a TLS listener) → mock. The binary trusts the test CA
/// through SSL_CERT_FILE, as OpenSSL-based tools do.
#[tokio::test]
async fn https_upstream_through_the_binary() {
    let a = healthy_backend("a").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, _) = test_certificate(dir.path());
    let tls_extra = format!(
        "tls = {{ cert = {:?}, key = {:?} }}",
        cert.display().to_string(),
        key.display().to_string()
    );
    let inner = start_proxy(&one_version(&a.url(), &tls_extra, "")).await;

    let (sockets, port, admin) = traffic_and_admin();
    let config = one_version(&format!("https://localhost:{}/", inner.addr.port()), "", "")
        .replace(
            "listen = \"127.0.0.1:0\"\nshutdown",
            &format!("listen = \"127.0.0.1:{port}\"\nshutdown"),
        )
        .replace(
            "[admin]\nlisten = \"127.0.0.1:0\"",
            &format!("[admin]\nlisten = \"127.0.0.1:{admin}\""),
        );
    let path = dir.path().join("outer.toml");
    std::fs::write(&path, config).expect("write");
    let _bin = Binary::spawn_with(
        &["serve", "--config", path.to_str().expect("utf8")],
        &[("SSL_CERT_FILE", cert.to_str().expect("utf8"))],
        sockets,
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        wait_ready(([127, 0, 0, 1], admin).into(), Duration::from_secs(10)).await,
        "binary did not start"
    );
    let resp = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .body(CHAT)
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-cutover-upstream"], "a");
    let seen = a.stats().last_record().expect("seen");
    assert_eq!(
        seen.header("x-forwarded-proto"),
        Some("https"),
        "the inner hop was TLS"
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_a_slow_stream_and_refuses_new_connections() {
    let slow = backend(MockArgs {
        chunks: 6,
        chunk_delay: Duration::from_millis(250),
        ..MockArgs::new(loopback0())
    })
    .await;
    let mut proxy = start_proxy(&one_version(&slow.url(), "", "")).await;
    let addr = proxy.addr;
    let c = client();
    let resp = c
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .body(CHAT_STREAM)
        .send()
        .await
        .expect("response");
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.expect("first chunk").expect("ok");
    assert!(!first.is_empty());

    let ready = reqwest::get(format!("{}/readyz", proxy.admin_url()))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let done = proxy.begin_shutdown();
    let admin = proxy.admin_url();
    assert!(
        eventually_async(Duration::from_secs(2), || async {
            reqwest::get(format!("{admin}/readyz"))
                .await
                .map(|r| r.status() == 503)
                .unwrap_or(false)
        })
        .await,
        "readyz must turn 503 while draining"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "new connections are refused while draining"
    );

    let mut rest = first.to_vec();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.expect("the in-flight stream completes"));
    }
    assert!(String::from_utf8_lossy(&rest).ends_with("data: [DONE]\n\n"));
    tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("server stopped after the stream")
        .expect("join")
        .expect("run");
}

#[test]
fn sigterm_drains_then_exits_zero() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let slow = backend(MockArgs {
            chunks: 6,
            chunk_delay: Duration::from_millis(300),
            ..MockArgs::new(loopback0())
        })
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let (sockets, port, admin) = traffic_and_admin();
        let config = one_version(&slow.url(), "", "")
            .replace(
                "listen = \"127.0.0.1:0\"\nshutdown",
                &format!("listen = \"127.0.0.1:{port}\"\nshutdown"),
            )
            .replace(
                "[admin]\nlisten = \"127.0.0.1:0\"",
                &format!("[admin]\nlisten = \"127.0.0.1:{admin}\""),
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
            .body(CHAT_STREAM)
            .send()
            .await
            .expect("response");
        let mut stream = resp.bytes_stream();
        let mut body = stream.next().await.expect("first").expect("ok").to_vec();
        bin.signal("TERM");
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk.expect("stream completes after SIGTERM"));
        }
        assert!(String::from_utf8_lossy(&body).ends_with("data: [DONE]\n\n"));
        let status = tokio::task::spawn_blocking(move || bin.wait_timeout(Duration::from_secs(10)))
            .await
            .expect("join")
            .expect("exited");
        assert_eq!(status.code(), Some(0));
    });
}
