//! A serde `Deserializer` for the plain JSON that model servers send, tried
//! before `serde_json`, which reads whatever this one does not.
//!
//! A shadow that compares a streamed answer reads every event of both
//! streams, and that was two thirds of what such a shadow cost. Through
//! `serde_json`, an event of a chat stream (170 bytes) cost ~4,400
//! instructions; a parse that only checks and drops each value, ~3,500.
//! Most of it is `serde_json`'s tokenizer (a peek around every token, a
//! string scan set up for long strings), and model servers' JSON is simple:
//! short strings, small integers. Through this reader the same event costs
//! ~3,300, of which the strings are a fifth, eight bytes at a time
//! (`ascii::json_escape_at`); the rest is the visitors above it.
//!
//! This reader knows less, and stops at anything else (`Err(Other)`): the
//! caller then parses the input again with `serde_json`, so what either
//! accepts reads the same, and what `serde_json` refuses stays refused.
//! It reads:
//! - objects, arrays, `null`, `true` and `false`, with any whitespace;
//! - strings of valid UTF-8 (the caller has a `&str`) without control
//!   characters, with the escapes `\" \\ \/ \b \f \n \r \t` but not `\u`;
//! - non-negative integers that fit a `u64`, without a fraction or an
//!   exponent.
//!
//! A reader that knows its document's shape can also read the tokens
//! itself ([`Compact::object`], [`Compact::array`], [`Compact::skip`]):
//! `api::chat` reads its stream chunks so, about 500 instructions a chunk
//! fewer than through the visitors.
//!
//! On what it reads, it makes the calls to the visitor that `serde_json`
//! makes on the same input (a string without escapes is borrowed, one with
//! escapes is handed over unescaped, an integer is `visit_u64`, `null` is
//! `visit_unit`), so a `Value`, a [`super::lenient::Shape`] or a pruned
//! document built through it is the one `serde_json` builds. The tests and
//! the `shadow_compare` and `usage_chat` fuzz targets hold it to
//! `serde_json`.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::ascii::json_escape_at;

/// The input is not in the subset this reader reads (or is not JSON):
/// parse it with `serde_json`.
#[derive(Debug)]
pub struct Other;

impl fmt::Display for Other {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not in the compact reader's subset of JSON")
    }
}

impl std::error::Error for Other {}

impl de::Error for Other {
    fn custom<T: fmt::Display>(_: T) -> Other {
        Other
    }
}

/// How a whole JSON document is read into a `T`.
pub trait Parse {
    fn parse<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, serde_json::Error>;
}

/// Through [`Compact`] when the document is in its subset, else through
/// `serde_json`, whose error (if any) is the answer: the hot path.
pub struct CompactFirst;

/// Through `serde_json` alone: what [`CompactFirst`] must agree with.
pub struct SerdeOnly;

impl Parse for CompactFirst {
    fn parse<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, serde_json::Error> {
        if let Ok(text) = std::str::from_utf8(bytes) {
            let mut de = Compact::new(text);
            if let Ok(value) = T::deserialize(&mut de)
                && de.end().is_ok()
            {
                return Ok(value);
            }
        }
        serde_json::from_slice(bytes)
    }
}

impl Parse for SerdeOnly {
    fn parse<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Nesting deeper than this is left to `serde_json` (which refuses past
/// 128), so the reader's recursion stays shallow.
const MAX_DEPTH: u32 = 64;

/// Reads one value from `text` (then [`Compact::end`]): `&mut Compact` is
/// the deserializer, as `&mut serde_json::Deserializer` is.
pub struct Compact<'de> {
    text: &'de str,
    at: usize,
    depth: u32,
    /// A string with escapes, unescaped.
    scratch: String,
}

/// A string read: where it lies in the input, or in the scratch buffer.
enum Text<'de> {
    Borrowed(&'de str),
    Scratch,
}

impl<'de> Compact<'de> {
    pub fn new(text: &'de str) -> Compact<'de> {
        Compact {
            text,
            at: 0,
            depth: 0,
            scratch: String::new(),
        }
    }

    /// After the value: only whitespace may follow, as
    /// `serde_json::Deserializer::end` demands.
    pub fn end(&mut self) -> Result<(), Other> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(Other),
        }
    }

