//! What the mock says: parse a request leniently (Chat Completions,
//! Responses or Anthropic Messages: the fields do not collide), then render
//! the reply in the API the path names, as one document or as that API's
//! event stream. The usage numbers are exact and the same in every shape:
//! input = words of the prompt (at least 1), output = words of the reply.
//!
//! Everything here is pure and deterministic for a given request and
//! sequence number, so the response cache and the shadow comparison can be
//! tested against it. Nothing here panics on malformed input: a body that is
//! not a JSON object is answered as a non-streaming request with no prompt.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::api::{Api, responses};

/// Model name used when the request does not carry a string `model`.
pub const DEFAULT_MODEL: &str = "mock-model";

/// At most this many words of the last user message are echoed back, so a
/// huge prompt does not become a huge reply.
const ECHO_WORDS: usize = 16;

/// The parts of a chat request the mock reacts to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChatRequest {
    /// `model`, if it is a string.
    pub model: Option<String>,
    /// `"stream": true`.
    pub stream: bool,
    /// Whitespace-separated words over every message's content.
    pub prompt_words: usize,
    /// The text of the last `role: user` message.
    pub last_user_text: Option<String>,
    /// `tools[0].function.name`, if the request offers tools.
    pub first_tool: Option<String>,
}

impl ChatRequest {
    /// Parses leniently: unknown shapes are ignored, never rejected.
    pub fn parse(body: &[u8]) -> Self {
        let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
            return Self::default();
        };
        let mut req = Self {
            model: obj.get("model").and_then(Value::as_str).map(str::to_owned),
            stream: obj.get("stream").and_then(Value::as_bool).unwrap_or(false),
            ..Self::default()
        };
        // Anthropic's `system` and the Responses `instructions` are prompt too.
        for key in ["system", "instructions"] {
            if let Some(text) = obj.get(key).map(content_text) {
                req.prompt_words += text.split_whitespace().count();
            }
        }
        let mut turns: Vec<&Value> = Vec::new();
        if let Some(messages) = obj.get("messages").and_then(Value::as_array) {
            turns.extend(messages);
        }
        match obj.get("input") {
            // Responses: a string is one user message.
            Some(Value::String(text)) => {
                req.prompt_words += text.split_whitespace().count();
                req.last_user_text = Some(text.clone());
            }
            Some(Value::Array(items)) => turns.extend(items),
            _ => {}
        }
        for message in turns {
            let text = message.get("content").map(content_text).unwrap_or_default();
            req.prompt_words += text.split_whitespace().count();
            if message.get("role").and_then(Value::as_str) == Some("user") {
                req.last_user_text = Some(text);
            }
        }
        // Chat tools name their function; Responses and Anthropic tools
        // carry the name themselves.
        req.first_tool = obj
            .get("tools")
            .and_then(Value::as_array)
            .and_then(|tools| tools.first())
            .and_then(|tool| tool.pointer("/function/name").or_else(|| tool.get("name")))
            .and_then(Value::as_str)
            .map(str::to_owned);
        req
    }
}

/// `content` is either a string or an array of parts (`{"type":"text","text":…}`,
/// `{"type":"input_text","text":…}`).
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// A fully decided reply, renderable in either wire format.
#[derive(Clone, Debug)]
pub struct Reply {
    seq: u64,
    id: String,
    created: u64,
    model: String,
    content: String,
    tool: Option<ToolCall>,
    prompt_tokens: usize,
    completion_tokens: usize,
}

#[derive(Clone, Debug)]
struct ToolCall {
    id: String,
    name: String,
    arguments: String,
}

