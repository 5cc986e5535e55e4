//! Answer comparison for shadows: capture a response body as it streams,
//! turn it into one JSON document, and compare two documents at JSON
//! pointers.
//!
//! The capture never delays or copies the body: frames are kept as `Bytes`
//! clones (reference counts) up to a byte cap, and all parsing happens once,
//! in [`Capture::finish`], after the body has ended. Past the cap the frames
//! are released at once, so an oversized answer costs no memory; it is then
//! not comparable.
//!
//! A streamed (SSE) chat completion is reassembled into the equivalent
//! non-streamed `chat.completion`, so a streaming agent can be compared with
//! a non-streaming one, field for field:
//!
//! * per choice `index`: `delta.content` strings are concatenated (the
//!   content is `null` if no delta carried a string), `delta.role` is taken
//!   from the first delta that has one (`"assistant"` if none did), and
//!   `finish_reason` is the last non-null one;
//! * `delta.tool_calls` are merged by their `index` (their position in the
//!   delta's array if a server omits it): `id` and `type` come from the first
//!   delta that carries them, `function.name` and `function.arguments` are
//!   the concatenation of their fragments;
//! * `id`, `created` and `model` come from the first chunk that has them, and
//!   `usage` from the last chunk with a non-null `usage` (OpenAI sends it in
//!   a final chunk whose `choices` is empty);
//! * `data: [DONE]` ends the stream (anything after it is ignored); comment
//!   lines, `event:`, `id:` and `retry:` fields are ignored; multi-line
//!   `data:` fields are joined with `\n`, as the SSE format says.
//!
//! A stream is not comparable (`None`) when any `data:` payload other than
//! `[DONE]` is not a JSON object, when a chunk carries an `error`, or when no
//! chunk arrived at all. A stream that ends without `[DONE]` is reassembled
//! from what arrived (some OpenAI-compatible servers omit it); a stream cut
//! mid-event fails to parse and is not comparable. Deciding that a body was
//! truncated by a transport error is the caller's job: it should not call
//! `finish` on such a body.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use http::HeaderValue;
use serde_json::{Map, Value};

/// Bodies larger than this are not compared (their frames are released).
pub const DEFAULT_CAP: usize = 1024 * 1024;

/// How the captured body will be read at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Sse,
    /// Neither JSON nor SSE: nothing is kept, `finish` gives `None`.
    Other,
}

/// A response body collected as it streams, for comparison at its end.
#[derive(Debug)]
pub struct Capture {
    format: Format,
    /// Reference-counted frames, in order; emptied when the cap is passed.
    frames: Vec<Bytes>,
    /// Bytes seen so far (kept or not).
    len: usize,
    cap: usize,
    overflowed: bool,
}

impl Capture {
    /// A capture for a response with this `Content-Type`, capped at
    /// [`DEFAULT_CAP`].
    pub fn for_content_type(content_type: Option<&HeaderValue>) -> Self {
        Self::with_cap(content_type, DEFAULT_CAP)
    }

    /// `text/event-stream` is read as SSE; `application/json`, any `+json`
    /// type, or no content type at all, as JSON; anything else is not kept.
    pub fn with_cap(content_type: Option<&HeaderValue>, cap: usize) -> Self {
        let format = match content_type.map(|v| v.as_bytes().trim_ascii()) {
            None => Format::Json,
            Some(ct) if starts_with_ignore_case(ct, b"text/event-stream") => Format::Sse,
            Some(ct)
                if starts_with_ignore_case(ct, b"application/json")
                    || contains_ignore_case(ct, b"+json") =>
            {
                Format::Json
            }
            Some(_) => Format::Other,
        };
        Self {
            format,
            frames: Vec::new(),
            len: 0,
            cap,
            overflowed: false,
        }
    }

    /// See one data frame on its way to the client. Cheap: a reference count
    /// and a length check.
    #[inline]
    pub fn observe(&mut self, frame: &Bytes) {
        if self.overflowed || self.format == Format::Other || frame.is_empty() {
            return;
        }
        self.len = self.len.saturating_add(frame.len());
        if self.len > self.cap {
            self.overflowed = true;
            // Release the frames now, not at `finish`: a slow stream must not
            // pin a capped amount of memory for its whole life.
            self.frames = Vec::new();
            return;
        }
        self.frames.push(frame.clone());
    }

    /// The body went past the cap: it will not be compared.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// The response as one JSON document, or `None` when it is not
    /// comparable (overflowed, not JSON, broken SSE, not a chat stream).
    pub fn finish(self) -> Option<Value> {
        if self.overflowed || self.format == Format::Other {
            return None;
        }
        let body: Cow<'_, [u8]> = match self.frames.as_slice() {
            [] => Cow::Borrowed(&[]),
            [one] => Cow::Borrowed(one.as_ref()),
            many => Cow::Owned(many.concat()),
        };
        match self.format {
            Format::Json => serde_json::from_slice(&body).ok(),
            Format::Sse => reassemble_sse(&body),
            Format::Other => None,
        }
    }
}

