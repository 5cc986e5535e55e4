//! OpenAI Chat Completions (`…/chat/completions`).
//!
//! **Usage**: `usage.prompt_tokens` and `usage.completion_tokens`, at the
//! top of a `chat.completion`, and in a stream in the usage chunk (a last
//! chunk whose `choices` is empty, sent with `stream_options.include_usage`).
//!
//! **Reassembly**: a stream of `chat.completion.chunk`s folds into the
//! equivalent non-streamed `chat.completion`, field for field:
//!
//! * per choice `index`: `delta.content` strings are concatenated (the
//!   content is `null` if no delta carried a string), `delta.role` is taken
//!   from the first delta that has one (`"assistant"` if none did), and
//!   `finish_reason` is the last non-null one;
//! * `delta.tool_calls` are merged by their `index` (their position in the
//!   delta's array if a server omits it): `id` and `type` come from the first
//!   delta that carries them, `function.name` and `function.arguments` are
//!   the concatenation of their fragments;
//! * `id`, `created` and `model` come from the first chunk that has them, and
//!   `usage` from the last chunk with a non-null `usage`;
//! * `data: [DONE]` ends the stream (anything after it is ignored).
//!
//! A stream is unreadable when any `data:` payload other than `[DONE]` is
//! not a JSON object, when a chunk carries an `error`, or when no chunk
//! arrived at all. It is **complete** when it ended with `[DONE]`, or when
//! every choice has its `finish_reason` (some OpenAI-compatible servers
//! omit `[DONE]`); a stream cut before either is rebuilt from what arrived
//! but marked incomplete.
//!
//! **Refusal** (`openai-chat`): a `chat.completion` whose assistant message
//! is the refusal text, or the same as chunks ending in `[DONE]`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::ControlFlow;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::MapAccess;
use serde_json::{Map, Value, json};

use super::compact::Parse;
use super::lenient::{self, Shape};
use super::tokens::{Usage, classify};
use super::{Api, Document, Read, Skip, Unreadable, sse};
use crate::ascii::json_escape_at;

// ---- usage ----

/// The `usage` object of a completion or chunk.
#[derive(Deserialize)]
pub(super) struct ChatUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

impl From<ChatUsage> for Usage {
    fn from(u: ChatUsage) -> Usage {
        Usage {
            input: u.prompt_tokens,
            output: u.completion_tokens,
        }
    }
}

/// The usage a chunk carries, if any.
pub(super) fn event_usage<P: Parse>(data: &[u8]) -> Result<Option<Usage>, Skip> {
    #[derive(Deserialize)]
    struct Chunk {
        usage: Option<ChatUsage>,
    }
    P::parse::<Chunk>(data)
        .map(|c| c.usage.map(Usage::from))
        .map_err(|e| classify(&e))
}

/// A top-level `usage` value of a JSON document (`de` is positioned at it).
pub(super) fn json_usage<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<Option<Usage>, D::Error> {
    Option::<ChatUsage>::deserialize(de).map(|u| u.map(Usage::from))
}

// ---- reassembly ----

/// Read a whole SSE body of chat-completion chunks into the equivalent
/// non-streamed `chat.completion`.
pub fn reassemble(body: &[u8]) -> Read {
    fold(body, Completion::event)
}

