//! Token usage, read from response bodies as their frames pass.
//!
//! The client's bytes are never delayed or copied for this: a JSON body's
//! frames are kept as `Bytes` clones (reference counts) up to a cap and
//! searched once at the end; an SSE stream is scanned line by line as it
//! flows, and only `data:` lines that mention `"usage"` are parsed (one
//! SIMD search per frame decides; most frames carry no usage at all).
//!
//! Where the counts sit is each API's knowledge (`api::chat`,
//! `api::responses`, `api::messages`):
//!
//! | API | JSON | stream |
//! |---|---|---|
//! | Chat Completions | `usage.prompt_tokens`, `usage.completion_tokens` | the usage chunk's `usage` |
//! | Responses | `usage.input_tokens`, `usage.output_tokens` | `response.usage` of `response.completed` |
//! | Anthropic Messages | `usage.input_tokens`, `usage.output_tokens` | `message.usage` of `message_start`, then `usage` of `message_delta` |
//!
//! A request whose path names no API is read in all three shapes. In a
//! stream the last value seen for each field wins (Anthropic's
//! `message_delta` carries the cumulative output count).
//!
//! A `data:` line that mentions usage but is not JSON, or a usage whose
//! counts are not non-negative integers, is skipped and reported by
//! [`UsageScanner::skipped`] (counted in `cutover_api_skipped_total`).

use std::sync::LazyLock;

use bytes::Bytes;
use http::HeaderValue;
use memchr::memmem::{Finder, FinderRev};
use serde::Deserialize;

#[cfg(any(test, fuzzing))]
use super::compact::SerdeOnly;
use super::compact::{Compact, CompactFirst, Parse};
pub use super::tokens::Usage;
use super::tokens::{InputOutput, classify};
use super::{Api, Skip};
use crate::ascii::starts_with_ignore_case;

/// A JSON body larger than this is not searched (its frames are released).
const MAX_JSON: usize = 1024 * 1024;
/// A single SSE line longer than this is skipped.
const MAX_LINE: usize = 256 * 1024;

const USAGE_KEY: &[u8] = b"\"usage\"";
/// Built once: building a searcher costs more than running it over a
/// typical event, and a stream is searched frame by frame.
static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(USAGE_KEY));
static USAGE_REV: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(USAGE_KEY));

/// Usage of a path that names no API: any of the three shapes.
mod generic {
    use serde::Deserialize;

    use super::{Parse, Skip, Usage, classify};

    #[derive(Deserialize, Default)]
    struct RawUsage {
        prompt_tokens: Option<u64>,
        completion_tokens: Option<u64>,
        input_tokens: Option<u64>,
        output_tokens: Option<u64>,
    }

    impl From<RawUsage> for Usage {
        fn from(raw: RawUsage) -> Usage {
            Usage {
                input: raw.prompt_tokens.or(raw.input_tokens),
                output: raw.completion_tokens.or(raw.output_tokens),
            }
        }
    }

    #[derive(Deserialize)]
    struct Nested {
        usage: Option<RawUsage>,
    }

    pub(super) fn event_usage<P: Parse>(data: &[u8]) -> Result<Option<Usage>, Skip> {
        #[derive(Deserialize)]
        struct Event {
            usage: Option<RawUsage>,
            message: Option<Nested>,
            response: Option<Nested>,
        }
        let event: Event = P::parse(data).map_err(|e| classify(&e))?;
        let mut found: Option<Usage> = None;
        for raw in [
            event.response.and_then(|n| n.usage),
            event.message.and_then(|n| n.usage),
            event.usage,
        ]
        .into_iter()
        .flatten()
        {
            found.get_or_insert_default().merge(raw.into());
        }
        Ok(found)
    }

    pub(super) fn json_usage<'de, D: serde::Deserializer<'de>>(
        de: D,
    ) -> Result<Option<Usage>, D::Error> {
        Option::<RawUsage>::deserialize(de).map(|u| u.map(Usage::from))
    }
}