/// Read a whole SSE body of chat-completion chunks into the equivalent
/// non-streamed `chat.completion`.
pub fn reassemble_sse(body: &[u8]) -> Option<Value> {
    let mut completion = Completion::default();
    let mut data: Vec<u8> = Vec::new();
    let mut has_data = false;
    for raw in body.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            // A blank line dispatches the event.
            if has_data {
                if completion.event(&data)? == Flow::Done {
                    return completion.finish();
                }
                data.clear();
                has_data = false;
            }
            continue;
        }
        if line.starts_with(b":") {
            continue;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        if field == b"data" {
            if has_data {
                data.push(b'\n');
            }
            data.extend_from_slice(value);
            has_data = true;
        }
    }
    // A last event without its blank line.
    if has_data && completion.event(&data)? == Flow::Done {
        return completion.finish();
    }
    completion.finish()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    More,
    Done,
}

/// The non-streamed completion being rebuilt from chunks.
#[derive(Default)]
struct Completion {
    chunks: usize,
    id: Option<Value>,
    created: Option<Value>,
    model: Option<Value>,
    choices: BTreeMap<u64, ChoiceAcc>,
    usage: Option<Value>,
}

#[derive(Default)]
struct ChoiceAcc {
    role: Option<String>,
    /// `None` until a delta carries a string `content`.
    content: Option<String>,
    finish_reason: Option<Value>,
    tool_calls: BTreeMap<u64, ToolCallAcc>,
}

#[derive(Default)]
struct ToolCallAcc {
    id: Option<String>,
    kind: Option<String>,
    name: String,
    arguments: String,
}

impl Completion {
    /// One event's data: `[DONE]`, or a chunk. `None` means not comparable.
    fn event(&mut self, data: &[u8]) -> Option<Flow> {
        if data.trim_ascii() == b"[DONE]" {
            return Some(Flow::Done);
        }
        let Ok(Value::Object(chunk)) = serde_json::from_slice::<Value>(data) else {
            return None;
        };
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            return None;
        }
        self.chunk(&chunk);
        Some(Flow::More)
    }

    fn chunk(&mut self, chunk: &Map<String, Value>) {
        self.chunks += 1;
        first_non_null(&mut self.id, chunk.get("id"));
        first_non_null(&mut self.created, chunk.get("created"));
        first_non_null(&mut self.model, chunk.get("model"));
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(usage.clone());
        }
        let Some(choices) = chunk.get("choices").and_then(Value::as_array) else {
            return;
        };
        for (position, choice) in choices.iter().enumerate() {
            let Some(choice) = choice.as_object() else {
                continue;
            };
            let index = index_or(choice, position);
            let acc = self.choices.entry(index).or_default();
            if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
                acc.finish_reason = Some(reason.clone());
            }
            if let Some(delta) = choice.get("delta").and_then(Value::as_object) {
                acc.delta(delta);
            }
        }
    }

    fn finish(self) -> Option<Value> {
        if self.chunks == 0 {
            return None;
        }
        let choices: Vec<Value> = self
            .choices
            .into_iter()
            .map(|(index, choice)| choice.finish(index))
            .collect();
        let mut doc = Map::new();
        doc.insert("id".into(), self.id.unwrap_or(Value::Null));
        doc.insert("object".into(), Value::from("chat.completion"));
        if let Some(created) = self.created {
            doc.insert("created".into(), created);
        }
        doc.insert("model".into(), self.model.unwrap_or(Value::Null));
        doc.insert("choices".into(), Value::Array(choices));
        if let Some(usage) = self.usage {
            doc.insert("usage".into(), usage);
        }
        Some(Value::Object(doc))
    }
}

