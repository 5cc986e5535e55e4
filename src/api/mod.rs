//! What cutover understands of the APIs agents speak (SPEC §5, §7): OpenAI
//! Chat Completions, the OpenAI Responses API and Anthropic Messages.
//!
//! Each API has one module that owns all of cutover's knowledge of it:
//!
//! * **usage**: where its token counts sit, in a JSON body and in its event
//!   stream ([`usage::UsageScanner`] dispatches to the module);
//! * **reassembly**: how its event stream folds back into the document the
//!   same call returns unstreamed, and when such a stream is complete
//!   ([`reassemble`]), so shadow compare and `cutover eval` read the same
//!   JSON pointers whether a call streamed or not;
//! * **refusal**: the answer its official SDK parses as a normal reply, as
//!   JSON and as its event stream (rendered once per config generation by
//!   [`crate::resilience::Refusal`]).
//!
//! The API of a request is picked by its path ([`Api::from_path`]). A path
//! that names none (an agent's own endpoint) is read generically: usage in
//! any of the three shapes, and an event stream's API told by its first
//! event.
//!
//! Nothing here touches the client's bytes: callers hand in what they
//! observed (refcounted frames) and get values back at the end. Input that
//! does not fit (a broken event stream, an unknown event type, JSON of the
//! wrong shape) is skipped and reported as a [`Skip`], never an error.

pub mod chat;
pub mod compact;
pub mod lenient;
pub mod messages;
pub mod responses;
pub mod sse;
pub mod tokens;
pub mod usage;

use std::ops::ControlFlow;

use serde_json::Value;

/// One of the model APIs cutover understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    /// OpenAI Chat Completions (`…/chat/completions`).
    Chat,
    /// The OpenAI Responses API (`…/responses`).
    Responses,
    /// Anthropic Messages (`…/messages`).
    Messages,
}

impl Api {
    /// Every API, in a fixed order.
    pub const ALL: [Api; 3] = [Api::Chat, Api::Responses, Api::Messages];

    /// The API a request path names by its end (SPEC §5): `/chat/completions`,
    /// `/responses`, `/messages`. The query is not part of `path`.
    pub fn from_path(path: &str) -> Option<Api> {
        if path.ends_with("/chat/completions") {
            Some(Api::Chat)
        } else if path.ends_with("/responses") {
            Some(Api::Responses)
        } else if path.ends_with("/messages") {
            Some(Api::Messages)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Responses => "responses",
            Api::Messages => "messages",
        }
    }

    /// The event that ends a complete stream of this API, for messages.
    pub fn final_event(self) -> &'static str {
        match self {
            Api::Chat => "data: [DONE] (or a finish_reason on every choice)",
            Api::Responses => "response.completed",
            Api::Messages => "message_stop",
        }
    }
}

/// Why a response (or part of one) was skipped by usage or compare: the
/// `reason` label of `cutover_api_skipped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Not JSON, or an event stream whose data is not JSON objects.
    Malformed,
    /// JSON, but not in the shape the API defines (a usage count that is
    /// not a number, a delta without its index).
    WrongShape,
    /// An event type the API does not define; the event is skipped.
    UnknownEvent,
    /// A stream that ended before the API's final event.
    Incomplete,
    /// The stream carried the API's error event instead of an answer.
    ErrorEvent,
}

impl Skip {
    /// The labels, in declaration order: a counter handle counts a skip at
    /// `skip as usize`.
    pub const LABELS: [&'static str; 5] = [
        "malformed",
        "wrong_shape",
        "unknown_event",
        "incomplete",
        "error_event",
    ];

    pub fn as_str(self) -> &'static str {
        Self::LABELS[self as usize]
    }
}

/// A response read as its API's non-streamed document.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub value: Value,
    /// `false` for a stream that ended before its API's final event: what
    /// arrived is rebuilt, but it is never compared as a whole answer.
    pub complete: bool,
}

/// Why no document could be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreadable {
    pub skip: Skip,
    /// For people (`cutover eval` shows it).
    pub why: &'static str,
}

/// The outcome of reading an event stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Read {
    /// The API the stream was read as (given, or told by its first event).
    pub api: Api,
    pub document: Result<Document, Unreadable>,
    /// Events of a type the API does not define, skipped.
    pub unknown_events: u32,
}

impl Read {
    /// The document when it is a whole answer: what compare may match.
    pub fn complete(&self) -> Option<&Value> {
        match &self.document {
            Ok(doc) if doc.complete => Some(&doc.value),
            _ => None,
        }
    }

