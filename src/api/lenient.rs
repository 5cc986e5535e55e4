//! Reading JSON the way `Value`'s accessors read a parsed tree
//! (`get`, `as_object`, `as_array`, `as_str`, `as_u64`), without building
//! the tree.
//!
//! A stream reassembler reads a few fields of every event. Parsing each
//! event into a `Value` (a map, and a string for every key and field) made
//! a shadow that compares a 20-chunk chat stream cost four times the
//! request it mirrored. Read through these types instead:
//! - a field of the wanted type is read, borrowed from the input where it
//!   has no escapes ([`Shape`]);
//! - a field of another type reads as absent, as `as_str()` gives `None`;
//! - a key given twice keeps its last value, as a `Map` does;
//! - everything else is checked as the whole parse checks it, then dropped
//!   ([`Checked`]), so a body the whole parse refuses is refused here too.
//!
//! Values are filled in place ([`fill`]): a chunk read into a struct that
//! is returned through each layer of the parser is copied at every one.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// What a value is read into when it has the wanted JSON type. Each method
/// is one type: it fills `self` and says `true`, or says `false` (the
/// defaults: the value is checked and dropped).
pub trait Shape<'de>: Default {
    fn object<A: MapAccess<'de>>(&mut self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(false)
    }

    fn array<A: SeqAccess<'de>>(&mut self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(false)
    }

    /// A string without escapes, borrowed from the input.
    fn borrowed(&mut self, s: &'de str) -> bool {
        self.transient(s)
    }

    /// A string the parser unescaped into its scratch space.
    fn transient(&mut self, _: &str) -> bool {
        false
    }

    fn unsigned(&mut self, _: u64) -> bool {
        false
    }
}

/// Read the next value into `out` if it has `T`'s shape; `out` is left
/// `None` for any other valid JSON.
pub fn fill<'de, D, T>(de: D, out: &mut Option<T>) -> Result<(), D::Error>
where
    D: Deserializer<'de>,
    T: Shape<'de>,
{
    let had = de.deserialize_any(Fill(out.insert(T::default())))?;
    if !had {
        *out = None;
    }
    Ok(())
}

/// The next value of `map` into `out` (see [`fill`]).
pub fn value<'de, A: MapAccess<'de>, T: Shape<'de>>(
    map: &mut A,
    out: &mut Option<T>,
) -> Result<(), A::Error> {
    map.next_value_seed(Seed(out))
}

struct Seed<'a, T>(&'a mut Option<T>);

impl<'de, T: Shape<'de>> DeserializeSeed<'de> for Seed<'_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        fill(de, self.0)
    }
}

struct Fill<'a, T>(&'a mut T);

impl<'de, T: Shape<'de>> Visitor<'de> for Fill<'_, T> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E>(self, n: u64) -> Result<bool, E> {
        Ok(self.0.unsigned(n))
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<bool, E> {
        Ok(self.0.borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<bool, E> {
        Ok(self.0.transient(s))
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        self.0.array(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        self.0.object(map)
    }
}

/// A string field, borrowed where the input has it without escapes.
impl<'de> Shape<'de> for Cow<'de, str> {
    fn borrowed(&mut self, s: &'de str) -> bool {
        *self = Cow::Borrowed(s);
        true
    }

    fn transient(&mut self, s: &str) -> bool {
        *self = Cow::Owned(s.to_owned());
        true
    }
}

/// `as_u64`: a non-negative integer that fits.
impl<'de> Shape<'de> for u64 {
    fn unsigned(&mut self, n: u64) -> bool {
        *self = n;
        true
    }
}

/// `as_array`, each element read leniently in its place.
impl<'de, T: Shape<'de>> Shape<'de> for Vec<Option<T>> {
    fn array<A: SeqAccess<'de>>(&mut self, mut seq: A) -> Result<bool, A::Error> {
        self.clear();
        loop {
            let mut element = None;
            if seq.next_element_seed(Seed(&mut element))?.is_none() {
                return Ok(true);
            }
            self.push(element);
        }
    }
}

/// Read an object into `out` field by field: `field` takes the keys it
/// knows (reading their values from the map) and says so; any other key's
/// value is checked and dropped. A key given twice is read twice, so the
/// last value stays, as in a `Map`.
pub fn fields<'de, A, T>(
    out: &mut T,
    mut map: A,
    mut field: impl FnMut(&mut T, &str, &mut A) -> Result<bool, A::Error>,
) -> Result<bool, A::Error>
where
    A: MapAccess<'de>,
{
    while let Some(key) = map.next_key::<Key<'de>>()? {
        if !field(out, key.as_str(), &mut map)? {
            map.next_value::<Checked>()?;
        }
    }
    Ok(true)
}

/// An object's key, borrowed where it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl Key<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }

            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        de.deserialize_str(KeyVisitor)
    }
}

/// A value read and checked as a `Value` would be, then dropped. Not
/// serde's `IgnoredAny`: `serde_json` skips that without validating it (a
/// string's UTF-8 and escapes, a number's range), and a document the whole
/// parse refuses must be refused here too.
pub struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Checked, D::Error> {
        de.deserialize_any(Checked)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// Any JSON value, kept as a borrowed string or a `null` where it is one:
/// a field read from every event but kept from one (a chunk's `id`) costs
/// no allocation until it is kept ([`Any::into_value`]).
#[derive(Debug)]
pub enum Any<'de> {
    Null,
    Str(&'de str),
    Value(Value),
}

impl Any<'_> {
    pub fn is_null(&self) -> bool {
        matches!(self, Any::Null)
    }

    pub fn into_value(self) -> Value {
        match self {
            Any::Null => Value::Null,
            Any::Str(s) => Value::from(s),
            Any::Value(v) => v,
        }
    }
}

impl<'de> Deserialize<'de> for Any<'de> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(AnyVisitor)
    }
}

struct AnyVisitor;

impl<'de> Visitor<'de> for AnyVisitor {
    type Value = Any<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Any<'de>, E> {
        Ok(Any::Null)
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Any<'de>, E> {
        Ok(Any::Str(s))
    }

    // The rest is built as `Value` builds it, from the same calls.
    fn visit_str<E>(self, s: &str) -> Result<Any<'de>, E> {
        Ok(Any::Value(Value::from(s)))
    }

    fn visit_bool<E>(self, b: bool) -> Result<Any<'de>, E> {
        Ok(Any::Value(Value::Bool(b)))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Any<'de>, E> {
        Ok(Any::Value(Value::from(n)))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Any<'de>, E> {
        Ok(Any::Value(Value::from(n)))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Any<'de>, E> {
        Ok(Any::Value(Value::from(n)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Any<'de>, A::Error> {
        Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(Any::Value)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Any<'de>, A::Error> {
        Value::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Any::Value)
    }
}
