//! The cache key's canonical JSON (`cache::key`): never panics; its output
//! is a fixed point (canonicalising it again changes nothing) and means
//! the same JSON value as the input; any body serde_json accepts (and
//! that is not nested past the limit) is canonicalised, not keyed raw.
#![no_main]

use cutover::cache::canonical::{MAX_DEPTH, canonical_json_bytes};
use cutover::cache::{KeyInput, RequestInput, cache_key, is_deterministic};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// An upper bound on the nesting (brackets inside strings count too).
fn nesting(data: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for &b in data {
        match b {
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fuzz_target!(|data: &[u8]| {
    let canonical = canonical_json_bytes(data);
    let parsed = serde_json::from_slice::<Value>(data);
    if let Some(c) = &canonical {
        assert_eq!(
            canonical_json_bytes(c).as_ref(),
            Some(c),
            "not a fixed point"
        );
        if let (Ok(before), Ok(after)) = (&parsed, serde_json::from_slice::<Value>(c)) {
            assert_eq!(before, &after, "the canonical form means something else");
        }
    } else if parsed.is_ok() {
        assert!(nesting(data) >= MAX_DEPTH, "valid JSON keyed raw");
    }
    let _ = is_deterministic(data);
    let deps = serde_json::Map::new();
    let method = http::Method::POST;
    let key = |body: &[u8]| {
        cache_key(&KeyInput {
            route: "r",
            version: "v",
            deps: &deps,
            set_json: None,
            request: RequestInput {
                method: &method,
                path: "/v1/chat/completions",
                query: None,
                content_type: None,
                body,
                vary: &[],
            },
        })
    };
    if let Some(c) = &canonical {
        // Whitespace and member order do not change the key.
        assert_eq!(key(data), key(c));
    }
});
