//! The cache key: blake3 over a canonical, unambiguous encoding of every
//! request input that can change the upstream's answer (SPEC §6).
//!
//! # Encoding (version 1)
//!
//! `field(x)` is `len(x)` as a u64 little-endian, then the bytes of `x`, so
//! no two different inputs share an encoding: a boundary shift between two
//! fields (route `"a"` + version `"bc"` against `"ab"` + `"c"`) changes the
//! lengths. `flag` is one byte, `0` absent and `1` present. In this order:
//!
//! 1. `field("cutover/cache-key/v1")`: the encoding's version tag. Changing
//!    the encoding changes the tag, so old entries simply miss.
//! 2. `field(route name)`
//! 3. `field(version name)`
//! 4. `field(canonical JSON of the version's deps table)`
//! 5. `set_json`: `flag`, then when present `field(canonical JSON)`
//! 6. `field(method)`
//! 7. `field(path)`
//! 8. query: the pair count as a u64 LE, then per pair, sorted,
//!    `field(name)` `flag` [`field(value)`] (see [Query](#query))
//! 9. content type: `flag`, then when present `field(media type)`, the part
//!    before any `;`, trimmed and ASCII-lowercased
//! 10. body: one tag byte, `b'J'` for canonical JSON or `b'R'` for raw
//!     bytes, then `field(bytes)`. The tag keeps a raw body from ever
//!     colliding with a canonical one that has the same bytes.
//! 11. vary headers, in config order: the count as a u64 LE, then per
//!     header `field(name)` `flag` [`field(value bytes)`]. An absent header
//!     (flag `0`) differs from an empty one (flag `1`, length `0`).
//!
//! # Query
//!
//! The raw query is split on `&`; empty segments (`a=1&&b=2`, a trailing
//! `&`, a bare `?`) carry no parameter and are dropped, so `/p`, `/p?` and
//! `/p?&` share a key. Each segment splits at its first `=` into a name and
//! an optional value (`k` and `k=` differ). The pairs are sorted by (name,
//! value) bytes, absent value first. Names and values are **not**
//! percent-decoded: `a=%41` and `a=A` key differently. Decoding would mean
//! choosing for the upstream whether `+` is a space (form encoding) or a
//! plus (RFC 3986); keeping the raw bytes can only cost a hit, never serve
//! one request's answer to a different request.
//!
//! # Body
//!
//! A body that is valid JSON (whatever its content type) is keyed by its
//! canonical form ([`super::canonical`] says which); any other body by its
//! raw bytes. The deps and `set_json` tables are written the same way.
//!
//! The content type is keyed as well (an addition to the §6 list): the
//! same bytes sent as `text/plain` and as `application/json` may get
//! different answers, and clients of one application send one content type,
//! so it costs no hits in practice.

use std::fmt;

use http::{HeaderName, HeaderValue, Method};
use serde_json::{Map, Value};

use super::canonical::{canonical_json, write_map};

/// The encoding's version tag, the first field of every key.
const KEY_VERSION: &[u8] = b"cutover/cache-key/v1";

/// Body tag: the bytes that follow are canonical JSON.
const BODY_JSON: u8 = b'J';
/// Body tag: the bytes that follow are the body as received.
const BODY_RAW: u8 = b'R';

/// A cache key: the blake3 hash of the canonical encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    pub const fn from_bytes(bytes: [u8; 32]) -> CacheKey {
        CacheKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CacheKey(")?;
        fmt::Display::fmt(self, f)?;
        f.write_str(")")
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Everything the key is computed from, borrowed from the request and the
/// chosen version's config.
#[derive(Clone, Copy, Debug)]
pub struct KeyInput<'a> {
    pub route: &'a str,
    pub version: &'a str,
    /// The version's full deps table.
    pub deps: &'a Map<String, Value>,
    /// The version's `set_json`, if it has one.
    pub set_json: Option<&'a Map<String, Value>>,
    /// What the request adds.
    pub request: RequestInput<'a>,
}

