//! A route's `refusal`: the answer when every target has failed.

use http::HeaderValue;

use crate::config::model::*;
use crate::config::raw::*;
use crate::config::spans::KeyPath;

use super::Validator;

impl Validator<'_> {
    pub(super) fn refusal(&mut self, v: Value, p: KeyPath) -> RefusalConfig {
        let d = RefusalConfig::default();
        let Some(raw) = de_unit::<RawRefusal>(v, &p, &mut self.issues) else {
            return d;
        };
        let status = match raw.status {
            Some(s) => self.status(s, p.key("status")).unwrap_or(d.status),
            None => d.status,
        };
        let retry_after = match raw.retry_after {
            Some(v) => self.opt_duration(Some(v), p.key("retry_after")),
            None => d.retry_after,
        };
        let message = raw.message.unwrap_or(d.message);
        let format = match raw.format.as_deref() {
            None | Some("openai-error") => RefusalFormat::OpenAiError,
            Some("openai-chat") => RefusalFormat::OpenAiChat,
            Some("openai-responses") => RefusalFormat::OpenAiResponses,
            Some("anthropic-messages") => RefusalFormat::AnthropicMessages,
            Some("auto") => RefusalFormat::Auto,
            Some("raw") => {
                let content_type = raw
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "text/plain; charset=utf-8".to_string());
                if HeaderValue::from_str(&content_type).is_err() {
                    self.err(p.key("content_type"), "invalid content type; valid: a header value like \"text/plain; charset=utf-8\"");
                }
                RefusalFormat::Raw {
                    body: raw.body.clone().unwrap_or_else(|| message.clone()),
                    content_type,
                }
            }
            Some(other) => {
                self.err(p.key("format"), format!("unknown refusal format {other:?}; valid: one of openai-error, openai-chat, raw, openai-responses, anthropic-messages, auto"));
                RefusalFormat::OpenAiError
            }
        };
        if !matches!(format, RefusalFormat::Raw { .. }) {
            for (key, present) in [
                ("body", raw.body.is_some()),
                ("content_type", raw.content_type.is_some()),
            ] {
                if present {
                    self.issues.push(Issue::at_key(
                        p.key(key),
                        format!("`{key}` is only used with format = \"raw\"; valid: remove it, or set format = \"raw\""),
                    ));
                }
            }
        }
        RefusalConfig {
            status,
            retry_after,
            format,
            message,
        }
    }
}
