//! The upstream connection pool: hyper's connection-level client
//! (`hyper::client::conn`) with idle queues of our own.
//!
//! Idle HTTP/1 connections wait in stacks, one per worker thread, each
//! behind a mutex of its own that only that thread takes except when its
//! neighbour runs dry (so never contended in the steady state, and no
//! global lock); a worker whose stack is empty takes from the others'
//! before it opens a connection. A stack, not a queue: the connection used
//! last is taken first, so after a burst the surplus sits unused and ages
//! out. A FIFO queue (lock-free, tried first) handed out the connection
//! idle longest, so under steady load every idle connection was cycled,
//! none ever reached `pool_idle_timeout`, and the pool kept its high-water
//! mark for ever (found by the soak: a rollout step raised the canary's
//! share and the descriptors never came back down). A connection goes
//! back to the queue the moment its response body ends, and one the
//! upstream closed while it waited (its FIN, or bytes nobody asked for) is
//! found by a non-blocking read when taken, and skipped.
//!
//! HTTP/1 connections speak [`super::h1`], our own client codec, and are
//! driven by the request's task: no task per connection, no channel and no
//! cross-task wake-up per request. (Driving hyper's client connection in
//! the request's task was measured first, and lost: every wake-up from its
//! internal channels re-polled the whole connection; see
//! docs/performance.md.) `https://` upstreams that negotiate h2 by ALPN
//! share one multiplexed hyper connection, driven by a task of its own.
//!
//! Idle connections older than `pool_idle_timeout` are dropped when taken
//! and by [`Pool::sweep`], which the control plane calls every second, so a
//! quiet upstream's connections close on our side before its own
//! keep-alive timeout closes them under a request.

use std::cell::Cell;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::connect::{self, ConnectError, Endpoint, Protocol};
use super::h1::{self, Conn, Decoded, Framing};

type H2Send = http2::SendRequest<RequestBody>;

/// A request body. Request bodies are buffered before forwarding
/// (fallbacks, shadows and the cache key all need the same bytes), so it
/// is one chunk, kept readable for the HTTP/1 codec to write by reference.
#[derive(Clone, Debug, Default)]
pub struct RequestBody {
    bytes: Bytes,
    /// Handed to h2 already.
    taken: bool,
}

impl RequestBody {
    pub fn new(bytes: Bytes) -> RequestBody {
        RequestBody {
            bytes,
            taken: false,
        }
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.is_end_stream() {
            return Poll::Ready(None);
        }
        self.taken = true;
        Poll::Ready(Some(Ok(Frame::data(self.bytes.clone()))))
    }

    fn is_end_stream(&self) -> bool {
        self.taken || self.bytes.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if self.is_end_stream() {
            SizeHint::with_exact(0)
        } else {
            SizeHint::with_exact(self.bytes.len() as u64)
        }
    }
}

/// An upstream exchange's failure, from either protocol's client.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Http1(#[from] h1::Error),
    #[error(transparent)]
    Http2(#[from] hyper::Error),
}

/// Idle HTTP/1 connections kept per worker stack. Past it, a connection
/// coming back is closed: a burst's connections are not all worth keeping.
const IDLE_PER_QUEUE: usize = 256;

/// One worker's idle connections, the most recently used last.
#[derive(Default)]
struct IdleStack(Mutex<Vec<Idle>>);

impl IdleStack {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A panic while holding it cannot leave the Vec half-updated.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// The shared h2 connection of an `https://` upstream that chose h2.
struct SharedH2 {
    send: H2Send,
    /// Milliseconds since the pool's epoch at the last request, for expiry.
    last_used: AtomicU64,
}

/// The settings of a pool that a reload may change without losing its
/// connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

pub struct Pool {
    endpoint: Endpoint,
    /// For h2 requests, which carry `:scheme` and `:authority`.
    scheme: Scheme,
    authority: Authority,
    tls: Option<TlsConnector>,
    connect_timeout_ms: AtomicU64,
    idle_timeout_ms: AtomicU64,
    queues: Box<[IdleStack]>,
    h2: ArcSwapOption<SharedH2>,
    epoch: Instant,
    opened: AtomicUsize,
}

/// Why a request got no response head.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened (DNS, TCP, TLS or the timeout):
    /// nothing was sent, and the request is handed back.
    Connect {
        error: ConnectError,
        request: Box<Request<RequestBody>>,
    },
    /// The exchange failed before the response head. `request` is handed
    /// back when the client still has it: always on HTTP/1, which writes
    /// it by reference; on h2 only when none of it was sent. `reused` says
    /// the connection had served a request before and the upstream closed
    /// it without a byte of answer (the case `retry_reused` covers).
    Failed {
        reused: bool,
        request: Option<Box<Request<RequestBody>>>,
        error: UpstreamError,
    },
}

impl SendError {
    /// The request, when the client still has it.
    pub fn into_request(self) -> Option<Request<RequestBody>> {
        match self {
            SendError::Connect { request, .. } => Some(*request),
            SendError::Failed { request, .. } => request.map(|r| *r),
        }
    }
}

