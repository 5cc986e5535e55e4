//! Canonical JSON: one byte string for every way of writing the same JSON
//! value, so the cache key ([`super::key`]) does not change with key order,
//! whitespace or escaping. Also what `deterministic_only` reads the
//! temperature from ([`super::bypass`]).
//!
//! A body that is valid JSON (whatever its content type) is re-serialised
//! canonically; any other body is keyed by its raw bytes. Canonical JSON:
//!
//! * no insignificant whitespace;
//! * object members sorted by the **UTF-8 bytes** of their decoded names
//!   (not UTF-16 code units as RFC 8785 does); members with a duplicate
//!   name keep their relative order, since upstreams disagree on which
//!   duplicate wins;
//! * strings decoded (escapes and surrogate pairs resolved) then re-encoded
//!   one way: `"` and `\` escaped, `\b \f \n \r \t` short forms, other
//!   control characters as `\u00xx` (lowercase hex), everything else,
//!   `/` and non-ASCII included, as literal UTF-8. So `"\u00e9"` and `"é"`,
//!   or `"\/"` and `"/"`, give the same bytes. A lone surrogate is not
//!   valid Unicode: such a body is keyed raw;
//! * numbers copied exactly as written, after checking the JSON number
//!   grammar: `1`, `1.0` and `1e0` differ, and a 40-digit integer keeps
//!   all its digits (serde_json without `arbitrary_precision` would round);
//! * `true`, `false`, `null` as is.
//!
//! Containers nest at most [`MAX_DEPTH`] deep; deeper input is keyed raw, so
//! hostile input cannot overflow the stack.
//!
//! The deps and `set_json` tables come from the config as
//! `serde_json::Value`: same rules, numbers as serde_json prints them. They
//! are walked without recursion.
//!

use std::borrow::Cow;

use serde_json::{Map, Value};

/// Deepest container nesting a body may have and still be canonicalised.
pub const MAX_DEPTH: usize = 128;