    /// The reasons to count: each skipped event, and why the document is
    /// missing or partial.
    pub fn skips(&self) -> impl Iterator<Item = (Skip, u64)> + '_ {
        let unknown = (self.unknown_events > 0)
            .then_some((Skip::UnknownEvent, u64::from(self.unknown_events)));
        let whole = match &self.document {
            Ok(doc) if doc.complete => None,
            Ok(_) => Some((Skip::Incomplete, 1)),
            Err(e) => Some((e.skip, 1)),
        };
        unknown.into_iter().chain(whole)
    }
}

/// Fold a whole event-stream body back into its API's non-streamed
/// document. `api` comes from the request path; without one the first
/// event tells (a `response.*` type: Responses; `message_start`: Messages;
/// anything else: Chat Completions).
pub fn reassemble(api: Option<Api>, body: &[u8]) -> Read {
    let api = api.unwrap_or_else(|| sniff(body));
    match api {
        Api::Chat => chat::reassemble(body),
        Api::Responses => responses::reassemble(body),
        Api::Messages => messages::reassemble(body),
    }
}

/// How a named-event stream (Responses, Messages) folds back into its
/// document: each event in turn, `Ok(false)` at the stream's last one.
trait EventFold: Default {
    /// An event that ends the stream without being JSON (`[DONE]`).
    fn is_end(_data: &[u8]) -> bool {
        false
    }
    /// The frequent events read in place, without building a `Value` (see
    /// [`lenient`]); `None` hands the event to [`EventFold::whole`]. Both
    /// read a field as `Value`'s accessors do, so they agree.
    fn in_place(&mut self, name: Option<&[u8]>, data: &[u8]) -> Result<Option<bool>, Unreadable>;
    /// One event read whole into a `Value`.
    fn whole(&mut self, name: Option<&[u8]>, data: &[u8]) -> Result<bool, Unreadable>;
    /// Events of a type the API does not define, skipped so far.
    fn unknown_events(&self) -> u32;
    fn finish(self) -> Result<Document, Unreadable>;
}

/// Read a whole event stream with `F`: the first unreadable event ends it.
fn fold_events<F: EventFold>(api: Api, body: &[u8]) -> Read {
    fold_with::<F, true>(api, body)
}

/// [`fold_events`] with every event read whole, as before the in-place
/// path. The tests and the `reassemble_chat` fuzz target hold each API's
/// reader to it.
#[cfg(any(test, fuzzing))]
fn fold_whole<F: EventFold>(api: Api, body: &[u8]) -> Read {
    fold_with::<F, false>(api, body)
}

fn fold_with<F: EventFold, const IN_PLACE: bool>(api: Api, body: &[u8]) -> Read {
    let mut fold = F::default();
    let mut failed = None;
    sse::for_each_event(body, |name, data| {
        let step = if F::is_end(data) {
            Ok(false)
        } else if IN_PLACE {
            fold.in_place(name, data)
                .and_then(|read| read.map_or_else(|| fold.whole(name, data), Ok))
        } else {
            fold.whole(name, data)
        };
        match step {
            Ok(true) => ControlFlow::Continue(()),
            Ok(false) => ControlFlow::Break(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        }
    });
    let unknown_events = fold.unknown_events();
    Read {
        api,
        document: failed.map_or_else(|| fold.finish(), Err),
        unknown_events,
    }
}

/// One event of a named-event stream: its JSON object, and its type (the
/// `type` field, else the SSE `event:` name). `not_json` when the data is
/// not a JSON object, `no_type` when neither names the type.
fn typed_event(
    name: Option<&[u8]>,
    data: &[u8],
    not_json: Unreadable,
    no_type: Unreadable,
) -> Result<(String, serde_json::Map<String, Value>), Unreadable> {
    // One UTF-8 check of the whole event, then a str parse that does not
    // check each string again (a slice parse refuses the same events).
    let Some(Value::Object(event)) = std::str::from_utf8(data)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
    else {
        return Err(not_json);
    };
    let kind = event_kind(event.get("type").and_then(Value::as_str), name, no_type)?.to_owned();
    Ok((kind, event))
}

/// An event read in place into `H` (see [`lenient`]): `not_json` when the
/// data is not a JSON object, as [`typed_event`] refuses it.
fn event_head<'a, H: lenient::Shape<'a>>(
    data: &'a [u8],
    not_json: Unreadable,
) -> Result<H, Unreadable> {
    // One UTF-8 check of the whole event, then a str parse that does not
    // check each string again (a slice parse refuses the same events).
    let text = std::str::from_utf8(data).map_err(|_| not_json)?;
    let mut head = None;
    // The compact reader reads most events in a fraction of serde_json's
    // time, and leaves it the rest (see [`compact`]).
    let mut fast = compact::Compact::new(text);
    if lenient::fill(&mut fast, &mut head)
        .and_then(|()| fast.end())
        .is_ok()
    {
        return head.ok_or(not_json);
    }
    head = None;
    let mut de = serde_json::Deserializer::from_str(text);
    let read = lenient::fill(&mut de, &mut head).and_then(|()| de.end());
    match (read, head) {
        (Ok(()), Some(head)) => Ok(head),
        _ => Err(not_json),
    }
}

/// An event's type: its `type` field when that is a string, else the SSE
/// `event:` name; `no_type` when neither names it.
fn event_kind<'a>(
    field: Option<&'a str>,
    name: Option<&'a [u8]>,
    no_type: Unreadable,
) -> Result<&'a str, Unreadable> {
    match field {
        Some(kind) => Ok(kind),
        None => name
            .and_then(|n| std::str::from_utf8(n).ok())
            .ok_or(no_type),
    }
}