/// The cache key of a request. Never panics.
pub fn cache_key(input: &KeyInput<'_>) -> CacheKey {
    CacheKey(*blake3::hash(&encode(input)).as_bytes())
}

/// Items 1 to 5 of the encoding: what a target fixes (route, version,
/// deps, `set_json`). Encoded once when a config generation is compiled,
/// so a lookup copies these bytes instead of canonicalising the deps and
/// `set_json` tables again; the key is the same as [`cache_key`]'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPrefix(Box<[u8]>);

impl KeyPrefix {
    pub fn new(
        route: &str,
        version: &str,
        deps: &Map<String, Value>,
        set_json: Option<&Map<String, Value>>,
    ) -> KeyPrefix {
        let mut out = Vec::with_capacity(128);
        write_prefix(&mut out, route, version, deps, set_json);
        KeyPrefix(out.into_boxed_slice())
    }
}

/// What a request adds to its target's [`KeyPrefix`] (items 6 to 11).
#[derive(Clone, Copy, Debug)]
pub struct RequestInput<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    /// The raw query, without the `?`.
    pub query: Option<&'a str>,
    pub content_type: Option<&'a HeaderValue>,
    pub body: &'a [u8],
    /// The route's `vary` headers in config order, each with its value in
    /// the request (`None` when the request does not carry it).
    pub vary: &'a [(HeaderName, Option<&'a HeaderValue>)],
}

/// The cache key of a request on a target whose prefix was encoded ahead:
/// equal to [`cache_key`] over the same inputs.
pub fn cache_key_with(prefix: &KeyPrefix, request: &RequestInput<'_>) -> CacheKey {
    let mut out = Vec::with_capacity(prefix.0.len() + 128 + request.body.len());
    out.extend_from_slice(&prefix.0);
    write_request(&mut out, request, false);
    CacheKey(*blake3::hash(&out).as_bytes())
}

/// The canonical encoding described in the module docs, before hashing.
fn encode(input: &KeyInput<'_>) -> Vec<u8> {
    encode_with(input, false)
}

/// `force_raw` keys the body raw even when it is JSON (tests only use it,
/// to show the body tag keeps the two apart).
fn encode_with(input: &KeyInput<'_>, force_raw: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + input.request.body.len());
    write_prefix(
        &mut out,
        input.route,
        input.version,
        input.deps,
        input.set_json,
    );
    write_request(&mut out, &input.request, force_raw);
    out
}

/// Items 1 to 5.
fn write_prefix(
    out: &mut Vec<u8>,
    route: &str,
    version: &str,
    deps: &Map<String, Value>,
    set_json: Option<&Map<String, Value>>,
) {
    let mut scratch = Vec::with_capacity(128);

    field(out, KEY_VERSION);
    field(out, route.as_bytes());
    field(out, version.as_bytes());

    write_map(&mut scratch, deps);
    field(out, &scratch);

    match set_json {
        None => out.push(0),
        Some(map) => {
            out.push(1);
            scratch.clear();
            write_map(&mut scratch, map);
            field(out, &scratch);
        }
    }
}

/// Items 6 to 11.
fn write_request(out: &mut Vec<u8>, input: &RequestInput<'_>, force_raw: bool) {
    field(out, input.method.as_str().as_bytes());
    field(out, input.path.as_bytes());
    write_query(out, input.query.unwrap_or(""));

    match input.content_type {
        None => out.push(0),
        Some(ct) => {
            out.push(1);
            let raw = ct.as_bytes();
            let essence = raw.split(|&b| b == b';').next().unwrap_or(raw);
            field(out, &essence.trim_ascii().to_ascii_lowercase());
        }
    }

    match canonical_json(input.body).filter(|_| !force_raw) {
        Some(canon) => {
            out.push(BODY_JSON);
            field(out, &canon.out);
        }
        None => {
            out.push(BODY_RAW);
            field(out, input.body);
        }
    }

    len(out, input.vary.len());
    for (name, value) in input.vary {
        field(out, name.as_str().as_bytes());
        match value {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                field(out, v.as_bytes());
            }
        }
    }
}

