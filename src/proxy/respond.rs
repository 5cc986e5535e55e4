//! Phase: respond. Every answer a client gets is made here: an upstream's
//! (with cutover's headers and the taps that watch it), a cache hit
//! replayed, a coalesced follower's stream, the route's refusal, or a
//! local error. Each hands the request's `Ctx` to the body, which ends it
//! in the logging phase.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use tokio::sync::mpsc;

use super::attempt::Committed;
use super::body::ProxyBody;
use super::ctx::{Assignment, Ctx, Responder};
use super::headers::{self, X_CUTOVER_CACHE, X_CUTOVER_UPSTREAM, X_CUTOVER_VERSION, X_REQUEST_ID};
use super::request_body::BodyError;
use super::tap::{CompareTap, Comparing, FillTap, Taps, UsageTap};
use crate::cache::{Entry, FillGuard, FlightEvent, FlightHead};
use crate::routing;
use crate::runtime::{Route, Target};
use crate::shadow::compare::Capture;
use crate::telemetry::{CacheResult, Outcome, OutcomeSource, RefusalReason, UsageScanner};

/// A committed upstream answer, on its way to the client. `fill` is set
/// when this request leads the cache fill of its key.
pub fn upstream(
    mut ctx: Box<Ctx>,
    route: &Route,
    target: &Target,
    committed: Committed,
    fill: Option<FillGuard>,
    comparing: Comparing,
) -> Response<ProxyBody> {
    let Committed {
        head: mut parts,
        stream,
        permit,
    } = committed;
    ctx.upstream_slot = Some(permit);
    let mut taps = Taps::new(ctx.start);
    let content_type = parts.headers.get(header::CONTENT_TYPE);
    taps.usage(UsageTap::new(UsageScanner::new(ctx.api(), content_type)));
    compare_with(&mut taps, &ctx, route, content_type, comparing);
    if let (Some(guard), Some(cache)) = (fill, &route.cache)
        && storable(&parts)
    {
        taps.fill(FillTap::new(ctx.plane().cache.fill(
            guard,
            cache.ttl,
            content_type.cloned(),
            Arc::clone(&target.upstream.name),
            target.upstream.name_header.clone(),
        )));
    }
    let outcome = headers::prepare_response(&mut parts.headers);
    let version = ctx.version.map(|v| &route.versions[v]);
    if let Some(version) = version {
        // A pinned request's outcomes are counted but not judged.
        let metrics = match (&version.pinned_metrics, ctx.assignment) {
            (Some(pinned), Some(Assignment::Pinned)) => pinned,
            _ => &version.metrics,
        };
        // The upstream's own verdict on the task, stripped with the rest
        // of the x-cutover-* headers.
        if let Some(outcome) = outcome.and_then(|v| Outcome::parse(v.as_bytes())) {
            metrics.outcome(OutcomeSource::Header, outcome);
        }
        if ctx.rt.config.server.feedback_path.is_some() {
            ctx.plane()
                .feedback
                .record(ctx.request_id.as_bytes(), metrics);
        }
    }
    // A session opened (or answered) by a version travels as VERSION.VALUE,
    // so its later requests find the version again (SPEC §3). A fallback
    // target outside the route's versions leaves the id as it is.
    if let Some(name) = &route.session_header
        && route.version_index(target.name.as_bytes()).is_some()
        && let Some(value) = parts.headers.get(name)
        && let Some(tagged) = routing::session::prefixed(&target.name, value)
    {
        parts.headers.insert(name.clone(), tagged);
    }
    if let Some(result) = ctx.cache {
        parts
            .headers
            .insert(X_CUTOVER_CACHE.clone(), result.header());
    }
    own_headers(&mut parts.headers, &ctx, route);
    parts.headers.insert(
        X_CUTOVER_UPSTREAM.clone(),
        target.upstream.name_header.clone(),
    );
    ctx.status = parts.status.as_u16();
    ctx.served_cost = Some(target.cost);
    ctx.responder = Responder::Upstream(Arc::clone(&target.upstream));
    Response::from_parts(parts, ProxyBody::upstream(stream, taps, ctx))
}

