//! The `GET /status` document: what the running proxy is doing, built from
//! one `Runtime` snapshot so that routes, weights and the generation never
//! come from two different configs.
//!
//! The shape is a contract (`cutover status` and operators' scripts read
//! it); fields are added, never renamed or removed:
//!
//! ```json
//! {
//!   "generation": 2,
//!   "loaded_at": "2025-01-01T12:00:00.000Z",
//!   "last_reload_error": null,
//!   "restart_required": [],
//!   "draining": false,
//!   "in_flight": 0,
//!   "routes": [{
//!     "name": "chat",
//!     "match": {"path_prefix": "/v1/", "methods": ["POST"], "host": null, "headers": {}},
//!     "sticky": ["header:x-user-id"],
//!     "pin_header": "x-cutover-version",
//!     "session_header": null,
//!     "versions": [{
//!       "name": "v1", "upstream": "a",
//!       "weight": 90.0, "effective_weight": 90.0,
//!       "deps": {"model": "gpt-4o"}
//!     }],
//!     "shadows": [{"name": "v3", "upstream": "c", "percent": 10.0,
//!                  "max_in_flight": 64, "timeout_ms": 5000,
//!                  "in_flight": 3, "ok": 120, "failure": 2, "dropped": 0,
//!                  "failure_share": 0.016, "compare_match": 110,
//!                  "compare_mismatch": 10, "match_share": 0.917}],
//!     "fallbacks": ["v1"],
//!     "cache": {"ttl_ms": 60000, "vary": ["authorization"], "deterministic_only": true}
//!   }],
//!   "upstreams": [{"name": "a", "url": "http://10.0.0.1:8000", "in_flight": 0,
//!                  "breaker": {"state": "closed", "consecutive_failures": 0,
//!                              "window_requests": 12, "window_failures": 1,
//!                              "half_open_in_ms": null, "max_in_flight": 512}}],
//!   "cache": {"entries": 10, "bytes": 52000, "max_size": 268435456,
//!             "max_entry_size": 4194304, "hits": 90, "misses": 10,
//!             "bypasses": 3, "hit_ratio": 0.9}
//! }
//! ```
//!
//! - `loaded_at` and `last_reload_error.at` are RFC 3339 with milliseconds, UTC.
//! - `last_reload_error` is `null` or `{"at": ..., "error": "..."}`; the next
//!   successful reload clears it.
//! - `weight` is the configured percent; `effective_weight` is the percent
//!   the bucket table uses now (equal today; a rollout will move it).
//! - `in_flight` at the top level counts requests on the traffic listener;
//!   per upstream, attempts in flight to that upstream.
//! - `cache` is `null` when the route does not cache.
//! - `breaker.state` is `closed`, `half-open` or `open`; `half_open_in_ms`
//!   is set only while open (when it will let probes through); the window
//!   counts are over the breaker's sliding `window`.
//! - The route salt is left out: it is a hashing detail, and knowing it
//!   lets anyone pick keys that land on a chosen version.
//! - With `[cluster]` only, `cluster` describes the fleet (see
//!   `cluster::status`), and each rollout's figures are the fleet's sums,
//!   with this replica's own under `rollout.replica` and its link with the
//!   fleet's document under `rollout.fleet`. Without `[cluster]` these keys
//!   are absent, so a single process's document is unchanged.
//!
//! The same structs deserialize on the `cutover status` side; missing
//! fields default, so an older or newer proxy still renders.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::cache::CacheStatus;
use crate::config::{FallbackConfig, RouteConfig, StickySource};
use crate::gateway::Gateway;
use crate::runtime::{Route, Runtime};
use crate::shadow::ShadowStatus;

