//! Anthropic Messages (`…/messages`).
//!
//! **Usage**: `usage.input_tokens` and `usage.output_tokens` of a `message`;
//! in a stream, `message.usage` of `message_start`, then `usage` of each
//! `message_delta`, whose `output_tokens` is cumulative (the last one wins).
//! `input_tokens` is Anthropic's own count, which excludes the cache's
//! `cache_creation_input_tokens` and `cache_read_input_tokens`.
//!
//! **Reassembly**: a stream folds into the `message` the same call returns
//! unstreamed:
//!
//! * `message_start` gives the message (id, model, role, usage, …);
//! * `content_block_start` opens block `index` as it is given;
//!   `content_block_delta` extends it: `text_delta` appends to `text`,
//!   `input_json_delta` collects `partial_json`, parsed into the
//!   `tool_use` block's `input` at `content_block_stop`, `thinking_delta`
//!   appends to `thinking`, `signature_delta` sets `signature`,
//!   `citations_delta` appends to `citations`;
//! * `message_delta` sets the message's fields it carries (`stop_reason`,
//!   `stop_sequence`, …) and updates its `usage`;
//! * `message_stop` ends it: a stream without it is **incomplete**;
//! * `ping` is ignored; an `error` event makes the stream unreadable; any
//!   other event type (Anthropic may add some) is skipped and counted.
//!
//! **Refusal** (`anthropic-messages`): a `message` whose one text block is
//! the refusal text, or the same as its event stream ending in
//! `message_stop`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::MapAccess;
use serde_json::{Map, Value, json};

use super::compact::Parse;
use super::lenient::{self, Shape};
use super::tokens::{InputOutput, Usage, classify};
use super::{
    Api, Document, EventFold, Read, Skip, Unreadable, append, event_head, event_kind, fold_events,
    index_of, typed_event,
};

/// The event types of the Messages stream.
const EVENT_TYPES: [&str; 8] = [
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
];

/// Is `kind` an event type of the Messages stream?
pub fn is_event_type(kind: &str) -> bool {
    EVENT_TYPES.contains(&kind)
}

// ---- usage ----

/// The usage a stream event carries: `message_start`'s `message.usage`, or
/// `message_delta`'s `usage`.
pub(super) fn event_usage<P: Parse>(data: &[u8]) -> Result<Option<Usage>, Skip> {
    #[derive(Deserialize)]
    struct Message {
        usage: Option<InputOutput>,
    }
    #[derive(Deserialize)]
    struct Event {
        message: Option<Message>,
        usage: Option<InputOutput>,
    }
    let event: Event = P::parse(data).map_err(|e| classify(&e))?;
    Ok(event
        .usage
        .or_else(|| event.message.and_then(|m| m.usage))
        .map(Usage::from))
}

// ---- reassembly ----

const NOT_JSON: Unreadable = Unreadable {
    skip: Skip::Malformed,
    why: "the event stream is not an Anthropic Messages stream: a data line is not a JSON object",
};
const NO_TYPE: Unreadable = Unreadable {
    skip: Skip::WrongShape,
    why: "an Anthropic Messages event has no type",
};
const BAD_EVENT: Unreadable = Unreadable {
    skip: Skip::WrongShape,
    why: "an Anthropic Messages event is missing its index, message, content block or delta",
};
const BAD_TOOL_INPUT: Unreadable = Unreadable {
    skip: Skip::WrongShape,
    why: "a tool_use block's input_json_delta fragments do not make JSON",
};
const ERROR_EVENT: Unreadable = Unreadable {
    skip: Skip::ErrorEvent,
    why: "the Anthropic Messages stream carries an error event",
};
const NO_START: Unreadable = Unreadable {
    skip: Skip::Malformed,
    why: "the event stream is not an Anthropic Messages stream: no message_start event",
};

/// Read a whole Messages event stream into its `message`.
pub fn reassemble(body: &[u8]) -> Read {
    fold_events::<Acc>(Api::Messages, body)
}

