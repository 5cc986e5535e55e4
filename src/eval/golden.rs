//! The golden file (SPEC §11): one JSON case per line, parsed into typed
//! cases before anything is sent.
//!
//! ```text
//! {"id": "refund-1",
//!  "request": {"method": "POST", "path": "/v1/chat/completions", "headers": {}, "body": {...}},
//!  "expect": {"status": 200, "contains": ["refund"], "json": {"/choices/0/message/role": "assistant"},
//!             "json_schema": {...}, "max_latency": "5s"}}
//! ```
//!
//! Parse, don't validate: methods, header names, JSON pointers, durations
//! and schemas are checked here and become typed values, so replay and the
//! checks never look at raw text again. Every bad line is reported (line
//! number, key path, what would be valid), not just the first one.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};

/// One parsed golden set.
#[derive(Debug)]
pub struct GoldenSet {
    pub path: PathBuf,
    pub cases: Vec<Arc<Case>>,
}

/// One golden case: a request to replay and what its answer must satisfy.
#[derive(Debug)]
pub struct Case {
    pub id: String,
    /// 1-based line in the golden file.
    pub line: usize,
    pub request: CaseRequest,
    pub expect: Expect,
}

#[derive(Debug)]
pub struct CaseRequest {
    pub method: Method,
    /// Path and optional query, always starting with `/`.
    pub path: String,
    /// In file order (names lowercased by `http`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// `body` (JSON) rather than `raw_body`: adds
    /// `content-type: application/json` unless the case sets one.
    pub json_body: bool,
}

impl CaseRequest {
    /// The model API the case's path names, if any (the query aside).
    pub fn api(&self) -> Option<crate::api::Api> {
        let path = self.path.split('?').next().unwrap_or_default();
        crate::api::Api::from_path(path)
    }
}

#[derive(Debug)]
pub struct Expect {
    pub status: StatusExpect,
    /// Every substring must appear.
    pub contains: Vec<String>,
    /// JSON pointer → exact value, in file order.
    pub json: Vec<(String, Value)>,
    pub json_schema: Option<Schema>,
    /// Also the case's timeout: the request is cut at this limit.
    pub max_latency: Option<Duration>,
}

/// `expect.status`, or any 2xx when the case names none: a case with no
/// status expectation must still not pass on a 500.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusExpect {
    Exact(StatusCode),
    AnySuccess,
}

impl StatusExpect {
    pub fn matches(self, status: StatusCode) -> bool {
        match self {
            StatusExpect::Exact(want) => status == want,
            StatusExpect::AnySuccess => status.is_success(),
        }
    }
}

impl fmt::Display for StatusExpect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusExpect::Exact(s) => write!(f, "{}", s.as_u16()),
            StatusExpect::AnySuccess => f.write_str("2xx"),
        }
    }
}

/// A compiled JSON Schema (any draft the `jsonschema` crate detects from
/// `$schema`, 2020-12 when absent). Remote `$ref`s are not fetched: a gate
/// must not depend on the network, so a schema that needs one is rejected
/// when the file is read.
pub struct Schema {
    pub validator: jsonschema::Validator,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Schema(..)")
    }
}

