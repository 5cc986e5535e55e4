//! Route matching: path prefix, methods, host and exact header values.
//! Routes are tried in file order; the first match wins.

use http::{HeaderMap, Method};

use crate::config::RouteMatch;

/// Does a request match? `host` is the request's host without port.
#[inline]
pub fn matches(
    m: &RouteMatch,
    method: &Method,
    path: &str,
    host: Option<&str>,
    headers: &HeaderMap,
) -> bool {
    if !path.starts_with(m.path_prefix.as_str()) {
        return false;
    }
    if !m.methods.is_empty() && !m.methods.iter().any(|x| x == method) {
        return false;
    }
    if let Some(want) = &m.host
        && !host.is_some_and(|h| h.eq_ignore_ascii_case(want))
    {
        return false;
    }
    m.headers.iter().all(|(name, want)| {
        headers
            .get(name)
            .is_some_and(|v| v.as_bytes() == want.as_bytes())
    })
}

/// The host a request was sent to: the URI authority (HTTP/2, absolute
/// form), else the `Host` header; without its port.
pub fn request_host<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    let raw = match uri.host() {
        Some(h) => return Some(h),
        None => headers.get(http::header::HOST)?.to_str().ok()?,
    };
    Some(strip_port(raw))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_methods_host_headers() {
        let m = RouteMatch {
            path_prefix: "/v1/".into(),
            methods: vec![Method::POST],
            host: Some("api.example.com".into()),
            headers: vec![(http::HeaderName::from_static("x-tenant"), "acme".into())],
        };
        let mut h = HeaderMap::new();
        h.insert("x-tenant", "acme".parse().expect("value"));
        assert!(matches(
            &m,
            &Method::POST,
            "/v1/chat",
            Some("API.example.com"),
            &h
        ));
        assert!(!matches(
            &m,
            &Method::GET,
            "/v1/chat",
            Some("api.example.com"),
            &h
        ));
        assert!(!matches(
            &m,
            &Method::POST,
            "/v2/chat",
            Some("api.example.com"),
            &h
        ));
        assert!(!matches(&m, &Method::POST, "/v1/chat", Some("other"), &h));
        assert!(!matches(
            &m,
            &Method::POST,
            "/v1/chat",
            Some("api.example.com"),
            &HeaderMap::new()
        ));
    }

    #[test]
    fn host_without_port() {
        assert_eq!(strip_port("a.b:8080"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("a.b"), "a.b");
    }
}
