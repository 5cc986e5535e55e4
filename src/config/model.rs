//! The validated configuration: what `config::load` produces from a file.
//!
//! Everything here has already been checked. Durations are `Duration`, sizes
//! are bytes, weights are basis points, header names and values are parsed,
//! environment variables are substituted, and every name a route refers to
//! exists. Nothing downstream validates these values again; `Runtime`
//! compiles them into the hot-path tables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};

/// A share of traffic in basis points: 0..=10_000 (100.00 %).
///
/// Percent weights with at most two decimals map onto this exactly, so
/// weights are `Eq`, sum without rounding, and bucket ranges are integers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WeightBps(u16);

impl WeightBps {
    pub const ZERO: WeightBps = WeightBps(0);
    pub const FULL: WeightBps = WeightBps(10_000);

    /// `None` above 10 000.
    pub const fn new(bps: u16) -> Option<WeightBps> {
        if bps <= 10_000 {
            Some(WeightBps(bps))
        } else {
            None
        }
    }

    /// From a percent with at most two decimals (`5.0`, `12.25`).
    /// `None` when negative, above 100, not finite, or finer than 0.01.
    pub fn from_percent(percent: f64) -> Option<WeightBps> {
        if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
            return None;
        }
        let scaled = percent * 100.0;
        let rounded = scaled.round();
        // 1e-6 absorbs binary representation error (0.07 * 100 = 7.000000000000001).
        if (scaled - rounded).abs() > 1e-6 {
            return None;
        }
        WeightBps::new(rounded as u16)
    }

    pub const fn get(self) -> u16 {
        self.0
    }

    pub fn percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl std::fmt::Display for WeightBps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// The whole validated file.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file this was loaded from (used in messages and for reloads).
    pub source: PathBuf,
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub tracing: Option<TracingConfig>,
    pub cache: CacheConfig,
    pub state: StateConfig,
    /// `[cluster]`: replicas share one rollout through Redis (SPEC §12).
    /// `None`: this process decides alone, with `state.dir`.
    pub cluster: Option<ClusterConfig>,
    pub upstreams: Vec<UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
}

impl Config {
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    pub fn route(&self, name: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| r.name == name)
    }
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Tokio worker threads; 0 = one per core. `CUTOVER_WORKERS` overrides
    /// this at start (applied by `serve`, not by the loader).
    pub workers: usize,
    /// Request bodies above this many bytes get 413.
    pub max_body: u64,
    pub max_in_flight: usize,
    pub shutdown_grace: Duration,
    pub trust_forwarded_for: bool,
    /// `None` when configured as `""` (disabled). Default `/_cutover/feedback`.
    pub feedback_path: Option<String>,
    /// The environment variable the feedback bearer token was read from.
    pub feedback_token_env: Option<String>,
    /// `Some` exactly when `feedback_token_env` is set (a missing or empty
    /// variable is a config error): feedback then needs
    /// `Authorization: Bearer <token>`.
    pub feedback_token: Option<String>,
    /// All request bodies held in memory at once, in bytes; a request that
    /// would pass it is shed (SPEC §2).
    pub max_buffered: u64,
    pub tls: Option<TlsConfig>,
    /// Longest time a client may take to send a request head (not in the
    /// spec; default 10 s). Slow-loris protection.
    pub request_header_timeout: Duration,
}

/// A TLS listener's certificate chain and key, read at load time so that an
/// unreadable file is a config error, not a runtime failure.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// PEM bytes of the certificate chain (at least one certificate).
    pub cert_pem: Vec<u8>,
    /// PEM bytes of the private key (exactly one key).
    pub key_pem: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The environment variable the bearer token was read from.
    pub token_env: Option<String>,
    /// The token itself; `Some` exactly when `token_env` is set (a missing
    /// or empty variable is a config error).
    pub token: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive, validated at load time.
    pub level: String,
    pub access_log: bool,
}

#[derive(Clone, Debug)]
pub struct TracingConfig {
    /// `http://` or `https://` URL of an OTLP/gRPC collector.
    pub otlp_endpoint: Option<String>,
    /// 0.0..=1.0, default 1.0.
    pub sample_ratio: f64,
    /// `otlp_ca_file`: CA certificates (PEM) trusted for an `https://`
    /// endpoint besides the system roots, read at load time.
    pub otlp_ca_file: Option<PathBuf>,
    pub otlp_ca_pem: Option<Vec<u8>>,
}

#[derive(Clone, Debug)]
pub struct CacheConfig {
    pub max_size: u64,
    pub max_entry_size: u64,
    /// With `[cluster]` (validation refuses it without): Redis is a second
    /// tier behind the local store.
    pub shared: bool,
    /// How long an identical miss waits for the first one's first byte
    /// before it goes upstream on its own (SPEC §6).
    pub lock_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct StateConfig {
    pub dir: PathBuf,
}

/// `[cluster]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    pub redis: RedisUrl,
    /// Replicas with the same name and Redis form one fleet; every key is
    /// prefixed with it. `[A-Za-z0-9._-]`, at most 64 bytes.
    pub name: String,
    /// Unique per replica; default the host name and the process id.
    pub replica: String,
    /// The leader's lease: another replica takes over within this of the
    /// old leader's last renewal. At least twice `sync_interval`.
    pub lease: Duration,
    /// How often counts are pushed and the fleet's state is read.
    pub sync_interval: Duration,
}

