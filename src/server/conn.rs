//! One accepted connection, served: HTTP/2 (ALPN `h2`, or its preface on
//! a plain or TLS connection) or HTTP/1.1 with keep-alive, **parked while
//! idle**.
//!
//! # Parking
//!
//! A hyper HTTP/1 connection holds, for as long as it lives, an 8 KiB read
//! buffer (reserved again before every wait for the next request), an
//! 8 KiB buffer for response heads, the last request's header map and the
//! dispatcher's state: an idle keep-alive connection cost 26 KiB, so ten
//! thousand SDK clients holding theirs open cost 260 MiB. So once a
//! connection has been idle for [`PARK_AFTER`] after serving a request (no
//! request started since the last look, none in flight, nothing left unflushed, no partial head
//! read: a slow head keeps the head-read deadline running), its hyper
//! connection is told to stop. Being idle, it stops at once and hands back
//! the socket and any bytes it had read without parsing. Only those are
//! kept: the task waits for the socket to be readable, then starts a fresh
//! hyper connection on it (with the unparsed bytes first). A parked
//! connection costs its task and its socket, about 1 KiB.
//!
//! Nothing a client sees changes: the socket stays open, no request is cut
//! or answered `Connection: close`. An idle connection is closed after
//! `server.request_header_timeout`, as a slow head is; when a client then
//! sends its next request, its head again has a whole
//! `request_header_timeout` to arrive.
//!
//! # The head-read deadline
//!
//! A busy connection is looked at once per [`PARK_AFTER`] (or a quarter of
//! `request_header_timeout`, if shorter), never per request: the same look
//! parks it and enforces the head-read deadline ([`HeadWatch`]), so no
//! timer is armed per request.
//!
//! Graceful shutdown: a parked connection is closed; an active one is told
//! to finish what it is serving and close, as hyper-util's
//! `GracefulShutdown` did.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::Sniffed;
use super::activity::{Activity, Open};
use crate::gateway::data_plane::DataPlane;
use crate::proxy::{self, ConnInfo, ProxyBody};

/// How long an HTTP/1 connection stays idle before it is parked.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

/// Connections parked now, in this process (all servers).
static PARKED: AtomicUsize = AtomicUsize::new(0);

/// HTTP/1 connections parked now, in this process: idle keep-alive
/// connections holding only their socket.
pub fn parked_connections() -> usize {
    PARKED.load(Ordering::Relaxed)
}

/// Counts a parked connection while alive.
struct ParkedGuard;

impl ParkedGuard {
    fn new() -> ParkedGuard {
        PARKED.fetch_add(1, Ordering::Relaxed);
        super::trim::parked();
        ParkedGuard
    }
}

