//! `handle`: one request, from head to the response that streams back.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::body::{BodyError, ProxyBody, UpstreamStream, read_bounded};
use super::exchange::{Assignment, Exchange, Responder};
use super::feedback;
use super::headers::{self, X_CUTOVER_UPSTREAM, X_CUTOVER_VERSION, X_REQUEST_ID};
use super::json;

use crate::gateway::Gateway;
use crate::routing::{self, matcher};
use crate::runtime::{Route, Target};
use crate::telemetry::{AttemptResult, Outcome, OutcomeSource, RefusalReason, UsageScanner, names};
use crate::upstream::Permit;

/// What the listener knows about a connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

pub async fn handle(
    gateway: Arc<Gateway>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let rt = gateway.runtime.load_full();
    let (mut parts, body) = req.into_parts();
    let request_id = headers::request_id(&parts.headers);
    let mut ex = Exchange::new(
        gateway,
        Arc::clone(&rt),
        request_id,
        parts.method.clone(),
        parts.uri.clone(),
    );

    // Second line of defence: on HTTP/1 hyper and `server::Sniffed` already
    // refuse these heads; this catches any other path (HTTP/2, a future
    // listener) for the price of two header lookups.
    if headers::ambiguous_framing(&parts.headers) {
        return local(
            ex,
            StatusCode::BAD_REQUEST,
            "ambiguous_framing",
            "the request has both Content-Length and Transfer-Encoding, or conflicting Content-Lengths",
        );
    }

    // The feedback endpoint is cutover's own, ahead of every route.
    if let Some(path) = &rt.config.server.feedback_path
        && parts.uri.path() == path
    {
        return feedback::handle(ex, parts, body).await;
    }

    // Phase: route match. First match in file order wins.
    let host = matcher::request_host(&parts.uri, &parts.headers);
    let Some(route_index) = rt.routes.iter().position(|r| {
        matcher::matches(
            &r.matcher,
            &parts.method,
            parts.uri.path(),
            host,
            &parts.headers,
        )
    }) else {
        return local(
            ex,
            StatusCode::NOT_FOUND,
            "no_route",
            "no route matches this request",
        );
    };
    ex.route = Some(route_index);
    let route = &rt.routes[route_index];
    let server = &rt.config.server;

    // Phase: admission. Shed before reading the body: shedding exists to
    // protect the process, so it must stay cheap.
    if !ex.admit(server.max_in_flight) {
        return refuse(ex, route, false, RefusalReason::Overload);
    }

    // Phase: body. Bounded, whole, before anything is forwarded.
    ex.wait();
    let body = read_bounded(body, &parts.headers, server.max_body).await;
    ex.work();
    let body = match body {
        Ok(b) => b,
        Err(e) => return reject_body(ex, e, "the request body exceeds server.max_body"),
    };

    // Phase: assignment.
    let client_ip = headers::client_ip(&parts.headers, conn.peer, server.trust_forwarded_for);
    let (version_index, assignment, key_hash) = assign(route, &parts, client_ip);
    ex.version = Some(version_index);
    ex.assignment = Some(assignment);
    ex.key_hash = key_hash;

    // Phase: upstream request head (the per-target parts come per attempt).
    let had_parent = parts.headers.contains_key(&headers::TRACEPARENT);
    let trace = headers::prepare_forward(&mut parts.headers, conn.peer, conn.tls, &ex.request_id);
    if ex.gateway().tracer.is_some() {
        let parent_sampled =
            (had_parent && trace.parent_span_id.is_some()).then_some(trace.sampled);
        ex.trace(trace, parent_sampled);
    }

    // Phase: attempts along the fallback chain, then the refusal.
    let version = &route.versions[version_index];
    let chain = std::iter::once(&version.target).chain(
        route
            .fallbacks
            .iter()
            .filter(|f| f.name != version.target.name),
    );
    // Attempts in the chain (the chosen version is never its own fallback).
    let remaining = 1 + route
        .fallbacks
        .iter()
        .filter(|f| f.name != version.target.name)
        .count();
    let mut base_headers = Some(std::mem::take(&mut parts.headers));
    let mut previous: Option<&Target> = None;
    for (i, target) in chain.enumerate() {
        if let Some(prev) = previous {
            // Rare: label the counter here rather than keep a handle per pair.
            metrics::counter!(
                names::FALLBACKS_TOTAL,
                "route" => route.name.to_string(),
                "from" => prev.name.to_string(),
                "to" => target.name.to_string()
            )
            .increment(1);
            let path = ex
                .fallback_path
                .get_or_insert_with(|| prev.name.to_string());
            path.push('>');
            path.push_str(&target.name);
        }
        // The last attempt may consume the headers; earlier ones copy them.
        let attempt_headers = if i + 1 >= remaining {
            base_headers.take().unwrap_or_default()
        } else {
            base_headers.clone().unwrap_or_default()
        };
        match attempt(&mut ex, target, &parts, attempt_headers, &body).await {
            Ok((head, stream, slot)) => {
                ex.upstream_slot = Some(slot);
                return respond(ex, route, target, head, stream);
            }
            Err(e) => {
                tracing::debug!(target = %target.name, error = ?e, "attempt failed");
                previous = Some(target);
            }
        }
    }
    let wants_stream = json::wants_stream(&body);
    refuse(ex, route, wants_stream, RefusalReason::Exhausted)
}