    /// The next byte that is not whitespace, left unread.
    #[inline]
    fn peek(&mut self) -> Option<u8> {
        let bytes = self.text.as_bytes();
        while let Some(&b) = bytes.get(self.at) {
            if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(b);
            }
            self.at += 1;
        }
        None
    }

    /// The rest of a string whose opening quote was read: borrowed from the
    /// input, or unescaped into the scratch buffer when it has escapes.
    /// Always inlined: a call's register saves and restores were ~13 of the
    /// ~60 instructions a short string cost outside its scan, and a chunk
    /// has a dozen strings.
    #[inline(always)]
    fn string(&mut self) -> Result<Text<'de>, Other> {
        let start = self.at;
        let rest = self.text.as_bytes().get(start..).unwrap_or_default();
        let len = json_escape_at(rest);
        // Most strings model servers send have no escape: one scan, and
        // the slice ends at a `"`, an ASCII byte, so at a char boundary.
        if rest.get(len) == Some(&b'"') {
            self.at = start + len + 1;
            return self
                .text
                .get(start..start + len)
                .map(Text::Borrowed)
                .ok_or(Other);
        }
        self.escaped_string(start + len)
    }

    /// The rest of a string from its first escape (or control character,
    /// or the end of the input) at `at`, unescaped into the scratch buffer.
    #[inline(never)]
    fn escaped_string(&mut self, mut at: usize) -> Result<Text<'de>, Other> {
        let bytes = self.text.as_bytes();
        self.scratch.clear();
        self.scratch
            .push_str(self.text.get(self.at..at).ok_or(Other)?);
        loop {
            let unescaped = match (bytes.get(at), bytes.get(at + 1)) {
                (Some(b'"'), _) => {
                    self.at = at + 1;
                    return Ok(Text::Scratch);
                }
                (Some(b'\\'), Some(b'"')) => '"',
                (Some(b'\\'), Some(b'\\')) => '\\',
                (Some(b'\\'), Some(b'/')) => '/',
                (Some(b'\\'), Some(b'b')) => '\u{8}',
                (Some(b'\\'), Some(b'f')) => '\u{c}',
                (Some(b'\\'), Some(b'n')) => '\n',
                (Some(b'\\'), Some(b'r')) => '\r',
                (Some(b'\\'), Some(b't')) => '\t',
                // `\u` (surrogates are serde_json's to judge), not an escape
                // at all, a control character, or the input ends inside the
                // string.
                _ => return Err(Other),
            };
            self.scratch.push(unescaped);
            let from = at + 2;
            at = from + json_escape_at(bytes.get(from..).unwrap_or_default());
            self.scratch.push_str(self.text.get(from..at).ok_or(Other)?);
        }
    }

    /// An integer whose first digit is next.
    #[inline]
    fn unsigned(&mut self) -> Result<u64, Other> {
        let bytes = self.text.as_bytes();
        let mut n: u64 = 0;
        let start = self.at;
        while let Some(&b) = bytes.get(self.at) {
            if !b.is_ascii_digit() {
                break;
            }
            n = n
                .checked_mul(10)
                .ok_or(Other)?
                .checked_add(u64::from(b - b'0'))
                .ok_or(Other)?;
            self.at += 1;
        }
        match bytes.get(self.at) {
            // A fraction or an exponent: a float, serde_json's to read.
            Some(b'.' | b'e' | b'E') => Err(Other),
            // A leading zero is not JSON.
            _ if bytes.get(start) == Some(&b'0') && self.at - start > 1 => Err(Other),
            _ => Ok(n),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Other> {
        let end = self.at + word.len();
        if self.text.as_bytes().get(self.at..end) == Some(word) {
            self.at = end;
            Ok(())
        } else {
            Err(Other)
        }
    }

    /// Past a container's opening byte: its items.
    fn open(&mut self) -> Result<Items<'_, 'de>, Other> {
        self.at += 1;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Other);
        }
        Ok(Items {
            de: self,
            first: true,
        })
    }

    /// The byte that closes a container, after its visitor is done.
    fn close(&mut self, byte: u8) -> Result<(), Other> {
        self.depth -= 1;
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(Other)
        }
    }

    fn visit_text<V: Visitor<'de>>(
        &mut self,
        text: Text<'de>,
        visitor: V,
    ) -> Result<V::Value, Other> {
        match text {
            Text::Borrowed(s) => visitor.visit_borrowed_str(s),
            Text::Scratch => visitor.visit_str(&self.scratch),
        }
    }
}

/// What [`Compact::entry`] found next in an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    /// A key the caller's lookup numbered; its `:` is read, its value is
    /// next.
    Field(u8),
    /// Any other key; its value is next.
    Other,
    /// The object's `}`, read.
    End,
}

