//! Mirrors: a shadow's copy of a request, sent in the background.
//!
//! The client path only decides, takes a slot and spawns: it never awaits a
//! mirror. A mirror reads its answer to the end (for latency, tokens and
//! cost), compares it with the primary's if asked, logs a shadow line and
//! discards it. Nothing of it can reach the client: the task owns the
//! response, and the client's response is built from other values.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use super::attempt;
use super::forward::upstream_request;
use super::tap::Comparing;
use crate::api::Api;
use crate::gateway::data_plane::DataPlane;
use crate::rollout::{Observation, Role};
use crate::runtime::{Route, Runtime};
use crate::shadow::compare::{self, Capture, Comparable, Compared, PointerMatch};
use crate::shadow::{MirrorSlot, PrimaryAnswer, Shadow};
use crate::telemetry::{AccessRecord, AttemptResult, ShadowResult, SkipUse, Usage, UsageScanner};
use crate::upstream::RequestBody;

pub static X_CUTOVER_SHADOW: http::HeaderName = http::HeaderName::from_static("x-cutover-shadow");

/// Everything a mirror needs, owned: the task outlives the request.
pub struct Job {
    pub plane: Arc<DataPlane>,
    /// Keeps the generation (and so the shadow) alive for the task.
    pub rt: Arc<Runtime>,
    pub route: usize,
    pub shadow: usize,
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// The client's body, shared with the primary (a reference count).
    pub body: Bytes,
    pub request_id: HeaderValue,
    pub key_hash: Option<u64>,
    /// The primary's answer, when this shadow compares.
    pub primary: Option<oneshot::Receiver<PrimaryAnswer>>,
    pub slot: MirrorSlot,
}

/// Phase: shadows. Take a slot per selected shadow of `set` (or count it
/// dropped) and spawn its mirror with the prepared head and the shared
/// body. Returns the senders for the primary's answer, one per comparing
/// shadow. Never waits.
#[expect(clippy::too_many_arguments, reason = "the owned parts of one job")]
pub fn spawn_all(
    plane: &Arc<DataPlane>,
    rt: &Arc<Runtime>,
    route_index: usize,
    set: u64,
    parts: &http::request::Parts,
    body: &Bytes,
    request_id: &HeaderValue,
    key_hash: Option<u64>,
) -> Comparing {
    let mut comparing = Vec::new();
    let route = &rt.routes[route_index];
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
            let (tx, rx) = oneshot::channel();
            comparing.push(tx);
            Some(rx)
        };
        spawn(Job {
            plane: Arc::clone(plane),
            rt: Arc::clone(rt),
            route: route_index,
            shadow: i,
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
            request_id: request_id.clone(),
            key_hash,
            primary,
            slot,
        });
    }
    comparing
}

/// Spawn a mirror on the data plane's tracker. Returns at once.
fn spawn(job: Job) {
    let tracker = job.plane.mirrors.clone();
    // Boxed before it is spawned: tokio's spawn path moves the future it is
    // given half a dozen times before it lands in the task, and a mirror's
    // is 3.5 KiB. Those copies were ~3,400 instructions a mirror
    // (callgrind); a box is one copy and one allocation.
    tracker.spawn(Box::pin(run(job)));
}

/// What came back from the shadow.
struct Answer {
    status: u16,
    usage: Usage,
    document: Option<Comparable>,
}

async fn run(mut job: Job) {
    let rt = Arc::clone(&job.rt);
    let route = &rt.routes[job.route];
    let shadow = &route.shadows[job.shadow];
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + shadow.timeout;
    let outcome = send(shadow, route, &mut job, deadline).await;
    let duration = start.elapsed();
    // The slot bounds requests in flight to the shadow, not the wait for
    // the primary below.
    drop(job.slot);

    let (result, answer, end) = match outcome {
        Ok(answer) => (ShadowResult::Ok, Some(answer), "complete"),
        Err(failed) => (ShadowResult::Failure, None, failed.as_str()),
    };
    shadow.record(result);
    shadow.metrics.duration.record(duration);
    let mut cost_usd = None;
    let mut usage = Usage::default();
    let mut status = 0;
    let mut document = None;
    if let Some(a) = answer {
        usage = a.usage;
        status = a.status;
        document = a.document;
        cost_usd = shadow.metrics.usage(usage, &shadow.target.cost);
    }

    if let Some(stats) = &shadow.judged {
        stats.record(
            Role::Canary,
            &Observation {
                failed: result == ShadowResult::Failure,
                // A failure's duration says nothing about how fast the
                // canary answers (a refused connect takes 1 ms).
                latency: (result == ShadowResult::Ok).then_some(duration),
                cost_usd,
            },
        );
    }

    let mut compared = "";
    if let (Some(primary), ShadowResult::Ok) = (job.primary.take(), result) {
        // Resolved when the primary's response ends; an error means it did
        // not complete (refused, aborted), and there is nothing to compare.
        if let Ok(primary) = primary.await {
            let matched = compare::compare(&shadow.compare, primary.as_deref(), document.as_ref())
                .all(|(_, v)| v == PointerMatch::Match);
            shadow.record_compare(matched);
            compared = if matched { "match" } else { "mismatch" };
        }
    }

    let log = &job.plane.access_log;
    if log.enabled() {
        log.write(&AccessRecord {
            kind: "shadow",
            request_id: job.request_id.to_str().unwrap_or(""),
            method: job.method.as_str(),
            path: job.uri.path(),
            route: &route.name,
            version: &shadow.target.name,
            deps_json: &shadow.target.deps_json,
            upstream: &shadow.target.upstream.name,
            assignment: "",
            key_hash: job.key_hash,
            status,
            duration,
            ttfb: None,
            bytes: 0,
            cache: "",
            compare: compared,
            fallback_path: &shadow.target.name,
            input_tokens: usage.input,
            output_tokens: usage.output,
            cost_usd,
            end,
        });
    }
}

