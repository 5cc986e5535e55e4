//! The per-API work on a response body: what the hot path pays to read
//! usage from each API's event stream, and what compare and eval pay once
//! per answer to fold a stream back into its document.
//!
//! The bodies are `bench/sse/*.sse`, the same files `bench/apis.sh` serves
//! from its upstream: a 20-token answer as OpenAI Chat
//! Completions chunks (the shared harness's chat stream), the Responses
//! API's events and Anthropic Messages events.
//!
//! * `usage_sse/API/one_frame`: the whole stream in one frame (how the
//!   bench upstream writes it);
//! * `usage_sse/API/per_event`: one frame per event (how a model streams),
//!   the scanner's per-frame cost included;
//! * `usage_sse_naive/API`: beside it, parsing every `data:` line as JSON,
//!   which is what the memchr pre-filter saves;
//! * `reassemble/API`: the stream into its non-streamed document;
//! * `compare_json/picked`: a non-streamed answer (`bench/json/chat.json`,
//!   the shared harness's) read for the value at a shadow's compare
//!   pointer, what a compared shadow pays per answer; beside it,
//!   `compare_json/pruned`, the pruned document it is held to, and
//!   `compare_json/whole`, a `Value` parse of all of it.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use cutover::api::usage::UsageScanner;
use cutover::api::{self, Api};
use cutover::shadow::reach::{Picked, Reach};
use http::HeaderValue;

const STREAMS: [(Api, &[u8]); 3] = [
    (Api::Chat, include_bytes!("../bench/sse/chat.sse")),
    (Api::Responses, include_bytes!("../bench/sse/responses.sse")),
    (Api::Messages, include_bytes!("../bench/sse/messages.sse")),
];

fn events(body: &'static [u8]) -> Vec<Bytes> {
    let text = Bytes::from_static(body);
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(at) = memchr_blank(&body[start..]) {
        out.push(text.slice(start..start + at + 2));
        start += at + 2;
    }
    if start < body.len() {
        out.push(text.slice(start..));
    }
    out
}

fn memchr_blank(text: &[u8]) -> Option<usize> {
    text.windows(2).position(|w| w == b"\n\n")
}

fn scan(api: Api, frames: &[Bytes]) -> (Option<u64>, Option<u64>) {
    static SSE: HeaderValue = HeaderValue::from_static("text/event-stream");
    let mut scanner = UsageScanner::new(Some(api), Some(&SSE));
    for frame in frames {
        scanner.observe(frame);
    }
    let usage = scanner.finish();
    (usage.input, usage.output)
}

fn usage(c: &mut Criterion) {
    let mut group = c.benchmark_group("usage_sse");
    for (api, body) in STREAMS {
        // Each API's stream reads the same usage: 24 in, 20 out.
        let whole = [Bytes::from_static(body)];
        assert_eq!(scan(api, &whole), (Some(24), Some(20)), "{api:?}");
        let per_event = events(body);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(
            BenchmarkId::new(api.as_str(), "one_frame"),
            &whole,
            |b, f| b.iter(|| black_box(scan(api, black_box(f)))),
        );
        group.bench_with_input(
            BenchmarkId::new(api.as_str(), "per_event"),
            &per_event,
            |b, f| b.iter(|| black_box(scan(api, black_box(f)))),
        );
    }
    group.finish();

    let mut group = c.benchmark_group("usage_sse_naive");
    for (api, body) in STREAMS {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(api.as_str(), |b| {
            b.iter(|| {
                let mut found = None;
                for line in black_box(body).split(|&b| b == b'\n') {
                    if let Some(data) = line.strip_prefix(b"data: ")
                        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(data)
                        && v.get("usage").is_some()
                    {
                        found = Some(v);
                    }
                }
                black_box(found)
            })
        });
    }
    group.finish();
}

fn reassemble(c: &mut Criterion) {
    let mut group = c.benchmark_group("reassemble");
    for (api, body) in STREAMS {
        assert!(
            api::reassemble(Some(api), body).complete().is_some(),
            "{api:?}"
        );
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(api.as_str(), |b| {
            b.iter(|| black_box(api::reassemble(Some(api), black_box(body))))
        });
    }
    group.finish();
}

fn compare_json(c: &mut Criterion) {
    const ANSWER: &[u8] = include_bytes!("../bench/json/chat.json");
    const POINTER: &str = "/choices/0/message/content";
    let reach = Reach::of([POINTER]);
    let whole: serde_json::Value = serde_json::from_slice(ANSWER).expect("the answer is JSON");
    let pruned = reach.parse(ANSWER).expect("the answer reads");
    assert_eq!(pruned.pointer(POINTER), whole.pointer(POINTER));
    let mut group = c.benchmark_group("compare_json");
    group.throughput(Throughput::Bytes(ANSWER.len() as u64));
    let shared = std::sync::Arc::new(Reach::of([POINTER]));
    let picked = Picked::read(&shared, ANSWER).expect("the answer reads");
    assert_eq!(picked.at(POINTER), whole.pointer(POINTER));
    group.bench_function("picked", |b| {
        b.iter(|| black_box(Picked::read(&shared, black_box(ANSWER))))
    });
    group.bench_function("pruned", |b| {
        b.iter(|| black_box(reach.parse(black_box(ANSWER))))
    });
    group.bench_function("whole", |b| {
        b.iter(|| {
            black_box(serde_json::from_slice::<serde_json::Value>(black_box(
                ANSWER,
            )))
        })
    });
    group.finish();
}

criterion_group!(benches, usage, reassemble, compare_json);
criterion_main!(benches);
