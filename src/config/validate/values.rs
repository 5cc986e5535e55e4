//! The value checks every section shares: durations, sizes, counts,
//! ranged floats, header names and values, JSON from TOML, listen
//! addresses, URLs, HTTP statuses, percents as basis points, and tokens
//! read from the environment. Each reports what would be valid and
//! returns a default or `None`, so validation carries on.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};

use crate::config::units::{describe, parse_duration, parse_size};

use crate::config::model::*;
use crate::config::raw::*;
use crate::config::spans::KeyPath;

use super::Validator;

impl Validator<'_> {
    pub(super) fn duration(
        &mut self,
        v: Option<Value>,
        path: KeyPath,
        default: Duration,
    ) -> Duration {
        match v {
            None => default,
            Some(v) => parse_duration(&v).unwrap_or_else(|m| {
                self.err(path, m);
                default
            }),
        }
    }

    /// A duration that must be more than zero (timeouts, windows).
    pub(super) fn positive_duration(
        &mut self,
        v: Option<Value>,
        path: KeyPath,
        default: Duration,
    ) -> Duration {
        let d = self.duration(v, path.clone(), default);
        if d.is_zero() {
            self.err(
                path,
                "must be more than 0s; valid: a string like \"250ms\", \"30s\", \"10m\"",
            );
            return default;
        }
        d
    }

    pub(super) fn opt_duration(&mut self, v: Option<Value>, path: KeyPath) -> Option<Duration> {
        let v = v?;
        match parse_duration(&v) {
            Ok(d) => Some(d),
            Err(m) => {
                self.err(path, m);
                None
            }
        }
    }

    pub(super) fn size(&mut self, v: Option<Value>, path: KeyPath, default: u64) -> u64 {
        match v {
            None => default,
            Some(v) => parse_size(&v).unwrap_or_else(|m| {
                self.err(path, m);
                default
            }),
        }
    }

    pub(super) fn at_least_one(&mut self, v: Option<u64>, path: KeyPath, default: u64) -> u64 {
        match v {
            Some(0) => {
                self.err(path, "must be at least 1");
                default
            }
            Some(n) => n,
            None => default,
        }
    }

    pub(super) fn usize_of(&mut self, n: u64, path: KeyPath) -> usize {
        usize::try_from(n).unwrap_or_else(|_| {
            self.err(path, format!("{n} is too large for this platform"));
            0
        })
    }

    /// A float in a range; `rule` names the range for the message.
    pub(super) fn ranged(
        &mut self,
        v: Option<f64>,
        path: KeyPath,
        ok: impl Fn(f64) -> bool,
        rule: &str,
    ) -> Option<f64> {
        let x = v?;
        if x.is_finite() && ok(x) {
            Some(x)
        } else {
            self.err(path, format!("{x} is out of range; valid: {rule}"));
            None
        }
    }

    pub(super) fn header_name(&mut self, name: &str, path: KeyPath) -> Option<HeaderName> {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.err(
                    path,
                    format!(
                        "invalid header name {name:?}; valid: letters, digits and !#$%&'*+-.^_`|~"
                    ),
                );
                None
            }
        }
    }

    /// `name = "value"` pairs; values are marked sensitive (they often hold
    /// credentials and must never be logged).
    pub(super) fn headers(
        &mut self,
        table: Option<Table>,
        path: &KeyPath,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        for (k, v) in table.unwrap_or_default() {
            let p = path.key(&k);
            let name = self.header_name(&k, p.clone());
            let Some(text) = v.as_str() else {
                self.err(
                    p,
                    format!("expected a string header value, found {}", describe(&v)),
                );
                continue;
            };
            match HeaderValue::from_str(text) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    if let Some(name) = name {
                        out.push((name, value));
                    }
                }
                Err(_) => self.err(
                    p,
                    "invalid header value; valid: visible ASCII characters, spaces and tabs",
                ),
            }
        }
        out
    }

    pub(super) fn json_map(
        &mut self,
        table: Option<Table>,
        path: &KeyPath,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for (k, v) in table.unwrap_or_default() {
            let p = path.key(&k);
            if let Some(j) = self.json(v, &p) {
                out.insert(k, j);
            }
        }
        out
    }

    pub(super) fn json(&mut self, v: Value, path: &KeyPath) -> Option<serde_json::Value> {
        Some(match v {
            Value::String(s) => serde_json::Value::String(s),
            Value::Integer(n) => serde_json::Value::from(n),
            Value::Float(x) => match serde_json::Number::from_f64(x) {
                Some(n) => serde_json::Value::Number(n),
                None => {
                    self.err(
                        path.clone(),
                        format!("{x} cannot be written as JSON; valid: a finite number"),
                    );
                    return None;
                }
            },
            Value::Boolean(b) => serde_json::Value::Bool(b),
            Value::Datetime(d) => serde_json::Value::String(d.to_string()),
            Value::Array(items) => serde_json::Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, v)| self.json(v, &path.index(i)))
                    .collect(),
            ),
            Value::Table(t) => serde_json::Value::Object(self.json_map(Some(t), path)),
        })
    }

    pub(super) fn socket_addr(&mut self, text: &str, path: KeyPath) -> Option<SocketAddr> {
        match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    path,
                    format!("bad listen address {text:?}; valid: an IP address and port like \"0.0.0.0:8080\" or \"[::1]:8080\""),
                );
                None
            }
        }
    }

    pub(super) fn url(&mut self, text: &str, path: KeyPath) -> Option<UpstreamUrl> {
        match parse_url(text) {
            Ok(u) => Some(u),
            Err(m) => {
                self.err(path, format!("malformed URL {text:?}: {m}; valid: http://HOST[:PORT][/PATH] or https://..."));
                None
            }
        }
    }

    pub(super) fn status(&mut self, s: i64, path: KeyPath) -> Option<StatusCode> {
        let code = u16::try_from(s).ok().filter(|c| (100..=599).contains(c));
        match code.and_then(|c| StatusCode::from_u16(c).ok()) {
            Some(c) => Some(c),
            None => {
                self.err(
                    path,
                    format!("{s} is not an HTTP status; valid: 100 to 599"),
                );
                None
            }
        }
    }

    /// A percent with at most two decimals, as basis points.
    pub(super) fn percent(&mut self, x: f64, path: KeyPath, what: &str) -> Option<WeightBps> {
        match WeightBps::from_percent(x) {
            Some(w) => Some(w),
            None if x.is_finite() && (0.0..=100.0).contains(&x) => {
                self.err(
                    path,
                    format!("{what} {x} has more than two decimals; valid: a percent like 12.25"),
                );
                None
            }
            None => {
                self.err(path, format!("{what} {x} is out of range; valid: a percent from 0 to 100 with at most two decimals"));
                None
            }
        }
    }

    /// The token in environment variable `name` (`*_token_env` keys): a
    /// missing or empty variable is an error, since a token that silently
    /// went away would open what it guards. `remove` names what to remove
    /// instead of setting it.
    pub(super) fn token_env(
        &mut self,
        name: &str,
        p: KeyPath,
        what: &str,
        remove: &str,
    ) -> Option<String> {
        match (self.env)(name) {
            Some(t) if !t.is_empty() => Some(t),
            Some(_) => {
                self.err(
                    p,
                    format!("environment variable `{name}` is empty; valid: set it to {what}"),
                );
                None
            }
            None => {
                self.err(p, format!("environment variable `{name}` is not set; valid: set it to {what}, or remove {remove}"));
                None
            }
        }
    }
}