/// Send the mirror and read its answer to the end, all before `deadline`
/// (the shadow's `timeout`). Reports to the upstream's breaker and counts
/// in `cutover_upstream_requests_total` like any attempt: a shadow loads
/// its upstream as much as a version does.
async fn send(
    shadow: &Shadow,
    route: &Route,
    job: &mut Job,
    deadline: tokio::time::Instant,
) -> Result<Answer, AttemptResult> {
    let target = &shadow.target;
    let upstream = &target.upstream;
    let mut headers = std::mem::take(&mut job.headers);
    headers.insert(X_CUTOVER_SHADOW.clone(), HeaderValue::from_static("1"));
    // The head is the mirror's own copy already; a second one only where
    // a retry may have to rebuild the request.
    let spare = upstream.retry_rebuilds().then(|| headers.clone());
    let job = &*job;
    let build = |headers| {
        upstream_request(
            target,
            &route.name,
            &job.method,
            job.uri.path_and_query(),
            headers,
            &job.body,
        )
    };
    let req = build(headers)?;
    let Some(permit) = upstream.admit() else {
        return Err(AttemptResult::Rejected);
    };
    // One timer for the whole exchange: the send and every frame.
    let again = || spare.and_then(|h| build(h).ok());
    let result = tokio::time::timeout_at(deadline, exchange(shadow, route, job, req, again))
        .await
        .unwrap_or(Err(AttemptResult::Timeout));
    match result {
        // A shadow is judged on its whole answer: it has no commit point.
        Ok(_) => permit.success(),
        Err(_) => permit.failure(),
    }
    upstream
        .metrics
        .attempt(result.as_ref().map_or_else(|r| *r, |_| AttemptResult::Ok));
    result
}

/// The mirror's exchange with its upstream, without a deadline of its own.
async fn exchange(
    shadow: &Shadow,
    route: &Route,
    job: &Job,
    req: Request<RequestBody>,
    again: impl FnOnce() -> Option<Request<RequestBody>>,
) -> Result<Answer, AttemptResult> {
    let upstream = &shadow.target.upstream;
    let Ok(response) = attempt::send(upstream, req, again).await else {
        return Err(AttemptResult::ConnectError);
    };
    if upstream
        .config
        .failure_statuses
        .contains(&response.status())
    {
        return Err(AttemptResult::FailureStatus);
    }
    let status = response.status().as_u16();
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let api = Api::from_path(job.uri.path());
    let mut usage = UsageScanner::new(api, content_type.as_ref());
    let mut capture = (!shadow.compare.is_empty() && job.primary.is_some()).then(|| {
        Capture::for_content_type(content_type.as_ref()).reaching(Arc::clone(&shadow.reach))
    });
    let mut body = response.into_body();
    // Read to the end, frame by frame, keeping nothing past the capture's
    // cap: the answer is measured, then dropped.
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(AttemptResult::StreamError);
        };
        if let Some(data) = frame.data_ref() {
            usage.observe(data);
            if let Some(c) = &mut capture {
                c.observe(data);
            }
        }
    }
    let found = usage.finish();
    if let Some(skip) = usage.skipped() {
        route.metrics.skipped(SkipUse::Usage, skip, 1);
    }
    // Only a whole answer can match: a stream cut before its API's final
    // event, or one that cannot be read, is compared as `None` (every
    // pointer a mismatch) and counted.
    let document = capture.and_then(|c| {
        let (compared, skips) = c.compared(api);
        for (skip, n) in skips {
            route.metrics.skipped(SkipUse::Compare, skip, n);
        }
        match compared {
            Compared::Whole(answer) => Some(answer),
            Compared::Partial | Compared::Unreadable => None,
        }
    });
    Ok(Answer {
        status,
        usage: found,
        document,
    })
}
