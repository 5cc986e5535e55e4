//! The upstream pool on its own, over real sockets: keep-alive reuse, idle
//! expiry, a reused connection the upstream closed, h2 multiplexing over
//! TLS, and the connect timeout against a black-holed address.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use cutover::upstream::{ConnectError, Endpoint, Pool, PoolSettings, RequestBody, SendError};

fn settings(idle: Duration) -> PoolSettings {
    PoolSettings {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: idle,
    }
}

fn plain_pool(addr: SocketAddr, settings: PoolSettings) -> Arc<Pool> {
    Arc::new(Pool::new(
        Endpoint {
            host: Arc::from(addr.ip().to_string()),
            port: addr.port(),
            tls: None,
        },
        http::uri::Scheme::HTTP,
        format!("{addr}").parse().expect("authority"),
        None,
        settings,
        2,
    ))
}

fn request(path: &str) -> http::Request<RequestBody> {
    http::Request::post(path)
        .header("host", "upstream")
        .header("content-type", "application/json")
        .body(RequestBody::new(Bytes::from_static(b"{\"q\":1}")))
        .expect("request")
}

async fn body_text(resp: http::Response<cutover::upstream::UpstreamBody>) -> String {
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// An HTTP/1.1 upstream that counts the connections it accepts. On each
/// connection it answers the first `answer` requests, then reads the next
/// one and closes without a byte, as an upstream whose keep-alive timeout
/// fired just as the request arrived.
async fn counting_upstream(answer: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let (addr, accepted, _) = counting_upstream_with_closes(answer).await;
    (addr, accepted)
}

/// As `counting_upstream`, also counting the connections the client closed.
async fn counting_upstream_with_closes(
    answer: usize,
) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(common::loopback0()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let closes = Arc::clone(&closed);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let closes = Arc::clone(&closes);
            tokio::spawn(async move {
                let mut served = 0;
                loop {
                    if read_request(&mut stream).await.is_none() {
                        closes.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    if served == answer {
                        return; // closes the connection, nothing written
                    }
                    served += 1;
                    let body = format!("answer {served}");
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if stream.write_all(head.as_bytes()).await.is_err()
                        || stream.write_all(body.as_bytes()).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted, closed)
}

/// Read one request with a Content-Length body; `None` at EOF.
async fn read_request(stream: &mut TcpStream) -> Option<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(())
}

#[tokio::test]
async fn a_connection_is_reused_across_requests() {
    let (addr, accepted) = counting_upstream(usize::MAX).await;
    let pool = plain_pool(addr, settings(Duration::from_secs(30)));
    for i in 1..=5 {
        let resp = pool.send(request("/v1/chat")).await.expect("response");
        assert_eq!(resp.status(), 200);
        assert_eq!(body_text(resp).await, format!("answer {i}"));
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one keep-alive connection"
    );
    assert_eq!(pool.opened(), 1);
    assert_eq!(pool.idle(), 1);
}

#[tokio::test]
async fn idle_connections_expire_after_pool_idle_timeout() {
    let (addr, accepted) = counting_upstream(usize::MAX).await;
    let pool = plain_pool(addr, settings(Duration::from_millis(200)));
    let resp = pool.send(request("/v1/chat")).await.expect("response");
    assert_eq!(body_text(resp).await, "answer 1");
    assert_eq!(pool.idle(), 1);

    tokio::time::sleep(Duration::from_millis(300)).await;
    pool.sweep();
    assert_eq!(pool.idle(), 0, "the sweep closed the expired connection");

    let resp = pool.send(request("/v1/chat")).await.expect("response");
    assert_eq!(
        body_text(resp).await,
        "answer 1",
        "a new connection's first answer"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// After a burst, a steady trickle reuses the connection used last, so the
/// burst's surplus ages out. (A FIFO pool cycled all of them: each was used
/// again well within `pool_idle_timeout`, and the pool never shrank.)
#[tokio::test]
async fn after_a_burst_the_surplus_connections_age_out_under_steady_load() {
    let (addr, accepted) = counting_upstream(usize::MAX).await;
    let pool = plain_pool(addr, settings(Duration::from_millis(300)));
    let burst = (0..8).map(|_| {
        let pool = Arc::clone(&pool);
        async move {
            let resp = pool.send(request("/v1/chat")).await.expect("response");
            body_text(resp).await
        }
    });
    futures_util::future::join_all(burst).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 8, "the burst opened 8");
    assert_eq!(pool.idle(), 8);

    // One request every 20 ms for 0.8 s: a FIFO pool would hand out each of
    // the 8 every 160 ms, under the 300 ms idle timeout.
    for _ in 0..40 {
        let resp = pool.send(request("/v1/chat")).await.expect("response");
        body_text(resp).await;
        pool.sweep();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pool.idle(), 1, "the surplus aged out");
    assert_eq!(accepted.load(Ordering::SeqCst), 8, "nothing new opened");
}

#[tokio::test]
async fn an_expired_connection_is_not_taken_even_before_a_sweep() {
    let (addr, accepted) = counting_upstream(usize::MAX).await;
    let pool = plain_pool(addr, settings(Duration::from_millis(100)));
    let resp = pool.send(request("/v1/chat")).await.expect("response");
    body_text(resp).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resp = pool.send(request("/v1/chat")).await.expect("response");
    assert_eq!(body_text(resp).await, "answer 1");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_reused_connection_closed_by_the_upstream_is_reported_as_reused() {
    // Answers the first request on each connection, closes on the second.
    let (addr, accepted) = counting_upstream(1).await;
    let pool = plain_pool(addr, settings(Duration::from_secs(30)));
    let resp = pool.send(request("/v1/chat")).await.expect("first");
    assert_eq!(body_text(resp).await, "answer 1");

    let err = pool
        .send(request("/v1/chat"))
        .await
        .expect_err("the upstream closes the reused connection");
    match err {
        SendError::Failed { reused, .. } => assert!(reused, "the connection was reused"),
        other => panic!("expected a failure on the reused connection, got {other:?}"),
    }
    // What `retry_reused` does next: a new connection, which answers.
    let resp = pool.send_fresh(request("/v1/chat")).await.expect("retry");
    assert_eq!(body_text(resp).await, "answer 1");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    // A failure on a new connection is not reported as reused.
    let err = pool
        .send(request("/v1/chat"))
        .await
        .expect_err("closed again");
    assert!(matches!(err, SendError::Failed { reused: true, .. }));
    let (addr, _) = counting_upstream(0).await;
    let fresh_only = plain_pool(addr, settings(Duration::from_secs(30)));
    let err = fresh_only
        .send(request("/v1/chat"))
        .await
        .expect_err("closes at once");
    assert!(
        matches!(err, SendError::Failed { reused: false, .. }),
        "{err:?}"
    );
}

/// An upstream that answers each request on a connection with the next
/// scripted answer, written in the given pieces with a pause between them,
/// and closes the connection after an answer marked `close`.
async fn scripted_upstream(
    answers: Vec<(Vec<&'static [u8]>, bool)>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(common::loopback0()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let answers = Arc::new(answers);
    tokio::spawn(async move {
        let mut next = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            while next < answers.len() && read_request(&mut stream).await.is_some() {
                let (pieces, close) = &answers[next];
                next += 1;
                for piece in pieces {
                    if stream.write_all(piece).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if *close {
                    break;
                }
            }
        }
    });
    (addr, accepted)
}

/// Every frame of a body: the data joined, the trailers, or the error.
async fn frames(
    resp: http::Response<cutover::upstream::UpstreamBody>,
) -> (Vec<u8>, Option<http::HeaderMap>, Option<String>) {
    let mut body = resp.into_body();
    let (mut data, mut trailers) = (Vec::new(), None);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(frame) => trailers = frame.into_trailers().ok(),
            },
            Err(e) => return (data, trailers, Some(e.to_string())),
        }
    }
    (data, trailers, None)
}

#[tokio::test]
async fn http1_bodies_are_framed_as_the_upstream_sent_them() {
    let (addr, accepted) = scripted_upstream(vec![
        // An interim answer, then a chunked body in awkward pieces, with
        // trailers.
        (
            vec![
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Enc",
                b"oding: chunked\r\n\r\n5\r\nhel",
                b"lo\r\n6;x=y\r\n world\r",
                b"\n0\r\nX-Sum: 11\r\n\r\n",
            ],
            false,
        ),
        // A Content-Length body on the same connection.
        (
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab", b"cd"],
            false,
        ),
        // A length body on a connection the upstream says it will close.
        (
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"],
            true,
        ),
        // A body that only the close ends.
        (vec![b"HTTP/1.1 200 OK\r\n\r\nuntil ", b"the close"], true),
        // A body cut short of its Content-Length.
        (
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"],
            true,
        ),
        (
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
            false,
        ),
    ])
    .await;
    let pool = plain_pool(addr, settings(Duration::from_secs(30)));

    let resp = pool.send(request("/1")).await.expect("chunked");
    let (data, trailers, error) = frames(resp).await;
    assert_eq!((data.as_slice(), error), (&b"hello world"[..], None));
    assert_eq!(trailers.expect("trailers")["x-sum"], "11");
    assert_eq!(pool.idle(), 1, "a chunked body ends cleanly: reusable");

    let resp = pool.send(request("/2")).await.expect("length");
    assert_eq!(body_text(resp).await, "abcd");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection so far");

    let resp = pool.send(request("/2c")).await.expect("connection: close");
    assert_eq!(body_text(resp).await, "hi");
    assert_eq!(pool.idle(), 0, "`Connection: close` is not reused");

    let resp = pool.send(request("/3")).await.expect("close-delimited");
    assert_eq!(body_text(resp).await, "until the close");
    assert_eq!(
        pool.idle(),
        0,
        "a close-delimited body's connection is done"
    );

    let resp = pool.send(request("/4")).await.expect("head");
    let (data, _, error) = frames(resp).await;
    assert_eq!(data, b"short");
    assert!(error.is_some(), "a truncated body is an error, not an end");
    assert_eq!(pool.idle(), 0);

    let resp = pool.send(request("/5")).await.expect("after");
    assert_eq!(body_text(resp).await, "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
}

/// A malformed answer fails the exchange before any body, with the
/// request handed back for a fallback to use.
#[tokio::test]
async fn a_malformed_http1_head_fails_the_exchange() {
    let (addr, _) = scripted_upstream(vec![(
        vec![b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc"],
        true,
    )])
    .await;
    let pool = plain_pool(addr, settings(Duration::from_secs(30)));
    let err = pool.send(request("/")).await.expect_err("refused");
    assert!(format!("{err:?}").contains("Content-Length"), "{err:?}");
    match err {
        SendError::Failed {
            reused, request, ..
        } => {
            assert!(!reused);
            assert!(request.is_some(), "the request is handed back");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn connect_timeout_bounds_a_black_holed_address() {
    // A listener whose accept queue is full and never drained: the kernel
    // drops further SYNs, so a connect hangs, as to a black-holed address.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(common::loopback0()).expect("bind");
    let addr = socket.local_addr().expect("addr");
    let _listener = socket.listen(0).expect("listen");
    let mut held = Vec::new();
    let black_holed = loop {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => panic!("connect failed outright: {e}"),
            Err(_) => break true,
        }
        if held.len() > 64 {
            break false;
        }
    };
    assert!(black_holed, "the accept queue never filled");

    let pool = plain_pool(
        addr,
        PoolSettings {
            connect_timeout: Duration::from_millis(250),
            idle_timeout: Duration::from_secs(30),
        },
    );
    let started = std::time::Instant::now();
    let err = pool
        .send(request("/v1/chat"))
        .await
        .expect_err("no connection");
    let waited = started.elapsed();
    assert!(
        matches!(
            err,
            SendError::Connect {
                error: ConnectError::Timeout(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

/// An h2-over-TLS upstream (ALPN h2 only) that counts connections and
/// answers after a short delay, so concurrent requests overlap.
async fn h2_upstream(
    dir: &std::path::Path,
) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>, Vec<u8>) {
    let (cert, key, der) = common::test_certificate(dir);
    let mut config = (*cutover::server::server_tls_config(&cutover::config::TlsConfig {
        cert_pem: std::fs::read(&cert).expect("cert"),
        key_pem: std::fs::read(&key).expect("key"),
        cert_path: cert,
        key_path: key,
    })
    .expect("server TLS"))
    .clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(common::loopback0()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let most_at_once = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let most = Arc::clone(&most_at_once);
    let in_flight = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let most = Arc::clone(&most);
            let in_flight = Arc::clone(&in_flight);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let most = Arc::clone(&most);
                    let in_flight = Arc::clone(&in_flight);
                    async move {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        let version = format!("{:?} {}", req.version(), req.uri().path());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(version),
                        )))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, accepted, most_at_once, der)
}

#[tokio::test]
async fn an_h2_upstream_multiplexes_requests_on_one_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, accepted, most_at_once, der) = h2_upstream(dir.path()).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(der))
        .expect("root");
    let mut tls = rustls::ClientConfig::builder_with_provider(cutover::crypto::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let pool = Arc::new(Pool::new(
        Endpoint {
            host: Arc::from("localhost"),
            port: addr.port(),
            tls: Some(rustls_pki_types::ServerName::try_from("localhost").expect("name")),
        },
        http::uri::Scheme::HTTPS,
        format!("localhost:{}", addr.port())
            .parse()
            .expect("authority"),
        Some(tokio_rustls::TlsConnector::from(Arc::new(tls))),
        settings(Duration::from_secs(30)),
        2,
    ));

    // One request first, so the h2 connection exists; then ten at once.
    let resp = pool.send(request("/v1/first")).await.expect("first");
    assert_eq!(body_text(resp).await, "HTTP/2.0 /v1/first");
    let mut tasks = Vec::new();
    for i in 0..10 {
        let pool = Arc::clone(&pool);
        tasks.push(tokio::spawn(async move {
            let resp = pool
                .send(request(&format!("/v1/{i}")))
                .await
                .expect("response");
            body_text(resp).await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.expect("task"), format!("HTTP/2.0 /v1/{i}"));
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "all requests share one h2 connection"
    );
    assert!(
        most_at_once.load(Ordering::SeqCst) >= 2,
        "requests overlapped on the one connection"
    );
}

/// The proxy in front of `addr`, with `upstream_extra` in its upstream.
/// Metrics are process-wide: each test names its upstream apart.
async fn proxy_to(name: &str, addr: SocketAddr, upstream_extra: &str) -> common::Proxy {
    common::start_proxy(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
[[upstreams]]
name = "{name}"
url = "http://{addr}"
{upstream_extra}
[[routes]]
name = "{name}"
[[routes.versions]]
name = "v1"
upstream = "{name}"
weight = 100.0
"#
    ))
    .await
}

async fn post(proxy: &common::Proxy) -> (u16, String) {
    let resp = common::client()
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("response");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("text"))
}

#[tokio::test]
async fn retry_reused_rescues_requests_on_connections_the_upstream_closed() {
    // Answers the first request on each connection, closes on the second.
    let (addr, accepted) = counting_upstream(1).await;
    let proxy = proxy_to("retried", addr, "").await;
    for _ in 0..3 {
        assert_eq!(post(&proxy).await, (200, "answer 1".to_string()));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    let text = common::scrape(&proxy).await;
    let retries = [("upstream", "retried"), ("reason", "reused_closed")];
    assert_eq!(
        common::metric(&text, "cutover_upstream_retries_total", &retries),
        Some(2.0)
    );
    let ok = [("upstream", "retried"), ("result", "ok")];
    assert_eq!(
        common::metric(&text, "cutover_upstream_requests_total", &ok),
        Some(3.0)
    );
    let failed = [("upstream", "retried"), ("result", "connect_error")];
    assert_eq!(
        common::metric(&text, "cutover_upstream_requests_total", &failed).unwrap_or(0.0),
        0.0,
        "a rescued retry is not a failure"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn without_retry_reused_a_closed_keep_alive_connection_fails_the_attempt() {
    let (addr, _) = counting_upstream(1).await;
    let proxy = proxy_to("unretried", addr, "retry_reused = false").await;
    assert_eq!(post(&proxy).await.0, 200);
    assert_eq!(post(&proxy).await.0, 503, "no fallback: the refusal");
    let text = common::scrape(&proxy).await;
    let failed = [("upstream", "unretried"), ("result", "connect_error")];
    assert_eq!(
        common::metric(&text, "cutover_upstream_requests_total", &failed),
        Some(1.0)
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn pool_idle_timeout_closes_idle_connections_on_our_side() {
    let (addr, accepted, closed) = counting_upstream_with_closes(usize::MAX).await;
    let proxy = proxy_to("expiring", addr, r#"pool_idle_timeout = "300ms""#).await;
    assert_eq!(post(&proxy).await.0, 200);
    // The sweeper closes it within a second or so of expiring, with no
    // request to notice.
    assert!(
        common::eventually(Duration::from_secs(5), || closed.load(Ordering::SeqCst)
            == 1)
        .await,
        "the idle connection was closed by cutover"
    );
    assert_eq!(post(&proxy).await.0, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    // With the default (4 s), back-to-back requests share one connection.
    let (addr, accepted) = counting_upstream(usize::MAX).await;
    let proxy2 = proxy_to("kept", addr, "").await;
    for _ in 0..3 {
        assert_eq!(post(&proxy2).await.0, 200);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    proxy.shutdown().await;
    proxy2.shutdown().await;
}