impl ChoiceAcc {
    fn delta(&mut self, delta: &Map<String, Value>) {
        if self.role.is_none()
            && let Some(role) = delta.get("role").and_then(Value::as_str)
        {
            self.role = Some(role.to_owned());
        }
        if let Some(piece) = delta.get("content").and_then(Value::as_str) {
            self.content.get_or_insert_with(String::new).push_str(piece);
        }
        let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) else {
            return;
        };
        for (position, call) in calls.iter().enumerate() {
            let Some(call) = call.as_object() else {
                continue;
            };
            let acc = self.tool_calls.entry(index_or(call, position)).or_default();
            first_str(&mut acc.id, call.get("id"));
            first_str(&mut acc.kind, call.get("type"));
            if let Some(function) = call.get("function").and_then(Value::as_object) {
                if let Some(name) = function.get("name").and_then(Value::as_str) {
                    acc.name.push_str(name);
                }
                if let Some(arguments) = function.get("arguments").and_then(Value::as_str) {
                    acc.arguments.push_str(arguments);
                }
            }
        }
    }

    fn finish(self, index: u64) -> Value {
        let mut message = Map::new();
        message.insert(
            "role".into(),
            Value::from(self.role.unwrap_or_else(|| "assistant".to_owned())),
        );
        message.insert(
            "content".into(),
            self.content.map_or(Value::Null, Value::from),
        );
        if !self.tool_calls.is_empty() {
            let calls = self.tool_calls.into_values().map(ToolCallAcc::finish);
            message.insert("tool_calls".into(), Value::Array(calls.collect()));
        }
        let mut choice = Map::new();
        choice.insert("index".into(), Value::from(index));
        choice.insert("message".into(), Value::Object(message));
        choice.insert(
            "finish_reason".into(),
            self.finish_reason.unwrap_or(Value::Null),
        );
        Value::Object(choice)
    }
}

impl ToolCallAcc {
    fn finish(self) -> Value {
        let mut function = Map::new();
        function.insert("name".into(), Value::from(self.name));
        function.insert("arguments".into(), Value::from(self.arguments));
        let mut call = Map::new();
        if let Some(id) = self.id {
            call.insert("id".into(), Value::from(id));
        }
        call.insert(
            "type".into(),
            Value::from(self.kind.unwrap_or_else(|| "function".to_owned())),
        );
        call.insert("function".into(), Value::Object(function));
        Value::Object(call)
    }
}

/// The `index` field, or the element's position when a server omits it.
fn index_or(obj: &Map<String, Value>, position: usize) -> u64 {
    obj.get("index")
        .and_then(Value::as_u64)
        .unwrap_or(position as u64)
}

fn first_non_null(slot: &mut Option<Value>, value: Option<&Value>) {
    if slot.is_none()
        && let Some(value) = value.filter(|v| !v.is_null())
    {
        *slot = Some(value.clone());
    }
}

fn first_str(slot: &mut Option<String>, value: Option<&Value>) {
    if slot.is_none()
        && let Some(s) = value.and_then(Value::as_str)
    {
        *slot = Some(s.to_owned());
    }
}

/// The outcome of comparing one pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Match,
    Mismatch,
}

/// Compare `primary` and `shadow` at each JSON pointer (RFC 6901), in order.
///
/// * the value absent on both sides: [`Verdict::Match`];
/// * absent on one side only: [`Verdict::Mismatch`];
/// * present on both: `Match` when equal as JSON values ([`json_eq`]).
///
/// A `None` document (the body was not comparable: overflowed, not JSON, a
/// broken stream) makes every pointer a `Mismatch`, even when both are
/// `None`: a match must be evidence that the answers agree, and a shadow
/// that returns garbage should lower the match share, not vanish from it.
pub fn compare<'a>(
    pointers: &'a [String],
    primary: Option<&'a Value>,
    shadow: Option<&'a Value>,
) -> impl Iterator<Item = (&'a str, Verdict)> + 'a {
    pointers.iter().map(move |pointer| {
        let verdict = match (primary, shadow) {
            (Some(primary), Some(shadow)) => compare_at(pointer, primary, shadow),
            _ => Verdict::Mismatch,
        };
        (pointer.as_str(), verdict)
    })
}

/// Compare two comparable documents at one pointer.
pub fn compare_at(pointer: &str, primary: &Value, shadow: &Value) -> Verdict {
    match (primary.pointer(pointer), shadow.pointer(pointer)) {
        (None, None) => Verdict::Match,
        (Some(a), Some(b)) if json_eq(a, b) => Verdict::Match,
        _ => Verdict::Mismatch,
    }
}

/// JSON value equality: numbers by value (`1` equals `1.0`), object keys in
/// any order, arrays in order.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_eq(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, a)| y.get(key).is_some_and(|b| json_eq(a, b)))
        }
        _ => a == b,
    }
}

fn numbers_eq(x: &serde_json::Number, y: &serde_json::Number) -> bool {
    if let (Some(a), Some(b)) = (x.as_i64(), y.as_i64()) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (x.as_u64(), y.as_u64()) {
        return a == b;
    }
    if x.is_f64() || y.is_f64() {
        return match (x.as_f64(), y.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
    }
    // A negative integer against one above i64::MAX.
    false
}

fn starts_with_ignore_case(haystack: &[u8], prefix: &[u8]) -> bool {
    haystack.len() >= prefix.len() && haystack[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests;
