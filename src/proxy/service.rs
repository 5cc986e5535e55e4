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

use super::body::{BodyError, BodyLimits, ProxyBody, UpstreamStream, read_bounded};
use super::exchange::{Assignment, Exchange, Responder};
use super::feedback;
use super::headers::{self, X_CUTOVER_CACHE, X_CUTOVER_UPSTREAM, X_CUTOVER_VERSION, X_REQUEST_ID};
use super::json;
use super::mirror;

use tokio::sync::mpsc;

use crate::cache::{
    self, Entry, FillGuard, FlightEvent, FlightHead, Follow, Lock, RequestInput, RouteCache,
};
use crate::gateway::Gateway;
use crate::routing::session::Session;
use crate::routing::{self, matcher};
use crate::runtime::Upstream;
use crate::runtime::{Route, Target};
use crate::telemetry::{
    AttemptResult, CacheResult, Outcome, OutcomeSource, RefusalReason, UsageScanner, names,
};
use crate::upstream::{Permit, RequestBody, SendError, UpstreamBody};

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
    let Some(route_index) =
        rt.route_index
            .find(&parts.method, parts.uri.path(), host, &parts.headers)
    else {
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

    // Phase: body. Bounded, whole, before anything is forwarded, and
    // within the memory budget of all buffered bodies.
    let budget = Arc::clone(&ex.gateway().buffered);
    let limits = BodyLimits {
        max: server.max_body,
        budget: &budget,
        budget_limit: server.max_buffered,
    };
    ex.wait();
    let body = read_bounded(body, &parts.headers, &limits).await;
    ex.work();
    let body = match body {
        Ok(b) => b,
        Err(BodyError::OverBudget) => return refuse(ex, route, false, RefusalReason::Overload),
        Err(e) => return reject_body(ex, e, "the request body exceeds server.max_body"),
    };

    // Phase: assignment. The same sticky key decides the version and which
    // shadows mirror the request.
    let client_ip = headers::client_ip(&parts.headers, conn.peer, server.trust_forwarded_for);
    let key = routing::sticky_key(&route.sticky, &parts.headers, parts.uri.query(), client_ip);
    let key = key.as_ref().map(|k| k.as_bytes());
    let mut bare_session = None;
    let (version_index, assignment, key_hash) = match route.session(&parts.headers) {
        Some(Session::Live(index, bare)) => {
            bare_session = Some(bare);
            (
                index,
                Assignment::Session,
                key.map(|k| routing::split::bucket_and_tag(&route.salt, k).1),
            )
        }
        Some(Session::Gone(index)) => {
            ex.version = Some(index);
            ex.assignment = Some(Assignment::Session);
            let version = &route.versions[index];
            version.metrics.assigned(Assignment::Session);
            let mut gone = local(
                ex,
                StatusCode::NOT_FOUND,
                "session_gone",
                "this session's version no longer takes traffic; start a new session",
            );
            gone.headers_mut().insert(
                X_CUTOVER_VERSION.clone(),
                version.target.name_header.clone(),
            );
            return gone;
        }
        None => assign(route, &parts.headers, key),
    };
    route.versions[version_index].metrics.assigned(assignment);
    let mirrored = mirror_set(route, key);
    // The upstream (and any mirror) sees its own session id.
    if let (Some(name), Some(bare)) = (&route.session_header, bare_session) {
        parts.headers.insert(name.clone(), bare);
    }
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

    // Phase: shadows. Spawned, never awaited.
    if mirrored != 0 {
        spawn_mirrors(&mut ex, route_index, mirrored, &parts, &body);
    }

    // Phase: cache.
    let version = &route.versions[version_index];
    let mut fill_guard = None;
    if let Some(cache) = &route.cache {
        match lookup(&mut ex, cache, &version.target, &parts, &body).await {
            Lookup::Hit(entry) => return serve_hit(ex, route, entry),
            Lookup::Follow(head, events) => return serve_follower(ex, route, head, events),
            Lookup::Miss(guard) => fill_guard = guard,
            Lookup::Bypass => {}
            // Waited without a slot, and none is free now.
            Lookup::Shed => return refuse(ex, route, false, RefusalReason::Overload),
        }
    }

    // Phase: attempts along the fallback chain, then the refusal.
    let chain = std::iter::once(&version.target).chain(
        route
            .fallbacks
            .iter()
            .filter(|f| f.name != version.target.name),
    );
    let base_headers = std::mem::take(&mut parts.headers);
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
        match attempt(&mut ex, &route.name, target, &parts, &base_headers, &body).await {
            Ok((head, stream, slot)) => {
                ex.upstream_slot = Some(slot);
                // Only the chosen version's own answer is stored, never a
                // fallback's.
                let fill = if i == 0 { fill_guard.take() } else { None };
                return respond(ex, route, target, head, stream, fill);
            }
            Err(e) => {
                tracing::debug!(target = %target.name, error = ?e, "attempt failed");
                if i == 0 {
                    ex.own_attempt_failed = true;
                    // A fallback's answer is never stored: the followers
                    // go upstream on their own now, not after the chain.
                    fill_guard = None;
                }
                previous = Some(target);
            }
        }
    }
    let wants_stream = json::wants_stream(&body);
    refuse(ex, route, wants_stream, RefusalReason::Exhausted)
}

