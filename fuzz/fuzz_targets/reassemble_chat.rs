//! Stream reassembly for shadow compare and eval (`shadow::compare`): a
//! captured body, split into frames anywhere, gives the same document as in
//! one piece and as `api::reassemble` of the whole (the API read from the
//! first event: Chat Completions, Responses or Anthropic Messages), and the
//! document compares equal to itself at any pointer; and each API's reader
//! reads what its `Value`-based reference reads. (The name predates the
//! other two APIs; the corpus keeps it.)
#![no_main]

use bytes::Bytes;
use cutover::api;
use cutover::shadow::compare::{Capture, PointerMatch, compare_at, json_eq};
use cutover_fuzz::pieces;
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (frames, whole) = pieces(data);
    let direct = api::reassemble(None, whole).document.ok().map(|d| d.value);
    // The chat reader, which skips what it does not keep, reads what a
    // parse of every chunk into a `Value` reads.
    assert_eq!(
        api::chat::reassemble(whole),
        api::chat::by_value::reassemble(whole)
    );
    // The Responses and Messages readers, which read deltas in place, read
    // what a parse of every event into a `Value` reads.
    assert_eq!(
        api::responses::reassemble(whole),
        api::responses::whole::reassemble(whole)
    );
    assert_eq!(
        api::messages::reassemble(whole),
        api::messages::whole::reassemble(whole)
    );
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
