//! Session affinity (SPEC §3): a protocol session (MCP's streamable HTTP
//! transport, `mcp-session-id`) stays on the version that opened it.
//!
//! The version travels in the session id itself, so every replica and
//! every restart agrees with no shared state: the client receives the
//! upstream's id as `VERSION.VALUE`, and a request carrying `VERSION.VALUE`
//! for a version of the route goes to that version with the bare `VALUE`
//! (the upstream sees its own id). A value that names no version, or that
//! is not visible ASCII, is left alone: forwarded unchanged and split as
//! usual.

use http::HeaderValue;

/// A request's protocol session, when its session header names a version
/// of the route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Session {
    /// The version (by index) takes traffic: the request goes there, with
    /// the upstream's bare id in the header.
    Live(usize, HeaderValue),
    /// The version has weight 0 (rolled back, or out of the split): the
    /// client must start a new session (`404`).
    Gone(usize),
}

/// Visible ASCII (0x21..=0x7E), what MCP allows in a session id.
pub fn is_visible_ascii(value: &[u8]) -> bool {
    !value.is_empty() && value.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// Which of `names` (in order, by index) a session value names: the
/// longest name that, with a dot, starts the value, followed by a
/// non-empty bare value. Returns the index and where the bare value starts.
pub fn named_version<'a>(
    names: impl IntoIterator<Item = &'a [u8]>,
    value: &[u8],
) -> Option<(usize, usize)> {
    if !is_visible_ascii(value) {
        return None;
    }
    let mut best: Option<(usize, usize)> = None;
    for (index, name) in names.into_iter().enumerate() {
        let at = name.len() + 1;
        if value.len() > at
            && value.starts_with(name)
            && value[name.len()] == b'.'
            && best.is_none_or(|(_, best_at)| at > best_at)
        {
            best = Some((index, at));
        }
    }
    best
}

/// What the client receives for an upstream's session id: `VERSION.VALUE`.
/// `None` (leave it as it is) when the id is not visible ASCII.
pub fn prefixed(version: &str, value: &HeaderValue) -> Option<HeaderValue> {
    let value = value.as_bytes();
    if !is_visible_ascii(value) {
        return None;
    }
    let mut out = Vec::with_capacity(version.len() + 1 + value.len());
    out.extend_from_slice(version.as_bytes());
    out.push(b'.');
    out.extend_from_slice(value);
    HeaderValue::from_bytes(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(names: &[&str], value: &str) -> Option<(usize, usize)> {
        named_version(names.iter().map(|n| n.as_bytes()), value.as_bytes())
    }

    #[test]
    fn the_longest_version_with_a_dot_wins() {
        let names = ["v1", "v1.5", "canary"];
        assert_eq!(named(&names, "v1.abc"), Some((0, 3)));
        assert_eq!(named(&names, "v1.5.abc"), Some((1, 5)));
        assert_eq!(named(&names, "canary.9f3e-ab"), Some((2, 7)));
        // A dot in the bare value is kept for the upstream.
        assert_eq!(named(&names, "v1.a.b"), Some((0, 3)));
    }

    #[test]
    fn values_naming_no_version_are_left_alone() {
        let names = ["v1", "v2"];
        for value in [
            "abc", "v3.abc", "v1", "v1.", "v1abc", ".v1.x", "V1.abc", "v1.a b", "v1.é",
        ] {
            assert_eq!(named(&names, value), None, "{value:?}");
        }
    }

    #[test]
    fn prefixing_keeps_the_upstream_id_whole() {
        let v = HeaderValue::from_static("1868a90c-4f3a");
        assert_eq!(
            prefixed("v2", &v).as_ref().map(|h| h.as_bytes()),
            Some(&b"v2.1868a90c-4f3a"[..])
        );
        assert_eq!(prefixed("v2", &HeaderValue::from_static("has space")), None);
        // Round trip: what the client gets back names the version.
        let back = prefixed("v1.5", &v).expect("prefixed");
        assert_eq!(
            named(&["v1", "v1.5"], back.to_str().unwrap_or("")),
            Some((1, 5))
        );
    }
}
