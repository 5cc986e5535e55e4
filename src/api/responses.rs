//! The OpenAI Responses API (`…/responses`).
//!
//! **Usage**: `usage.input_tokens` and `usage.output_tokens` of a
//! `response`; in a stream, `response.usage` of the `response.completed`
//! event (or of `response.incomplete` / `response.failed`).
//!
//! **Reassembly**: a stream folds into the `response` object the same call
//! returns unstreamed. The `response.completed` event carries it whole; it
//! is taken as it is (its `output` filled from the item events when a
//! server leaves it out). A stream cut before any terminal event
//! (`response.completed`, `response.incomplete`, `response.failed`) is
//! rebuilt from what arrived and marked **incomplete**:
//!
//! * the `response` of the last `response.created` / `queued` /
//!   `in_progress` event, with
//! * `output` items by `output_index`: `response.output_item.added` (and
//!   `.done`, which replaces the item whole), content parts from
//!   `response.content_part.added`, text from `response.output_text.delta`
//!   (and `.done`), refusals from `response.refusal.delta`, and a
//!   function call's `arguments` from
//!   `response.function_call_arguments.delta` (and `.done`).
//!
//! Other `response.*` events (reasoning, tool progress, annotations) are
//! known and not needed for the document; an `error` event makes the
//! stream unreadable; an event type outside the API is skipped and counted.
//!
//! **Refusal** (`openai-responses`): a completed `response` whose one
//! message's `output_text` is the refusal text, or the same as the event
//! stream the official SDK's `responses.stream()` helper accumulates,
//! ending in `response.completed`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::MapAccess;
use serde_json::{Map, Value, json};

use super::compact::Parse;
use super::lenient::{self, Shape};
use super::messages::render_events;
use super::tokens::{InputOutput, Usage, classify};
use super::{
    Api, Document, EventFold, Read, Skip, Unreadable, append, event_head, event_kind, fold_events,
    index_of, typed_event,
};

// ---- usage ----

/// The usage of a stream event: `response.usage` (non-null only in the
/// terminal events).
pub(super) fn event_usage<P: Parse>(data: &[u8]) -> Result<Option<Usage>, Skip> {
    #[derive(Deserialize)]
    struct Response {
        usage: Option<InputOutput>,
    }
    #[derive(Deserialize)]
    struct Event {
        response: Option<Response>,
    }
    let event: Event = P::parse(data).map_err(|e| classify(&e))?;
    Ok(event.response.and_then(|r| r.usage).map(Usage::from))
}

// ---- reassembly ----

const NOT_JSON: Unreadable = Unreadable {
    skip: Skip::Malformed,
    why: "the event stream is not a Responses stream: a data line is not a JSON object",
};
const NO_TYPE: Unreadable = Unreadable {
    skip: Skip::WrongShape,
    why: "a Responses event has no type",
};
const BAD_EVENT: Unreadable = Unreadable {
    skip: Skip::WrongShape,
    why: "a Responses event is missing its response, item, output_index, content_index or delta",
};
const ERROR_EVENT: Unreadable = Unreadable {
    skip: Skip::ErrorEvent,
    why: "the Responses stream carries an error event",
};
const NO_RESPONSE: Unreadable = Unreadable {
    skip: Skip::Malformed,
    why: "the event stream is not a Responses stream: no response.created or response.completed event",
};

/// Read a whole Responses event stream into its `response` object.
pub fn reassemble(body: &[u8]) -> Read {
    fold_events::<Acc>(Api::Responses, body)
}

#[derive(Default)]
struct Acc {
    /// The latest lifecycle `response` (created, queued, in progress).
    base: Option<Map<String, Value>>,
    /// The terminal `response` (completed, incomplete, failed).
    terminal: Option<Map<String, Value>>,
    /// Output items by `output_index`.
    items: BTreeMap<u64, Map<String, Value>>,
    unknown: u32,
}

