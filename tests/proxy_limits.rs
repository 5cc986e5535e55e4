//! Limits and bad input over real sockets: body size, shedding, malformed
//! and ambiguous HTTP, slow request heads.

mod common;

use std::time::{Duration, Instant};

use common::*;
use cutover::mock::MockArgs;

#[tokio::test]
async fn oversized_content_length_body_gets_413_and_nothing_is_forwarded() {
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&one_version(&a.url(), "max_body = 1024", "")).await;
    // Declared too large: refused before the body is read.
    let head = "POST /v1/chat HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n";
    let out = raw_exchange(proxy.addr, head.as_bytes(), Duration::from_secs(2)).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("body_too_large"));
    // Exactly at the limit is fine.
    let ok = client()
        .post(format!("{}/v1/chat", proxy.url()))
        .body(vec![b'x'; 1024])
        .send()
        .await
        .expect("response");
    assert_eq!(ok.status(), 200);
    assert_eq!(
        a.stats().requests(),
        1,
        "only the in-limit request was forwarded"
    );
}

#[tokio::test]
async fn chunked_body_growing_past_the_limit_gets_413_and_nothing_is_forwarded() {
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&one_version(&a.url(), "max_body = 1024", "")).await;
    let mut req =
        b"POST /v1/chat HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"200\r\n");
        req.extend_from_slice(&[b'y'; 0x200]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let out = raw_exchange(proxy.addr, &req, Duration::from_secs(2)).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert_eq!(a.stats().requests(), 0);
}

#[tokio::test]
async fn ambiguous_or_malformed_requests_are_refused_never_forwarded() {
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&one_version(&a.url(), "", "")).await;
    let cases: [&[u8]; 7] = [
        // Both framings, in either order: request-smuggling vectors.
        b"POST /v1/chat HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /v1/chat HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n",
        // Two different lengths.
        b"POST /v1/chat HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\nabcde",
        // obs-fold (a header continued on the next line).
        b"POST /v1/chat HTTP/1.1\r\nhost: x\r\nx-folded: a\r\n  b\r\ncontent-length: 2\r\n\r\n{}",
        // Not HTTP at all.
        b"\x16\x03\x01garbage that is not http\r\n\r\n",
        // A bad request line.
        b"POST /v1/chat HTTP/9.9 extra\r\nhost: x\r\n\r\n",
        // A header name with a space.
        b"POST /v1/chat HTTP/1.1\r\nhost: x\r\nbad header: 1\r\ncontent-length: 2\r\n\r\n{}",
    ];
    for case in cases {
        let out = raw_exchange(proxy.addr, case, Duration::from_secs(2)).await;
        assert!(
            out.is_empty() || out.starts_with("HTTP/1.1 4"),
            "{:?} got {out:?}",
            String::from_utf8_lossy(case)
        );
    }
    assert_eq!(a.stats().requests(), 0, "nothing reached the upstream");
    // And the proxy still serves well-formed requests.
    let ok = client()
        .post(format!("{}/v1/chat", proxy.url()))
        .body(CHAT)
        .send()
        .await
        .expect("response");
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn slow_request_head_times_out() {
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&one_version(
        &a.url(),
        r#"request_header_timeout = "500ms""#,
        "",
    ))
    .await;
    let start = Instant::now();
    // A head that never completes: the connection must not be held open.
    let out = raw_exchange(
        proxy.addr,
        b"POST /v1/chat HTTP/1.1\r\nhost: x\r\nx-slow: ",
        Duration::from_secs(5),
    )
    .await;
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "connection held for {took:?}"
    );
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 408"), "{out:?}");
    assert_eq!(a.stats().requests(), 0);
}