/// `x-request-id` and, once a version is chosen, `x-cutover-version`.
fn own_headers(h: &mut HeaderMap, ctx: &Ctx, route: &Route) {
    h.insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
    if let Some(v) = ctx.version.map(|v| &route.versions[v]) {
        h.insert(X_CUTOVER_VERSION.clone(), v.target.name_header.clone());
    }
}

/// Attach the compare tap when shadows wait for this answer.
fn compare_with(
    taps: &mut Taps,
    ctx: &Ctx,
    route: &Route,
    content_type: Option<&HeaderValue>,
    comparing: Comparing,
) {
    if !comparing.is_empty() {
        taps.compare(CompareTap::new(
            Capture::for_content_type(content_type).reaching(Arc::clone(&route.compare_reach)),
            comparing,
            ctx.api(),
            route.metrics.skips(),
        ));
    }
}

/// The route's refusal (SPEC §5), in the format its config or the
/// request's path asks for.
pub fn refusal(
    mut ctx: Box<Ctx>,
    route: &Route,
    wants_stream: bool,
    reason: RefusalReason,
) -> Response<ProxyBody> {
    route.metrics.refusal(reason);
    let rendered = route.refusal.for_path(ctx.path(), wants_stream);
    let mut response = Response::new(ProxyBody::plain(Bytes::new()));
    *response.status_mut() = rendered.status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, rendered.content_type.clone());
    if let Some(retry) = rendered.retry_after {
        h.insert(header::RETRY_AFTER, retry.clone());
    }
    own_headers(h, &ctx, route);
    h.insert(
        X_CUTOVER_UPSTREAM.clone(),
        HeaderValue::from_static("refusal"),
    );
    if let Some(result) = cache_result(&mut ctx) {
        h.insert(X_CUTOVER_CACHE.clone(), result.header());
    }
    ctx.status = rendered.status.as_u16();
    ctx.responder = Responder::Refusal;
    let taps = Taps::new(ctx.start);
    *response.body_mut() = ProxyBody::full(rendered.body, taps, ctx);
    response
}

/// `x-cutover-cache` for an answer of cutover's own: what the cache did, or
/// on a caching route whose request never reached the cache (shed, 413,
/// 400), `bypass`, counted as such. `None` off caching routes.
fn cache_result(ctx: &mut Ctx) -> Option<CacheResult> {
    if ctx.cache.is_none()
        && let Some(cache) = ctx.route().and_then(|r| r.cache.as_ref())
    {
        cache.metrics.result(CacheResult::Bypass);
        ctx.plane().cache.count(None);
        ctx.cache = Some(CacheResult::Bypass);
    }
    ctx.cache
}

/// The answer to a request body that could not be taken: 413 past the
/// limit (`too_large` says which), 408 when it did not arrive in time, 400
/// when it broke off, 503 past the buffered-bodies budget.
pub fn rejected_body(ctx: Box<Ctx>, error: BodyError, too_large: &str) -> Response<ProxyBody> {
    match error {
        BodyError::TooLarge => local(
            ctx,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            too_large,
        ),
        BodyError::TimedOut => local(
            ctx,
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the request body did not arrive in time",
        ),
        BodyError::Client(_) => local(
            ctx,
            StatusCode::BAD_REQUEST,
            "bad_body",
            "the request body could not be read",
        ),
        BodyError::OverBudget => overloaded(ctx),
    }
}

