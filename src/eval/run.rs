//! Replay: send every golden case to one endpoint, at most `concurrency`
//! at a time, each bounded by its own timeout, and collect what came back.
//!
//! A response body is read to its end (so the latency is to the last byte
//! and the connection can be reused) but only its first `max_body` bytes
//! are kept for the checks; the rest is counted and dropped. Token usage is
//! scanned from every frame as it passes, kept or not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::golden::Case;
use crate::telemetry::usage::{Usage, UsageScanner};

pub type EvalClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One side of the comparison: where to send, and with which extra headers.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `http(s)://authority[/prefix]`, no trailing slash, no query.
    pub base: String,
    /// Added to every request; each replaces a same-named case header.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Endpoint {
    /// Parse `--target` / `--baseline`: an absolute http(s) URL with a host
    /// and no query; a path becomes a prefix of every case path.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let trimmed = url.trim();
        let uri: Uri = trimmed
            .parse()
            .map_err(|e| format!("{trimmed:?} is not a URL ({e}); e.g. http://127.0.0.1:8080"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => {
                return Err(format!(
                    "{trimmed:?} needs an http:// or https:// scheme; e.g. http://127.0.0.1:8080"
                ));
            }
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!(
                "{trimmed:?} has no host; e.g. http://127.0.0.1:8080"
            ));
        }
        if uri.query().is_some() {
            return Err(format!(
                "{trimmed:?} has a query; put queries in the cases' paths"
            ));
        }
        let base = trimmed.trim_end_matches('/').to_owned();
        Ok(Endpoint {
            base,
            headers: Vec::new(),
        })
    }
}

/// How a run behaves, the same for the target and the baseline.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// Requests in flight to one endpoint at most.
    pub concurrency: usize,
    /// The limit of a case without `max_latency`.
    pub timeout: Duration,
    /// Body bytes kept for the checks.
    pub max_body: usize,
}

/// Why a case got no complete response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Complete,
    /// Cut at its limit; `by_max_latency` when that limit was the case's own.
    TimedOut {
        limit: Duration,
        by_max_latency: bool,
    },
    /// Refused, reset, DNS, TLS, a body that broke mid-way.
    Failed(String),
}

/// What one request produced.
#[derive(Clone, Debug)]
pub struct Response {
    pub transport: Transport,
    /// Set once the response head arrived (even if the body then broke).
    pub status: Option<StatusCode>,
    pub content_type: Option<HeaderValue>,
    /// To the last body byte; the limit for a timed-out case; `None` when
    /// the request failed before that.
    pub latency: Option<Duration>,
    /// The first `max_body` bytes.
    pub body: Bytes,
    /// Every body byte received, kept or not.
    pub body_len: u64,
    pub truncated: bool,
    pub usage: Usage,
}

impl Response {
    pub fn is_event_stream(&self) -> bool {
        self.content_type.as_ref().is_some_and(|ct| {
            let ct = ct.as_bytes();
            ct.len() >= 17 && ct[..17].eq_ignore_ascii_case(b"text/event-stream")
        })
    }
}

/// A pooled HTTP/1.1 client for `http://`, h2 or HTTP/1.1 by ALPN for
/// `https://` (system roots, as for the proxy's upstreams).
pub fn build_client(connect_timeout: Duration) -> Result<EvalClient, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*crate::upstream::tls_client_config()?).clone())
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .build(https))
}

/// Replay `cases` against `endpoint`, at most `opts.concurrency` in
/// flight, handing each response to `on_done` with its case index as it
/// finishes (in completion order).
pub async fn replay(
    client: &EvalClient,
    endpoint: &Endpoint,
    cases: &[Arc<Case>],
    opts: RunOptions,
    mut on_done: impl FnMut(usize, Response),
) {
    let mut in_flight = futures_util::stream::iter(cases.iter().enumerate())
        .map(|(i, case)| async move { (i, send(client, endpoint, case, opts).await) })
        .buffer_unordered(opts.concurrency.max(1));
    while let Some((i, response)) = in_flight.next().await {
        on_done(i, response);
    }
}