#[tokio::test]
async fn requests_over_max_in_flight_are_shed_with_the_refusal() {
    let slow = backend(MockArgs {
        latency: Duration::from_millis(800),
        ..MockArgs::new(loopback0())
    })
    .await;
    let proxy = start_proxy(&one_version(&slow.url(), "max_in_flight = 2", "")).await;
    let url = format!("{}/v1/chat", proxy.url());
    let c = client();
    let first = tokio::spawn(c.post(&url).body(CHAT).send());
    let second = tokio::spawn(c.post(&url).body(CHAT).send());
    assert!(eventually(Duration::from_secs(2), || slow.stats().requests() == 2).await);

    let start = Instant::now();
    let shed = c.post(&url).body(CHAT).send().await.expect("response");
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "shedding must not wait"
    );
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["x-cutover-upstream"], "refusal");
    assert_eq!(shed.headers()["retry-after"], "30");
    let body: serde_json::Value = shed.json().await.expect("json");
    assert_eq!(body["error"]["code"], "cutover_refusal");

    for r in [first, second] {
        assert_eq!(r.await.expect("join").expect("response").status(), 200);
    }
    // Slots are released once the responses end.
    let after = c.post(&url).body(CHAT).send().await.expect("response");
    assert_eq!(after.status(), 200);
    assert_eq!(slow.stats().requests(), 3);
}

/// A client that hangs up while its request waits on the upstream gives its
/// `max_in_flight` slot back at once, not when the upstream answers.
#[tokio::test]
async fn a_client_that_hangs_up_gives_its_slot_back() {
    use std::sync::atomic::Ordering;
    let slow = backend(MockArgs {
        latency: Duration::from_secs(30),
        ..MockArgs::new(loopback0())
    })
    .await;
    let proxy = start_proxy(&one_version(&slow.url(), "max_in_flight = 1", "")).await;
    let url = format!("{}/v1/chat", proxy.url());
    let in_flight = || proxy.gateway.data_plane.in_flight.load(Ordering::Acquire);
    let waiting = tokio::spawn(client().post(&url).body(CHAT).send());
    assert!(eventually(Duration::from_secs(2), || slow.stats().requests() == 1).await);
    assert_eq!(in_flight(), 1);
    waiting.abort();
    assert!(
        eventually(Duration::from_secs(5), || in_flight() == 0).await,
        "the slot is still held"
    );
    // The freed slot admits the next request: it reaches the upstream.
    let next = tokio::spawn(client().post(&url).body(CHAT).send());
    assert!(eventually(Duration::from_secs(2), || slow.stats().requests() == 2).await);
    next.abort();
}

