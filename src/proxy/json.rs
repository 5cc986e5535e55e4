//! JSON body rewrites: `set_json` and the `"stream"` flag.

use bytes::Bytes;
use serde::Deserialize;

/// Set top-level fields of a JSON object body. `None` when the body is not
/// a JSON object: it is then forwarded unchanged.
pub fn set_fields(
    body: &[u8],
    fields: &serde_json::Map<String, serde_json::Value>,
) -> Option<Bytes> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).ok()?;
    for (k, v) in fields {
        object.insert(k.clone(), v.clone());
    }
    serde_json::to_vec(&object).ok().map(Bytes::from)
}

/// Did an OpenAI-style request ask for a stream (`"stream": true`)?
pub fn wants_stream(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Flag {
        #[serde(default)]
        stream: bool,
    }
    serde_json::from_slice::<Flag>(body).is_ok_and(|f| f.stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sets_fields_on_objects_only() {
        let mut fields = serde_json::Map::new();
        fields.insert("model".into(), json!("gpt-4o-2024-08-06"));
        let out = set_fields(br#"{"model":"x","messages":[]}"#, &fields).expect("object");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["model"], "gpt-4o-2024-08-06");
        assert_eq!(v["messages"], json!([]));
        assert!(set_fields(b"not json", &fields).is_none());
        assert!(set_fields(b"[1,2]", &fields).is_none());
    }

    #[test]
    fn stream_flag() {
        assert!(wants_stream(br#"{"stream": true, "messages": [{"a": 1}]}"#));
        assert!(!wants_stream(br#"{"stream": false}"#));
        assert!(!wants_stream(br#"{}"#));
        assert!(!wants_stream(b"nope"));
    }
}
