//! What the mock says: parse an OpenAI chat request leniently, then render
//! the reply as one `chat.completion` document or as SSE events.
//!
//! Everything here is pure and deterministic for a given request and
//! sequence number, so the response cache and the shadow comparison can be
//! tested against it. Nothing here panics on malformed input: a body that is
//! not a JSON object is answered as a non-streaming request with no prompt.

use bytes::Bytes;
use serde_json::{Value, json};

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
        if let Some(messages) = obj.get("messages").and_then(Value::as_array) {
            for message in messages {
                let text = message.get("content").map(content_text).unwrap_or_default();
                req.prompt_words += text.split_whitespace().count();
                if message.get("role").and_then(Value::as_str) == Some("user") {
                    req.last_user_text = Some(text);
                }
            }
        }
        req.first_tool = obj
            .get("tools")
            .and_then(Value::as_array)
            .and_then(|tools| tools.first())
            .and_then(|tool| tool.pointer("/function/name"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        req
    }
}

/// `content` is either a string or an array of parts (`{"type":"text","text":…}`).
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

    #[test]
    fn sse_events_count_matches_chunks() {
        let req = ChatRequest::parse(br#"{"messages":[{"role":"user","content":"hi"}]}"#);
        let reply = Reply::new("x", &req, 1, 0);
        // role + 4 content + finish + usage + [DONE]
        assert_eq!(reply.sse_events(4).len(), 8);
    }
}
