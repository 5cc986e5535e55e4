//! Header rules for requests to upstreams and responses to clients
//! (SPEC §3).

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Uri, Version};

use crate::routing::sticky::IpText;

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
/// conventionally drop. `Connection` first: [`Present`] keeps a bit per
/// entry.
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

/// Remove the headers a `Connection` header names. Names of the standard
/// hop-by-hop headers are skipped: `present` removes those that are there
/// (so `Connection: keep-alive`, what SDK clients send, costs no lookup).
fn strip_connection_named(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| {
            !HOP_BY_HOP
                .iter()
                .any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(token))
        })
        .filter_map(|token| HeaderName::from_bytes(token).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
}

/// Remove every `x-cutover-*` header.
fn strip_own(headers: &mut HeaderMap) {
    while let Some(name) = headers
        .keys()
        .find(|k| k.as_str().starts_with(OWN_PREFIX))
        .cloned()
    {
        headers.remove(name);
    }
}

/// Which of the headers the rules below act on a head carries, found in
/// one pass over its names: a removal is a hashed lookup, and most heads
/// carry none of the hop-by-hop or `x-cutover-*` headers, so a rule whose
/// header is absent costs nothing.
#[derive(Clone, Copy, Debug, Default)]
struct Present {
    /// Bit `i`: `HOP_BY_HOP[i]` (bit 0: `Connection`).
    hop_by_hop: u16,
    own: bool,
    content_length: bool,
    expect: bool,
    host: bool,
    forwarded_for: bool,
    traceparent: bool,
    tracestate: bool,
}

impl Present {
    fn scan(headers: &HeaderMap) -> Present {
        let mut p = Present::default();
        // By the name's text: a string match tests the length first, so
        // most names are told apart in a compare or two, where comparing
        // `HeaderName`s one rule at a time cost ~150 instructions a header.
        // The bit numbers are `HOP_BY_HOP`'s order (a test holds them).
        for name in headers.keys() {
            match name.as_str() {
                "content-length" => p.content_length = true,
                "host" => p.host = true,
                "expect" => p.expect = true,
                "x-forwarded-for" => p.forwarded_for = true,
                "traceparent" => p.traceparent = true,
                "tracestate" => p.tracestate = true,
                "connection" => p.hop_by_hop |= 1 << 0,
                "keep-alive" => p.hop_by_hop |= 1 << 1,
                "proxy-connection" => p.hop_by_hop |= 1 << 2,
                "te" => p.hop_by_hop |= 1 << 3,
                "trailer" => p.hop_by_hop |= 1 << 4,
                "transfer-encoding" => p.hop_by_hop |= 1 << 5,
                "upgrade" => p.hop_by_hop |= 1 << 6,
                "proxy-authenticate" => p.hop_by_hop |= 1 << 7,
                "proxy-authorization" => p.hop_by_hop |= 1 << 8,
                other => p.own |= other.starts_with(OWN_PREFIX),
            }
        }
        p
    }

