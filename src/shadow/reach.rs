//! `Reach`: the parts of a JSON document that a set of JSON pointers can
//! reach, and two readers that build only those: [`Picked`], the values at
//! the pointers (what a shadow compares), and [`Reach::parse`], a pruned
//! document (the reference `Picked` is held to, and its way through
//! `serde_json`).
//!
//! A shadow compares two answers at a few pointers, yet parsing each whole
//! answer into a `serde_json::Value` (a map, a string, a number for every
//! field) was a tenth of cutover's CPU samples with a 100 % shadow of the
//! mock backend. Parsed through a `Reach`, a document keeps only the fields
//! on the way to a pointer and the whole value at its end; every other
//! field is still read and checked as the whole parse checks it (UTF-8,
//! escapes, a number's range: a malformed body is refused as before) but
//! never built.
//! An array keeps its elements up to the last index reached, the others as
//! `null` placeholders, so an index means the same element in both trees.
//!
//! `Value::pointer` on the pruned document gives what it gives on the whole
//! one, for every pointer the `Reach` was built from: the tokens are
//! unescaped and matched as `serde_json` does (an object's key, or an
//! array index without a sign or leading zero), and duplicate keys keep
//! the last, as `Value` does. [`Picked::at`] gives the same.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::api::compact::{Compact, Other};
use crate::api::lenient::Checked;

/// The pointers a shadow compares at, as a tree of their tokens, built by
/// [`Reach::of`].
#[derive(Debug)]
pub struct Reach {
    root: Node,
    /// The pointers, in the order given: [`Picked`] numbers its values so.
    pointers: Box<[Box<str>]>,
}

/// One place in the tree. The empty pointer ends at the root: it keeps
/// everything.
#[derive(Debug, Default, PartialEq, Eq)]
struct Node {
    /// The pointers that end here (their numbers): keep the whole value.
    ends: Vec<usize>,
    /// Tokens that lead further, in the order first seen.
    next: Vec<Step>,
}

#[derive(Debug, PartialEq, Eq)]
struct Step {
    /// The unescaped token: an object key.
    key: Box<str>,
    /// The same token as an array index, when it is one.
    index: Option<usize>,
    node: Node,
}

impl Reach {
    /// What `pointers` reach. A pointer that does not start with `/` (and
    /// is not empty) reaches nothing, as `Value::pointer` finds nothing.
    pub fn of<'a>(pointers: impl IntoIterator<Item = &'a str>) -> Reach {
        let mut root = Node::default();
        let mut all = Vec::new();
        for (n, pointer) in pointers.into_iter().enumerate() {
            all.push(Box::from(pointer));
            if pointer.is_empty() {
                root.ends.push(n);
                continue;
            }
            let Some(rest) = pointer.strip_prefix('/') else {
                continue;
            };
            let mut at = &mut root;
            for token in rest.split('/') {
                let key = token.replace("~1", "/").replace("~0", "~");
                let i = match at.next.iter().position(|s| *s.key == *key) {
                    Some(i) => i,
                    None => {
                        at.next.push(Step {
                            index: parse_index(&key),
                            key: key.into(),
                            node: Node::default(),
                        });
                        at.next.len() - 1
                    }
                };
                at = &mut at.next[i].node;
            }
            at.ends.push(n);
        }
        Reach {
            root,
            pointers: all.into_boxed_slice(),
        }
    }

    /// Parse `body` as one JSON document (trailing whitespace only),
    /// building only what this reaches: `Value::pointer` then finds in it
    /// what it finds in the whole document.
    pub fn parse(&self, body: &[u8]) -> serde_json::Result<Value> {
        let text = utf8(body)?;
        let mut fast = Compact::new(text);
        if let Ok(value) = Prune(&self.root).deserialize(&mut fast)
            && fast.end().is_ok()
        {
            return Ok(value);
        }
        serde_parse(&self.root, text)
    }
}

/// One UTF-8 check of the whole body, then a str parse: a slice parse
/// checks each string on its own (~100 instructions apiece, a tenth of the
/// parse) and refuses the same bodies, since bytes outside a string that
/// are not ASCII are a syntax error anyway.
fn utf8(body: &[u8]) -> serde_json::Result<&str> {
    std::str::from_utf8(body)
        .map_err(|_| <serde_json::Error as serde::de::Error>::custom("the body is not UTF-8"))
}

