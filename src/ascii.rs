//! Byte-string tests on HTTP text (field names, media types), where case
//! does not matter and the bytes need not be UTF-8, and on JSON strings.

/// Whether `haystack` opens with `prefix`, ASCII case ignored.
pub fn starts_with_ignore_case(haystack: &[u8], prefix: &[u8]) -> bool {
    haystack
        .get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

/// Where the first byte is that a JSON string cannot hold as it is (a
/// control character, `"` or `\`), or `bytes.len()` when there is none.
/// Eight bytes at a time: strings in access-log
/// lines and model answers are short and many, and a byte loop cost ~7
/// instructions a byte.
pub fn json_escape_at(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Bit 7 is set in a byte of the result if that byte of `v` is below `n`
    // (n <= 128); a borrow flags only bytes above a byte that is itself
    // below `n`, so the lowest flagged byte is exact.
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGH;
    let flags = |w: u64| below(w, 0x20) | below(w ^ (ONES * 0x22), 1) | below(w ^ (ONES * 0x5c), 1);
    let first = |flags: u64| (flags.trailing_zeros() / 8) as usize;
    let mut at = 0;
    let mut rest = bytes;
    while let Some((word, tail)) = rest.split_first_chunk::<8>() {
        let found = flags(u64::from_le_bytes(*word));
        if found != 0 {
            return at + first(found);
        }
        at += 8;
        rest = tail;
    }
    // The last few bytes one by one: padding them into a word costs a
    // copy, and most strings are shorter than a word.
    at + rest
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .unwrap_or(rest.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_in_any_case_and_no_further_than_the_haystack() {
        assert!(starts_with_ignore_case(
            b"Text/Event-Stream; charset=utf-8",
            b"text/event-stream"
        ));
        assert!(starts_with_ignore_case(b"x", b""));
        assert!(!starts_with_ignore_case(b"text/even", b"text/event-stream"));
        assert!(!starts_with_ignore_case(
            b"content-lengtx:",
            b"content-length:"
        ));
    }

    #[test]
    fn the_first_byte_a_json_string_escapes_anywhere() {
        for len in 0..20 {
            let clean = vec![b'a'; len];
            assert_eq!(json_escape_at(&clean), len);
            for at in 0..len {
                for b in (0..0x20).chain([b'"', b'\\']) {
                    let mut bytes = clean.clone();
                    bytes[at] = b;
                    assert_eq!(json_escape_at(&bytes), at, "{bytes:?}");
                    // A second stop after it does not move the first.
                    bytes[len - 1] = b'"';
                    assert_eq!(json_escape_at(&bytes), at, "{bytes:?}");
                }
            }
        }
        let text = "é€ abc~\x7f\u{ff}";
        assert_eq!(json_escape_at(text.as_bytes()), text.len());
    }
}
