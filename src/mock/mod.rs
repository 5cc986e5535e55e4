//! A fake agent backend that speaks the model APIs agents use, named by its
//! behaviours.
//!
//! Used by `cutover mock-backend`, the demo, the integration tests and the
//! benchmarks. It speaks HTTP/1.1 (keep-alive) and h2c with prior knowledge
//! on one port, and answers any request but `GET /healthz` in the API its
//! path names: a path ending in `/responses` as the OpenAI Responses API,
//! `/messages` as Anthropic Messages, anything else as a chat completion;
//! each as JSON, or as that API's event stream when the body says
//! `"stream": true`, with exact usage numbers. With `--mcp` it is a minimal
//! MCP tool server instead ([`mcp`]). It can misbehave on purpose: latency,
//! injected error statuses, hanging, cutting a response mid-body, or
//! failing right after a 200 header.
//!
//! * [`serve`] takes an already-bound listener and a shutdown future (tests
//!   bind port 0);
//! * [`spawn`] binds, runs `serve` on the current runtime and returns a
//!   [`MockHandle`] with the address, the [`MockStats`] of what it saw, and
//!   its [`Faults`]: failures switched on and off while it runs (the demo's
//!   "a backend goes down").
//!
//! Per request, in order: record it → `/healthz` (always 200, no
//! behaviours) → `--hang` → latency → injected [`Faults`], `--status` /
//! `--error-rate` (complete JSON error bodies) → `--fail-before-body` → the reply, JSON or SSE, cut
//! by `--abort-after` if set.

pub mod mcp;
mod reply;
mod stats;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

pub use reply::{ChatRequest, DEFAULT_MODEL, Reply};

use crate::api::Api;
pub use stats::{MockStats, RECORD_CAPACITY, RequestRecord};

/// Default for `--name`.
pub const DEFAULT_NAME: &str = "mock";
/// Default for `--chunks`.
pub const DEFAULT_CHUNKS: u32 = 5;
/// Response header carrying `--name`.
pub const NAME_HEADER: &str = "x-mock-name";
/// Response header carrying `--outcome` (SPEC §7).
pub const OUTCOME_HEADER: &str = "x-cutover-outcome";

/// Request bodies above this get 413: the mock is a test fixture, not a sink.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Before a deliberate abort the body stays pending this long, so what was
/// already produced (headers, earlier chunks) reaches the socket first.
/// Without it hyper may drop its write buffer with the connection, and the
/// client would see a connection error instead of "200, then no body".
const ABORT_FLUSH_GRACE: Duration = Duration::from_millis(50);
/// How long in-flight responses may run after shutdown before connections
/// are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Back-off after a failed `accept` (e.g. out of file descriptors), so the
/// loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// `cutover mock-backend` options. Build in code with [`MockArgs::new`] and
/// struct update syntax: `MockArgs { hang: true, ..MockArgs::new(addr) }`.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct MockArgs {
    /// Address to listen on, e.g. 127.0.0.1:9001 (port 0 picks a free one).
    #[arg(long)]
    pub listen: SocketAddr,

    /// Name echoed in the reply ("Hello from NAME") and in the x-mock-name header.
    #[arg(long, default_value = DEFAULT_NAME, value_parser = parse_name)]
    pub name: String,

    /// Fixed delay before the response headers, e.g. "250ms".
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub latency: Duration,

    /// If set, the delay is uniform random in [latency, latency-max].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub latency_max: Option<Duration>,

    /// Share of requests (0..1) answered with --error-status and a JSON error body.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,

    /// Status used by --error-rate.
    #[arg(long, default_value = "500", value_parser = parse_status)]
    pub error_status: StatusCode,

    /// Every response uses this status (a JSON error body when >= 400).
    #[arg(long, value_parser = parse_status)]
    pub status: Option<StatusCode>,

    /// Number of content chunks in SSE mode.
    #[arg(long, default_value_t = DEFAULT_CHUNKS, value_parser = clap::value_parser!(u32).range(1..))]
    pub chunks: u32,

    /// Delay between SSE events, e.g. "200ms".
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub chunk_delay: Duration,

    /// Accept requests but never answer; connections are held until shutdown.
    #[arg(long)]
    pub hang: bool,

    /// Cut the response after N body frames: SSE events, or in JSON mode
    /// (any N) half the document. HTTP/1.1 drops the connection without the
    /// last chunk, HTTP/2 resets the stream.
    #[arg(long, value_name = "N")]
    pub abort_after: Option<u32>,

    /// Send the response headers (200), then abort before any body byte.
    #[arg(long)]
    pub fail_before_body: bool,

    /// Add `x-cutover-outcome: success|failure` to every reply.
    #[arg(long, value_enum)]
    pub outcome: Option<Outcome>,

    /// Be a minimal MCP tool server (streamable HTTP) instead: initialize
    /// (returns an Mcp-Session-Id), tools/list, tools/call (tools `whoami`
    /// and `echo`), the GET event stream, DELETE, 404 on unknown sessions.
    #[arg(long)]
    pub mcp: bool,
}