impl Acc {
    /// Output item `index`, created as a `kind` item if no added event came
    /// (with the event's `item_id`, asked for only then).
    fn item(
        &mut self,
        item_id: impl FnOnce() -> Option<Value>,
        index: u64,
        kind: &str,
    ) -> &mut Map<String, Value> {
        self.items.entry(index).or_insert_with(|| {
            let mut fresh = Map::new();
            if let Some(id) = item_id() {
                fresh.insert("id".into(), id);
            }
            fresh.insert("type".into(), Value::from(kind));
            match kind {
                "message" => {
                    fresh.insert("role".into(), Value::from("assistant"));
                    fresh.insert("content".into(), Value::Array(Vec::new()));
                }
                _ => {
                    fresh.insert("arguments".into(), Value::from(""));
                }
            }
            fresh
        })
    }

    /// Content part `part_index` of message item `index`, created as a
    /// `kind` part (and the parts before it) when no part event came.
    fn part(
        &mut self,
        item_id: impl FnOnce() -> Option<Value>,
        index: u64,
        part_index: u64,
        kind: &str,
    ) -> Result<&mut Map<String, Value>, Unreadable> {
        let item = self.item(item_id, index, "message");
        let content = item
            .entry("content")
            .or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(parts) = content else {
            return Err(BAD_EVENT);
        };
        let at = usize::try_from(part_index).map_err(|_| BAD_EVENT)?;
        // A part index far past the parts seen is not a real stream.
        if at > parts.len() + 64 {
            return Err(BAD_EVENT);
        }
        while parts.len() <= at {
            let (kind, field) = text_part_of(kind);
            let mut part = Map::new();
            part.insert("type".into(), Value::from(kind));
            part.insert(field.into(), Value::from(""));
            part.insert("annotations".into(), Value::Array(Vec::new()));
            parts.push(Value::Object(part));
        }
        match &mut parts[at] {
            Value::Object(part) => Ok(part),
            _ => Err(BAD_EVENT),
        }
    }
}

impl EventFold for Acc {
    fn is_end(data: &[u8]) -> bool {
        data.trim_ascii() == b"[DONE]"
    }

    /// Text, refusal and argument deltas, which a stream is mostly made of
    /// (`in_place_reads_as_whole` holds them to the whole read).
    fn in_place(&mut self, name: Option<&[u8]>, data: &[u8]) -> Result<Option<bool>, Unreadable> {
        let head: Head<'_> = event_head(data, NOT_JSON)?;
        let kind = event_kind(head.kind.as_deref(), name, NO_TYPE)?;
        let item_id = || head.item_id.map(lenient::Any::into_value);
        match kind {
            "response.output_text.delta" | "response.refusal.delta" => {
                let (Some(index), Some(part_index)) = (head.output_index, head.content_index)
                else {
                    return Err(BAD_EVENT);
                };
                let delta = head.delta.ok_or(BAD_EVENT)?;
                let (kind, field) = text_part(kind);
                let part = self.part(item_id, index, part_index, kind)?;
                append(part, field, &delta);
            }
            "response.function_call_arguments.delta" => {
                let index = head.output_index.ok_or(BAD_EVENT)?;
                let delta = head.delta.ok_or(BAD_EVENT)?;
                append(
                    self.item(item_id, index, "function_call"),
                    "arguments",
                    &delta,
                );
            }
            _ => return Ok(None),
        }
        Ok(Some(true))
    }

