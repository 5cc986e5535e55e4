//! What a request can be sent to, as one generation compiled it: an
//! [`Upstream`] (where) and a [`Target`] on it (a version, a fallback or a
//! shadow: what to change on the way). A leaf of the runtime, so that the
//! shadows it builds can hold their targets without importing it back.

use std::sync::Arc;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue};

use crate::cache::KeyPrefix;
use crate::config::{self, UpstreamConfig};
use crate::telemetry::{AttemptResult, UpstreamMetrics};
use crate::upstream::{Permit, UpstreamState};

/// One upstream as this generation sees it: its settings plus the shared,
/// long-lived state from the registry.
pub struct Upstream {
    pub name: Arc<str>,
    /// `x-cutover-upstream` value.
    pub name_header: HeaderValue,
    pub config: UpstreamConfig,
    pub state: Arc<UpstreamState>,
    pub scheme: Scheme,
    pub authority: Authority,
    /// Sent as `Host`: the upstream's own authority, as nginx does by default.
    pub host_header: HeaderValue,
    /// `None` when the URL has no path prefix (the request path is reused
    /// without copying).
    pub path_prefix: Option<Arc<str>>,
    pub metrics: UpstreamMetrics,
}

impl Upstream {
    /// Whether a `retry_reused` retry may have to rebuild its request from
    /// the prepared head: only an h2 client consumes a request it began to
    /// send (HTTP/1 hands every failed one back), so only then is a copy
    /// of the head worth keeping.
    pub fn retry_rebuilds(&self) -> bool {
        self.config.retry_reused && self.state.pool.may_use_h2()
    }

    /// Admit one attempt through the breaker, or count it `Rejected` and
    /// say no (open, probes taken, `max_in_flight`): a refusal never
    /// touches the upstream and is not reported back to the breaker.
    pub fn admit(&self) -> Option<Permit> {
        let permit = self.state.breaker.try_acquire().ok();
        if permit.is_none() {
            self.metrics.attempt(AttemptResult::Rejected);
        }
        permit
    }

    /// The origin-form URI (path and query) for a request path, with the
    /// prefix prepended: what an HTTP/1 request line carries (the pool adds
    /// the scheme and authority for h2).
    pub fn origin_uri(
        &self,
        path_and_query: Option<&PathAndQuery>,
    ) -> Result<http::Uri, http::Error> {
        let pq = match (&self.path_prefix, path_and_query) {
            (None, Some(pq)) => pq.clone(),
            (None, None) => PathAndQuery::from_static("/"),
            (Some(prefix), pq) => {
                let rest = pq.map_or("/", |p| p.as_str());
                let mut joined = String::with_capacity(prefix.len() + rest.len());
                joined.push_str(prefix);
                joined.push_str(rest);
                PathAndQuery::try_from(joined)?
            }
        };
        Ok(http::Uri::from(pq))
    }
}

/// Something a request can be sent to: a version, a fallback or a shadow.
pub struct Target {
    pub name: Arc<str>,
    /// `x-cutover-version` value.
    pub name_header: HeaderValue,
    pub upstream: Arc<Upstream>,
    pub set_headers: Box<[(HeaderName, HeaderValue)]>,
    /// `None` when empty: the body is forwarded untouched.
    pub set_json: Option<serde_json::Map<String, serde_json::Value>>,
    pub cost: config::Cost,
    /// The deps table as JSON, for the access log.
    pub deps_json: Box<str>,
    /// The deps table itself, for trace attributes.
    pub deps: serde_json::Map<String, serde_json::Value>,
    /// The route, this target's name, deps and `set_json`, encoded once
    /// for the cache keys of its requests.
    pub cache_key: KeyPrefix,
}

impl Target {
    /// Does a request to this target carry headers of the target's own
    /// (`set_headers`, `remove_headers`) beyond `Host` and
    /// `x-cutover-version`? A head built for it cannot then be re-pointed
    /// to another target.
    pub fn rewrites_headers(&self) -> bool {
        let upstream = &self.upstream.config;
        !(self.set_headers.is_empty()
            && upstream.set_headers.is_empty()
            && upstream.remove_headers.is_empty())
    }
}