#[derive(Default)]
struct Acc {
    message: Option<Map<String, Value>>,
    blocks: BTreeMap<u64, Map<String, Value>>,
    /// `partial_json` collected per block index, until its stop.
    json: BTreeMap<u64, String>,
    stopped: bool,
    unknown: u32,
}

impl Acc {
    fn delta(&mut self, index: u64, delta: &Map<String, Value>) -> Result<(), Unreadable> {
        let text = |key: &str| delta.get(key).and_then(Value::as_str).ok_or(BAD_EVENT);
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => {
                let piece = text("text")?;
                append(self.block(index, "text"), "text", piece);
            }
            Some("input_json_delta") => {
                let piece = text("partial_json")?;
                self.json.entry(index).or_default().push_str(piece);
            }
            Some("thinking_delta") => {
                let piece = text("thinking")?;
                append(self.block(index, "thinking"), "thinking", piece);
            }
            Some("signature_delta") => {
                let signature = text("signature")?;
                self.block(index, "thinking")
                    .insert("signature".into(), Value::from(signature));
            }
            Some("citations_delta") => {
                let citation = delta.get("citation").cloned().ok_or(BAD_EVENT)?;
                let block = self.block(index, "text");
                match block.get_mut("citations") {
                    Some(Value::Array(list)) => list.push(citation),
                    _ => {
                        block.insert("citations".into(), Value::Array(vec![citation]));
                    }
                }
            }
            _ => self.unknown += 1,
        }
        Ok(())
    }

    /// Block `index`, opened as a `kind` block if no start event came.
    fn block(&mut self, index: u64, kind: &str) -> &mut Map<String, Value> {
        self.blocks.entry(index).or_insert_with(|| {
            let mut fresh = Map::new();
            fresh.insert("type".into(), Value::from(kind));
            fresh.insert(kind.into(), Value::from(""));
            fresh
        })
    }

    /// Parse block `index`'s collected `partial_json` into its `input`. A
    /// cut stream (`strict` false) keeps what the start event gave when
    /// the fragments do not make JSON yet.
    fn close_input(&mut self, index: u64, strict: bool) -> Result<(), Unreadable> {
        let Some(json) = self.json.remove(&index) else {
            return Ok(());
        };
        if json.trim().is_empty() {
            return Ok(());
        }
        match serde_json::from_str::<Value>(&json) {
            Ok(input) => {
                if let Some(block) = self.blocks.get_mut(&index) {
                    block.insert("input".into(), input);
                }
                Ok(())
            }
            Err(_) if strict => Err(BAD_TOOL_INPUT),
            Err(_) => Ok(()),
        }
    }
}

impl EventFold for Acc {
    /// Deltas, block stops, pings and the stop, which a stream is mostly
    /// made of (`in_place_reads_as_whole` holds them to the whole read).
    fn in_place(&mut self, name: Option<&[u8]>, data: &[u8]) -> Result<Option<bool>, Unreadable> {
        let head: Head<'_> = event_head(data, NOT_JSON)?;
        let kind = event_kind(head.kind.as_deref(), name, NO_TYPE)?;
        match kind {
            "content_block_delta" => {
                let index = head.index.ok_or(BAD_EVENT)?;
                let delta = head.delta.ok_or(BAD_EVENT)?;
                match delta.kind.as_deref() {
                    Some("text_delta") => {
                        let piece = delta.text.ok_or(BAD_EVENT)?;
                        append(self.block(index, "text"), "text", &piece);
                    }
                    Some("input_json_delta") => {
                        let piece = delta.partial_json.ok_or(BAD_EVENT)?;
                        self.json.entry(index).or_default().push_str(&piece);
                    }
                    Some("thinking_delta") => {
                        let piece = delta.thinking.ok_or(BAD_EVENT)?;
                        append(self.block(index, "thinking"), "thinking", &piece);
                    }
                    Some("signature_delta") => {
                        let signature = delta.signature.ok_or(BAD_EVENT)?;
                        self.block(index, "thinking")
                            .insert("signature".into(), Value::from(signature));
                    }
                    // Its citation is kept whole, as a `Value`.
                    Some("citations_delta") => return Ok(None),
                    _ => self.unknown += 1,
                }
            }
            "content_block_stop" => {
                let index = head.index.ok_or(BAD_EVENT)?;
                self.close_input(index, true)?;
            }
            "message_stop" => {
                self.stopped = true;
                return Ok(Some(false));
            }
            "ping" => {}
            _ => return Ok(None),
        }
        Ok(Some(true))
    }

