//! The polite refusal (SPEC §5), rendered once per config generation.
//!
//! When nothing healthy is left, or the proxy sheds load, the client gets an
//! honest, well-formed answer instead of a hang or a wrong answer. The
//! API-shaped formats are what each API's official SDK parses as a normal
//! reply whose text is the refusal message (the shapes themselves live with
//! their API in [`crate::api`]). Every (format, streamed) body is rendered
//! here, at compile time; `auto` keeps one per API and picks by the request
//! path at request time, so a request only clones a `Bytes`.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde_json::json;

use crate::api::{self, Api};
use crate::config::{RefusalConfig, RefusalFormat};

/// A pre-rendered refusal: status, content type, `Retry-After` and body,
/// plus the event-stream variant for requests that asked to stream.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub content_type: HeaderValue,
    pub retry_after: Option<HeaderValue>,
    pub body: Bytes,
    /// The API-shaped formats only: the same answer as that API's event
    /// stream.
    pub stream_body: Option<Bytes>,
    /// `auto` only: the answer per API named by the path. The fields above
    /// then hold `openai-error`, the answer to any other path.
    by_api: Option<Box<ByApi>>,
}

#[derive(Clone, Debug)]
struct ByApi {
    chat: Refusal,
    responses: Refusal,
    messages: Refusal,
}

pub struct Rendered<'a> {
    pub status: StatusCode,
    pub content_type: &'a HeaderValue,
    pub retry_after: Option<&'a HeaderValue>,
    pub body: Bytes,
}

impl Refusal {
    pub fn render(cfg: &RefusalConfig) -> Refusal {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match &cfg.format {
            RefusalFormat::OpenAiError => openai_error(cfg),
            RefusalFormat::OpenAiChat => Refusal::api(Api::Chat, &cfg.message, created),
            RefusalFormat::OpenAiResponses => Refusal::api(Api::Responses, &cfg.message, created),
            RefusalFormat::AnthropicMessages => Refusal::api(Api::Messages, &cfg.message, created),
            RefusalFormat::Auto => Refusal {
                by_api: Some(Box::new(ByApi {
                    chat: Refusal::api(Api::Chat, &cfg.message, created),
                    responses: Refusal::api(Api::Responses, &cfg.message, created),
                    messages: Refusal::api(Api::Messages, &cfg.message, created),
                })),
                ..openai_error(cfg)
            },
            RefusalFormat::Raw { body, content_type } => Refusal {
                status: cfg.status,
                content_type: HeaderValue::from_str(content_type)
                    .unwrap_or_else(|_| HeaderValue::from_static("text/plain; charset=utf-8")),
                retry_after: retry_after(cfg),
                body: Bytes::from(body.clone()),
                stream_body: None,
                by_api: None,
            },
        }
    }

    /// `api`'s normal answer, 200, as JSON and as its event stream.
    fn api(api: Api, message: &str, created: u64) -> Refusal {
        let (body, stream) = match api {
            Api::Chat => api::chat::refusal(message, created),
            Api::Responses => api::responses::refusal(message, created),
            Api::Messages => api::messages::refusal(message),
        };
        Refusal {
            status: StatusCode::OK,
            content_type: HeaderValue::from_static("application/json"),
            retry_after: None,
            body,
            stream_body: Some(stream),
            by_api: None,
        }
    }

    /// The answer for a request; `wants_stream` when its JSON body had
    /// `"stream": true`. For `auto`, see [`Refusal::for_path`].
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

    /// The answer for a request to `path`: with `auto`, the format of the
    /// API the path names (else `openai-error`); otherwise the configured
    /// one.
    pub fn for_path(&self, path: &str, wants_stream: bool) -> Rendered<'_> {
        let chosen = match (&self.by_api, Api::from_path(path)) {
            (Some(table), Some(Api::Chat)) => &table.chat,
            (Some(table), Some(Api::Responses)) => &table.responses,
            (Some(table), Some(Api::Messages)) => &table.messages,
            _ => self,
        };
        chosen.for_request(wants_stream)
    }
}

