//! Micro-benchmarks of the per-request hot functions.
//!
//! * `sticky_key_to_version`: header lookup → blake3 bucket → version index
//!   (target: under 200 ns per key). Beside it, the naive version that
//!   formats the salted key into a `String` first, to show what the
//!   borrowed, streaming hash saves.
//! * `request_head_rewrite`: hop-by-hop stripping, forwarded headers,
//!   request id and traceparent on a typical chat request head.
//! * `feedback_record` and `feedback_record_fleet`: what a request pays to
//!   be found by feedback later, alone and with `[cluster]` (where the
//!   record is also handed to the fleet's queue: a blake3 digest of the
//!   request id and a `try_send`; a thread drains the queue as the fleet's
//!   writer would).

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use cutover::config::{StickySource, WeightBps};
use cutover::proxy::headers;
use cutover::routing::{BucketTable, bucket, sticky_key};
use http::{HeaderMap, HeaderName, HeaderValue};

fn chat_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "gateway.internal:8080"),
        ("content-type", "application/json"),
        ("authorization", "Bearer sk-bench"),
        ("x-user-id", "user-417"),
        ("user-agent", "python-httpx/0.27"),
        ("accept", "*/*"),
        ("connection", "keep-alive"),
        ("content-length", "190"),
    ] {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

fn split(c: &mut Criterion) {
    let headers = chat_headers();
    let sources = vec![
        StickySource::Header(HeaderName::from_static("x-session-id")),
        StickySource::Header(HeaderName::from_static("x-user-id")),
        StickySource::ClientIp,
    ];
    let table = BucketTable::new([
        WeightBps::new(9000).unwrap_or_default(),
        WeightBps::new(1000).unwrap_or_default(),
    ]);
    let ip = "10.1.2.3"
        .parse()
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    c.bench_function("sticky_key_to_version", |b| {
        b.iter(|| {
            let key = sticky_key(black_box(&sources), black_box(&headers), None, ip);
            let bucket = key.map_or(0, |k| bucket(b"chat", k.as_bytes()));
            black_box(table.index_of(bucket))
        })
    });
    c.bench_function("sticky_key_to_version_naive_string", |b| {
        b.iter(|| {
            // Allocate the salted key, hash the whole thing, parse the hex.
            let key = black_box(&headers)
                .get("x-user-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let salted = format!("chat\0{key}");
            let hex = blake3::hash(salted.as_bytes()).to_hex();
            let first = u64::from_str_radix(&hex[..16], 16)
                .unwrap_or(0)
                .swap_bytes();
            black_box(table.index_of((first % 10_000) as u16))
        })
    });
}

fn head_rewrite(c: &mut Criterion) {
    let template = chat_headers();
    let peer: SocketAddr = "10.1.2.3:40000"
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 1)));
    c.bench_function("request_head_rewrite", |b| {
        b.iter_batched(
            || template.clone(),
            |mut h| {
                let id = headers::request_id(&h);
                headers::prepare_forward(&mut h, None, peer, false, &id);
                black_box(h)
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

fn feedback_record(c: &mut Criterion) {
    use cutover::telemetry::VersionMetrics;
    use cutover::telemetry::feedback_index::FeedbackIndex;
    use std::sync::Arc;
    let metrics = Arc::new(VersionMetrics::new("chat", "v2"));
    let ids: Vec<String> = (0..4096)
        .map(|i| format!("5f0c6a1e-2b7d-4c1a-9e4f-{i:012x}"))
        .collect();
    let alone = FeedbackIndex::default();
    let mut n = 0usize;
    c.bench_function("feedback_record", |b| {
        b.iter(|| {
            n = (n + 1) % ids.len();
            alone.record(black_box(ids[n].as_bytes()), &metrics)
        })
    });
    let fleet = FeedbackIndex::default();
    let (tx, mut rx) = tokio::sync::mpsc::channel(65_536);
    fleet.forward_to(tx);
    let drain = std::thread::spawn(move || while rx.blocking_recv().is_some() {});
    c.bench_function("feedback_record_fleet", |b| {
        b.iter(|| {
            n = (n + 1) % ids.len();
            fleet.record(black_box(ids[n].as_bytes()), &metrics)
        })
    });
    drop(fleet);
    let _ = drain.join();
}

criterion_group!(benches, split, head_rewrite, feedback_record);
criterion_main!(benches);
