//! The feedback endpoint (`server.feedback_path`): a client reports a
//! task's outcome for a request id it was given, within an hour, once.
//!
//! `POST {"request_id": "...", "outcome": "success" | "failure"}` answers
//! 200 when counted, 400 for a malformed body, 404 for an unknown or
//! expired id, 409 for a repeat, 405 for other methods, 413 past 64 KiB
//! (or `max_body`, if lower), 401 without the bearer token when
//! `feedback_token_env` is set, and 503 when shed.
//!
//! Feedback is not a way around the limits: it takes a `max_in_flight`
//! slot and its body counts against `max_buffered`, like any request.

use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode, header};
use hyper::body::Incoming;
use serde::Deserialize;

use super::body::ProxyBody;
use super::ctx::Ctx;
use super::request_body::{BodyLimits, read_bounded};
use super::respond::{local, ok_json, overloaded, rejected_body};
use crate::telemetry::feedback_index::FeedbackError;
use crate::telemetry::{Outcome, OutcomeSource};

/// Feedback bodies are tiny; anything larger is not feedback.
const MAX_FEEDBACK_BODY: u64 = 64 * 1024;

/// Extra fields (a comment, a score) are ignored.
#[derive(Deserialize)]
struct Feedback {
    request_id: String,
    outcome: String,
}

pub async fn handle(mut ctx: Box<Ctx>, parts: Parts, body: Incoming) -> Response<ProxyBody> {
    if parts.method != Method::POST {
        let mut r = local(
            ctx,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the feedback endpoint takes POST",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let server = &ctx.rt.config.server;
    let (max_body, max_buffered) = (server.max_body, server.max_buffered);
    if !ctx.admit() {
        return overloaded(ctx);
    }
    if let Some(token) = &ctx.rt.feedback_token
        && !token.bearer_matches(&parts.headers)
    {
        let mut r = local(
            ctx,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "feedback needs Authorization: Bearer <token> (server.feedback_token_env)",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    // Borrowed from the data plane the request holds (the reservation
    // that travels with the body keeps its own reference).
    let limits = BodyLimits {
        max: MAX_FEEDBACK_BODY.min(max_body),
        budget: &ctx.plane.buffered,
        budget_limit: max_buffered,
    };
    ctx.clock.pause();
    let body = read_bounded(body, &parts.headers, &limits).await;
    ctx.clock.resume();
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return rejected_body(
                ctx,
                e,
                "feedback bodies are at most 64 KiB (and server.max_body)",
            );
        }
    };
    let Ok(feedback) = serde_json::from_slice::<Feedback>(&body) else {
        return local(
            ctx,
            StatusCode::BAD_REQUEST,
            "bad_feedback",
            r#"expected {"request_id": "...", "outcome": "success" | "failure"}"#,
        );
    };
    let Some(outcome) = Outcome::parse(feedback.outcome.as_bytes()) else {
        return local(
            ctx,
            StatusCode::BAD_REQUEST,
            "bad_feedback",
            r#"outcome must be "success" or "failure""#,
        );
    };
    // With [cluster] this asks the fleet's index in Redis (bounded; the
    // feedback endpoint is not the proxied path), else the local one.
    ctx.clock.pause();
    let claimed = ctx
        .plane()
        .claim_feedback(feedback.request_id.as_bytes())
        .await;
    ctx.clock.resume();
    match claimed {
        Ok(metrics) => {
            metrics.outcome(OutcomeSource::Feedback, outcome);
            ok_json(ctx, br#"{"status":"recorded"}"#)
        }
        Err(FeedbackError::Unknown) => local(
            ctx,
            StatusCode::NOT_FOUND,
            "unknown_request_id",
            "no request with this id was served in the last hour",
        ),
        Err(FeedbackError::Repeat) => local(
            ctx,
            StatusCode::CONFLICT,
            "feedback_already_recorded",
            "feedback for this request id was already counted",
        ),
    }
}