fn retry_after(cfg: &RefusalConfig) -> Option<HeaderValue> {
    cfg.retry_after
        .map(|d| HeaderValue::from(d.as_secs().max(1)))
}

fn openai_error(cfg: &RefusalConfig) -> Refusal {
    Refusal {
        status: cfg.status,
        content_type: HeaderValue::from_static("application/json"),
        retry_after: retry_after(cfg),
        body: Bytes::from(
            json!({"error": {"message": cfg.message, "type": "service_unavailable", "code": "cutover_refusal"}})
                .to_string(),
        ),
        stream_body: None,
        by_api: None,
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

    fn cfg(format: RefusalFormat) -> RefusalConfig {
        RefusalConfig {
            format,
            message: "be right back".into(),
            ..RefusalConfig::default()
        }
    }

    /// The text each API's SDK shows for a JSON refusal.
    fn text_of(api: Option<Api>, body: &[u8]) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_slice(body).expect("json");
        match api {
            Some(Api::Chat) => v["choices"][0]["message"]["content"].clone(),
            Some(Api::Responses) => v["output"][0]["content"][0]["text"].clone(),
            Some(Api::Messages) => v["content"][0]["text"].clone(),
            None => v["error"]["message"].clone(),
        }
    }

    #[test]
    fn api_formats_answer_200_in_json_and_their_stream() {
        for (format, api, last_event) in [
            (
                RefusalFormat::OpenAiResponses,
                Api::Responses,
                "event: response.completed",
            ),
            (
                RefusalFormat::AnthropicMessages,
                Api::Messages,
                "event: message_stop",
            ),
        ] {
            let r = Refusal::render(&cfg(format));
            let plain = r.for_request(false);
            assert_eq!(plain.status, StatusCode::OK);
            assert!(plain.retry_after.is_none());
            assert_eq!(plain.content_type, "application/json");
            assert_eq!(text_of(Some(api), &plain.body), "be right back");
            let streamed = r.for_request(true);
            assert_eq!(streamed.content_type, "text/event-stream");
            let text = String::from_utf8(streamed.body.to_vec()).expect("utf8");
            let last = text.trim_end().rsplit("\n\n").next().unwrap_or("");
            assert!(last.starts_with(last_event), "{last}");
            // The stream folds back into the JSON answer.
            let read = api::reassemble(Some(api), &streamed.body);
            let plain: serde_json::Value = serde_json::from_slice(&plain.body).expect("json");
            assert_eq!(read.complete(), Some(&plain));
        }
    }

    #[test]
    fn auto_picks_by_path_and_falls_back_to_openai_error() {
        let r = Refusal::render(&cfg(RefusalFormat::Auto));
        for (path, api) in [
            ("/v1/chat/completions", Some(Api::Chat)),
            ("/v1/responses", Some(Api::Responses)),
            ("/v1/messages", Some(Api::Messages)),
            ("/v1/embeddings", None),
            ("/agent/run", None),
        ] {
            let plain = r.for_path(path, false);
            assert_eq!(text_of(api, &plain.body), "be right back", "{path}");
            let status = if api.is_some() { 200 } else { 503 };
            assert_eq!(plain.status.as_u16(), status, "{path}");
            assert_eq!(plain.retry_after.is_some(), api.is_none(), "{path}");
            let streamed = r.for_path(path, true);
            let expected_ct = if api.is_some() {
                "text/event-stream"
            } else {
                "application/json"
            };
            assert_eq!(streamed.content_type, expected_ct, "{path}");
        }
        // A fixed format ignores the path.
        let chat = Refusal::render(&cfg(RefusalFormat::OpenAiChat));
        assert_eq!(
            text_of(Some(Api::Chat), &chat.for_path("/v1/messages", false).body),
            "be right back"
        );
    }
}