/// Reading straight off the tokens, for a reader that knows its document's
/// shape (`api::chat`'s chunks): no visitor call per key and value. The
/// input is checked as the deserializer checks it, and `Err(Other)` means
/// what it means there. A value the caller does not read itself it hands
/// to the deserializer (`&mut Compact`) or to [`Compact::skip`].
impl<'de> Compact<'de> {
    /// The first byte of the next value, whitespace skipped, left unread.
    pub fn next_byte(&mut self) -> Option<u8> {
        self.peek()
    }

    /// The object that [`Compact::next_byte`] showed (`{`): the value of
    /// each key `lookup` numbers is read by `field`, given that number;
    /// any other key's value is skipped. A key given twice is read twice.
    #[inline]
    pub fn object(
        &mut self,
        lookup: impl Fn(&str) -> Option<u8>,
        mut field: impl FnMut(&mut Self, u8) -> Result<(), Other>,
    ) -> Result<(), Other> {
        self.open()?;
        let mut first = true;
        loop {
            match self.entry(first, &lookup)? {
                Entry::End => return Ok(()),
                Entry::Field(n) => field(self, n)?,
                Entry::Other => self.skip()?,
            }
            first = false;
        }
    }

    /// The array that [`Compact::next_byte`] showed (`[`): each element
    /// read by `element`.
    #[inline]
    pub fn array(
        &mut self,
        mut element: impl FnMut(&mut Self) -> Result<(), Other>,
    ) -> Result<(), Other> {
        self.open()?;
        let mut first = true;
        while self.element(first)? {
            element(self)?;
            first = false;
        }
        Ok(())
    }

    /// The next entry of the object entered: its key numbered by `lookup`
    /// and its `:` read, or the object's end.
    #[inline]
    fn entry(&mut self, first: bool, lookup: impl Fn(&str) -> Option<u8>) -> Result<Entry, Other> {
        match self.peek() {
            Some(b'}') => {
                self.at += 1;
                self.depth -= 1;
                return Ok(Entry::End);
            }
            Some(b',') if !first => {
                self.at += 1;
                if self.peek() != Some(b'"') {
                    return Err(Other);
                }
            }
            Some(b'"') if first => {}
            _ => return Err(Other),
        }
        self.at += 1;
        let key = match self.string()? {
            Text::Borrowed(key) => key,
            Text::Scratch => self.scratch.as_str(),
        };
        let found = lookup(key);
        if self.peek() != Some(b':') {
            return Err(Other);
        }
        self.at += 1;
        Ok(found.map_or(Entry::Other, Entry::Field))
    }

    /// Whether the array entered has another element (its `,` read), or
    /// ends here (its `]` read).
    #[inline]
    fn element(&mut self, first: bool) -> Result<bool, Other> {
        match self.peek() {
            Some(b']') => {
                self.at += 1;
                self.depth -= 1;
                Ok(false)
            }
            Some(b',') if !first => {
                self.at += 1;
                Ok(true)
            }
            Some(_) if first => Ok(true),
            _ => Err(Other),
        }
    }

    /// The string that [`Compact::next_byte`] showed (`"`), borrowed where
    /// it has no escapes.
    pub fn text(&mut self) -> Result<Cow<'de, str>, Other> {
        self.at += 1;
        Ok(match self.string()? {
            Text::Borrowed(s) => Cow::Borrowed(s),
            Text::Scratch => Cow::Owned(self.scratch.clone()),
        })
    }

    /// The non-negative integer that [`Compact::next_byte`] showed (a digit).
    pub fn integer(&mut self) -> Result<u64, Other> {
        self.unsigned()
    }

    /// The `null` that [`Compact::next_byte`] showed (`n`).
    pub fn null(&mut self) -> Result<(), Other> {
        self.literal(b"null")
    }

    /// The next value, checked as the deserializer checks it and dropped.
    /// `IgnoredAny` is enough here, unlike on `serde_json`: this reader
    /// checks every string, number and bracket it passes, whatever the
    /// visitor wants of them. (A hand-written skip, with no visitor call
    /// per token, measured the same: LLVM inlines the visitors.)
    pub fn skip(&mut self) -> Result<(), Other> {
        de::IgnoredAny::deserialize(self).map(drop)
    }
}

