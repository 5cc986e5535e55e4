//! Token usage, read from response bodies as their frames pass.
//!
//! The client's bytes are never delayed or copied for this: a JSON body's
//! frames are kept as `Bytes` clones (reference counts) up to a cap and
//! searched once at the end; an SSE stream is scanned line by line as it
//! flows, and only `data:` lines that mention `"usage"` are parsed.
//!
//! Both OpenAI (`usage.prompt_tokens`, `usage.completion_tokens`) and
//! Anthropic (`usage.input_tokens`, `usage.output_tokens`, also under
//! `message.usage` in `message_start`) shapes are understood. In a stream
//! the last value seen for each field wins (Anthropic's `message_delta`
//! carries the final output count).

use bytes::Bytes;
use http::HeaderValue;
use serde::Deserialize;

/// A JSON body larger than this is not searched (its frames are released).
const MAX_JSON: usize = 1024 * 1024;
/// A single SSE line longer than this is skipped.
const MAX_LINE: usize = 256 * 1024;

const USAGE_KEY: &[u8] = b"\"usage\"";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: Option<u64>,
    pub output: Option<u64>,
}

impl Usage {
    pub fn is_empty(&self) -> bool {
        self.input.is_none() && self.output.is_none()
    }

    fn merge(&mut self, raw: RawUsage) {
        if let Some(n) = raw.prompt_tokens.or(raw.input_tokens) {
            self.input = Some(n);
        }
        if let Some(n) = raw.completion_tokens.or(raw.output_tokens) {
            self.output = Some(n);
        }
    }
}

#[derive(Deserialize, Default)]
struct RawUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Event {
    usage: Option<RawUsage>,
    message: Option<EventMessage>,
}

#[derive(Deserialize)]
struct EventMessage {
    usage: Option<RawUsage>,
}

enum Mode {
    Json { frames: Vec<Bytes>, len: usize },
    Sse { carry: Vec<u8> },
    Off,
}

pub struct UsageScanner {
    mode: Mode,
    usage: Usage,
}

impl UsageScanner {
    /// Choose by the response's content type: SSE, JSON, or nothing.
    pub fn for_content_type(content_type: Option<&HeaderValue>) -> UsageScanner {
        let ct = content_type.map(|v| v.as_bytes()).unwrap_or_default();
        let mode = if starts_with_ignore_case(ct, b"text/event-stream") {
            Mode::Sse { carry: Vec::new() }
        } else if starts_with_ignore_case(ct, b"application/json") || contains(ct, b"+json") {
            Mode::Json {
                frames: Vec::new(),
                len: 0,
            }
        } else {
            Mode::Off
        };
        UsageScanner {
            mode,
            usage: Usage::default(),
        }
    }

    pub fn off() -> UsageScanner {
        UsageScanner {
            mode: Mode::Off,
            usage: Usage::default(),
        }
    }

    /// See one data frame on its way to the client.
    #[inline]
    pub fn observe(&mut self, frame: &Bytes) {
        match &mut self.mode {
            Mode::Off => {}
            Mode::Json { frames, len } => {
                *len += frame.len();
                if *len > MAX_JSON {
                    self.mode = Mode::Off;
                } else {
                    frames.push(frame.clone());
                }
            }
            Mode::Sse { carry } => scan_sse(carry, frame, &mut self.usage),
        }
    }

    /// The usage found once the body has ended.
    pub fn finish(&mut self) -> Usage {
        match std::mem::replace(&mut self.mode, Mode::Off) {
            Mode::Json { frames, .. } => {
                if let [one] = frames.as_slice() {
                    find_json_usage(one, &mut self.usage);
                } else if !frames.is_empty() {
                    let whole: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
                    find_json_usage(&whole, &mut self.usage);
                }
            }
            Mode::Sse { carry } => {
                // A last event without a trailing newline.
                if !carry.is_empty() {
                    parse_sse_line(&carry, &mut self.usage);
                }
            }
            Mode::Off => {}
        }
        self.usage
    }
}

/// Scan the complete lines of `frame` (after what `carry` holds).
fn scan_sse(carry: &mut Vec<u8>, frame: &[u8], usage: &mut Usage) {
    let Some(last_nl) = memchr::memrchr(b'\n', frame) else {
        if carry.len() + frame.len() <= MAX_LINE {
            carry.extend_from_slice(frame);
        } else {
            carry.clear();
        }
        return;
    };
    let (complete, rest) = frame.split_at(last_nl + 1);
    if carry.is_empty() {
        scan_lines(complete, usage);
    } else {
        carry.extend_from_slice(complete);
        scan_lines(carry, usage);
        carry.clear();
    }
    if rest.len() <= MAX_LINE {
        carry.extend_from_slice(rest);
    }
}