impl Drop for ParkedGuard {
    fn drop(&mut self) {
        PARKED.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The largest request head read, in bytes: on HTTP/1 a longer one is
/// answered `431` and the connection closed, before anything is
/// forwarded; on HTTP/2 it is the header list size cutover advertises
/// (hyper's defaults were ~400 KiB and 16 KiB: one bound for both). Envoy
/// allows 60 KiB, nginx 8 KiB a line. On HTTP/1 this is also the most
/// hyper buffers of a response before it writes.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// What an HTTP/2 stream may hold of its answer beyond what the socket
/// takes. hyper's default, 400 KB, times the 200 streams a connection may
/// open let one client that grants a large window and never reads hold
/// ~100 MiB (`bench/h2_hold.sh`: +105 MiB, and +19 with this). 64 KiB,
/// a stream's default window, still keeps a frame ready for a client that
/// reads (a 50 MB stream to curl took as long).
const MAX_STREAM_SEND_BUF: usize = 64 * 1024;

/// What every connection is served with.
pub(super) struct Settings {
    pub h1: http1::Builder,
    pub h2: http2::Builder<TokioExecutor>,
    /// `server.request_header_timeout`: the first bytes of a connection,
    /// each request head, and an idle connection's life.
    pub header_timeout: Duration,
}

impl Settings {
    pub fn new(header_timeout: Duration) -> Settings {
        let mut h1 = http1::Builder::new();
        // The head-read deadline is kept by `serve_h1` (see `HeadWatch`),
        // not by hyper's per-request timer: its default (30 s) is turned off.
        h1.header_read_timeout(None)
            .keep_alive(true)
            .max_buf_size(MAX_REQUEST_HEAD);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(MAX_REQUEST_HEAD as u32)
            .max_send_buf_size(MAX_STREAM_SEND_BUF);
        Settings {
            h1,
            h2,
            header_timeout,
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as open.
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        open: Open,
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The proxy, as hyper calls it for each request of a connection.
#[derive(Clone)]
struct Service {
    plane: Arc<DataPlane>,
    info: ConnInfo,
    activity: Arc<Activity>,
}

type Answer = Result<Response<Tracked<ProxyBody>>, Infallible>;

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<Tracked<ProxyBody>>;
    type Error = Infallible;
    /// Boxed, so a parked connection holds no room for one, and so the
    /// connection can be polled without being pinned (hyper's
    /// `poll_without_shutdown` wants an `Unpin` future).
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        // Counted here, when hyper dispatches the head, not when the future
        // first runs: parking must never see a dispatched request as idle.
        let open = self.activity.begin();
        let plane = Arc::clone(&self.plane);
        let info = self.info;
        Box::pin(async move {
            let response = proxy::handle(plane, info, req).await;
            Ok(response.map(|inner| Tracked { inner, open }))
        })
    }
}

/// An IO whose readability can be awaited without reading: what a parked
/// connection waits on.
pub(super) trait ReadReady {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ReadReady for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl ReadReady for Box<tokio_rustls::server::TlsStream<TcpStream>> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper read until it would block, so rustls holds no plaintext:
        // what comes next comes from the socket.
        self.get_ref().0.poll_read_ready(cx)
    }
}

/// Serve a connection whose protocol is not known yet: HTTP/2 if it opens
/// with the preface, HTTP/1 otherwise.
pub(super) async fn serve<T>(
    mut io: T,
    plane: Arc<DataPlane>,
    info: ConnInfo,
    settings: &Settings,
    shutdown: &CancellationToken,
) where
    T: AsyncRead + AsyncWrite + ReadReady + Unpin + Send + 'static,
{
    let first = tokio::select! {
        biased;
        () = shutdown.cancelled() => return,
        first = tokio::time::timeout(settings.header_timeout, read_preface(&mut io)) => first,
    };
    let (h2, prefix) = match first {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            tracing::debug!(peer = %info.peer, error = %e, "connection failed before a request");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %info.peer, "no request within request_header_timeout");
            return;
        }
    };
    let io = Sniffed::new(io).with_prefix(prefix);
    if h2 {
        serve_h2(io, plane, info, settings, shutdown).await;
    } else {
        serve_h1(io, plane, info, settings, shutdown).await;
    }
}

/// Read until the bytes cannot be the HTTP/2 preface, or are all of it.
/// Returns whether they are, and the bytes read (at most 24).
async fn read_preface<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<(bool, Bytes)> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut n = 0;
    loop {
        let read = io.read(&mut buf[n..]).await?;
        n += read;
        if read == 0 || buf[..n] != H2_PREFACE[..n] {
            return Ok((false, Bytes::copy_from_slice(&buf[..n])));
        }
        if n == buf.len() {
            return Ok((true, Bytes::copy_from_slice(&buf)));
        }
    }
}