/// The usage an event's data carries, read as `api` says (by the compact
/// reader when it can: see [`super::compact`]).
fn event_usage(api: Option<Api>, data: &[u8]) -> Result<Option<Usage>, Skip> {
    event_usage_by::<CompactFirst>(api, data)
}

fn event_usage_by<P: Parse>(api: Option<Api>, data: &[u8]) -> Result<Option<Usage>, Skip> {
    match api {
        Some(Api::Chat) => super::chat::event_usage::<P>(data),
        Some(Api::Responses) => super::responses::event_usage::<P>(data),
        Some(Api::Messages) => super::messages::event_usage::<P>(data),
        None => generic::event_usage::<P>(data),
    }
}

/// Where the compact reader reads an event's usage, it reads what
/// `serde_json` reads, for each API's events. For the tests and the
/// `usage_chat` fuzz target.
#[cfg(any(test, fuzzing))]
pub fn compact_reads_event_usage_as_serde_json(data: &[u8]) -> bool {
    [
        None,
        Some(Api::Chat),
        Some(Api::Responses),
        Some(Api::Messages),
    ]
    .into_iter()
    .all(|api| event_usage_by::<CompactFirst>(api, data) == event_usage_by::<SerdeOnly>(api, data))
}

/// A top-level `usage` value (and what follows it), read as `api` says:
/// by the compact reader when it can, else by `serde_json`, which also
/// says why a value is skipped (see [`super::compact`]).
fn json_usage(api: Option<Api>, value: &[u8]) -> Result<Option<Usage>, Skip> {
    if let Ok(text) = std::str::from_utf8(value)
        && let Ok(found) = read_usage(api, &mut Compact::new(text))
    {
        return Ok(found);
    }
    read_usage(api, &mut serde_json::Deserializer::from_slice(value)).map_err(|e| classify(&e))
}

/// Where the compact reader reads a usage value (and what follows it), it
/// reads what `serde_json` reads, for each API's shape. For the tests and
/// the `usage_chat` fuzz target.
#[cfg(any(test, fuzzing))]
pub fn compact_reads_usage_as_serde_json(value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return true;
    };
    [None, Some(Api::Chat), Some(Api::Responses)]
        .into_iter()
        .all(|api| match read_usage(api, &mut Compact::new(text)) {
            Ok(found) => {
                read_usage(api, &mut serde_json::Deserializer::from_str(text)).ok() == Some(found)
            }
            Err(_) => true,
        })
}

fn read_usage<'de, D: serde::Deserializer<'de>>(
    api: Option<Api>,
    de: D,
) -> Result<Option<Usage>, D::Error> {
    match api {
        Some(Api::Chat) => super::chat::json_usage(de),
        Some(Api::Responses | Api::Messages) => {
            Option::<InputOutput>::deserialize(de).map(|u| u.map(Usage::from))
        }
        None => generic::json_usage(de),
    }
}

enum Mode {
    Json { frames: Vec<Bytes>, len: usize },
    Sse { carry: Vec<u8> },
    Off,
}

pub struct UsageScanner {
    api: Option<Api>,
    mode: Mode,
    usage: Usage,
    skipped: Option<Skip>,
}

impl UsageScanner {
    /// Choose by the response's content type (SSE, JSON, or nothing), and
    /// read any of the three APIs' shapes.
    pub fn for_content_type(content_type: Option<&HeaderValue>) -> UsageScanner {
        UsageScanner::new(None, content_type)
    }