/// Send on the upstream's pool. A request that fails on a reused
/// keep-alive connection before any response byte (the upstream closed it
/// as the request arrived) goes once more on a new connection when
/// `retry_reused` is on (SPEC §5): counted as a retry, not a failure.
/// `again` rebuilds the request when the first one was already written.
pub(super) async fn send(
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

/// Pin header (with the pin token when the route requires one), then
/// sticky key, then random by weight.
fn assign(
    route: &Route,
    headers: &HeaderMap,
    key: Option<&[u8]>,
) -> (usize, Assignment, Option<u64>) {
    if let Some(pin) = &route.pin_header
        && let Some(value) = headers.get(pin)
        && let Some(index) = route.version_index(value.as_bytes())
        && route.pin_token.as_ref().is_none_or(|token| {
            headers
                .get(&headers::X_CUTOVER_PIN_TOKEN)
                .is_some_and(|given| token.matches(given.as_bytes()))
        })
    {
        return (index, Assignment::Pinned, None);
    }
    if let Some(key) = key {
        let (bucket, tag) = routing::split::bucket_and_tag(&route.salt, key);
        return (route.table.index_of(bucket), Assignment::Sticky, Some(tag));
    }
    let bucket = rand::random_range(0..routing::BUCKETS);
    (route.table.index_of(bucket), Assignment::Unsticky, None)
}

/// The request to `target`'s upstream: its header rules, `Host`,
/// `x-cutover-version`, and `set_json` applied to the shared body.
pub(super) fn upstream_request(
    target: &Target,
    route: &str,
    method: &http::Method,
    path_and_query: Option<&http::uri::PathAndQuery>,
    mut headers: HeaderMap,
    body: &Bytes,
) -> Result<Request<Full<Bytes>>, AttemptResult> {
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
            // Forwarded unchanged (SPEC §3), and counted: rare, so the
            // labels are hashed here rather than kept as a handle.
            metrics::counter!(
                names::SET_JSON_SKIPPED_TOTAL,
                "route" => route.to_string(),
                "target" => target.name.to_string()
            )
            .increment(1);
            body.clone()
        }),
    };
    let uri = upstream
        .origin_uri(path_and_query)
        .map_err(|_| AttemptResult::ConnectError)?;
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}

