//! Reading JSON the way `serde_json::Value`'s accessors read a parsed tree
//! (`get`, `as_object`, `as_array`, `as_str`, `as_u64`), without building
//! the tree.
//!
//! A stream reassembler reads a few fields of every event. Parsing each
//! event into a `Value` (a map, and a string for every key and field) made
//! a shadow that compares a 20-chunk chat stream cost four times the
//! request it mirrored. Read through these types instead:
//! - a field of the wanted type is read, borrowed from the input where it
//!   has no escapes ([`Lenient`], [`Shape`]);
//! - a field of another type reads as absent, as `as_str()` gives `None`;
//! - a key given twice keeps its last value, as a `Map` does;
//! - everything else is checked as the whole parse checks it, then dropped
//!   ([`Checked`]), so a body the whole parse refuses is refused here too.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// What a value is read into when it has the wanted JSON type. Each method
/// is one type; the defaults read it as absent (checked and dropped).
pub trait Shape<'de>: Sized {
    fn object<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(None)
    }

    fn array<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(None)
    }

    /// A string without escapes, borrowed from the input.
    fn borrowed(s: &'de str) -> Option<Self> {
        Self::transient(s)
    }

    /// A string the parser unescaped into its scratch space.
    fn transient(_: &str) -> Option<Self> {
        None
    }

    fn unsigned(_: u64) -> Option<Self> {
        None
    }
}

/// `Some` when the value had `T`'s shape, `None` for any other valid JSON.
pub struct Lenient<T>(pub Option<T>);

impl<'de, T: Shape<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(LenientVisitor(PhantomData))
    }
}

struct LenientVisitor<T>(PhantomData<T>);

impl<'de, T: Shape<'de>> Visitor<'de> for LenientVisitor<T> {
    type Value = Lenient<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Lenient(T::unsigned(n)))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Lenient(T::borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Lenient(T::transient(s)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Lenient(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        T::array(seq).map(Lenient)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::object(map).map(Lenient)
    }
}

/// A string field, borrowed where the input has it without escapes.
impl<'de> Shape<'de> for Cow<'de, str> {
    fn borrowed(s: &'de str) -> Option<Self> {
        Some(Cow::Borrowed(s))
    }

    fn transient(s: &str) -> Option<Self> {
        Some(Cow::Owned(s.to_owned()))
    }
}

/// `as_u64`: a non-negative integer that fits.
impl<'de> Shape<'de> for u64 {
    fn unsigned(n: u64) -> Option<Self> {
        Some(n)
    }
}

/// `as_array`, each element read leniently in its place.
impl<'de, T: Shape<'de>> Shape<'de> for Vec<Option<T>> {
    fn array<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut all = Vec::with_capacity(seq.size_hint().unwrap_or(1));
        while let Some(Lenient(element)) = seq.next_element::<Lenient<T>>()? {
            all.push(element);
        }
        Ok(Some(all))
    }
}

/// Read an object into a `T` field by field: `field` takes the keys it
/// knows (reading their values from the map) and says so; any other key's
/// value is checked and dropped. A key given twice is read twice, so the
/// last value stays, as in a `Map`.
pub fn fields<'de, A, T>(
    mut map: A,
    mut field: impl FnMut(&mut T, &str, &mut A) -> Result<bool, A::Error>,
) -> Result<Option<T>, A::Error>
where
    A: MapAccess<'de>,
    T: Default,
{
    let mut out = T::default();
    while let Some(key) = map.next_key::<Key<'de>>()? {
        if !field(&mut out, key.as_str(), &mut map)? {
            map.next_value::<Checked>()?;
        }
    }
    Ok(Some(out))
}

/// The next value of `map`, if it has `T`'s shape.
pub fn value<'de, A: MapAccess<'de>, T: Shape<'de>>(map: &mut A) -> Result<Option<T>, A::Error> {
    Ok(map.next_value::<Lenient<T>>()?.0)
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
