//! Bodies: the bounded request-body reader, and `ProxyBody`, the response
//! body that streams upstream frames through while observing them.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::exchange::{End, Exchange};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body read must finish within this time once the head is in:
/// a client that trickles its body must not hold a slot forever.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub enum BodyError {
    /// Larger than `max_body` (declared or actual).
    TooLarge,
    /// The client's body broke off or was malformed.
    Client(BoxError),
    TimedOut,
}

/// Read a request body into one `Bytes`, refusing it as soon as it is known
/// to exceed `max`: up front from `Content-Length`, or while a chunked body
/// grows. Nothing is forwarded before the whole body is here.
pub async fn read_bounded(
    body: Incoming,
    headers: &HeaderMap,
    max: u64,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(BodyError::TooLarge);
    }
    if declared == Some(0) || body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    match tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect()).await {
        Err(_) => Err(BodyError::TimedOut),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(e)) => Err(BodyError::Client(e)),
    }
}

enum Inner {
    /// Streaming from an upstream.
    Upstream(Incoming),
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
    pub fn upstream(body: Incoming, exchange: Exchange) -> ProxyBody {
        ProxyBody {
            inner: Inner::Upstream(body),
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
            Inner::Upstream(body) => match Pin::new(body).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let (Some(data), Some(ex)) = (frame.data_ref(), &mut this.exchange) {
                        ex.on_data(data);
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    // Returning the error makes hyper end the client's stream
                    // so that it cannot be taken as complete (h1: no final
                    // chunk, connection closed; h2: RST_STREAM).
                    this.finish(End::UpstreamError);
                    Poll::Ready(Some(Err(Box::new(e))))
                }
                Poll::Ready(None) => {
                    this.finish(End::Complete);
                    Poll::Ready(None)
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
        }
    }
}
