//! `cutover eval` end to end: the real binary against mock backends and
//! test-local servers on 127.0.0.1:0, exit codes, the table, the JSON
//! report and JUnit parsed back.

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Binary, backend, dead_port, healthy_backend, loopback0, run_binary};
use cutover::mock::{MockArgs, MockHandle};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------- helpers

/// A golden line for a chat request whose last user message is `say`.
fn chat_case(id: &str, say: &str, expect: Value) -> String {
    json!({
        "id": id,
        "request": {
            "method": "POST",
            "path": "/v1/chat/completions",
            "headers": {},
            "body": {"model": "m", "messages": [{"role": "user", "content": say}]},
        },
        "expect": expect,
    })
    .to_string()
}

fn stream_case(id: &str, say: &str, expect: Value) -> String {
    json!({
        "id": id,
        "request": {
            "path": "/v1/chat/completions",
            "body": {"model": "m", "stream": true, "messages": [{"role": "user", "content": say}]},
        },
        "expect": expect,
    })
    .to_string()
}

fn write_golden(dir: &Path, lines: &[String]) -> PathBuf {
    let path = dir.join("cases.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write golden");
    path
}

/// Run `cutover eval --golden G --target T ARGS...`.
async fn eval(golden: &Path, target: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let golden = golden.display().to_string();
    let mut all = vec!["eval", "--golden", golden.as_str(), "--target", target];
    all.extend_from_slice(args);
    run_binary(&all, &[]).await
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("report written");
    serde_json::from_str(&text).expect("report is JSON")
}