/// Fold `body`'s events into a completion with `event`: the first
/// unreadable one ends it.
fn fold(
    body: &[u8],
    mut event: impl FnMut(&mut Completion, &[u8]) -> Result<Flow, Unreadable>,
) -> Read {
    let mut completion = Completion::default();
    let mut failed = None;
    sse::for_each_event(body, |_, data| match event(&mut completion, data) {
        Ok(Flow::More) => ControlFlow::Continue(()),
        Ok(Flow::Done) => {
            completion.done = true;
            ControlFlow::Break(())
        }
        Err(e) => {
            failed = Some(e);
            ControlFlow::Break(())
        }
    });
    let document = match failed {
        Some(e) => Err(e),
        None => completion.finish(),
    };
    Read {
        api: Api::Chat,
        document,
        unknown_events: 0,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    More,
    Done,
}

const NOT_JSON: Unreadable = Unreadable {
    skip: Skip::Malformed,
    why: "the event stream is not a chat-completion stream: a data line is not a JSON object",
};
const ERROR_CHUNK: Unreadable = Unreadable {
    skip: Skip::ErrorEvent,
    why: "the event stream is not a chat-completion stream: a chunk carries an error",
};
const NO_CHUNK: Unreadable = Unreadable {
    skip: Skip::Malformed,
    why: "the event stream is not a chat-completion stream: no chunk arrived",
};

/// The non-streamed completion being rebuilt from chunks.
#[derive(Default)]
struct Completion {
    chunks: usize,
    done: bool,
    id: Option<Value>,
    created: Option<Value>,
    model: Option<Value>,
    choices: BTreeMap<u64, ChoiceAcc>,
    usage: Option<Value>,
    /// The last chunk of the common shape, for reading the next ones by
    /// their bytes (see [`Template`]).
    template: Option<Template>,
}

#[derive(Default)]
struct ChoiceAcc {
    role: Option<String>,
    /// `None` until a delta carries a string `content`.
    content: Option<String>,
    finish_reason: Option<Value>,
    tool_calls: BTreeMap<u64, ToolCallAcc>,
}

#[derive(Default)]
struct ToolCallAcc {
    id: Option<String>,
    kind: Option<String>,
    name: String,
    arguments: String,
}

impl Completion {
    /// One event's data: `[DONE]`, or a chunk.
    fn event(&mut self, data: &[u8]) -> Result<Flow, Unreadable> {
        if data.trim_ascii() == b"[DONE]" {
            return Ok(Flow::Done);
        }
        // Most chunks differ from the one before only in their text: those
        // are read by comparing bytes, not by parsing (a tenth of the cost).
        if let Some(template) = &self.template
            && let Some(text) = template.text(data)
        {
            self.chunks += 1;
            self.choices.entry(template.index).or_default().text(text);
            return Ok(Flow::More);
        }
        let kept = direct::Kept {
            id: self.id.is_some(),
            created: self.created.is_some(),
            model: self.model.is_some(),
        };
        // Read into one slot, not returned through `Option` and `Result`:
        // each return moved the whole chunk (four copies of ~180 bytes).
        let mut chunk = Chunk::default();
        let direct = direct::chunk(data, kept, &mut chunk);
        if !direct {
            chunk = super::event_head(data, NOT_JSON)?;
        }
        if chunk.error.as_ref().is_some_and(|e| !e.is_null()) {
            return Err(ERROR_CHUNK);
        }
        // Only the direct reader's text lies in `data`, where a template
        // can find it.
        if direct {
            Template::learn(&mut self.template, data, &chunk);
        }
        self.chunk(chunk);
        Ok(Flow::More)
    }

    #[inline]
    fn chunk(&mut self, chunk: Chunk<'_>) {
        self.chunks += 1;
        first_non_null(&mut self.id, chunk.id);
        first_non_null(&mut self.created, chunk.created);
        first_non_null(&mut self.model, chunk.model);
        if let Some(usage) = chunk.usage.filter(|u| !u.is_null()) {
            self.usage = Some(usage);
        }
        let Some(choices) = chunk.choices else {
            return;
        };
        for (position, choice) in choices.into_iter().enumerate() {
            let Some(choice) = choice else {
                continue;
            };
            let acc = self
                .choices
                .entry(choice.index.unwrap_or(position as u64))
                .or_default();
            if let Some(reason) = choice.finish_reason.filter(|r| !r.is_null()) {
                acc.finish_reason = Some(reason);
            }
            if let Some(delta) = choice.delta {
                acc.delta(delta);
            }
        }
    }

    fn finish(self) -> Result<Document, Unreadable> {
        if self.chunks == 0 {
            return Err(NO_CHUNK);
        }
        let complete = self.done
            || (!self.choices.is_empty()
                && self.choices.values().all(|c| c.finish_reason.is_some()));
        let choices: Vec<Value> = self
            .choices
            .into_iter()
            .map(|(index, choice)| choice.finish(index))
            .collect();
        let mut doc = Map::new();
        doc.insert("id".into(), self.id.unwrap_or(Value::Null));
        doc.insert("object".into(), Value::from("chat.completion"));
        if let Some(created) = self.created {
            doc.insert("created".into(), created);
        }
        doc.insert("model".into(), self.model.unwrap_or(Value::Null));
        doc.insert("choices".into(), Value::Array(choices));
        if let Some(usage) = self.usage {
            doc.insert("usage".into(), usage);
        }
        Ok(Document {
            value: Value::Object(doc),
            complete,
        })
    }
}

impl ChoiceAcc {
    /// A delta's `content` string: appended (the content stays `null`
    /// until one comes).
    fn text(&mut self, piece: &str) {
        self.content.get_or_insert_with(String::new).push_str(piece);
    }

    fn delta(&mut self, delta: Delta<'_>) {
        if self.role.is_none()
            && let Some(role) = delta.role
        {
            self.role = Some(role.into_owned());
        }
        if let Some(piece) = delta.content {
            self.text(&piece);
        }
        let Some(calls) = delta.tool_calls else {
            return;
        };
        for (position, call) in calls.into_iter().enumerate() {
            let Some(call) = call else {
                continue;
            };
            let acc = self
                .tool_calls
                .entry(call.index.unwrap_or(position as u64))
                .or_default();
            if acc.id.is_none() {
                acc.id = call.id.map(Cow::into_owned);
            }
            if acc.kind.is_none() {
                acc.kind = call.kind.map(Cow::into_owned);
            }
            if let Some(function) = call.function {
                if let Some(name) = function.name {
                    acc.name.push_str(&name);
                }
                if let Some(arguments) = function.arguments {
                    acc.arguments.push_str(&arguments);
                }
            }
        }
    }

    fn finish(self, index: u64) -> Value {
        let mut message = Map::new();
        message.insert(
            "role".into(),
            Value::from(self.role.unwrap_or_else(|| "assistant".to_owned())),
        );
        message.insert(
            "content".into(),
            self.content.map_or(Value::Null, Value::from),
        );
        if !self.tool_calls.is_empty() {
            let calls = self.tool_calls.into_values().map(ToolCallAcc::finish);
            message.insert("tool_calls".into(), Value::Array(calls.collect()));
        }
        let mut choice = Map::new();
        choice.insert("index".into(), Value::from(index));
        choice.insert("message".into(), Value::Object(message));
        choice.insert(
            "finish_reason".into(),
            self.finish_reason.unwrap_or(Value::Null),
        );
        Value::Object(choice)
    }
}

impl ToolCallAcc {
    fn finish(self) -> Value {
        let mut function = Map::new();
        function.insert("name".into(), Value::from(self.name));
        function.insert("arguments".into(), Value::from(self.arguments));
        let mut call = Map::new();
        if let Some(id) = self.id {
            call.insert("id".into(), Value::from(id));
        }
        call.insert(
            "type".into(),
            Value::from(self.kind.unwrap_or_else(|| "function".to_owned())),
        );
        call.insert("function".into(), Value::Object(function));
        Value::Object(call)
    }
}

/// A chunk of the common shape (one choice, whose delta carries text and
/// perhaps a role, and no finish reason, usage or tool call), as the bytes
/// around its text: a later chunk made of the same bytes around another
/// plain string reads exactly as that chunk with the other text. Its other
/// fields change nothing the second time: `id`, `created`, `model` and
/// `role` are taken from the first chunk that has them, so the template's
/// own reading already settled them.
///
/// A chunk may end in a string field the reader ignores whose value
/// changes every time (OpenAI's `obfuscation` padding): that value is a
/// second hole, which must be a plain string too.
struct Template {
    /// The bytes before the text (up to its opening quote), those after it
    /// (from its closing quote, up to the ignored value's opening quote when
    /// there is one), then those after the ignored value.
    bytes: Vec<u8>,
    /// Where the first and the second part end in `bytes` (the third,
    /// empty without an ignored value, is the rest).
    before: usize,
    between: usize,
    /// The choice the text goes to.
    index: u64,
}

impl Template {
    /// Take `chunk` (read from `data` by the direct reader) as the template
    /// if it has the common shape; otherwise keep the one there is.
    fn learn(slot: &mut Option<Template>, data: &[u8], chunk: &Chunk<'_>) {
        let Some((index, Cow::Borrowed(text))) = Self::text_of(chunk) else {
            return;
        };
        // Where the text lies in `data`: between two quotes, when it was
        // read in place.
        let Some(at) = (text.as_ptr() as usize).checked_sub(data.as_ptr() as usize) else {
            return;
        };
        let end = at + text.len();
        if at == 0 || end >= data.len() || data[at - 1] != b'"' || data[end] != b'"' {
            return;
        }
        let after = &data[end..];
        let (between, last) = match ignored_last_value(after) {
            Some(value) => (&after[..value.start], &after[value.end..]),
            None => (after, &[][..]),
        };
        // The old template's buffer is reused: a stream learns a few.
        let mut bytes = slot.take().map(|t| t.bytes).unwrap_or_default();
        bytes.clear();
        bytes.extend_from_slice(&data[..at]);
        bytes.extend_from_slice(between);
        bytes.extend_from_slice(last);
        *slot = Some(Template {
            bytes,
            before: at,
            between: between.len(),
            index,
        });
    }

    /// Whether the chunk ends in an ignored value (the third part).
    fn ignored(&self) -> bool {
        self.bytes.len() > self.before + self.between
    }

    /// The choice's index and its delta's text, if `chunk` has the common
    /// shape.
    fn text_of<'c, 'a>(chunk: &'c Chunk<'a>) -> Option<(u64, &'c Cow<'a, str>)> {
        let absent = |v: &Option<Value>| v.as_ref().is_none_or(Value::is_null);
        let [Some(choice)] = chunk.choices.as_deref()? else {
            return None;
        };
        let delta = choice.delta.as_ref()?;
        if !absent(&chunk.usage) || !absent(&chunk.error) || !absent(&choice.finish_reason) {
            return None;
        }
        if delta.tool_calls.is_some() {
            return None;
        }
        Some((choice.index.unwrap_or(0), delta.content.as_ref()?))
    }

    /// `data`'s text, if `data` is the template's bytes around a plain
    /// string (and a plain ignored value), which reads as itself.
    fn text<'a>(&self, data: &'a [u8]) -> Option<&'a str> {
        let (before, rest) = self.bytes.split_at(self.before);
        let (between, after) = rest.split_at(self.between);
        let inner = data.strip_prefix(before)?;
        if !self.ignored() {
            return plain(inner.strip_suffix(between)?);
        }
        let inner = inner.strip_suffix(after)?;
        // The text ends at the first quote; the ignored value follows the
        // bytes between.
        let quote = memchr::memchr(b'"', inner)?;
        let (text, rest) = inner.split_at(quote);
        plain(rest.strip_prefix(between)?)?;
        plain(text)
    }
}

