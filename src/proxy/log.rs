//! Phase: log, the terminal one. Like Pingora's `logging`, every exit path
//! (errors, refusals, a client gone) ends here exactly once: the request's
//! metrics, its rollout observation, one access-log line, its trace spans,
//! and the release of its slots.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::ctx::{Assignment, Ctx, End, Responder};
use super::tap::Observed;
use crate::rollout::Observation;
use crate::runtime::Route;
use crate::telemetry::otlp::Span;
use crate::telemetry::{AccessRecord, AttemptResult, CacheResult, SkipUse};

/// Write the request up. Called by the response body when it ends; a
/// second call does nothing.
pub fn finish(ctx: &mut Ctx, end: End, observed: Observed) {
    if std::mem::replace(&mut ctx.logged, true) {
        return;
    }
    // One clock reading ends both stopwatches.
    let now = Instant::now();
    let duration = now.saturating_duration_since(ctx.start);
    let overhead = ctx.clock.stop_at(now);
    // A client gone before any status was sent: nginx's 499.
    let status = if ctx.status == 0 { 499 } else { ctx.status };
    let rt = Arc::clone(&ctx.rt);
    let route = ctx.route.map(|i| &rt.routes[i]);
    let version = route.zip(ctx.version).map(|(r, v)| &r.versions[v]);

    // A committed attempt is counted when it ends: `ok` unless the
    // upstream broke the stream (a client hanging up is not the upstream's
    // failure).
    if let Responder::Upstream(u) = &ctx.responder {
        u.metrics.attempt(match end {
            End::Complete | End::ClientAborted => AttemptResult::Ok,
            End::UpstreamError | End::IdleTimeout => AttemptResult::StreamError,
        });
    }
    if let (Some(skip), Some(route)) = (observed.usage_skip, route) {
        route.metrics.skipped(SkipUse::Usage, skip, 1);
    }
    let mut cost_usd = None;
    if let Some(route) = route {
        let m = version.map_or(&route.unassigned_metrics, |v| &*v.metrics);
        m.request(status);
        m.duration.record(duration);
        if let Some(t) = observed.ttfb {
            m.ttfb.record(t);
        }
        if let (Some(v), Responder::Upstream(_)) = (version, &ctx.responder) {
            // Tokens are priced at the rates of the target that served them
            // (a cheaper-model fallback shows its cheaper price), and
            // counted on the version the user was assigned, so the route's
            // spend stays on it.
            let cost = ctx.served_cost.as_ref().unwrap_or(&v.target.cost);
            cost_usd = v.metrics.usage(observed.usage, cost);
        }
        route.metrics.overhead.record(overhead);
        judge(ctx, route, end, duration, cost_usd);
    }

    if ctx.plane.access_log.enabled() {
        let upstream = match &ctx.responder {
            Responder::Upstream(u) => &*u.name,
            Responder::Cache(entry) => &*entry.upstream,
            Responder::Follower(upstream) => upstream,
            Responder::Refusal => "refusal",
            Responder::Local | Responder::Pending => "",
        };
        let version_name = version.map_or("", |v| &*v.target.name);
        ctx.plane.access_log.write(&AccessRecord {
            kind: "request",
            request_id: ctx.request_id.to_str().unwrap_or(""),
            method: ctx.method.as_str(),
            path: ctx.uri.path(),
            route: route.map_or("", |r| &*r.name),
            version: version_name,
            deps_json: version.map_or("", |v| &*v.target.deps_json),
            upstream,
            assignment: ctx.assignment.map_or("", Assignment::as_str),
            key_hash: ctx.key_hash,
            status,
            duration,
            ttfb: observed.ttfb,
            bytes: observed.bytes,
            cache: ctx.cache.map_or("", CacheResult::as_str),
            compare: "",
            fallback_path: ctx.fallback_path.as_deref().unwrap_or(version_name),
            input_tokens: observed.usage.input,
            output_tokens: observed.usage.output,
            cost_usd,
            end: end.as_str(),
        });
    }

    if ctx.trace.is_some() {
        export_trace(ctx, end, status, duration);
    }

    ctx.release_admission();
    // The committed attempt's verdict for its breaker, as for the judge: a
    // stream that broke after its first byte is the upstream's failure; a
    // client that left says nothing about the upstream.
    if let Some(permit) = ctx.upstream_slot.take() {
        match end {
            End::Complete => permit.success(),
            End::UpstreamError | End::IdleTimeout => permit.failure(),
            End::ClientAborted => drop(permit),
        }
    }
}