/// The pruned document through `serde_json`: what the compact reader
/// leaves to it.
fn serde_parse(root: &Node, text: &str) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Prune(root).deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// The values a JSON answer holds at a [`Reach`]'s pointers, and nothing
/// else: what a shadow compares.
///
/// A pruned document (`Reach::parse`) still built a map per object on the
/// way to a pointer and its keys, then walked them again to find the
/// pointer, then dropped them: of the ~5,000 instructions a 400-byte chat
/// answer cost to read for compare, about 3,500. Here the reader walks the
/// tokens and keeps only the values where pointers end.
#[derive(Debug)]
pub struct Picked {
    reach: Arc<Reach>,
    /// By pointer number; `None` where a pointer finds nothing.
    values: Vec<Option<Value>>,
}

impl Picked {
    /// Read `body` (one JSON document, trailing whitespace only) for the
    /// values at `reach`'s pointers. Refuses what `serde_json` refuses.
    pub fn read(reach: &Arc<Reach>, body: &[u8]) -> serde_json::Result<Picked> {
        let text = utf8(body)?;
        let mut values = vec![None; reach.pointers.len()];
        let mut fast = Compact::new(text);
        if reach.root.pick(&mut fast, &mut values).is_err() || fast.end().is_err() {
            values.fill(None);
            reach
                .root
                .place_owned(serde_parse(&reach.root, text)?, &mut values);
        }
        Ok(Picked {
            reach: Arc::clone(reach),
            values,
        })
    }

    /// What `pointer` finds, as `Value::pointer` finds it in the whole
    /// document. A pointer the reach was not built from finds nothing.
    pub fn at(&self, pointer: &str) -> Option<&Value> {
        let n = self.reach.pointers.iter().position(|p| **p == *pointer)?;
        self.values.get(n)?.as_ref()
    }
}

impl Node {
    /// Read the next value, keeping what pointers that end at or below
    /// this node find in it.
    fn pick(&self, de: &mut Compact<'_>, values: &mut [Option<Value>]) -> Result<(), Other> {
        if !self.ends.is_empty() {
            let value = Value::deserialize(&mut *de)?;
            self.place_owned(value, values);
            return Ok(());
        }
        match de.next_byte() {
            Some(b'{') => {
                // Steps are numbered in a byte; a wider level (never seen
                // in a config) is left to `serde_json`.
                if self.next.len() > usize::from(u8::MAX) {
                    return Err(Other);
                }
                de.object(
                    |key| {
                        let i = self.next.iter().position(|s| *s.key == *key)?;
                        u8::try_from(i).ok()
                    },
                    |de, n| {
                        let node = &self.next.get(usize::from(n)).ok_or(Other)?.node;
                        // A key given again replaces what it gave, as a
                        // `Value` keeps the last.
                        node.clear(values);
                        node.pick(de, values)
                    },
                )
            }
            Some(b'[') => {
                let mut i = 0;
                de.array(|de| {
                    match self.index(i) {
                        Some(node) => node.pick(de, values)?,
                        None => de.skip()?,
                    }
                    i += 1;
                    Ok(())
                })
            }
            // A scalar where pointers go on: they find nothing in it.
            _ => de.skip(),
        }
    }

    /// Keep what this node's pointers find in `value`, which lies here.
    fn place_owned(&self, value: Value, values: &mut [Option<Value>]) {
        match (self.ends.as_slice(), self.next.is_empty()) {
            // The usual case: one pointer ends here and none goes on.
            (&[n], true) => {
                if let Some(slot) = values.get_mut(n) {
                    *slot = Some(value);
                }
            }
            _ => self.place(&value, values),
        }
    }

    fn place(&self, value: &Value, values: &mut [Option<Value>]) {
        for &n in &self.ends {
            if let Some(slot) = values.get_mut(n) {
                *slot = Some(value.clone());
            }
        }
        for step in &self.next {
            let inner = match value {
                Value::Object(map) => map.get(&*step.key),
                Value::Array(list) => step.index.and_then(|i| list.get(i)),
                _ => None,
            };
            if let Some(inner) = inner {
                step.node.place(inner, values);
            }
        }
    }