    /// Strip hop-by-hop and `x-cutover-*` headers, if any.
    fn strip(self, headers: &mut HeaderMap) {
        if self.hop_by_hop & 1 != 0 {
            strip_connection_named(headers);
        }
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            if self.hop_by_hop & (1 << i) != 0 {
                headers.remove(name);
            }
        }
        if self.own {
            strip_own(headers);
        }
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
/// parts (`Host`, `x-cutover-version`, set/remove headers). `authority` is
/// the request target's, if it has one (HTTP/2's `:authority`, an HTTP/1
/// absolute-form target): the host the client asked for, over `Host`.
/// Returns the trace context the upstream will see.
pub fn prepare_forward(
    headers: &mut HeaderMap,
    authority: Option<&Authority>,
    peer: SocketAddr,
    tls: bool,
    request_id: &HeaderValue,
) -> TraceContext {
    let present = Present::scan(headers);
    present.strip(headers);
    // The body is already buffered and re-framed: the upstream gets a fresh
    // Content-Length from the body, and no 100-continue dance.
    if present.content_length {
        headers.remove(header::CONTENT_LENGTH);
    }
    if present.expect {
        headers.remove(header::EXPECT);
    }

    append_forwarded_for(headers, peer.ip(), present.forwarded_for);
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    let host = if present.host {
        headers.remove(header::HOST)
    } else {
        None
    };
    // RFC 9112 §3.2.2: a target's authority wins over `Host`. An HTTP/2
    // client may send no `Host` at all. (`host_problem` vetted both.)
    let asked = match authority {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => host,
    };
    if let Some(asked) = asked {
        headers.insert(X_FORWARDED_HOST.clone(), asked);
    }
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    // cutover reads every answer (usage, cache, compare, judge) and
    // decodes no content coding: ask for the bytes as they are. A client's
    // `gzip, br` would otherwise have OpenAI's edge compress a JSON answer.
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    propagate(headers, present)
}

fn append_forwarded_for(headers: &mut HeaderMap, ip: IpAddr, has_prior: bool) {
    let ip = IpText::new(ip);
    let value = if has_prior {
        let mut value = Vec::with_capacity(64);
        for prior in headers.get_all(&X_FORWARDED_FOR) {
            if prior.to_str().is_ok() {
                value.extend_from_slice(prior.as_bytes().trim_ascii());
                value.extend_from_slice(b", ");
            }
        }
        value.extend_from_slice(ip.as_bytes());
        HeaderValue::from_bytes(&value)
    } else {
        // The usual case, the peer alone: no allocation per request.
        HeaderValue::from_bytes(ip.as_bytes())
    };
    if let Ok(v) = value {
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
fn propagate(headers: &mut HeaderMap, present: Present) -> TraceContext {
    let span_id = rand::random::<u64>().max(1).to_be_bytes();
    let parsed = present
        .traceparent
        .then(|| headers.get(&TRACEPARENT))
        .flatten()
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
            if present.tracestate {
                headers.remove(&TRACESTATE);
            }
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

/// Clean an upstream's response head for the client. Returns the
/// upstream's `x-cutover-outcome`, which goes with the rest of the
/// `x-cutover-*` headers.
pub fn prepare_response(headers: &mut HeaderMap) -> Option<HeaderValue> {
    let present = Present::scan(headers);
    let outcome = if present.own {
        headers.remove(&X_CUTOVER_OUTCOME)
    } else {
        None
    };
    present.strip(headers);
    outcome
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

/// Why the request's `Host` cannot be trusted, if it cannot. RFC 9112
/// §3.2 has a server answer 400 to an HTTP/1.1 request without `Host`,
/// with more than one, or with one that is not a host: two are ambiguous
/// the way two lengths are (which site is meant?), and the value travels
/// on as `x-forwarded-host`, where a backend may build links from it. On
/// HTTP/2 a `Host` must name what `:authority` names (RFC 9113 §8.3.1).
pub fn host_problem(version: Version, uri: &Uri, headers: &HeaderMap) -> Option<&'static str> {
    // The target's authority travels on as `x-forwarded-host` too, and
    // `http::Uri` accepts userinfo in it (RFC 9113 §8.3.1 forbids that).
    let authority = uri.authority().map(|a| a.as_str().as_bytes());
    if authority.is_some_and(|a| !valid_host(a)) {
        return Some("the request target's authority is not a host with an optional port");
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if version == Version::HTTP_11 => Some("an HTTP/1.1 request needs a Host header"),
        (None, _) => None,
        (Some(_), Some(_)) => Some("the request has more than one Host header"),
        (Some(host), None) if !valid_host(host.as_bytes()) => {
            Some("the Host header is not a host with an optional port")
        }
        (Some(host), None)
            if version == Version::HTTP_2
                && authority.is_some_and(|a| !a.eq_ignore_ascii_case(host.as_bytes())) =>
        {
            Some("the Host header names another host than :authority")
        }
        (Some(_), None) => None,
    }
}

/// RFC 3986's `host [":" port]`: a bracketed IP literal or a `reg-name`
/// (which covers IPv4), then digits. No userinfo, path, space or control
/// byte. Empty is allowed: RFC 9112 §3.2 asks for an empty `Host` when the
/// target has no authority. One pass over a table: it runs per request.
fn valid_host(value: &[u8]) -> bool {
    let port = if let Some(literal) = value.strip_prefix(b"[") {
        let Some(end) = literal.iter().position(|&b| b == b']') else {
            return false;
        };
        if end == 0
            || !literal[..end]
                .iter()
                .all(|&b| HOST_BYTE[usize::from(b)] & IP_LITERAL != 0)
        {
            return false;
        }
        &literal[end + 1..]
    } else {
        let name = value
            .iter()
            .take_while(|&&b| HOST_BYTE[usize::from(b)] & REG_NAME != 0)
            .count();
        &value[name..]
    };
    match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

const REG_NAME: u8 = 1;
const IP_LITERAL: u8 = 2;

/// Which bytes a `reg-name` (unreserved, `%` and sub-delims) and an IP
/// literal (hex digits, `:`, `.`, and a zone id's unreserved and `%`) may
/// hold.
static HOST_BYTE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let unreserved = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
        if unreserved
            || matches!(
                c,
                b'%' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
            )
        {
            table[b] |= REG_NAME;
        }
        if unreserved || matches!(c, b':' | b'%') {
            table[b] |= IP_LITERAL;
        }
        b += 1;
    }
    table
};

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

    #[test]
    fn a_host_is_a_host_with_an_optional_port() {
        for good in [
            "",
            "a.example",
            "a.example:443",
            "a.example:",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:80",
            "[fe80::1%25eth0]",
            "xn--bcher-kva.example",
            "a_b.example",
        ] {
            assert!(valid_host(good.as_bytes()), "{good:?}");
        }
        for bad in [
            "user@a.example",
            "a.example/path",
            "a example",
            "a.example:80x",
            "a.example:80:81",
            "[::1",
            "[]",
            "[::1]x",
            "a.example\t",
            "a.example?q",
            "a.example#f",
            "\u{7f}",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn host_problems_by_version() {
        let uri: Uri = "/v1/chat".parse().expect("uri");
        let mut h = HeaderMap::new();
        assert!(host_problem(Version::HTTP_11, &uri, &h).is_some());
        assert!(host_problem(Version::HTTP_10, &uri, &h).is_none());
        assert!(host_problem(Version::HTTP_2, &uri, &h).is_none());
        h.append(header::HOST, HeaderValue::from_static("a.example"));
        assert!(host_problem(Version::HTTP_11, &uri, &h).is_none());
        h.append(header::HOST, HeaderValue::from_static("a.example"));
        assert!(host_problem(Version::HTTP_10, &uri, &h).is_some());
        let h2: Uri = "http://A.example/v1/chat".parse().expect("uri");
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a.EXAMPLE"));
        assert!(host_problem(Version::HTTP_2, &h2, &h).is_none());
        h.insert(header::HOST, HeaderValue::from_static("b.example"));
        assert!(host_problem(Version::HTTP_2, &h2, &h).is_some());
        // On HTTP/1.1 an absolute-form target's authority wins (RFC 9112
        // §3.2.2), so the two may differ.
        assert!(host_problem(Version::HTTP_11, &h2, &h).is_none());
    }

    #[test]
    fn scan_finds_each_name_it_acts_on() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), HeaderValue::from_static("x"));
            assert_eq!(Present::scan(&h).hop_by_hop, 1 << i, "{name}");
        }
        let found = |name: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            Present::scan(&h)
        };
        assert!(found("content-length").content_length);
        assert!(found("host").host);
        assert!(found("expect").expect);
        assert!(found("x-forwarded-for").forwarded_for);
        assert!(found("traceparent").traceparent);
        assert!(found("tracestate").tracestate);
        assert!(found("x-cutover-version").own);
        let none = found("x-cutover");
        assert!(!none.own && none.hop_by_hop == 0 && !none.host);
    }

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
        prepare_forward(&mut h, None, peer(), true, &id);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["x-request-id"], "rid-1");
        assert_eq!(h["accept-encoding"], "identity");
        assert!(!h.contains_key("host"));
        assert!(!h.contains_key("x-cutover-shadow"));
        assert!(!h.contains_key("x-cutover-outcome"));
        assert_eq!(h["traceparent"].len(), 55);
    }

    #[test]
    fn a_target_authority_is_the_forwarded_host_over_host() {
        let uri: Uri = "http://a.example:8080/v1/chat".parse().expect("uri");
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("b.example"));
        let id = HeaderValue::from_static("rid-1");
        prepare_forward(&mut h, uri.authority(), peer(), false, &id);
        assert_eq!(h["x-forwarded-host"], "a.example:8080");
        assert!(!h.contains_key("host"));
        // HTTP/2 clients may send no Host at all.
        let mut h = HeaderMap::new();
        prepare_forward(&mut h, uri.authority(), peer(), false, &id);
        assert_eq!(h["x-forwarded-host"], "a.example:8080");
        let mut h = HeaderMap::new();
        prepare_forward(&mut h, None, peer(), false, &id);
        assert!(!h.contains_key("x-forwarded-host"));
    }

    #[test]
    fn a_target_authority_with_userinfo_is_a_host_problem() {
        let uri: Uri = "http://user@a.example/v1/chat".parse().expect("uri");
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("a.example"));
        assert!(host_problem(Version::HTTP_11, &uri, &h).is_some());
        let uri: Uri = "http://a.example/v1/chat".parse().expect("uri");
        assert_eq!(host_problem(Version::HTTP_11, &uri, &h), None);
    }

    fn strip_hop_by_hop(headers: &mut HeaderMap) {
        Present::scan(headers).strip(headers);
    }

    /// The rules as they were before the scan: every removal looked up.
    fn unconditional_strip(headers: &mut HeaderMap) {
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
        strip_own(headers);
    }

    /// The one-pass scan changes only what is looked up, never the result:
    /// every head below comes out as the unconditional rules made it.
    #[test]
    fn the_scan_forwards_what_the_unconditional_rules_did() {
        fn unconditional(h: &mut HeaderMap, peer: SocketAddr, id: &HeaderValue) {
            unconditional_strip(h);
            h.remove(header::CONTENT_LENGTH);
            h.remove(header::EXPECT);
            append_forwarded_for(h, peer.ip(), true);
            h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
            if let Some(host) = h.remove(header::HOST) {
                h.insert(X_FORWARDED_HOST.clone(), host);
            }
            h.insert(X_REQUEST_ID.clone(), id.clone());
            h.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
            let valid = h
                .get(&TRACEPARENT)
                .is_some_and(|v| parse_traceparent(v.as_bytes()).is_some());
            if !valid {
                h.remove(&TRACESTATE);
            }
        }
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let heads: &[&[(&str, &str)]] = &[
            &[],
            &[("host", "a.example"), ("content-length", "12")],
            &[("content-type", "application/json"), ("x-user-id", "u1")],
            &[
                ("connection", "x-forwarded-for, host"),
                ("x-forwarded-for", "1.2.3.4"),
                ("host", "h"),
            ],
            &[
                ("connection", "traceparent"),
                ("traceparent", parent),
                ("tracestate", "a=b"),
            ],
            &[
                ("traceparent", parent),
                ("tracestate", "a=b"),
                ("expect", "100-continue"),
            ],
            &[("traceparent", "garbage"), ("tracestate", "a=b")],
            &[
                ("tracestate", "a=b"),
                ("x-cutover-version", "forged"),
                ("x-cutover-pin", "v"),
            ],
            &[
                ("x-cutover-outcome", "success"),
                ("content-type", "application/json"),
            ],
            &[
                ("te", "trailers"),
                ("upgrade", "h2c"),
                ("keep-alive", "1"),
                ("proxy-connection", "x"),
            ],
            &[
                ("connection", "keep-alive"),
                ("keep-alive", "timeout=5"),
                ("x-user-id", "u"),
            ],
            &[
                ("connection", "Keep-Alive, TE, close"),
                ("te", "trailers"),
                ("close", "1"),
            ],
            &[
                ("connection", "x-cutover-pin, content-length, upgrade"),
                ("content-length", "3"),
            ],
            &[
                ("connection", "x-a"),
                ("connection", "x-b"),
                ("x-a", "1"),
                ("x-b", "2"),
                ("x-c", "3"),
            ],
            &[
                ("x-forwarded-for", "9.9.9.9"),
                ("x-forwarded-for", " 8.8.8.8 "),
            ],
        ];
        let id = HeaderValue::from_static("rid-1");
        for head in heads {
            let mut original = HeaderMap::new();
            for (name, value) in *head {
                original.append(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
            }
            let mut h = original.clone();
            let mut expected = original.clone();
            unconditional(&mut expected, peer(), &id);
            prepare_forward(&mut h, None, peer(), false, &id);
            let traceparent = h.remove(&TRACEPARENT).expect("always set");
            assert_eq!(traceparent.len(), 55, "{head:?}");
            expected.remove(&TRACEPARENT);
            assert_eq!(h, expected, "{head:?}");

            let mut h = original.clone();
            let mut expected = original;
            unconditional_strip(&mut expected);
            let outcome = prepare_response(&mut h);
            assert_eq!(h, expected, "{head:?}");
            assert_eq!(
                outcome.is_some(),
                head.iter().any(|(n, _)| *n == "x-cutover-outcome")
            );
        }
    }

    #[test]
    fn forwarded_for_alone_is_the_peer() {
        for peer in [
            "10.0.0.9:1",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:1",
            "[::ffff:1.2.3.4]:1",
        ] {
            let peer: SocketAddr = peer.parse().expect("addr");
            let mut h = HeaderMap::new();
            append_forwarded_for(&mut h, peer.ip(), false);
            assert_eq!(h["x-forwarded-for"], peer.ip().to_string().as_str());
        }
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
        let present = Present::scan(&h);
        propagate(&mut h, present);
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
            let present = Present::scan(&h);
            propagate(&mut h, present);
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