    /// Choose by the response's content type, and read `api`'s shapes
    /// (`None`: any of them).
    pub fn new(api: Option<Api>, content_type: Option<&HeaderValue>) -> UsageScanner {
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
            api,
            mode,
            usage: Usage::default(),
            skipped: None,
        }
    }

    pub fn off() -> UsageScanner {
        UsageScanner {
            api: None,
            mode: Mode::Off,
            usage: Usage::default(),
            skipped: None,
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
            Mode::Sse { carry } => {
                let mut lines = Lines {
                    api: self.api,
                    usage: &mut self.usage,
                    skipped: &mut self.skipped,
                };
                lines.scan_frame(carry, frame);
            }
        }
    }

    /// The usage found once the body has ended.
    pub fn finish(&mut self) -> Usage {
        match std::mem::replace(&mut self.mode, Mode::Off) {
            Mode::Json { frames, .. } => {
                if let [one] = frames.as_slice() {
                    self.find_json_usage(one);
                } else if !frames.is_empty() {
                    let whole: Vec<u8> = frames.concat();
                    self.find_json_usage(&whole);
                }
            }
            Mode::Sse { carry } => {
                // A last event without a trailing newline.
                if !carry.is_empty() && USAGE.find(&carry).is_some() {
                    let mut lines = Lines {
                        api: self.api,
                        usage: &mut self.usage,
                        skipped: &mut self.skipped,
                    };
                    lines.parse_line(&carry);
                }
            }
            Mode::Off => {}
        }
        self.usage
    }

    /// Why some usage was skipped, if any was (the first reason seen).
    pub fn skipped(&self) -> Option<Skip> {
        self.skipped
    }

    /// Find the top-level `"usage"` object of a JSON document. It is
    /// searched from the end (APIs put it last) and must not be an escaped
    /// `\"usage\"` inside a string. A `usage` that is there but not in the
    /// API's shape (and no other one that is) is skipped and reported.
    fn find_json_usage(&mut self, body: &[u8]) {
        let mut end = body.len();
        let mut wrong = None;
        while let Some(at) = USAGE_REV.rfind(&body[..end]) {
            end = at;
            if at > 0 && body[at - 1] == b'\\' {
                continue;
            }
            let after = &body[at + USAGE_KEY.len()..];
            let Some(colon) = after.iter().position(|b| !b.is_ascii_whitespace()) else {
                break;
            };
            if after[colon] != b':' {
                continue;
            }
            match json_usage(self.api, &after[colon + 1..]) {
                Ok(Some(found)) => {
                    self.usage.merge(found);
                    return;
                }
                // `"usage": null`: the API says there is none.
                Ok(None) => return,
                Err(skip) => wrong = wrong.or(Some(skip)),
            }
        }
        if let Some(skip) = wrong {
            self.skipped.get_or_insert(skip);
        }
    }
}

/// The SSE side of a scanner, borrowed per frame.
struct Lines<'a> {
    api: Option<Api>,
    usage: &'a mut Usage,
    skipped: &'a mut Option<Skip>,
}

