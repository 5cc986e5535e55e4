//! Answer comparison for shadows: capture a response body as it streams,
//! turn it into one JSON document, and compare two documents at JSON
//! pointers.
//!
//! The capture never delays or copies the body: frames are kept as `Bytes`
//! clones (reference counts) up to a byte cap, and all parsing happens once,
//! in [`Capture::compared`], after the body has ended. Past the cap the frames
//! are released at once, so an oversized answer costs no memory; it is then
//! not comparable.
//!
//! A streamed answer is first folded back into its API's non-streamed
//! document by [`crate::api::reassemble`] (a chat completion, the Responses
//! `response`, the Anthropic `message`), so a streaming agent can be
//! compared with a non-streaming one, field for field. A stream that ended
//! before its API's final event is rebuilt but marked incomplete, and is
//! never compared as a whole answer. Deciding that a body was truncated by
//! a transport error is the caller's job: it should not read such a body.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use serde_json::Value;

use super::reach::{Picked, Reach, parse_index};
use crate::api::{self, Api, Document, Read, Skip, Unreadable};
use crate::ascii::starts_with_ignore_case;

/// Bodies larger than this are not compared (their frames are released).
pub const DEFAULT_CAP: usize = 1024 * 1024;

/// How the captured body will be read at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Sse,
    /// Neither JSON nor SSE: nothing is kept, `finish` gives `None`.
    Other,
}

/// A response body collected as it streams, for comparison at its end.
#[derive(Debug)]
pub struct Capture {
    format: Format,
    /// Reference-counted frames, in order; emptied when the cap is passed.
    frames: Vec<Bytes>,
    /// Bytes seen so far (kept or not).
    len: usize,
    cap: usize,
    overflowed: bool,
    /// What a JSON body is parsed for (`None`: all of it).
    reach: Option<Arc<Reach>>,
}

impl Capture {
    /// A capture for a response with this `Content-Type`, capped at
    /// [`DEFAULT_CAP`].
    pub fn for_content_type(content_type: Option<&HeaderValue>) -> Self {
        Self::with_cap(content_type, DEFAULT_CAP)
    }

    /// `text/event-stream` is read as SSE; `application/json`, any `+json`
    /// type, or no content type at all, as JSON; anything else is not kept.
    pub fn with_cap(content_type: Option<&HeaderValue>, cap: usize) -> Self {
        let format = match content_type.map(|v| v.as_bytes().trim_ascii()) {
            None => Format::Json,
            Some(ct) if starts_with_ignore_case(ct, b"text/event-stream") => Format::Sse,
            Some(ct)
                if starts_with_ignore_case(ct, b"application/json")
                    || contains_ignore_case(ct, b"+json") =>
            {
                Format::Json
            }
            Some(_) => Format::Other,
        };
        Self {
            format,
            frames: Vec::new(),
            len: 0,
            cap,
            overflowed: false,
            reach: None,
        }
    }

    /// Read a JSON body, in [`Capture::compared`], only for the values at
    /// `reach`'s pointers (see [`Picked`]): what a compare at those
    /// pointers needs. A stream is still folded back whole.
    pub fn reaching(mut self, reach: Arc<Reach>) -> Self {
        self.reach = Some(reach);
        self
    }

    /// See one data frame on its way to the client. Cheap: a reference count
    /// and a length check.
    #[inline]
    pub fn observe(&mut self, frame: &Bytes) {
        if self.overflowed || self.format == Format::Other || frame.is_empty() {
            return;
        }
        self.len = self.len.saturating_add(frame.len());
        if self.len > self.cap {
            self.overflowed = true;
            // Release the frames now, not at `finish`: a slow stream must not
            // pin a capped amount of memory for its whole life.
            self.frames = Vec::new();
            return;
        }
        self.frames.push(frame.clone());
    }

    /// The body went past the cap: it will not be compared.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// The response as one JSON document, or `None` when it is not
    /// comparable (overflowed, not JSON, a broken stream). A stream is read
    /// as the API its first event names; an incomplete one still gives
    /// what arrived (see [`Capture::compared`] for the completeness).
    pub fn finish(self) -> Option<Value> {
        self.read(None).document.ok().map(|d| d.value)
    }

    /// The response read whole as `api`'s document (`None`: a JSON body as
    /// it is, a stream as its first event says), with whether it is whole.
    fn read(self, api: Option<Api>) -> Read {
        const OVERFLOWED: Unreadable = Unreadable {
            skip: Skip::Malformed,
            why: "the response was larger than the compare cap",
        };
        const OTHER: Unreadable = Unreadable {
            skip: Skip::Malformed,
            why: "the response is neither JSON nor an event stream",
        };
        const NOT_JSON: Unreadable = Unreadable {
            skip: Skip::Malformed,
            why: "the body is not JSON",
        };
        let unreadable = |why| Read {
            api: api.unwrap_or(Api::Chat),
            document: Err(why),
            unknown_events: 0,
        };
        if self.overflowed {
            return unreadable(OVERFLOWED);
        }
        let body = self.body();
        match self.format {
            Format::Json => match serde_json::from_slice::<Value>(&body) {
                Ok(value) => Read {
                    api: api.unwrap_or(Api::Chat),
                    document: Ok(Document {
                        value,
                        complete: true,
                    }),
                    unknown_events: 0,
                },
                Err(_) => unreadable(NOT_JSON),
            },
            Format::Sse => api::reassemble(api, &body),
            Format::Other => unreadable(OTHER),
        }
    }
}

/// An answer as a compare reads it.
#[derive(Debug)]
pub enum Comparable {
    /// The whole document: a stream folded back, or a JSON body read with
    /// no [`Reach`].
    Document(Value),
    /// Only the values at the compare pointers: a JSON body read through a
    /// [`Reach`].
    Picked(Picked),
}