    /// One event read whole into a `Value`.
    fn whole(&mut self, name: Option<&[u8]>, data: &[u8]) -> Result<bool, Unreadable> {
        let (kind, mut event) = typed_event(name, data, NOT_JSON, NO_TYPE)?;
        match kind.as_str() {
            "message_start" => match event.remove("message") {
                Some(Value::Object(message)) => self.message = Some(message),
                _ => return Err(BAD_EVENT),
            },
            "content_block_start" => {
                let index = index_of(&event, "index").ok_or(BAD_EVENT)?;
                let Some(Value::Object(block)) = event.remove("content_block") else {
                    return Err(BAD_EVENT);
                };
                self.blocks.insert(index, block);
                self.json.remove(&index);
            }
            "content_block_delta" => {
                let index = index_of(&event, "index").ok_or(BAD_EVENT)?;
                let Some(Value::Object(delta)) = event.get("delta") else {
                    return Err(BAD_EVENT);
                };
                self.delta(index, delta)?;
            }
            "content_block_stop" => {
                let index = index_of(&event, "index").ok_or(BAD_EVENT)?;
                self.close_input(index, true)?;
            }
            "message_delta" => {
                let message = self.message.get_or_insert_with(Map::new);
                if let Some(Value::Object(delta)) = event.remove("delta") {
                    message.extend(delta);
                }
                if let Some(Value::Object(usage)) = event.remove("usage") {
                    match message.get_mut("usage") {
                        Some(Value::Object(current)) => current.extend(usage),
                        _ => {
                            message.insert("usage".into(), Value::Object(usage));
                        }
                    }
                }
            }
            "message_stop" => {
                self.stopped = true;
                return Ok(false);
            }
            "ping" => {}
            "error" => return Err(ERROR_EVENT),
            _ => self.unknown += 1,
        }
        Ok(true)
    }

    fn unknown_events(&self) -> u32 {
        self.unknown
    }

    fn finish(mut self) -> Result<Document, Unreadable> {
        let pending: Vec<u64> = self.json.keys().copied().collect();
        for index in pending {
            self.close_input(index, self.stopped)?;
        }
        let Some(mut message) = self.message.take() else {
            return Err(NO_START);
        };
        message.insert(
            "content".into(),
            Value::Array(self.blocks.into_values().map(Value::Object).collect()),
        );
        Ok(Document {
            value: Value::Object(message),
            complete: self.stopped,
        })
    }
}

// ---- an event's head, read as `Value`'s accessors read it (see `api::lenient`) ----

/// The fields of an event that the in-place events use.
#[derive(Default)]
struct Head<'a> {
    kind: Option<Cow<'a, str>>,
    index: Option<u64>,
    /// `as_object`.
    delta: Option<DeltaHead<'a>>,
}

impl<'de> Shape<'de> for Head<'de> {
    fn object<A: MapAccess<'de>>(&mut self, map: A) -> Result<bool, A::Error> {
        lenient::fields(self, map, |head: &mut Self, key, map| {
            match key {
                "type" => lenient::value(map, &mut head.kind)?,
                "index" => lenient::value(map, &mut head.index)?,
                "delta" => lenient::value(map, &mut head.delta)?,
                _ => return Ok(false),
            }
            Ok(true)
        })
    }
}