impl MockArgs {
    /// The defaults of the command line, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            name: DEFAULT_NAME.to_owned(),
            latency: Duration::ZERO,
            latency_max: None,
            error_rate: 0.0,
            error_status: StatusCode::INTERNAL_SERVER_ERROR,
            status: None,
            chunks: DEFAULT_CHUNKS,
            chunk_delay: Duration::ZERO,
            hang: false,
            abort_after: None,
            fail_before_body: false,
            outcome: None,
            mcp: false,
        }
    }

    /// The latency of one request: fixed, or uniform in [latency, latency-max].
    fn pick_latency(&self) -> Duration {
        match self.latency_max {
            Some(max) if max > self.latency => rand::random_range(self.latency..=max),
            _ => self.latency,
        }
    }

    /// Rolls `--error-rate`; out-of-range rates (only possible when built in
    /// code) are clamped instead of panicking.
    fn roll_error(&self) -> bool {
        let rate = if self.error_rate.is_nan() {
            0.0
        } else {
            self.error_rate.clamp(0.0, 1.0)
        };
        rate > 0.0 && rand::random_bool(rate)
    }
}

/// Value of the `x-cutover-outcome` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!(
            "`{s}` is not a rate: expected a number from 0 to 1, e.g. 0.25"
        )),
    }
}

fn parse_status(s: &str) -> Result<StatusCode, String> {
    match s.parse::<u16>() {
        Ok(code @ 200..=599) => StatusCode::from_u16(code).map_err(|e| e.to_string()),
        _ => Err(format!(
            "`{s}` is not a usable status: expected 200 to 599, e.g. 503"
        )),
    }
}

fn parse_name(s: &str) -> Result<String, String> {
    match HeaderValue::from_str(s) {
        Ok(_) if !s.is_empty() => Ok(s.to_owned()),
        _ => Err(format!(
            "`{s}` cannot be a name: it goes into a header, so use visible ASCII, e.g. stable-v1"
        )),
    }
}

/// The body every response uses; the error is a deliberate abort.
pub(crate) type MockBody = BoxBody<Bytes, std::io::Error>;

/// Why a request got no response at all (hyper then closes the connection
/// or resets the h2 stream).
#[derive(Debug, thiserror::Error)]
enum NoResponse {
    #[error("--hang: request held until shutdown")]
    HungUntilShutdown,
    #[error("reading the request body: {0}")]
    ReadBody(Box<dyn std::error::Error + Send + Sync>),
}

/// Failures injected while the server runs, on top of its options: every
/// request fails with a status, or a share of them with `--error-status`.
/// Atomics, so switching them never waits on the requests in flight.
#[derive(Debug, Default)]
pub struct Faults {
    /// 0: none; else every request is answered with this status.
    status: AtomicU16,
    /// Share of requests failed, in millionths.
    error_ppm: AtomicU32,
}