/// Writes a JSON string's decoded bytes in the one canonical escaping.
fn write_escaped(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..0x20 => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// Canonical JSON of a config table, walked with an explicit stack (a
/// config value nested arbitrarily deep cannot overflow ours).
pub(super) fn write_map(out: &mut Vec<u8>, map: &Map<String, Value>) {
    enum Step<'v> {
        Value(&'v Value),
        Map(&'v Map<String, Value>),
        Key(&'v str),
        Byte(u8),
    }
    let mut stack = vec![Step::Map(map)];
    while let Some(step) = stack.pop() {
        match step {
            Step::Byte(b) => out.push(b),
            Step::Key(k) => {
                write_escaped(out, k.as_bytes());
                out.push(b':');
            }
            Step::Value(Value::Null) => out.extend_from_slice(b"null"),
            Step::Value(Value::Bool(true)) => out.extend_from_slice(b"true"),
            Step::Value(Value::Bool(false)) => out.extend_from_slice(b"false"),
            Step::Value(Value::Number(n)) => out.extend_from_slice(n.to_string().as_bytes()),
            Step::Value(Value::String(s)) => write_escaped(out, s.as_bytes()),
            Step::Value(Value::Array(items)) => {
                out.push(b'[');
                stack.push(Step::Byte(b']'));
                for (i, item) in items.iter().enumerate().rev() {
                    stack.push(Step::Value(item));
                    if i > 0 {
                        stack.push(Step::Byte(b','));
                    }
                }
            }
            Step::Value(Value::Object(m)) | Step::Map(m) => {
                out.push(b'{');
                stack.push(Step::Byte(b'}'));
                let mut members: Vec<(&String, &Value)> = m.iter().collect();
                members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                for (i, (k, v)) in members.into_iter().enumerate().rev() {
                    stack.push(Step::Value(v));
                    stack.push(Step::Key(k));
                    if i > 0 {
                        stack.push(Step::Byte(b','));
                    }
                }
            }
        }
    }
}

/// The body is not canonical JSON (invalid, too deep, lone surrogate).
struct NotJson;

/// A canonicalised body, with what the bypass check needs from it.
pub(super) struct Canonical {
    pub(super) out: Vec<u8>,
    /// The canonical bytes of the top-level object's last `temperature`
    /// member (the one serde_json-based upstreams keep), if any.
    pub(super) temperature: Option<Vec<u8>>,
}

/// The canonical form of a JSON body as the key encodes it (see the module
/// docs), or `None` when the body is keyed raw. Public for the fuzzers and
/// tools; the key itself never calls it twice.
pub fn canonical_json_bytes(body: &[u8]) -> Option<Vec<u8>> {
    canonical_json(body).map(|c| c.out)
}

pub(super) fn canonical_json(body: &[u8]) -> Option<Canonical> {
    // Valid UTF-8 up front: the walker then copies string bytes verbatim.
    std::str::from_utf8(body).ok()?;
    let mut p = Canon {
        src: body,
        pos: 0,
        out: Vec::with_capacity(body.len()),
        temperature: None,
    };
    p.value(0).ok()?;
    p.ws();
    if p.pos != body.len() {
        return None;
    }
    Some(Canonical {
        out: p.out,
        temperature: p.temperature,
    })
}

/// A minimal JSON walker that writes the canonical form as it parses.
/// Recursion is bounded by [`MAX_DEPTH`].
struct Canon<'a> {
    src: &'a [u8],
    pos: usize,
    out: Vec<u8>,
    temperature: Option<Vec<u8>>,
}

impl<'a> Canon<'a> {
    fn peek(&self) -> Result<u8, NotJson> {
        self.src.get(self.pos).copied().ok_or(NotJson)
    }

    fn next(&mut self) -> Result<u8, NotJson> {
        let b = self.peek()?;
        self.pos += 1;
        Ok(b)
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.src.get(self.pos) {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), NotJson> {
        self.ws();
        match self.peek()? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => {
                let s = self.string()?;
                write_escaped(&mut self.out, &s);
                Ok(())
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => {
                let start = self.pos;
                self.number()?;
                self.out.extend_from_slice(&self.src[start..self.pos]);
                Ok(())
            }
            _ => Err(NotJson),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), NotJson> {
        if !self.src[self.pos..].starts_with(word) {
            return Err(NotJson);
        }
        self.pos += word.len();
        self.out.extend_from_slice(word);
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.src.get(self.pos) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<(), NotJson> {
        if self.peek()? == b'-' {
            self.pos += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return Err(NotJson),
        }
        if let Some(b'.') = self.src.get(self.pos) {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(NotJson);
            }
        }
        if let Some(b'e' | b'E') = self.src.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.src.get(self.pos) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(NotJson);
            }
        }
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, NotJson> {
        let mut n = 0;
        for _ in 0..4 {
            let d = char::from(self.next()?).to_digit(16).ok_or(NotJson)?;
            n = n * 16 + d;
        }
        Ok(n)
    }

    /// Parses a string and returns its decoded UTF-8 bytes, borrowed from
    /// the input when it has no escapes (the common case).
    fn string(&mut self) -> Result<Cow<'a, [u8]>, NotJson> {
        if self.next()? != b'"' {
            return Err(NotJson);
        }
        let src = self.src;
        let start = self.pos;
        let plain = src[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .ok_or(NotJson)?;
        if src[start + plain] == b'"' {
            self.pos = start + plain + 1;
            return Ok(Cow::Borrowed(&src[start..start + plain]));
        }
        self.pos = start + plain;
        let mut s = src[start..start + plain].to_vec();
        loop {
            match self.next()? {
                b'"' => return Ok(Cow::Owned(s)),
                b'\\' => {
                    let c = match self.next()? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = match hi {
                                0xD800..=0xDBFF => {
                                    if self.next()? != b'\\' || self.next()? != b'u' {
                                        return Err(NotJson);
                                    }
                                    let lo = self.hex4()?;
                                    if !(0xDC00..=0xDFFF).contains(&lo) {
                                        return Err(NotJson);
                                    }
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                }
                                _ => hi,
                            };
                            // A lone low surrogate is rejected here.
                            char::from_u32(cp).ok_or(NotJson)?
                        }
                        _ => return Err(NotJson),
                    };
                    let mut buf = [0; 4];
                    s.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                0..0x20 => return Err(NotJson),
                b => s.push(b),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), NotJson> {
        if depth > MAX_DEPTH {
            return Err(NotJson);
        }
        self.pos += 1; // '['
        self.out.push(b'[');
        self.ws();
        if self.peek()? == b']' {
            self.pos += 1;
            self.out.push(b']');
            return Ok(());
        }
        loop {
            self.value(depth)?;
            self.ws();
            match self.next()? {
                b',' => self.out.push(b','),
                b']' => {
                    self.out.push(b']');
                    return Ok(());
                }
                _ => return Err(NotJson),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), NotJson> {
        if depth > MAX_DEPTH {
            return Err(NotJson);
        }
        self.pos += 1; // '{'
        // Members are written to the tail of `out` as they come, then the
        // tail is taken off and rewritten in sorted order.
        let start = self.out.len();
        let mut members: Vec<(Cow<'a, [u8]>, std::ops::Range<usize>)> = Vec::new();
        self.ws();
        if self.peek()? == b'}' {
            self.pos += 1;
            self.out.extend_from_slice(b"{}");
            return Ok(());
        }
        loop {
            self.ws();
            let key = self.string()?;
            self.ws();
            if self.next()? != b':' {
                return Err(NotJson);
            }
            let vstart = self.out.len();
            self.value(depth)?;
            let range = vstart - start..self.out.len() - start;
            if depth == 1 && *key == *b"temperature" {
                self.temperature = Some(self.out[vstart..].to_vec());
            }
            members.push((key, range));
            self.ws();
            match self.next()? {
                b',' => {}
                b'}' => break,
                _ => return Err(NotJson),
            }
        }
        // Stable: duplicate names keep their order.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        let values = self.out.split_off(start);
        self.out.push(b'{');
        for (i, (key, range)) in members.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            write_escaped(&mut self.out, key);
            self.out.push(b':');
            self.out.extend_from_slice(&values[range.clone()]);
        }
        self.out.push(b'}');
        Ok(())
    }
}
