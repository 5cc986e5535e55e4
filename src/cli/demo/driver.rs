//! `Driver`: simulated users sending chat requests through the proxy, a
//! bounded number at a time, and what they saw (`Observations`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::CONTENT_TYPE;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use indicatif::ProgressBar;

use crate::mock::NAME_HEADER;

/// The header the route's sticky key is read from (see `config/demo.toml`).
pub const USER_HEADER: &str = "x-user-id";
/// The response header naming the version that answered.
pub const VERSION_HEADER: &str = "x-cutover-version";

const CHAT_BODY: &str =
    r#"{"model":"support-agent","messages":[{"role":"user","content":"Where is my order?"}]}"#;

/// Sends requests for a set of users through the proxy.
pub struct Driver {
    client: Client<HttpConnector, Full<Bytes>>,
    url: String,
    concurrency: usize,
    timeout: Duration,
}

/// What one round of traffic saw.
#[derive(Clone, Debug, Default)]
pub struct Observations {
    pub requests: u64,
    /// Requests answered per version.
    pub by_version: BTreeMap<String, u64>,
    /// The versions each user was answered by.
    pub per_user: BTreeMap<String, BTreeSet<String>>,
    pub elapsed: Duration,
}

impl Observations {
    /// The version a user saw, if it saw exactly one.
    pub fn version_of(&self, user: &str) -> Option<&str> {
        let seen = self.per_user.get(user)?;
        if seen.len() == 1 {
            seen.iter().next().map(String::as_str)
        } else {
            None
        }
    }

    /// Users answered by more than one version, with what they saw.
    pub fn changed_users(&self) -> Vec<(&str, &BTreeSet<String>)> {
        self.per_user
            .iter()
            .filter(|(_, seen)| seen.len() > 1)
            .map(|(user, seen)| (user.as_str(), seen))
            .collect()
    }

    /// Users per version, counting only users that kept one version.
    pub fn users_by_version(&self) -> BTreeMap<&str, u64> {
        let mut counts = BTreeMap::new();
        for user in self.per_user.keys() {
            if let Some(v) = self.version_of(user) {
                *counts.entry(v).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Share of requests answered by `version`, in percent.
    pub fn share(&self, version: &str) -> f64 {
        let n = self.by_version.get(version).copied().unwrap_or(0);
        if self.requests == 0 {
            0.0
        } else {
            n as f64 * 100.0 / self.requests as f64
        }
    }
}

impl Driver {
    /// A client for the proxy's traffic listener at `proxy`.
    pub fn new(proxy: SocketAddr, concurrency: usize) -> Driver {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Driver {
            client,
            url: format!("http://{proxy}/v1/chat/completions"),
            concurrency: concurrency.max(1),
            timeout: Duration::from_secs(10),
        }
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// `per_user` requests for each user, round-robin (every user's first
    /// request, then every user's second, ...), `concurrency` at a time.
    /// Stops at the first failed request.
    pub async fn drive(
        &self,
        users: &[String],
        per_user: usize,
        progress: Option<&ProgressBar>,
    ) -> Result<Observations, String> {
        let started = Instant::now();
        let mut seen = Observations::default();
        let order = (0..per_user).flat_map(|_| users.iter());
        let mut responses = futures_util::stream::iter(order)
            .map(|user| async move { (user, self.one(user).await) })
            .buffer_unordered(self.concurrency);
        while let Some((user, result)) = responses.next().await {
            let version = match result {
                Ok(v) => v,
                Err(e) => {
                    if let Some(bar) = progress {
                        bar.abandon();
                    }
                    return Err(format!("a request for {user} failed: {e}"));
                }
            };
            seen.requests += 1;
            *seen.by_version.entry(version.clone()).or_insert(0) += 1;
            seen.per_user
                .entry(user.clone())
                .or_default()
                .insert(version);
            if let Some(bar) = progress {
                bar.inc(1);
            }
        }
        seen.elapsed = started.elapsed();
        Ok(seen)
    }

    /// One chat request as `user`; the version that answered.
    async fn one(&self, user: &str) -> Result<String, String> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_HEADER, user)
            .body(Full::new(Bytes::from_static(CHAT_BODY.as_bytes())))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("POST {}: {e}", self.url))?;
            let status = response.status();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let version = header(VERSION_HEADER);
            let backend = header(NAME_HEADER);
            // Read the whole body, so the connection goes back to the pool.
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the response body: {e}"))?
                .to_bytes();
            if status != StatusCode::OK {
                let text = String::from_utf8_lossy(&body);
                return Err(format!("status {status}: {}", text.trim()));
            }
            let version =
                version.ok_or_else(|| format!("the response has no {VERSION_HEADER} header"))?;
            // Each mock backend is named after its version: a mismatch means
            // the proxy sent the request to the wrong upstream.
            match backend {
                Some(b) if b == version => Ok(version),
                Some(b) => Err(format!(
                    "{VERSION_HEADER} says {version} but backend {b} answered"
                )),
                None => Err(format!("the response has no {NAME_HEADER} header")),
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no response within {:?}", self.timeout))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(pairs: &[(&str, &str)]) -> Observations {
        let mut o = Observations::default();
        for (user, version) in pairs {
            o.requests += 1;
            *o.by_version.entry((*version).to_owned()).or_insert(0) += 1;
            o.per_user
                .entry((*user).to_owned())
                .or_default()
                .insert((*version).to_owned());
        }
        o
    }

    #[test]
    fn a_user_with_one_version_is_counted_under_it() {
        let o = seen(&[("a", "v1"), ("a", "v1"), ("b", "v2")]);
        assert_eq!(o.version_of("a"), Some("v1"));
        assert_eq!(o.version_of("b"), Some("v2"));
        assert_eq!(o.version_of("nobody"), None);
        assert!(o.changed_users().is_empty());
        let users = o.users_by_version();
        assert_eq!(users.get("v1"), Some(&1));
        assert_eq!(users.get("v2"), Some(&1));
    }

    #[test]
    fn a_user_with_two_versions_is_reported_and_not_counted() {
        let o = seen(&[("a", "v1"), ("a", "v2"), ("b", "v1")]);
        assert_eq!(o.version_of("a"), None);
        let changed = o.changed_users();
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].0, "a");
        assert_eq!(o.users_by_version().get("v1"), Some(&1));
        assert_eq!(o.users_by_version().get("v2"), None);
    }

    #[test]
    fn shares_are_per_request() {
        let o = seen(&[("a", "v1"), ("a", "v1"), ("a", "v1"), ("b", "v2")]);
        assert!((o.share("v1") - 75.0).abs() < 1e-9);
        assert!((o.share("v2") - 25.0).abs() < 1e-9);
        assert_eq!(o.share("v3"), 0.0);
        assert_eq!(Observations::default().share("v1"), 0.0);
    }
}