/// A shadow with no `max_in_flight` in its config runs with this many
/// concurrent mirrored requests at most (see `ShadowConfig::max_in_flight`).
pub const DEFAULT_SHADOW_MAX_IN_FLIGHT: usize = crate::shadow::DEFAULT_MAX_IN_FLIGHT;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    pub generation: u64,
    pub loaded_at: String,
    pub last_reload_error: Option<ReloadErrorView>,
    pub restart_required: Vec<String>,
    pub draining: bool,
    pub in_flight: usize,
    pub routes: Vec<RouteView>,
    pub upstreams: Vec<UpstreamView>,
    /// The shared response cache.
    pub cache: CacheStatus,
    /// With `[cluster]` only (absent otherwise): see `cluster::status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::status::ClusterStatus>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReloadErrorView {
    pub at: String,
    pub error: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteView {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: MatchView,
    pub sticky: Vec<String>,
    pub pin_header: Option<String>,
    pub versions: Vec<VersionView>,
    pub shadows: Vec<ShadowView>,
    pub fallbacks: Vec<String>,
    pub cache: Option<CacheView>,
    /// `null` without a rollout; else state, step, weights, the step's
    /// per-version stats and the gates' last verdicts (see
    /// `rollout::route::RolloutStatus`).
    pub rollout: Option<serde_json::Value>,
    /// The header whose sessions stay on their version (`null`: none).
    pub session_header: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MatchView {
    pub path_prefix: String,
    /// Empty: any method.
    pub methods: Vec<String>,
    pub host: Option<String>,
    /// Header name → the exact value it must have.
    pub headers: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VersionView {
    pub name: String,
    pub upstream: String,
    /// Configured percent.
    pub weight: f64,
    /// Percent in force.
    pub effective_weight: f64,
    pub deps: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ShadowView {
    pub name: String,
    pub upstream: String,
    pub percent: f64,
    pub max_in_flight: usize,
    pub timeout_ms: u64,
    /// Totals since start (they survive reloads), flattened into the
    /// shadow's object.
    #[serde(flatten)]
    pub live: ShadowStatus,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheView {
    pub ttl_ms: u64,
    pub vary: Vec<String>,
    pub deterministic_only: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UpstreamView {
    pub name: String,
    pub url: String,
    pub in_flight: usize,
    pub breaker: BreakerView,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BreakerView {
    pub state: String,
    pub consecutive_failures: u32,
    pub window_requests: u64,
    pub window_failures: u64,
    pub half_open_in_ms: Option<u64>,
    pub max_in_flight: usize,
}

/// Build the document. Reads one snapshot and a few atomics; the only lock
/// is the control-plane `reload_state` mutex, never taken by requests.
pub fn build(gateway: &Gateway) -> Status {
    let rt = gateway.data_plane.runtime();
    let reload = gateway.reload_state();
    Status {
        generation: rt.generation,
        loaded_at: rfc3339(rt.loaded_at),
        last_reload_error: reload.last_error.map(|e| ReloadErrorView {
            at: rfc3339(e.at),
            error: e.error,
        }),
        restart_required: reload.restart_required,
        draining: gateway.is_draining(),
        in_flight: gateway.data_plane.in_flight.load(Ordering::Relaxed),
        routes: rt
            .config
            .routes
            .iter()
            .map(|r| {
                let mut view = route_view(&rt, r);
                view.rollout = gateway
                    .rollouts
                    .status(&r.name)
                    .and_then(|s| serde_json::to_value(s).ok());
                view
            })
            .collect(),
        upstreams: rt
            .upstreams
            .iter()
            .map(|u| {
                let b = u.state.breaker.status();
                UpstreamView {
                    name: u.name.to_string(),
                    url: u.config.url.raw.clone(),
                    in_flight: b.in_flight,
                    breaker: BreakerView {
                        state: b.state.as_str().to_string(),
                        consecutive_failures: b.consecutive_failures,
                        window_requests: b.window_requests,
                        window_failures: b.window_failures,
                        half_open_in_ms: b.half_open_in.map(|d| d.as_millis() as u64),
                        max_in_flight: b.max_in_flight,
                    },
                }
            })
            .collect(),
        cache: gateway.data_plane.cache.status(),
        cluster: gateway.cluster.as_ref().map(|c| {
            c.status(
                gateway.data_plane.feedback.forward_dropped(),
                gateway
                    .shared_cache
                    .as_ref()
                    .filter(|_| rt.config.cache.shared)
                    .map(|s| s.status()),
            )
        }),
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn route_view(rt: &Runtime, r: &RouteConfig) -> RouteView {
    // Runtime routes are compiled from `config.routes` in order; look them
    // up by name anyway so a future reordering cannot mix two routes up.
    let compiled: Option<&Route> = rt.routes.iter().find(|c| *c.name == *r.name);
    RouteView {
        name: r.name.clone(),
        matcher: MatchView {
            path_prefix: r.matcher.path_prefix.clone(),
            methods: r.matcher.methods.iter().map(|m| m.to_string()).collect(),
            host: r.matcher.host.clone(),
            headers: r
                .matcher
                .headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.clone().into()))
                .collect(),
        },
        sticky: r.sticky.iter().map(sticky).collect(),
        pin_header: r.pin_header.as_ref().map(|h| h.to_string()),
        versions: r
            .versions
            .iter()
            .map(|v| {
                let effective = compiled
                    .and_then(|c| {
                        c.versions
                            .iter()
                            .find(|cv| *cv.target.name == *v.target.name)
                    })
                    .map_or(v.weight, |cv| cv.weight);
                VersionView {
                    name: v.target.name.clone(),
                    upstream: v.target.upstream.clone(),
                    weight: v.weight.percent(),
                    effective_weight: effective.percent(),
                    deps: v.target.deps.clone(),
                }
            })
            .collect(),
        shadows: r
            .shadows
            .iter()
            .map(|s| {
                let live = compiled
                    .and_then(|c| {
                        c.shadows
                            .iter()
                            .find(|cs| *cs.target.name == *s.target.name)
                    })
                    .map(|cs| cs.state.status());
                ShadowView {
                    name: s.target.name.clone(),
                    upstream: s.target.upstream.clone(),
                    percent: s.percent.percent(),
                    max_in_flight: s.max_in_flight.unwrap_or(DEFAULT_SHADOW_MAX_IN_FLIGHT),
                    timeout_ms: millis(s.timeout),
                    live: live.unwrap_or_default(),
                }
            })
            .collect(),
        fallbacks: r
            .fallbacks
            .iter()
            .map(|f| FallbackConfig::name(f).to_string())
            .collect(),
        cache: r.cache.as_ref().map(|c| CacheView {
            ttl_ms: millis(c.ttl),
            vary: c.vary.iter().map(|h| h.to_string()).collect(),
            deterministic_only: c.deterministic_only,
        }),
        rollout: None,
        session_header: r.session_header.as_ref().map(|h| h.to_string()),
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The config syntax of a sticky source (`header:x-user-id`).
pub fn sticky(s: &StickySource) -> String {
    match s {
        StickySource::Header(h) => format!("header:{h}"),
        StickySource::Cookie(c) => format!("cookie:{c}"),
        StickySource::Query(q) => format!("query:{q}"),
        StickySource::ClientIp => "client_ip".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shadow's traffic counters stand flat in its object (the contract),
    /// though the view holds them as `shadow::ShadowStatus`; the document
    /// reads back, and a shorter one fills in the defaults.
    #[test]
    fn a_shadow_view_is_one_flat_object_that_reads_back() {
        let view = ShadowView {
            name: "v3".into(),
            upstream: "c".into(),
            percent: 10.0,
            max_in_flight: 64,
            timeout_ms: 5_000,
            live: ShadowStatus {
                in_flight: 3,
                ok: 120,
                failure: 2,
                dropped: 1,
                failure_share: Some(0.25),
                compare_match: 110,
                compare_mismatch: 10,
                match_share: Some(0.5),
            },
        };
        let json = serde_json::to_value(&view).unwrap_or_default();
        assert_eq!(json["ok"], 120, "{json}");
        assert_eq!(json["compare_mismatch"], 10, "{json}");
        assert_eq!(json["failure_share"], 0.25, "{json}");
        assert_eq!(json["timeout_ms"], 5_000, "{json}");
        assert!(json.get("live").is_none(), "{json}");
        let back: ShadowView = serde_json::from_value(json).unwrap_or_default();
        assert_eq!((back.name.as_str(), back.live), ("v3", view.live));

        let short: ShadowView =
            serde_json::from_str(r#"{"name": "v3", "ok": 7}"#).unwrap_or_default();
        assert_eq!((short.name.as_str(), short.live.ok), ("v3", 7));
        assert_eq!(short.live.match_share, None);
    }
}