impl Lines<'_> {
    /// Scan the complete lines of `frame` (after what `carry` holds).
    fn scan_frame(&mut self, carry: &mut Vec<u8>, frame: &[u8]) {
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
            self.scan_lines(complete);
        } else {
            carry.extend_from_slice(complete);
            self.scan_lines(carry);
            carry.clear();
        }
        if rest.len() <= MAX_LINE {
            carry.extend_from_slice(rest);
        }
    }

    fn scan_lines(&mut self, text: &[u8]) {
        // Most frames carry no usage at all: one SIMD search decides, and
        // only the line around each hit is parsed, once.
        let mut from = 0;
        while let Some(hit) = USAGE.find(&text[from..]) {
            let at = from + hit;
            let start = memchr::memrchr(b'\n', &text[from..at]).map_or(from, |i| from + i + 1);
            let end = memchr::memchr(b'\n', &text[at..]).map_or(text.len(), |i| at + i);
            self.parse_line(&text[start..end]);
            from = end;
        }
    }

    fn parse_line(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        match event_usage(self.api, data.trim_ascii()) {
            Ok(Some(found)) => self.usage.merge(found),
            Ok(None) => {}
            Err(skip) => {
                self.skipped.get_or_insert(skip);
            }
        }
    }
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

    /// Each API's events are read for usage by the compact reader where it
    /// can, as `serde_json` reads them, and by `serde_json` where it cannot.
    #[test]
    fn the_compact_reader_reads_event_usage_as_serde_json_does() {
        let events: &[&[u8]] = &[
            br#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":24,"completion_tokens":20,"total_tokens":44}}"#,
            br#"{"choices":[{"index":0,"delta":{"content":"a \"usage\": 1"}}],"usage":null}"#,
            br#"{"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}"#,
            br#"{"type":"message_delta","usage":{"output_tokens":9}}"#,
            br#"{"type":"response.completed","response":{"usage":{"input_tokens":3,"output_tokens":2}}}"#,
            // Outside the compact subset: a float, a negative, a \u escape.
            br#"{"usage":{"prompt_tokens":1.5,"completion_tokens":2}}"#,
            br#"{"usage":{"prompt_tokens":-1,"completion_tokens":2}}"#,
            br#"{"model":"\u00e9","usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
            // Wrong shapes and broken JSON.
            br#"{"usage":{"prompt_tokens":"3"}}"#,
            br#"{"usage":{"prompt_tokens":1,"prompt_tokens":2}}"#,
            br#"{"usage":{"#,
            br#"{"usage":null} x"#,
            b"[1,2]",
            b"\xff",
        ];
        for data in events {
            assert!(
                compact_reads_event_usage_as_serde_json(data),
                "{}",
                String::from_utf8_lossy(data)
            );
        }
        // The bench's usage chunk is read by the compact reader itself.
        #[derive(Deserialize)]
        struct Chunk {
            #[allow(dead_code)]
            usage: Option<serde_json::Value>,
        }
        let text = std::str::from_utf8(events[0]).unwrap();
        let mut de = Compact::new(text);
        assert!(Chunk::deserialize(&mut de).is_ok() && de.end().is_ok());
    }

    /// The usage values answers carry are read by the compact reader, as
    /// `serde_json` reads them; the rest is left to `serde_json`.
    #[test]
    fn the_compact_reader_reads_usage_as_serde_json_does() {
        let read = br#"{"prompt_tokens":24,"completion_tokens":17,"total_tokens":41,"prompt_tokens_details":{"cached_tokens":0}}}"#;
        let chat = read_usage(
            Some(Api::Chat),
            &mut Compact::new(std::str::from_utf8(read).unwrap()),
        );
        assert_eq!(
            chat.ok().flatten(),
            Some(Usage {
                input: Some(24),
                output: Some(17)
            })
        );
        for value in [
            &read[..],
            br#"{"input_tokens":5,"output_tokens":7} , "x":1}"#,
            br#"null}"#,
            br#"{"prompt_tokens":1.5}"#,
            br#"{"prompt_tokens":-1}"#,
            br#"{"prompt_tokens":"3"}"#,
            br#"{"prompt_tokens":3,"prompt_tokens":4}"#,
            br#"[24,17]"#,
            br#"{"prompt_tokens":3"#,
            b"{\"prompt_tokens\":3} \xff",
        ] {
            assert!(
                compact_reads_usage_as_serde_json(value),
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }

    fn scan_api(api: Api, ct: &'static str, frames: &[&[u8]]) -> (Usage, Option<Skip>) {
        let mut s = UsageScanner::new(Some(api), Some(&HeaderValue::from_static(ct)));
        for f in frames {
            s.observe(&Bytes::copy_from_slice(f));
        }
        (s.finish(), s.skipped())
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

    /// One frame holding a whole stream: each line that mentions usage is
    /// read once, however often it mentions it, in order, and the lines
    /// around it are not.
    #[test]
    fn one_frame_reads_every_usage_line_once() {
        let whole: &[u8] = b": a comment on \"usage\"\n\
event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"no usage here\"}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"note\":\"\\\"usage\\\"\",\"usage\":{\"output_tokens\":15}}\n\n\
data: {\"usage\":{\"output_tokens\":16}}";
        let (u, skip) = scan_api(Api::Messages, "text/event-stream", &[whole]);
        assert_eq!(skip, None);
        assert_eq!(
            u,
            Usage {
                input: Some(25),
                output: Some(16)
            }
        );
        // The same bytes split at every offset read the same.
        for at in 0..whole.len() {
            let (split, skip) = scan_api(
                Api::Messages,
                "text/event-stream",
                &[&whole[..at], &whole[at..]],
            );
            assert_eq!((split, skip), (u, None), "split at {at}");
        }
    }

    #[test]
    fn other_content_and_missing_usage() {
        assert!(scan("text/plain", &[b"\"usage\": {\"prompt_tokens\": 1}"]).is_empty());
        assert!(scan("application/json", &[b"{\"choices\":[]}"]).is_empty());
        assert!(scan("application/json", &[b"not json \"usage\": nope"]).is_empty());
    }

    const RESPONSES_STREAM: &[&[u8]] = &[
        b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"usage\":null}}\n\n",
        b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"the \\\"usage\\\" word\"}\n\n",
        b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"output\":[],",
        b"\"usage\":{\"input_tokens\":31,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":9,\"total_tokens\":40}}}\n\n",
    ];

    #[test]
    fn responses_stream_takes_the_completed_usage() {
        let want = Usage {
            input: Some(31),
            output: Some(9),
        };
        assert_eq!(
            scan_api(Api::Responses, "text/event-stream", RESPONSES_STREAM),
            (want, None)
        );
        // A path naming no API reads it too.
        assert_eq!(scan("text/event-stream", RESPONSES_STREAM), want);
        // The chat shape is not the Responses shape.
        assert_eq!(
            scan_api(Api::Chat, "text/event-stream", RESPONSES_STREAM).0,
            Usage::default()
        );
    }

    #[test]
    fn responses_and_messages_json() {
        let body: &[u8] = br#"{"id":"r","object":"response","output":[],"usage":{"input_tokens":4,"output_tokens":2,"total_tokens":6}}"#;
        let want = Usage {
            input: Some(4),
            output: Some(2),
        };
        assert_eq!(
            scan_api(Api::Responses, "application/json", &[body]),
            (want, None)
        );
        let body: &[u8] = br#"{"type":"message","content":[{"type":"tool_use","input":{"usage":"daily"}}],"usage":{"input_tokens":4,"output_tokens":2}}"#;
        assert_eq!(
            scan_api(Api::Messages, "application/json", &[body]),
            (want, None)
        );
    }

    #[test]
    fn messages_stream_reads_start_then_cumulative_delta() {
        let frames: &[&[u8]] = &[
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":5}}\n\n",
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":8}}\n\n",
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ];
        assert_eq!(
            scan_api(Api::Messages, "text/event-stream", frames),
            (
                Usage {
                    input: Some(12),
                    output: Some(8)
                },
                None
            )
        );
    }

    #[test]
    fn bad_usage_is_skipped_and_reported() {
        // A data line that mentions usage but is cut.
        let (u, skip) = scan_api(
            Api::Messages,
            "text/event-stream",
            &[b"data: {\"type\":\"message_delta\",\"usage\":{\"output_tok\n\n"],
        );
        assert_eq!((u, skip), (Usage::default(), Some(Skip::Malformed)));
        // Counts that are not integers.
        let (u, skip) = scan_api(
            Api::Responses,
            "text/event-stream",
            &[b"data: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":\"many\"}}}\n\n"],
        );
        assert_eq!((u, skip), (Usage::default(), Some(Skip::WrongShape)));
        let (u, skip) = scan_api(
            Api::Chat,
            "application/json",
            &[br#"{"choices":[],"usage":{"prompt_tokens":-1}}"#],
        );
        assert_eq!((u, skip), (Usage::default(), Some(Skip::WrongShape)));
        // A null usage is not a skip.
        let (u, skip) = scan_api(Api::Chat, "application/json", &[br#"{"usage":null}"#]);
        assert_eq!((u, skip), (Usage::default(), None));
        // Nor is a body without usage.
        let (_, skip) = scan_api(Api::Chat, "application/json", &[b"{}"]);
        assert_eq!(skip, None);
    }
}
