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

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode, header};
use hyper::body::Incoming;
use serde::Deserialize;

use std::sync::Arc;

use super::body::{BodyLimits, ProxyBody, read_bounded};
use super::exchange::{Exchange, Responder};
use super::service::{local, overloaded, reject_body};
use crate::telemetry::feedback::FeedbackError;
use crate::telemetry::{Outcome, OutcomeSource};

/// Feedback bodies are tiny; anything larger is not feedback.
const MAX_FEEDBACK_BODY: u64 = 64 * 1024;

/// Extra fields (a comment, a score) are ignored.
#[derive(Deserialize)]
struct Feedback {
    request_id: String,
    outcome: String,
}

pub async fn handle(mut ex: Exchange, parts: Parts, body: Incoming) -> Response<ProxyBody> {
    if parts.method != Method::POST {
        let mut r = local(
            ex,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the feedback endpoint takes POST",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let server = &ex.rt.config.server;
    let (max_in_flight, max_body, max_buffered) =
        (server.max_in_flight, server.max_body, server.max_buffered);
    if !ex.admit(max_in_flight) {
        return overloaded(ex);
    }
    if let Some(token) = &ex.rt.feedback_token
        && !token.bearer_matches(&parts.headers)
    {
        let mut r = local(
            ex,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "feedback needs Authorization: Bearer <token> (server.feedback_token_env)",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let budget = Arc::clone(&ex.gateway().buffered);
    let limits = BodyLimits {
        max: MAX_FEEDBACK_BODY.min(max_body),
        budget: &budget,
        budget_limit: max_buffered,
    };
    ex.wait();
    let body = read_bounded(body, &parts.headers, &limits).await;
    ex.work();
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return reject_body(
                ex,
                e,
                "feedback bodies are at most 64 KiB (and server.max_body)",
            );
        }
    };
    let Ok(feedback) = serde_json::from_slice::<Feedback>(&body) else {
        return local(
            ex,
            StatusCode::BAD_REQUEST,
            "bad_feedback",
            r#"expected {"request_id": "...", "outcome": "success" | "failure"}"#,
        );
    };
    let Some(outcome) = Outcome::parse(feedback.outcome.as_bytes()) else {
        return local(
            ex,
            StatusCode::BAD_REQUEST,
            "bad_feedback",
            r#"outcome must be "success" or "failure""#,
        );
    };
    // With [cluster] this asks the fleet's index in Redis (bounded; the
    // feedback endpoint is not the proxied path), else the local one.
    ex.wait();
    let claimed = ex
        .gateway()
        .claim_feedback(feedback.request_id.as_bytes())
        .await;
    ex.work();
    match claimed {
        Ok(metrics) => {
            metrics.outcome(OutcomeSource::Feedback, outcome);
            let mut r = Response::new(ProxyBody::plain(Bytes::new()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            ex.status = 200;
            ex.responder = Responder::Local;
            *r.body_mut() = ProxyBody::full(Bytes::from_static(br#"{"status":"recorded"}"#), ex);
            r
        }
        Err(FeedbackError::Unknown) => local(
            ex,
            StatusCode::NOT_FOUND,
            "unknown_request_id",
            "no request with this id was served in the last hour",
        ),
        Err(FeedbackError::Repeat) => local(
            ex,
            StatusCode::CONFLICT,
            "feedback_already_recorded",
            "feedback for this request id was already counted",
        ),
    }
}
