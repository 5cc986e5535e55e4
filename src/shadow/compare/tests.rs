use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::mock::{ChatRequest, Reply};

const SSE: &str = "text/event-stream";
const JSON: &str = "application/json";

fn ptrs(list: &[&str]) -> Vec<String> {
    list.iter().map(|p| (*p).to_owned()).collect()
}

fn verdicts(pointers: &[&str], a: Option<&Value>, b: Option<&Value>) -> Vec<PointerMatch> {
    let pointers = ptrs(pointers);
    compare(&pointers, a, b).map(|(_, v)| v).collect()
}

/// Capture `frames` under `content_type` and finish.
fn capture(content_type: &'static str, frames: &[Bytes]) -> Option<Value> {
    let ct = HeaderValue::from_static(content_type);
    let mut c = Capture::for_content_type(Some(&ct));
    for frame in frames {
        c.observe(frame);
    }
    c.finish()
}

/// One SSE frame per chunk object, then `[DONE]`.
fn sse_frames(chunks: &[Value]) -> Vec<Bytes> {
    chunks
        .iter()
        .map(|c| Bytes::from(format!("data: {c}\n\n")))
        .chain([Bytes::from_static(b"data: [DONE]\n\n")])
        .collect()
}

fn chunk(index: u64, delta: Value, finish_reason: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "m",
        "choices": [{ "index": index, "delta": delta, "finish_reason": finish_reason }],
    })
}

// ---- compare: JSON against JSON ----

#[test]
fn equal_and_different_values_at_a_pointer() {
    let a = json!({"choices": [{"message": {"content": "yes", "role": "assistant"}}]});
    let b = json!({"choices": [{"message": {"role": "assistant", "content": "yes"}}]});
    let c = json!({"choices": [{"message": {"role": "assistant", "content": "no"}}]});
    let p = ["/choices/0/message/content", "/choices/0/message"];
    assert_eq!(
        verdicts(&p, Some(&a), Some(&b)),
        [PointerMatch::Match, PointerMatch::Match]
    );
    assert_eq!(
        verdicts(&p, Some(&a), Some(&c)),
        [PointerMatch::Mismatch, PointerMatch::Mismatch]
    );
}

#[test]
fn pointer_absent_on_both_is_a_match_on_one_a_mismatch() {
    let a = json!({"x": 1});
    let b = json!({"x": 1, "y": null});
    assert_eq!(
        verdicts(&["/z", "/y", "/x"], Some(&a), Some(&b)),
        [
            PointerMatch::Match,
            PointerMatch::Mismatch,
            PointerMatch::Match
        ]
    );
    // Absent on the primary side only, too.
    assert_eq!(
        verdicts(&["/y"], Some(&b), Some(&a)),
        [PointerMatch::Mismatch]
    );
}

#[test]
fn tool_call_name_pointer() {
    let call = |name: &str| {
        json!({"choices": [{"message": {"tool_calls": [
            {"id": "x", "type": "function", "function": {"name": name, "arguments": "{}"}}
        ]}}]})
    };
    let p = ["/choices/0/message/tool_calls/0/function/name"];
    assert_eq!(
        verdicts(&p, Some(&call("search")), Some(&call("search"))),
        [PointerMatch::Match]
    );
    assert_eq!(
        verdicts(&p, Some(&call("search")), Some(&call("lookup"))),
        [PointerMatch::Mismatch]
    );
    let no_tools = json!({"choices": [{"message": {"content": "hi"}}]});
    assert_eq!(
        verdicts(&p, Some(&call("search")), Some(&no_tools)),
        [PointerMatch::Mismatch]
    );
}