/// Everything wrong with a golden file, one entry per problem.
#[derive(Debug)]
pub struct GoldenError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based; `None` for the file as a whole (unreadable, empty).
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for GoldenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.line {
                Some(line) => write!(f, "error: {path}:{line}: {}", p.message)?,
                None => write!(f, "error: {path}: {}", p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for GoldenError {}

/// Read and parse a golden file.
pub fn load(path: &Path) -> Result<GoldenSet, GoldenError> {
    let whole_file = |message: String| GoldenError {
        path: path.to_owned(),
        problems: vec![Problem {
            line: None,
            message,
        }],
    };
    let bytes = std::fs::read(path).map_err(|e| {
        whole_file(format!(
            "cannot read the golden file ({e}); pass a JSONL file with --golden"
        ))
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        whole_file(format!(
            "not UTF-8 (first bad byte at offset {}); save the file as UTF-8",
            e.utf8_error().valid_up_to()
        ))
    })?;
    parse(&text, path)
}

/// Parse golden text; `path` only names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<GoldenSet, GoldenError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, raw_line) in text.lines().enumerate() {
        let line = index + 1;
        if raw_line.trim().is_empty() {
            continue;
        }
        match parse_line(raw_line) {
            Ok(case) => {
                if let Some(first) = seen.get(&case.id) {
                    problems.push(Problem {
                        line: Some(line),
                        message: format!(
                            "id: {:?} is already used on line {first}; ids must be unique (they name the JUnit test cases)",
                            case.id
                        ),
                    });
                    continue;
                }
                seen.insert(case.id.clone(), line);
                cases.push(Arc::new(Case { line, ..case }));
            }
            Err(messages) => problems.extend(messages.into_iter().map(|message| Problem {
                line: Some(line),
                message,
            })),
        }
    }
    if problems.is_empty() && cases.is_empty() {
        problems.push(Problem {
            line: None,
            message: "no cases: every line is blank; write one JSON object per line".into(),
        });
    }
    if problems.is_empty() {
        Ok(GoldenSet {
            path: path.to_owned(),
            cases,
        })
    } else {
        Err(GoldenError {
            path: path.to_owned(),
            problems,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    id: String,
    request: RawRequest,
    #[serde(default)]
    expect: RawExpect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    method: Option<String>,
    path: String,
    #[serde(default)]
    headers: Map<String, Value>,
    body: Option<Value>,
    raw_body: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    status: Option<u16>,
    #[serde(default)]
    contains: Vec<String>,
    #[serde(default)]
    json: Map<String, Value>,
    json_schema: Option<Value>,
    max_latency: Option<String>,
}

/// One line into a case (with `line` 0: the caller sets it), or every
/// problem found on it.
fn parse_line(text: &str) -> Result<Case, Vec<String>> {
    let mut de = serde_json::Deserializer::from_str(text);
    let raw: RawCase = match serde_path_to_error::deserialize(&mut de) {
        Ok(raw) => raw,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let hint = if inner.is_syntax() || inner.is_eof() {
                "; each line must be one complete JSON object"
            } else if inner.to_string().starts_with("unknown field") {
                "" // serde already lists the valid names
            } else {
                "; a case has \"id\", \"request\" {method, path, headers, body | raw_body} and \"expect\" {status, contains, json, json_schema, max_latency}"
            };
            return Err(vec![if path == "." {
                format!("{inner}{hint}")
            } else {
                format!("{path}: {inner}{hint}")
            }]);
        }
    };
    // No trailing content after the object (a second object on the line).
    if let Err(e) = de.end() {
        return Err(vec![format!(
            "{e}: one case per line, nothing after the object"
        )]);
    }
    let mut problems = Vec::new();
    let id = raw.id.trim().to_owned();
    if id.is_empty() {
        problems.push("id: must not be empty; e.g. \"refund-1\"".to_owned());
    }
    let request = parse_request(raw.request, &mut problems);
    let expect = parse_expect(raw.expect, &mut problems);
    match (request, expect) {
        (Some(request), Some(expect)) if problems.is_empty() => Ok(Case {
            id,
            line: 0,
            request,
            expect,
        }),
        _ => Err(problems),
    }
}

fn parse_request(raw: RawRequest, problems: &mut Vec<String>) -> Option<CaseRequest> {
    let before = problems.len();
    let method = match raw.method.as_deref().map(str::trim) {
        None => Method::POST,
        Some(m) => match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(method) if !m.is_empty() => method,
            _ => {
                problems.push(format!(
                    "request.method: {m:?} is not an HTTP method; e.g. \"POST\" or \"GET\""
                ));
                Method::POST
            }
        },
    };
    if !raw.path.starts_with('/') {
        problems.push(format!(
            "request.path: {:?} must start with '/', e.g. \"/v1/chat/completions\" (the target URL gives scheme and host)",
            raw.path
        ));
    } else if raw.path.parse::<http::uri::PathAndQuery>().is_err() {
        problems.push(format!(
            "request.path: {:?} is not a valid path and query; percent-encode spaces and other reserved characters",
            raw.path
        ));
    }
    let mut headers = Vec::with_capacity(raw.headers.len());
    for (name, value) in &raw.headers {
        let Ok(header_name) = HeaderName::from_bytes(name.as_bytes()) else {
            problems.push(format!(
                "request.headers.{name}: not a valid header name; use letters, digits and '-'"
            ));
            continue;
        };
        let Some(text) = value.as_str() else {
            problems.push(format!(
                "request.headers.{name}: expected a string value, found {}",
                kind(value)
            ));
            continue;
        };
        match HeaderValue::from_str(text) {
            Ok(header_value) => headers.push((header_name, header_value)),
            Err(_) => problems.push(format!(
                "request.headers.{name}: not a valid header value (visible ASCII, no line breaks)"
            )),
        }
    }
    let (body, json_body) = match (raw.body, raw.raw_body) {
        (Some(_), Some(_)) => {
            problems.push(
                "request: has both \"body\" and \"raw_body\"; use \"body\" for JSON, \"raw_body\" for text sent as is"
                    .to_owned(),
            );
            (Bytes::new(), false)
        }
        (Some(json), None) => (Bytes::from(json.to_string()), true),
        (None, Some(raw)) => (Bytes::from(raw), false),
        (None, None) => (Bytes::new(), false),
    };
    (problems.len() == before).then(|| CaseRequest {
        method,
        path: raw.path,
        headers,
        body,
        json_body,
    })
}

fn parse_expect(raw: RawExpect, problems: &mut Vec<String>) -> Option<Expect> {
    let before = problems.len();
    let status = match raw.status {
        None => StatusExpect::AnySuccess,
        Some(code) => match StatusCode::from_u16(code) {
            Ok(status) if (100..=599).contains(&code) => StatusExpect::Exact(status),
            _ => {
                problems.push(format!(
                    "expect.status: {code} is not an HTTP status; valid: 100 to 599"
                ));
                StatusExpect::AnySuccess
            }
        },
    };
    for (i, needle) in raw.contains.iter().enumerate() {
        if needle.is_empty() {
            problems.push(format!(
                "expect.contains[{i}]: an empty string matches anything; remove it"
            ));
        }
    }
    let mut json = Vec::with_capacity(raw.json.len());
    for (pointer, value) in raw.json {
        if pointer.is_empty() || pointer.starts_with('/') {
            json.push((pointer, value));
        } else {
            problems.push(format!(
                "expect.json: key {pointer:?} is not a JSON pointer; it must start with '/', e.g. \"/choices/0/message/role\""
            ));
        }
    }
    let json_schema = match raw.json_schema {
        None => None,
        Some(schema @ (Value::Object(_) | Value::Bool(_))) => {
            match jsonschema::validator_for(&schema) {
                Ok(validator) => Some(Schema { validator }),
                Err(e) => {
                    problems.push(format!(
                        "expect.json_schema: not a usable JSON Schema: {e} (remote $refs are not fetched)"
                    ));
                    None
                }
            }
        }
        Some(other) => {
            problems.push(format!(
                "expect.json_schema: expected a JSON Schema object, found {}",
                kind(&other)
            ));
            None
        }
    };
    let max_latency = match raw.max_latency.as_deref() {
        None => None,
        Some(text) => match humantime::parse_duration(text.trim()) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                problems.push("expect.max_latency: must be above zero, e.g. \"5s\"".to_owned());
                None
            }
            Err(e) => {
                problems.push(format!(
                    "expect.max_latency: bad duration {text:?} ({e}); valid: a string like \"250ms\", \"5s\", \"2m\""
                ));
                None
            }
        },
    };
    (problems.len() == before).then_some(Expect {
        status,
        contains: raw.contains,
        json,
        json_schema,
        max_latency,
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<GoldenSet, GoldenError> {
        parse(text, Path::new("cases.jsonl"))
    }

    fn problems(text: &str) -> Vec<Problem> {
        match parse_str(text) {
            Ok(set) => panic!("accepted: {:?}", set.cases),
            Err(e) => e.problems,
        }
    }

    const GOOD: &str = r#"{"id":"a","request":{"method":"post","path":"/v1/chat/completions","headers":{"X-Team":"support"},"body":{"messages":[]}},"expect":{"status":200,"contains":["hi"],"json":{"/object":"chat.completion"},"json_schema":{"type":"object","required":["choices"]},"max_latency":"5s"}}"#;

    #[test]
    fn a_full_case_becomes_typed_values() {
        let text = format!(
            "\n{GOOD}\n\n{}\n",
            r#"{"id":"b","request":{"path":"/healthz","method":"GET","raw_body":"ping"}}"#
        );
        let set = parse_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set.cases.len(), 2);
        let a = &set.cases[0];
        assert_eq!((a.id.as_str(), a.line), ("a", 2));
        assert_eq!(a.request.method, Method::POST);
        assert_eq!(a.request.headers[0].0.as_str(), "x-team");
        assert!(a.request.json_body);
        assert_eq!(&a.request.body[..], br#"{"messages":[]}"#);
        assert_eq!(a.expect.status, StatusExpect::Exact(StatusCode::OK));
        assert_eq!(a.expect.json[0].0, "/object");
        assert!(a.expect.json_schema.is_some());
        assert_eq!(a.expect.max_latency, Some(Duration::from_secs(5)));
        let b = &set.cases[1];
        assert_eq!(b.line, 4);
        assert_eq!(b.request.method, Method::GET);
        assert!(!b.request.json_body);
        assert_eq!(&b.request.body[..], b"ping");
        assert_eq!(b.expect.status, StatusExpect::AnySuccess);
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let text = format!(
            "{GOOD}\nnot json\n{}\n{}\n",
            r#"{"id":"c","request":{"path":"v1"},"expect":{"json":{"choices":1},"max_latency":"soon"}}"#,
            r#"{"id":"d","request":{"path":"/"},"expect":{"stauts":200}}"#,
        );
        let p = problems(&text);
        let lines: Vec<Option<usize>> = p.iter().map(|p| p.line).collect();
        assert_eq!(
            lines,
            [Some(2), Some(3), Some(3), Some(3), Some(4)],
            "{p:#?}"
        );
        assert!(p[0].message.contains("one complete JSON object"), "{p:?}");
        assert!(p[1].message.starts_with("request.path"), "{p:?}");
        assert!(p[2].message.contains("not a JSON pointer"), "{p:?}");
        assert!(p[3].message.contains("bad duration \"soon\""), "{p:?}");
        assert!(
            p[4].message
                .starts_with("expect.stauts: unknown field `stauts`, expected one of `status`"),
            "{p:?}"
        );
    }

    #[test]
    fn key_paths_name_the_nested_field() {
        let p = problems(
            r#"{"id":"x","request":{"path":"/","headers":{"a":1}},"expect":{"status":"200"}}"#,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].message.starts_with("expect.status: invalid type"),
            "{p:?}"
        );
        let p = problems(r#"{"id":"x","request":{"path":"/","headers":{"a":1}}}"#);
        assert!(
            p[0].message
                .starts_with("request.headers.a: expected a string"),
            "{p:?}"
        );
        let p = problems(r#"{"request":{"path":"/"}}"#);
        assert!(p[0].message.contains("missing field `id`"), "{p:?}");
    }

    #[test]
    fn duplicate_ids_name_the_first_line() {
        let p = problems(&format!("{GOOD}\n{GOOD}\n"));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, Some(2));
        assert!(p[0].message.contains("already used on line 1"), "{p:?}");
    }

    #[test]
    fn bad_schemas_methods_and_bodies_are_rejected() {
        for (line, want) in [
            (
                r#"{"id":"x","request":{"path":"/"},"expect":{"json_schema":{"type":"nope"}}}"#,
                "expect.json_schema: not a usable JSON Schema",
            ),
            (
                r#"{"id":"x","request":{"path":"/"},"expect":{"json_schema":"object"}}"#,
                "expected a JSON Schema object, found a string",
            ),
            (
                r#"{"id":"x","request":{"path":"/","method":"GE T"}}"#,
                "is not an HTTP method",
            ),
            (
                r#"{"id":"x","request":{"path":"/","body":{},"raw_body":"x"}}"#,
                "both \"body\" and \"raw_body\"",
            ),
            (
                r#"{"id":" ","request":{"path":"/"}}"#,
                "id: must not be empty",
            ),
            (
                r#"{"id":"x","request":{"path":"/"},"expect":{"status":42}}"#,
                "expect.status: 42 is not an HTTP status",
            ),
            (
                r#"{"id":"x","request":{"path":"/"},"expect":{"contains":[""]}}"#,
                "expect.contains[0]",
            ),
            (
                r#"{"id":"x","request":{"path":"/"}} {}"#,
                "nothing after the object",
            ),
        ] {
            let p = problems(line);
            assert!(p.iter().any(|p| p.message.contains(want)), "{line}: {p:?}");
        }
    }

    #[test]
    fn an_empty_file_is_an_error() {
        let p = problems("\n  \n");
        assert_eq!(p[0].line, None);
        assert!(p[0].message.starts_with("no cases"));
    }

    #[test]
    fn display_names_file_and_line() {
        let Err(e) = parse_str("{}\n") else {
            panic!("accepted")
        };
        let shown = e.to_string();
        assert!(shown.starts_with("error: cases.jsonl:1: "), "{shown}");
    }
}
