//! Bodies: the bounded request-body reader, and `ProxyBody`, the response
//! body that streams upstream frames through while observing them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use tokio::sync::mpsc;

use super::budget::BodyBudget;
use super::exchange::{End, Exchange};
use crate::cache::FlightEvent;
use crate::upstream::UpstreamBody;

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

/// A committed upstream response body: the first frame (already read, to
/// decide the commit point), then the rest of the stream, with an idle
/// timer between frames.
pub struct UpstreamStream {
    first: Option<Frame<Bytes>>,
    body: UpstreamBody,
    idle: Duration,
    /// Armed lazily, on the first wait: a body that arrives whole never
    /// touches the timer wheel.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl UpstreamStream {
    pub fn new(first: Option<Frame<Bytes>>, body: UpstreamBody, idle: Duration) -> UpstreamStream {
        UpstreamStream {
            first,
            body,
            idle,
            sleep: None,
        }
    }

    fn ended(&self) -> bool {
        self.first.is_none() && self.body.is_end_stream()
    }
}

enum Inner {
    /// Streaming from an upstream.
    Upstream(Box<UpstreamStream>),
    /// Following an identical miss's answer (`None` once it ended).
    Follow(Option<mpsc::UnboundedReceiver<FlightEvent>>),
    /// A local answer (refusal, error), sent in one frame.
    Full(Option<Bytes>),
}

/// The response body handed to hyper. It carries the request's `Exchange`
/// and finishes it exactly once: at the end of the stream, on an upstream
/// error, or (via `Exchange`'s drop) when the client goes away.
pub struct ProxyBody {
    inner: Inner,
    exchange: Option<Exchange>,
}

impl ProxyBody {
    pub fn upstream(stream: UpstreamStream, exchange: Exchange) -> ProxyBody {
        ProxyBody {
            inner: Inner::Upstream(Box::new(stream)),
            exchange: Some(exchange),
        }
    }

    pub fn follow(events: mpsc::UnboundedReceiver<FlightEvent>, exchange: Exchange) -> ProxyBody {
        ProxyBody {
            inner: Inner::Follow(Some(events)),
            exchange: Some(exchange),
        }
    }

    pub fn full(bytes: Bytes, exchange: Exchange) -> ProxyBody {
        ProxyBody {
            inner: Inner::Full((!bytes.is_empty()).then_some(bytes)),
            exchange: Some(exchange),
        }
    }

    /// A body with no exchange attached (admin answers, tests).
    pub fn plain(bytes: Bytes) -> ProxyBody {
        ProxyBody {
            inner: Inner::Full((!bytes.is_empty()).then_some(bytes)),
            exchange: None,
        }
    }

    fn finish(&mut self, end: End) {
        if let Some(mut ex) = self.exchange.take() {
            ex.finish(end);
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // hyper stops polling once `is_end_stream` says so, and drops the
        // body early when the client goes away: tell the two apart here.
        let end = if self.is_end_stream() {
            End::Complete
        } else {
            End::ClientAborted
        };
        self.finish(end);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match &mut this.inner {
            Inner::Full(bytes) => match bytes.take() {
                Some(b) => {
                    if let Some(ex) = &mut this.exchange {
                        ex.on_data(&b);
                    }
                    Poll::Ready(Some(Ok(Frame::data(b))))
                }
                None => {
                    this.finish(End::Complete);
                    Poll::Ready(None)
                }
            },
            Inner::Follow(events) => {
                let Some(rx) = events else {
                    return Poll::Ready(None);
                };
                match rx.poll_recv(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(FlightEvent::Data(data))) => {
                        if let Some(ex) = &mut this.exchange {
                            ex.on_data(&data);
                        }
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Poll::Ready(Some(FlightEvent::End { complete: true })) => {
                        *events = None;
                        this.finish(End::Complete);
                        Poll::Ready(None)
                    }
                    // The leader's stream broke (or its flight vanished):
                    // end this one so it cannot pass as complete.
                    Poll::Ready(Some(FlightEvent::End { complete: false }) | None) => {
                        *events = None;
                        this.finish(End::UpstreamError);
                        Poll::Ready(Some(Err("the coalesced upstream answer broke off".into())))
                    }
                }
            }
            Inner::Upstream(stream) => {
                if let Some(frame) = stream.first.take() {
                    if let (Some(data), Some(ex)) = (frame.data_ref(), &mut this.exchange) {
                        ex.on_data(data);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                match Pin::new(&mut stream.body).poll_frame(cx) {
                    Poll::Pending => {
                        let idle = stream.idle;
                        let sleep = stream
                            .sleep
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                        if sleep.as_mut().poll(cx).is_ready() {
                            // Silence past idle_timeout after commit: end the
                            // client's stream so it cannot pass as complete.
                            this.finish(End::IdleTimeout);
                            return Poll::Ready(Some(Err("upstream idle timeout".into())));
                        }
                        Poll::Pending
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(sleep) = &mut stream.sleep {
                            sleep
                                .as_mut()
                                .reset(tokio::time::Instant::now() + stream.idle);
                        }
                        if let (Some(data), Some(ex)) = (frame.data_ref(), &mut this.exchange) {
                            ex.on_data(data);
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // Returning the error makes hyper end the client's
                        // stream so that it cannot be taken as complete (h1:
                        // no final chunk, connection closed; h2: RST_STREAM).
                        this.finish(End::UpstreamError);
                        Poll::Ready(Some(Err(Box::new(e))))
                    }
                    Poll::Ready(None) => {
                        this.finish(End::Complete);
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.ended(),
            Inner::Follow(events) => events.is_none(),
            Inner::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => match &b.first {
                None => b.body.size_hint(),
                Some(first) => {
                    // The first frame was already taken out of the body.
                    let taken = first.data_ref().map_or(0, |d| d.len() as u64);
                    let rest = b.body.size_hint();
                    let mut hint = SizeHint::new();
                    hint.set_lower(rest.lower() + taken);
                    if let Some(upper) = rest.upper() {
                        hint.set_upper(upper + taken);
                    }
                    hint
                }
            },
            Inner::Follow(_) => SizeHint::default(),
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
        }
    }
}