/// HTTP/2: hyper's connection, until it ends, shutdown drains it, or it
/// has been idle for `request_header_timeout`.
///
/// Idle means no stream open and none started: such a connection is sent
/// GOAWAY and closed, as an idle HTTP/1 connection is closed (hyper's h2
/// server has no idle timeout of its own, and its keep-alive pings only
/// find dead peers, not idle ones). The look is `HeadWatch`'s, once a
/// period; parking is an HTTP/1 matter and is not done here.
pub(super) async fn serve_h2<T>(
    io: Sniffed<T>,
    plane: Arc<DataPlane>,
    info: ConnInfo,
    settings: &Settings,
    shutdown: &CancellationToken,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let service = Service {
        plane,
        info,
        activity: Arc::clone(&activity),
    };
    let mut conn = Box::pin(settings.h2.serve_connection(TokioIo::new(io), service));
    let mut watch = HeadWatch::new(settings.header_timeout, activity.started());
    let tick = tokio::time::sleep(watch.period);
    let cancelled = shutdown.cancelled();
    tokio::pin!(tick, cancelled);
    let mut tick_registered = false;
    let mut stopping = false;
    let result = poll_fn(|cx| {
        if !stopping && cancelled.as_mut().poll(cx).is_ready() {
            stopping = true;
            conn.as_mut().graceful_shutdown();
        }
        while !stopping && tick_fired(tick.as_mut(), &mut tick_registered, cx) {
            if watch.look(&activity) == Look::HeadTimedOut {
                tracing::debug!(peer = %info.peer, "HTTP/2 connection idle for request_header_timeout");
                stopping = true;
                conn.as_mut().graceful_shutdown();
            } else {
                tick.as_mut()
                    .reset(tokio::time::Instant::now() + watch.period);
                tick_registered = false;
            }
        }
        conn.as_mut().poll(cx)
    })
    .await;
    if let Err(e) = result {
        tracing::debug!(peer = %info.peer, error = %e, "connection ended with an error");
    }
}

/// How a hyper HTTP/1 connection ended.
enum Ended {
    /// Idle: parked by us, the socket handed back; it may stay parked for
    /// what is left of `request_header_timeout`.
    Parked { idle_left: Duration },
    /// Closed by the client, or drained at shutdown.
    Done,
    /// No head within `request_header_timeout`: closed without an answer,
    /// as hyper's own head-read timer did.
    HeadTimedOut,
}

/// What a look at a connection decided.
#[derive(Debug, PartialEq, Eq)]
enum Look {
    Busy,
    Park { idle_left: Duration },
    HeadTimedOut,
}

/// The head-read deadline and the parking decision, kept from a periodic
/// look at [`Activity`] rather than a timer per request.
///
/// hyper's own head-read timer allocated, registered and cancelled a timer
/// (and read the clock) for every request: about 1,000 instructions of a
/// ~52,000-instruction request. Here a connection waiting for a head is
/// seen at consecutive looks, one `period` apart, with no request started
/// in between; after `close_after` such periods it has waited at least
/// `request_header_timeout` and at most one period more.
#[derive(Debug)]
struct HeadWatch {
    period: Duration,
    header_timeout: Duration,
    /// Periods of waiting after which the connection is closed.
    close_after: u32,
    /// Periods of waiting after which a connection that has served a
    /// request is parked.
    park_after: u32,
    /// `Activity::started` when the hyper connection began.
    first: u64,
    /// `Activity::started` at the last look.
    seen: u64,
    /// Whether the connection waited for a head at the last look.
    waiting: bool,
    /// Whole periods it has waited since.
    periods: u32,
}

/// The shortest period between looks, whatever the head timeout.
const MIN_PERIOD: Duration = Duration::from_millis(10);

impl HeadWatch {
    fn new(header_timeout: Duration, started: u64) -> HeadWatch {
        // A quarter of the timeout: a head times out at most 25 % late.
        let period = PARK_AFTER.min(header_timeout / 4).max(MIN_PERIOD);
        let periods_in = |d: Duration| -> u32 {
            u32::try_from(d.as_nanos().div_ceil(period.as_nanos()))
                .unwrap_or(u32::MAX)
                .max(1)
        };
        HeadWatch {
            period,
            header_timeout,
            close_after: periods_in(header_timeout),
            park_after: periods_in(PARK_AFTER),
            first: started,
            seen: started,
            // hyper waits for the first head from the start.
            waiting: true,
            periods: 0,
        }
    }