fn len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u64).to_le_bytes());
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    len(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn write_query(out: &mut Vec<u8>, query: &str) {
    let mut pairs: Vec<(&[u8], Option<&[u8]>)> = query
        .as_bytes()
        .split(|&b| b == b'&')
        .filter(|s| !s.is_empty())
        .map(|s| match s.iter().position(|&b| b == b'=') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        })
        .collect();
    pairs.sort_unstable();
    len(out, pairs.len());
    for (name, value) in pairs {
        field(out, name);
        match value {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                field(out, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::bypass::is_deterministic;
    use crate::cache::canonical::{MAX_DEPTH, canonical_json, write_map};
    use proptest::prelude::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    /// An owned request, so each test can change one field and compare.
    #[derive(Clone)]
    struct Req {
        route: String,
        version: String,
        deps: Map<String, Value>,
        set_json: Option<Map<String, Value>>,
        method: Method,
        path: String,
        query: Option<String>,
        content_type: Option<HeaderValue>,
        body: Vec<u8>,
        vary: Vec<(HeaderName, Option<HeaderValue>)>,
    }

    impl Req {
        fn key(&self) -> CacheKey {
            cache_key(&self.input(&self.vary()))
        }

        fn vary(&self) -> Vec<(HeaderName, Option<&HeaderValue>)> {
            self.vary
                .iter()
                .map(|(n, v)| (n.clone(), v.as_ref()))
                .collect()
        }

        fn input<'a>(&'a self, vary: &'a [(HeaderName, Option<&'a HeaderValue>)]) -> KeyInput<'a> {
            KeyInput {
                route: &self.route,
                version: &self.version,
                deps: &self.deps,
                set_json: self.set_json.as_ref(),
                request: RequestInput {
                    method: &self.method,
                    path: &self.path,
                    query: self.query.as_deref(),
                    content_type: self.content_type.as_ref(),
                    body: &self.body,
                    vary,
                },
            }
        }

        fn with_body(&self, body: &str) -> Req {
            Req {
                body: body.as_bytes().to_vec(),
                ..self.clone()
            }
        }
    }

    fn base() -> Req {
        Req {
            route: "chat".into(),
            version: "v2".into(),
            deps: map(json!({"prompt": "p-7", "model": "gpt-x", "index": 3})),
            set_json: Some(map(json!({"temperature": 0}))),
            method: Method::POST,
            path: "/v1/chat/completions".into(),
            query: Some("a=1&b=2".into()),
            content_type: Some(HeaderValue::from_static("application/json")),
            body: br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#.to_vec(),
            vary: vec![
                (
                    HeaderName::from_static("authorization"),
                    Some(HeaderValue::from_static("Bearer t1")),
                ),
                (
                    HeaderName::from_static("x-tenant"),
                    Some(HeaderValue::from_static("acme")),
                ),
            ],
        }
    }

    #[test]
    fn a_prefix_encoded_ahead_gives_the_same_key() {
        let mut variants = vec![base(), base().with_body("not json"), base().with_body("")];
        let mut r = base();
        r.set_json = None;
        r.deps = Map::new();
        r.query = None;
        r.content_type = None;
        r.vary.clear();
        variants.push(r);
        for r in &variants {
            let prefix = KeyPrefix::new(&r.route, &r.version, &r.deps, r.set_json.as_ref());
            let vary = r.vary();
            let with = cache_key_with(&prefix, &r.input(&vary).request);
            assert_eq!(with, r.key());
        }
    }

    #[test]
    fn same_input_same_key_and_debug_is_hex() {
        let k = base().key();
        assert_eq!(k, base().key());
        let dbg = format!("{k:?}");
        assert!(dbg.starts_with("CacheKey(") && dbg.len() == "CacheKey()".len() + 64);
        assert!(format!("{k}").bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn insensitive_to_json_key_order_and_whitespace() {
        let r = base();
        let shuffled = r.with_body(
            "\n { \"messages\" : [ { \"content\":\"hi\" ,\t\"role\": \"user\" } ] ,\r\n \"model\":\"m\" } \n",
        );
        assert_eq!(r.key(), shuffled.key());
    }

    #[test]
    fn sensitive_to_every_other_field() {
        let b = base();
        let k = b.key();
        let mut variants: Vec<(&str, Req)> = Vec::new();
        let mut v = b.clone();
        v.route = "chat2".into();
        variants.push(("route", v));
        let mut v = b.clone();
        v.version = "v3".into();
        variants.push(("version", v));
        for dep in ["prompt", "model", "index"] {
            let mut v = b.clone();
            v.deps.insert(dep.into(), json!("changed"));
            variants.push(("deps entry", v));
        }
        let mut v = b.clone();
        v.deps.insert("tools".into(), json!("t-1"));
        variants.push(("deps added entry", v));
        let mut v = b.clone();
        v.set_json = Some(map(json!({"temperature": 1})));
        variants.push(("set_json value", v));
        let mut v = b.clone();
        v.set_json = None;
        variants.push(("set_json absent", v));
        let mut v = b.clone();
        v.set_json = Some(Map::new());
        variants.push(("set_json empty", v));
        let mut v = b.clone();
        v.method = Method::PUT;
        variants.push(("method", v));
        let mut v = b.clone();
        v.path = "/v1/completions".into();
        variants.push(("path", v));
        let mut v = b.clone();
        v.query = Some("a=1&b=3".into());
        variants.push(("query value", v));
        let mut v = b.clone();
        v.query = Some("a=1&b".into());
        variants.push(("query value absent", v));
        let mut v = b.clone();
        v.query = None;
        variants.push(("query absent", v));
        let mut v = b.clone();
        v.content_type = Some(HeaderValue::from_static("text/plain"));
        variants.push(("content type", v));
        variants.push((
            "body",
            b.with_body(r#"{"model":"m","messages":[{"role":"user","content":"ho"}]}"#),
        ));
        for i in 0..b.vary.len() {
            let mut v = b.clone();
            v.vary[i].1 = Some(HeaderValue::from_static("other"));
            variants.push(("vary value", v));
            let mut v = b.clone();
            v.vary[i].1 = None;
            variants.push(("vary absent", v));
            let mut v = b.clone();
            v.vary[i].1 = Some(HeaderValue::from_static(""));
            variants.push(("vary empty", v));
        }
        for (what, v) in &variants {
            assert_ne!(k, v.key(), "{what} did not change the key");
        }
        // And all pairwise distinct.
        let mut keys: Vec<CacheKey> = variants.iter().map(|(_, v)| v.key()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), variants.len());
    }

    #[test]
    fn absent_vary_header_differs_from_empty() {
        let mut absent = base();
        absent.vary[0].1 = None;
        let mut empty = base();
        empty.vary[0].1 = Some(HeaderValue::from_static(""));
        assert_ne!(absent.key(), empty.key());
    }

    #[test]
    fn query_is_order_insensitive() {
        let mut a = base();
        a.query = Some("b=2&a=1&c=x%20y&a=0".into());
        let mut b = base();
        b.query = Some("a=0&c=x%20y&a=1&b=2".into());
        assert_eq!(a.key(), b.key());
        // Raw bytes, not decoded.
        let mut c = base();
        c.query = Some("a=0&c=x y&a=1&b=2".into());
        assert_ne!(a.key(), c.key());
        // Empty segments carry no parameter.
        let mut d = base();
        d.query = Some("&a=0&&c=x%20y&a=1&b=2&".into());
        assert_eq!(a.key(), d.key());
        let mut none = base();
        none.query = None;
        let mut bare = base();
        bare.query = Some(String::new());
        assert_eq!(none.key(), bare.key());
        // A name/value boundary shift is a different query.
        let mut e = base();
        e.query = Some("ab=c".into());
        let mut f = base();
        f.query = Some("a=bc".into());
        assert_ne!(e.key(), f.key());
    }

    #[test]
    fn numbers_are_preserved_exactly() {
        let r = base();
        assert_ne!(
            r.with_body(r#"{"n":1.0}"#).key(),
            r.with_body(r#"{"n":1}"#).key()
        );
        assert_ne!(
            r.with_body(r#"{"n":1e0}"#).key(),
            r.with_body(r#"{"n":1}"#).key()
        );
        assert_ne!(
            r.with_body(r#"{"n":1E0}"#).key(),
            r.with_body(r#"{"n":1e0}"#).key()
        );
        let a = r.with_body(r#"{"n":1234567890123456789012345678901234567890}"#);
        let b = r.with_body(r#"{"n":1234567890123456789012345678901234567891}"#);
        // Both are valid JSON, so canonicalised (not just raw-keyed).
        assert!(canonical_json(&a.body).is_some() && canonical_json(&b.body).is_some());
        assert_ne!(a.key(), b.key());
        assert_eq!(
            a.key(),
            r.with_body(" { \"n\" : 1234567890123456789012345678901234567890 } ")
                .key()
        );
    }

    #[test]
    fn canonical_form_is_as_documented() {
        let canon = |s: &str| canonical_json(s.as_bytes()).map(|c| c.out);
        assert_eq!(
            canon(
                r#" { "b" : [1, 2.50, -0e+1] , "a" : {"y":null,"x":true} , "é":"\/\u00e9\n\u0001" } "#
            ),
            Some(
                r#"{"a":{"x":true,"y":null},"b":[1,2.50,-0e+1],"é":"/é\n\u0001"}"#
                    .as_bytes()
                    .to_vec()
            )
        );
        // Duplicates keep their order.
        assert_eq!(
            canon(r#"{"a":2,"b":0,"a":1}"#),
            Some(br#"{"a":2,"a":1,"b":0}"#.to_vec())
        );
        // Surrogate pairs decode; lone surrogates are not canonicalised.
        assert_eq!(
            canon(r#""\ud83d\ude00""#),
            Some("\"😀\"".as_bytes().to_vec())
        );
        assert_eq!(canon(r#""\ud83d""#), None);
        assert_eq!(canon(r#""\ude00""#), None);
        for bad in [
            "",
            " ",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "tru",
            "nul",
            "\"a",
            "\"\t\"",
            "{\"a\" 1}",
            "{a:1}",
            "[1 2]",
            "\"\\x\"",
            "1 2",
            "\u{feff}1",
        ] {
            assert_eq!(canon(bad), None, "{bad:?} should not be JSON");
        }
        assert!(canonical_json(b"\"\xff\"").is_none());
    }

    #[test]
    fn escapes_are_canonicalised() {
        let r = base();
        assert_eq!(
            r.with_body(r#"{"s":"\u00e9"}"#).key(),
            r.with_body(r#"{"s":"é"}"#).key()
        );
        assert_eq!(
            r.with_body(r#"{"s":"\/"}"#).key(),
            r.with_body(r#"{"s":"/"}"#).key()
        );
        assert_eq!(
            r.with_body(r#"{"\u0073":"\u0041\t"}"#).key(),
            r.with_body(r#"{"s":"A\u0009"}"#).key()
        );
        assert_ne!(
            r.with_body(r#"{"s":"a"}"#).key(),
            r.with_body(r#"{"s":"b"}"#).key()
        );
    }

    #[test]
    fn non_json_body_is_keyed_by_its_bytes() {
        let r = base();
        let a = r.with_body("hello world");
        assert_eq!(a.key(), r.with_body("hello world").key());
        assert_ne!(a.key(), r.with_body("hello  world").key());
        // Invalid JSON keeps its whitespace significance.
        assert_ne!(
            r.with_body(r#"{"a": 1,}"#).key(),
            r.with_body(r#"{"a":1,}"#).key()
        );
    }

    #[test]
    fn raw_body_never_collides_with_canonical_json() {
        // `{"a":1}` is its own canonical form. Keyed raw, the same bytes
        // give another encoding and key: the body tag keeps them apart.
        let r = base().with_body(r#"{"a":1}"#);
        let as_json = encode_req(&r, false);
        let as_raw = encode_req(&r, true);
        assert_eq!(as_json.len(), as_raw.len());
        assert_ne!(as_json, as_raw);
        assert_ne!(blake3::hash(&as_json), blake3::hash(&as_raw));
        // End to end: an invalid body and a valid one whose canonical text
        // is a prefix-compatible neighbour.
        assert_ne!(
            base().with_body("[1,2").key(),
            base().with_body(" [1,2]").key()
        );
        // A lone surrogate is keyed raw, by its bytes.
        let lone = base().with_body(r#"{"a":"\ud800"}"#);
        assert_eq!(encode_req(&lone, false), encode_req(&lone, true));
        assert_ne!(lone.key(), base().with_body(r#"{"a":"\ud801"}"#).key());
    }

    fn encode_req(r: &Req, force_raw: bool) -> Vec<u8> {
        encode_with(&r.input(&r.vary()), force_raw)
    }

    #[test]
    fn length_prefixes_make_boundaries_unambiguous() {
        let mut a = base();
        a.route = "a".into();
        a.version = "bc".into();
        let mut b = base();
        b.route = "ab".into();
        b.version = "c".into();
        assert_ne!(a.key(), b.key());
        let mut c = base();
        c.method = Method::from_bytes(b"GE").unwrap();
        c.path = "T/x".into();
        let mut d = base();
        d.method = Method::GET;
        d.path = "/x".into();
        assert_ne!(c.key(), d.key());
        let mut e = base();
        e.vary = vec![(
            HeaderName::from_static("ab"),
            Some(HeaderValue::from_static("c")),
        )];
        let mut f = base();
        f.vary = vec![(
            HeaderName::from_static("a"),
            Some(HeaderValue::from_static("bc")),
        )];
        assert_ne!(e.key(), f.key());
    }

    #[test]
    fn deps_are_canonical_and_exact() {
        let mut a = base();
        a.deps = map(json!({"b": {"y": 1, "x": [1, "two"]}, "a": 1.5}));
        let mut b = base();
        b.deps = map(json!({"a": 1.5, "b": {"x": [1, "two"], "y": 1}}));
        assert_eq!(a.key(), b.key());
        let mut out = Vec::new();
        write_map(&mut out, &a.deps);
        assert_eq!(out, br#"{"a":1.5,"b":{"x":[1,"two"],"y":1}}"#);
        let mut c = base();
        c.deps = map(json!({"a": 1.5, "b": {"x": [1, "two"], "y": 1.0}}));
        assert_ne!(a.key(), c.key());
        // Nested config values do not recurse on our stack.
        let mut deep = json!(1);
        for _ in 0..100_000 {
            deep = Value::Array(vec![deep]);
        }
        let mut d = base();
        d.deps = map(json!({}));
        d.deps.insert("deep".into(), deep);
        let _ = d.key();
        // serde_json's own Drop recurses; dismantle the value iteratively.
        let mut v = d.deps.remove("deep");
        while let Some(Value::Array(mut items)) = v {
            v = items.pop();
        }
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let r = base();
        let deep = "[".repeat(10_000);
        let k = r.with_body(&deep).key();
        assert_ne!(k, r.with_body(&"[".repeat(10_001)).key());
        let balanced = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(canonical_json(balanced.as_bytes()).is_none());
        let _ = r.with_body(&balanced).key();
        let objs = "{\"a\":".repeat(10_000);
        let _ = r.with_body(&objs).key();
        // At the bound it is still canonicalised.
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(canonical_json(ok.as_bytes()).is_some());
        let over = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(canonical_json(over.as_bytes()).is_none());
    }

    /// A JSON value for the proptest, rendered two ways.
    #[derive(Clone, Debug)]
    enum J {
        Null,
        Bool(bool),
        Num(String),
        Str(String),
        Arr(Vec<J>),
        Obj(Vec<(String, J)>),
    }

    fn json_strategy() -> impl Strategy<Value = J> {
        let leaf = prop_oneof![
            Just(J::Null),
            any::<bool>().prop_map(J::Bool),
            "-?(0|[1-9][0-9]{0,45})(\\.[0-9]{1,6})?([eE][+-]?[0-9]{1,3})?".prop_map(J::Num),
            any::<String>().prop_map(J::Str),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(J::Arr),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| J::Obj(m.into_iter().collect())),
            ]
        })
    }

    /// xorshift64: the proptest seed drives shuffling and whitespace.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn ws(&mut self, out: &mut String) {
            for _ in 0..self.below(3) {
                out.push([' ', '\t', '\n', '\r'][self.below(4)]);
            }
        }
    }

    /// Renders `s` as a JSON string; with an rng, escapes some characters
    /// the long way (`\uXXXX`, `\/`).
    fn render_str(s: &str, out: &mut String, mut rng: Option<&mut Rng>) {
        out.push('"');
        for c in s.chars() {
            let long = rng.as_mut().is_some_and(|r| r.below(4) == 0);
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '/' if long => out.push_str("\\/"),
                c if (c as u32) < 0x20 || long => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{u:04X}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }

    fn render(j: &J, out: &mut String, mut rng: Option<&mut Rng>) {
        if let Some(r) = rng.as_mut() {
            r.ws(out);
        }
        match j {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Num(n) => out.push_str(n),
            J::Str(s) => render_str(s, out, rng.as_deref_mut()),
            J::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    render(item, out, rng.as_deref_mut());
                }
                out.push(']');
            }
            J::Obj(members) => {
                let mut order: Vec<usize> = (0..members.len()).collect();
                if let Some(r) = rng.as_mut() {
                    for i in (1..order.len()).rev() {
                        order.swap(i, r.below(i + 1));
                    }
                }
                out.push('{');
                for (n, &i) in order.iter().enumerate() {
                    if n > 0 {
                        out.push(',');
                    }
                    if let Some(r) = rng.as_mut() {
                        r.ws(out);
                    }
                    render_str(&members[i].0, out, rng.as_deref_mut());
                    if let Some(r) = rng.as_mut() {
                        r.ws(out);
                    }
                    out.push(':');
                    render(&members[i].1, out, rng.as_deref_mut());
                }
                out.push('}');
            }
        }
        if let Some(r) = rng.as_mut() {
            r.ws(out);
        }
    }

    proptest! {
        #[test]
        fn shuffled_keys_and_whitespace_give_the_same_key(
            members in prop::collection::btree_map(any::<String>(), json_strategy(), 0..8),
            seed in 1u64..,
        ) {
            let obj = J::Obj(members.into_iter().collect());
            let mut plain = String::new();
            render(&obj, &mut plain, None);
            let mut noisy = String::new();
            render(&obj, &mut noisy, Some(&mut Rng(seed)));
            // Both are JSON, the plain one as serde_json sees it too.
            prop_assert!(serde_json::from_str::<serde::de::IgnoredAny>(&plain).is_ok());
            prop_assert!(canonical_json(plain.as_bytes()).is_some());
            let r = base();
            prop_assert_eq!(r.with_body(&plain).key(), r.with_body(&noisy).key());
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let mut r = base();
            r.body = body.clone();
            let _ = r.key();
            let _ = is_deterministic(&body);
        }
    }
}