impl Reply {
    /// `seq` makes the id unique per request; `created` is unix seconds.
    pub fn new(name: &str, req: &ChatRequest, seq: u64, created: u64) -> Self {
        let mut content = format!("Hello from {name}");
        let echo: Vec<&str> = req
            .last_user_text
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .take(ECHO_WORDS)
            .collect();
        if !echo.is_empty() {
            content.push_str(": ");
            content.push_str(&echo.join(" "));
        }
        let tool = req.first_tool.as_ref().map(|tool_name| ToolCall {
            id: format!("call_mock_{seq}"),
            name: tool_name.clone(),
            arguments: json!({ "from": name, "echo": echo.join(" ") }).to_string(),
        });
        let completion_tokens = content.split_whitespace().count();
        Self {
            seq,
            id: format!("chatcmpl-mock-{seq}"),
            created,
            model: req
                .model
                .clone()
                .unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
            content,
            tool,
            prompt_tokens: req.prompt_words.max(1),
            completion_tokens,
        }
    }

    /// The reply text (the concatenation of all SSE content deltas).
    pub fn content(&self) -> &str {
        &self.content
    }

    fn finish_reason(&self) -> &'static str {
        if self.tool.is_some() {
            "tool_calls"
        } else {
            "stop"
        }
    }

    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }

    /// The non-streaming `chat.completion` document.
    pub fn completion_json(&self) -> Bytes {
        let mut message = json!({ "role": "assistant", "content": self.content });
        if let Some(tool) = &self.tool {
            message["tool_calls"] = json!([{
                "id": tool.id,
                "type": "function",
                "function": { "name": tool.name, "arguments": tool.arguments },
            }]);
        }
        let doc = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "message": message, "finish_reason": self.finish_reason() }],
            "usage": self.usage(),
        });
        Bytes::from(doc.to_string())
    }

    /// The SSE events, one element per event (each becomes one body frame):
    /// role, `chunks` content deltas, tool-call deltas (name first, then the
    /// arguments in `chunks` pieces), the finish reason, usage, `[DONE]`.
    pub fn sse_events(&self, chunks: usize) -> Vec<Bytes> {
        let chunks = chunks.max(1);
        let mut events =
            vec![self.chunk_event(json!({ "role": "assistant", "content": "" }), None)];
        for piece in split_even(&self.content, chunks) {
            events.push(self.chunk_event(json!({ "content": piece }), None));
        }
        if let Some(tool) = &self.tool {
            events.push(self.chunk_event(
                json!({ "tool_calls": [{
                    "index": 0,
                    "id": tool.id,
                    "type": "function",
                    "function": { "name": tool.name, "arguments": "" },
                }] }),
                None,
            ));
            for piece in split_even(&tool.arguments, chunks) {
                events.push(self.chunk_event(
                    json!({ "tool_calls": [{ "index": 0, "function": { "arguments": piece } }] }),
                    None,
                ));
            }
        }
        events.push(self.chunk_event(json!({}), Some(self.finish_reason())));
        let usage = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": self.usage(),
        });
        events.push(sse_data(&usage.to_string()));
        events.push(sse_data("[DONE]"));
        events
    }

    /// The reply in `api`'s non-streamed shape.
    pub fn json_for(&self, api: Api) -> Bytes {
        match api {
            Api::Chat => self.completion_json(),
            Api::Responses => Bytes::from(self.response().to_string()),
            Api::Messages => Bytes::from(self.message().to_string()),
        }
    }

    /// The reply as `api`'s event stream, one element per event.
    pub fn events_for(&self, api: Api, chunks: usize) -> Vec<Bytes> {
        match api {
            Api::Chat => self.sse_events(chunks),
            Api::Responses => self.response_events(chunks),
            Api::Messages => self.message_events(chunks),
        }
    }

    // ---- the Responses API ----

    fn response_ids(&self) -> (String, String, String) {
        (
            format!("resp_mock_{}", self.seq),
            format!("msg_mock_{}", self.seq),
            format!("fc_mock_{}", self.seq),
        )
    }

    fn response_usage(&self) -> Value {
        json!({
            "input_tokens": self.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": self.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }

    fn response_shell(&self, status: &str, output: Value, usage: Value) -> Value {
        let (id, _, _) = self.response_ids();
        json!({
            "id": id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "error": null,
            "incomplete_details": null,
            "instructions": null,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": true,
            "tool_choice": "auto",
            "tools": [],
            "usage": usage,
            "metadata": {},
        })
    }

    fn response_message(&self) -> Value {
        let (_, msg_id, _) = self.response_ids();
        json!({
            "id": msg_id,
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": self.content, "annotations": []}],
        })
    }

    fn response_call(&self, tool: &ToolCall, arguments: &str, status: &str) -> Value {
        let (_, _, fc_id) = self.response_ids();
        json!({
            "id": fc_id,
            "type": "function_call",
            "status": status,
            "call_id": tool.id,
            "name": tool.name,
            "arguments": arguments,
        })
    }

    /// The non-streamed Responses `response`.
    fn response(&self) -> Value {
        let mut output = vec![self.response_message()];
        if let Some(tool) = &self.tool {
            output.push(self.response_call(tool, &tool.arguments, "completed"));
        }
        self.response_shell("completed", Value::Array(output), self.response_usage())
    }

    /// The Responses event stream, as the API sends it: created,
    /// in_progress, the message item with `chunks` text deltas, the
    /// function call item with `chunks` argument deltas, completed.
    fn response_events(&self, chunks: usize) -> Vec<Bytes> {
        let (_, msg_id, fc_id) = self.response_ids();
        let pending = self.response_shell("in_progress", json!([]), Value::Null);
        let mut events: Vec<(&str, Value)> = vec![
            ("response.created", json!({"response": pending})),
            ("response.in_progress", json!({"response": pending})),
            (
                "response.output_item.added",
                json!({"output_index": 0, "item": {"id": msg_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
            ),
            (
                "response.content_part.added",
                json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
            ),
        ];
        for piece in split_even(&self.content, chunks.max(1)) {
            events.push((
                "response.output_text.delta",
                json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []}),
            ));
        }
        let part = json!({"type": "output_text", "text": self.content, "annotations": []});
        events.push((
            "response.output_text.done",
            json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "text": self.content, "logprobs": []}),
        ));
        events.push((
            "response.content_part.done",
            json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "part": part}),
        ));
        events.push((
            "response.output_item.done",
            json!({"output_index": 0, "item": self.response_message()}),
        ));
        if let Some(tool) = &self.tool {
            events.push((
                "response.output_item.added",
                json!({"output_index": 1, "item": self.response_call(tool, "", "in_progress")}),
            ));
            for piece in split_even(&tool.arguments, chunks.max(1)) {
                events.push((
                    "response.function_call_arguments.delta",
                    json!({"item_id": fc_id, "output_index": 1, "delta": piece}),
                ));
            }
            events.push((
                "response.function_call_arguments.done",
                json!({"item_id": fc_id, "output_index": 1, "arguments": tool.arguments}),
            ));
            events.push((
                "response.output_item.done",
                json!({"output_index": 1, "item": self.response_call(tool, &tool.arguments, "completed")}),
            ));
        }
        events.push(("response.completed", json!({"response": self.response()})));
        responses::number_events(&mut events);
        events
            .iter()
            .map(|(kind, data)| named_event(kind, data))
            .collect()
    }

    // ---- Anthropic Messages ----

    fn message_id(&self) -> String {
        format!("msg_mock_{}", self.seq)
    }

    fn stop_reason(&self) -> &'static str {
        if self.tool.is_some() {
            "tool_use"
        } else {
            "end_turn"
        }
    }

    fn tool_input(tool: &ToolCall) -> Value {
        serde_json::from_str(&tool.arguments).unwrap_or_else(|_| json!({}))
    }

    fn tool_use_id(&self) -> String {
        format!("toolu_mock_{}", self.seq)
    }

    /// The non-streamed Anthropic `message`.
    fn message(&self) -> Value {
        let mut content = vec![json!({"type": "text", "text": self.content})];
        if let Some(tool) = &self.tool {
            content.push(json!({"type": "tool_use", "id": self.tool_use_id(), "name": tool.name, "input": Self::tool_input(tool)}));
        }
        json!({
            "id": self.message_id(),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": self.stop_reason(),
            "stop_sequence": null,
            "usage": {"input_tokens": self.prompt_tokens, "output_tokens": self.completion_tokens},
        })
    }

    /// The Messages event stream: message_start, the text block with
    /// `chunks` deltas (a ping after the first), the tool_use block with
    /// `chunks` input_json_delta fragments, message_delta, message_stop.
    fn message_events(&self, chunks: usize) -> Vec<Bytes> {
        let start = json!({
            "id": self.message_id(), "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 1},
        });
        let mut events: Vec<(&str, Value)> = vec![
            ("message_start", json!({"message": start})),
            (
                "content_block_start",
                json!({"index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            ("ping", json!({})),
        ];
        for piece in split_even(&self.content, chunks.max(1)) {
            events.push((
                "content_block_delta",
                json!({"index": 0, "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
        events.push(("content_block_stop", json!({"index": 0})));
        if let Some(tool) = &self.tool {
            events.push((
                "content_block_start",
                json!({"index": 1, "content_block": {"type": "tool_use", "id": self.tool_use_id(), "name": tool.name, "input": {}}}),
            ));
            for piece in split_even(&tool.arguments, chunks.max(1)) {
                events.push((
                    "content_block_delta",
                    json!({"index": 1, "delta": {"type": "input_json_delta", "partial_json": piece}}),
                ));
            }
            events.push(("content_block_stop", json!({"index": 1})));
        }
        events.push((
            "message_delta",
            json!({"delta": {"stop_reason": self.stop_reason(), "stop_sequence": null}, "usage": {"output_tokens": self.completion_tokens}}),
        ));
        events.push(("message_stop", json!({})));
        events
            .into_iter()
            .map(|(kind, mut data)| {
                if let Value::Object(map) = &mut data {
                    // `type` first, as the API sends it.
                    let mut typed = serde_json::Map::new();
                    typed.insert("type".into(), Value::from(kind));
                    typed.append(map);
                    *map = typed;
                }
                named_event(kind, &data)
            })
            .collect()
    }

    fn chunk_event(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish_reason }],
        });
        sse_data(&chunk.to_string())
    }
}

fn sse_data(payload: &str) -> Bytes {
    Bytes::from(format!("data: {payload}\n\n"))
}

fn named_event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// The error document for an injected failure, in the API's shape
/// (Anthropic's for `/messages`, OpenAI's otherwise).
pub fn error_json_for(api: Api, name: &str, status: http::StatusCode) -> Bytes {
    if api != Api::Messages {
        return error_json(name, status);
    }
    let kind = match status.as_u16() {
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    };
    let doc = json!({
        "type": "error",
        "error": {
            "type": kind,
            "message": format!("mock backend {name}: injected HTTP {}", status.as_u16()),
        }
    });
    Bytes::from(doc.to_string())
}

/// The OpenAI-style error document for an injected failure.
pub fn error_json(name: &str, status: http::StatusCode) -> Bytes {
    let doc = json!({
        "error": {
            "message": format!("mock backend {name}: injected HTTP {}", status.as_u16()),
            "type": "mock_error",
            "param": null,
            "code": status.as_u16(),
        }
    });
    Bytes::from(doc.to_string())
}

/// Splits `s` into exactly `n` pieces of near-equal character count whose
/// concatenation is `s` (pieces may be empty when `n` exceeds the length).
fn split_even(s: &str, n: usize) -> Vec<&str> {
    let n = n.max(1);
    let bounds: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
    let chars = bounds.len() - 1;
    (0..n)
        .map(|i| {
            let start = bounds[i * chars / n];
            let end = bounds[(i + 1) * chars / n];
            &s[start..end]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_even_concatenates_back_for_any_count() {
        for text in ["", "a", "Hello from mock: héllo wörld", "ab"] {
            for n in 1..8 {
                let pieces = split_even(text, n);
                assert_eq!(pieces.len(), n, "{text:?} into {n}");
                assert_eq!(pieces.concat(), text, "{text:?} into {n}");
            }
        }
    }

    #[test]
    fn malformed_body_is_a_plain_non_streaming_request() {
        for body in [&b"not json{"[..], b"", b"[1,2]", b"{\"stream\":\"yes\"}"] {
            let req = ChatRequest::parse(body);
            assert!(!req.stream);
            assert_eq!(req.model, None);
        }
    }

    #[test]
    fn prompt_words_count_every_message_including_parts() {
        let body = br#"{"model":"m","stream":true,"messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"one two"},{"type":"text","text":"three"}]}
        ]}"#;
        let req = ChatRequest::parse(body);
        assert!(req.stream);
        assert_eq!(req.prompt_words, 5);
        assert_eq!(req.last_user_text.as_deref(), Some("one two three"));
    }

    #[test]
    fn empty_prompt_still_costs_one_token() {
        let reply = Reply::new("x", &ChatRequest::default(), 1, 0);
        let doc: Value = serde_json::from_slice(&reply.completion_json()).unwrap_or_default();
        assert_eq!(doc["usage"]["prompt_tokens"], 1);
        assert_eq!(doc["usage"]["completion_tokens"], 3);
        assert_eq!(doc["model"], DEFAULT_MODEL);
    }

    const TOOL_REQUEST: &str = r#"{"model":"m","stream":true,
        "messages":[{"role":"user","content":"weather in Paris please"}],
        "tools":[{"name":"get_weather","input_schema":{}}]}"#;

    #[test]
    fn responses_and_messages_streams_reassemble_to_their_json() {
        let plain = ChatRequest::parse(br#"{"input":"tell me a story","instructions":"be brief"}"#);
        assert_eq!(plain.prompt_words, 6);
        assert_eq!(plain.last_user_text.as_deref(), Some("tell me a story"));
        let tool = ChatRequest::parse(TOOL_REQUEST.as_bytes());
        assert_eq!(tool.first_tool.as_deref(), Some("get_weather"));
        for req in [plain, tool] {
            let reply = Reply::new("v1", &req, 3, 1_700_000_000);
            for api in [Api::Responses, Api::Messages] {
                let json_doc: Value =
                    serde_json::from_slice(&reply.json_for(api)).unwrap_or_default();
                for chunks in [1, 4, 9] {
                    let body: Vec<u8> = reply.events_for(api, chunks).concat();
                    let read = crate::api::reassemble(Some(api), &body);
                    assert_eq!(read.unknown_events, 0);
                    assert_eq!(read.complete(), Some(&json_doc), "{api:?} {chunks}");
                }
            }
        }
    }

    #[test]
    fn usage_is_the_same_in_every_shape() {
        let req = ChatRequest::parse(TOOL_REQUEST.as_bytes());
        let reply = Reply::new("v1", &req, 3, 0);
        let doc =
            |api| -> Value { serde_json::from_slice(&reply.json_for(api)).unwrap_or_default() };
        let chat = doc(Api::Chat);
        let responses = doc(Api::Responses);
        let messages = doc(Api::Messages);
        assert_eq!(chat["usage"]["prompt_tokens"], 4);
        assert_eq!(responses["usage"]["input_tokens"], 4);
        assert_eq!(messages["usage"]["input_tokens"], 4);
        let out = chat["usage"]["completion_tokens"].clone();
        assert_eq!(responses["usage"]["output_tokens"], out);
        assert_eq!(messages["usage"]["output_tokens"], out);
        assert_eq!(messages["content"][1]["input"]["from"], "v1");
        assert_eq!(messages["stop_reason"], "tool_use");
        assert_eq!(responses["output"][1]["name"], "get_weather");
    }

    #[test]
    fn sse_events_count_matches_chunks() {
        let req = ChatRequest::parse(br#"{"messages":[{"role":"user","content":"hi"}]}"#);
        let reply = Reply::new("x", &req, 1, 0);
        // role + 4 content + finish + usage + [DONE]
        assert_eq!(reply.sse_events(4).len(), 8);
    }
}
