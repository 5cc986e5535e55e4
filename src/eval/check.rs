//! The expectations of one case against what came back.
//!
//! A streamed answer is first folded back into its API's non-streamed
//! document ([`crate::api::reassemble`]: a `chat.completion`, the Responses
//! `response`, the Anthropic `message`, by the case's path), so the same
//! case passes against a streaming and a non-streaming agent. A stream that
//! ended before its API's final event (`[DONE]`, `response.completed`,
//! `message_stop`) is no complete response, and fails the case:
//!
//! * `status`: exact, or any 2xx when the case names none;
//! * `contains`: each substring must appear in the body text (for a stream,
//!   the reassembled document's JSON text) or in a string value of the
//!   document, unescaped, so `"don't"` and `"café"` match however the
//!   server escaped them;
//! * `json`: the value at each JSON pointer equals the expected one (numbers
//!   by value, object keys in any order);
//! * `json_schema`: the document validates;
//! * `max_latency`: the time to the last body byte is within it.

use serde_json::Value;

use super::golden::Case;
use super::run::{Response, Transport};
use crate::api;
use crate::shadow::compare::json_eq;

/// Schema errors listed per failed case, at most.
const MAX_SCHEMA_ERRORS: usize = 5;
/// Characters of an unexpected value shown in a failure.
const MAX_SHOWN: usize = 200;

/// Which expectation a failure belongs to (stable names, used in the JSON
/// report and JUnit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// No complete response: refused, reset, timed out, body broke.
    Response,
    Status,
    Contains,
    Json,
    JsonSchema,
    MaxLatency,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Response => "response",
            Kind::Status => "status",
            Kind::Contains => "contains",
            Kind::Json => "json",
            Kind::JsonSchema => "json_schema",
            Kind::MaxLatency => "max_latency",
        }
    }
}

/// One broken expectation.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub kind: Kind,
    pub expected: String,
    pub got: String,
    pub reason: String,
}

/// The verdict on one case.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    pub failures: Vec<Failure>,
    /// `Some` when the case has a `json_schema` expectation.
    pub schema_valid: Option<bool>,
    /// What the checks saw, shortened (the reassembled document for a
    /// stream), for the report.
    pub excerpt: String,
}

