//! Idle keep-alive connections are parked (src/server/conn.rs): after
//! `server::PARK_AFTER` without a request, a client's HTTP/1 connection
//! keeps only its socket, and its next request is served on the same
//! socket as if nothing happened. Over real sockets, plain and TLS: the
//! next request after a park, a partial head never parked (so a slow head
//! still times out), an idle connection still closed after
//! `request_header_timeout` (and so is one that never sends a byte), and a
//! parked connection closed by a graceful shutdown without waiting for the
//! grace period.
//!
//! `server::parked_connections()` counts the whole process, so the tests
//! of this file take turns.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(5);

fn request(user: &str) -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-user-id: {user}\r\ncontent-length: {}\r\n\r\n{CHAT}",
        CHAT.len()
    )
    .into_bytes()
}

/// Read one response (Content-Length or chunked) and return its head.
async fn read_response(io: &mut (impl AsyncRead + Unpin)) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, io.read(&mut byte))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "closed mid-head: {}", String::from_utf8_lossy(&buf));
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        let mut body = vec![0u8; len];
        io.read_exact(&mut body).await.expect("body");
    } else {
        let mut body = Vec::new();
        while !body.ends_with(b"\r\n0\r\n\r\n") {
            let n = io.read(&mut byte).await.expect("chunk");
            assert!(n > 0, "closed mid-body");
            body.push(byte[0]);
        }
    }
    head
}

async fn exchange(io: &mut (impl AsyncRead + AsyncWrite + Unpin), user: &str) -> String {
    io.write_all(&request(user)).await.expect("write");
    read_response(io).await
}

/// Whether the peer closes the connection within `within`.
async fn closed_within(io: &mut (impl AsyncRead + Unpin), within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, io.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn an_idle_connection_is_parked_and_serves_its_next_request() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&one_version(&a.url(), "", "")).await;
    let mut socket = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    let head = exchange(&mut socket, "u1").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");

    assert!(
        eventually(WAIT, || cutover::server::parked_connections() == 1).await,
        "not parked after {:?} idle",
        cutover::server::PARK_AFTER
    );
    // The same socket, a second and third request: served.
    for user in ["u2", "u3"] {
        let head = exchange(&mut socket, user).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
    }
    assert_eq!(a.stats().requests(), 3);
    drop(socket);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_partial_head_is_never_parked_and_still_times_out() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&one_version(
        &a.url(),
        "request_header_timeout = \"3s\"",
        "",
    ))
    .await;
    let full = request("slow");
    let (first, rest) = full.split_at(30);

    // Half a head, then the rest after two park periods: served.
    let mut socket = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    socket.write_all(first).await.expect("write");
    tokio::time::sleep(cutover::server::PARK_AFTER * 2 + Duration::from_millis(300)).await;
    assert_eq!(cutover::server::parked_connections(), 0);
    socket.write_all(rest).await.expect("write");
    let head = read_response(&mut socket).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");

    // Half a head that never ends: closed by the head timeout, as ever.
    let mut slow = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    let started = Instant::now();
    slow.write_all(first).await.expect("write");
    assert!(
        closed_within(&mut slow, Duration::from_secs(8)).await,
        "a head that never ends must be cut"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // An idle connection is closed after request_header_timeout too.
    let head = exchange(&mut socket, "idle").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let idle_from = Instant::now();
    assert!(closed_within(&mut socket, Duration::from_secs(8)).await);
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_secs(2) && idle < Duration::from_secs(6),
        "idle connection closed after {idle:?}"
    );
    assert!(eventually(WAIT, || cutover::server::parked_connections() == 0).await);
    proxy.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_parked_connections_at_once() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let a = healthy_backend("a").await;
    // A long grace: the drain must not wait for parked connections.
    let proxy = start_proxy(
        &one_version(&a.url(), "", "")
            .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"30s\""),
    )
    .await;
    let mut socket = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    exchange(&mut socket, "u1").await;
    assert!(eventually(WAIT, || cutover::server::parked_connections() == 1).await);
    let started = Instant::now();
    proxy.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(closed_within(&mut socket, WAIT).await);
    assert_eq!(cutover::server::parked_connections(), 0);
}

#[tokio::test]
async fn a_tls_connection_is_parked_and_resumed() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let a = healthy_backend("a").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, der) = test_certificate(dir.path());
    let server_extra = format!(
        "tls = {{ cert = {:?}, key = {:?} }}",
        cert.display().to_string(),
        key.display().to_string()
    );
    let proxy = start_proxy(&one_version(&a.url(), &server_extra, "")).await;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(der))
        .expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(cutover::crypto::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("handshake");

    let head = exchange(&mut tls, "t1").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(eventually(WAIT, || cutover::server::parked_connections() == 1).await);
    let head = exchange(&mut tls, "t2").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(a.stats().requests(), 2);
    drop(tls);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed_after_the_head_timeout() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&one_version(
        &a.url(),
        "request_header_timeout = \"2s\"",
        "",
    ))
    .await;
    let mut silent = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    let started = Instant::now();
    assert!(
        closed_within(&mut silent, Duration::from_secs(6)).await,
        "a silent connection must be cut"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "closed after {waited:?}"
    );
    assert_eq!(a.stats().requests(), 0);
    proxy.shutdown().await;
}