/// Split an `http(s)://host[:port][/path]` URL. No user info, query or
/// fragment: credentials go in `set_headers`, and a query would be
/// ambiguous when request paths are appended.
pub fn parse_url(text: &str) -> Result<UpstreamUrl, String> {
    let (scheme, rest) = text.split_once("://").ok_or("no scheme")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(format!("scheme `{other}` is not supported")),
    };
    if rest.contains('?') || rest.contains('#') {
        return Err("a query or fragment is not allowed".into());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err("credentials in the URL are not supported (use set_headers)".into());
    }
    if authority.is_empty() {
        return Err("no host".into());
    }
    let authority =
        http::uri::Authority::from_str(authority).map_err(|e| format!("bad host or port ({e})"))?;
    let host = authority.host().to_string();
    if host.is_empty() {
        return Err("no host".into());
    }
    let port_text = authority.as_str().get(host.len()..).unwrap_or("");
    let port = match authority.port_u16() {
        Some(p) => p,
        None if !port_text.is_empty() => {
            return Err(format!(
                "bad port `{}`; valid: 1 to 65535",
                port_text.trim_start_matches(':')
            ));
        }
        None => match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        },
    };
    if !path.is_empty() {
        http::uri::PathAndQuery::from_str(path).map_err(|e| format!("bad path ({e})"))?;
    }
    Ok(UpstreamUrl {
        raw: text.to_string(),
        scheme,
        authority,
        host,
        port,
        path_prefix: path.trim_end_matches('/').to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:9001").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.path_prefix.as_str()),
            (Scheme::Http, "127.0.0.1", 9001, "")
        );
        let u = parse_url("https://api.openai.com/v1/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (u.scheme, u.port, u.path_prefix.as_str()),
            (Scheme::Https, 443, "/v1")
        );
        let u = parse_url("http://[::1]:8080/api").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((u.port, u.path_prefix.as_str()), (8080, "/api"));
        for bad in [
            "ftp://x",
            "http://",
            "http:///x",
            "http://x?y=1",
            "http://x#f",
            "http://u:p@x",
            "x",
            "http://x:99999",
            "http://x:",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