thread_local! {
    /// This thread's idle queue, assigned on first use.
    static QUEUE: Cell<Option<usize>> = const { Cell::new(None) };
}
static NEXT_QUEUE: AtomicUsize = AtomicUsize::new(0);

fn queue_index(len: usize) -> usize {
    QUEUE.with(|q| {
        let i = q.get().unwrap_or_else(|| {
            let i = NEXT_QUEUE.fetch_add(1, Ordering::Relaxed);
            q.set(Some(i));
            i
        });
        i % len
    })
}

impl Pool {
    /// A pool for one upstream. `queues` is the number of traffic worker
    /// threads (one idle queue each).
    pub fn new(
        endpoint: Endpoint,
        scheme: Scheme,
        authority: Authority,
        tls: Option<TlsConnector>,
        settings: PoolSettings,
        queues: usize,
    ) -> Pool {
        let queues = (0..queues.max(1)).map(|_| IdleStack::default()).collect();
        Pool {
            endpoint,
            scheme,
            authority,
            tls,
            connect_timeout_ms: AtomicU64::new(millis(settings.connect_timeout)),
            idle_timeout_ms: AtomicU64::new(millis(settings.idle_timeout)),
            queues,
            h2: ArcSwapOption::empty(),
            epoch: Instant::now(),
            opened: AtomicUsize::new(0),
        }
    }

    /// Apply a reload's timeouts; connections are kept.
    pub fn update(&self, settings: PoolSettings) {
        self.connect_timeout_ms
            .store(millis(settings.connect_timeout), Ordering::Relaxed);
        self.idle_timeout_ms
            .store(millis(settings.idle_timeout), Ordering::Relaxed);
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.load(Ordering::Relaxed))
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms.load(Ordering::Relaxed))
    }

    /// Whether requests may go over h2 (an `https://` upstream, where ALPN
    /// decides), whose client consumes a request it has begun to send.
    pub fn may_use_h2(&self) -> bool {
        self.endpoint.tls.is_some()
    }

    /// Connections opened so far.
    pub fn opened(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }

    /// Idle HTTP/1 connections now.
    pub fn idle(&self) -> usize {
        self.queues.iter().map(|q| q.lock().len()).sum()
    }

    /// Send `req` (origin-form URI) on an idle connection, or a new one.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        if let Some(h2) = self.shared_h2() {
            return self.send_h2(h2, req).await;
        }
        match self.checkout() {
            Some(send) => self.send_h1(send, true, req).await,
            // Boxed: opening a connection is the rare path, and its state
            // (DNS, TLS) would otherwise grow every request's future, which
            // is moved by memcpy.
            None => Box::pin(self.send_fresh(req)).await,
        }
    }

    /// Send `req` on a connection opened for it (the `retry_reused` retry).
    pub async fn send_fresh(
        self: &Arc<Self>,
        req: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        match self.open().await {
            Ok(Opened::H1(send)) => self.send_h1(send, false, req).await,
            Ok(Opened::H2(h2)) => self.send_h2(h2, req).await,
            Err(error) => Err(SendError::Connect {
                error,
                request: Box::new(req),
            }),
        }
    }

    fn checkout(&self) -> Option<Box<Conn>> {
        let limit = self.idle_timeout();
        let now = Instant::now();
        let own = queue_index(self.queues.len());
        // Our own queue first (its connections were last used on this
        // thread), then the others'.
        for i in 0..self.queues.len() {
            let mut stack = self.queues[(own + i) % self.queues.len()].lock();
            while let Some(mut idle) = stack.pop() {
                if now.saturating_duration_since(idle.since) >= limit {
                    // Everything below it is older still.
                    stack.clear();
                    break;
                }
                if idle.conn.is_usable() {
                    return Some(idle.conn);
                }
            }
        }
        None
    }

    fn checkin(&self, mut conn: Box<Conn>) {
        conn.idle();
        let idle = Idle {
            conn,
            since: Instant::now(),
        };
        let own = queue_index(self.queues.len());
        let mut stack = self.queues[own].lock();
        // A full stack closes the connection (dropped with `idle`).
        if stack.len() < IDLE_PER_QUEUE {
            stack.push(idle);
        }
    }

    /// Drop idle connections past `pool_idle_timeout` or closed by the
    /// upstream. Control plane, every second.
    pub fn sweep(&self) {
        let limit = self.idle_timeout();
        let now = Instant::now();
        for stack in &self.queues {
            stack.lock().retain_mut(|idle| {
                now.saturating_duration_since(idle.since) < limit && idle.conn.is_usable()
            });
        }
        if let Some(h2) = self.h2.load_full() {
            let idle_ms = self
                .now_ms()
                .saturating_sub(h2.last_used.load(Ordering::Relaxed));
            if h2.send.is_closed() || Duration::from_millis(idle_ms) >= limit {
                self.h2.compare_and_swap(&Some(h2), None);
            }
        }
    }

    fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }

    fn shared_h2(&self) -> Option<Arc<SharedH2>> {
        let guard = self.h2.load();
        let h2 = guard.as_ref()?;
        if h2.send.is_closed() {
            return None;
        }
        Some(Arc::clone(h2))
    }

    async fn open(&self) -> Result<Opened, ConnectError> {
        let (io, protocol) =
            connect::connect(&self.endpoint, self.tls.as_ref(), self.connect_timeout()).await?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        match protocol {
            Protocol::Http1 => Ok(Opened::H1(Box::new(Conn::new(io)))),
            Protocol::Http2 => {
                let io = TokioIo::new(io);
                let (send, conn) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(io)
                    .await
                    .map_err(ConnectError::Handshake)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                let shared = Arc::new(SharedH2 {
                    send,
                    last_used: AtomicU64::new(self.now_ms()),
                });
                self.h2.store(Some(Arc::clone(&shared)));
                Ok(Opened::H2(shared))
            }
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        mut conn: Box<Conn>,
        reused: bool,
        req: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let failed = |req, reused, error: h1::Error| SendError::Failed {
            reused,
            request: Some(Box::new(req)),
            error: error.into(),
        };
        if let Err(error) = conn.write_request(&req, req.body().bytes()).await {
            // A write fails when the upstream has closed the connection.
            return Err(failed(req, reused, error));
        }
        match conn.read_head(req.method()).await {
            Ok(head) => {
                let mut body = H1Body {
                    conn: Some(conn),
                    framing: head.framing,
                    keep_alive: head.keep_alive,
                    pool: Arc::clone(self),
                };
                if body.framing == Framing::Length(0) {
                    body.end();
                }
                Ok(Response::from_parts(head.parts, UpstreamBody::H1(body)))
            }
            Err((error, unanswered)) => Err(failed(req, reused && unanswered, error)),
        }
    }

    async fn send_h2(
        &self,
        h2: Arc<SharedH2>,
        mut req: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        h2.last_used.store(self.now_ms(), Ordering::Relaxed);
        // h2 carries the scheme and authority as pseudo-headers.
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        let mut send = h2.send.clone();
        match send.try_send_request(req).await {
            Ok(head) => Ok(head.map(UpstreamBody::H2)),
            Err(mut e) => Err(SendError::Failed {
                reused: true,
                request: e.take_message().map(Box::new),
                error: e.into_error().into(),
            }),
        }
    }
}