/// Pin header, then sticky key, then random by weight.
fn assign(
    route: &Route,
    parts: &Parts,
    client_ip: std::net::IpAddr,
) -> (usize, Assignment, Option<u64>) {
    if let Some(pin) = &route.pin_header
        && let Some(value) = parts.headers.get(pin)
        && let Some(index) = route.version_index(value.as_bytes())
    {
        return (index, Assignment::Pinned, None);
    }
    if let Some(key) =
        routing::sticky_key(&route.sticky, &parts.headers, parts.uri.query(), client_ip)
    {
        let (bucket, tag) = routing::split::bucket_and_tag(&route.salt, key.as_bytes());
        return (route.table.index_of(bucket), Assignment::Sticky, Some(tag));
    }
    let bucket = rand::random_range(0..routing::BUCKETS);
    (route.table.index_of(bucket), Assignment::Unsticky, None)
}

async fn attempt(
    ex: &mut Exchange,
    target: &Target,
    parts: &Parts,
    mut headers: HeaderMap,
    body: &Bytes,
) -> Result<(http::response::Parts, UpstreamStream, Permit), AttemptResult> {
    let upstream = &target.upstream;
    for name in &upstream.config.remove_headers {
        headers.remove(name);
    }
    // Upstream-wide headers first, then the version's own: the more
    // specific setting wins.
    for (name, value) in upstream
        .config
        .set_headers
        .iter()
        .chain(target.set_headers.iter())
    {
        headers.insert(name.clone(), value.clone());
    }
    headers.insert(header::HOST, upstream.host_header.clone());
    headers.insert(X_CUTOVER_VERSION.clone(), target.name_header.clone());

    let body = match &target.set_json {
        None => body.clone(),
        Some(fields) => json::set_fields(body, fields).unwrap_or_else(|| {
            tracing::debug!(target = %target.name, "set_json skipped: body is not a JSON object");
            body.clone()
        }),
    };
    let uri = upstream
        .uri(parts.uri.path_and_query())
        .map_err(|_| AttemptResult::ConnectError)?;
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;

    // The breaker admits the attempt or refuses it at once (open, probes
    // taken, max_in_flight): a refusal is a failed attempt that falls back
    // without touching the upstream, and is not reported to the breaker.
    let mut permit = match upstream.state.breaker.try_acquire() {
        Ok(p) => p,
        Err(_) => {
            upstream.metrics.attempt(AttemptResult::Rejected);
            return Err(AttemptResult::Rejected);
        }
    };
    let started = ex.tracing().then(std::time::SystemTime::now);
    // One deadline covers the response head and the first body byte: the
    // commit point (SPEC §5). Until then a failure can still fall back.
    let deadline = tokio::time::Instant::now() + upstream.config.header_timeout;
    ex.wait();
    let sent = tokio::time::timeout_at(deadline, upstream.state.client.request(req)).await;
    let result = match sent {
        Err(_) => Err(AttemptResult::Timeout),
        Ok(Err(_)) => Err(AttemptResult::ConnectError),
        Ok(Ok(response))
            if upstream
                .config
                .failure_statuses
                .contains(&response.status()) =>
        {
            Err(AttemptResult::FailureStatus)
        }
        Ok(Ok(response)) => {
            let (head, mut body) = response.into_parts();
            if body.is_end_stream() {
                Ok((
                    head,
                    UpstreamStream::new(None, body, upstream.config.idle_timeout),
                ))
            } else {
                match tokio::time::timeout_at(deadline, body.frame()).await {
                    Err(_) => Err(AttemptResult::Timeout),
                    // Broke before its first byte: nothing reached the
                    // client yet, so this falls back like any failure.
                    Ok(Some(Err(_))) => Err(AttemptResult::StreamError),
                    Ok(first) => Ok((
                        head,
                        UpstreamStream::new(
                            first.and_then(Result::ok),
                            body,
                            upstream.config.idle_timeout,
                        ),
                    )),
                }
            }
        }
    };
    ex.work();
    if let Some(started) = started {
        let traced = result.as_ref().map_or_else(|r| *r, |_| AttemptResult::Ok);
        ex.record_attempt(&target.name, &upstream.name, started, traced);
    }
    match result {
        // Judged healthy at the commit point; counted in metrics when the
        // stream ends (see `Exchange::finish`).
        Ok((head, stream)) => {
            permit.record_success();
            Ok((head, stream, permit))
        }
        Err(failed) => {
            permit.failure();
            upstream.metrics.attempt(failed);
            Err(failed)
        }
    }
}