async fn attempt(
    ex: &mut Exchange,
    route: &str,
    target: &Target,
    parts: &Parts,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(http::response::Parts, UpstreamStream, Permit), AttemptResult> {
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
    let started = ex.tracing().then(std::time::SystemTime::now);
    // One deadline covers the response head and the first body byte: the
    // commit point (SPEC §5). Until then a failure can still fall back.
    let deadline = tokio::time::Instant::now() + upstream.config.header_timeout;
    ex.wait();
    let sent = tokio::time::timeout_at(deadline, send(upstream, req, || build().ok())).await;
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
        // Committed: the permit travels with the stream, and the breaker
        // hears how the stream ended (`Exchange::finish`), so a stream that
        // breaks after its first byte counts against its upstream (SPEC §5).
        Ok((head, stream)) => Ok((head, stream, permit)),
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
    fill: Option<FillGuard>,
) -> Response<ProxyBody> {
    let version = ex.version.map(|v| &route.versions[v]);
    if let Some(version) = version {
        // A pinned request's outcomes are counted but not judged.
        let metrics = match (&version.pinned_metrics, ex.assignment) {
            (Some(pinned), Some(Assignment::Pinned)) => pinned,
            _ => &version.metrics,
        };
        // The upstream's own verdict on the task: counted, then stripped
        // with the rest of the x-cutover-* headers.
        if let Some(outcome) = parts
            .headers
            .get(&headers::X_CUTOVER_OUTCOME)
            .and_then(|v| Outcome::parse(v.as_bytes()))
        {
            metrics.outcome(OutcomeSource::Header, outcome);
        }
        if ex.rt.config.server.feedback_path.is_some() {
            ex.gateway()
                .feedback
                .record(ex.request_id.as_bytes(), metrics);
        }
    }
    let content_type = parts.headers.get(header::CONTENT_TYPE);
    ex.usage = UsageScanner::new(ex.api(), content_type);
    ex.begin_capture(content_type);
    if let (Some(guard), Some(cache)) = (fill, &route.cache)
        && storable(&parts)
    {
        ex.fill = Some(ex.gateway().cache.fill(
            guard,
            cache.ttl,
            content_type.cloned(),
            Arc::clone(&target.upstream.name),
            target.upstream.name_header.clone(),
        ));
    }
    headers::prepare_response(&mut parts.headers);
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
    if let Some(result) = ex.cache {
        parts
            .headers
            .insert(X_CUTOVER_CACHE.clone(), result.header());
    }
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
    ex.served_cost = Some(target.cost);
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
    let rendered = route.refusal.for_path(ex.path(), wants_stream);
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
    if let Some(result) = cache_result(&mut ex) {
        h.insert(X_CUTOVER_CACHE.clone(), result.header());
    }
    ex.status = rendered.status.as_u16();
    ex.responder = Responder::Refusal;
    let body = rendered.body;
    *response.body_mut() = ProxyBody::full(body, ex);
    response
}

/// `x-cutover-cache` for an answer of cutover's own: what the cache did, or
/// on a caching route whose request never reached the cache (shed, 413,
/// 400), `bypass`, counted as such. `None` off caching routes.
fn cache_result(ex: &mut Exchange) -> Option<CacheResult> {
    let rt = Arc::clone(&ex.rt);
    if ex.cache.is_none()
        && let Some(route) = ex.route
        && let Some(cache) = &rt.routes[route].cache
    {
        cache.metrics.result(CacheResult::Bypass);
        ex.gateway().cache.count(None);
        ex.cache = Some(CacheResult::Bypass);
    }
    ex.cache
}

/// The answer to a request body that could not be taken: 413 past the
/// limit (`too_large` says which), 408 when it did not arrive in time, 400
/// when it broke off, 503 past the buffered-bodies budget.
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
        BodyError::OverBudget => overloaded(ex),
    }
}