/// Record this request for the route's rollout, if it is judged: a
/// baseline or canary request assigned by the split (never pinned), that
/// reached its version (not a cache hit or a local answer).
fn judge(ctx: &Ctx, route: &Route, end: End, duration: Duration, cost_usd: Option<f64>) {
    let (Some(judging), Some(version)) = (&route.judging, ctx.version) else {
        return;
    };
    let Some(role) = judging.role(version) else {
        return;
    };
    if ctx.assignment == Some(Assignment::Pinned) {
        return;
    }
    let own = match &ctx.responder {
        Responder::Upstream(u) => {
            Arc::ptr_eq(u, &route.versions[version].target.upstream) && !ctx.own_attempt_failed
        }
        Responder::Refusal => false,
        Responder::Cache(_) | Responder::Follower(_) | Responder::Local | Responder::Pending => {
            return;
        }
    };
    let failed =
        ctx.own_attempt_failed || (own && matches!(end, End::UpstreamError | End::IdleTimeout));
    if !failed && end == End::ClientAborted {
        // The client left: neither the version's fault nor its latency.
        return;
    }
    judging.stats.record(
        role,
        &Observation {
            failed,
            latency: (own && !failed).then_some(duration),
            cost_usd: if own { cost_usd } else { None },
        },
    );
}

/// The request's span and one span per upstream attempt (sampled traces
/// only: the rare path, so it may allocate).
fn export_trace(ctx: &mut Ctx, end: End, status: u16, duration: Duration) {
    let (Some(trace), Some(tracer)) = (ctx.trace, ctx.plane.tracer.as_ref()) else {
        return;
    };
    let end_wall = SystemTime::now();
    let start_wall = end_wall - duration;
    let mut attributes = vec![
        (
            "http.request.method".to_string(),
            ctx.method.as_str().to_string(),
        ),
        ("url.path".to_string(), ctx.uri.path().to_string()),
        ("http.response.status_code".to_string(), status.to_string()),
        (
            "cutover.request_id".to_string(),
            ctx.request_id.to_str().unwrap_or("").to_string(),
        ),
        ("cutover.end".to_string(), end.as_str().to_string()),
    ];
    if let Some(route) = ctx.route() {
        attributes.push(("cutover.route".to_string(), route.name.to_string()));
    }
    if let Some(v) = ctx.version() {
        attributes.push(("cutover.version".to_string(), v.target.name.to_string()));
        for (k, val) in &v.target.deps {
            let text = val.as_str().map_or_else(|| val.to_string(), str::to_string);
            attributes.push((format!("cutover.deps.{k}"), text));
        }
    }
    if let Some(a) = ctx.assignment {
        attributes.push(("cutover.assignment".to_string(), a.as_str().to_string()));
    }
    if let Responder::Upstream(u) = &ctx.responder {
        attributes.push(("cutover.upstream".to_string(), u.name.to_string()));
    }
    tracer.export(Span {
        trace_id: trace.trace_id,
        span_id: trace.span_id,
        parent_span_id: trace.parent_span_id,
        name: "cutover.request",
        kind: 2,
        start: start_wall,
        end: end_wall,
        attributes,
        error: status >= 500 || end != End::Complete,
    });
    for a in ctx.attempts.drain(..) {
        tracer.export(Span {
            trace_id: trace.trace_id,
            span_id: rand::random::<u64>().max(1).to_be_bytes(),
            parent_span_id: Some(trace.span_id),
            name: "cutover.attempt",
            kind: 3,
            start: a.start,
            end: a.end,
            attributes: vec![
                ("cutover.target".to_string(), a.target.to_string()),
                ("cutover.upstream".to_string(), a.upstream.to_string()),
                ("cutover.result".to_string(), a.result.as_str().to_string()),
            ],
            error: a.result != AttemptResult::Ok,
        });
    }
}

/// A request abandoned before a body took it over (the client hung up
/// while it waited) is logged here. It lives in this module so that
/// `ctx` does not depend on the logging phase.
impl Drop for Ctx {
    fn drop(&mut self) {
        finish(self, End::ClientAborted, Observed::default());
        // `finish` gave the slot back when it logged; a slot taken after
        // that would otherwise be lost.
        self.release_admission();
    }
}