fn scan_lines(text: &[u8], usage: &mut Usage) {
    // Most frames carry no usage at all: one SIMD search decides.
    if memchr::memmem::find(text, USAGE_KEY).is_none() {
        return;
    }
    for line in text.split(|&b| b == b'\n') {
        if memchr::memmem::find(line, USAGE_KEY).is_some() {
            parse_sse_line(line, usage);
        }
    }
}

fn parse_sse_line(line: &[u8], usage: &mut Usage) {
    let Some(data) = line.strip_prefix(b"data:") else {
        return;
    };
    let data = data.trim_ascii();
    if let Ok(event) = serde_json::from_slice::<Event>(data) {
        if let Some(raw) = event.message.and_then(|m| m.usage) {
            usage.merge(raw);
        }
        if let Some(raw) = event.usage {
            usage.merge(raw);
        }
    }
}

/// Find the top-level `"usage"` object of a JSON document. It is searched
/// from the end (APIs put it last) and must not be an escaped `\"usage\"`
/// inside a string.
fn find_json_usage(body: &[u8], usage: &mut Usage) {
    let mut end = body.len();
    while let Some(at) = memchr::memmem::rfind(&body[..end], USAGE_KEY) {
        end = at;
        if at > 0 && body[at - 1] == b'\\' {
            continue;
        }
        let after = &body[at + USAGE_KEY.len()..];
        let Some(colon) = after.iter().position(|b| !b.is_ascii_whitespace()) else {
            return;
        };
        if after[colon] != b':' {
            continue;
        }
        let value = &after[colon + 1..];
        let mut de = serde_json::Deserializer::from_slice(value);
        if let Ok(raw) = RawUsage::deserialize(&mut de) {
            usage.merge(raw);
            return;
        }
    }
}

fn starts_with_ignore_case(haystack: &[u8], prefix: &[u8]) -> bool {
    haystack.len() >= prefix.len() && haystack[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(ct: &'static str, frames: &[&'static [u8]]) -> Usage {
        let mut s = UsageScanner::for_content_type(Some(&HeaderValue::from_static(ct)));
        for f in frames {
            s.observe(&Bytes::from_static(f));
        }
        s.finish()
    }

    #[test]
    fn openai_json() {
        let u = scan(
            "application/json",
            &[br#"{"choices":[{"message":{"content":"the word \"usage\": 5"}}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,"prompt_tokens_details":{"cached_tokens":0}}}"#],
        );
        assert_eq!(
            u,
            Usage {
                input: Some(12),
                output: Some(7)
            }
        );
    }

    #[test]
    fn anthropic_json_split_across_frames() {
        let u = scan(
            "application/json; charset=utf-8",
            &[
                br#"{"content":[{"type":"text","text":"hi"}],"us"#,
                br#"age": {"input_tokens": 3, "output_tokens": 9}}"#,
            ],
        );
        assert_eq!(
            u,
            Usage {
                input: Some(3),
                output: Some(9)
            }
        );
    }

    #[test]
    fn openai_sse_usage_chunk_split_mid_line() {
        let u = scan(
            "text/event-stream",
            &[
                b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
                b"data: {\"choices\":[],\"usage\":{\"prompt_tok",
                b"ens\":20,\"completion_tokens\":5}}\n\ndata: [DONE]\n\n",
            ],
        );
        assert_eq!(
            u,
            Usage {
                input: Some(20),
                output: Some(5)
            }
        );
    }

    #[test]
    fn anthropic_sse_last_value_wins() {
        let u = scan(
            "text/event-stream",
            &[
                b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
                b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n",
            ],
        );
        assert_eq!(
            u,
            Usage {
                input: Some(25),
                output: Some(15)
            }
        );
    }

    #[test]
    fn other_content_and_missing_usage() {
        assert!(scan("text/plain", &[b"\"usage\": {\"prompt_tokens\": 1}"]).is_empty());
        assert!(scan("application/json", &[b"{\"choices\":[]}"]).is_empty());
        assert!(scan("application/json", &[b"not json \"usage\": nope"]).is_empty());
    }
}