/// `bytes` as the inside of a JSON string that reads as itself: no escape,
/// quote or control character, and UTF-8.
fn plain(bytes: &[u8]) -> Option<&str> {
    if json_escape_at(bytes) < bytes.len() {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// Where the value lies in `after` (the bytes of a chunk from its text's
/// closing quote to its end) when the chunk ends in `,"key":"value"}`, a
/// plain key the reader ignores with a plain value. The `}` is the last
/// byte but blanks of a chunk the direct reader read whole, so it closes
/// the chunk itself, and `key` is a field of the chunk.
fn ignored_last_value(after: &[u8]) -> Option<std::ops::Range<usize>> {
    let body = after.trim_ascii_end().strip_suffix(b"\"}")?;
    let open = memchr::memrchr(b'"', body)?;
    plain(&body[open + 1..])?;
    let key_end = open.checked_sub(2)?;
    if body[key_end..open] != *b"\":" {
        return None;
    }
    let key_open = memchr::memrchr(b'"', &body[..key_end])?;
    if key_open == 0 || body[key_open - 1] != b',' {
        return None;
    }
    let key = plain(&body[key_open + 1..key_end])?;
    let read = ["id", "created", "model", "choices", "usage", "error"];
    (!read.contains(&key)).then_some(open + 1..body.len())
}

/// `value` into an empty `slot`, unless it is `null`: the first chunk that
/// has the field gives it.
fn first_non_null(slot: &mut Option<Value>, value: Option<lenient::Any<'_>>) {
    if slot.is_none() {
        *slot = value.filter(|v| !v.is_null()).map(lenient::Any::into_value);
    }
}

// ---- a chunk, read as `Value`'s accessors read it (see `api::lenient`) ----

/// The fields of a chunk the completion takes.
#[derive(Default)]
struct Chunk<'a> {
    id: Option<lenient::Any<'a>>,
    created: Option<lenient::Any<'a>>,
    model: Option<lenient::Any<'a>>,
    usage: Option<Value>,
    error: Option<Value>,
    /// `as_array`, each choice `as_object`.
    choices: Option<Vec<Option<Choice<'a>>>>,
}

impl<'de> Shape<'de> for Chunk<'de> {
    fn object<A: MapAccess<'de>>(&mut self, map: A) -> Result<bool, A::Error> {
        lenient::fields(self, map, |chunk: &mut Self, key, map| {
            match key {
                "id" => chunk.id = Some(map.next_value()?),
                "created" => chunk.created = Some(map.next_value()?),
                "model" => chunk.model = Some(map.next_value()?),
                "usage" => chunk.usage = Some(map.next_value()?),
                "error" => chunk.error = Some(map.next_value()?),
                "choices" => lenient::value(map, &mut chunk.choices)?,
                _ => return Ok(false),
            }
            Ok(true)
        })
    }
}