    /// Forget what this node's pointers found.
    fn clear(&self, values: &mut [Option<Value>]) {
        for &n in &self.ends {
            if let Some(slot) = values.get_mut(n) {
                *slot = None;
            }
        }
        for step in &self.next {
            step.node.clear(values);
        }
    }

    fn key(&self, key: &str) -> Option<&Step> {
        self.next.iter().find(|s| *s.key == *key)
    }

    fn index(&self, i: usize) -> Option<&Node> {
        self.next
            .iter()
            .find(|s| s.index == Some(i))
            .map(|s| &s.node)
    }

    /// One past the largest index reached: the elements an array keeps.
    fn indices(&self) -> usize {
        self.next
            .iter()
            .filter_map(|s| s.index)
            .max()
            .map_or(0, |i| i.saturating_add(1))
    }
}

/// `serde_json`'s reading of a token as an array index.
pub(super) fn parse_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

/// Deserializes the part of a value that a `Reach` reaches.
struct Prune<'r>(&'r Node);

impl<'de> DeserializeSeed<'de> for Prune<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        if !self.0.ends.is_empty() {
            serde::Deserialize::deserialize(de)
        } else {
            de.deserialize_any(self)
        }
    }
}

/// Matches an object's key against a `Reach`'s steps without allocating.
struct Key<'r>(&'r Node);

impl<'de, 'r> DeserializeSeed<'de> for Key<'r> {
    type Value = Option<&'r Step>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de, 'r> Visitor<'de> for Key<'r> {
    type Value = Option<&'r Step>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.key(key))
    }
}