/// SPEC §5: ambiguous framing is answered `400`, then the connection is
/// closed, and nothing of the request (or of anything sent after it on the
/// connection) is forwarded. Each case goes over raw TCP, split at every
/// interesting place, so hyper never sees the head whole.
#[tokio::test]
async fn ambiguous_framing_is_answered_400_then_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&one_version(&a.url(), "", "")).await;
    let smuggled = "GET /v1/admin HTTP/1.1\r\nhost: x\r\n\r\n";
    let cases = [
        // Both framings, in either order.
        format!(
            "POST /v1/chat HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /v1/chat HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 40\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        // Lengths that disagree, on two lines or in one.
        format!(
            "POST /v1/chat HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ncontent-length: 5\r\n\r\n{{}}xyz{smuggled}"
        ),
        format!(
            "POST /v1/chat HTTP/1.1\r\nhost: x\r\ncontent-length: 2, 5\r\n\r\n{{}}xyz{smuggled}"
        ),
        // A final coding other than chunked.
        format!(
            "POST /v1/chat HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, identity\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n{smuggled}"
        ),
        // Another coding before chunked: its body would reach the upstream
        // still gzipped, framed by a Content-Length as if it were not.
        format!(
            "POST /v1/chat HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n{smuggled}"
        ),
        // chunked applied twice, in one line or over two.
        format!(
            "POST /v1/chat HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /v1/chat HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n{smuggled}"
        ),
        // Bare LF line ends, which hyper accepts.
        format!(
            "POST /v1/chat HTTP/1.1\nhost: x\ncontent-length: 4\ntransfer-encoding: chunked\n\n0\r\n\r\n{smuggled}"
        ),
    ];
    for case in &cases {
        let bytes = case.as_bytes();
        let head_end = case.find("\r\n\r\n").or(case.find("\n\n")).expect("a head");
        for split in [bytes.len(), head_end + 1, 10] {
            let mut stream = tokio::net::TcpStream::connect(proxy.addr)
                .await
                .expect("connect");
            stream.write_all(&bytes[..split]).await.expect("write");
            if split < bytes.len() {
                tokio::time::sleep(Duration::from_millis(30)).await;
                // The proxy may already have closed: a failed write is fine.
                let _ = stream.write_all(&bytes[split..]).await;
            }
            let mut out = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
                .await
                .expect("the connection is closed, not left open");
            // A reset after the answer is a close too.
            if let Err(e) = read {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
            }
            let text = String::from_utf8_lossy(&out);
            assert!(
                text.starts_with("HTTP/1.1 400 "),
                "{case:?} split at {split}: got {text:?}"
            );
            assert_eq!(
                text.matches("HTTP/1.1").count(),
                1,
                "exactly one answer: {text:?}"
            );
        }
    }
    assert_eq!(a.stats().requests(), 0, "nothing reached the upstream");
}

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, with two, or with
/// one that is not a host is answered 400, as nginx does, and never
/// forwarded: the value would travel on as `x-forwarded-host`.
#[tokio::test]
async fn a_missing_doubled_or_malformed_host_is_refused() {
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&one_version(&a.url(), "", "")).await;
    let refused = [
        "POST /v1/chat HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}",
        "POST /v1/chat HTTP/1.1\r\nhost: a.example\r\nhost: b.example\r\ncontent-length: 2\r\n\r\n{}",
        "POST /v1/chat HTTP/1.0\r\nhost: a.example\r\nhost: a.example\r\ncontent-length: 2\r\n\r\n{}",
        "POST /v1/chat HTTP/1.1\r\nhost: user@a.example\r\ncontent-length: 2\r\n\r\n{}",
        "POST /v1/chat HTTP/1.1\r\nhost: a.example/evil\r\ncontent-length: 2\r\n\r\n{}",
        "POST /v1/chat HTTP/1.1\r\nhost: a.example:80x\r\ncontent-length: 2\r\n\r\n{}",
        "POST /v1/chat HTTP/1.1\r\nhost: a example\r\ncontent-length: 2\r\n\r\n{}",
        "POST /v1/chat HTTP/1.1\r\nhost: [::1\r\ncontent-length: 2\r\n\r\n{}",
        // An absolute-form target's authority wins over Host, so it is
        // held to the same rule.
        "POST http://user@a.example/v1/chat HTTP/1.1\r\nhost: a.example\r\ncontent-length: 2\r\n\r\n{}",
    ];
    for case in refused {
        let out = raw_exchange(proxy.addr, case.as_bytes(), Duration::from_secs(2)).await;
        assert_eq!(out.split(' ').nth(1), Some("400"), "{case:?} got {out:?}");
        assert!(out.contains("invalid_host"), "{case:?} got {out:?}");
    }
    assert_eq!(a.stats().requests(), 0, "nothing reached the upstream");
    let served = [
        "POST /v1/chat HTTP/1.1\r\nhost: a.example\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        "POST /v1/chat HTTP/1.1\r\nhost: 127.0.0.1:8080\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        "POST /v1/chat HTTP/1.1\r\nhost: [::1]:8080\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        // Empty, as RFC 9112 asks when the target has no authority.
        "POST /v1/chat HTTP/1.1\r\nhost:\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        // HTTP/1.0 needs none.
        "POST /v1/chat HTTP/1.0\r\ncontent-length: 2\r\n\r\n{}",
    ];
    for case in served {
        let out = raw_exchange(proxy.addr, case.as_bytes(), Duration::from_secs(2)).await;
        assert_eq!(out.split(' ').nth(1), Some("200"), "{case:?} got {out:?}");
    }
    assert_eq!(a.stats().requests(), served.len() as u64);
}

/// A request head over 64 KiB is answered 431 and not forwarded; one just
/// under it is served.
#[tokio::test]
async fn an_oversized_request_head_gets_431_and_nothing_is_forwarded() {
    let a = healthy_backend("a").await;
    let proxy = start_proxy(&one_version(&a.url(), "", "")).await;
    let head = |filler: usize| {
        format!(
            "POST /v1/chat HTTP/1.1\r\nhost: x\r\nx-filler: {}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}",
            "a".repeat(filler)
        )
    };
    let out = raw_exchange(
        proxy.addr,
        head(70 * 1024).as_bytes(),
        Duration::from_secs(2),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 431 "), "got {out:?}");
    assert_eq!(a.stats().requests(), 0, "nothing reached the upstream");
    let out = raw_exchange(
        proxy.addr,
        head(60 * 1024).as_bytes(),
        Duration::from_secs(2),
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 200 "),
        "got {:?}",
        &out[..out.len().min(200)]
    );
    assert_eq!(a.stats().requests(), 1);
}