    /// One event read whole into a `Value`.
    fn whole(&mut self, name: Option<&[u8]>, data: &[u8]) -> Result<bool, Unreadable> {
        let (kind, mut event) = typed_event(name, data, NOT_JSON, NO_TYPE)?;
        let str_field = |event: &Map<String, Value>, key: &str| -> Result<String, Unreadable> {
            event
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(BAD_EVENT)
        };
        match kind.as_str() {
            "response.created" | "response.queued" | "response.in_progress" => {
                self.base = Some(take_object(&mut event, "response")?);
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.terminal = Some(take_object(&mut event, "response")?);
                return Ok(false);
            }
            "response.output_item.added" | "response.output_item.done" => {
                let index = index_of(&event, "output_index").ok_or(BAD_EVENT)?;
                let item = take_object(&mut event, "item")?;
                self.items.insert(index, item);
            }
            "response.content_part.added" | "response.content_part.done" => {
                let (index, part_index) = indexes(&event)?;
                let part = take_object(&mut event, "part")?;
                *self.part(item_id(&event), index, part_index, "output_text")? = part;
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                let (index, part_index) = indexes(&event)?;
                let delta = str_field(&event, "delta")?;
                let (kind, field) = text_part(&kind);
                let part = self.part(item_id(&event), index, part_index, kind)?;
                append(part, field, &delta);
            }
            "response.output_text.done" | "response.refusal.done" => {
                let (index, part_index) = indexes(&event)?;
                let (kind, field) = text_part(&kind);
                let whole = str_field(&event, field)?;
                let part = self.part(item_id(&event), index, part_index, kind)?;
                part.insert(field.into(), Value::from(whole));
            }
            "response.function_call_arguments.delta" => {
                let index = index_of(&event, "output_index").ok_or(BAD_EVENT)?;
                let delta = str_field(&event, "delta")?;
                append(
                    self.item(item_id(&event), index, "function_call"),
                    "arguments",
                    &delta,
                );
            }
            "response.function_call_arguments.done" => {
                let index = index_of(&event, "output_index").ok_or(BAD_EVENT)?;
                let whole = str_field(&event, "arguments")?;
                self.item(item_id(&event), index, "function_call")
                    .insert("arguments".into(), Value::from(whole));
            }
            "error" => return Err(ERROR_EVENT),
            // The API's other events: reasoning, tool progress, annotations.
            other if other.starts_with("response.") => {}
            _ => self.unknown += 1,
        }
        Ok(true)
    }

    fn unknown_events(&self) -> u32 {
        self.unknown
    }

    fn finish(self) -> Result<Document, Unreadable> {
        let (mut response, complete) = match (self.terminal, self.base) {
            (Some(terminal), _) => (terminal, true),
            (None, Some(base)) => (base, false),
            (None, None) => return Err(NO_RESPONSE),
        };
        let rebuilt = !self.items.is_empty();
        let keep = complete
            && match response.get("output") {
                Some(Value::Array(output)) => !output.is_empty() || !rebuilt,
                _ => false,
            };
        if !keep {
            response.insert(
                "output".into(),
                Value::Array(self.items.into_values().map(Value::Object).collect()),
            );
        }
        Ok(Document {
            value: Value::Object(response),
            complete,
        })
    }
}

/// The `item_id` of a whole event, for an item it creates.
fn item_id(event: &Map<String, Value>) -> impl FnOnce() -> Option<Value> + '_ {
    || event.get("item_id").cloned()
}

/// The fields of an event that the in-place events use, read as
/// `Value`'s accessors read them (see `api::lenient`).
#[derive(Default)]
struct Head<'a> {
    kind: Option<Cow<'a, str>>,
    output_index: Option<u64>,
    content_index: Option<u64>,
    delta: Option<Cow<'a, str>>,
    /// Any JSON value: a created item takes it as its `id`.
    item_id: Option<lenient::Any<'a>>,
}

impl<'de> Shape<'de> for Head<'de> {
    fn object<A: MapAccess<'de>>(&mut self, map: A) -> Result<bool, A::Error> {
        lenient::fields(self, map, |head: &mut Self, key, map| {
            match key {
                "type" => lenient::value(map, &mut head.kind)?,
                "output_index" => lenient::value(map, &mut head.output_index)?,
                "content_index" => lenient::value(map, &mut head.content_index)?,
                "delta" => lenient::value(map, &mut head.delta)?,
                "item_id" => head.item_id = Some(map.next_value()?),
                _ => return Ok(false),
            }
            Ok(true)
        })
    }
}

/// `output_index` and `content_index` of a content event.
fn indexes(event: &Map<String, Value>) -> Result<(u64, u64), Unreadable> {
    match (
        index_of(event, "output_index"),
        index_of(event, "content_index"),
    ) {
        (Some(item), Some(part)) => Ok((item, part)),
        _ => Err(BAD_EVENT),
    }
}

/// The part type and text field an output-text or refusal event writes.
fn text_part(event_kind: &str) -> (&'static str, &'static str) {
    if event_kind.starts_with("response.refusal") {
        ("refusal", "refusal")
    } else {
        ("output_text", "text")
    }
}

fn text_part_of(kind: &str) -> (&'static str, &'static str) {
    if kind == "refusal" {
        ("refusal", "refusal")
    } else {
        ("output_text", "text")
    }
}