/// A `redis://` or `rediss://` URL. It may carry a password (through
/// `${ENV}`), so it never prints: `Debug` and [`RedisUrl::redacted`] show
/// `***` in its place, and only the Redis client sees [`RedisUrl::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    url: String,
    redacted: String,
}

impl RedisUrl {
    /// `None` unless `url` starts with `redis://` or `rediss://` (the
    /// caller checks the rest with the Redis client's own parser).
    pub fn new(url: &str) -> Option<RedisUrl> {
        let rest = url
            .strip_prefix("redis://")
            .or_else(|| url.strip_prefix("rediss://"))?;
        let scheme_len = url.len() - rest.len();
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let redacted = match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                format!(
                    "{}{user}:***{}",
                    &url[..scheme_len],
                    &url[scheme_len + at..]
                )
            }
            None => url.to_string(),
        };
        Some(RedisUrl {
            url: url.to_string(),
            redacted,
        })
    }

    /// The URL with its password: for the Redis client only.
    pub fn expose(&self) -> &str {
        &self.url
    }

    /// The URL with `***` for the password: for logs, errors and `/status`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// `rediss://`: TLS (rustls).
    pub fn tls(&self) -> bool {
        self.url.starts_with("rediss://")
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

/// An upstream URL, split once at load time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamUrl {
    /// The URL as written (after `${ENV}` substitution). Two upstreams with
    /// the same `raw` share connection pools and breakers across reloads.
    pub raw: String,
    pub scheme: Scheme,
    /// `host:port` as written (port omitted when it was omitted).
    pub authority: http::uri::Authority,
    pub host: String,
    /// Explicit or the scheme's default.
    pub port: u16,
    /// Prepended to every request path. Empty, or starts with `/` and has no
    /// trailing `/` (so `/api` + `/v1/chat` = `/api/v1/chat`).
    pub path_prefix: String,
}

#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    pub name: String,
    pub url: UpstreamUrl,
    pub connect_timeout: Duration,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// Idle keep-alive connections are closed after this (below the
    /// upstream's own keep-alive timeout, so it never closes one under us).
    pub pool_idle_timeout: Duration,
    /// Send once more on a new connection when a reused one fails before
    /// any response byte (SPEC §5).
    pub retry_reused: bool,
    pub max_in_flight: usize,
    /// Response statuses that count as a failed attempt.
    pub failure_statuses: Vec<StatusCode>,
    /// Values may hold credentials: they are marked sensitive.
    pub set_headers: Vec<(HeaderName, HeaderValue)>,
    pub remove_headers: Vec<HeaderName>,
    pub breaker: BreakerConfig,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    pub consecutive_failures: u32,
    /// 0.0 < rate <= 1.0
    pub failure_rate: f64,
    pub min_requests: u32,
    pub window: Duration,
    pub open_for: Duration,
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(30),
            open_for: Duration::from_secs(30),
            half_open_probes: 1,
        }
    }
}

/// Where a sticky key comes from, tried in the route's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StickySource {
    Header(HeaderName),
    Cookie(String),
    Query(String),
    ClientIp,
}

#[derive(Clone, Debug, Default)]
pub struct RouteMatch {
    /// Default `/` (everything).
    pub path_prefix: String,
    /// Empty = any method.
    pub methods: Vec<Method>,
    /// Exact, case-insensitive match on the request's host (port ignored).
    pub host: Option<String>,
    /// Exact value match on each named header.
    pub headers: Vec<(HeaderName, String)>,
}

/// USD per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl Cost {
    /// USD for this many tokens.
    pub fn usd(&self, input: u64, output: u64) -> f64 {
        (input as f64 * self.input_per_mtok + output as f64 * self.output_per_mtok) / 1_000_000.0
    }
}

/// A version set's dependencies, free-form (`prompt`, `tools`, `model`,
/// `index`, `params`, ...). Keys are sorted (BTreeMap-backed), which makes
/// the table's JSON encoding canonical.
pub type Deps = serde_json::Map<String, serde_json::Value>;

/// The transforms and accounting shared by versions, shadows and fallbacks:
/// something a request can be sent to.
#[derive(Clone, Debug)]
pub struct TargetConfig {
    pub name: String,
    /// Name of an `[[upstreams]]` entry (checked to exist).
    pub upstream: String,
    pub set_headers: Vec<(HeaderName, HeaderValue)>,
    /// Top-level JSON body fields to set.
    pub set_json: serde_json::Map<String, serde_json::Value>,
    pub cost: Cost,
    pub deps: Deps,
}

#[derive(Clone, Debug)]
pub struct VersionConfig {
    pub target: TargetConfig,
    pub weight: WeightBps,
}

#[derive(Clone, Debug)]
pub struct ShadowConfig {
    pub target: TargetConfig,
    pub percent: WeightBps,
    /// `None` when not configured (a lint); the runtime then uses 64.
    pub max_in_flight: Option<usize>,
    pub timeout: Duration,
    /// JSON pointers (each empty or starting with `/`).
    pub compare: Vec<String>,
}

