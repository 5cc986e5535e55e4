//! `Driver`: simulated users sending chat requests through the proxy, a
//! bounded number at a time, and what each got back.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::CONTENT_TYPE;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::mock::NAME_HEADER;

/// The header the routes' sticky key is read from (see `config/demo.toml`).
pub const USER_HEADER: &str = "x-user-id";

/// How often a running round hands control back for a redraw.
const TICK: Duration = Duration::from_millis(150);

/// One request to send.
#[derive(Clone, Debug)]
pub struct Ask {
    pub path: &'static str,
    pub user: Option<String>,
    pub body: Bytes,
    /// The user's pause before sending (so instant answers, such as
    /// refusals, do not turn a round into a flood).
    pub think: Duration,
}

impl Ask {
    pub fn new(path: &'static str, user: Option<String>, body: String) -> Ask {
        Ask {
            path,
            user,
            body: Bytes::from(body),
            think: Duration::ZERO,
        }
    }

    pub fn thinking(self, think: Duration) -> Ask {
        Ask { think, ..self }
    }
}

/// What came back.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// `x-cutover-version`: the version chosen.
    pub version: Option<String>,
    /// `x-cutover-upstream`: who produced the answer, or `refusal`.
    pub upstream: Option<String>,
    /// `x-mock-name`: the mock backend that really answered.
    pub backend: Option<String>,
    /// `x-cutover-cache`.
    pub cache: Option<String>,
    pub body: Bytes,
    pub latency: Duration,
}

impl Answer {
    /// The answer's text, for showing a refusal.
    pub fn message(&self) -> Option<String> {
        let doc: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        doc.pointer("/choices/0/message/content")
            .or_else(|| doc.pointer("/error/message"))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    }
}

/// Sent to a round's observer.
pub enum Event<'a> {
    /// A request finished: its answer, or why it got none.
    Answer(&'a Ask, Result<Answer, String>),
    /// Time passed (every [`TICK`]): redraw, look at the proxy, maybe stop.
    Tick,
}

/// What the observer wants after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// How a round ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Every request was answered.
    Done,
    /// The observer said stop.
    Stopped,
    /// The time limit passed first.
    TimedOut,
}

/// Sends requests through the proxy.
pub struct Driver {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    timeout: Duration,
}

impl Driver {
    /// A client for the proxy's traffic listener at `proxy`.
    pub fn new(proxy: std::net::SocketAddr) -> Driver {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Driver {
            client,
            base: format!("http://{proxy}"),
            timeout: Duration::from_secs(10),
        }
    }

    /// Sends `asks`, `concurrency` at a time, until they run out, the
    /// observer says stop, or `limit` passes. The observer sees every answer
    /// and a tick every 150 ms; its error ends the round with that error.
    pub async fn round(
        &self,
        asks: impl Iterator<Item = Ask>,
        concurrency: usize,
        limit: Duration,
        mut observe: impl FnMut(Event<'_>) -> Result<Flow, String>,
    ) -> Result<Ended, String> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut answers = futures_util::stream::iter(asks)
            .map(|ask| async move {
                if !ask.think.is_zero() {
                    tokio::time::sleep(ask.think).await;
                }
                let answer = self.send(&ask).await;
                (ask, answer)
            })
            .buffer_unordered(concurrency.max(1));
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let flow = tokio::select! {
                next = answers.next() => match next {
                    Some((ask, answer)) => observe(Event::Answer(&ask, answer))?,
                    None => {
                        observe(Event::Tick)?;
                        return Ok(Ended::Done);
                    }
                },
                _ = tick.tick() => observe(Event::Tick)?,
                () = tokio::time::sleep_until(deadline) => return Ok(Ended::TimedOut),
            };
            if flow == Flow::Stop {
                return Ok(Ended::Stopped);
            }
        }
    }

    /// One request; `Err` when no response came (a transport error or the
    /// driver's own timeout).
    pub async fn send(&self, ask: &Ask) -> Result<Answer, String> {
        let url = format!("{}{}", self.base, ask.path);
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .header(CONTENT_TYPE, "application/json");
        if let Some(user) = &ask.user {
            request = request.header(USER_HEADER, user);
        }
        let request = request
            .body(Full::new(ask.body.clone()))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let started = Instant::now();
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("POST {url}: {e}"))?;
            let status = response.status();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let version = header("x-cutover-version");
            let upstream = header("x-cutover-upstream");
            let backend = header(NAME_HEADER);
            let cache = header("x-cutover-cache");
            // Read the whole body, so the connection goes back to the pool.
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the response body: {e}"))?
                .to_bytes();
            Ok(Answer {
                status,
                version,
                upstream,
                backend,
                cache,
                body,
                latency: started.elapsed(),
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no response within {:?}", self.timeout))?
    }
}

/// Latencies of a set of answers.
#[derive(Clone, Debug, Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn add(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// Nearest-rank percentile `p` (0..=100); `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        if self.0.is_empty() {
            return None;
        }
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
    }
}

/// `12.3 ms`, or `-` when there is nothing to show.
pub fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.1}ms", d.as_secs_f64() * 1000.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut l = Latencies::default();
        assert_eq!(l.percentile(50.0), None);
        for n in 1..=10 {
            l.add(Duration::from_millis(n));
        }
        assert_eq!(l.percentile(50.0), Some(Duration::from_millis(5)));
        assert_eq!(l.percentile(95.0), Some(Duration::from_millis(10)));
        assert_eq!(l.percentile(0.0), Some(Duration::from_millis(1)));
    }

    #[test]
    fn refusal_text_is_read_from_chat_or_error_bodies() {
        let answer = |body: &str| Answer {
            status: StatusCode::OK,
            version: None,
            upstream: None,
            backend: None,
            cache: None,
            body: Bytes::from(body.to_owned()),
            latency: Duration::ZERO,
        };
        let chat = answer(r#"{"choices":[{"message":{"content":"Sorry"}}]}"#);
        assert_eq!(chat.message().as_deref(), Some("Sorry"));
        let error = answer(r#"{"error":{"message":"Later"}}"#);
        assert_eq!(error.message().as_deref(), Some("Later"));
        assert_eq!(answer("not json").message(), None);
    }
}
