//! When a request skips the cache: the client asked (`Cache-Control`), or
//! the route caches only deterministic requests and this one is not.

use http::HeaderMap;
use http::header::CACHE_CONTROL;

use super::canonical::canonical_json;

/// True when the body is a JSON object whose top-level `temperature` is a
/// number equal to zero, however written (`0`, `-0`, `0.0`, `0e5`,
/// `0.000E-3`). Used by `deterministic_only`: everything else (no
/// temperature, a string `"0"`, invalid JSON) is not deterministic.
pub fn is_deterministic(body: &[u8]) -> bool {
    let Some(canon) = canonical_json(body) else {
        return false;
    };
    let Some(t) = canon.temperature else {
        return false;
    };
    let mantissa = t.split(|&b| b == b'e' || b == b'E').next().unwrap_or(&[]);
    matches!(t.first(), Some(b'-' | b'0'..=b'9'))
        && mantissa.iter().all(|&b| matches!(b, b'-' | b'0' | b'.'))
}

/// True when the request asks not to be served from the cache:
/// `Cache-Control` carries a `no-store` or `no-cache` directive (any case,
/// among other directives, over one or several header lines).
pub fn bypass_requested(headers: &HeaderMap) -> bool {
    headers.get_all(CACHE_CONTROL).iter().any(|value| {
        value.as_bytes().split(|&b| b == b',').any(|directive| {
            let name = directive
                .split(|&b| b == b'=')
                .next()
                .unwrap_or(directive)
                .trim_ascii();
            name.eq_ignore_ascii_case(b"no-store") || name.eq_ignore_ascii_case(b"no-cache")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn deterministic_only_when_temperature_is_zero() {
        for yes in [
            r#"{"temperature":0}"#,
            r#"{"temperature":0.0}"#,
            r#"{"temperature":-0}"#,
            r#"{"temperature":0e0}"#,
            r#"{"temperature":0.000E-7}"#,
            r#"{"model":"m", "temperature" : 0 , "messages":[]}"#,
            r#"{"temperature":1,"temperature":0}"#,
        ] {
            assert!(is_deterministic(yes.as_bytes()), "{yes}");
        }
        for no in [
            r#"{"temperature":1}"#,
            r#"{"temperature":0.1}"#,
            r#"{"temperature":1e-9}"#,
            r#"{"temperature":10}"#,
            r#"{"temperature":"0"}"#,
            r#"{"temperature":null}"#,
            r#"{"temperature":0,"temperature":0.7}"#,
            r#"{"model":"m"}"#,
            r#"{"params":{"temperature":0}}"#,
            r#"[{"temperature":0}]"#,
            r#"{"temperature":0,}"#,
            "temperature=0",
            "",
        ] {
            assert!(!is_deterministic(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn bypass_on_no_store_and_no_cache() {
        let with = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(CACHE_CONTROL, HeaderValue::from_static(v));
            }
            bypass_requested(&h)
        };
        assert!(with(&["no-store"]));
        assert!(with(&["no-cache"]));
        assert!(with(&["No-Cache"]));
        assert!(with(&["max-age=0, no-cache"]));
        assert!(with(&["max-age=0 ,  NO-STORE  "]));
        assert!(with(&["max-age=0", "no-store"]));
        assert!(with(&["no-cache=\"set-cookie\""]));
        assert!(!with(&[]));
        assert!(!with(&["max-age=0"]));
        assert!(!with(&["private, max-age=60"]));
        assert!(!with(&["no-transform"]));
        assert!(!with(&["x-no-cache"]));
        let mut h = HeaderMap::new();
        h.insert("pragma", HeaderValue::from_static("no-cache"));
        assert!(!bypass_requested(&h));
    }
}
