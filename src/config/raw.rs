//! The file's shape as serde structs, before validation.
//!
//! Leaves that need a good message when they are wrong (durations, sizes)
//! are kept as `toml::Value` and converted in `validate`. Arrays of tables
//! (`versions`, `shadows`, `fallbacks`) and sub-sections are kept as
//! `toml::Value` too and deserialized one by one with [`de_unit`], so that a
//! type error in one of them does not hide the errors in the others.
//!
//! Unknown keys are found with `serde_ignored` rather than
//! `deny_unknown_fields`, which stops at the first one.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::spans::{Anchor, KeyPath, Seg};

pub type Table = toml::Table;
pub type Value = toml::Value;

/// One problem, not yet placed in the file.
#[derive(Clone, Debug)]
pub struct Issue {
    pub path: KeyPath,
    pub anchor: Anchor,
    pub message: String,
}

impl Issue {
    pub fn at(path: KeyPath, message: impl Into<String>) -> Issue {
        Issue {
            path,
            anchor: Anchor::Value,
            message: message.into(),
        }
    }

    pub fn at_key(path: KeyPath, message: impl Into<String>) -> Issue {
        Issue {
            path,
            anchor: Anchor::Key,
            message: message.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct RawServer {
    pub listen: Option<String>,
    pub workers: Option<u64>,
    pub max_body: Option<Value>,
    pub max_in_flight: Option<u64>,
    pub shutdown_grace: Option<Value>,
    pub trust_forwarded_for: Option<bool>,
    pub feedback_path: Option<String>,
    pub feedback_token_env: Option<String>,
    pub max_buffered: Option<Value>,
    pub tls: Option<RawTls>,
    pub request_header_timeout: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub token_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
    pub access_log: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTracing {
    pub otlp_endpoint: Option<String>,
    pub sample_ratio: Option<f64>,
    pub otlp_ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCache {
    pub max_size: Option<Value>,
    pub max_entry_size: Option<Value>,
    pub shared: Option<bool>,
    pub lock_timeout: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawState {
    pub dir: Option<String>,
}

/// `[cluster]` (SPEC §12). `redis` is optional here so that a missing one
/// is reported with what would be valid, like `server.listen`.
#[derive(Debug, Default, Deserialize)]
pub struct RawCluster {
    pub redis: Option<String>,
    pub name: Option<String>,
    pub replica: Option<String>,
    pub lease: Option<Value>,
    pub sync_interval: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct RawUpstream {
    pub name: String,
    pub url: String,
    pub connect_timeout: Option<Value>,
    pub header_timeout: Option<Value>,
    pub idle_timeout: Option<Value>,
    pub pool_idle_timeout: Option<Value>,
    pub retry_reused: Option<bool>,
    pub max_in_flight: Option<u64>,
    pub failure_statuses: Option<Vec<i64>>,
    pub set_headers: Option<Table>,
    pub remove_headers: Option<Vec<String>>,
    pub breaker: Option<RawBreaker>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawBreaker {
    pub consecutive_failures: Option<u32>,
    pub failure_rate: Option<f64>,
    pub min_requests: Option<u32>,
    pub window: Option<Value>,
    pub open_for: Option<Value>,
    pub half_open_probes: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct RawRoute {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: Option<Value>,
    pub sticky: Option<Vec<String>>,
    pub salt: Option<String>,
    pub pin_header: Option<String>,
    pub pin_token_env: Option<String>,
    pub versions: Option<Vec<Value>>,
    pub shadows: Option<Vec<Value>>,
    /// Each a version name (string) or a target (table).
    pub fallbacks: Option<Vec<Value>>,
    pub cache: Option<Value>,
    pub refusal: Option<Value>,
    pub rollout: Option<Value>,
    pub session_header: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawMatch {
    pub path_prefix: Option<String>,
    pub methods: Option<Vec<String>>,
    pub host: Option<String>,
    pub headers: Option<Table>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCost {
    pub input_per_mtok: Option<f64>,
    pub output_per_mtok: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct RawVersion {
    pub name: String,
    pub upstream: String,
    pub weight: Option<f64>,
    pub set_headers: Option<Table>,
    pub set_json: Option<Table>,
    pub cost: Option<RawCost>,
    pub deps: Option<Table>,
}

#[derive(Debug, Deserialize)]
pub struct RawShadow {
    pub name: String,
    pub upstream: String,
    pub percent: Option<f64>,
    pub max_in_flight: Option<u64>,
    pub timeout: Option<Value>,
    pub compare: Option<Vec<String>>,
    pub set_headers: Option<Table>,
    pub set_json: Option<Table>,
    pub cost: Option<RawCost>,
    pub deps: Option<Table>,
}

/// A fallback written as a table: a target of its own.
#[derive(Debug, Deserialize)]
pub struct RawFallback {
    pub name: String,
    pub upstream: String,
    pub set_headers: Option<Table>,
    pub set_json: Option<Table>,
    pub cost: Option<RawCost>,
    pub deps: Option<Table>,
}

#[derive(Debug, Deserialize)]
pub struct RawRouteCache {
    pub ttl: Option<Value>,
    pub vary: Option<Vec<String>>,
    pub deterministic_only: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRefusal {
    pub status: Option<i64>,
    pub retry_after: Option<Value>,
    pub format: Option<String>,
    pub message: Option<String>,
    pub body: Option<String>,
    pub content_type: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawRollout {
    pub baseline: Option<String>,
    pub canary: Option<String>,
    pub shadow_first: Option<RawShadowFirst>,
    pub steps: Option<Vec<f64>>,
    pub interval: Option<Value>,
    pub min_requests: Option<u64>,
    pub gates: Option<RawGates>,
    pub rollback: Option<RawRollback>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawShadowFirst {
    pub min_duration: Option<Value>,
    pub min_requests: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawGates {
    pub error_rate_margin: Option<f64>,
    pub max_error_rate: Option<f64>,
    pub latency_p95_ratio: Option<f64>,
    pub max_latency_p95: Option<Value>,
    pub max_cost_per_request: Option<f64>,
    pub outcome_margin: Option<f64>,
    pub confidence: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRollback {
    pub window: Option<Value>,
    pub min_requests: Option<u64>,
    pub error_rate: Option<f64>,
    pub latency_p99: Option<Value>,
    pub on_breaker_open: Option<bool>,
    pub webhook: Option<String>,
}

/// Top-level sections, in the order they are documented.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "server",
    "admin",
    "log",
    "tracing",
    "cache",
    "state",
    "cluster",
    "upstreams",
    "routes",
];

/// The keys a struct accepts, read from its `Deserialize` impl so the list
/// can never drift from the struct.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldsCatcher(&mut fields));
    fields
}

/// The valid keys of the table at `path` (indices ignored), if it is a
/// table with a fixed set of keys.
pub fn valid_keys(path: &KeyPath) -> Option<&'static [&'static str]> {
    let fields = match path.shape().as_slice() {
        [] => TOP_LEVEL_KEYS,
        ["server"] => fields_of::<RawServer>(),
        ["server", "tls"] => fields_of::<RawTls>(),
        ["admin"] => fields_of::<RawAdmin>(),
        ["log"] => fields_of::<RawLog>(),
        ["tracing"] => fields_of::<RawTracing>(),
        ["cache"] => fields_of::<RawCache>(),
        ["state"] => fields_of::<RawState>(),
        ["cluster"] => fields_of::<RawCluster>(),
        ["upstreams"] => fields_of::<RawUpstream>(),
        ["upstreams", "breaker"] => fields_of::<RawBreaker>(),
        ["routes"] => fields_of::<RawRoute>(),
        ["routes", "match"] => fields_of::<RawMatch>(),
        ["routes", "versions"] => fields_of::<RawVersion>(),
        ["routes", "shadows"] => fields_of::<RawShadow>(),
        ["routes", "fallbacks"] => fields_of::<RawFallback>(),
        ["routes", "versions" | "shadows" | "fallbacks", "cost"] => fields_of::<RawCost>(),
        ["routes", "cache"] => fields_of::<RawRouteCache>(),
        ["routes", "refusal"] => fields_of::<RawRefusal>(),
        ["routes", "rollout"] => fields_of::<RawRollout>(),
        ["routes", "rollout", "shadow_first"] => fields_of::<RawShadowFirst>(),
        ["routes", "rollout", "gates"] => fields_of::<RawGates>(),
        ["routes", "rollout", "rollback"] => fields_of::<RawRollback>(),
        _ => return None,
    };
    Some(fields)
}

/// The message for an unknown key at `path`.
pub fn unknown_key_message(path: &KeyPath) -> String {
    let name = match path.0.last() {
        Some(Seg::Key(k)) => k.clone(),
        Some(Seg::Index(i)) => format!("[{i}]"),
        None => String::new(),
    };
    let parent = KeyPath(path.0[..path.0.len().saturating_sub(1)].to_vec());
    match valid_keys(&parent) {
        Some(keys) => format!("unknown key `{name}`; valid keys here: {}", keys.join(", ")),
        None => format!("unknown key `{name}`"),
    }
}

/// Deserialize one unit (a section, an upstream, a version, ...) at `base`.
/// Every unknown key is an issue; a type error or missing key is one issue
/// and makes this unit `None` (the other units are still checked).
pub fn de_unit<T: DeserializeOwned>(
    value: Value,
    base: &KeyPath,
    issues: &mut Vec<Issue>,
) -> Option<T> {
    let mut unknown: Vec<KeyPath> = Vec::new();
    let mut on_ignored = |p: serde_ignored::Path<'_>| {
        let mut segs = Vec::new();
        ignored_segments(&p, &mut segs);
        let mut path = base.clone();
        path.0.extend(segs);
        unknown.push(path);
    };
    let result: Result<T, _> =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut on_ignored));
    for path in unknown {
        let message = unknown_key_message(&path);
        issues.push(Issue::at_key(path, message));
    }
    match result {
        Ok(t) => Some(t),
        Err(e) => {
            let mut path = base.clone();
            for seg in e.path().iter() {
                match seg {
                    serde_path_to_error::Segment::Seq { index } => path.0.push(Seg::Index(*index)),
                    serde_path_to_error::Segment::Map { key } => path.0.push(Seg::Key(key.clone())),
                    serde_path_to_error::Segment::Enum { variant } => {
                        path.0.push(Seg::Key(variant.clone()))
                    }
                    serde_path_to_error::Segment::Unknown => {}
                }
            }
            let inner = e.into_inner().to_string();
            let inner = inner.trim();
            let message = match inner
                .strip_prefix("missing field `")
                .and_then(|r| r.strip_suffix('`'))
            {
                Some(field) => format!("missing required key `{field}`"),
                None => inner.to_string(),
            };
            issues.push(Issue::at(path, message));
            None
        }
    }
}

fn ignored_segments(p: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
    match p {
        serde_ignored::Path::Root => {}
        serde_ignored::Path::Seq { parent, index } => {
            ignored_segments(parent, out);
            out.push(Seg::Index(*index));
        }
        serde_ignored::Path::Map { parent, key } => {
            ignored_segments(parent, out);
            out.push(Seg::Key(key.clone()));
        }
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => ignored_segments(parent, out),
    }
}

/// A deserializer that only records the field list of the struct asked of it.
struct FieldsCatcher<'a>(&'a mut &'static [&'static str]);

impl<'de> serde::Deserializer<'de> for FieldsCatcher<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(serde::de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lists_come_from_the_structs() {
        let keys = valid_keys(&KeyPath::root().key("routes").index(3).key("match"));
        assert_eq!(
            keys,
            Some(&["path_prefix", "methods", "host", "headers"][..])
        );
        let route = valid_keys(&KeyPath::root().key("routes").index(0)).unwrap_or_default();
        assert!(route.contains(&"match"));
        assert!(route.contains(&"fallbacks"));
    }

    #[test]
    fn every_unknown_key_is_reported() {
        let v: Value =
            toml::from_str("name = \"a\"\nurl = \"http://x\"\nfoo = 1\n[breaker]\nbar = 2\n")
                .unwrap_or_else(|e| panic!("{e}"));
        let mut issues = Vec::new();
        let base = KeyPath::root().key("upstreams").index(0);
        let u: Option<RawUpstream> = de_unit(v, &base, &mut issues);
        assert!(u.is_some());
        let mut paths: Vec<String> = issues.iter().map(|i| i.path.to_string()).collect();
        paths.sort();
        assert_eq!(paths, ["upstreams[0].breaker.bar", "upstreams[0].foo"]);
        assert!(
            issues[0]
                .message
                .contains("valid keys here: consecutive_failures")
        );
    }

    #[test]
    fn type_errors_carry_their_path() {
        let v: Value = toml::from_str(
            "name = \"a\"\nurl = \"http://x\"\n[breaker]\nmin_requests = \"many\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut issues = Vec::new();
        let base = KeyPath::root().key("upstreams").index(0);
        let u: Option<RawUpstream> = de_unit(v, &base, &mut issues);
        assert!(u.is_none());
        assert_eq!(
            issues[0].path.to_string(),
            "upstreams[0].breaker.min_requests"
        );
        assert!(
            issues[0].message.contains("expected u32"),
            "{}",
            issues[0].message
        );
    }
}
