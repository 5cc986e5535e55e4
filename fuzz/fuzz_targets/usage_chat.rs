//! Token usage scanning (`telemetry::usage`, today the chat-completions and
//! Anthropic shapes in one scanner): never panics, and reads the same usage
//! from a body however it is split into frames, as a JSON body and as an
//! event stream. Where the compact reader reads a usage value or an
//! event's usage, it reads what `serde_json` reads. More APIs get targets named `usage_<api>`.
#![no_main]

use bytes::Bytes;
use cutover::telemetry::UsageScanner;
use cutover_fuzz::pieces;
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (frames, whole) = pieces(data);
    assert!(cutover::api::usage::compact_reads_usage_as_serde_json(whole));
    assert!(cutover::api::usage::compact_reads_event_usage_as_serde_json(whole));
    for ct in ["text/event-stream", "application/json"] {
        let ct = HeaderValue::from_static(ct);
        let mut one = UsageScanner::for_content_type(Some(&ct));
        one.observe(&Bytes::copy_from_slice(whole));
        let mut many = UsageScanner::for_content_type(Some(&ct));
        for f in &frames {
            many.observe(&Bytes::copy_from_slice(f));
        }
        assert_eq!(one.finish(), many.finish(), "{ct:?}");
    }
});