/// The case named `id` in a report side (`target` or `baseline`).
fn case<'a>(report: &'a Value, side: &str, id: &str) -> &'a Value {
    report[side]["cases"]
        .as_array()
        .and_then(|cases| cases.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no case {id} on {side}: {report:#}"))
}

fn failure_kinds(case: &Value) -> Vec<String> {
    case["failures"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|f| f["expectation"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn mock_with(name: &str, tweak: impl FnOnce(&mut MockArgs)) -> MockHandle {
    let mut args = MockArgs {
        name: name.into(),
        ..MockArgs::new(loopback0())
    };
    tweak(&mut args);
    backend(args).await
}

/// A test-local HTTP/1.1 server answering every request with `handler`.
async fn serve<F, Fut>(handler: F) -> (String, JoinHandle<()>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, task)
}

fn json_response(body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Tracks requests in flight and the highest count seen.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
    total: AtomicUsize,
}

/// Answers after `delay`, recording how many requests overlapped.
async fn concurrency_recording_backend(delay: Duration) -> (String, Arc<InFlight>, JoinHandle<()>) {
    let stats = Arc::new(InFlight::default());
    let seen = Arc::clone(&stats);
    let (url, task) = serve(move |_req| {
        let stats = Arc::clone(&seen);
        async move {
            let now = stats.now.fetch_add(1, Ordering::SeqCst) + 1;
            stats.max.fetch_max(now, Ordering::SeqCst);
            stats.total.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            stats.now.fetch_sub(1, Ordering::SeqCst);
            json_response(r#"{"ok":true}"#.into())
        }
    })
    .await;
    (url, stats, task)
}

fn junit_counts(xml: &str) -> (usize, usize, usize, Vec<(String, Option<String>)>) {
    let doc =
        roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("JUnit is not XML: {e}\n{xml}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suites: Vec<_> = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    assert_eq!(suites.len(), 1, "{xml}");
    let suite = suites[0];
    let attr = |name: &str| -> usize {
        let value = suite
            .attribute(name)
            .unwrap_or_else(|| panic!("testsuite has no {name}"));
        assert_eq!(root.attribute(name), Some(value), "testsuites {name}");
        value.parse().unwrap_or_else(|_| panic!("{name}={value}"))
    };
    for required in ["name", "time", "timestamp"] {
        assert!(suite.attribute(required).is_some(), "testsuite {required}");
    }
    let cases: Vec<(String, Option<String>)> = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|tc| {
            assert!(tc.attribute("classname").is_some() && tc.attribute("time").is_some());
            let outcome = tc.children().find(|n| n.is_element()).map(|n| {
                assert!(
                    n.attribute("message").is_some(),
                    "{} has no message",
                    n.tag_name().name()
                );
                n.tag_name().name().to_owned()
            });
            (tc.attribute("name").unwrap_or_default().to_owned(), outcome)
        })
        .collect();
    let failures = cases
        .iter()
        .filter(|c| c.1.as_deref() == Some("failure"))
        .count();
    let errors = cases
        .iter()
        .filter(|c| c.1.as_deref() == Some("error"))
        .count();
    assert_eq!(attr("tests"), cases.len(), "{xml}");
    assert_eq!(attr("failures"), failures, "{xml}");
    assert_eq!(attr("errors"), errors, "{xml}");
    (cases.len(), failures, errors, cases)
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn each_expectation_kind_passes_and_fails() {
    // 200 ms per answer, so max_latency has something to measure.
    let agent = mock_with("agent", |a| a.latency = Duration::from_millis(200)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let schema_ok = json!({"type": "object", "required": ["choices"],
        "properties": {"choices": {"type": "array", "minItems": 1}}});
    let schema_bad = json!({"type": "object",
        "properties": {"choices": {"type": "array", "items": {"properties": {"message": {"properties": {"content": {"type": "integer"}}}}}}}});
    let golden = write_golden(
        dir.path(),
        &[
            chat_case("status-pass", "hi", json!({"status": 200})),
            chat_case("status-fail", "hi", json!({"status": 201})),
            chat_case(
                "contains-pass",
                "refund please",
                json!({"contains": ["Hello from agent", "refund please"]}),
            ),
            chat_case(
                "contains-fail",
                "hi",
                json!({"contains": ["Hello from agent", "not in the answer"]}),
            ),
            chat_case(
                "json-pass",
                "hi",
                json!({"json": {"/choices/0/message/role": "assistant", "/usage/prompt_tokens": 1}}),
            ),
            chat_case(
                "json-fail",
                "hi",
                json!({"json": {"/choices/0/message/role": "user"}}),
            ),
            chat_case("schema-pass", "hi", json!({"json_schema": schema_ok})),
            chat_case("schema-fail", "hi", json!({"json_schema": schema_bad})),
            chat_case("latency-pass", "hi", json!({"max_latency": "5s"})),
            chat_case("latency-fail", "hi", json!({"max_latency": "50ms"})),
        ],
    );
    let report = dir.path().join("report.json");
    let junit = dir.path().join("junit.xml");
    let (code, out, err) = eval(
        &golden,
        &agent.url(),
        &[
            "--concurrency",
            "10",
            "--report-json",
            report.to_str().expect("utf-8"),
            "--junit",
            junit.to_str().expect("utf-8"),
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{out}\n{err}");
    let r = read_json(&report);
    for kind in ["status", "contains", "json", "schema", "latency"] {
        let pass = case(&r, "target", &format!("{kind}-pass"));
        assert_eq!(pass["passed"], true, "{pass:#}");
        let fail = case(&r, "target", &format!("{kind}-fail"));
        assert_eq!(fail["passed"], false, "{fail:#}");
        let want = match kind {
            "schema" => "json_schema",
            "latency" => "max_latency",
            k => k,
        };
        assert_eq!(failure_kinds(fail), [want], "{fail:#}");
    }
    // What came back, and why, in the report and the table.
    let status_fail = &case(&r, "target", "status-fail")["failures"][0];
    assert_eq!(
        (
            status_fail["expected"].as_str(),
            status_fail["got"].as_str()
        ),
        (Some("201"), Some("200"))
    );
    let json_fail = &case(&r, "target", "json-fail")["failures"][0];
    assert_eq!(json_fail["got"], "\"assistant\"");
    let schema_fail = &case(&r, "target", "schema-fail")["failures"][0];
    assert!(
        schema_fail["reason"]
            .as_str()
            .is_some_and(|s| s.contains("/choices/0/message/content")),
        "{schema_fail:#}"
    );
    assert!(out.contains("FAIL contains-fail (line 4)"), "{out}");
    assert!(
        out.contains("contains: expected contains \"not in the answer\""),
        "{out}"
    );
    assert!(out.contains("schema compliance      50.0% (1/2)"), "{out}");
    let s = &r["target"]["summary"];
    assert_eq!(
        (s["cases"].as_u64(), s["passed"].as_u64()),
        (Some(10), Some(5))
    );
    assert_eq!(s["pass_rate"], 0.5);
    assert_eq!(s["schema_compliance"], 0.5);
    // Plain progress lines: stderr is not a terminal here.
    assert!(err.contains("[ 1/10] target"), "{err}");

    let xml = std::fs::read_to_string(&junit).expect("junit written");
    let (tests, failures, errors, cases) = junit_counts(&xml);
    assert_eq!((tests, failures, errors), (10, 5, 0));
    let failed: Vec<&str> = cases
        .iter()
        .filter(|c| c.1.is_some())
        .map(|c| c.0.as_str())
        .collect();
    assert_eq!(
        failed,
        [
            "status-fail",
            "contains-fail",
            "json-fail",
            "schema-fail",
            "latency-fail"
        ]
    );
}

#[tokio::test]
async fn a_streamed_target_is_reassembled_before_the_checks() {
    // Seven chunks: the phrase is split across several SSE events.
    let agent = mock_with("streamer", |a| a.chunks = 7).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let golden = write_golden(
        dir.path(),
        &[stream_case(
            "stream",
            "alpha beta gamma delta",
            json!({
                "status": 200,
                "contains": ["streamer: alpha beta gamma delta"],
                "json": {
                    "/object": "chat.completion",
                    "/choices/0/message/content": "Hello from streamer: alpha beta gamma delta",
                    "/choices/0/finish_reason": "stop",
                },
                "json_schema": {"type": "object", "required": ["usage"]},
            }),
        )],
    );
    let report = dir.path().join("report.json");
    let (code, out, err) = eval(
        &golden,
        &agent.url(),
        &[
            "--cost",
            "1000000,1000000",
            "--report-json",
            report.to_str().expect("utf-8"),
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    let r = read_json(&report);
    let c = case(&r, "target", "stream");
    assert_eq!(
        (c["passed"].as_bool(), c["streamed"].as_bool()),
        (Some(true), Some(true)),
        "{c:#}"
    );
    // Usage came from the stream's last chunk: 4 prompt words, and
    // "Hello from streamer: alpha beta gamma delta" is 7 words.
    assert_eq!(c["usage"], json!({"input": 4, "output": 7}));
    assert_eq!(c["cost_usd"], 11.0);
    assert_eq!(r["target"]["summary"]["cost_per_request_usd"], 11.0);
}

#[tokio::test]
async fn baseline_runs_side_by_side_with_headers_and_deltas() {
    let slow = mock_with("candidate", |a| a.latency = Duration::from_millis(500)).await;
    let fast = healthy_backend("stable").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut pinned_case: Value =
        serde_json::from_str(&chat_case("pinned", "hi", json!({}))).expect("json");
    pinned_case["request"]["headers"] = json!({"x-cutover-version": "v9", "x-case": "kept"});
    let golden = write_golden(
        dir.path(),
        &[
            pinned_case.to_string(),
            chat_case("plain", "hi", json!({"contains": ["Hello from"]})),
            chat_case("interactive", "hi", json!({"max_latency": "300ms"})),
        ],
    );
    let report = dir.path().join("report.json");
    let run = |drop: &'static str| {
        let golden = golden.clone();
        let report = report.clone();
        let (target, baseline) = (slow.url(), fast.url());
        async move {
            eval(
                &golden,
                &target,
                &[
                    "--baseline",
                    &baseline,
                    "--header",
                    "x-cutover-version:v2",
                    "-H",
                    "authorization: Bearer secret-token",
                    "--baseline-header",
                    "x-cutover-version:v1",
                    "--min-pass-rate",
                    "0",
                    "--max-pass-rate-drop",
                    drop,
                    "--report-json",
                    report.to_str().expect("utf-8"),
                ],
            )
            .await
        }
    };
    let (code, out, err) = run("50%").await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    // The table's header row: the two sides and their delta.
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().eq(["target", "baseline", "delta"])),
        "{out}"
    );
    assert!(
        out.contains("regressions (pass on the baseline, fail on the target): interactive"),
        "{out}"
    );
    assert!(out.contains("-33.3 pts"), "{out}");
    let r = read_json(&report);
    assert_eq!(r["comparison"]["regressions"], json!(["interactive"]));
    assert_eq!(r["comparison"]["deltas"]["pass_rate"], -0.333333);
    let p50 = r["comparison"]["deltas"]["p50_latency_ms"]
        .as_f64()
        .unwrap_or_default();
    assert!(p50 > 300.0, "p50 delta {p50}");
    assert_eq!(r["baseline"]["summary"]["passed"], 3);
    // Header values never reach the report: they may be credentials.
    assert!(
        !std::fs::read_to_string(&report)
            .unwrap_or_default()
            .contains("secret-token")
    );
    assert_eq!(
        r["settings"]["header_names"],
        json!(["x-cutover-version", "authorization"])
    );

    // --header reaches both sides and replaces the case's own value;
    // --baseline-header replaces it on the baseline only.
    let on = |mock: &MockHandle| {
        let rec = mock
            .stats()
            .records()
            .into_iter()
            .find(|r| r.body_json().is_some())
            .expect("a request");
        (
            rec.header("x-cutover-version").map(str::to_owned),
            rec.header("authorization").map(str::to_owned),
            rec.header("x-case").map(str::to_owned),
            mock.stats()
                .records()
                .iter()
                .filter(|r| r.header("x-cutover-version") == Some("v9"))
                .count(),
        )
    };
    let bearer = Some("Bearer secret-token".to_owned());
    let (v, auth, _, nine) = on(&slow);
    assert_eq!(
        (v.as_deref(), auth.clone(), nine),
        (Some("v2"), bearer.clone(), 0)
    );
    let (v, auth, _, nine) = on(&fast);
    assert_eq!((v.as_deref(), auth, nine), (Some("v1"), bearer, 0));
    let kept = slow
        .stats()
        .records()
        .iter()
        .filter(|r| r.header("x-case") == Some("kept"))
        .count();
    assert_eq!(kept, 1, "the case's other headers are kept");

    let (code, out, err) = run("0.2").await;
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(out.contains("BROKEN  max-pass-rate-drop"), "{out}");
    assert!(
        out.contains("result: FAIL (1 threshold broken: max-pass-rate-drop)"),
        "{out}"
    );
}

#[tokio::test]
async fn a_saved_baseline_report_stands_in_for_a_live_baseline() {
    let stable = healthy_backend("stable").await;
    let broken = mock_with("broken", |a| {
        a.status = Some(http::StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let golden = write_golden(
        dir.path(),
        &[
            chat_case("a", "hi", json!({"status": 200})),
            chat_case("b", "hello", json!({"contains": ["hello"]})),
        ],
    );
    let saved = dir.path().join("stable.json");
    let saved_arg = saved.to_str().expect("utf-8");
    let (code, out, err) = eval(&golden, &stable.url(), &["--report-json", saved_arg]).await;
    assert_eq!(code, Some(0), "{out}\n{err}");

    // A later run with no second live target: the saved report is the baseline.
    let report = dir.path().join("candidate.json");
    let args = [
        "--baseline-report",
        saved_arg,
        "--min-pass-rate",
        "0",
        "--max-pass-rate-drop",
        "10%",
        "--report-json",
        report.to_str().expect("utf-8"),
    ];
    let (code, out, err) = eval(&golden, &broken.url(), &args).await;
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "baseline  saved report {saved_arg} (from {})",
            stable.url()
        )),
        "{out}"
    );
    assert!(out.contains("BROKEN  max-pass-rate-drop"), "{out}");
    let r = read_json(&report);
    assert_eq!(r["baseline"]["report_file"], saved_arg);
    assert_eq!(r["baseline"]["summary"]["pass_rate"], 1.0);
    assert_eq!(r["comparison"]["regressions"], json!(["a", "b"]));
    assert_eq!(
        stable.stats().requests(),
        2,
        "the saved baseline is not replayed"
    );

    // The same candidate as the stable one holds the gate.
    let (code, out, err) = eval(&golden, &stable.url(), &args).await;
    assert_eq!(code, Some(0), "{out}\n{err}");

    // A file that is not a report is an input error, before anything is sent.
    let garbage = dir.path().join("garbage.json");
    std::fs::write(
        &garbage,
        "{\"schema_version\": 9, \"target\": {\"cases\": []}}",
    )
    .expect("write");
    let before = broken.stats().requests();
    let (code, _, err) = eval(
        &golden,
        &broken.url(),
        &["--baseline-report", garbage.to_str().expect("utf-8")],
    )
    .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("schema_version 9 is not supported"), "{err}");
    assert_eq!(broken.stats().requests(), before);
}

#[tokio::test]
async fn each_threshold_breaks_alone_with_exit_1() {
    let healthy = healthy_backend("agent").await;
    let slow = mock_with("slow", |a| a.latency = Duration::from_millis(250)).await;
    let failing = mock_with("failing", |a| {
        a.status = Some(http::StatusCode::INTERNAL_SERVER_ERROR)
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let golden = write_golden(
        dir.path(),
        &[
            chat_case("one", "hi", json!({"status": 200})),
            chat_case("two", "hello there", json!({"contains": ["Hello from"]})),
        ],
    );
    let with_failure = dir.path().join("with-failure.jsonl");
    std::fs::write(
        &with_failure,
        [
            chat_case("one", "hi", json!({"status": 200})),
            chat_case("two", "hi", json!({"contains": ["never said"]})),
        ]
        .join("\n"),
    )
    .expect("write");
    let healthy_url = healthy.url();
    let runs: [(&str, &Path, String, Vec<&str>); 4] = [
        (
            "min-pass-rate",
            &with_failure,
            healthy_url.clone(),
            vec!["--min-pass-rate", "0.75"],
        ),
        (
            "max-pass-rate-drop",
            &golden,
            failing.url(),
            vec![
                "--min-pass-rate",
                "0",
                "--baseline",
                &healthy_url,
                "--max-pass-rate-drop",
                "0",
            ],
        ),
        (
            "max-p95-latency",
            &golden,
            slow.url(),
            vec!["--max-p95-latency", "100ms"],
        ),
        (
            "max-cost-per-request",
            &golden,
            healthy_url.clone(),
            // At $1 per token, every answer costs several dollars.
            vec!["--cost", "1000000,1000000", "--max-cost-per-request", "0.5"],
        ),
    ];
    for (name, golden, target, args) in &runs {
        let (code, out, err) = eval(golden, target, args).await;
        assert_eq!(code, Some(1), "{name}\n{out}\n{err}");
        assert!(out.contains(&format!("BROKEN  {name}")), "{name}\n{out}");
        assert!(
            out.contains(&format!("result: FAIL (1 threshold broken: {name})")),
            "{name}\n{out}"
        );
    }
    // Each holds with a looser limit.
    let holds: [(&Path, String, Vec<&str>); 4] = [
        (
            &with_failure,
            healthy_url.clone(),
            vec!["--min-pass-rate", "50%"],
        ),
        (
            &golden,
            healthy_url.clone(),
            vec!["--baseline", &healthy_url, "--max-pass-rate-drop", "0"],
        ),
        (&golden, slow.url(), vec!["--max-p95-latency", "5s"]),
        (
            &golden,
            healthy_url.clone(),
            vec!["--cost", "1000000,1000000", "--max-cost-per-request", "100"],
        ),
    ];
    for (golden, target, args) in &holds {
        let (code, out, err) = eval(golden, target, args).await;
        assert_eq!(code, Some(0), "{args:?}\n{out}\n{err}");
        assert!(out.contains("result: PASS"), "{out}");
    }
}

#[tokio::test]
async fn a_malformed_golden_line_exits_2_before_sending_anything() {
    let agent = healthy_backend("agent").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let golden = write_golden(
        dir.path(),
        &[
            chat_case("fine", "hi", json!({})),
            r#"{"id": "typo", "request": {"path": "/v1/chat/completions"}, "expect": {"status": "200"}}"#.to_owned(),
            String::new(),
            "{\"id\": \"cut\", \"request\": ".to_owned(),
        ],
    );
    let (code, out, err) = eval(&golden, &agent.url(), &[]).await;
    assert_eq!(code, Some(2), "{out}\n{err}");
    let path = golden.display().to_string();
    assert!(
        err.contains(&format!("{path}:2: expect.status: invalid type")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{path}:4: request: EOF while parsing")),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");
    assert_eq!(agent.stats().requests(), 0);

    // Usage errors exit 2 too, also before sending.
    let fine = write_golden(dir.path(), &[chat_case("fine", "hi", json!({}))]);
    for (args, want) in [
        (vec!["--max-pass-rate-drop", "0.1"], "needs a baseline"),
        (vec!["--max-cost-per-request", "0.1"], "needs prices"),
        (vec!["--header", "no-colon"], "is not K:V"),
        (vec!["--min-pass-rate", "120%"], "is not a rate"),
        (vec!["--concurrency", "0"], "--concurrency"),
    ] {
        let (code, _, err) = eval(&fine, &agent.url(), &args).await;
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let (code, _, err) = eval(&fine, "ftp://127.0.0.1:1", &[]).await;
    assert_eq!(code, Some(2), "{err}");
    let missing = dir.path().join("missing.jsonl");
    let (code, _, err) = eval(&missing, &agent.url(), &[]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot read the golden file"), "{err}");
    assert_eq!(agent.stats().requests(), 0);
}

#[tokio::test]
async fn concurrency_is_honoured() {
    let (url, stats, _server) = concurrency_recording_backend(Duration::from_millis(200)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let lines: Vec<String> = (0..12)
        .map(|i| chat_case(&format!("c{i}"), "hi", json!({})))
        .collect();
    let golden = write_golden(dir.path(), &lines);
    for limit in [3usize, 1] {
        stats.max.store(0, Ordering::SeqCst);
        let started = Instant::now();
        let (code, out, err) = eval(&golden, &url, &["--concurrency", &limit.to_string()]).await;
        assert_eq!(code, Some(0), "{out}\n{err}");
        // Exactly the limit: never above it, and the run did overlap up to it.
        assert_eq!(
            stats.max.load(Ordering::SeqCst),
            limit,
            "--concurrency {limit}"
        );
        // 12 cases of 200 ms in waves of `limit`.
        let floor = Duration::from_millis(200 * (12 / limit) as u64);
        assert!(
            started.elapsed() >= floor,
            "{:?} < {floor:?}",
            started.elapsed()
        );
    }
    assert_eq!(stats.total.load(Ordering::SeqCst), 24);
}

#[tokio::test]
async fn a_target_that_is_down_is_reported_per_case() {
    let dir = tempfile::tempdir().expect("tempdir");
    let golden = write_golden(
        dir.path(),
        &[
            chat_case("a", "hi", json!({})),
            chat_case("b", "hi", json!({"json_schema": {"type": "object"}})),
            stream_case("c", "hi", json!({})),
        ],
    );
    let junit = dir.path().join("junit.xml");
    let report = dir.path().join("report.json");
    let down = format!("http://127.0.0.1:{}", dead_port());
    let (code, out, err) = eval(
        &golden,
        &down,
        &[
            "--junit",
            junit.to_str().expect("utf-8"),
            "--report-json",
            report.to_str().expect("utf-8"),
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    for id in ["a", "b", "c"] {
        assert!(out.contains(&format!("FAIL {id} (line")), "{out}");
    }
    let r = read_json(&report);
    for id in ["a", "b", "c"] {
        let c = case(&r, "target", id);
        assert_eq!(failure_kinds(c), ["response"]);
        let reason = c["failures"][0]["reason"].as_str().unwrap_or_default();
        assert!(reason.to_lowercase().contains("refused"), "{reason}");
    }
    assert_eq!(r["target"]["summary"]["errors"], 3);
    assert_eq!(r["target"]["summary"]["schema_compliance"], 0.0);
    assert_eq!(r["target"]["summary"]["p95_latency_ms"], Value::Null);
    let xml = std::fs::read_to_string(&junit).expect("junit");
    let (tests, failures, errors, _) = junit_counts(&xml);
    assert_eq!((tests, failures, errors), (3, 0, 3));
}

#[tokio::test]
async fn a_hanging_target_is_bounded_by_the_timeouts() {
    let hung = mock_with("hung", |a| a.hang = true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let golden = write_golden(
        dir.path(),
        &[
            chat_case("own-limit", "hi", json!({"max_latency": "300ms"})),
            chat_case("default-limit", "hi", json!({})),
        ],
    );
    let report = dir.path().join("report.json");
    let started = Instant::now();
    let (code, out, err) = eval(
        &golden,
        &hung.url(),
        &[
            "--timeout",
            "500ms",
            "--concurrency",
            "1",
            "--report-json",
            report.to_str().expect("utf-8"),
        ],
    )
    .await;
    let took = started.elapsed();
    assert_eq!(code, Some(1), "{out}\n{err}");
    // 300 ms + 500 ms one after the other, plus process start.
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let r = read_json(&report);
    let own = case(&r, "target", "own-limit");
    assert_eq!(
        (own["timed_out"].as_bool(), own["latency_ms"].as_f64()),
        (Some(true), Some(300.0))
    );
    assert_eq!(failure_kinds(own), ["max_latency"]);
    let default = case(&r, "target", "default-limit");
    assert_eq!(failure_kinds(default), ["response"]);
    assert!(
        default["failures"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out after 500ms"),
        "{default:#}"
    );
    assert_eq!(r["settings"]["timeout_ms"], 500.0);
    assert_eq!(hung.stats().hung(), 2);
}

#[tokio::test]
async fn huge_responses_are_capped_for_the_checks() {
    // 3 MiB of padding, then the part the checks look for.
    let pad = "x".repeat(3 * 1024 * 1024);
    let body = Arc::new(format!(r#"{{"pad":"{pad}","tail":"needle"}}"#));
    let size = body.len();
    let served = Arc::clone(&body);
    let (url, _server) = serve(move |_req| {
        let body = Arc::clone(&served);
        async move { json_response(body.as_str().to_owned()) }
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let golden = write_golden(
        dir.path(),
        &[
            chat_case("status-only", "hi", json!({"status": 200})),
            chat_case("needle", "hi", json!({"contains": ["needle"]})),
            chat_case("pointer", "hi", json!({"json": {"/tail": "needle"}})),
        ],
    );
    let report = dir.path().join("report.json");
    let (code, out, err) = eval(
        &golden,
        &url,
        &[
            "--max-body",
            "64KiB",
            "--min-pass-rate",
            "0",
            "--report-json",
            report.to_str().expect("utf-8"),
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains("3 target response(s) exceeded the --max-body cap of 65536 bytes"),
        "{out}"
    );
    let r = read_json(&report);
    assert_eq!(r["settings"]["max_body_bytes"], 65536);
    let status_only = case(&r, "target", "status-only");
    assert_eq!(status_only["passed"], true);
    assert_eq!(status_only["body_truncated"], true);
    assert_eq!(
        status_only["body_bytes"].as_u64(),
        Some(size as u64),
        "the whole body was read"
    );
    let needle = case(&r, "target", "needle");
    assert!(
        needle["failures"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("only its first 65536 bytes"),
        "{needle:#}"
    );
    let pointer = case(&r, "target", "pointer");
    assert!(
        pointer["failures"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("over the --max-body cap of 65536"),
        "{pointer:#}"
    );
    assert!(
        case(&r, "target", "pointer")["excerpt"]
            .as_str()
            .unwrap_or_default()
            .len()
            < 2048
    );
}

/// `cutover mock-backend --listen 127.0.0.1:0` with the flags of an
/// `.args` file from config/golden; returns the process and its URL.
fn spawn_mock_from_args_file(file: &str) -> (Binary, String) {
    use std::io::BufRead as _;
    let path = format!("{}/config/golden/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("args file");
    let mut args = vec!["mock-backend", "--listen", "127.0.0.1:0"];
    args.extend(
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(str::split_whitespace),
    );
    let mut bin = Binary::spawn(&args, &[]);
    let stdout = bin.child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read");
    let addr = line.trim().rsplit(' ').next().expect("address").to_owned();
    assert!(line.contains("listening on"), "{line}");
    (bin, format!("http://{addr}"))
}

#[tokio::test]
async fn the_example_golden_set_passes_on_one_mock_and_fails_on_the_other() {
    let golden = PathBuf::from(format!(
        "{}/config/golden/cases.jsonl",
        env!("CARGO_MANIFEST_DIR")
    ));
    let (_pass_mock, pass_url) = spawn_mock_from_args_file("mock-pass.args");
    let (_fail_mock, fail_url) = spawn_mock_from_args_file("mock-fail.args");
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report.json");

    let (code, out, err) = eval(&golden, &pass_url, &["--cost", "2.5,10"]).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("pass rate              100.0%"), "{out}");

    let (code, out, err) = eval(
        &golden,
        &fail_url,
        &[
            "--baseline",
            &pass_url,
            "--report-json",
            report.to_str().expect("utf-8"),
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{out}\n{err}");
    let r = read_json(&report);
    assert_eq!(r["target"]["summary"]["passed"], 4);
    assert_eq!(r["baseline"]["summary"]["passed"], 6);
    assert_eq!(
        r["comparison"]["regressions"],
        json!(["interactive-latency", "interactive-stream-latency"])
    );
}

#[tokio::test]
async fn through_cutover_a_pinned_candidate_is_gated_against_the_stable_version() {
    let stable = healthy_backend("stable").await;
    let candidate = healthy_backend("candidate").await;
    // Every unpinned user goes to v1: only pinning reaches v2.
    let proxy = common::start_proxy(&common::two_versions(
        &stable.url(),
        &candidate.url(),
        100.0,
        0.0,
        "",
    ))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let golden = write_golden(
        dir.path(),
        &[
            chat_case(
                "answers",
                "hi",
                json!({"status": 200, "contains": ["Hello from"]}),
            ),
            stream_case("streams", "hi there", json!({"contains": ["hi there"]})),
        ],
    );
    let report = dir.path().join("report.json");
    let (code, out, err) = eval(
        &golden,
        &proxy.url(),
        &[
            "--header",
            "x-cutover-version:v2",
            "--baseline",
            &proxy.url(),
            "--baseline-header",
            "x-cutover-version:v1",
            "--max-pass-rate-drop",
            "0",
            "--report-json",
            report.to_str().expect("utf-8"),
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_eq!(
        candidate.stats().requests(),
        2,
        "the target side reached v2 only"
    );
    assert_eq!(
        stable.stats().requests(),
        2,
        "the baseline side reached v1 only"
    );
    let r = read_json(&report);
    assert!(
        case(&r, "target", "answers")["excerpt"]
            .as_str()
            .unwrap_or_default()
            .contains("Hello from candidate")
    );
    assert!(
        case(&r, "baseline", "answers")["excerpt"]
            .as_str()
            .unwrap_or_default()
            .contains("Hello from stable")
    );
}

#[test]
fn the_ci_gate_example_config_is_valid() {
    let path = PathBuf::from(format!(
        "{}/config/golden/cutover.toml",
        env!("CARGO_MANIFEST_DIR")
    ));
    if let Err(e) = cutover::config::load(&path) {
        panic!("config/golden/cutover.toml:\n{e}");
    }
    let golden = PathBuf::from(format!(
        "{}/config/golden/cases.jsonl",
        env!("CARGO_MANIFEST_DIR")
    ));
    let set = cutover::eval::golden::load(&golden).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.cases.len(), 6);
}
