//! The polite refusal (SPEC §5), rendered once per config generation.
//!
//! When nothing healthy is left, or the proxy sheds load, the client gets an
//! honest, well-formed answer instead of a hang or a wrong answer.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde_json::json;

use crate::config::{RefusalConfig, RefusalFormat};

/// A pre-rendered refusal: status, content type, `Retry-After` and body,
/// plus the SSE variant for `openai-chat` requests that asked to stream.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub content_type: HeaderValue,
    pub retry_after: Option<HeaderValue>,
    pub body: Bytes,
    /// `openai-chat` only: the same answer as a chat-completion SSE stream.
    pub stream_body: Option<Bytes>,
}

pub struct Rendered<'a> {
    pub status: StatusCode,
    pub content_type: &'a HeaderValue,
    pub retry_after: Option<&'a HeaderValue>,
    pub body: Bytes,
}

impl Refusal {
    pub fn render(cfg: &RefusalConfig) -> Refusal {
        let retry_after = cfg
            .retry_after
            .map(|d| HeaderValue::from(d.as_secs().max(1)));
        let json_ct = HeaderValue::from_static("application/json");
        match &cfg.format {
            RefusalFormat::OpenAiError => Refusal {
                status: cfg.status,
                content_type: json_ct,
                retry_after,
                body: Bytes::from(
                    json!({"error": {"message": cfg.message, "type": "service_unavailable", "code": "cutover_refusal"}})
                        .to_string(),
                ),
                stream_body: None,
            },
            RefusalFormat::OpenAiChat => {
                let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let body = json!({
                    "id": "chatcmpl-cutover-refusal",
                    "object": "chat.completion",
                    "created": created,
                    "model": "cutover-refusal",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": cfg.message}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
                });
                let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
                    json!({
                        "id": "chatcmpl-cutover-refusal",
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": "cutover-refusal",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
                    })
                };
                let stream = format!(
                    "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
                    chunk(json!({"role": "assistant", "content": cfg.message}), serde_json::Value::Null),
                    chunk(json!({}), json!("stop")),
                );
                Refusal {
                    status: StatusCode::OK,
                    content_type: json_ct,
                    retry_after: None,
                    body: Bytes::from(body.to_string()),
                    stream_body: Some(Bytes::from(stream)),
                }
            }
            RefusalFormat::Raw { body, content_type } => Refusal {
                status: cfg.status,
                content_type: HeaderValue::from_str(content_type)
                    .unwrap_or_else(|_| HeaderValue::from_static("text/plain; charset=utf-8")),
                retry_after,
                body: Bytes::from(body.clone()),
                stream_body: None,
            },
        }
    }

    /// The answer for a request; `wants_stream` when its JSON body had
    /// `"stream": true`.
    pub fn for_request(&self, wants_stream: bool) -> Rendered<'_> {
        static SSE: HeaderValue = HeaderValue::from_static("text/event-stream");
        match (&self.stream_body, wants_stream) {
            (Some(stream), true) => Rendered {
                status: self.status,
                content_type: &SSE,
                retry_after: self.retry_after.as_ref(),
                body: stream.clone(),
            },
            _ => Rendered {
                status: self.status,
                content_type: &self.content_type,
                retry_after: self.retry_after.as_ref(),
                body: self.body.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_error_shape() {
        let r = Refusal::render(&RefusalConfig::default());
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.retry_after.as_ref().map(|v| v.as_bytes()),
            Some(&b"30"[..])
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["error"]["code"], "cutover_refusal");
        assert_eq!(v["error"]["type"], "service_unavailable");
    }

    #[test]
    fn openai_chat_streams_and_ends_with_done() {
        let cfg = RefusalConfig {
            format: RefusalFormat::OpenAiChat,
            message: "sorry".into(),
            ..RefusalConfig::default()
        };
        let r = Refusal::render(&cfg);
        let plain = r.for_request(false);
        assert_eq!(plain.status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&plain.body).expect("json");
        assert_eq!(v["choices"][0]["message"]["content"], "sorry");
        let sse = r.for_request(true);
        let text = String::from_utf8(sse.body.to_vec()).expect("utf8");
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert_eq!(sse.content_type, "text/event-stream");
    }
}