impl<'de> de::Deserializer<'de> for &mut Compact<'de> {
    type Error = Other;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Other> {
        match self.peek() {
            Some(b'"') => {
                self.at += 1;
                let text = self.string()?;
                self.visit_text(text, visitor)
            }
            Some(b'{') => {
                let value = visitor.visit_map(self.open()?)?;
                self.close(b'}')?;
                Ok(value)
            }
            Some(b'[') => {
                let value = visitor.visit_seq(self.open()?)?;
                self.close(b']')?;
                Ok(value)
            }
            Some(b'0'..=b'9') => {
                let n = self.unsigned()?;
                visitor.visit_u64(n)
            }
            Some(b'n') => {
                self.literal(b"null")?;
                visitor.visit_unit()
            }
            Some(b't') => {
                self.literal(b"true")?;
                visitor.visit_bool(true)
            }
            Some(b'f') => {
                self.literal(b"false")?;
                visitor.visit_bool(false)
            }
            _ => Err(Other),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Other> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Other> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

/// An object's entries or an array's elements, after its `{` or `[`.
struct Items<'a, 'de> {
    de: &'a mut Compact<'de>,
    first: bool,
}

impl<'de> MapAccess<'de> for Items<'_, 'de> {
    type Error = Other;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Other> {
        match self.de.peek() {
            Some(b'}') => return Ok(None),
            Some(b',') if !self.first => {
                self.de.at += 1;
                if self.de.peek() != Some(b'"') {
                    return Err(Other);
                }
            }
            Some(b'"') if self.first => {}
            _ => return Err(Other),
        }
        self.first = false;
        self.de.at += 1;
        seed.deserialize(Key(&mut *self.de)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Other> {
        if self.de.peek() != Some(b':') {
            return Err(Other);
        }
        self.de.at += 1;
        seed.deserialize(&mut *self.de)
    }
}

impl<'de> SeqAccess<'de> for Items<'_, 'de> {
    type Error = Other;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Other> {
        match self.de.peek() {
            Some(b']') => return Ok(None),
            Some(b',') if !self.first => self.de.at += 1,
            Some(_) if self.first => {}
            _ => return Err(Other),
        }
        self.first = false;
        // `[1,]`: the element after a comma must be a value, and a `]` is
        // not one, so `deserialize_any` refuses it.
        seed.deserialize(&mut *self.de).map(Some)
    }
}

/// An object's key, whose opening quote was read: a string, whatever the
/// seed asks for (as `serde_json` reads keys).
struct Key<'a, 'de>(&'a mut Compact<'de>);

impl<'de> de::Deserializer<'de> for Key<'_, 'de> {
    type Error = Other;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Other> {
        let text = self.0.string()?;
        self.0.visit_text(text, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::Value;

    use super::*;

    fn read(text: &str) -> Result<Value, Other> {
        let mut de = Compact::new(text);
        let value = Value::deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }

    /// What the reader is for: the events and answers servers send are read
    /// here, not handed on to `serde_json`.
    #[test]
    fn reads_what_servers_send() {
        for text in [
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi\n\"there\""}}"#,
            r#"{"choices":[{"message":{"content":"Grüße\t世界 🙂 \/ \\"}}],"usage":{"prompt_tokens":24},"ok":true,"no":false}"#,
            " { \"a\" : [ 1 , 2 , { } , [ ] ] ,\n\"b\":\r\n\"\" } ",
            "[]",
            "0",
            "18446744073709551615",
        ] {
            let whole: Value = serde_json::from_str(text).expect("JSON");
            assert_eq!(read(text).ok(), Some(whole), "{text}");
        }
    }

    /// What it does not read, `serde_json` does (or refuses): nothing here
    /// may read as anything at all.
    #[test]
    fn leaves_the_rest_to_serde_json() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        for text in [
            // Valid JSON outside the subset.
            r#"{"a":-1}"#,
            r#"{"a":1.5}"#,
            r#"{"a":1e3}"#,
            r#"{"a":"\u00e9"}"#,
            "18446744073709551616",
            deep.as_str(),
            // Not JSON.
            "",
            " ",
            r#"{"a":1,}"#,
            "[1,]",
            "[,1]",
            r#"{,"a":1}"#,
            r#"{"a" 1}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":01}"#,
            r#"{"a":"x\qy"}"#,
            "{\"a\":\"line\nbreak\"}",
            r#"{"a":"open"#,
            r#"{"a":nul}"#,
            r#"{"a":1}}"#,
            r#"{"a":1} x"#,
            "[1 2]",
            "{1:2}",
        ] {
            assert!(read(text).is_err(), "{text}");
        }
    }

    /// A key given twice keeps its last value, as `serde_json` keeps it.
    #[test]
    fn a_repeated_key_reads_as_serde_json_reads_it() {
        let text = r#"{"a":1,"a":{"b":"x\"y"},"c":[null]}"#;
        let whole: Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(read(text).ok(), Some(whole));
    }
}