impl Faults {
    /// Fail every request with `status` (an error status, 400..=599), or
    /// stop doing so with `None`. Other statuses are ignored.
    pub fn fail_with(&self, status: Option<StatusCode>) {
        let code = status
            .map(|s| s.as_u16())
            .filter(|c| (400..=599).contains(c));
        self.status.store(code.unwrap_or(0), Ordering::Relaxed);
    }

    /// Fail this share (0..1, clamped) of requests with `--error-status`.
    pub fn set_error_rate(&self, rate: f64) {
        let rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self.error_ppm
            .store((rate * 1e6).round() as u32, Ordering::Relaxed);
    }

    /// Back to the options alone.
    pub fn clear(&self) {
        self.fail_with(None);
        self.set_error_rate(0.0);
    }

    fn status(&self) -> Option<StatusCode> {
        match self.status.load(Ordering::Relaxed) {
            0 => None,
            code => StatusCode::from_u16(code).ok(),
        }
    }

    fn roll_error(&self) -> bool {
        let ppm = self.error_ppm.load(Ordering::Relaxed);
        ppm > 0 && rand::random_range(0..1_000_000) < ppm
    }
}

/// Per-server state shared by every connection.
struct Shared {
    opts: MockArgs,
    /// `--mcp`: the sessions opened and not ended.
    sessions: Arc<mcp::Sessions>,
    /// `--name` as a header value; `None` if a name built in code is not a
    /// valid header value (the header is then left out).
    name_header: Option<HeaderValue>,
    stats: Arc<MockStats>,
    /// Failures switched on from outside while the server runs.
    faults: Arc<Faults>,
    /// Flips to `true` at shutdown: connections start their graceful close
    /// and `--hang` requests are released.
    shutdown: watch::Receiver<bool>,
}

/// Serves until `shutdown` resolves, then lets in-flight responses finish
/// for up to a second and returns.
pub async fn serve(
    listener: TcpListener,
    opts: MockArgs,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_inner(listener, opts, Arc::default(), Arc::default(), shutdown).await
}

async fn serve_inner(
    listener: TcpListener,
    opts: MockArgs,
    stats: Arc<MockStats>,
    faults: Arc<Faults>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        sessions: Arc::default(),
        name_header: HeaderValue::from_str(&opts.name).ok(),
        opts,
        stats,
        faults,
        shutdown: stop_rx,
    });
    // Every connection task lives in this set, so dropping `serve` (e.g.
    // `MockHandle` drop) aborts them all, and shutdown can wait for them.
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                Err(error) => {
                    tracing::warn!(%error, "mock backend: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished connections so a long benchmark does not grow the set.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Ignored error: no receiver left means no connection is alive.
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    // Streaming must be observable chunk by chunk; Nagle would batch them.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "mock backend: set_nodelay failed");
    }
    let mut stop = shared.shutdown.clone();
    let service = service_fn(move |req| handle(Arc::clone(&shared), req));
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "mock backend: connection ended with an error");
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            // Ignored: after the grace the connection is simply dropped.
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