/// One case, bounded by its limit. What arrived before the limit (status,
/// kept bytes, usage) stays in the response.
pub async fn send(
    client: &EvalClient,
    endpoint: &Endpoint,
    case: &Case,
    opts: RunOptions,
) -> Response {
    let (limit, by_max_latency) = match case.expect.max_latency {
        Some(max) => (max, true),
        None => (opts.timeout, false),
    };
    let mut partial = Partial {
        status: None,
        content_type: None,
        kept: BytesMut::new(),
        body_len: 0,
        truncated: false,
        usage: UsageScanner::off(),
    };
    let started = Instant::now();
    let result = tokio::time::timeout(
        limit,
        exchange(client, endpoint, case, opts.max_body, &mut partial),
    )
    .await;
    let (transport, latency) = match result {
        Ok(Ok(())) => (Transport::Complete, Some(started.elapsed())),
        Ok(Err(reason)) => (Transport::Failed(reason), None),
        Err(_) => (
            Transport::TimedOut {
                limit,
                by_max_latency,
            },
            Some(limit),
        ),
    };
    Response {
        transport,
        status: partial.status,
        content_type: partial.content_type,
        latency,
        body: partial.kept.freeze(),
        body_len: partial.body_len,
        truncated: partial.truncated,
        usage: partial.usage.finish(),
    }
}

/// What an exchange has produced so far; owned by [`send`], so it survives
/// the exchange future being dropped at the timeout.
struct Partial {
    status: Option<StatusCode>,
    content_type: Option<HeaderValue>,
    kept: BytesMut,
    body_len: u64,
    truncated: bool,
    usage: UsageScanner,
}

async fn exchange(
    client: &EvalClient,
    endpoint: &Endpoint,
    case: &Case,
    max_body: usize,
    out: &mut Partial,
) -> Result<(), String> {
    let request = build_request(endpoint, case)?;
    let response = client.request(request).await.map_err(|e| error_chain(&e))?;
    out.status = Some(response.status());
    out.content_type = response.headers().get(CONTENT_TYPE).cloned();
    out.usage = UsageScanner::new(case.request.api(), out.content_type.as_ref());
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            format!(
                "the response body broke after {} bytes: {}",
                out.body_len,
                error_chain(&e)
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        out.usage.observe(&data);
        out.body_len = out.body_len.saturating_add(data.len() as u64);
        let room = max_body.saturating_sub(out.kept.len());
        if data.len() > room {
            out.truncated = true;
        }
        out.kept.extend_from_slice(&data[..data.len().min(room)]);
    }
    Ok(())
}

fn build_request(endpoint: &Endpoint, case: &Case) -> Result<Request<Full<Bytes>>, String> {
    let uri = format!("{}{}", endpoint.base, case.request.path);
    let mut request = Request::builder()
        .method(case.request.method.clone())
        .uri(&uri)
        .body(Full::new(case.request.body.clone()))
        .map_err(|e| format!("cannot build a request for {uri}: {e}"))?;
    let headers = request.headers_mut();
    for (name, value) in &case.request.headers {
        headers.append(name.clone(), value.clone());
    }
    // Run-wide headers (pinning, auth) win over the case's own.
    for (name, _) in &endpoint.headers {
        headers.remove(name);
    }
    for (name, value) in &endpoint.headers {
        headers.append(name.clone(), value.clone());
    }
    if case.request.json_body && !headers.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    Ok(request)
}

/// The innermost cause too: "client error (Connect)" alone says little.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_take_http_urls_with_an_optional_prefix() {
        let e = Endpoint::parse("http://127.0.0.1:8080/").map(|e| e.base);
        assert_eq!(e.as_deref(), Ok("http://127.0.0.1:8080"));
        let e = Endpoint::parse("https://api.example.com/agent/").map(|e| e.base);
        assert_eq!(e.as_deref(), Ok("https://api.example.com/agent"));
        for bad in [
            "127.0.0.1:8080",
            "ftp://x",
            "http://x/?a=1",
            "http:///x",
            "not a url",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
