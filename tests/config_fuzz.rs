//! `config::load_str` never panics: arbitrary text, and random mutations of
//! the example config (which keeps most inputs deep in validation rather
//! than failing at the first TOML token).
//!
//! The default case count is small enough for CI. For a longer run:
//!
//!     PROPTEST_CASES=20000 cargo test --release --test config_fuzz

use std::path::Path;

use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../config/example.toml");

fn env(name: &str) -> Option<String> {
    name.len()
        .is_multiple_of(2)
        .then(|| format!("value-of-{name}"))
}

fn check(text: &str) {
    // Ok or Err, never a panic; an Err always names at least one error.
    if let Err(e) = cutover::config::load_str(text, Path::new("/tmp/fuzz/cutover.toml"), &env) {
        assert!(!e.0.is_empty());
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    DeleteChar(usize),
    DuplicateChar(usize),
    ReplaceChar(usize, char),
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    ReplaceLine(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        Just('"'),
        Just('['),
        Just(']'),
        Just('{'),
        Just('}'),
        Just('='),
        Just('\n'),
        Just('$'),
        Just('.'),
        Just('-'),
        Just('0'),
        Just('9'),
        Just('é'),
        any::<char>(),
    ];
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteChar),
        any::<usize>().prop_map(Mutation::DuplicateChar),
        (any::<usize>(), interesting).prop_map(|(i, c)| Mutation::ReplaceChar(i, c)),
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (any::<usize>(), "[a-z_.\\[\\]\"={}0-9 ,$-]{0,40}")
            .prop_map(|(i, s)| Mutation::ReplaceLine(i, s)),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let nc = chars.len().max(1);
    let nl = lines.len().max(1);
    match m {
        Mutation::DeleteChar(i) => {
            let mut c = chars;
            if !c.is_empty() {
                c.remove(i % nc);
            }
            return c.into_iter().collect();
        }
        Mutation::DuplicateChar(i) => {
            let mut c = chars;
            if let Some(&ch) = c.get(i % nc) {
                c.insert(i % nc, ch);
            }
            return c.into_iter().collect();
        }
        Mutation::ReplaceChar(i, ch) => {
            let mut c = chars;
            if let Some(slot) = c.get_mut(i % nc) {
                *slot = *ch;
            }
            return c.into_iter().collect();
        }
        Mutation::DeleteLine(i) => {
            if !lines.is_empty() {
                lines.remove(i % nl);
            }
        }
        Mutation::DuplicateLine(i) => {
            if let Some(l) = lines.get(i % nl).cloned() {
                lines.insert(i % nl, l);
            }
        }
        Mutation::SwapLines(a, b) => {
            if !lines.is_empty() {
                lines.swap(a % nl, b % nl);
            }
        }
        Mutation::ReplaceLine(i, s) => {
            if let Some(l) = lines.get_mut(i % nl) {
                *l = s.clone();
            }
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Fast by default; PROPTEST_CASES overrides (see the module doc).
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn toml_shaped_text_never_panics(text in "([a-z_]{1,8} = (\"[^\"]{0,12}\"|[0-9.-]{1,6}|\\[[0-9, \"a-z]{0,12}\\]|\\{[a-z =\",]{0,20}\\})\n|\\[\\[?[a-z_.]{1,16}\\]?\\]\n){0,20}") {
        check(&text);
    }

    #[test]
    fn mutated_example_never_panics(ms in proptest::collection::vec(mutation(), 1..6)) {
        let mut text = EXAMPLE.to_string();
        for m in &ms {
            text = apply(&text, m);
        }
        check(&text);
    }
}
