//! `ProxyBody`: the response body handed to hyper. It streams the answer
//! through frame by frame, shows every frame to its taps, and ends the
//! request in the logging phase exactly once: at the end of the stream, on
//! an upstream error, or when the client goes away (its drop).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::ctx::{Ctx, End};
use super::log;
use super::tap::Taps;
use crate::cache::FlightEvent;
use crate::upstream::UpstreamBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A committed upstream response body: the first frame (already read, to
/// decide the commit point), then the rest of the stream, with at most
/// `idle` of silence between frames.
pub struct UpstreamStream {
    first: Option<Frame<Bytes>>,
    body: UpstreamBody,
    idle: Duration,
    /// Set on the first wait for a frame: a body that arrives whole never
    /// reads the clock or touches the timer wheel.
    waiting: Option<IdleWait>,
}

/// The idle timer of a stream that has waited for a frame at least once.
struct IdleWait {
    /// When the last frame arrived: a frame costs a clock read, not a
    /// timer reset.
    last_frame: Instant,
    /// Moved only when it fires early.
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl UpstreamStream {
    pub fn new(first: Option<Frame<Bytes>>, body: UpstreamBody, idle: Duration) -> UpstreamStream {
        UpstreamStream {
            first,
            body,
            idle,
            waiting: None,
        }
    }

    fn ended(&self) -> bool {
        self.first.is_none() && self.body.is_end_stream()
    }

    /// A frame arrived.
    fn framed(&mut self) {
        if let Some(waiting) = &mut self.waiting {
            waiting.last_frame = Instant::now();
        }
    }

    /// Nothing arrived: is the silence past `idle`?
    fn silent_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        let idle = self.idle;
        // The first wait: every poll before it had a frame ready.
        let waiting = self.waiting.get_or_insert_with(|| {
            let last_frame = Instant::now();
            IdleWait {
                last_frame,
                sleep: Box::pin(tokio::time::sleep_until(last_frame + idle)),
            }
        });
        loop {
            if waiting.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            // It fired; frames that came since it was armed push it on.
            let deadline = waiting.last_frame + idle;
            if Instant::now() >= deadline {
                return true;
            }
            waiting.sleep.as_mut().reset(deadline);
        }
    }
}

enum Source {
    /// Streaming from an upstream.
    Upstream(Box<UpstreamStream>),
    /// Following an identical miss's answer (`None` once it ended).
    Follow(Option<mpsc::UnboundedReceiver<FlightEvent>>),
    /// A local answer (refusal, error, cache hit), sent in one frame.
    Full(Option<Bytes>),
    /// A stream that broke after the commit point, its error held back for
    /// one poll: hyper's HTTP/1 side drops its unwritten buffer with the
    /// connection on a body error, and a break that arrives in the same
    /// read as the frames before it would take those frames along.
    Broken(Option<BoxError>),
}

pub struct ProxyBody {
    source: Source,
    taps: Taps,
    /// `None` once logged (and for bodies outside any request).
    ctx: Option<Box<Ctx>>,
}

impl ProxyBody {
    pub fn upstream(stream: UpstreamStream, taps: Taps, ctx: Box<Ctx>) -> ProxyBody {
        ProxyBody {
            source: Source::Upstream(Box::new(stream)),
            taps,
            ctx: Some(ctx),
        }
    }

    pub fn follow(
        events: mpsc::UnboundedReceiver<FlightEvent>,
        taps: Taps,
        ctx: Box<Ctx>,
    ) -> ProxyBody {
        ProxyBody {
            source: Source::Follow(Some(events)),
            taps,
            ctx: Some(ctx),
        }
    }

    pub fn full(bytes: Bytes, taps: Taps, ctx: Box<Ctx>) -> ProxyBody {
        ProxyBody {
            source: Source::Full((!bytes.is_empty()).then_some(bytes)),
            taps,
            ctx: Some(ctx),
        }
    }

    /// A body outside any request (admin answers, tests).
    pub fn plain(bytes: Bytes) -> ProxyBody {
        ProxyBody {
            source: Source::Full((!bytes.is_empty()).then_some(bytes)),
            taps: Taps::new(std::time::Instant::now()),
            ctx: None,
        }
    }

    fn finish(&mut self, end: End) {
        if let Some(mut ctx) = self.ctx.take() {
            let observed = self.taps.on_end(end);
            log::finish(&mut ctx, end, observed);
        }
    }

    /// Ends the stream on a break: logged now, the error returned on the
    /// next poll, after hyper has written out what it queued (it flushes
    /// when the body is pending).
    fn break_off(
        &mut self,
        end: End,
        error: BoxError,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.finish(end);
        self.source = Source::Broken(Some(error));
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn data(&mut self, data: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.taps.on_data(&data);
        Poll::Ready(Some(Ok(Frame::data(data))))
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
        match &mut this.source {
            Source::Full(bytes) => match bytes.take() {
                Some(b) => this.data(b),
                None => {
                    this.finish(End::Complete);
                    Poll::Ready(None)
                }
            },
            Source::Follow(events) => {
                let Some(rx) = events else {
                    return Poll::Ready(None);
                };
                match rx.poll_recv(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(FlightEvent::Data(data))) => this.data(data),
                    Poll::Ready(Some(FlightEvent::End { complete: true })) => {
                        *events = None;
                        this.finish(End::Complete);
                        Poll::Ready(None)
                    }
                    // The leader's stream broke (or its flight vanished):
                    // end this one so it cannot pass as complete.
                    Poll::Ready(Some(FlightEvent::End { complete: false }) | None) => this
                        .break_off(
                            End::UpstreamError,
                            "the coalesced upstream answer broke off".into(),
                            cx,
                        ),
                }
            }
            Source::Upstream(stream) => {
                if let Some(frame) = stream.first.take() {
                    return match frame.into_data() {
                        Ok(data) => this.data(data),
                        Err(frame) => Poll::Ready(Some(Ok(frame))),
                    };
                }
                match Pin::new(&mut stream.body).poll_frame(cx) {
                    Poll::Pending => {
                        if stream.silent_too_long(cx) {
                            // Silence past idle_timeout after commit: end the
                            // client's stream so it cannot pass as complete.
                            return this.break_off(
                                End::IdleTimeout,
                                "upstream idle timeout".into(),
                                cx,
                            );
                        }
                        Poll::Pending
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        stream.framed();
                        match frame.into_data() {
                            Ok(data) => this.data(data),
                            Err(frame) => Poll::Ready(Some(Ok(frame))),
                        }
                    }
                    // The error makes hyper end the client's stream so that it
                    // cannot be taken as complete (h1: no final chunk,
                    // connection closed; h2: RST_STREAM).
                    Poll::Ready(Some(Err(e))) => {
                        this.break_off(End::UpstreamError, Box::new(e), cx)
                    }
                    Poll::Ready(None) => {
                        this.finish(End::Complete);
                        Poll::Ready(None)
                    }
                }
            }
            // After the error hyper polls no more; `None` would be a clean end.
            Source::Broken(error) => match error.take() {
                Some(e) => Poll::Ready(Some(Err(e))),
                None => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Upstream(b) => b.ended(),
            Source::Follow(events) => events.is_none(),
            Source::Full(b) => b.is_none(),
            Source::Broken(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Upstream(b) => match &b.first {
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
            Source::Follow(_) | Source::Broken(_) => SizeHint::default(),
            Source::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Source::Full(None) => SizeHint::with_exact(0),
        }
    }
}