/// 503 for a request shed where no route's refusal applies (feedback).
pub fn overloaded(ctx: Box<Ctx>) -> Response<ProxyBody> {
    let mut r = local(
        ctx,
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "cutover is at its limit of requests or buffered bodies; retry shortly",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// A JSON error answered by cutover itself.
pub fn local(
    mut ctx: Box<Ctx>,
    status: StatusCode,
    code: &str,
    message: &str,
) -> Response<ProxyBody> {
    let body =
        serde_json::json!({"error": {"message": message, "type": "cutover_error", "code": code}})
            .to_string();
    let mut response = Response::new(ProxyBody::plain(Bytes::new()));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
    if let Some(result) = cache_result(&mut ctx) {
        h.insert(X_CUTOVER_CACHE.clone(), result.header());
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::BAD_REQUEST {
        // The rest of the body was not read: the connection cannot be reused.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    ctx.status = status.as_u16();
    ctx.responder = Responder::Local;
    let taps = Taps::new(ctx.start);
    *response.body_mut() = ProxyBody::full(Bytes::from(body), taps, ctx);
    response
}

/// A small JSON answer of cutover's own that succeeded (feedback counted).
pub fn ok_json(mut ctx: Box<Ctx>, body: &'static [u8]) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::plain(Bytes::new()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    ctx.status = 200;
    ctx.responder = Responder::Local;
    let taps = Taps::new(ctx.start);
    *r.body_mut() = ProxyBody::full(Bytes::from_static(body), taps, ctx);
    r
}

/// A response may be stored: a 200 without `Set-Cookie`, without
/// `Cache-Control: private` or `no-store`, and not content-coded (an entry
/// keeps only its content type; cutover asks for `identity`, and an
/// upstream that compresses anyway is not replayed as if it had not).
fn storable(parts: &http::response::Parts) -> bool {
    parts.status == StatusCode::OK
        && !parts.headers.contains_key(header::SET_COOKIE)
        && parts
            .headers
            .get(header::CONTENT_ENCODING)
            .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"))
        && !parts
            .headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .any(|v| {
                v.as_bytes().split(|&b| b == b',').any(|d| {
                    let d = d.trim_ascii();
                    d.eq_ignore_ascii_case(b"private") || d.eq_ignore_ascii_case(b"no-store")
                })
            })
}

/// Replay a stored response: status 200, its content type and its bytes.
pub fn hit(
    mut ctx: Box<Ctx>,
    route: &Route,
    entry: Arc<Entry>,
    comparing: Comparing,
) -> Response<ProxyBody> {
    let (mut response, taps) = replay_head(
        &mut ctx,
        route,
        entry.content_type.as_ref(),
        &entry.upstream_header,
        comparing,
    );
    let body = entry.body.clone();
    ctx.responder = Responder::Cache(entry);
    *response.body_mut() = ProxyBody::full(body, taps, ctx);
    response
}

/// Stream an identical miss's answer as the leader receives it: its head,
/// the frames so far, then each frame as it arrives.
pub fn follower(
    mut ctx: Box<Ctx>,
    route: &Route,
    head: FlightHead,
    events: mpsc::UnboundedReceiver<FlightEvent>,
    comparing: Comparing,
) -> Response<ProxyBody> {
    let (mut response, taps) = replay_head(
        &mut ctx,
        route,
        head.content_type.as_ref(),
        &head.upstream_header,
        comparing,
    );
    ctx.responder = Responder::Follower(head.upstream);
    *response.body_mut() = ProxyBody::follow(events, taps, ctx);
    response
}

/// The head a hit and a follower share (200, the stored content type,
/// cutover's own headers, `x-cutover-cache: hit`), and the taps that
/// compare the replayed body with the shadows'; the caller adds the body.
fn replay_head(
    ctx: &mut Ctx,
    route: &Route,
    content_type: Option<&HeaderValue>,
    upstream_header: &HeaderValue,
    comparing: Comparing,
) -> (Response<ProxyBody>, Taps) {
    let mut response = Response::new(ProxyBody::plain(Bytes::new()));
    let h = response.headers_mut();
    if let Some(ct) = content_type {
        h.insert(header::CONTENT_TYPE, ct.clone());
    }
    own_headers(h, ctx, route);
    h.insert(X_CUTOVER_UPSTREAM.clone(), upstream_header.clone());
    h.insert(X_CUTOVER_CACHE.clone(), CacheResult::Hit.header());
    ctx.status = 200;
    let mut taps = Taps::new(ctx.start);
    compare_with(&mut taps, ctx, route, content_type, comparing);
    (response, taps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, headers: &[(&str, &str)]) -> http::response::Parts {
        let mut b = Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("response").into_parts().0
    }

    #[test]
    fn only_plain_200s_are_storable() {
        assert!(storable(&head(200, &[("cache-control", "max-age=60")])));
        assert!(!storable(&head(201, &[])));
        assert!(!storable(&head(500, &[])));
        assert!(!storable(&head(200, &[("set-cookie", "sid=1")])));
        assert!(!storable(&head(200, &[("content-encoding", "gzip")])));
        assert!(storable(&head(200, &[("content-encoding", "identity")])));
        assert!(!storable(&head(200, &[("cache-control", "Private")])));
        assert!(!storable(&head(
            200,
            &[("cache-control", "max-age=0, no-store")]
        )));
    }
}