enum Opened {
    H1(Box<Conn>),
    H2(Arc<SharedH2>),
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An upstream response body. An HTTP/1 body gives its connection back to
/// the pool once it has ended cleanly.
pub enum UpstreamBody {
    H1(H1Body),
    H2(Incoming),
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamBody::H1(_) => f.write_str("UpstreamBody::H1"),
            UpstreamBody::H2(_) => f.write_str("UpstreamBody::H2"),
        }
    }
}

/// An HTTP/1 response body, read from its connection by whoever polls it.
pub struct H1Body {
    /// `None` once the body has ended (cleanly or not): the connection went
    /// back to the pool, or was closed. Dropped mid-body, it closes with
    /// the body.
    conn: Option<Box<Conn>>,
    /// How the rest of the body is framed, while `conn` is held.
    framing: Framing,
    keep_alive: bool,
    pool: Arc<Pool>,
}

impl H1Body {
    /// The body is over: the connection goes back to the pool if it may
    /// carry another request and the upstream sent nothing past the end.
    fn end(&mut self) {
        if let Some(mut conn) = self.conn.take()
            && self.keep_alive
            && conn.buffered().is_empty()
        {
            self.pool.checkin(conn);
        }
    }

    fn fail(&mut self, error: h1::Error) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        self.conn = None;
        Poll::Ready(Some(Err(error.into())))
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.framing.decode(conn.buffered()) {
                Ok(Some(Decoded::Data(data))) => {
                    // A body of known length is over with its last byte:
                    // the connection goes back before the client even has
                    // it.
                    if self.framing == Framing::Length(0) {
                        self.end();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Some(Decoded::End(trailers))) => {
                    self.end();
                    return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                }
                Ok(None) => {}
                Err(e) => return self.fail(e),
            }
            match conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return self.fail(h1::Error::Io(e)),
                Poll::Ready(Ok(0)) => {
                    return match self.framing.at_close() {
                        // Only a close-delimited body ends here, and its
                        // connection is not kept.
                        Ok(()) => {
                            self.end();
                            Poll::Ready(None)
                        }
                        Err(e) => self.fail(e),
                    };
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.conn, self.framing) {
            (None, _) => SizeHint::with_exact(0),
            (Some(_), Framing::Length(n)) => SizeHint::with_exact(n),
            (Some(_), Framing::Chunked(_) | Framing::Close) => SizeHint::default(),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        match self.get_mut() {
            UpstreamBody::H1(b) => b.poll_frame(cx),
            UpstreamBody::H2(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(UpstreamError::Http2))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::H1(b) => b.conn.is_none(),
            UpstreamBody::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::H1(b) => b.size_hint(),
            UpstreamBody::H2(body) => body.size_hint(),
        }
    }
}