#[derive(Default)]
struct Choice<'a> {
    index: Option<u64>,
    finish_reason: Option<Value>,
    delta: Option<Delta<'a>>,
}

impl<'de> Shape<'de> for Choice<'de> {
    fn object<A: MapAccess<'de>>(&mut self, map: A) -> Result<bool, A::Error> {
        lenient::fields(self, map, |choice: &mut Self, key, map| {
            match key {
                "index" => lenient::value(map, &mut choice.index)?,
                "finish_reason" => choice.finish_reason = Some(map.next_value()?),
                "delta" => lenient::value(map, &mut choice.delta)?,
                _ => return Ok(false),
            }
            Ok(true)
        })
    }
}

#[derive(Default)]
struct Delta<'a> {
    role: Option<Cow<'a, str>>,
    content: Option<Cow<'a, str>>,
    tool_calls: Option<Vec<Option<CallDelta<'a>>>>,
}

impl<'de> Shape<'de> for Delta<'de> {
    fn object<A: MapAccess<'de>>(&mut self, map: A) -> Result<bool, A::Error> {
        lenient::fields(self, map, |delta: &mut Self, key, map| {
            match key {
                "role" => lenient::value(map, &mut delta.role)?,
                "content" => lenient::value(map, &mut delta.content)?,
                "tool_calls" => lenient::value(map, &mut delta.tool_calls)?,
                _ => return Ok(false),
            }
            Ok(true)
        })
    }
}

#[derive(Default)]
struct CallDelta<'a> {
    index: Option<u64>,
    id: Option<Cow<'a, str>>,
    kind: Option<Cow<'a, str>>,
    function: Option<FunctionDelta<'a>>,
}

impl<'de> Shape<'de> for CallDelta<'de> {
    fn object<A: MapAccess<'de>>(&mut self, map: A) -> Result<bool, A::Error> {
        lenient::fields(self, map, |call: &mut Self, key, map| {
            match key {
                "index" => lenient::value(map, &mut call.index)?,
                "id" => lenient::value(map, &mut call.id)?,
                "type" => lenient::value(map, &mut call.kind)?,
                "function" => lenient::value(map, &mut call.function)?,
                _ => return Ok(false),
            }
            Ok(true)
        })
    }
}

#[derive(Default)]
struct FunctionDelta<'a> {
    name: Option<Cow<'a, str>>,
    arguments: Option<Cow<'a, str>>,
}

impl<'de> Shape<'de> for FunctionDelta<'de> {
    fn object<A: MapAccess<'de>>(&mut self, map: A) -> Result<bool, A::Error> {
        lenient::fields(self, map, |function: &mut Self, key, map| {
            match key {
                "name" => lenient::value(map, &mut function.name)?,
                "arguments" => lenient::value(map, &mut function.arguments)?,
                _ => return Ok(false),
            }
            Ok(true)
        })
    }
}

/// A chunk read straight off the compact reader's tokens, as the
/// [`Shape`]s above read it but without a visitor call per key and value:
/// a chunk of the common shape costs about half. What it does not read
/// itself (a `usage` or `error` object, tool calls, a field of an
/// unexpected type) it hands to the same `Shape` or `Deserialize` on the
/// same reader, so it reads what they read. `None` is what `Err(Other)`
/// is to the compact reader: `event_head` reads the chunk again.
mod direct {
    use std::borrow::Cow;

    use serde::Deserialize;
    use serde_json::Value;

    use super::{Choice, Chunk, Delta};
    use crate::api::compact::{Compact, Other};
    use crate::api::lenient::{self, Any};

    /// Which of the fields a completion takes from its first chunk it has:
    /// later chunks' are checked and dropped, not read.
    #[derive(Clone, Copy, Default)]
    pub(super) struct Kept {
        pub id: bool,
        pub created: bool,
        pub model: bool,
    }

