//! The rollout webhook: a JSON event POSTed on every transition.
//!
//! The controller must never wait on a receiver, so [`WebhookSender::send`]
//! is a `try_send` into a bounded queue: when the queue is full the event is
//! dropped and counted. One background task drains the queue and POSTs each
//! event with a per-attempt timeout and a few retries with exponential
//! backoff; events are delivered one at a time, in order, so a receiver
//! sees a route's transitions in the order they happened (unless one is
//! dropped).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Uri, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::rollout::controller::Transition;
use crate::upstream::tls_client_config;

/// The JSON body of one event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WebhookEvent {
    pub route: String,
    /// State names: shadowing, canary, paused, promoted, rolled_back.
    pub from: &'static str,
    pub to: &'static str,
    /// The new state's `cutover_rollout_step`.
    pub step: i64,
    pub reason: String,
    /// RFC 3339, UTC.
    pub time: String,
}

impl WebhookEvent {
    /// The event for a transition; `step` is the controller's
    /// `step_metric()` after it.
    pub fn new(route: &str, transition: &Transition, step: i64, time: SystemTime) -> WebhookEvent {
        WebhookEvent {
            route: route.to_string(),
            from: transition.from.name(),
            to: transition.to.name(),
            step,
            reason: transition.reason(),
            time: humantime::format_rfc3339_millis(time).to_string(),
        }
    }
}

/// Delivery settings.
#[derive(Clone, Copy, Debug)]
pub struct WebhookOptions {
    /// Events waiting for delivery; more are dropped and counted.
    pub queue: usize,
    /// Per attempt, connect to response headers.
    pub timeout: Duration,
    /// Attempts per event, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubled before each later one.
    pub backoff: Duration,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            queue: 256,
            timeout: Duration::from_secs(5),
            attempts: 4,
            backoff: Duration::from_millis(250),
        }
    }
}

/// Counters for `/status` and the logs.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Delivered with a 2xx.
    pub delivered: AtomicU64,
    /// Given up on after every attempt.
    pub failed: AtomicU64,
}

struct Job {
    url: Uri,
    body: Bytes,
}

/// The controller's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct WebhookSender {
    tx: mpsc::Sender<Job>,
    stats: Arc<WebhookStats>,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

impl WebhookSender {
    /// Spawns the delivery task on the current tokio runtime. It ends when
    /// every sender is dropped and the queue is drained.
    pub fn spawn(
        options: WebhookOptions,
    ) -> Result<(WebhookSender, tokio::task::JoinHandle<()>), String> {
        let client = client(options.timeout)?;
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let stats = Arc::new(WebhookStats::default());
        let task = tokio::spawn(deliver(rx, client, options, Arc::clone(&stats)));
        Ok((WebhookSender { tx, stats }, task))
    }

    /// Queues `event` for `url`. `false` when it was dropped (queue full,
    /// or the task has ended).
    pub fn send(&self, url: &Uri, event: &WebhookEvent) -> bool {
        let body = match serde_json::to_vec(event) {
            Ok(b) => Bytes::from(b),
            Err(_) => return false,
        };
        let job = Job {
            url: url.clone(),
            body,
        };
        if self.tx.try_send(job).is_ok() {
            true
        } else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    pub fn stats(&self) -> &WebhookStats {
        &self.stats
    }
}

fn client(timeout: Duration) -> Result<HttpsClient, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls_client_config()?).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .build(https))
}

async fn deliver(
    mut rx: mpsc::Receiver<Job>,
    client: HttpsClient,
    options: WebhookOptions,
    stats: Arc<WebhookStats>,
) {
    while let Some(job) = rx.recv().await {
        let mut backoff = options.backoff;
        let mut delivered = false;
        for attempt in 0..options.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
            match post(&client, &job, options.timeout).await {
                Ok(()) => {
                    delivered = true;
                    break;
                }
                Err(e) => {
                    tracing::debug!(url = %job.url, attempt, error = %e, "rollout webhook attempt failed")
                }
            }
        }
        if delivered {
            stats.delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(url = %job.url, "rollout webhook undelivered after {} attempts", options.attempts.max(1));
        }
    }
}

async fn post(client: &HttpsClient, job: &Job, timeout: Duration) -> Result<(), String> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(job.url.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "cutover-rollout")
        .body(Full::new(job.body.clone()))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("status {}", resp.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::controller::{Cause, State};
    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use std::time::Instant;
    use tokio::net::TcpListener;

    fn event(route: &str) -> WebhookEvent {
        let t = Transition {
            from: State::Canary { step: 0 },
            to: State::Canary { step: 1 },
            at: Instant::now(),
            cause: Cause::GatesPassed,
            stage_changed: true,
        };
        WebhookEvent::new(route, &t, 1, SystemTime::UNIX_EPOCH)
    }

    /// A receiver that answers 503 to the first `fail_first` posts, then
    /// 200, and forwards every body it accepted.
    async fn flaky_receiver(fail_first: usize) -> (Uri, mpsc::UnboundedReceiver<Bytes>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::unbounded_channel();
        let seen = Arc::new(AtomicU64::new(0));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        let seen = Arc::clone(&seen);
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let n = seen.fetch_add(1, Ordering::SeqCst) as usize;
                            let status = if n < fail_first {
                                503
                            } else {
                                let _ = tx.send(body);
                                200
                            };
                            http::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::new()))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let uri: Uri = format!("http://{addr}/hooks/rollout").parse().expect("uri");
        (uri, rx)
    }

    #[tokio::test]
    async fn delivers_with_retries() {
        let (uri, mut rx) = flaky_receiver(2).await;
        let opts = WebhookOptions {
            backoff: Duration::from_millis(10),
            ..WebhookOptions::default()
        };
        let (sender, _task) = WebhookSender::spawn(opts).expect("spawn");
        assert!(sender.send(&uri, &event("chat")));
        let body = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        let body = body.expect("delivered in time").expect("a body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v["route"], "chat");
        assert_eq!(v["from"], "canary");
        assert_eq!(v["to"], "canary");
        assert_eq!(v["step"], 1);
        assert_eq!(v["reason"], "gates passed");
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
        // Delivery is counted after the response.
        for _ in 0..100 {
            if sender.stats().delivered.load(Ordering::Relaxed) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(sender.stats().delivered.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_blocking() {
        // A receiver that never answers: the task is stuck on the first event.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let uri: Uri = format!("http://{addr}/").parse().expect("uri");
        let opts = WebhookOptions {
            queue: 2,
            timeout: Duration::from_secs(30),
            ..WebhookOptions::default()
        };
        let (sender, _task) = WebhookSender::spawn(opts).expect("spawn");
        let started = Instant::now();
        let sent = (0..10)
            .filter(|_| sender.send(&uri, &event("chat")))
            .count();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(sent <= 3, "sent {sent}");
        assert_eq!(
            sender.stats().dropped.load(Ordering::Relaxed),
            10 - sent as u64
        );
    }
}