    /// Called once per `period`.
    fn look(&mut self, activity: &Activity) -> Look {
        let started = activity.started();
        let waiting = activity.awaiting_head();
        // No request started since the last look and waiting at both:
        // it waited the whole period.
        if waiting && self.waiting && started == self.seen {
            self.periods = self.periods.saturating_add(1);
        } else {
            self.periods = 0;
        }
        self.waiting = waiting;
        self.seen = started;
        if self.periods >= self.close_after {
            return Look::HeadTimedOut;
        }
        // Only a connection that has served a request is parked: hyper
        // stops at once only when idle between requests; told to stop
        // before its first one (a wake-up that brought no request, such as
        // a TLS record with no data), it would serve the next request with
        // `Connection: close` instead.
        if self.periods >= self.park_after && started != self.first && activity.quiet() {
            let waited = self.period.saturating_mul(self.periods);
            return Look::Park {
                idle_left: self.header_timeout.saturating_sub(waited),
            };
        }
        Look::Busy
    }
}

/// HTTP/1.1: hyper's connection while active, only the socket while idle.
async fn serve_h1<T>(
    io: Sniffed<T>,
    plane: Arc<DataPlane>,
    info: ConnInfo,
    settings: &Settings,
    shutdown: &CancellationToken,
) where
    T: AsyncRead + AsyncWrite + ReadReady + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let mut io = io.track(Arc::clone(&activity));
    loop {
        let service = Service {
            plane: Arc::clone(&plane),
            info,
            activity: Arc::clone(&activity),
        };
        // Boxed: a parked connection's task keeps none of its room.
        let mut conn = Box::new(settings.h1.serve_connection(TokioIo::new(io), service));
        let ended = {
            let mut watch = HeadWatch::new(settings.header_timeout, activity.started());
            let tick = tokio::time::sleep(watch.period);
            let cancelled = shutdown.cancelled();
            tokio::pin!(tick, cancelled);
            let mut ending: Option<Ended> = None;
            let mut tick_registered = false;
            let result = poll_fn(|cx| {
                if ending.is_none() && cancelled.as_mut().poll(cx).is_ready() {
                    ending = Some(Ended::Done);
                    Pin::new(&mut *conn).graceful_shutdown();
                }
                while ending.is_none() && tick_fired(tick.as_mut(), &mut tick_registered, cx) {
                    match watch.look(&activity) {
                        Look::Busy => {
                            tick.as_mut()
                                .reset(tokio::time::Instant::now() + watch.period);
                            tick_registered = false;
                        }
                        Look::Park { idle_left } => {
                            ending = Some(Ended::Parked { idle_left });
                            Pin::new(&mut *conn).graceful_shutdown();
                        }
                        // Not graceful: before its first request, hyper
                        // would go on reading a partial head.
                        Look::HeadTimedOut => {
                            ending = Some(Ended::HeadTimedOut);
                            return Poll::Ready(Ok(()));
                        }
                    }
                }
                conn.poll_without_shutdown(cx)
            })
            .await;
            match result {
                Ok(()) => ending.unwrap_or(Ended::Done),
                Err(e) => {
                    tracing::debug!(peer = %info.peer, error = %e, "connection ended with an error");
                    return;
                }
            }
        };
        if let Ended::HeadTimedOut = ended {
            tracing::debug!(peer = %info.peer, "no request head within request_header_timeout");
            return;
        }
        let parts = conn.into_parts();
        io = parts.io.into_inner();
        let Ended::Parked { idle_left } = ended else {
            // What hyper's own connection future does at its end.
            let _ = tokio::time::timeout(settings.header_timeout, io.shutdown()).await;
            return;
        };
        io.unread(parts.read_buf);
        drop(parts.service);
        if io.has_replay() {
            continue;
        }
        let _parked = ParkedGuard::new();
        let woke = tokio::select! {
            biased;
            () = shutdown.cancelled() => false,
            ready = poll_fn(|cx| io.get_ref().poll_read_ready(cx)) => ready.is_ok(),
            () = tokio::time::sleep(idle_left) => false,
        };
        if !woke {
            return;
        }
    }
}