#[derive(Default)]
struct DeltaHead<'a> {
    kind: Option<Cow<'a, str>>,
    text: Option<Cow<'a, str>>,
    partial_json: Option<Cow<'a, str>>,
    thinking: Option<Cow<'a, str>>,
    signature: Option<Cow<'a, str>>,
}

impl<'de> Shape<'de> for DeltaHead<'de> {
    fn object<A: MapAccess<'de>>(&mut self, map: A) -> Result<bool, A::Error> {
        lenient::fields(self, map, |delta: &mut Self, key, map| {
            match key {
                "type" => lenient::value(map, &mut delta.kind)?,
                "text" => lenient::value(map, &mut delta.text)?,
                "partial_json" => lenient::value(map, &mut delta.partial_json)?,
                "thinking" => lenient::value(map, &mut delta.thinking)?,
                "signature" => lenient::value(map, &mut delta.signature)?,
                _ => return Ok(false),
            }
            Ok(true)
        })
    }
}

/// The fold with every event read whole into a `Value`, as before the
/// in-place path. The tests and the `reassemble_chat` fuzz target hold
/// [`reassemble`] to it.
#[cfg(any(test, fuzzing))]
pub mod whole {
    pub fn reassemble(body: &[u8]) -> super::Read {
        super::super::fold_whole::<super::Acc>(super::Api::Messages, body)
    }
}

// ---- refusal ----