    /// Read `data` into `chunk` (default on entry); `false` if it is not
    /// a chunk this reader takes, with `chunk` left partly filled.
    pub(super) fn chunk<'a>(data: &'a [u8], kept: Kept, chunk: &mut Chunk<'a>) -> bool {
        let Ok(text) = std::str::from_utf8(data) else {
            return false;
        };
        let mut c = Compact::new(text);
        read_chunk(&mut c, kept, chunk).is_ok() && c.end().is_ok()
    }

    fn read_chunk<'a>(c: &mut Compact<'a>, kept: Kept, chunk: &mut Chunk<'a>) -> Result<(), Other> {
        // Anything but an object is not a chunk: `event_head` says so.
        if c.next_byte() != Some(b'{') {
            return Err(Other);
        }
        let fields = |key: &str| match key {
            "id" if !kept.id => Some(0),
            "created" if !kept.created => Some(1),
            "model" if !kept.model => Some(2),
            "choices" => Some(3),
            "usage" => Some(4),
            "error" => Some(5),
            _ => None,
        };
        c.object(fields, |c, field| {
            match field {
                0 => chunk.id = Some(any(c)?),
                1 => chunk.created = Some(any(c)?),
                2 => chunk.model = Some(any(c)?),
                3 => choices(c, &mut chunk.choices)?,
                4 => chunk.usage = Some(value(c)?),
                _ => chunk.error = Some(value(c)?),
            }
            Ok(())
        })
    }

    fn choices<'a>(
        c: &mut Compact<'a>,
        out: &mut Option<Vec<Option<Choice<'a>>>>,
    ) -> Result<(), Other> {
        if c.next_byte() != Some(b'[') {
            return lenient::fill(c, out);
        }
        let mut list = Vec::new();
        c.array(|c| {
            let mut choice = None;
            if c.next_byte() == Some(b'{') {
                choice = Some(read_choice(c)?);
            } else {
                lenient::fill(&mut *c, &mut choice)?;
            }
            list.push(choice);
            Ok(())
        })?;
        *out = Some(list);
        Ok(())
    }

    /// The choice object that is next.
    fn read_choice<'a>(c: &mut Compact<'a>) -> Result<Choice<'a>, Other> {
        let mut choice = Choice::default();
        let fields = |key: &str| match key {
            "index" => Some(0),
            "finish_reason" => Some(1),
            "delta" => Some(2),
            _ => None,
        };
        c.object(fields, |c, field| {
            match (field, c.next_byte()) {
                (0, Some(b'0'..=b'9')) => choice.index = Some(c.integer()?),
                (0, _) => lenient::fill(&mut *c, &mut choice.index)?,
                (1, _) => choice.finish_reason = Some(value(c)?),
                (_, Some(b'{')) => choice.delta = Some(read_delta(c)?),
                (_, _) => lenient::fill(&mut *c, &mut choice.delta)?,
            }
            Ok(())
        })?;
        Ok(choice)
    }

    /// The delta object that is next.
    fn read_delta<'a>(c: &mut Compact<'a>) -> Result<Delta<'a>, Other> {
        let mut delta = Delta::default();
        let fields = |key: &str| match key {
            "role" => Some(0),
            "content" => Some(1),
            "tool_calls" => Some(2),
            _ => None,
        };
        c.object(fields, |c, field| match field {
            0 => text(c, &mut delta.role),
            1 => text(c, &mut delta.content),
            _ => lenient::fill(&mut *c, &mut delta.tool_calls),
        })?;
        Ok(delta)
    }

    /// A string field: the string, or `None` for any other value.
    fn text<'a>(c: &mut Compact<'a>, out: &mut Option<Cow<'a, str>>) -> Result<(), Other> {
        match c.next_byte() {
            Some(b'"') => *out = Some(c.text()?),
            _ => lenient::fill(c, out)?,
        }
        Ok(())
    }

    /// [`Any`], as its `Deserialize` reads it.
    fn any<'a>(c: &mut Compact<'a>) -> Result<Any<'a>, Other> {
        match c.next_byte() {
            Some(b'0'..=b'9') => Ok(Any::Value(Value::from(c.integer()?))),
            Some(b'"') => Ok(match c.text()? {
                Cow::Borrowed(s) => Any::Str(s),
                Cow::Owned(s) => Any::Value(Value::String(s)),
            }),
            _ => Any::deserialize(c),
        }
    }

    /// A `Value`, with `null` read in place.
    fn value(c: &mut Compact<'_>) -> Result<Value, Other> {
        match c.next_byte() {
            Some(b'n') => c.null().map(|()| Value::Null),
            _ => Value::deserialize(c),
        }
    }
}

/// The reassembly as it was before `api::lenient`: each chunk parsed into a
/// `Value` and read through its accessors. The tests and the
/// `reassemble_chat` fuzz target hold [`reassemble`] to it.
#[cfg(any(test, fuzzing))]
pub mod by_value {
    use super::*;

    pub fn reassemble(body: &[u8]) -> Read {
        fold(body, event)
    }

