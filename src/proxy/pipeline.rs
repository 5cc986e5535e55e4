//! `handle`: one request through the phases, in order (Pingora's request
//! lifecycle is the model):
//!
//! ```text
//! match → admit → read body → assign → shadows → cache → attempt/fallback → respond
//!                                                                   └─► (refusal)
//! then, when the response body ends (or the client leaves): log
//! ```
//!
//! Each phase lives in a module named for it; this function only calls
//! them and decides where to go next. Rare paths that would grow the
//! request's future (the feedback endpoint) are boxed: the future is moved
//! by memcpy, so its size is paid on every request.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::assign::{self, Assigned};
use super::body::ProxyBody;
use super::cache_lookup::{self, Lookup};
use super::ctx::Ctx;
use super::fallback;
use super::feedback;
use super::headers::{self, X_CUTOVER_VERSION};
use super::json;
use super::matching;
use super::mirror;
use super::request_body::{BodyError, BodyLimits, read_bounded};
use super::respond;
use crate::gateway::data_plane::DataPlane;
use crate::routing;
use crate::telemetry::RefusalReason;

/// What the listener knows about a connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

pub async fn handle(
    plane: Arc<DataPlane>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let rt = plane.runtime();
    let (mut parts, body) = req.into_parts();
    let request_id = headers::request_id(&parts.headers);
    let mut ctx = Box::new(Ctx::new(
        plane,
        Arc::clone(&rt),
        request_id,
        parts.method.clone(),
        parts.uri.clone(),
    ));

    // Second line of defence: on HTTP/1 hyper and `server::Sniffed` already
    // refuse these heads; this catches any other path (HTTP/2, a future
    // listener) for the price of two header lookups.
    if headers::ambiguous_framing(&parts.headers) {
        return respond::local(
            ctx,
            StatusCode::BAD_REQUEST,
            "ambiguous_framing",
            "the request has both Content-Length and Transfer-Encoding, or conflicting Content-Lengths",
        );
    }

    if let Some(problem) = headers::host_problem(parts.version, &parts.uri, &parts.headers) {
        return respond::local(ctx, StatusCode::BAD_REQUEST, "invalid_host", problem);
    }

    // The feedback endpoint is cutover's own, ahead of every route.
    if let Some(path) = &rt.config.server.feedback_path
        && parts.uri.path() == path
    {
        return Box::pin(feedback::handle(ctx, parts, body)).await;
    }

    // Phase: match.
    let Some(route_index) = matching::route(&rt, &parts) else {
        return respond::local(
            ctx,
            StatusCode::NOT_FOUND,
            "no_route",
            "no route matches this request",
        );
    };
    ctx.route = Some(route_index);
    let route = &rt.routes[route_index];
    let server = &rt.config.server;

    // Phase: admit.
    if !ctx.admit() {
        return respond::refusal(ctx, route, false, RefusalReason::Overload);
    }

    // Phase: read body.
    // Borrowed from the data plane the request holds (the reservation
    // that travels with the body keeps its own reference).
    let limits = BodyLimits {
        max: server.max_body,
        budget: &ctx.plane.buffered,
        budget_limit: server.max_buffered,
    };
    ctx.clock.pause();
    let body = read_bounded(body, &parts.headers, &limits).await;
    ctx.clock.resume();
    let body = match body {
        Ok(b) => b,
        Err(BodyError::OverBudget) => {
            return respond::refusal(ctx, route, false, RefusalReason::Overload);
        }
        Err(e) => {
            return respond::rejected_body(ctx, e, "the request body exceeds server.max_body");
        }
    };

    // Phase: assign.
    let client_ip = headers::client_ip(&parts.headers, conn.peer, server.trust_forwarded_for);
    let key = routing::sticky_key(&route.sticky, &parts.headers, parts.uri.query(), client_ip);
    let key = key.as_ref().map(|k| k.as_bytes());
    let (version_index, bare_session) = match assign::assign(route, &parts.headers, key) {
        Assigned::Version {
            index,
            how,
            key_hash,
            bare_session,
        } => {
            ctx.assignment = Some(how);
            ctx.key_hash = key_hash;
            (index, bare_session)
        }
        Assigned::SessionGone(index) => {
            let version = &route.versions[index];
            version.metrics.assigned(super::ctx::Assignment::Session);
            ctx.version = Some(index);
            ctx.assignment = Some(super::ctx::Assignment::Session);
            let mut gone = respond::local(
                ctx,
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
    };
    // The same sticky key picks the shadows that mirror the request.
    let mirrored = assign::mirror_set(route, key);
    ctx.version = Some(version_index);
    let version = &route.versions[version_index];
    if let Some(how) = ctx.assignment {
        version.metrics.assigned(how);
    }
    // The upstream (and any mirror) sees its own session id.
    if let (Some(name), Some(bare)) = (&route.session_header, bare_session) {
        parts.headers.insert(name.clone(), bare);
    }

    // The head every upstream request starts from.
    let trace = headers::prepare_forward(
        &mut parts.headers,
        parts.uri.authority(),
        conn.peer,
        conn.tls,
        &ctx.request_id,
    );
    if ctx.plane().tracer.is_some() {
        // A parent span means the client sent a valid `traceparent`.
        let parent_sampled = trace.parent_span_id.is_some().then_some(trace.sampled);
        ctx.trace(trace, parent_sampled);
    }

    // Phase: shadows. Spawned, never awaited.
    let comparing = if mirrored == 0 {
        Vec::new()
    } else {
        mirror::spawn_all(
            ctx.plane(),
            &rt,
            route_index,
            mirrored,
            &parts,
            &body,
            &ctx.request_id,
            ctx.key_hash,
        )
    };

    // Phase: cache.
    let mut fill = None;
    if let Some(cache) = &route.cache {
        let found = Box::pin(cache_lookup::lookup(
            &mut ctx,
            cache,
            &version.target,
            &parts,
            &body,
        ))
        .await;
        match found {
            Lookup::Hit(entry) => return respond::hit(ctx, route, entry, comparing),
            Lookup::Follow(head, events) => {
                return respond::follower(ctx, route, head, events, comparing);
            }
            Lookup::Miss(guard) => fill = guard,
            Lookup::Bypass => {}
            // Waited without a slot, and none is free now.
            Lookup::Shed => return respond::refusal(ctx, route, false, RefusalReason::Overload),
        }
    }

    // Phases: attempt and fallback, then respond or refuse.
    let forwarded = std::mem::take(&mut parts.headers);
    let answered = fallback::run(
        &mut ctx,
        route,
        &version.target,
        &parts,
        forwarded,
        &body,
        // A fallback's answer is never stored: the followers go upstream
        // on their own now, not after the chain.
        || fill = None,
    )
    .await;
    match answered {
        Some(a) => {
            let fill = if a.first { fill } else { None };
            respond::upstream(ctx, route, a.target, a.committed, fill, comparing)
        }
        None => {
            let wants_stream = json::wants_stream(&body);
            respond::refusal(ctx, route, wants_stream, RefusalReason::Exhausted)
        }
    }
}