#[test]
fn numbers_compare_by_value_and_keys_in_any_order() {
    let a: Value = serde_json::from_str(r#"{"n": 1, "o": {"a": 1, "b": [2.5, -3]}}"#).unwrap();
    let b: Value =
        serde_json::from_str(r#"{"o": {"b": [2.5, -3.0], "a": 1.0}, "n": 1.0}"#).unwrap();
    let c: Value = serde_json::from_str(r#"{"o": {"b": [2.5, -3.0], "a": 1.5}, "n": 1}"#).unwrap();
    assert!(json_eq(&a, &b));
    assert!(!json_eq(&a, &c));
    assert!(!json_eq(&json!(-1), &json!(u64::MAX)));
    assert!(!json_eq(&json!("1"), &json!(1)));
    assert!(!json_eq(&json!([1]), &json!([1, 2])));
    assert!(!json_eq(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
    assert!(!json_eq(&json!({"a": 1, "b": 2}), &json!({"a": 1})));
    assert_eq!(verdicts(&[""], Some(&a), Some(&b)), [PointerMatch::Match]);
}

#[test]
fn an_uncomparable_document_makes_every_pointer_a_mismatch() {
    let a = json!({"x": 1});
    let p = ["/x", "/absent"];
    let all_mismatch = [PointerMatch::Mismatch, PointerMatch::Mismatch];
    assert_eq!(verdicts(&p, Some(&a), None), all_mismatch);
    assert_eq!(verdicts(&p, None, Some(&a)), all_mismatch);
    assert_eq!(verdicts(&p, None, None), all_mismatch);
}

#[test]
fn compare_names_each_pointer_in_order() {
    let a = json!({"x": 1, "y": 2});
    let b = json!({"x": 1, "y": 3});
    let pointers = ptrs(&["/y", "/x"]);
    let got: Vec<(&str, PointerMatch)> = compare(&pointers, Some(&a), Some(&b)).collect();
    assert_eq!(
        got,
        [("/y", PointerMatch::Mismatch), ("/x", PointerMatch::Match)]
    );
}

// ---- SSE reassembly ----

#[test]
fn content_is_concatenated_role_and_finish_reason_kept() {
    let mut chunks = vec![chunk(0, json!({"role": "assistant", "content": ""}), None)];
    let words = [
        "The", " quick", " brown", " fox", " jumps", " over", " it", ".",
    ];
    for w in words {
        chunks.push(chunk(0, json!({ "content": w }), None));
    }
    chunks.push(chunk(0, json!({}), Some("length")));
    // A late chunk with a null finish_reason must not erase it.
    chunks.push(chunk(0, json!({}), None));
    let doc = capture(SSE, &sse_frames(&chunks)).unwrap();
    assert_eq!(
        doc,
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 7,
            "model": "m",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "The quick brown fox jumps over it."},
                "finish_reason": "length",
            }],
        })
    );
}

#[test]
fn role_comes_from_the_first_delta_that_has_one() {
    let chunks = [
        chunk(0, json!({"content": "a"}), None),
        chunk(0, json!({"role": "tool", "content": "b"}), None),
        chunk(0, json!({"role": "assistant"}), Some("stop")),
    ];
    let doc = capture(SSE, &sse_frames(&chunks)).unwrap();
    assert_eq!(doc["choices"][0]["message"]["role"], "tool");
    assert_eq!(doc["choices"][0]["message"]["content"], "ab");
}

#[test]
fn no_content_delta_gives_null_content_and_default_role() {
    let chunks = [chunk(0, json!({}), Some("stop"))];
    let doc = capture(SSE, &sse_frames(&chunks)).unwrap();
    assert_eq!(doc["choices"][0]["message"]["role"], "assistant");
    assert_eq!(doc["choices"][0]["message"]["content"], Value::Null);
    assert!(doc["choices"][0]["message"].get("tool_calls").is_none());
}

#[test]
fn usage_chunk_with_empty_choices_sets_usage() {
    let usage = json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5});
    let chunks = [
        chunk(
            0,
            json!({"role": "assistant", "content": "hi"}),
            Some("stop"),
        ),
        json!({"id": "chatcmpl-1", "model": "m", "choices": [], "usage": usage}),
    ];
    let doc = capture(SSE, &sse_frames(&chunks)).unwrap();
    assert_eq!(doc["usage"], usage);
    assert_eq!(doc["choices"].as_array().map(Vec::len), Some(1));
    // Without that chunk there is no usage key at all.
    let doc = capture(SSE, &sse_frames(&chunks[..1])).unwrap();
    assert!(doc.get("usage").is_none());
}

#[test]
fn parallel_tool_calls_interleaved_are_merged_by_index() {
    let tc = |v: Value| chunk(0, json!({ "tool_calls": [v] }), None);
    let chunks = [
        chunk(0, json!({"role": "assistant", "content": null}), None),
        tc(json!({"index": 0, "id": "call_a", "type": "function",
                  "function": {"name": "get_weather", "arguments": ""}})),
        tc(json!({"index": 1, "id": "call_b", "type": "function",
                  "function": {"name": "get_", "arguments": "{\"ci"}})),
        tc(json!({"index": 0, "function": {"arguments": "{\"city\":"}})),
        tc(json!({"index": 1, "function": {"name": "time", "arguments": "ty\":"}})),
        tc(json!({"index": 0, "function": {"arguments": "\"Paris\"}"}})),
        // A later id on the same index must not replace the first one.
        tc(json!({"index": 1, "id": "call_zzz", "function": {"arguments": "\"Oslo\"}"}})),
        chunk(0, json!({}), Some("tool_calls")),
    ];
    let doc = capture(SSE, &sse_frames(&chunks)).unwrap();
    assert_eq!(
        doc["choices"][0],
        json!({
            "index": 0,
            "message": {
                "role": "assistant",
                "content": null,
                "tool_calls": [
                    {"id": "call_a", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_b", "type": "function",
                     "function": {"name": "get_time", "arguments": "{\"city\":\"Oslo\"}"}},
                ],
            },
            "finish_reason": "tool_calls",
        })
    );
}