    fn event(c: &mut Completion, data: &[u8]) -> Result<Flow, Unreadable> {
        if data.trim_ascii() == b"[DONE]" {
            return Ok(Flow::Done);
        }
        let Ok(Value::Object(chunk)) = serde_json::from_slice::<Value>(data) else {
            return Err(NOT_JSON);
        };
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            return Err(ERROR_CHUNK);
        }
        c.chunks += 1;
        first(&mut c.id, chunk.get("id"));
        first(&mut c.created, chunk.get("created"));
        first(&mut c.model, chunk.get("model"));
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            c.usage = Some(usage.clone());
        }
        let Some(choices) = chunk.get("choices").and_then(Value::as_array) else {
            return Ok(Flow::More);
        };
        for (position, choice) in choices.iter().enumerate() {
            let Some(choice) = choice.as_object() else {
                continue;
            };
            let acc = c.choices.entry(index_or(choice, position)).or_default();
            if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
                acc.finish_reason = Some(reason.clone());
            }
            if let Some(delta) = choice.get("delta").and_then(Value::as_object) {
                delta_into(acc, delta);
            }
        }
        Ok(Flow::More)
    }

    fn delta_into(acc: &mut ChoiceAcc, delta: &Map<String, Value>) {
        if acc.role.is_none()
            && let Some(role) = delta.get("role").and_then(Value::as_str)
        {
            acc.role = Some(role.to_owned());
        }
        if let Some(piece) = delta.get("content").and_then(Value::as_str) {
            acc.content.get_or_insert_with(String::new).push_str(piece);
        }
        let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) else {
            return;
        };
        for (position, call) in calls.iter().enumerate() {
            let Some(call) = call.as_object() else {
                continue;
            };
            let acc = acc.tool_calls.entry(index_or(call, position)).or_default();
            first_str(&mut acc.id, call.get("id"));
            first_str(&mut acc.kind, call.get("type"));
            if let Some(function) = call.get("function").and_then(Value::as_object) {
                if let Some(name) = function.get("name").and_then(Value::as_str) {
                    acc.name.push_str(name);
                }
                if let Some(arguments) = function.get("arguments").and_then(Value::as_str) {
                    acc.arguments.push_str(arguments);
                }
            }
        }
    }

    fn index_or(obj: &Map<String, Value>, position: usize) -> u64 {
        crate::api::index_of(obj, "index").unwrap_or(position as u64)
    }

    fn first(slot: &mut Option<Value>, value: Option<&Value>) {
        if slot.is_none() {
            *slot = value.filter(|v| !v.is_null()).cloned();
        }
    }

    fn first_str(slot: &mut Option<String>, value: Option<&Value>) {
        if slot.is_none() {
            *slot = value.and_then(Value::as_str).map(str::to_owned);
        }
    }
}

// ---- refusal ----

