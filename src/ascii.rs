//! Byte-string tests on HTTP text (field names, media types), where case
//! does not matter and the bytes need not be UTF-8.

/// Whether `haystack` opens with `prefix`, ASCII case ignored.
pub fn starts_with_ignore_case(haystack: &[u8], prefix: &[u8]) -> bool {
    haystack
        .get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
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
}
