//! `set_json`'s splice over the client's bytes (`proxy::json`): never
//! panics; on any body serde_json reads as an object it succeeds, and the
//! result is a JSON object whose set fields have the new values and whose
//! other members are unchanged, in the client's order.
#![no_main]

use cutover::proxy::json::set_fields;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let fields = match pick % 3 {
        0 => json!({"model": "gpt-4o-2024-08-06"}),
        1 => json!({"temperature": 0.2, "new": [1, "two", {"x": null}]}),
        _ => json!({"stream": false, "model": "m", "a\u{0}b": "\u{e9}"}),
    };
    let Value::Object(fields) = fields else {
        return;
    };
    let out = set_fields(body, &fields);
    let Ok(before) = serde_json::from_slice::<Map<String, Value>>(body) else {
        return;
    };
    let out = out.expect("a JSON object body was not rewritten");
    let after: Map<String, Value> =
        serde_json::from_slice(&out).expect("the rewritten body is not a JSON object");
    for (k, v) in &fields {
        assert_eq!(after.get(k), Some(v), "{k}");
    }
    for (k, v) in &before {
        if !fields.contains_key(k) {
            assert_eq!(after.get(k), Some(v), "{k} changed");
        }
    }
    assert_eq!(
        after.len(),
        before.len() + fields.keys().filter(|k| !before.contains_key(*k)).count()
    );
});
