//! Shared secrets a request must present (the feedback and pin tokens),
//! compared in constant time.
//!
//! A token is kept as its blake3 digest, and a presented value is hashed
//! and compared digest to digest: `blake3::Hash`'s `==` is constant-time,
//! so the comparison takes the same time wherever the first wrong byte is,
//! and hashing first also hides the token's length. A plain `==` on the
//! strings would return early and leak, byte by byte, how much of a guess
//! was right.

use http::HeaderMap;
use http::header::AUTHORIZATION;

#[derive(Clone)]
pub struct Secret(blake3::Hash);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn new(token: &str) -> Secret {
        Secret(blake3::hash(token.as_bytes()))
    }

    /// Whether `given` is the token.
    pub fn matches(&self, given: &[u8]) -> bool {
        blake3::hash(given) == self.0
    }

    /// Whether the request carries `Authorization: Bearer <token>`.
    pub fn bearer_matches(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|given| self.matches(given))
    }
}

/// The credentials of an `Authorization: Bearer ...` header (the scheme is
/// case-insensitive, RFC 9110 §11.1).
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ')?;
    Some(&rest[start..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(v).expect("value"));
        h
    }

    #[test]
    fn matches_exactly() {
        let s = Secret::new("s3cret");
        assert!(s.matches(b"s3cret"));
        assert!(!s.matches(b"s3cre"));
        assert!(!s.matches(b"s3cret2"));
        assert!(s.bearer_matches(&auth("Bearer s3cret")));
        assert!(s.bearer_matches(&auth("bearer  s3cret")));
        assert!(!s.bearer_matches(&auth("Basic s3cret")));
        assert!(!s.bearer_matches(&HeaderMap::new()));
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
