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

/// HTTP/2 rapid reset (CVE-2023-44487): streams opened and cancelled at
/// once, faster than they can be served. The h2 crate counts resets of
/// streams not yet accepted (20) and answers GOAWAY `ENHANCE_YOUR_CALM`;
/// this pins that it does so in front of cutover (it fails with that limit
/// lifted), before the flood reaches the upstream, and that other clients
/// are still served.
#[tokio::test]
async fn an_http2_rapid_reset_flood_is_cut_off_before_the_upstream() {
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&one_version(&a.url(), "", "")).await;
    for end_stream in [false, true] {
        let tcp = tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect");
        let (mut client, conn) = h2::client::handshake(tcp).await.expect("handshake");
        let conn = tokio::spawn(conn);
        // One request served first: the server's SETTINGS are in, so the
        // flood keeps within its 200 concurrent streams and only the
        // resets can be held against it.
        let req = http::Request::post(format!("{}/v1/chat/completions", proxy.url()))
            .body(())
            .expect("request");
        let (resp, mut body) = client.send_request(req, false).expect("send");
        body.send_data(Bytes::from_static(CHAT.as_bytes()), true)
            .expect("body");
        assert_eq!(resp.await.expect("served").status(), 200);
        for _ in 0..10_000 {
            let Ok(ready) = client.ready().await else {
                break;
            };
            client = ready;
            let req = http::Request::post(format!("{}/v1/chat/completions", proxy.url()))
                .header("content-type", "application/json")
                .body(())
                .expect("request");
            let Ok((_, mut stream)) = client.send_request(req, end_stream) else {
                break;
            };
            stream.send_reset(h2::Reason::CANCEL);
        }
        // request_header_timeout is 10 s: an end this soon is the server's.
        let ended = tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("the flooding connection was closed")
            .expect("join");
        let Err(e) = ended else {
            panic!("closed cleanly");
        };
        assert!(e.is_go_away(), "{e:?}");
        assert_eq!(e.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{e:?}");
    }
    // The two served requests, and at most a few streams that were
    // dispatched before their reset was read.
    assert!(
        a.stats().requests() < 2 + 20,
        "the flood reached the upstream: {} requests",
        a.stats().requests()
    );
    let resp = client()
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .body(CHAT)
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
}

/// An HTTP/2 frame header (RFC 9113 §4.1) and its payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .expect("small frame")
        .to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// HTTP/2 CONTINUATION flood (CVE-2024-27316 and kin): a header block that
/// never ends, one CONTINUATION frame after another. The connection is
/// closed with a GOAWAY once the block passes the 64 KiB head bound, long
/// before 20 MB have been sent, and nothing is forwarded.
#[tokio::test]
async fn an_http2_continuation_flood_is_closed_at_the_head_bound() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&one_version(&a.url(), "", "")).await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    tcp.write_all(&h2_frame(0x4, 0, 0, &[]))
        .await
        .expect("settings");
    // HPACK: :method POST, :scheme http, :path / (static table 3, 6, 4),
    // then :authority (name 1) as a literal.
    let mut block = vec![0x83, 0x86, 0x84, 0x01, 9];
    block.extend_from_slice(b"127.0.0.1");
    tcp.write_all(&h2_frame(0x1, 0, 1, &block))
        .await
        .expect("headers without END_HEADERS");
    // Each CONTINUATION: one literal `x-a` field of 1,000 bytes (HPACK's
    // length 1,000 = 127 + 873 as a 7-bit prefix and two continuation bytes).
    let mut field = vec![0x00, 3];
    field.extend_from_slice(b"x-a");
    field.extend_from_slice(&[0x7f, 0x80 | (873 & 0x7f) as u8, (873 >> 7) as u8]);
    field.extend_from_slice(&[b'v'; 1000]);
    let continuation = h2_frame(0x9, 0, 1, &field);
    let mut written = 0usize;
    for _ in 0..20_000 {
        if tcp.write_all(&continuation).await.is_err() {
            break;
        }
        written += continuation.len();
    }
    assert!(
        written < 1 << 20,
        "{written} bytes of one header block were taken"
    );
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut out))
        .await
        .expect("the connection was closed");
    // After the server's SETTINGS (and its ack), a GOAWAY (type 7).
    let mut frames = Vec::new();
    let mut rest = &out[..];
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        frames.push(rest[3]);
        rest = &rest[(9 + len).min(rest.len())..];
    }
    assert!(frames.contains(&0x7), "no GOAWAY, frames {frames:?}");
    assert_eq!(a.stats().requests(), 0);
}
