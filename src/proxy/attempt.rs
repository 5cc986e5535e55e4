//! Phase: attempt. One target (a version or a fallback) tried through its
//! upstream's breaker and pool, up to the commit point (SPEC §5): the
//! response head and its first body byte within `header_timeout`. Until
//! then a failure can still fall back; after it, the answer is the
//! client's.

use bytes::Bytes;
use http::header::HeaderMap;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;

use super::body::UpstreamStream;
use super::ctx::Ctx;
use super::forward::upstream_request;
use crate::runtime::{Target, Upstream};
use crate::telemetry::AttemptResult;
use crate::upstream::{Permit, RequestBody, SendError, UpstreamBody};

/// An attempt that reached the commit point.
pub struct Committed {
    pub head: http::response::Parts,
    pub stream: UpstreamStream,
    /// Holds the upstream's in-flight slot until the stream ends, when the
    /// breaker hears how it ended.
    pub permit: Permit,
}

/// Try `target` once. `headers` are the client's, prepared for
/// forwarding; each attempt takes its own copy.
pub async fn attempt(
    ctx: &mut Ctx,
    route: &str,
    target: &Target,
    parts: &Parts,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Committed, AttemptResult> {
    let upstream = &target.upstream;
    let build = || {
        upstream_request(
            target,
            route,
            &parts.method,
            parts.uri.path_and_query(),
            headers.clone(),
            body,
        )
    };
    let req = build()?;

    // The breaker admits the attempt or refuses it at once (open, probes
    // taken, max_in_flight): a refusal is a failed attempt that falls back
    // without touching the upstream, and is not reported to the breaker.
    let permit = match upstream.state.breaker.try_acquire() {
        Ok(p) => p,
        Err(_) => {
            upstream.metrics.attempt(AttemptResult::Rejected);
            return Err(AttemptResult::Rejected);
        }
    };
    let started = ctx.tracing().then(std::time::SystemTime::now);
    // One deadline covers the response head and the first body byte.
    let deadline = tokio::time::Instant::now() + upstream.config.header_timeout;
    ctx.clock.pause();
    let result = until_commit(upstream, req, build, deadline).await;
    ctx.clock.resume();
    if let Some(started) = started {
        let traced = result.as_ref().map_or_else(|r| *r, |_| AttemptResult::Ok);
        ctx.record_attempt(&target.name, &upstream.name, started, traced);
    }
    match result {
        // Committed: the permit travels with the stream, and the breaker
        // hears how the stream ended (the logging phase), so a stream that
        // breaks after its first byte counts against its upstream (SPEC §5).
        Ok((head, stream)) => Ok(Committed {
            head,
            stream,
            permit,
        }),
        Err(failed) => {
            permit.failure();
            upstream.metrics.attempt(failed);
            Err(failed)
        }
    }
}

/// Send, then wait for the head and the first body byte, all by `deadline`.
async fn until_commit(
    upstream: &Upstream,
    req: Request<RequestBody>,
    again: impl FnOnce() -> Result<Request<RequestBody>, AttemptResult>,
    deadline: tokio::time::Instant,
) -> Result<(http::response::Parts, UpstreamStream), AttemptResult> {
    let response =
        match tokio::time::timeout_at(deadline, send(upstream, req, || again().ok())).await {
            Err(_) => return Err(AttemptResult::Timeout),
            Ok(Err(_)) => return Err(AttemptResult::ConnectError),
            Ok(Ok(response)) => response,
        };
    if upstream
        .config
        .failure_statuses
        .contains(&response.status())
    {
        return Err(AttemptResult::FailureStatus);
    }
    let (head, mut body) = response.into_parts();
    let idle = upstream.config.idle_timeout;
    if body.is_end_stream() {
        return Ok((head, UpstreamStream::new(None, body, idle)));
    }
    match tokio::time::timeout_at(deadline, body.frame()).await {
        Err(_) => Err(AttemptResult::Timeout),
        // Broke before its first byte: nothing reached the client yet, so
        // this falls back like any failure.
        Ok(Some(Err(_))) => Err(AttemptResult::StreamError),
        Ok(first) => Ok((
            head,
            UpstreamStream::new(first.and_then(Result::ok), body, idle),
        )),
    }
}

/// Send on the upstream's pool. A request that fails on a reused
/// keep-alive connection before any response byte (the upstream closed it
/// as the request arrived) goes once more on a new connection when
/// `retry_reused` is on (SPEC §5): counted as a retry, not a failure.
/// `again` rebuilds the request when the first one was already written.
pub async fn send(
    upstream: &Upstream,
    req: Request<RequestBody>,
    again: impl FnOnce() -> Option<Request<RequestBody>>,
) -> Result<Response<UpstreamBody>, SendError> {
    match upstream.state.pool.send(req).await {
        Err(SendError::Failed {
            reused: true,
            request,
            error,
        }) if upstream.config.retry_reused => {
            let Some(req) = request.map(|r| *r).or_else(again) else {
                return Err(SendError::Failed {
                    reused: true,
                    request: None,
                    error,
                });
            };
            upstream.metrics.retry_reused();
            // Boxed: the rare path must not grow every request's future.
            Box::pin(upstream.state.pool.send_fresh(req)).await
        }
        other => other,
    }
}