/// The `anthropic-messages` refusal: a `message` whose one text block is
/// `message`, and the same answer as its event stream.
pub fn refusal(message: &str) -> (Bytes, Bytes) {
    let id = "msg_cutover_refusal";
    let model = "cutover-refusal";
    let body = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": message}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    });
    let events = [
        (
            "message_start",
            json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": message}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 0}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    (Bytes::from(body.to_string()), render_events(&events))
}

/// `event: NAME` / `data: JSON` pairs as one SSE body.
pub(super) fn render_events(events: &[(&str, Value)]) -> Bytes {
    let mut out = String::new();
    for (name, data) in events {
        out.push_str("event: ");
        out.push_str(name);
        out.push_str("\ndata: ");
        out.push_str(&data.to_string());
        out.push_str("\n\n");
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::compact::CompactFirst;
    use crate::api::stream;

    fn tool_stream() -> Vec<Value> {
        vec![
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                "model": "claude-x", "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 10, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "check."}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Pa"}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "ris\"}"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 42}}),
            json!({"type": "message_stop"}),
        ]
    }

    #[test]
    fn a_tool_use_stream_is_the_unstreamed_message() {
        let read = reassemble(stream(&tool_stream()).as_bytes());
        assert_eq!(read.unknown_events, 0);
        let doc = read.complete().expect("complete");
        assert_eq!(
            *doc,
            json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                ],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 10, "output_tokens": 42},
            })
        );
    }

    #[test]
    fn without_message_stop_it_is_incomplete() {
        let events = tool_stream();
        for cut in 1..events.len() {
            let read = reassemble(stream(&events[..cut]).as_bytes());
            assert!(read.complete().is_none(), "cut after {cut} events");
            assert!(read.skips().any(|(s, _)| s == Skip::Incomplete));
        }
        // Cut inside the tool input: the start event's input stays.
        let read = reassemble(stream(&events[..9]).as_bytes());
        let doc = read.document.expect("readable");
        assert_eq!(doc.value["content"][1]["input"], json!({}));
        assert_eq!(doc.value["content"][0]["text"], "Let me check.");
    }

    /// Every ordered triple of awkward events, after a start, reads the
    /// same in place as whole: wrong types, duplicate keys, a missing or
    /// non-string `type` beside an SSE name, escapes, bytes that are not
    /// UTF-8, and the events the in-place path hands over.
    #[test]
    fn in_place_reads_as_whole() {
        let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"role\":\"assistant\",\"content\":[],\"usage\":{\"input_tokens\":3}}}\n\n";
        let events: [&[u8]; 18] = [
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            b"data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a \\\"q\\\" \\u00e9\"}}\n\n",
            b"data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n",
            b"data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}\n\n",
            b"data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hm\"}}\n\n",
            b"data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"sig\",\"text\":5}}\n\n",
            b"data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"citations_delta\",\"citation\":{\"cited_text\":\"c\"}}}\n\n",
            b"data: {\"type\":\"content_block_delta\",\"index\":-1,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n",
            b"data: {\"type\":\"content_block_delta\",\"index\":1.0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n",
            b"data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"y\"},\"delta\":[]}\n\n",
            b"data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":7}}\n\n",
            b"data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":9,\"text\":\"z\"}}\n\n",
            b"event: content_block_delta\ndata: {\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"n\"}}\n\n",
            b"event: ping\ndata: {\"type\":5}\n\n",
            b"data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
            b"data: {\"type\":\"content_block_stop\",\"index\":\"1\"}\n\n",
            b"data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":4}}\n\n",
            b"data: {\"type\":\"text_delta\",\"text\":\"\xff\"}\n\n",
        ];
        let tails: [&[u8]; 4] = [
            b"",
            b"data: {\"type\":\"message_stop\"}\n\n",
            b"data: [1]\n\n",
            b"data: {\"type\":\"ping\"} x\n\n",
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
    fn unknown_events_are_skipped_and_counted_errors_are_unreadable() {
        let mut events = tool_stream();
        events.insert(2, json!({"type": "future_event", "x": 1}));
        events.insert(
            4,
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "future_delta"}}),
        );
        let read = reassemble(stream(&events).as_bytes());
        assert_eq!(read.unknown_events, 2);
        assert!(read.complete().is_some());

        let error = stream(&[
            tool_stream()[0].clone(),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ]);
        let read = reassemble(error.as_bytes());
        assert_eq!(read.document.map_err(|e| e.skip), Err(Skip::ErrorEvent));
    }

    #[test]
    fn wrong_shapes_are_unreadable() {
        let start = tool_stream()[0].clone();
        for bad in [
            json!({"type": "content_block_start", "content_block": {"type": "text"}}),
            json!({"type": "content_block_delta", "index": 0}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 5}}),
            json!({"type": "message_start", "message": "no"}),
        ] {
            let read = reassemble(stream(&[start.clone(), bad.clone()]).as_bytes());
            assert_eq!(
                read.document.map_err(|e| e.skip),
                Err(Skip::WrongShape),
                "{bad}"
            );
        }
        let broken_input = stream(&[
            start.clone(),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "input": {}}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{nope"}}),
            json!({"type": "content_block_stop", "index": 0}),
        ]);
        let read = reassemble(broken_input.as_bytes());
        assert_eq!(read.document.map_err(|e| e.skip), Err(Skip::WrongShape));
        assert_eq!(
            reassemble(b"data: [1]\n\n").document.map_err(|e| e.skip),
            Err(Skip::Malformed)
        );
        assert_eq!(
            reassemble(b"").document.map_err(|e| e.skip),
            Err(Skip::Malformed)
        );
    }

    #[test]
    fn the_refusal_reassembles_to_its_json() {
        let (json, sse) = refusal("sorry");
        let plain: Value = serde_json::from_slice(&json).expect("json");
        let read = reassemble(&sse);
        assert_eq!(read.complete(), Some(&plain));
    }

    #[test]
    fn usage_of_events() {
        assert_eq!(
            event_usage::<CompactFirst>(br#"{"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}"#),
            Ok(Some(Usage {
                input: Some(5),
                output: Some(1)
            }))
        );
        assert_eq!(
            event_usage::<CompactFirst>(br#"{"type":"message_delta","usage":{"output_tokens":9}}"#),
            Ok(Some(Usage {
                input: None,
                output: Some(9)
            }))
        );
        assert_eq!(event_usage::<CompactFirst>(br#"{"type":"ping"}"#), Ok(None));
    }
}
