//! Header rules for requests to upstreams and responses to clients
//! (SPEC §3).

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_CUTOVER_VERSION: HeaderName = HeaderName::from_static("x-cutover-version");
pub static X_CUTOVER_UPSTREAM: HeaderName = HeaderName::from_static("x-cutover-upstream");
pub static X_CUTOVER_CACHE: HeaderName = HeaderName::from_static("x-cutover-cache");
pub static X_CUTOVER_OUTCOME: HeaderName = HeaderName::from_static("x-cutover-outcome");
/// Proves a pin may be honoured (`pin_token_env`); stripped like every
/// `x-cutover-*` header, so it never reaches an upstream.
pub static X_CUTOVER_PIN_TOKEN: HeaderName = HeaderName::from_static("x-cutover-pin-token");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The prefix of every header cutover owns. Clients cannot send these
/// upstream (a pin header is read before they are stripped), and upstreams
/// cannot send them to clients.
const OWN_PREFIX: &str = "x-cutover-";

/// RFC 9110 §7.6.1 hop-by-hop headers, plus the non-standard ones proxies
/// conventionally drop.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Remove hop-by-hop headers and every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Remove every `x-cutover-*` header.
pub fn strip_own(headers: &mut HeaderMap) {
    // Usually none are present: one scan, no allocation.
    while let Some(name) = headers
        .keys()
        .find(|k| k.as_str().starts_with(OWN_PREFIX))
        .cloned()
    {
        headers.remove(name);
    }
}

/// A client's `x-request-id` is kept when it is 1..=128 visible ASCII
/// characters; otherwise a fresh 128-bit hex id is generated.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if (1..=128).contains(&b.len()) && b.iter().all(|c| (0x21..=0x7e).contains(c)) {
            return v.clone();
        }
    }
    let mut buf = [0u8; 32];
    hex(&rand::random::<u128>().to_be_bytes(), &mut buf);
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The client IP for sticky routing and logs: the peer address, or with
/// `trust_forwarded_for` the first `X-Forwarded-For` entry when it parses.
pub fn client_ip(headers: &HeaderMap, peer: SocketAddr, trust_forwarded_for: bool) -> IpAddr {
    if trust_forwarded_for
        && let Some(first) = headers
            .get(&X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
        && let Ok(ip) = first.trim().parse::<IpAddr>()
    {
        return ip;
    }
    peer.ip()
}

/// Rewrite a client's request head for the upstream, except the per-target
/// parts (`Host`, `x-cutover-version`, set/remove headers).
/// Returns the trace context the upstream will see.
pub fn prepare_forward(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    tls: bool,
    request_id: &HeaderValue,
) -> TraceContext {
    strip_hop_by_hop(headers);
    strip_own(headers);
    // The body is already buffered and re-framed: the upstream gets a fresh
    // Content-Length from the body, and no 100-continue dance.
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::EXPECT);

    append_forwarded_for(headers, peer.ip());
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    if let Some(host) = headers.remove(header::HOST) {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    propagate_traceparent(headers)
}

fn append_forwarded_for(headers: &mut HeaderMap, ip: IpAddr) {
    use std::fmt::Write as _;
    let mut value = String::with_capacity(64);
    for prior in headers.get_all(&X_FORWARDED_FOR) {
        if let Ok(s) = prior.to_str() {
            value.push_str(s.trim());
            value.push_str(", ");
        }
    }
    let _ = write!(value, "{ip}");
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
}

/// The W3C trace context of one request as cutover forwards it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// cutover's own span: the parent the upstream sees.
    pub span_id: [u8; 8],
    /// The caller's span, when it sent a valid `traceparent`.
    pub parent_span_id: Option<[u8; 8]>,
    pub sampled: bool,
}

/// W3C trace context: a valid `traceparent` keeps its trace id and flags
/// and gets cutover's own span as the new parent; an invalid or absent one
/// starts a new trace (and an orphaned `tracestate` is dropped).
pub fn propagate_traceparent(headers: &mut HeaderMap) -> TraceContext {
    let span_id = rand::random::<u64>().max(1).to_be_bytes();
    let parsed = headers
        .get(&TRACEPARENT)
        .and_then(|v| parse_traceparent(v.as_bytes()))
        .and_then(|(trace, parent, flags)| {
            Some((unhex::<16>(trace)?, unhex::<8>(parent)?, unhex::<1>(flags)?))
        });
    let ctx = match parsed {
        Some((trace_id, parent, flags)) => TraceContext {
            trace_id,
            span_id,
            parent_span_id: Some(parent),
            sampled: flags[0] & 1 == 1,
        },
        None => {
            headers.remove(&TRACESTATE);
            TraceContext {
                trace_id: rand::random::<u128>().max(1).to_be_bytes(),
                span_id,
                parent_span_id: None,
                sampled: true,
            }
        }
    };
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex(&ctx.trace_id, &mut out[3..35]);
    hex(&ctx.span_id, &mut out[36..52]);
    match parsed {
        Some((_, _, flags)) => hex(&flags, &mut out[53..55]),
        None => out[53..55].copy_from_slice(b"01"),
    }
    if let Ok(v) = HeaderValue::from_bytes(&out) {
        headers.insert(TRACEPARENT.clone(), v);
    }
    ctx
}

fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    if s.len() != 2 * N {
        return None;
    }
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// `(trace_id, parent_id, flags)` of a valid traceparent: version `00` is
/// exactly 55 characters; later versions may append fields after the flags.
fn parse_traceparent(v: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    if v.len() < 55 || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let (version, trace, parent, flags) = (&v[0..2], &v[3..35], &v[36..52], &v[53..55]);
    let lower_hex = |s: &[u8]| {
        s.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let all_zero = |s: &[u8]| s.iter().all(|&c| c == b'0');
    let ok = v[2] == b'-'
        && v[35] == b'-'
        && v[52] == b'-'
        && lower_hex(version)
        && version != b"ff"
        && (version != b"00" || v.len() == 55)
        && lower_hex(trace)
        && !all_zero(trace)
        && lower_hex(parent)
        && !all_zero(parent)
        && lower_hex(flags);
    ok.then_some((trace, parent, flags))
}

/// Clean an upstream's response head for the client.
pub fn prepare_response(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    strip_own(headers);
}

/// Does the request frame its body ambiguously? Both `Content-Length` and
/// `Transfer-Encoding`, or several different `Content-Length`s, are
/// request-smuggling vectors: refuse rather than guess.
pub fn ambiguous_framing(headers: &HeaderMap) -> bool {
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let first = lengths.next();
    if first.is_some() && headers.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    match first {
        Some(first) => lengths.any(|other| other != first),
        None => false,
    }
}

fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "10.0.0.9:5555".parse().expect("addr")
    }

    #[test]
    fn hop_by_hop_and_connection_named_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn forwarded_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("host", HeaderValue::from_static("api.example.com"));
        h.insert("x-cutover-shadow", HeaderValue::from_static("1"));
        h.insert("x-cutover-outcome", HeaderValue::from_static("success"));
        let id = HeaderValue::from_static("rid-1");
        prepare_forward(&mut h, peer(), true, &id);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["x-request-id"], "rid-1");
        assert!(!h.contains_key("host"));
        assert!(!h.contains_key("x-cutover-shadow"));
        assert!(!h.contains_key("x-cutover-outcome"));
        assert_eq!(h["traceparent"].len(), 55);
    }

    #[test]
    fn request_id_kept_or_generated() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static("has space"));
        let generated = request_id(&h);
        assert_eq!(generated.len(), 32);
        h.insert(
            "x-request-id",
            HeaderValue::from_str(&"a".repeat(129)).expect("value"),
        );
        assert_eq!(request_id(&h).len(), 32);
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }

    #[test]
    fn traceparent_propagated_with_new_parent() {
        let mut h = HeaderMap::new();
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert("traceparent", HeaderValue::from_static(incoming));
        h.insert("tracestate", HeaderValue::from_static("congo=t61rcWkgMzE"));
        propagate_traceparent(&mut h);
        let out = h["traceparent"].to_str().expect("ascii");
        assert_eq!(&out[..36], &incoming[..36]);
        assert_ne!(&out[36..52], &incoming[36..52]);
        assert_eq!(&out[52..], "-01");
        assert!(h.contains_key("tracestate"));
    }

    #[test]
    fn invalid_traceparent_starts_a_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let mut h = HeaderMap::new();
            h.insert("traceparent", HeaderValue::from_static(bad));
            h.insert("tracestate", HeaderValue::from_static("a=b"));
            propagate_traceparent(&mut h);
            let out = h["traceparent"].to_str().expect("ascii").to_string();
            assert!(parse_traceparent(out.as_bytes()).is_some(), "{out}");
            assert_ne!(&out[3..35], bad.get(3..35).unwrap_or(""));
            assert!(!h.contains_key("tracestate"));
        }
    }

    #[test]
    fn client_ip_trusts_xff_only_when_told() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.5, 10.1.1.1"),
        );
        assert_eq!(client_ip(&h, peer(), false), peer().ip());
        assert_eq!(client_ip(&h, peer(), true).to_string(), "203.0.113.5");
        h.insert("x-forwarded-for", HeaderValue::from_static("not-an-ip"));
        assert_eq!(client_ip(&h, peer(), true), peer().ip());
    }

    #[test]
    fn framing_ambiguity() {
        let mut h = HeaderMap::new();
        h.insert("content-length", HeaderValue::from_static("5"));
        assert!(!ambiguous_framing(&h));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        assert!(ambiguous_framing(&h));
        let mut h = HeaderMap::new();
        h.append("content-length", HeaderValue::from_static("5"));
        h.append("content-length", HeaderValue::from_static("6"));
        assert!(ambiguous_framing(&h));
    }
}