fn respond(
    mut ex: Exchange,
    route: &Route,
    target: &Target,
    mut parts: http::response::Parts,
    stream: UpstreamStream,
) -> Response<ProxyBody> {
    let version = ex.version.map(|v| &route.versions[v]);
    if let Some(version) = version {
        // The upstream's own verdict on the task: counted, then stripped
        // with the rest of the x-cutover-* headers.
        if let Some(outcome) = parts
            .headers
            .get(&headers::X_CUTOVER_OUTCOME)
            .and_then(|v| Outcome::parse(v.as_bytes()))
        {
            version.metrics.outcome(OutcomeSource::Header, outcome);
        }
        if ex.rt.config.server.feedback_path.is_some() {
            ex.gateway()
                .feedback
                .record(ex.request_id.as_bytes(), &version.metrics);
        }
    }
    ex.usage = UsageScanner::for_content_type(parts.headers.get(header::CONTENT_TYPE));
    headers::prepare_response(&mut parts.headers);
    parts
        .headers
        .insert(X_REQUEST_ID.clone(), ex.request_id.clone());
    if let Some(version) = version {
        parts.headers.insert(
            X_CUTOVER_VERSION.clone(),
            version.target.name_header.clone(),
        );
    }
    parts.headers.insert(
        X_CUTOVER_UPSTREAM.clone(),
        target.upstream.name_header.clone(),
    );
    ex.status = parts.status.as_u16();
    ex.responder = Responder::Upstream(Arc::clone(&target.upstream));
    Response::from_parts(parts, ProxyBody::upstream(stream, ex))
}

fn refuse(
    mut ex: Exchange,
    route: &Route,
    wants_stream: bool,
    reason: RefusalReason,
) -> Response<ProxyBody> {
    route.metrics.refusal(reason);
    let rendered = route.refusal.for_request(wants_stream);
    let mut response = Response::new(ProxyBody::plain(Bytes::new()));
    *response.status_mut() = rendered.status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, rendered.content_type.clone());
    if let Some(retry) = rendered.retry_after {
        h.insert(header::RETRY_AFTER, retry.clone());
    }
    h.insert(X_REQUEST_ID.clone(), ex.request_id.clone());
    if let Some(v) = ex.version.map(|v| &route.versions[v]) {
        h.insert(X_CUTOVER_VERSION.clone(), v.target.name_header.clone());
    }
    h.insert(
        X_CUTOVER_UPSTREAM.clone(),
        HeaderValue::from_static("refusal"),
    );
    ex.status = rendered.status.as_u16();
    ex.responder = Responder::Refusal;
    let body = rendered.body;
    *response.body_mut() = ProxyBody::full(body, ex);
    response
}

/// The answer to a request body that could not be taken: 413 past the
/// limit (`too_large` says which), 408 when it did not arrive in time, 400
/// when it broke off.
pub(super) fn reject_body(ex: Exchange, error: BodyError, too_large: &str) -> Response<ProxyBody> {
    match error {
        BodyError::TooLarge => local(
            ex,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            too_large,
        ),
        BodyError::TimedOut => local(
            ex,
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the request body did not arrive in time",
        ),
        BodyError::Client(_) => local(
            ex,
            StatusCode::BAD_REQUEST,
            "bad_body",
            "the request body could not be read",
        ),
    }
}

/// A JSON error answered by cutover itself.
pub(super) fn local(
    mut ex: Exchange,
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
    h.insert(X_REQUEST_ID.clone(), ex.request_id.clone());
    if status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::BAD_REQUEST {
        // The rest of the body was not read: the connection cannot be reused.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    ex.status = status.as_u16();
    ex.responder = Responder::Local;
    *response.body_mut() = ProxyBody::full(Bytes::from(body), ex);
    response
}