/// Resolves once shutdown starts (or the server is gone). The watch guard
/// is dropped here, so it is never held across the caller's awaits.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, NoResponse> {
    let opts = &shared.opts;
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => {
            return Ok(shared.error_response(StatusCode::PAYLOAD_TOO_LARGE));
        }
        Err(error) => return Err(NoResponse::ReadBody(error)),
    };
    // MCP needs the session and Accept headers after the record took them.
    let mcp_headers = opts.mcp.then(|| parts.headers.clone());
    let api = Api::from_path(parts.uri.path()).unwrap_or(Api::Chat);
    let seq = shared.stats.record(RequestRecord {
        seq: 0,
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        version: parts.version,
        headers: parts.headers,
        body: body.clone(),
    });

    if parts.method == Method::GET && parts.uri.path() == "/healthz" {
        return Ok(Response::new(full(Bytes::from_static(b"ok\n"))));
    }
    if opts.hang {
        shared.stats.count_hung();
        stopped(&mut shared.shutdown.clone()).await;
        return Err(NoResponse::HungUntilShutdown);
    }
    let latency = opts.pick_latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(status) = shared.faults.status() {
        return Ok(shared.injected_error(api, status));
    }
    let status = match opts.status {
        Some(status) if status.as_u16() >= 400 => return Ok(shared.injected_error(api, status)),
        Some(status) => status,
        None if opts.roll_error() || shared.faults.roll_error() => {
            return Ok(shared.injected_error(api, opts.error_status));
        }
        None => StatusCode::OK,
    };
    if let Some(headers) = mcp_headers {
        return Ok(mcp::respond(&shared, &parts.method, &headers, &body));
    }

    let chat = ChatRequest::parse(&body);
    let reply = Reply::new(&opts.name, &chat, seq, unix_now());
    let content_type = if chat.stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    let body = if opts.fail_before_body {
        shared.stats.count_aborted();
        paced(Vec::new(), Duration::ZERO, Some(0))
    } else if chat.stream {
        let events = reply.events_for(api, usize::try_from(opts.chunks).unwrap_or(usize::MAX));
        let cut = opts
            .abort_after
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        if cut.is_some_and(|n| n < events.len()) {
            shared.stats.count_aborted();
        }
        paced(events, opts.chunk_delay, cut)
    } else if opts.abort_after.is_some() {
        shared.stats.count_aborted();
        let doc = reply.json_for(api);
        paced(vec![doc.slice(..doc.len() / 2)], Duration::ZERO, Some(1))
    } else {
        full(reply.json_for(api))
    };
    let mut response = shared.response(status, body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if chat.stream {
        response
            .headers_mut()
            .insert("cache-control", HeaderValue::from_static("no-cache"));
    }
    Ok(response)
}

impl Shared {
    /// A response with the behaviour headers (`x-mock-name`, outcome).
    fn response(&self, status: StatusCode, body: MockBody) -> Response<MockBody> {
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        if let Some(name) = &self.name_header {
            headers.insert(NAME_HEADER, name.clone());
        }
        if let Some(outcome) = self.opts.outcome {
            headers.insert(OUTCOME_HEADER, HeaderValue::from_static(outcome.as_str()));
        }
        response
    }

    /// An error from `--status` or `--error-rate` (counted as injected),
    /// in the API's error shape.
    fn injected_error(&self, api: Api, status: StatusCode) -> Response<MockBody> {
        self.stats.count_injected_error();
        let mut response = self.response(
            status,
            full(reply::error_json_for(api, &self.opts.name, status)),
        );
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }

    /// An OpenAI-style JSON error response.
    fn error_response(&self, status: StatusCode) -> Response<MockBody> {
        let mut response = self.response(status, full(reply::error_json(&self.opts.name, status)));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

pub(crate) fn full(bytes: Bytes) -> MockBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// A body that yields each element of `frames` as its own frame, waiting
/// `delay` between frames, and fails after `abort_after` frames if set.
/// Frames are produced only when hyper polls for them, so nothing runs
/// after the client has gone.
fn paced(frames: Vec<Bytes>, delay: Duration, abort_after: Option<usize>) -> MockBody {
    struct Pace {
        frames: std::vec::IntoIter<Bytes>,
        sent: usize,
        delay: Duration,
        abort_after: Option<usize>,
    }
    let start = Pace {
        frames: frames.into_iter(),
        sent: 0,
        delay,
        abort_after,
    };
    let frames = stream::unfold(Some(start), |state| async move {
        let mut pace = state?;
        if pace.abort_after == Some(pace.sent) {
            tokio::time::sleep(ABORT_FLUSH_GRACE).await;
            let aborted = std::io::Error::other("mock backend: response aborted on purpose");
            return Some((Err(aborted), None));
        }
        let next = pace.frames.next()?;
        if pace.sent > 0 && !pace.delay.is_zero() {
            tokio::time::sleep(pace.delay).await;
        }
        pace.sent += 1;
        Some((Ok(Frame::data(next)), Some(pace)))
    });
    BodyExt::boxed(StreamBody::new(frames))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Binds `opts.listen`, runs [`serve`] on the current runtime and returns
/// once the socket is bound, so the mock is ready when this returns.
pub async fn spawn(opts: MockArgs) -> std::io::Result<MockHandle> {
    let listener = TcpListener::bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(MockStats::default());
    let faults = Arc::new(Faults::default());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let stop = async move {
        // Err (sender dropped) also means stop.
        let _ = stop_rx.await;
    };
    let task = tokio::spawn(serve_inner(
        listener,
        opts,
        Arc::clone(&stats),
        Arc::clone(&faults),
        stop,
    ));
    Ok(MockHandle {
        addr,
        stats,
        faults,
        stop: Some(stop_tx),
        task: Some(task),
    })
}

/// A running mock backend. Dropping it aborts the server and every
/// connection at once; [`MockHandle::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct MockHandle {
    addr: SocketAddr,
    stats: Arc<MockStats>,
    faults: Arc<Faults>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl MockHandle {
    /// The bound address (the real port when `listen` had port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, with a wildcard listen address replaced by loopback.
    pub fn url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// What the mock has seen so far.
    pub fn stats(&self) -> &Arc<MockStats> {
        &self.stats
    }

    /// The failures to inject from now on.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Stops accepting, releases `--hang` requests, lets in-flight responses
    /// finish (up to a second) and waits for the server to end.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            // Ignored: the server already ended if nobody listens.
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        mock: MockArgs,
    }

    fn parse(args: &[&str]) -> Result<MockArgs, clap::Error> {
        let argv = ["mock", "--listen", "127.0.0.1:0"].iter().chain(args);
        Cli::try_parse_from(argv).map(|cli| cli.mock)
    }

    #[test]
    fn new_matches_the_command_line_defaults() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        assert_eq!(parse(&[]).ok(), Some(MockArgs::new(addr)));
    }

    #[test]
    fn flags_parse_durations_rates_and_statuses() {
        let args = parse(&[
            "--name",
            "canary",
            "--latency",
            "250ms",
            "--latency-max",
            "2s",
            "--error-rate",
            "0.5",
            "--status",
            "503",
            "--chunks",
            "3",
            "--chunk-delay",
            "10ms",
            "--abort-after",
            "2",
            "--fail-before-body",
            "--hang",
            "--outcome",
            "failure",
            "--mcp",
        ]);
        let Ok(args) = args else {
            panic!("valid flags rejected: {args:?}")
        };
        assert_eq!(args.name, "canary");
        assert_eq!(args.latency, Duration::from_millis(250));
        assert_eq!(args.latency_max, Some(Duration::from_secs(2)));
        assert_eq!(args.status, Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(args.outcome, Some(Outcome::Failure));
        assert_eq!(args.abort_after, Some(2));
        assert!(args.hang && args.fail_before_body && args.mcp);
    }

    #[test]
    fn bad_values_are_rejected() {
        for bad in [
            &["--error-rate", "1.5"][..],
            &["--status", "42"],
            &["--chunks", "0"],
            &["--latency", "soon"],
            &["--name", "bad\nname"],
            &["--outcome", "maybe"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn latency_stays_within_bounds() {
        let opts = MockArgs {
            latency: Duration::from_millis(10),
            latency_max: Some(Duration::from_millis(20)),
            ..MockArgs::new(SocketAddr::from(([127, 0, 0, 1], 0)))
        };
        for _ in 0..100 {
            let l = opts.pick_latency();
            assert!((Duration::from_millis(10)..=Duration::from_millis(20)).contains(&l));
        }
    }

    #[test]
    fn out_of_range_rates_built_in_code_do_not_panic() {
        let mut opts = MockArgs::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        opts.error_rate = 7.0;
        assert!(opts.roll_error());
        opts.error_rate = f64::NAN;
        assert!(!opts.roll_error());
    }
}
