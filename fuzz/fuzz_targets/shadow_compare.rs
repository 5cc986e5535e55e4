//! Shadow compare at JSON pointers (`shadow::compare`): never panics, and
//! is reflexive and symmetric: a document matches itself everywhere, and
//! which side is the primary never changes a verdict. A document parsed
//! only as far as the pointer reaches (`shadow::reach`), or read for the
//! value at the pointer alone (`Picked`), is refused when the whole one
//! is, and gives the same verdict; `find` finds what
//! `Value::pointer` finds; the compact reader (`api::compact`) reads a
//! document as `serde_json` does, or leaves it to it.
#![no_main]

use cutover::api::compact::Compact;
use cutover::shadow::compare::{PointerMatch, compare, compare_at, find, json_eq};
use std::sync::Arc;

use cutover::shadow::reach::{Picked, Reach};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // pointer \n primary \n shadow
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let (Some(pointer), Some(a), Some(b)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let Ok(pointer) = std::str::from_utf8(pointer) else {
        return;
    };
    // The compact reader reads a document as serde_json does, or not at
    // all (serde_json then reads it).
    for side in [a, b] {
        if let Ok(text) = std::str::from_utf8(side) {
            let mut de = Compact::new(text);
            if let Ok(value) = Value::deserialize(&mut de)
                && de.end().is_ok()
            {
                let whole = serde_json::from_str::<Value>(text).ok();
                assert_eq!(Some(value), whole, "read otherwise by the compact reader");
            }
        }
    }
    let reach = Arc::new(Reach::of([pointer]));
    let (pruned_a, pruned_b) = (reach.parse(a).ok(), reach.parse(b).ok());
    let (picked_a, picked_b) = (Picked::read(&reach, a).ok(), Picked::read(&reach, b).ok());
    let a = serde_json::from_slice::<Value>(a).ok();
    let b = serde_json::from_slice::<Value>(b).ok();
    assert_eq!(pruned_a.is_some(), a.is_some(), "refused by one parse only");
    assert_eq!(pruned_b.is_some(), b.is_some(), "refused by one parse only");
    let pointers = [pointer.to_string()];
    let pruned: Vec<PointerMatch> = compare(&pointers, pruned_a.as_ref(), pruned_b.as_ref())
        .map(|(_, v)| v)
        .collect();
    let forward: Vec<PointerMatch> = compare(&pointers, a.as_ref(), b.as_ref())
        .map(|(_, v)| v)
        .collect();
    let backward: Vec<PointerMatch> = compare(&pointers, b.as_ref(), a.as_ref())
        .map(|(_, v)| v)
        .collect();
    assert_eq!(forward, backward, "not symmetric");
    assert_eq!(forward, pruned, "the pruned documents disagree");
    let picked: Vec<PointerMatch> = compare(&pointers, picked_a.as_ref(), picked_b.as_ref())
        .map(|(_, v)| v)
        .collect();
    assert_eq!(forward, picked, "the picked values disagree");
    for (whole, picked) in [(&a, &picked_a), (&b, &picked_b)] {
        assert_eq!(whole.is_some(), picked.is_some(), "refused by one read only");
        if let (Some(whole), Some(picked)) = (whole, picked) {
            assert_eq!(whole.pointer(pointer), picked.at(pointer));
        }
    }
    for (whole, pruned) in [(&a, &pruned_a), (&b, &pruned_b)] {
        if let (Some(whole), Some(pruned)) = (whole, pruned) {
            assert_eq!(whole.pointer(pointer), pruned.pointer(pointer));
        }
    }
    for doc in [&a, &b].into_iter().flatten() {
        assert_eq!(find(doc, pointer), doc.pointer(pointer));
        assert!(json_eq(doc, doc));
        assert_eq!(compare_at(pointer, doc, doc), PointerMatch::Match);
    }
    if let (Some(a), Some(b)) = (&a, &b) {
        assert_eq!(json_eq(a, b), json_eq(b, a));
    }
});
