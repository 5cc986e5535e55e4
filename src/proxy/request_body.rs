//! Phase: read body. The request body is read whole before anything is
//! forwarded (fallbacks, shadows, `set_json` and the cache key all need
//! the same bytes, and LLM requests are small), bounded by `max_body`
//! (413, nothing forwarded) and by `max_buffered` for all bodies together.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::budget::BodyBudget;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body read must finish within this time once the head is in:
/// a client that trickles its body must not hold a slot forever.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub enum BodyError {
    /// Larger than `max_body` (declared or actual).
    TooLarge,
    /// Taking it would pass `server.max_buffered`.
    OverBudget,
    /// The client's body broke off or was malformed.
    Client(BoxError),
    TimedOut,
}

/// Where a request body may be held: at most `max` bytes of it, within
/// the process-wide `budget` of `budget_limit` bytes.
pub struct BodyLimits<'a> {
    pub max: u64,
    pub budget: &'a Arc<BodyBudget>,
    pub budget_limit: u64,
}

/// Read a request body into one `Bytes`, refusing it as soon as it is known
/// to exceed `max` (up front from `Content-Length`, or while a chunked body
/// grows) or the buffered-bodies budget. The bytes count against the
/// budget from the first one until the last clone of the returned `Bytes`
/// drops. Nothing is forwarded before the whole body is here.
pub async fn read_bounded(
    body: Incoming,
    headers: &HeaderMap,
    limits: &BodyLimits<'_>,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max) {
        return Err(BodyError::TooLarge);
    }
    if declared == Some(0) || body.is_end_stream() {
        return Ok(Bytes::new());
    }
    // A declared body that cannot fit now is shed before it is read.
    if declared.is_some_and(|len| !limits.budget.would_fit(len, limits.budget_limit)) {
        return Err(BodyError::OverBudget);
    }
    match tokio::time::timeout(BODY_READ_TIMEOUT, collect(body, limits)).await {
        Err(_) => Err(BodyError::TimedOut),
        Ok(result) => result,
    }
}

async fn collect(mut body: Incoming, limits: &BodyLimits<'_>) -> Result<Bytes, BodyError> {
    let mut reservation = limits.budget.reservation();
    // Frames as hyper hands them over (no copy); joined once at the end.
    let mut frames: Vec<Bytes> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Client(Box::new(e)))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let len = data.len() as u64;
        if reservation.bytes() + len > limits.max {
            return Err(BodyError::TooLarge);
        }
        if !reservation.grow(len, limits.budget_limit) {
            return Err(BodyError::OverBudget);
        }
        frames.push(data);
    }
    let body = match frames.len() {
        0 => Bytes::new(),
        1 => frames.swap_remove(0),
        _ => Bytes::from(frames.concat()),
    };
    Ok(reservation.attach(body))
}
