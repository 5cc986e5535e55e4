//! The golden JSONL parser (`eval::golden`): never panics, every problem
//! names a line that exists, and a parsed set has unique ids.
#![no_main]

use std::collections::HashSet;
use std::path::Path;

use cutover::eval::golden;
use cutover_fuzz::text;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = text(data) else {
        return;
    };
    match golden::parse(text, Path::new("fuzz.jsonl")) {
        Ok(set) => {
            let mut ids = HashSet::new();
            for case in set.cases.iter() {
                assert!(ids.insert(case.id.clone()), "duplicate id {:?}", case.id);
            }
        }
        Err(e) => {
            let lines = text.lines().count().max(1);
            for p in &e.problems {
                assert!(p.line.is_none_or(|l| (1..=lines).contains(&l)), "{e}");
            }
            let _ = e.to_string();
        }
    }
});