/// Whether `tick` has fired. It is polled once per deadline, which hands
/// the timer this task's waker; after that its state is only read. A
/// connection is polled about three times per request, and each poll of a
/// `Sleep` cost ~120 instructions (its cooperative budget, its waker).
fn tick_fired(
    tick: Pin<&mut tokio::time::Sleep>,
    registered: &mut bool,
    cx: &mut Context<'_>,
) -> bool {
    if *registered {
        return tick.is_elapsed();
    }
    let fired = tick.poll(cx).is_ready();
    *registered = !fired;
    fired
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Looks until one is not `Busy`: how many it took, and that one.
    fn look_until_decided(watch: &mut HeadWatch, activity: &Activity) -> (u32, Look) {
        for n in 1..1000 {
            match watch.look(activity) {
                Look::Busy => {}
                decided => return (n, decided),
            }
        }
        panic!("never decided");
    }

    #[test]
    fn a_head_never_sent_times_out_after_the_timeout_and_is_never_parked() {
        let activity = Arc::new(Activity::default());
        let mut watch = HeadWatch::new(Duration::from_secs(10), activity.started());
        assert_eq!(watch.period, PARK_AFTER);
        // Waiting since the start: ten whole periods.
        assert_eq!(
            look_until_decided(&mut watch, &activity),
            (10, Look::HeadTimedOut)
        );

        // A short timeout is looked at four times as often.
        let mut watch = HeadWatch::new(Duration::from_millis(500), activity.started());
        assert_eq!(watch.period, Duration::from_millis(125));
        assert_eq!(
            look_until_decided(&mut watch, &activity),
            (4, Look::HeadTimedOut)
        );
    }

    #[test]
    fn an_idle_connection_is_parked_with_what_is_left_of_the_timeout() {
        let activity = Arc::new(Activity::default());
        let mut watch = HeadWatch::new(Duration::from_secs(10), activity.started());
        // A request arrives, and is answered before the first look.
        drop(activity.begin());
        // That look sees a request started: it waited no whole period yet.
        assert_eq!(watch.look(&activity), Look::Busy);
        assert_eq!(
            watch.look(&activity),
            Look::Park {
                idle_left: Duration::from_secs(9)
            }
        );
    }

    #[test]
    fn a_request_in_flight_or_a_blocked_write_is_never_timed_out() {
        let activity = Arc::new(Activity::default());
        let mut watch = HeadWatch::new(Duration::from_secs(2), activity.started());
        let open = activity.begin();
        for _ in 0..100 {
            assert_eq!(watch.look(&activity), Look::Busy);
        }
        drop(open);
        activity.set_write_blocked(true);
        for _ in 0..100 {
            assert_eq!(watch.look(&activity), Look::Busy);
        }
        // Written: the wait for the next head starts at this look.
        activity.set_write_blocked(false);
        assert_eq!(watch.look(&activity), Look::Busy);
        // Part of a head read: not parked, timed out after four looks half
        // a second apart.
        activity.set_mid_message(true);
        assert_eq!(watch.period, Duration::from_millis(500));
        assert_eq!(
            look_until_decided(&mut watch, &activity),
            (4, Look::HeadTimedOut)
        );
    }

    #[tokio::test]
    async fn the_preface_decides_the_protocol() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(H2_PREFACE).await.expect("write");
        let (h2, bytes) = read_preface(&mut server).await.expect("read");
        assert!(h2);
        assert_eq!(&bytes[..], &H2_PREFACE[..]);

        let (mut client, mut server) = tokio::io::duplex(64);
        client
            .write_all(b"POST /v1/chat HTTP/1.1\r\n")
            .await
            .expect("write");
        let (h2, bytes) = read_preface(&mut server).await.expect("read");
        assert!(!h2);
        assert!(b"POST /v1/chat HTTP/1.1\r\n".starts_with(&bytes));

        // A client that sends a little of the preface and closes.
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"PRI *").await.expect("write");
        drop(client);
        let (h2, bytes) = read_preface(&mut server).await.expect("read");
        assert!(!h2);
        assert_eq!(&bytes[..], b"PRI *");
    }
}