#[test]
fn two_tool_calls_in_one_delta_and_a_second_choice() {
    let chunks = [
        json!({"id": "c", "model": "m", "choices": [
            {"index": 1, "delta": {"role": "assistant", "content": "second"}, "finish_reason": null},
            {"index": 0, "delta": {"role": "assistant", "tool_calls": [
                {"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": "1"}},
                {"index": 1, "id": "b", "type": "function", "function": {"name": "g", "arguments": "2"}},
            ]}, "finish_reason": null},
        ]}),
        json!({"id": "c", "model": "m", "choices": [
            {"index": 0, "delta": {}, "finish_reason": "tool_calls"},
            {"index": 1, "delta": {}, "finish_reason": "stop"},
        ]}),
    ];
    let doc = capture(SSE, &sse_frames(&chunks)).unwrap();
    assert_eq!(doc.pointer("/choices/0/index"), Some(&json!(0)));
    assert_eq!(
        doc.pointer("/choices/0/message/tool_calls/1/function/name"),
        Some(&json!("g"))
    );
    assert_eq!(
        doc.pointer("/choices/1/message/content"),
        Some(&json!("second"))
    );
    assert_eq!(
        doc.pointer("/choices/1/finish_reason"),
        Some(&json!("stop"))
    );
}

#[test]
fn events_split_mid_line_across_frames() {
    let chunks = [
        chunk(0, json!({"role": "assistant", "content": "héllo "}), None),
        chunk(0, json!({"content": "wörld"}), Some("stop")),
    ];
    let whole: Vec<u8> = sse_frames(&chunks).concat();
    let expected = capture(SSE, &[Bytes::from(whole.clone())]).unwrap();
    assert_eq!(expected["choices"][0]["message"]["content"], "héllo wörld");
    // Every single split point, including inside "data:", inside a UTF-8
    // character, and between "\n" and "\n".
    for at in 0..=whole.len() {
        let frames = [
            Bytes::copy_from_slice(&whole[..at]),
            Bytes::copy_from_slice(&whole[at..]),
        ];
        assert_eq!(
            capture(SSE, &frames).as_ref(),
            Some(&expected),
            "split at {at}"
        );
    }
    // And one byte per frame.
    let bytes: Vec<Bytes> = whole
        .iter()
        .map(|b| Bytes::copy_from_slice(&[*b]))
        .collect();
    assert_eq!(capture(SSE, &bytes), Some(expected));
}

#[test]
fn done_ends_the_stream_and_comments_and_fields_are_ignored() {
    let body = concat!(
        ": keep-alive comment\r\n",
        "event: message\r\n",
        "id: 1\r\n",
        "retry: 1000\r\n",
        "data: {\"id\":\"x\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"kept\"}}]}\r\n",
        "\r\n",
        "data: [DONE]\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" after done\"}}]}\n\n",
        "data: not json after done is never read\n\n",
    );
    let doc = capture(SSE, &[Bytes::from_static(body.as_bytes())]).unwrap();
    assert_eq!(doc["choices"][0]["message"]["content"], "kept");
    assert_eq!(doc["id"], "x");
}

#[test]
fn multi_line_data_is_joined_and_a_missing_done_is_tolerated() {
    let body = "data: {\"choices\":[{\"index\":0,\ndata: \"delta\":{\"content\":\"a\"}}]}\n\n";
    let doc = capture(SSE, &[Bytes::from_static(body.as_bytes())]).unwrap();
    assert_eq!(doc["choices"][0]["message"]["content"], "a");
    // Joined with "\n", not glued: `1` and `2` do not become `12`.
    let body = "data: {\"choices\":[],\"created\":1\ndata: 2}\n\n";
    assert_eq!(capture(SSE, &[Bytes::from_static(body.as_bytes())]), None);
}

#[test]
fn broken_streams_are_not_comparable() {
    for body in [
        "",
        ": only a comment\n\n",
        "data: [DONE]\n\n",
        "data: {\"choices\":[]}\n\ndata: {not json}\n\n",
        "data: [1,2]\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"cut",
        "data: {\"error\":{\"message\":\"overloaded\"}}\n\n",
    ] {
        assert_eq!(
            capture(SSE, &[Bytes::from_static(body.as_bytes())]),
            None,
            "{body:?}"
        );
    }
}