impl<'de> Visitor<'de> for Prune<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let keep = self.0.indices();
        let mut list = Vec::new();
        let mut i = 0;
        loop {
            if i < keep {
                let element = match self.0.index(i) {
                    Some(node) => seq.next_element_seed(Prune(node))?,
                    None => seq.next_element::<Checked>()?.map(|_| Value::Null),
                };
                let Some(element) = element else { break };
                list.push(element);
            } else if seq.next_element::<Checked>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(Value::Array(list))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Map::new();
        // The key is matched before it is owned: only kept keys allocate.
        while let Some(found) = map.next_key_seed(Key(self.0))? {
            match found {
                Some(step) => {
                    let value = map.next_value_seed(Prune(&step.node))?;
                    kept.insert(String::from(&*step.key), value);
                }
                None => {
                    map.next_value::<Checked>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCS: &[&str] = &[
        r#"{"id":"c1","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#,
        r#"{"choices":[{"message":{"content":"a"}},{"message":{"content":"b","tool_calls":[{"id":"t","function":{"name":"f"}}]}}]}"#,
        r#"{"a/b":1,"m~n":[true,false,null],"0":"zero","01":"one","":{"":2},"x":{"0":[1.5,-2,3e40]}}"#,
        r#"{"dup":1,"dup":{"k":2},"big":18446744073709551615,"neg":-9223372036854775808}"#,
        r#"{"dup":{"k":2},"choices":[{"message":{"content":"a"}}],"dup":1,"choices":3}"#,
        r#"{"choices":[{"message":{"content":"a\u00e9"}}],"usage":{"total_tokens":1.5}}"#,
        r#"[{"a":1},[2,3],"s",4,null]"#,
        r#""just a string""#,
        r#"{"choices":[]}"#,
    ];

    const POINTERS: &[&str] = &[
        "/choices/0/message/content",
        "/choices/1/message/tool_calls/0/function/name",
        "/choices/0",
        "/choices/2/message",
        "/usage",
        "/usage/total_tokens",
        "/a~1b",
        "/m~0n/1",
        "/m~0n/-",
        "/0",
        "/01",
        "/x/0/2",
        "/x/0/+1",
        "/x/0/01",
        "/",
        "//",
        "/dup/k",
        "/dup",
        "/big",
        "/neg",
        "/1/0",
        "/0/a",
        "/3",
        "",
        "no-slash",
        "/id/0",
    ];

    /// Every pointer finds, in the pruned document, what it finds in the
    /// whole one, pointers taken one at a time and all together.
    #[test]
    fn a_pruned_document_answers_its_pointers_as_the_whole_one_does() {
        for doc in DOCS {
            let whole: Value = serde_json::from_str(doc).expect("doc");
            let together = Reach::of(POINTERS.iter().copied())
                .parse(doc.as_bytes())
                .expect("parse");
            for pointer in POINTERS {
                let alone = Reach::of([*pointer]).parse(doc.as_bytes()).expect("parse");
                assert_eq!(
                    alone.pointer(pointer),
                    whole.pointer(pointer),
                    "{pointer} alone in {doc}"
                );
                assert_eq!(
                    together.pointer(pointer),
                    whole.pointer(pointer),
                    "{pointer} with the others in {doc}"
                );
                assert_eq!(
                    super::super::compare::find(&whole, pointer),
                    whole.pointer(pointer),
                    "find {pointer} in {doc}"
                );
            }
        }
    }

    /// The picked values are what the pointers find in the whole document,
    /// pointers taken one at a time and all together, whichever reader
    /// (the compact one or `serde_json`) read the document.
    #[test]
    fn the_picked_values_are_what_the_pointers_find_in_the_whole_document() {
        let together = Arc::new(Reach::of(POINTERS.iter().copied()));
        for doc in DOCS {
            let whole: Value = serde_json::from_str(doc).expect("doc");
            let picked = Picked::read(&together, doc.as_bytes()).expect("read");
            for pointer in POINTERS {
                let alone = Arc::new(Reach::of([*pointer]));
                let alone = Picked::read(&alone, doc.as_bytes()).expect("read");
                assert_eq!(
                    alone.at(pointer),
                    whole.pointer(pointer),
                    "{pointer} alone in {doc}"
                );
                assert_eq!(
                    picked.at(pointer),
                    whole.pointer(pointer),
                    "{pointer} with the others in {doc}"
                );
            }
            assert_eq!(picked.at("/not/asked"), None);
        }
    }

    /// The whole body is checked as UTF-8 once; text in any script still
    /// reads as the slice parse reads it.
    #[test]
    fn text_that_is_not_ascii_reads_as_the_whole_parse_reads_it() {
        let doc = "{\"choices\":[{\"message\":{\"content\":\"Grüße, 世界 🙂\"}}],\"é\":\"ß\"}";
        let pruned = Reach::of(["/choices/0/message/content", "/é"])
            .parse(doc.as_bytes())
            .expect("parse");
        let whole: Value = serde_json::from_slice(doc.as_bytes()).expect("doc");
        assert_eq!(pruned, whole);
    }

    #[test]
    fn only_what_is_reached_is_built() {
        let doc = DOCS[0].as_bytes();
        let pruned = Reach::of(["/choices/0/message/content"])
            .parse(doc)
            .expect("parse");
        assert_eq!(
            pruned,
            serde_json::json!({"choices": [{"message": {"content": "Hello"}}]})
        );
        let pruned = Reach::of(["/choices/1"])
            .parse(DOCS[1].as_bytes())
            .expect("parse");
        assert_eq!(pruned["choices"][0], Value::Null);
        assert_eq!(pruned["choices"][1]["message"]["content"], "b");
        assert_eq!(
            Reach::of([""]).parse(doc).ok(),
            serde_json::from_slice(doc).ok()
        );
        assert_eq!(Reach::of(["no-slash"]).root, Node::default());
    }

    #[test]
    fn malformed_json_is_refused_even_where_nothing_is_kept() {
        let reach = Reach::of(["/choices/0/message/content"]);
        for bad in [
            &br#"{"id":"c1","usage":{"prompt_tokens":3,}}"#[..],
            br#"{"id":"c1"} trailing"#,
            br#"{"id":"c1""#,
            b"",
            br#"{"id":"\x"}"#,
            // Where nothing is kept, still checked as the whole parse
            // checks: UTF-8 in a key, a lone surrogate, a number's range.
            b"{\"choices\":[{\"m\":{\"\xde ame\":1}}]}",
            // ... and in a value nowhere near a pointer.
            b"{\"model\":\"g\xff\",\"choices\":[]}",
            br#"{"id":"\ud800"}"#,
            br#"{"usage":1e400}"#,
        ] {
            assert!(serde_json::from_slice::<Value>(bad).is_err());
            assert!(
                reach.parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
            assert!(
                Picked::read(&Arc::new(Reach::of(["/choices/0/message/content"])), bad).is_err(),
                "picked from {}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