/// Where a compare finds a pointer's value.
pub trait Find {
    /// What `pointer` finds, as `Value::pointer` finds it in the document.
    fn find(&self, pointer: &str) -> Option<&Value>;
}

impl Find for Value {
    fn find(&self, pointer: &str) -> Option<&Value> {
        find(self, pointer)
    }
}

impl Find for Picked {
    fn find(&self, pointer: &str) -> Option<&Value> {
        self.at(pointer)
    }
}

impl Find for Comparable {
    fn find(&self, pointer: &str) -> Option<&Value> {
        match self {
            Comparable::Document(doc) => doc.find(pointer),
            Comparable::Picked(picked) => picked.find(pointer),
        }
    }
}

/// What [`Capture::compared`] read.
#[derive(Debug)]
pub enum Compared {
    /// A whole answer.
    Whole(Comparable),
    /// A stream cut before its API's final event: nothing whole to compare.
    Partial,
    /// Not readable (overflowed, not JSON, a broken stream).
    Unreadable,
}

impl Capture {
    /// The response as a compare reads it, and what to count as skipped on
    /// the way (as [`Read::skips`] gives). A JSON body read through a
    /// [`Reach`] keeps only the values at its pointers.
    pub fn compared(self, api: Option<Api>) -> (Compared, Vec<(Skip, u64)>) {
        if let (Format::Json, false, Some(reach)) = (self.format, self.overflowed, &self.reach) {
            return match Picked::read(reach, &self.body()) {
                Ok(picked) => (Compared::Whole(Comparable::Picked(picked)), Vec::new()),
                Err(_) => (Compared::Unreadable, vec![(Skip::Malformed, 1)]),
            };
        }
        let read = self.read(api);
        let skips = read.skips().collect();
        let compared = match read.document {
            Ok(doc) if doc.complete => Compared::Whole(Comparable::Document(doc.value)),
            Ok(_) => Compared::Partial,
            Err(_) => Compared::Unreadable,
        };
        (compared, skips)
    }

    /// The frames as one body: borrowed when there is one frame.
    fn body(&self) -> Cow<'_, [u8]> {
        match self.frames.as_slice() {
            [] => Cow::Borrowed(&[]),
            [one] => Cow::Borrowed(one.as_ref()),
            many => Cow::Owned(many.concat()),
        }
    }
}

/// Read a whole SSE body of chat-completion chunks into the equivalent
/// non-streamed `chat.completion` (see [`crate::api::chat`]).
pub fn reassemble_sse(body: &[u8]) -> Option<Value> {
    api::chat::reassemble(body).document.ok().map(|d| d.value)
}

/// The outcome of comparing one pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointerMatch {
    Match,
    Mismatch,
}

/// Compare `primary` and `shadow` at each JSON pointer (RFC 6901), in order.
///
/// * the value absent on both sides: [`PointerMatch::Match`];
/// * absent on one side only: [`PointerMatch::Mismatch`];
/// * present on both: `Match` when equal as JSON values ([`json_eq`]).
///
/// A `None` document (the body was not comparable: overflowed, not JSON, a
/// broken stream) makes every pointer a `Mismatch`, even when both are
/// `None`: a match must be evidence that the answers agree, and a shadow
/// that returns garbage should lower the match share, not vanish from it.
pub fn compare<'a, D: Find + ?Sized>(
    pointers: &'a [String],
    primary: Option<&'a D>,
    shadow: Option<&'a D>,
) -> impl Iterator<Item = (&'a str, PointerMatch)> + 'a {
    pointers.iter().map(move |pointer| {
        let verdict = match (primary, shadow) {
            (Some(primary), Some(shadow)) => compare_at(pointer, primary, shadow),
            _ => PointerMatch::Mismatch,
        };
        (pointer.as_str(), verdict)
    })
}

/// `doc.pointer(pointer)`, without its two string copies per token when
/// no token is escaped (no `~`): the usual case, at two lookups per
/// pointer per mirrored request.
pub fn find<'v>(doc: &'v Value, pointer: &str) -> Option<&'v Value> {
    if pointer.is_empty() || pointer.contains('~') {
        return doc.pointer(pointer);
    }
    pointer
        .strip_prefix('/')?
        .split('/')
        .try_fold(doc, |at, token| match at {
            Value::Object(map) => map.get(token),
            Value::Array(list) => parse_index(token).and_then(|i| list.get(i)),
            _ => None,
        })
}

/// Compare two comparable documents at one pointer.
pub fn compare_at<D: Find + ?Sized>(pointer: &str, primary: &D, shadow: &D) -> PointerMatch {
    match (primary.find(pointer), shadow.find(pointer)) {
        (None, None) => PointerMatch::Match,
        (Some(a), Some(b)) if json_eq(a, b) => PointerMatch::Match,
        _ => PointerMatch::Mismatch,
    }
}

/// JSON value equality: numbers by value (`1` equals `1.0`), object keys in
/// any order, arrays in order.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_eq(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, a)| y.get(key).is_some_and(|b| json_eq(a, b)))
        }
        _ => a == b,
    }
}

fn numbers_eq(x: &serde_json::Number, y: &serde_json::Number) -> bool {
    if let (Some(a), Some(b)) = (x.as_i64(), y.as_i64()) {
        return a == b;
    }
    if let (Some(a), Some(b)) = (x.as_u64(), y.as_u64()) {
        return a == b;
    }
    if x.is_f64() || y.is_f64() {
        return match (x.as_f64(), y.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
    }
    // A negative integer against one above i64::MAX.
    false
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests;