/// 503 for a request shed where no route's refusal applies (feedback).
pub(super) fn overloaded(ex: Exchange) -> Response<ProxyBody> {
    let mut r = local(
        ex,
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "cutover is at its limit of requests or buffered bodies; retry shortly",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
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
    if let Some(result) = cache_result(&mut ex) {
        h.insert(X_CUTOVER_CACHE.clone(), result.header());
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::BAD_REQUEST {
        // The rest of the body was not read: the connection cannot be reused.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    ex.status = status.as_u16();
    ex.responder = Responder::Local;
    *response.body_mut() = ProxyBody::full(Bytes::from(body), ex);
    response
}

/// The shadows that mirror this request, as a bit set over the route's
/// shadows (the first 64; config validation keeps routes far below that).
fn mirror_set(route: &Route, key: Option<&[u8]>) -> u64 {
    let mut set = 0u64;
    for (i, shadow) in route.shadows.iter().take(64).enumerate() {
        if shadow.selects(key) {
            set |= 1 << i;
        }
    }
    set
}

/// Take a slot per selected shadow (or count it dropped) and spawn its
/// mirror with the prepared head and the shared body.
fn spawn_mirrors(ex: &mut Exchange, route_index: usize, set: u64, parts: &Parts, body: &Bytes) {
    let route = &ex.rt.routes[route_index];
    for (i, shadow) in route.shadows.iter().enumerate().take(64) {
        if set & (1 << i) == 0 {
            continue;
        }
        let Some(slot) = shadow.try_slot() else {
            continue;
        };
        let primary = if shadow.compare.is_empty() {
            None
        } else {
            let (tx, rx) = tokio::sync::oneshot::channel();
            ex.compare_tx.push(tx);
            Some(rx)
        };
        mirror::spawn(mirror::Job {
            gateway: ex.gateway_arc(),
            rt: Arc::clone(&ex.rt),
            route: route_index,
            shadow: i,
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
            request_id: ex.request_id.clone(),
            key_hash: ex.key_hash,
            primary,
            slot,
        });
    }
}

enum Lookup {
    Hit(Arc<Entry>),
    /// Follow an identical miss's answer as it streams (counted as a hit).
    Follow(FlightHead, mpsc::UnboundedReceiver<FlightEvent>),
    /// Go to the upstream; with a guard when this request fills the entry.
    Miss(Option<FillGuard>),
    Bypass,
    /// A follower found no `max_in_flight` slot after its wait.
    Shed,
}

/// Decide bypass, compute the key, and look it up. An identical miss
/// already under way is followed as it streams (SPEC §6).
async fn lookup(
    ex: &mut Exchange,
    cache: &RouteCache,
    target: &Target,
    parts: &Parts,
    body: &Bytes,
) -> Lookup {
    let store = Arc::clone(&ex.gateway().cache);
    let result = if cache::bypass_requested(&parts.headers)
        || (cache.deterministic_only && !cache::is_deterministic(body))
    {
        Lookup::Bypass
    } else {
        let vary: Vec<_> = cache
            .vary
            .iter()
            .map(|name| (name.clone(), parts.headers.get(name)))
            .collect();
        let key = cache::cache_key_with(
            &target.cache_key,
            &RequestInput {
                method: &parts.method,
                path: parts.uri.path(),
                query: parts.uri.query(),
                content_type: parts.headers.get(header::CONTENT_TYPE),
                body,
                vary: &vary,
            },
        );
        match store.get(&key) {
            Some(entry) => Lookup::Hit(entry),
            None => match store.lock(key) {
                // With `cache.shared`: the fleet's tier before the upstream
                // (a short deadline; holding the lock, identical misses here
                // then find the entry locally).
                Lock::Leader(guard) if store.shares() => {
                    ex.wait();
                    let shared = store.get_shared(&key).await;
                    ex.work();
                    match shared {
                        Some(entry) => Lookup::Hit(entry),
                        None => Lookup::Miss(Some(guard)),
                    }
                }
                Lock::Leader(guard) => Lookup::Miss(Some(guard)),
                Lock::Wait(flight) => {
                    // A follower waits without a max_in_flight slot, and
                    // at most lock_timeout; it takes a slot again to go on.
                    ex.release_admission();
                    ex.wait();
                    let follow = flight.follow(ex.rt.config.cache.lock_timeout).await;
                    ex.work();
                    if !ex.admit(ex.rt.config.server.max_in_flight) {
                        return Lookup::Shed;
                    }
                    match follow {
                        Follow::Stream(head, events) => Lookup::Follow(head, events),
                        Follow::Stored => match store.get(&key) {
                            Some(entry) => Lookup::Hit(entry),
                            None => Lookup::Miss(None),
                        },
                        // Not storable, broken, too large, or no first
                        // byte in time: go on alone rather than queue
                        // behind another leader.
                        Follow::Alone => Lookup::Miss(None),
                    }
                }
            },
        }
    };
    let counted = match &result {
        Lookup::Hit(_) | Lookup::Follow(..) => CacheResult::Hit,
        Lookup::Miss(_) => CacheResult::Miss,
        // (A shed follower returns before this; its refusal counts it.)
        Lookup::Bypass | Lookup::Shed => CacheResult::Bypass,
    };
    cache.metrics.result(counted);
    store.count(match counted {
        CacheResult::Hit => Some(true),
        CacheResult::Miss => Some(false),
        CacheResult::Bypass => None,
    });
    ex.cache = Some(counted);
    result
}

/// A response may be stored: a 200 without `Set-Cookie` and without
/// `Cache-Control: private` or `no-store`.
fn storable(parts: &http::response::Parts) -> bool {
    parts.status == StatusCode::OK
        && !parts.headers.contains_key(header::SET_COOKIE)
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
fn serve_hit(mut ex: Exchange, route: &Route, entry: Arc<Entry>) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::plain(Bytes::new()));
    let h = response.headers_mut();
    if let Some(ct) = &entry.content_type {
        h.insert(header::CONTENT_TYPE, ct.clone());
    }
    h.insert(X_REQUEST_ID.clone(), ex.request_id.clone());
    if let Some(v) = ex.version.map(|v| &route.versions[v]) {
        h.insert(X_CUTOVER_VERSION.clone(), v.target.name_header.clone());
    }
    h.insert(X_CUTOVER_UPSTREAM.clone(), entry.upstream_header.clone());
    h.insert(X_CUTOVER_CACHE.clone(), CacheResult::Hit.header());
    ex.status = 200;
    ex.begin_capture(entry.content_type.as_ref());
    let body = entry.body.clone();
    ex.responder = Responder::Cache(entry);
    *response.body_mut() = ProxyBody::full(body, ex);
    response
}

/// Stream an identical miss's answer as the leader receives it: its head,
/// the frames so far, then each frame as it arrives.
fn serve_follower(
    mut ex: Exchange,
    route: &Route,
    head: FlightHead,
    events: mpsc::UnboundedReceiver<FlightEvent>,
) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::plain(Bytes::new()));
    let h = response.headers_mut();
    if let Some(ct) = &head.content_type {
        h.insert(header::CONTENT_TYPE, ct.clone());
    }
    h.insert(X_REQUEST_ID.clone(), ex.request_id.clone());
    if let Some(v) = ex.version.map(|v| &route.versions[v]) {
        h.insert(X_CUTOVER_VERSION.clone(), v.target.name_header.clone());
    }
    h.insert(X_CUTOVER_UPSTREAM.clone(), head.upstream_header.clone());
    h.insert(X_CUTOVER_CACHE.clone(), CacheResult::Hit.header());
    ex.status = 200;
    ex.begin_capture(head.content_type.as_ref());
    ex.responder = Responder::Follower(head.upstream);
    *response.body_mut() = ProxyBody::follow(events, ex);
    response
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
        assert!(!storable(&head(200, &[("cache-control", "Private")])));
        assert!(!storable(&head(
            200,
            &[("cache-control", "max-age=0, no-store")]
        )));
    }
}
