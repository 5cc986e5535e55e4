//! JSON body rewrites: `set_json` and the `"stream"` flag.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Set top-level fields of a JSON object body, as a splice over the
/// client's bytes (SPEC §3): an existing key keeps its place and only its
/// value is replaced (every occurrence, if the key is repeated, so no
/// reading of duplicates can see the old value); a new key is appended
/// before the closing brace; everything else, the client's key order,
/// whitespace and the exact text of every number, is copied as it came.
/// `None` when the body is not a JSON object: it is then forwarded
/// unchanged.
pub fn set_fields(
    body: &[u8],
    fields: &serde_json::Map<String, serde_json::Value>,
) -> Option<Bytes> {
    let members = top_level_members(body)?;
    let close = body.iter().rposition(|b| !b.is_ascii_whitespace())?;
    let rendered: Vec<(&str, String)> = fields
        .iter()
        .map(|(k, v)| Some((k.as_str(), serde_json::to_string(v).ok()?)))
        .collect::<Option<_>>()?;
    let mut out = Vec::with_capacity(body.len() + 64 * rendered.len());
    let mut copied = 0;
    for (key, span) in &members {
        if let Some((_, value)) = rendered.iter().find(|(k, _)| *k == key.as_ref()) {
            out.extend_from_slice(&body[copied..span.start]);
            out.extend_from_slice(value.as_bytes());
            copied = span.end;
        }
    }
    out.extend_from_slice(&body[copied..close]);
    let mut any = !members.is_empty();
    for (key, value) in &rendered {
        if members.iter().any(|(k, _)| k.as_ref() == *key) {
            continue;
        }
        if any {
            out.push(b',');
        }
        any = true;
        serde_json::to_writer(&mut out, key).ok()?;
        out.push(b':');
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(&body[close..]);
    Some(Bytes::from(out))
}

/// The top-level members of a JSON object, in order: each key (unescaped)
/// and the byte range of its value in `body`. `None` when `body` is not
/// exactly one JSON object.
fn top_level_members(body: &[u8]) -> Option<Vec<(Cow<'_, str>, std::ops::Range<usize>)>> {
    struct Members<'a>(&'a [u8]);
    type Found<'a> = Vec<(Cow<'a, str>, std::ops::Range<usize>)>;

    impl<'de> Visitor<'de> for Members<'de> {
        type Value = Found<'de>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found<'de>, A::Error> {
            let base = self.0.as_ptr() as usize;
            let mut found = Vec::new();
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                let raw: &'de RawValue = map.next_value()?;
                // The raw value borrows from `body`: its place is pointer
                // arithmetic on the same buffer.
                let start = raw.get().as_ptr() as usize - base;
                found.push((key, start..start + raw.get().len()));
            }
            Ok(found)
        }
    }

    let mut de = serde_json::Deserializer::from_slice(body);
    let members = (&mut de).deserialize_map(Members(body)).ok()?;
    de.end().ok()?;
    Some(members)
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

    fn fields(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match v {
            serde_json::Value::Object(m) => m,
            _ => panic!("an object"),
        }
    }

    fn set(body: &str, v: serde_json::Value) -> Option<String> {
        set_fields(body.as_bytes(), &fields(v)).map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    #[test]
    fn keeps_key_order_whitespace_and_the_text_of_every_number() {
        let body = r#"{ "zeta": 1.10, "model" : "x", "big": 12345678901234567890123,
  "tiny": 1e-400, "alpha": [0.1, 2E+3] }"#;
        assert_eq!(
            set(body, json!({"model": "gpt-4o-2024-08-06"})).as_deref(),
            Some(
                r#"{ "zeta": 1.10, "model" : "gpt-4o-2024-08-06", "big": 12345678901234567890123,
  "tiny": 1e-400, "alpha": [0.1, 2E+3] }"#
            )
        );
        // A new key is appended; an escaped key is the same key.
        assert_eq!(
            set(
                r#"{"model":"x","n":0.30}"#,
                json!({"model": "m", "temperature": 0.2})
            )
            .as_deref(),
            Some(r#"{"model":"m","n":0.30,"temperature":0.2}"#)
        );
        assert_eq!(
            set(
                "{ }
",
                json!({"a": [1, "two"]})
            )
            .as_deref(),
            Some("{ \"a\":[1,\"two\"]}\n")
        );
        // Every duplicate gets the new value.
        assert_eq!(
            set(r#"{"model":"a","model":"b"}"#, json!({"model": "c"})).as_deref(),
            Some(r#"{"model":"c","model":"c"}"#)
        );
        // Nested keys are not top-level keys.
        assert_eq!(
            set(r#"{"o":{"model":"in"}}"#, json!({"model": "top"})).as_deref(),
            Some(r#"{"o":{"model":"in"},"model":"top"}"#)
        );
    }

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
        assert!(set_fields(br#"{"a":1} {"b":2}"#, &fields).is_none());
        assert!(set_fields(br#"{"a":1"#, &fields).is_none());
    }

    #[test]
    fn stream_flag() {
        assert!(wants_stream(br#"{"stream": true, "messages": [{"a": 1}]}"#));
        assert!(!wants_stream(br#"{"stream": false}"#));
        assert!(!wants_stream(br#"{}"#));
        assert!(!wants_stream(b"nope"));
    }
}