/// The `openai-chat` refusal: a `chat.completion` whose assistant message
/// is `message`, and the same answer as a chunk stream ending in `[DONE]`.
pub fn refusal(message: &str, created: u64) -> (Bytes, Bytes) {
    let body = json!({
        "id": "chatcmpl-cutover-refusal",
        "object": "chat.completion",
        "created": created,
        "model": "cutover-refusal",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": message}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    });
    let chunk = |delta: Value, finish: Value| {
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
        chunk(
            json!({"role": "assistant", "content": message}),
            Value::Null
        ),
        chunk(json!({}), json!("stop")),
    );
    (Bytes::from(body.to_string()), Bytes::from(stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::compact::CompactFirst;

    /// The lenient reader reads what the `Value` reader reads, for streams
    /// of chunks with every shape a field can take: wrong types, keys given
    /// twice, escapes, nulls, nested values it skips, an error chunk, JSON
    /// that is not an object, and JSON that is not JSON.
    #[test]
    fn the_lenient_reader_reads_as_the_value_reader() {
        let chunks = [
            r#"{"id":"c1","created":7,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"He"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"llo \"q\" \u00e9"},"finish_reason":null}]}"#,
            r#"{"choices":[{"delta":{"content":5,"role":7}},"x",null,{"index":-1,"delta":[]}]}"#,
            r#"{"choices":{"0":{}},"id":null,"id":"late","usage":null,"model":1.5}"#,
            r#"{"choices":[{"index":1,"index":"2","delta":{"tool_calls":[{"index":0,"id":"t1","type":"function","function":{"name":"get_","arguments":"{\"a\""}},5,{"function":{"name":"x","arguments":7}}]}}]}"#,
            r#"{"choices":[{"index":1,"delta":{"tool_calls":[{"index":0,"id":"t2","function":{"name":"weather","arguments":":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3}}"#,
            r#"{"choices":[{"index":0,"finish_reason":"stop","delta":{"content":"a","content":null}}],"usage":{"prompt_tokens":1,"completion_tokens":2},"extra":{"deep":[[[{"a":[1,2.5,-3e10,true,null]}]]]}}"#,
            r#"{"error":null,"choices":[{"index":18446744073709551615,"delta":{"content":"big"}}],"choices":[{"index":2,"delta":{"role":"tool","content":""}}]}"#,
            r#"{"error":{"message":"boom"}}"#,
            r#"[1,2]"#,
            r#""str""#,
            r#"{"choices":[{"delta":{"content":"cut"#,
            r#"{"a":1}x"#,
            r#"{"n":1e400}"#,
            // What the direct reader hands on, or refuses, as a whole.
            r#" { "choices" : [ { "delta" : null , "index" : 3 } , [ ] ] , "id" : { "a" : [ ] } } "#,
            r#"{"choices":"no","choices":[{"finish_reason":{"why":["x"]},"delta":{"con\ntent":"k","role":null}}]}"#,
            r#"{"created":"t\"1","model":true,"choices":[{"index":null,"delta":{"tool_calls":null}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"x"}},]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"x"},}]}"#,
            r#"{,"id":"c"}"#,
            r#"{"id":"c",}"#,
            r#"{"choices":[{"index":01}]}"#,
            "{\"choices\":[{\"delta\":{\"content\":\"tab\there\"}}]}",
            "{\"choices\":[{\"delta\":{\"content\":\"raw\tcontrol\"}}]}",
            "[DONE]",
        ];
        let events: Vec<Vec<u8>> = chunks
            .iter()
            .map(|c| format!("data: {c}\n\n").into_bytes())
            .collect();
        let events: Vec<&[u8]> = events.iter().map(Vec::as_slice).collect();
        crate::api::assert_triples_agree(b"", &events, &[b""], reassemble, by_value::reassemble);
        // Invalid UTF-8 in a field neither reader keeps, and in a key.
        for body in [
            &b"data: {\"x\":\"\xff\",\"choices\":[]}\n\n"[..],
            b"data: {\"\xff\":1}\n\n",
            b"data: {\"choices\":[{\"logprobs\":{\"t\":\"\xc3\"}}]}\n\n",
        ] {
            assert_eq!(reassemble(body).document, Err(NOT_JSON));
            assert_eq!(by_value::reassemble(body).document, Err(NOT_JSON));
        }
    }

    /// Chunks that share a template's bytes but not its meaning (an
    /// escape, a quote, a second key, a control character, bytes that are
    /// not UTF-8, a finish reason or usage after the text) read as the
    /// `Value` reader reads them, in any order after any template.
    #[test]
    fn chunks_read_by_their_template_read_as_parsed() {
        let shape = |text: &[u8], after: &[u8]| {
            [
                &br#"data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":""#[..],
                text,
                br#"""#,
                after,
                b"}]}\n\n",
            ]
            .concat()
        };
        let events = [
            shape(b"plain", b"}"),
            shape(b"other text", b"}"),
            shape(b"", b"}"),
            shape(br#"esc\"aped"#, b"}"),
            shape(br#"a","content":"b"#, b"}"),
            shape(b"tab\there", b"}"),
            shape(b"\xff\xfe", b"}"),
            shape(b"caf\xc3\xa9", b"}"),
            shape(b"late", br#"},"finish_reason":"stop""#),
            shape(b"used", br#"},"finish_reason":null"#),
            br#"data: {"id":"c","model":"m","choices":[{"index":1,"delta":{"content":"one"}}]}"#
                .iter()
                .chain(b"\n\n")
                .copied()
                .collect(),
            br#"data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"u"}}],"usage":{"prompt_tokens":1}}"#
                .iter()
                .chain(b"\n\n")
                .copied()
                .collect(),
        ];
        let agree = |events: &[Vec<u8>]| {
            let events: Vec<&[u8]> = events.iter().map(Vec::as_slice).collect();
            let tails: [&[u8]; 2] = [b"", b"data: [DONE]\n\n"];
            crate::api::assert_triples_agree(
                b"",
                &events,
                &tails,
                reassemble,
                by_value::reassemble,
            );
        };
        agree(&events);
        // Chunks that end in an ignored field whose value changes.
        let padded = |text: &[u8], last: &[u8]| {
            [
                &br#"data: {"id":"c","choices":[{"index":0,"delta":{"content":""#[..],
                text,
                br#""},"finish_reason":null}],"#,
                last,
                b"}\n\n",
            ]
            .concat()
        };
        let padded_events = [
            padded(b"a", br#""obfuscation":"x1""#),
            padded(b"b", br#""obfuscation":"""#),
            padded(b"c", br#""obfuscation":"x\"y""#),
            padded(b"d", br#""obfuscation":"x","id":"late""#),
            padded(b"e", b"\"obfuscation\":\"\xff\""),
            padded(b"f", b"\"obfuscation\":\"tab\there\""),
            padded(br#"g","content":"h"#, br#""obfuscation":"x2""#),
            padded(b"i", br#""model":"late""#),
            padded(b"j", br#""obfuscation" : "x3""#),
        ];
        agree(&padded_events);
        // A stream of the common shape, read whole.
        let body: Vec<u8> = (0..3)
            .flat_map(|i| shape(format!("t{i} ").as_bytes(), b"}"))
            .collect();
        let mut completion = Completion::default();
        for event in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let data = event.strip_prefix(b"data: ").expect("a data line");
            completion.event(data).expect("a chunk");
            assert!(completion.template.is_some(), "a template from the first");
        }
        let content = completion.choices[&0].content.clone();
        assert_eq!(content.as_deref(), Some("t0 t1 t2 "));
    }

    /// What a template reads by bytes alone, and what it leaves to the
    /// reader.
    #[test]
    fn a_template_reads_only_the_same_bytes_around_plain_text() {
        let learn = |data: &'static [u8]| {
            let mut chunk = Chunk::default();
            assert!(direct::chunk(data, direct::Kept::default(), &mut chunk));
            let mut template = None;
            Template::learn(&mut template, data, &chunk);
            template
        };
        let t = learn(br#"{"id":"c","choices":[{"index":2,"delta":{"content":"a"}}]}"#)
            .expect("the common shape");
        assert_eq!(t.index, 2);
        assert!(!t.ignored());
        assert_eq!(
            t.text(br#"{"id":"c","choices":[{"index":2,"delta":{"content":"new text"}}]}"#),
            Some("new text")
        );
        for other in [
            &br#"{"id":"d","choices":[{"index":2,"delta":{"content":"x"}}]}"#[..],
            br#"{"id":"c","choices":[{"index":2,"delta":{"content":"x\n"}}]}"#,
            br#"{"id":"c","choices":[{"index":2,"delta":{"content":"x"}}]} "#,
            br#"{"id":"c","choices":[{"index":2,"delta":{"content":"x","content":"y"}}]}"#,
        ] {
            assert_eq!(t.text(other), None, "{}", String::from_utf8_lossy(other));
        }
        let t = learn(br#"{"id":"c","choices":[{"delta":{"content":"a"}}],"obfuscation":"Qz"}"#)
            .expect("the common shape");
        assert!(t.ignored());
        assert_eq!(
            t.text(br#"{"id":"c","choices":[{"delta":{"content":"bc"}}],"obfuscation":"k9J"}"#),
            Some("bc")
        );
        assert_eq!(
            t.text(br#"{"id":"c","choices":[{"delta":{"content":"bc"}}],"obfuscation":"k\"}"#),
            None
        );
        // Not a template: a delta with a finish reason, tool calls, or text
        // with an escape (not read in place), or two choices.
        for data in [
            &br#"{"choices":[{"delta":{"content":"a"},"finish_reason":"stop"}]}"#[..],
            br#"{"choices":[{"delta":{"content":"a","tool_calls":[]}}]}"#,
            br#"{"choices":[{"delta":{"content":"a\"b"}}]}"#,
            br#"{"choices":[{"delta":{"content":"a"}},{"delta":{}}]}"#,
        ] {
            assert!(learn(data).is_none(), "{}", String::from_utf8_lossy(data));
        }
        // The last field is one the reader reads (`model`): no second hole.
        let t = learn(br#"{"choices":[{"delta":{"content":"a"}}],"model":"m"}"#)
            .expect("the common shape");
        assert!(!t.ignored());
    }

    fn read(body: &str) -> Read {
        reassemble(body.as_bytes())
    }

    /// A chunk as servers send it is read by the direct reader and by the
    /// compact reader (not left to `serde_json`), escapes and all.
    #[test]
    fn the_compact_reader_reads_a_chunk() {
        let text = r#"{"id":"c1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"a \"b\"\n"},"finish_reason":null}]}"#;
        let mut head: Option<Chunk<'_>> = None;
        let mut de = super::super::compact::Compact::new(text);
        lenient::fill(&mut de, &mut head).expect("read by the compact reader");
        de.end().expect("nothing after it");
        let mut direct = Chunk::default();
        assert!(
            direct::chunk(text.as_bytes(), direct::Kept::default(), &mut direct),
            "read by the direct reader"
        );
        for head in [head.expect("an object"), direct] {
            let mut completion = Completion::default();
            completion.chunk(head);
            let content = completion
                .choices
                .get(&0)
                .and_then(|c| c.content.as_deref());
            assert_eq!(content, Some("a \"b\"\n"));
            assert_eq!(completion.created, Some(Value::from(1_700_000_000)));
        }
        // What the compact reader leaves to `serde_json`, so does it.
        for text in [r#"{"choices":[],"x":1.5}"#, r#"{"id":"\u0041"}"#, "[1]"] {
            let mut chunk = Chunk::default();
            assert!(
                !direct::chunk(text.as_bytes(), direct::Kept::default(), &mut chunk),
                "{text}"
            );
        }
    }

    #[test]
    fn done_or_every_finish_reason_makes_a_stream_complete() {
        let cut = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n";
        let r = read(cut);
        let doc = r.document.as_ref().expect("readable");
        assert!(!doc.complete);
        assert_eq!(doc.value["choices"][0]["message"]["content"], "Hel");
        assert_eq!(r.complete(), None);

        let finished = format!(
            "{cut}data: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\n"
        );
        assert!(read(&finished).complete().is_some());
        let done = format!("{cut}data: [DONE]\n\n");
        assert!(read(&done).complete().is_some());
        // Two choices, one unfinished: still cut.
        let two = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"},",
            "{\"index\":1,\"delta\":{\"content\":\"x\"}}]}\n\n"
        );
        assert!(read(two).complete().is_none());
    }

    #[test]
    fn unreadable_streams_say_why() {
        for (body, skip) in [
            ("data: nope\n\n", Skip::Malformed),
            ("", Skip::Malformed),
            (
                "data: {\"error\":{\"message\":\"x\"}}\n\n",
                Skip::ErrorEvent,
            ),
        ] {
            let r = read(body);
            let Err(e) = r.document else {
                panic!("{body:?} was readable")
            };
            assert_eq!(e.skip, skip, "{body:?}");
            assert!(e.why.contains("not a chat-completion stream"), "{}", e.why);
        }
    }

    #[test]
    fn usage_of_a_chunk() {
        let u = event_usage::<CompactFirst>(
            br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        );
        assert_eq!(
            u,
            Ok(Some(Usage {
                input: Some(3),
                output: Some(4)
            }))
        );
        assert_eq!(event_usage::<CompactFirst>(br#"{"usage":null}"#), Ok(None));
        assert_eq!(
            event_usage::<CompactFirst>(br#"{"usage":{"prompt_tokens":"3"}}"#),
            Err(Skip::WrongShape)
        );
        assert_eq!(
            event_usage::<CompactFirst>(br#"{"usage":{"#),
            Err(Skip::Malformed)
        );
    }

    #[test]
    fn the_refusal_reassembles_to_its_json() {
        let (json, sse) = refusal("sorry", 7);
        let plain: Value = serde_json::from_slice(&json).expect("json");
        let read = reassemble(&sse);
        let streamed = read.complete().expect("complete");
        assert_eq!(
            streamed["choices"][0]["message"],
            plain["choices"][0]["message"]
        );
        assert_eq!(streamed["choices"][0]["finish_reason"], "stop");
    }
}
