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

/// A failed attempt: how it failed, and its head when the pool handed the
/// request back (breaker refusal, no connection, or a failed exchange the
/// client still holds the request of), so the next target can re-point it
/// instead of copying the prepared head.
pub struct Failed {
    pub result: AttemptResult,
    /// With `target`'s header rules applied.
    pub unsent: Option<HeaderMap>,
}

/// Try `target` once with `headers`, the client's head prepared for
/// forwarding, taken by value. `spare` is the prepared head to rebuild from
/// when `retry_reused` must resend a request an h2 client consumed; `None`
/// when that cannot happen.
pub async fn attempt(
    ctx: &mut Ctx,
    route: &str,
    target: &Target,
    parts: &Parts,
    headers: HeaderMap,
    spare: Option<&HeaderMap>,
    body: &Bytes,
) -> Result<Committed, Failed> {
    let upstream = &target.upstream;
    let build = |headers| {
        upstream_request(
            target,
            route,
            &parts.method,
            parts.uri.path_and_query(),
            headers,
            body,
        )
    };
    let req = build(headers).map_err(|result| Failed {
        result,
        unsent: None,
    })?;

    // A refusal is a failed attempt that falls back with its head unsent.
    let Some(permit) = upstream.admit() else {
        return Err(Failed {
            result: AttemptResult::Rejected,
            unsent: Some(req.into_parts().0.headers),
        });
    };
    let started = ctx.tracing().then(std::time::SystemTime::now);
    // One deadline covers the response head and the first body byte.
    let now = std::time::Instant::now();
    let deadline = tokio::time::Instant::from_std(now) + upstream.config.header_timeout;
    let again = || spare.and_then(|h| build(h.clone()).ok());
    ctx.clock.pause_at(now);
    let result = until_commit(upstream, req, again, deadline).await;
    ctx.clock.resume();
    if let Some(started) = started {
        let traced = result.as_ref().map_or_else(|r| r.0, |_| AttemptResult::Ok);
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
        Err((failed, unsent)) => {
            permit.failure();
            upstream.metrics.attempt(failed);
            Err(Failed {
                result: failed,
                unsent: unsent.map(|req| req.into_parts().0.headers),
            })
        }
    }
}

/// Send, then wait for the head and the first body byte, all by `deadline`.
/// A failure hands back the request when it was never sent.
async fn until_commit(
    upstream: &Upstream,
    req: Request<RequestBody>,
    again: impl FnOnce() -> Option<Request<RequestBody>>,
    deadline: tokio::time::Instant,
) -> Result<(http::response::Parts, UpstreamStream), (AttemptResult, Option<Request<RequestBody>>)>
{
    let response = match tokio::time::timeout_at(deadline, send(upstream, req, again)).await {
        Err(_) => return Err((AttemptResult::Timeout, None)),
        Ok(Err(e)) => return Err((AttemptResult::ConnectError, e.into_request())),
        Ok(Ok(response)) => response,
    };
    if upstream
        .config
        .failure_statuses
        .contains(&response.status())
    {
        return Err((AttemptResult::FailureStatus, None));
    }
    let (head, mut body) = response.into_parts();
    let idle = upstream.config.idle_timeout;
    if body.is_end_stream() {
        return Ok((head, UpstreamStream::new(None, body, idle)));
    }
    match tokio::time::timeout_at(deadline, body.frame()).await {
        Err(_) => Err((AttemptResult::Timeout, None)),
        // Broke before its first byte: nothing reached the client yet, so
        // this falls back like any failure.
        Ok(Some(Err(_))) => Err((AttemptResult::StreamError, None)),
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
/// `again` rebuilds the request when the pool did not hand it back (h2).
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