#[test]
fn json_body_is_parsed_whole_across_frames() {
    let frames = [
        Bytes::from_static(b"{\"a\": [1, "),
        Bytes::from_static(b"2], \"b\": \"c\"}"),
    ];
    assert_eq!(capture(JSON, &frames), Some(json!({"a": [1, 2], "b": "c"})));
    assert_eq!(capture(JSON, &[Bytes::from_static(b"{\"a\":")]), None);
    assert_eq!(capture(JSON, &[]), None);
    // +json types and a missing content type are read as JSON; others not.
    let one = Bytes::from_static(b"{\"a\":1}");
    assert_eq!(
        capture("application/problem+json", std::slice::from_ref(&one)),
        Some(json!({"a": 1}))
    );
    let mut c = Capture::for_content_type(None);
    c.observe(&one);
    assert_eq!(c.finish(), Some(json!({"a": 1})));
    assert_eq!(capture("text/html", &[one]), None);
}

#[test]
fn stream_and_json_of_the_same_answer_match() {
    let json_doc = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me check.",
            "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "search", "arguments": "{\"q\":\"x\"}"}}],
        }}],
    });
    let tc = |v: Value| chunk(0, json!({ "tool_calls": [v] }), None);
    let chunks = [
        chunk(0, json!({"role": "assistant", "content": "Let me"}), None),
        chunk(0, json!({"content": " check."}), None),
        tc(json!({"index": 0, "id": "call_1", "type": "function",
                  "function": {"name": "sea", "arguments": ""}})),
        tc(json!({"index": 0, "function": {"name": "rch", "arguments": "{\"q\":"}})),
        tc(json!({"index": 0, "function": {"arguments": "\"x\"}"}})),
        chunk(0, json!({}), Some("tool_calls")),
    ];
    let primary = capture(JSON, &[Bytes::from(json_doc.to_string())]);
    let shadow = capture(SSE, &sse_frames(&chunks));
    let p = [
        "/choices/0/message/content",
        "/choices/0/message/tool_calls/0/function/name",
        "/choices/0/message/tool_calls/0/function/arguments",
        "/choices/0/message",
        "/choices/0/finish_reason",
        "/usage",
    ];
    assert_eq!(
        verdicts(&p, primary.as_ref(), shadow.as_ref()),
        [PointerMatch::Match; 6]
    );
}

// ---- against the real mock backend ----

fn mock_pair(request: &str, chunks: usize) -> (Value, Value, Reply) {
    let req = ChatRequest::parse(request.as_bytes());
    let reply = Reply::new("v1", &req, 42, 1_700_000_000);
    let json_doc = capture(JSON, &[reply.completion_json()]).unwrap();
    let sse_doc = capture(SSE, &reply.sse_events(chunks)).unwrap();
    (json_doc, sse_doc, reply)
}

#[test]
fn mock_plain_reply_streamed_equals_its_json() {
    let request = r#"{"model":"gpt-x","messages":[{"role":"user","content":"tell me about shadows and mirrors"}]}"#;
    for chunks in [1, 3, 7, 50] {
        let (json_doc, sse_doc, reply) = mock_pair(request, chunks);
        assert_eq!(sse_doc["choices"][0]["message"]["content"], reply.content());
        assert_eq!(
            sse_doc["choices"][0]["message"]["content"],
            json_doc["choices"][0]["message"]["content"]
        );
        // The whole reassembled document is the non-streamed one.
        assert_eq!(sse_doc, json_doc, "chunks {chunks}");
    }
}

#[test]
fn mock_tool_reply_streamed_equals_its_json() {
    let request = r#"{"model":"gpt-x","stream":true,
        "messages":[{"role":"user","content":"what is the weather in Paris"}],
        "tools":[{"type":"function","function":{"name":"get_weather","parameters":{}}}]}"#;
    for chunks in [1, 4, 9] {
        let (json_doc, sse_doc, _) = mock_pair(request, chunks);
        let name = "/choices/0/message/tool_calls/0/function/name";
        assert_eq!(sse_doc.pointer(name), Some(&json!("get_weather")));
        assert_eq!(sse_doc.pointer(name), json_doc.pointer(name));
        assert_eq!(
            sse_doc["choices"][0]["message"]["content"],
            json_doc["choices"][0]["message"]["content"]
        );
        assert_eq!(sse_doc, json_doc, "chunks {chunks}");
        let p = [name, "/choices/0/message/content", "/usage"];
        assert_eq!(
            verdicts(&p, Some(&json_doc), Some(&sse_doc)),
            [PointerMatch::Match; 3]
        );
    }
}

