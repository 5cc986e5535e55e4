//! Helpers shared by the fuzz targets.
//!
//! Most targets check a property, not just "no panic": the same bytes
//! split into frames anywhere must give the same answer as in one piece,
//! because the proxy sees a body in whatever frames the network delivers.

/// Split `data` into a header byte that picks cut points and the rest: the
/// first byte is a seed, and the rest is cut into pieces whose lengths come
/// from that seed (1..=16 bytes each, or one piece when the seed is 0).
pub fn pieces(data: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let Some((&seed, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    if seed == 0 {
        return (vec![rest], rest);
    }
    let mut out = Vec::new();
    let mut state = u32::from(seed);
    let mut at = 0;
    while at < rest.len() {
        // A small LCG: deterministic for a given input, so crashes replay.
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let len = 1 + (state >> 16) as usize % 16;
        let end = (at + len).min(rest.len());
        out.push(&rest[at..end]);
        at = end;
    }
    (out, rest)
}

/// The input as text, if it is UTF-8.
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Whether an object key in `json` (unescaped) is `serde_json`'s private
/// `RawValue` token. With its `raw_value` feature, which cutover enables
/// for `set_json`'s spans, a `Value` parse reads an object whose first key
/// is the token as the JSON text held in its value: a quirk of the whole
/// parse that a pruned parse (`shadow::reach`) does not share, since it
/// reads keys itself. Targets that hold a parse to `Value` skip such input.
pub fn names_raw_value_token(json: &[u8]) -> bool {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::borrow::Cow;
    use std::cell::Cell;

    const TOKEN: &str = "$serde_json::private::RawValue";

    #[derive(Clone, Copy)]
    struct Walk<'a>(&'a Cell<bool>);

    impl<'de> serde::de::DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
            de.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(self)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if key == TOKEN {
                    self.0.set(true);
                    map.next_value::<IgnoredAny>()?;
                } else {
                    map.next_value_seed(self)?;
                }
            }
            Ok(())
        }
    }

    let found = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(json);
    let _ = serde::de::DeserializeSeed::deserialize(Walk(&found), &mut de);
    found.get()
}
