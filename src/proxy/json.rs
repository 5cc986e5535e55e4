//! JSON body rewrites: `set_json` and the `"stream"` flag.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::ascii::json_escape_at;

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
///
/// `serde_json` checks the document and unescapes the keys; the value
/// ranges come from a scan that may trust the structure it checked. (The
/// ranges once came from `RawValue`, but its crate feature makes every
/// `Value` parse read an object keyed `$serde_json::private::RawValue` as
/// the JSON text it holds: a model answer could then pose as another.)
fn top_level_members(body: &[u8]) -> Option<Vec<(Cow<'_, str>, std::ops::Range<usize>)>> {
    struct Keys;

    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<Cow<'de, str>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut keys = Vec::new();
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                map.next_value::<IgnoredAny>()?;
                keys.push(key);
            }
            Ok(keys)
        }
    }

    // JSON text is UTF-8; checked once here, the string parse need not.
    let text = std::str::from_utf8(body).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let keys = (&mut de).deserialize_map(Keys).ok()?;
    de.end().ok()?;
    let spans = value_spans(body)?;
    (keys.len() == spans.len()).then(|| keys.into_iter().zip(spans).collect())
}

/// The byte ranges of the top-level values of `body`, a JSON object that
/// `serde_json` has already read: only the structure is followed here.
fn value_spans(body: &[u8]) -> Option<Vec<std::ops::Range<usize>>> {
    let mut spans = Vec::new();
    let mut at = skip_space(body, 0);
    (body.get(at) == Some(&b'{')).then_some(())?;
    at += 1;
    loop {
        at = skip_space(body, at);
        match body.get(at)? {
            b'}' => return Some(spans),
            b',' => at += 1,
            b'"' => {
                at = skip_space(body, string_end(body, at)?);
                (body.get(at) == Some(&b':')).then_some(())?;
                let start = skip_space(body, at + 1);
                at = value_end(body, start)?;
                spans.push(start..at);
            }
            _ => return None,
        }
    }
}

fn skip_space(body: &[u8], mut at: usize) -> usize {
    // The document is checked: only JSON's four spaces can be here.
    while body.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// Just past the closing quote of the string that opens at `at`: a
/// message's text can be long, so eight bytes at a time.
fn string_end(body: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        // The document is checked: the stop is a `"` or a `\`, not a
        // control character.
        i += json_escape_at(body.get(i..)?);
        match body.get(i)? {
            b'"' => return Some(i + 1),
            // An escape is two bytes at least (`\u` is six, all plain).
            _ => i += 2,
        }
    }
}

/// Just past the value that starts at `at`.
fn value_end(body: &[u8], at: usize) -> Option<usize> {
    match body.get(at)? {
        b'"' => string_end(body, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match body.get(i)? {
                    b'"' => i = string_end(body, i)?,
                    b'{' | b'[' => {
                        depth += 1;
                        i += 1;
                    }
                    b'}' | b']' => {
                        depth -= 1;
                        i += 1;
                        if depth == 0 {
                            return Some(i);
                        }
                    }
                    _ => i += 1,
                }
            }
        }
        // A number or a literal: it runs to the next delimiter.
        _ => {
            let mut i = at;
            while body
                .get(i)
                .is_some_and(|b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace())
            {
                i += 1;
            }
            Some(i)
        }
    }
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
    fn finds_each_value_across_strings_escapes_and_nesting() {
        let body = br#" { "a\"b" : "x}\"]," , "n":-1.5e3,"o":{"k":["}",{"q":"\\"}]},
            "t" :true, "z":[ ] } "#;
        let found: Vec<(String, &str)> = top_level_members(body)
            .expect("an object")
            .into_iter()
            .map(|(k, r)| {
                (
                    k.into_owned(),
                    std::str::from_utf8(&body[r]).expect("utf-8"),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("a\"b".to_string(), r#""x}\"],""#),
                ("n".to_string(), "-1.5e3"),
                ("o".to_string(), r#"{"k":["}",{"q":"\\"}]}"#),
                ("t".to_string(), "true"),
                ("z".to_string(), "[ ]"),
            ]
        );
        // Invalid UTF-8 anywhere is not JSON: the body goes on unchanged.
        assert!(top_level_members(b"{\"a\":\"\xff\"}").is_none());
    }

    #[test]
    fn an_object_keyed_with_serde_jsons_raw_value_token_is_an_object() {
        // serde_json's `raw_value` feature would read this as the number 1
        // in every `Value` parse, model answers included. Nothing in the
        // build may turn it back on.
        let v: serde_json::Value =
            serde_json::from_str(r#"{"$serde_json::private::RawValue":"1"}"#).expect("json");
        assert!(v.is_object(), "{v}");
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
