//! Stream reassembly for shadow compare and eval (`shadow::compare`, today
//! chat completions): a captured body, split into frames anywhere, gives
//! the same document as in one piece, and the document compares equal to
//! itself at any pointer. More APIs get targets named `reassemble_<api>`.
#![no_main]

use bytes::Bytes;
use cutover::shadow::compare::{Capture, PointerMatch, compare_at, json_eq, reassemble_sse};
use cutover_fuzz::pieces;
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (frames, whole) = pieces(data);
    let direct = reassemble_sse(whole);
    for ct in ["text/event-stream", "application/json"] {
        let ct = HeaderValue::from_static(ct);
        let mut one = Capture::with_cap(Some(&ct), 1 << 20);
        one.observe(&Bytes::copy_from_slice(whole));
        let mut many = Capture::with_cap(Some(&ct), 1 << 20);
        for f in &frames {
            many.observe(&Bytes::copy_from_slice(f));
        }
        let (one, many) = (one.finish(), many.finish());
        assert_eq!(one, many, "{ct:?}");
        if ct == "text/event-stream" {
            assert_eq!(one, direct);
        }
        if let Some(doc) = &one {
            assert!(json_eq(doc, doc));
            for pointer in ["", "/choices/0/message/content", "/usage", "/id"] {
                assert_eq!(compare_at(pointer, doc, doc), PointerMatch::Match);
            }
        }
    }
});