impl CheckResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Check one case; `cap` is the `--max-body` limit, named in failures.
pub fn check(case: &Case, response: &Response, cap: usize, excerpt_len: usize) -> CheckResult {
    let expect = &case.expect;
    let mut failures = Vec::new();
    let has_schema = expect.json_schema.is_some();

    match &response.transport {
        Transport::Complete => {}
        Transport::TimedOut {
            limit,
            by_max_latency: true,
        } => {
            failures.push(Failure {
                kind: Kind::MaxLatency,
                expected: format!("at most {}", ms(*limit)),
                got: "no complete response".into(),
                reason: format!("the request was cut at its max_latency of {}", ms(*limit)),
            });
        }
        Transport::TimedOut { limit, .. } => failures.push(Failure {
            kind: Kind::Response,
            expected: "a complete response".into(),
            got: status_text(response),
            reason: format!(
                "timed out after {} (the per-case --timeout; set max_latency on the case to choose its own)",
                ms(*limit)
            ),
        }),
        Transport::Failed(reason) => failures.push(Failure {
            kind: Kind::Response,
            expected: "a complete response".into(),
            got: status_text(response),
            reason: reason.clone(),
        }),
    }
    if !failures.is_empty() {
        return CheckResult {
            failures,
            schema_valid: has_schema.then_some(false),
            excerpt: excerpt(&String::from_utf8_lossy(&response.body), excerpt_len),
        };
    }

    if let Some(status) = response.status
        && !expect.status.matches(status)
    {
        failures.push(Failure {
            kind: Kind::Status,
            expected: expect.status.to_string(),
            got: status.as_u16().to_string(),
            reason: format!("the status was {status}"),
        });
    }

    let doc = Document::read(case, response, cap);
    let text = doc.text(response);
    if let Some(api) = doc.incomplete {
        failures.push(Failure {
            kind: Kind::Response,
            expected: "a complete response".into(),
            got: excerpt(&text, MAX_SHOWN),
            reason: format!(
                "the event stream ended before its final event ({}): what arrived is not a whole answer",
                api.final_event()
            ),
        });
        return CheckResult {
            failures,
            schema_valid: has_schema.then_some(false),
            excerpt: excerpt(&text, excerpt_len),
        };
    }

    for needle in &expect.contains {
        let found = text.contains(needle.as_str())
            || doc
                .value
                .as_ref()
                .is_some_and(|v| any_string_contains(v, needle));
        if !found {
            let mut reason = "not found in the response".to_owned();
            if response.truncated {
                reason.push_str(&format!(
                    " (only its first {cap} bytes were kept: the response had {} bytes, over --max-body)",
                    response.body_len
                ));
            }
            failures.push(Failure {
                kind: Kind::Contains,
                expected: format!("contains {needle:?}"),
                got: excerpt(&text, MAX_SHOWN),
                reason,
            });
        }
    }

    for (pointer, want) in &expect.json {
        let failure = match &doc.value {
            None => Some((String::from("no JSON document"), doc.why_none.clone())),
            Some(value) => match value.pointer(pointer) {
                None => Some(("absent".into(), format!("nothing at {pointer}"))),
                Some(got) if json_eq(got, want) => None,
                Some(got) => Some((
                    excerpt(&got.to_string(), MAX_SHOWN),
                    format!("the value at {pointer} differs"),
                )),
            },
        };
        if let Some((got, reason)) = failure {
            failures.push(Failure {
                kind: Kind::Json,
                expected: format!("{pointer} = {}", excerpt(&want.to_string(), MAX_SHOWN)),
                got,
                reason,
            });
        }
    }

    let mut schema_valid = None;
    if let Some(schema) = &expect.json_schema {
        let errors: Vec<String> = match &doc.value {
            None => vec![doc.why_none.clone()],
            Some(value) => schema
                .validator
                .iter_errors(value)
                .take(MAX_SCHEMA_ERRORS)
                .map(|e| {
                    let at = e.instance_path().to_string();
                    let at = if at.is_empty() { "/".to_owned() } else { at };
                    format!("at {at}: {e}")
                })
                .collect(),
        };
        schema_valid = Some(errors.is_empty());
        if !errors.is_empty() {
            failures.push(Failure {
                kind: Kind::JsonSchema,
                expected: "valid against the case's json_schema".into(),
                got: excerpt(&text, MAX_SHOWN),
                reason: errors.join("; "),
            });
        }
    }

    if let (Some(max), Some(latency)) = (expect.max_latency, response.latency)
        && latency > max
    {
        failures.push(Failure {
            kind: Kind::MaxLatency,
            expected: format!("at most {}", ms(max)),
            got: ms(latency),
            reason: "the response was slower than max_latency".into(),
        });
    }

    CheckResult {
        failures,
        schema_valid,
        excerpt: excerpt(&text, excerpt_len),
    }
}

/// The response as one JSON document, or why there is none.
struct Document {
    value: Option<Value>,
    why_none: String,
    streamed: bool,
    /// A stream cut before its API's final event (the API it was read as).
    incomplete: Option<api::Api>,
}