/// Append `piece` to the string at `key`, starting it when absent.
fn append(obj: &mut serde_json::Map<String, Value>, key: &str, piece: &str) {
    match obj.get_mut(key) {
        Some(Value::String(s)) => s.push_str(piece),
        _ => {
            obj.insert(key.into(), Value::from(piece));
        }
    }
}

/// The API of an event stream, from its first event with data.
fn sniff(body: &[u8]) -> Api {
    #[derive(serde::Deserialize)]
    struct Typed<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<std::borrow::Cow<'a, str>>,
    }
    let mut api = Api::Chat;
    sse::for_each_event(body, |name, data| {
        let kind = serde_json::from_slice::<Typed<'_>>(data)
            .ok()
            .and_then(|t| t.kind.map(|k| k.into_owned()))
            .or_else(|| {
                name.and_then(|n| std::str::from_utf8(n).ok())
                    .map(str::to_owned)
            });
        if let Some(kind) = kind {
            if kind.starts_with("response.") {
                api = Api::Responses;
            } else if messages::is_event_type(&kind) {
                api = Api::Messages;
            }
        }
        std::ops::ControlFlow::Break(())
    });
    api
}

/// A JSON object's `key` as an index (`output_index`, `index`).
pub(crate) fn index_of(obj: &serde_json::Map<String, Value>, key: &str) -> Option<u64> {
    obj.get(key).and_then(Value::as_u64)
}

/// `events` as an SSE body, each event named by its `type` (for the
/// stream readers' tests).
#[cfg(test)]
fn stream(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or("")))
        .collect()
}

/// Every body of `start`, three of `events` in every order, and one of
/// `tails` reads the same through `read` as through `whole` (for the
/// in-place readers' tests).
#[cfg(test)]
fn assert_triples_agree(
    start: &[u8],
    events: &[&[u8]],
    tails: &[&[u8]],
    read: fn(&[u8]) -> Read,
    whole: fn(&[u8]) -> Read,
) {
    for a in events {
        for b in events {
            for c in events {
                for tail in tails {
                    let body = [start, a, b, c, tail].concat();
                    assert_eq!(
                        read(&body),
                        whole(&body),
                        "{}",
                        String::from_utf8_lossy(&body)
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_names_the_api_by_its_end() {
        for (path, api) in [
            ("/v1/chat/completions", Some(Api::Chat)),
            ("/openai/deployments/x/chat/completions", Some(Api::Chat)),
            ("/v1/responses", Some(Api::Responses)),
            ("/v1/messages", Some(Api::Messages)),
            ("/anthropic/v1/messages", Some(Api::Messages)),
            ("/v1/responses/resp_123", None),
            ("/v1/messages/count_tokens", None),
            ("/v1/completions", None),
            ("/mcp", None),
            ("/", None),
        ] {
            assert_eq!(Api::from_path(path), api, "{path}");
        }
    }

    #[test]
    fn a_stream_without_a_path_is_told_by_its_first_event() {
        let responses =
            b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{}}\n\n";
        let messages =
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n";
        let chat = b"data: {\"choices\":[]}\n\n";
        assert_eq!(sniff(responses), Api::Responses);
        assert_eq!(sniff(messages), Api::Messages);
        assert_eq!(sniff(chat), Api::Chat);
        assert_eq!(sniff(b""), Api::Chat);
        // The event name alone is enough when the data has no type.
        assert_eq!(sniff(b"event: message_start\ndata: {}\n\n"), Api::Messages);
    }
}