#[test]
fn mock_replies_from_two_versions_mismatch_on_content() {
    let req = ChatRequest::parse(br#"{"messages":[{"role":"user","content":"hi"}]}"#);
    let a = Reply::new("v1", &req, 1, 0);
    let b = Reply::new("v2", &req, 1, 0);
    let a = capture(JSON, &[a.completion_json()]);
    let b = capture(SSE, &b.sse_events(3));
    assert_eq!(
        verdicts(
            &["/choices/0/message/content", "/choices/0/finish_reason"],
            a.as_ref(),
            b.as_ref()
        ),
        [PointerMatch::Mismatch, PointerMatch::Match]
    );
}

// ---- the cap ----

#[test]
fn past_the_cap_nothing_is_kept_and_finish_is_none() {
    let ct = HeaderValue::from_static(JSON);
    let mut c = Capture::with_cap(Some(&ct), 10);
    let first = BytesMut::from(&b"{\"a\":"[..]).freeze();
    c.observe(&first);
    assert!(!first.is_unique(), "the capture holds a reference");
    assert!(!c.overflowed());
    let second = Bytes::from_static(b"\"123456789\"}");
    c.observe(&second);
    assert!(c.overflowed());
    assert!(c.frames.is_empty());
    assert!(first.is_unique(), "the frame was released at overflow");
    // Later frames are not kept either.
    let third = BytesMut::from(&b" "[..]).freeze();
    c.observe(&third);
    assert!(third.is_unique());
    assert_eq!(c.finish(), None);
}

#[test]
fn exactly_at_the_cap_is_kept() {
    let body = Bytes::from_static(b"{\"a\":1}");
    let ct = HeaderValue::from_static(JSON);
    let mut c = Capture::with_cap(Some(&ct), body.len());
    c.observe(&body);
    assert!(!c.overflowed());
    assert_eq!(c.finish(), Some(json!({"a": 1})));
}

#[test]
fn other_content_types_keep_nothing() {
    let ct = HeaderValue::from_static("text/plain");
    let mut c = Capture::for_content_type(Some(&ct));
    let frame = BytesMut::from(&b"{}"[..]).freeze();
    c.observe(&frame);
    assert!(frame.is_unique());
    assert_eq!(c.finish(), None);
}

// ---- hostile input ----

proptest! {
    #[test]
    fn random_bytes_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        cut in any::<prop::sample::Index>(),
    ) {
        let at = cut.index(body.len() + 1);
        let frames = [
            Bytes::copy_from_slice(&body[..at]),
            Bytes::copy_from_slice(&body[at..]),
        ];
        for ct in [SSE, JSON] {
            let doc = capture(ct, &frames);
            let pointers = ptrs(&["/choices/0/message/content", "", "/~1x/~0"]);
            let _ = compare(&pointers, doc.as_ref(), doc.as_ref()).count();
        }
    }

    #[test]
    fn sse_shaped_garbage_never_panics(
        lines in proptest::collection::vec(
            prop_oneof![
                Just("data: [DONE]".to_owned()),
                Just(String::new()),
                Just(": c".to_owned()),
                "data: \\{\"choices\":\\[\\{\"index\":[0-9]{1,20},\"delta\":\\{\"tool_calls\":\\[\\{\"index\":-?[0-9]{1,3},\"function\":\\{\"name\":\"[a-z]{0,3}\"\\}\\}\\]\\}\\}\\]\\}",
                "data: [ -~]{0,40}",
            ],
            0..20,
        ),
    ) {
        let body = lines.join("\n");
        let _ = capture(SSE, &[Bytes::from(body)]);
    }

    #[test]
    fn mock_stream_split_anywhere_reassembles_the_same(
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        chunks in 1usize..12,
    ) {
        let request = r#"{"messages":[{"role":"user","content":"split me anywhere please"}],
            "tools":[{"function":{"name":"lookup"}}]}"#;
        let reply = Reply::new("v", &ChatRequest::parse(request.as_bytes()), 1, 0);
        let whole: Vec<u8> = reply.sse_events(chunks).concat();
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(whole.len() + 1)).collect();
        at.sort_unstable();
        let mut frames = Vec::new();
        let mut start = 0;
        for end in at.into_iter().chain([whole.len()]) {
            frames.push(Bytes::copy_from_slice(&whole[start..end]));
            start = end;
        }
        let expected = capture(JSON, &[reply.completion_json()]);
        prop_assert!(expected.is_some());
        prop_assert_eq!(capture(SSE, &frames), expected);
    }
}