/// One entry of a route's fallback chain, in try order.
#[derive(Clone, Debug)]
pub enum FallbackConfig {
    /// `fallbacks = ["v1"]`: another version of the same route, with its
    /// upstream and transforms.
    Version(String),
    /// `[[routes.fallbacks]]` (or an inline table in the array): a target of
    /// its own.
    Target(TargetConfig),
}

impl FallbackConfig {
    pub fn name(&self) -> &str {
        match self {
            FallbackConfig::Version(name) => name,
            FallbackConfig::Target(t) => &t.name,
        }
    }
}

#[derive(Clone, Debug)]
pub struct RouteCacheConfig {
    pub ttl: Duration,
    /// Default `["authorization"]`.
    pub vary: Vec<HeaderName>,
    pub deterministic_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefusalFormat {
    OpenAiError,
    OpenAiChat,
    /// An OpenAI Responses API `response` (its event stream when asked).
    OpenAiResponses,
    /// An Anthropic Messages `message` (its event stream when asked).
    AnthropicMessages,
    /// By the request path: `…/responses`, `…/messages`,
    /// `…/chat/completions`, else `openai-error`.
    Auto,
    Raw {
        body: String,
        content_type: String,
    },
}

#[derive(Clone, Debug)]
pub struct RefusalConfig {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub format: RefusalFormat,
    pub message: String,
}

impl Default for RefusalConfig {
    fn default() -> Self {
        RefusalConfig {
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: Some(Duration::from_secs(30)),
            format: RefusalFormat::OpenAiError,
            message: "The assistant is temporarily unavailable. Please try again shortly."
                .to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ShadowFirstConfig {
    pub min_duration: Duration,
    pub min_requests: u64,
}

/// Gates that must all pass for a step to advance. `None` = not checked.
#[derive(Clone, Debug)]
pub struct GatesConfig {
    pub error_rate_margin: Option<f64>,
    pub max_error_rate: Option<f64>,
    pub latency_p95_ratio: Option<f64>,
    pub max_latency_p95: Option<Duration>,
    pub max_cost_per_request: Option<f64>,
    pub outcome_margin: Option<f64>,
    /// 0.5 < confidence < 1, default 0.95.
    pub confidence: f64,
}

#[derive(Clone, Debug)]
pub struct RollbackConfig {
    pub window: Duration,
    pub min_requests: u64,
    pub error_rate: Option<f64>,
    pub latency_p99: Option<Duration>,
    pub on_breaker_open: bool,
    pub webhook: Option<String>,
}

#[derive(Clone, Debug)]
pub struct RolloutConfig {
    /// Version names of this route; the route has exactly these two.
    pub baseline: String,
    pub canary: String,
    pub shadow_first: Option<ShadowFirstConfig>,
    /// Canary share per step, strictly increasing, ending at 100 %.
    pub steps: Vec<WeightBps>,
    pub interval: Duration,
    pub min_requests: u64,
    pub gates: GatesConfig,
    pub rollback: Option<RollbackConfig>,
}

#[derive(Clone, Debug)]
pub struct RouteConfig {
    pub name: String,
    pub matcher: RouteMatch,
    pub sticky: Vec<StickySource>,
    /// Default: the route name.
    pub salt: String,
    pub pin_header: Option<HeaderName>,
    /// The environment variable the pin token was read from.
    pub pin_token_env: Option<String>,
    /// `Some` exactly when `pin_token_env` is set: a pin is then honoured
    /// only with `x-cutover-pin-token: <token>`.
    pub pin_token: Option<String>,
    /// Weights sum to exactly 10 000 bps; at least one version.
    pub versions: Vec<VersionConfig>,
    pub shadows: Vec<ShadowConfig>,
    pub fallbacks: Vec<FallbackConfig>,
    pub cache: Option<RouteCacheConfig>,
    pub refusal: RefusalConfig,
    pub rollout: Option<RolloutConfig>,
    /// A protocol session header (`mcp-session-id`) whose sessions stay on
    /// the version that opened them (SPEC §3).
    pub session_header: Option<HeaderName>,
}

impl RouteConfig {
    pub fn version(&self, name: &str) -> Option<&VersionConfig> {
        self.versions.iter().find(|v| v.target.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_take_two_decimals_exactly() {
        assert_eq!(WeightBps::from_percent(5.0), WeightBps::new(500));
        assert_eq!(WeightBps::from_percent(0.07), WeightBps::new(7));
        assert_eq!(WeightBps::from_percent(12.25), WeightBps::new(1225));
        assert_eq!(WeightBps::from_percent(100.0), Some(WeightBps::FULL));
        assert_eq!(WeightBps::from_percent(12.345), None);
        assert_eq!(WeightBps::from_percent(-1.0), None);
        assert_eq!(WeightBps::from_percent(100.01), None);
        assert_eq!(WeightBps::from_percent(f64::NAN), None);
        assert_eq!(
            WeightBps::new(1225).map(|w| w.to_string()),
            Some("12.25".into())
        );
    }
}