fn take_object(
    event: &mut Map<String, Value>,
    key: &str,
) -> Result<Map<String, Value>, Unreadable> {
    match event.remove(key) {
        Some(Value::Object(map)) => Ok(map),
        _ => Err(BAD_EVENT),
    }
}

/// The fold with every event read whole into a `Value`, as before the
/// in-place path. The tests and the `reassemble_chat` fuzz target hold
/// [`reassemble`] to it.
#[cfg(any(test, fuzzing))]
pub mod whole {
    pub fn reassemble(body: &[u8]) -> super::Read {
        super::super::fold_whole::<super::Acc>(super::Api::Responses, body)
    }
}

// ---- refusal ----

/// The `openai-responses` refusal: a completed `response` whose output
/// text is `message`, and the same answer as the Responses event stream.
pub fn refusal(message: &str, created_at: u64) -> (Bytes, Bytes) {
    let response_id = "resp_cutover_refusal";
    let item_id = "msg_cutover_refusal";
    let part = json!({"type": "output_text", "text": message, "annotations": []});
    let item = |status: &str, content: Value| json!({"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content});
    let response = |status: &str, output: Value, usage: Value| {
        json!({
            "id": response_id,
            "object": "response",
            "created_at": created_at,
            "status": status,
            "error": null,
            "incomplete_details": null,
            "instructions": null,
            "max_output_tokens": null,
            "model": "cutover-refusal",
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null},
            "store": false,
            "temperature": null,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": null,
            "truncation": "disabled",
            "usage": usage,
            "metadata": {},
        })
    };
    let usage = json!({
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    });
    let done = item("completed", json!([part.clone()]));
    let body = response("completed", json!([done]), usage.clone());
    let empty_part = json!({"type": "output_text", "text": "", "annotations": []});
    let mut events: Vec<(&str, Value)> = vec![
        (
            "response.created",
            json!({"response": response("in_progress", json!([]), Value::Null)}),
        ),
        (
            "response.in_progress",
            json!({"response": response("in_progress", json!([]), Value::Null)}),
        ),
        (
            "response.output_item.added",
            json!({"output_index": 0, "item": item("in_progress", json!([]))}),
        ),
        (
            "response.content_part.added",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": empty_part}),
        ),
        (
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": message, "logprobs": []}),
        ),
        (
            "response.output_text.done",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": message, "logprobs": []}),
        ),
        (
            "response.content_part.done",
            json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": part}),
        ),
        (
            "response.output_item.done",
            json!({"output_index": 0, "item": done}),
        ),
        ("response.completed", json!({"response": body.clone()})),
    ];
    number_events(&mut events);
    (Bytes::from(body.to_string()), render_events(&events))
}

/// Write into each event of a Responses stream its `type` (the event's
/// name) and `sequence_number` (its place), as the API's own events carry.
pub fn number_events(events: &mut [(&str, Value)]) {
    for (seq, (kind, data)) in events.iter_mut().enumerate() {
        if let Value::Object(map) = data {
            map.insert("type".into(), Value::from(*kind));
            map.insert("sequence_number".into(), Value::from(seq));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::compact::CompactFirst;
    use crate::api::stream;

    fn function_call_stream() -> Vec<Value> {
        let base = json!({"id": "resp_1", "object": "response", "created_at": 1, "status": "in_progress",
            "model": "gpt-x", "output": [], "usage": null});
        let message = json!({"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]});
        let call = json!({"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_1",
            "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"});
        let mut done = base.clone();
        done["status"] = json!("completed");
        done["output"] = json!([message, call]);
        done["usage"] = json!({"input_tokens": 20, "output_tokens": 7, "total_tokens": 27});
        vec![
            json!({"type": "response.created", "sequence_number": 0, "response": base}),
            json!({"type": "response.in_progress", "sequence_number": 1, "response": base}),
            json!({"type": "response.output_item.added", "output_index": 0,
                "item": {"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
            json!({"type": "response.content_part.added", "item_id": "msg_1", "output_index": 0, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []}}),
            json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Check"}),
            json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "ing."}),
            json!({"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0, "content_index": 0, "text": "Checking."}),
            json!({"type": "response.output_item.done", "output_index": 0, "item": message}),
            json!({"type": "response.output_item.added", "output_index": 1,
                "item": {"id": "fc_1", "type": "function_call", "status": "in_progress", "call_id": "call_1", "name": "get_weather", "arguments": ""}}),
            json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 1, "delta": "{\"city\":"}),
            json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 1, "delta": "\"Paris\"}"}),
            json!({"type": "response.function_call_arguments.done", "item_id": "fc_1", "output_index": 1, "arguments": "{\"city\":\"Paris\"}"}),
            json!({"type": "response.output_item.done", "output_index": 1, "item": call}),
            json!({"type": "response.completed", "response": done}),
        ]
    }

    #[test]
    fn the_completed_event_carries_the_response() {
        let events = function_call_stream();
        let read = reassemble(stream(&events).as_bytes());
        assert_eq!(read.complete(), Some(&events[13]["response"]));
    }

    #[test]
    fn a_completed_event_without_output_is_filled_from_the_items() {
        let mut events = function_call_stream();
        if let Some(r) = events[13]["response"].as_object_mut() {
            r.remove("output");
        }
        let read = reassemble(stream(&events).as_bytes());
        let doc = read.complete().expect("complete");
        assert_eq!(doc["output"][1]["name"], "get_weather");
        assert_eq!(doc["output"][0]["content"][0]["text"], "Checking.");
        assert_eq!(doc["usage"]["input_tokens"], 20);
    }

    #[test]
    fn a_cut_stream_is_rebuilt_from_the_deltas_and_incomplete() {
        let events = function_call_stream();
        // Cut after the first arguments delta: no .done events for the call.
        let read = reassemble(stream(&events[..10]).as_bytes());
        assert!(read.complete().is_none());
        let doc = read.document.expect("readable");
        assert!(!doc.complete);
        assert_eq!(doc.value["id"], "resp_1");
        assert_eq!(doc.value["output"][0]["content"][0]["text"], "Checking.");
        assert_eq!(doc.value["output"][1]["arguments"], "{\"city\":");
        assert_eq!(doc.value["output"][1]["name"], "get_weather");
        // Deltas without their added events still make a message.
        let bare = stream(&[events[0].clone(), events[4].clone(), events[5].clone()]);
        let doc = reassemble(bare.as_bytes()).document.expect("readable");
        assert_eq!(doc.value["output"][0]["content"][0]["text"], "Checking.");
        assert_eq!(doc.value["output"][0]["id"], "msg_1");
    }

    #[test]
    fn every_cut_is_incomplete() {
        let events = function_call_stream();
        for cut in 0..events.len() {
            let read = reassemble(stream(&events[..cut]).as_bytes());
            assert!(read.complete().is_none(), "cut after {cut} events");
        }
    }

    /// Every ordered triple of awkward events, after a start, reads the
    /// same in place as whole: items created by a delta with every kind of
    /// `item_id`, wrong types, duplicate keys, a missing or non-string
    /// `type` beside an SSE name, escapes, bytes that are not UTF-8, and
    /// the events the in-place path hands over.
    #[test]
    fn in_place_reads_as_whole() {
        let start = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"output\":[]}}\n\n";
        let events: [&[u8]; 18] = [
            b"data: {\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"id\":\"m\",\"type\":\"message\",\"content\":[]}}\n\n",
            b"data: {\"type\":\"response.content_part.added\",\"output_index\":0,\"content_index\":0,\"part\":{\"type\":\"output_text\",\"text\":\"\"}}\n\n",
            b"data: {\"type\":\"response.output_text.delta\",\"item_id\":\"m\",\"output_index\":0,\"content_index\":0,\"delta\":\"a \\\"q\\\" \\u00e9\"}\n\n",
            b"data: {\"type\":\"response.output_text.delta\",\"item_id\":7,\"output_index\":1,\"content_index\":2,\"delta\":\"b\"}\n\n",
            b"data: {\"type\":\"response.refusal.delta\",\"item_id\":null,\"output_index\":2,\"content_index\":0,\"delta\":\"no\"}\n\n",
            b"data: {\"type\":\"response.output_text.delta\",\"item_id\":{\"k\":[1,2.5]},\"output_index\":3,\"content_index\":0,\"delta\":\"c\",\"delta\":\"d\"}\n\n",
            b"data: {\"type\":\"response.function_call_arguments.delta\",\"item_id\":\"f\\n\",\"output_index\":4,\"delta\":\"{\\\"x\\\":\"}\n\n",
            b"data: {\"type\":\"response.function_call_arguments.delta\",\"output_index\":0,\"delta\":\"1}\"}\n\n",
            b"data: {\"type\":\"response.output_text.delta\",\"output_index\":-1,\"content_index\":0,\"delta\":\"x\"}\n\n",
            b"data: {\"type\":\"response.output_text.delta\",\"output_index\":0,\"content_index\":1.5,\"delta\":\"x\"}\n\n",
            b"data: {\"type\":\"response.output_text.delta\",\"output_index\":0,\"content_index\":100,\"delta\":\"x\"}\n\n",
            b"data: {\"type\":\"response.output_text.delta\",\"output_index\":0,\"content_index\":0,\"delta\":5}\n\n",
            b"event: response.output_text.delta\ndata: {\"output_index\":0,\"content_index\":0,\"delta\":\"n\"}\n\n",
            b"event: response.refusal.delta\ndata: {\"type\":3,\"output_index\":0,\"content_index\":0,\"delta\":\"m\"}\n\n",
            b"data: {\"type\":\"response.output_text.done\",\"output_index\":0,\"content_index\":0,\"text\":\"whole\"}\n\n",
            b"data: {\"type\":\"response.reasoning.delta\",\"delta\":\"r\"}\n\n",
            b"data: {\"type\":\"mystery\"}\n\n",
            b"data: {\"type\":\"response.output_text.delta\",\"delta\":\"\xff\"}\n\n",
        ];
        let tails: [&[u8]; 4] = [
            b"",
            b"data: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"output\":[]}}\n\n",
            b"data: [DONE]\n\n",
            b"data: {\"type\":\"error\"}\n\n",
        ];
        crate::api::assert_triples_agree(
            start.as_bytes(),
            &events,
            &tails,
            reassemble,
            whole::reassemble,
        );
    }

    #[test]
    fn unknown_events_are_counted_and_errors_are_unreadable() {
        let mut events = function_call_stream();
        events.insert(
            3,
            json!({"type": "response.reasoning_summary_text.delta", "delta": "hm"}),
        );
        events.insert(3, json!({"type": "banana"}));
        let read = reassemble(stream(&events).as_bytes());
        assert_eq!(read.unknown_events, 1);
        assert!(read.complete().is_some());
        let error = stream(&[
            events[0].clone(),
            json!({"type": "error", "code": "server_error", "message": "x"}),
        ]);
        assert_eq!(
            reassemble(error.as_bytes()).document.map_err(|e| e.skip),
            Err(Skip::ErrorEvent)
        );
        for bad in [
            json!({"type": "response.output_text.delta", "output_index": 0, "delta": "x"}),
            json!({"type": "response.output_text.delta", "output_index": 0, "content_index": 99999, "delta": "x"}),
            json!({"type": "response.completed", "response": []}),
            json!({"no": "type"}),
        ] {
            let body = format!("data: {}\n\ndata: {bad}\n\n", events[0]);
            assert_eq!(
                reassemble(body.as_bytes()).document.map_err(|e| e.skip),
                Err(Skip::WrongShape),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_refusal_reassembles_to_its_json() {
        let (json, sse) = refusal("sorry", 5);
        let plain: Value = serde_json::from_slice(&json).expect("json");
        assert_eq!(plain["output"][0]["content"][0]["text"], "sorry");
        let read = reassemble(&sse);
        assert_eq!(read.complete(), Some(&plain));
        // And rebuilt without its completed event, the same output.
        let text = String::from_utf8_lossy(&sse);
        let cut = text.split("event: response.completed").next().unwrap_or("");
        let doc = reassemble(cut.as_bytes()).document.expect("readable");
        assert_eq!(doc.value["output"], plain["output"]);
    }

    #[test]
    fn usage_of_events() {
        assert_eq!(
            event_usage::<CompactFirst>(br#"{"type":"response.completed","response":{"usage":{"input_tokens":3,"output_tokens":2}}}"#),
            Ok(Some(Usage {
                input: Some(3),
                output: Some(2)
            }))
        );
        assert_eq!(
            event_usage::<CompactFirst>(
                br#"{"type":"response.created","response":{"usage":null}}"#
            ),
            Ok(None)
        );
    }
}