impl Document {
    fn read(case: &Case, response: &Response, cap: usize) -> Document {
        let streamed = response.is_event_stream();
        let none = |why_none: String| Document {
            value: None,
            why_none,
            streamed,
            incomplete: None,
        };
        if response.truncated {
            return none(format!(
                "the response had {} bytes, over the --max-body cap of {cap}; it was not parsed",
                response.body_len
            ));
        }
        if streamed {
            let read = api::reassemble(case.request.api(), &response.body);
            return match read.document {
                Ok(doc) => Document {
                    incomplete: (!doc.complete).then_some(read.api),
                    value: Some(doc.value),
                    why_none: String::new(),
                    streamed,
                },
                Err(e) => none(e.why.to_owned()),
            };
        }
        match serde_json::from_slice::<Value>(&response.body) {
            Ok(value) => Document {
                value: Some(value),
                why_none: String::new(),
                streamed,
                incomplete: None,
            },
            Err(e) => none(format!("the body is not JSON ({e})")),
        }
    }

    /// The text `contains` searches and failures show: the body, or for a
    /// reassembled stream, the document's JSON text.
    fn text(&self, response: &Response) -> String {
        match (&self.value, self.streamed) {
            (Some(value), true) => value.to_string(),
            _ => String::from_utf8_lossy(&response.body).into_owned(),
        }
    }
}

fn any_string_contains(value: &Value, needle: &str) -> bool {
    match value {
        Value::String(s) => s.contains(needle),
        Value::Array(items) => items.iter().any(|v| any_string_contains(v, needle)),
        Value::Object(map) => map.values().any(|v| any_string_contains(v, needle)),
        _ => false,
    }
}

fn status_text(response: &Response) -> String {
    match response.status {
        Some(status) => format!("status {}, body incomplete", status.as_u16()),
        None => "no response".into(),
    }
}

/// Milliseconds, for people: `1200ms`, `3.5ms`.
pub fn ms(d: std::time::Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 || ms.fract() == 0.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{ms:.1}ms")
    }
}

/// At most `max` characters, with `…` when cut.
pub fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderValue, StatusCode};

    use super::*;
    use crate::eval::golden;
    use crate::telemetry::usage::Usage;

    fn case(expect: &str) -> std::sync::Arc<Case> {
        let line = format!(r#"{{"id":"c","request":{{"path":"/"}},"expect":{expect}}}"#);
        match golden::parse(&line, Path::new("t.jsonl")) {
            Ok(mut set) => set.cases.remove(0),
            Err(e) => panic!("{e}"),
        }
    }

    fn response(status: u16, ct: &str, body: &str, latency_ms: u64) -> Response {
        Response {
            transport: Transport::Complete,
            status: StatusCode::from_u16(status).ok(),
            content_type: HeaderValue::from_str(ct).ok(),
            latency: Some(Duration::from_millis(latency_ms)),
            body: Bytes::from(body.to_owned()),
            body_len: body.len() as u64,
            truncated: false,
            usage: Usage::default(),
        }
    }

    const CHAT: &str = r#"{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"I can't \"refund\" that, caf\u00e9"}}],"usage":{"prompt_tokens":3,"completion_tokens":5}}"#;

    fn kinds(v: &CheckResult) -> Vec<&'static str> {
        v.failures.iter().map(|f| f.kind.as_str()).collect()
    }

    #[test]
    fn each_expectation_passes_and_fails() {
        let ok = response(200, "application/json", CHAT, 10);
        let slow = response(503, "application/json", r#"{"error":"x"}"#, 900);
        for (expect, on_ok, on_slow) in [
            (r#"{"status":200}"#, vec![], vec!["status"]),
            (r#"{}"#, vec![], vec!["status"]),
            (r#"{"status":503}"#, vec!["status"], vec![]),
            (
                r#"{"status":503,"contains":["can't \"refund\"","café"]}"#,
                vec!["status"],
                vec!["contains", "contains"],
            ),
            (
                r#"{"status":503,"json":{"/choices/0/message/role":"assistant","/usage/prompt_tokens":3.0}}"#,
                vec!["status"],
                vec!["json", "json"],
            ),
            (
                r#"{"status":503,"json_schema":{"type":"object","required":["choices"]}}"#,
                vec!["status"],
                vec!["json_schema"],
            ),
            (
                r#"{"status":503,"max_latency":"500ms"}"#,
                vec!["status"],
                vec!["max_latency"],
            ),
        ] {
            let c = case(expect);
            assert_eq!(
                kinds(&check(&c, &ok, 1 << 20, 100)),
                on_ok,
                "{expect} on ok"
            );
            assert_eq!(
                kinds(&check(&c, &slow, 1 << 20, 100)),
                on_slow,
                "{expect} on slow"
            );
        }
    }

    #[test]
    fn schema_validity_is_reported_with_the_path() {
        let c =
            case(r#"{"json_schema":{"type":"object","properties":{"choices":{"type":"string"}}}}"#);
        let v = check(
            &c,
            &response(200, "application/json", CHAT, 1),
            1 << 20,
            100,
        );
        assert_eq!(v.schema_valid, Some(false));
        assert!(v.failures[0].reason.starts_with("at /choices: "), "{v:?}");
        let c = case(r#"{"json_schema":{"type":"object"}}"#);
        let v = check(
            &c,
            &response(200, "application/json", CHAT, 1),
            1 << 20,
            100,
        );
        assert_eq!(v.schema_valid, Some(true));
        assert_eq!(
            check(&case("{}"), &response(200, "", CHAT, 1), 10, 10).schema_valid,
            None
        );
    }

    #[test]
    fn a_stream_is_reassembled_before_the_checks() {
        let sse = concat!(
            "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n",
            "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo wor\"}}]}\n\n",
            "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ld\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let c = case(
            r#"{"contains":["Hello world"],"json":{"/choices/0/message/content":"Hello world","/choices/0/finish_reason":"stop"}}"#,
        );
        let v = check(
            &c,
            &response(200, "text/event-stream; charset=utf-8", sse, 1),
            1 << 20,
            1000,
        );
        assert!(v.passed(), "{v:?}");
        assert!(
            v.excerpt.contains("\"content\":\"Hello world\""),
            "{}",
            v.excerpt
        );
        let broken = check(
            &c,
            &response(200, "text/event-stream", "data: nope\n\n", 1),
            1 << 20,
            10,
        );
        assert_eq!(kinds(&broken), ["contains", "json", "json"]);
        assert!(
            broken.failures[1]
                .reason
                .contains("not a chat-completion stream")
        );
    }

    #[test]
    fn no_response_is_one_failure_and_not_schema_compliant() {
        let c = case(r#"{"contains":["x"],"json_schema":{}}"#);
        let mut r = response(200, "", "", 0);
        r.status = None;
        r.transport = Transport::Failed("connection refused".into());
        let v = check(&c, &r, 10, 10);
        assert_eq!(kinds(&v), ["response"]);
        assert_eq!(v.failures[0].reason, "connection refused");
        assert_eq!(v.schema_valid, Some(false));
        r.transport = Transport::TimedOut {
            limit: Duration::from_secs(2),
            by_max_latency: true,
        };
        assert_eq!(kinds(&check(&c, &r, 10, 10)), ["max_latency"]);
    }

    #[test]
    fn a_truncated_body_names_the_cap() {
        let c = case(r#"{"contains":["zzz"],"json":{"/a":1}}"#);
        let mut r = response(200, "application/json", r#"{"a":1"#, 1);
        r.truncated = true;
        r.body_len = 5000;
        let v = check(&c, &r, 6, 10);
        assert_eq!(kinds(&v), ["contains", "json"]);
        assert!(v.failures[0].reason.contains("first 6 bytes"), "{v:?}");
        assert!(
            v.failures[1]
                .reason
                .contains("over the --max-body cap of 6"),
            "{v:?}"
        );
    }

    #[test]
    fn excerpts_cut_on_characters() {
        assert_eq!(excerpt("héllo", 2), "hé…");
        assert_eq!(excerpt("hé", 2), "hé");
        assert_eq!(ms(Duration::from_micros(3500)), "3.5ms");
        assert_eq!(ms(Duration::from_millis(1200)), "1200ms");
    }
}
