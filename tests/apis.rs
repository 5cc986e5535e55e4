//! The three model APIs end to end over real sockets: OpenAI Chat
//! Completions, the OpenAI Responses API and Anthropic Messages, each as
//! JSON and as its event stream (SPEC §4, §5, §7).
//!
//! * shadow compare of two backends, matching and mismatching, per API,
//!   streamed and not, and a streamed shadow against a JSON primary;
//! * a stream of each API cut halfway is never compared as complete;
//! * bad input (a malformed event stream, an unknown event type, JSON of
//!   the wrong shape) reaches the client byte for byte, and usage and
//!   compare skip it and count it;
//! * `cutover eval` reads the same JSON pointers from streamed and
//!   unstreamed Responses and Messages answers, and fails a cut stream;
//! * `refusal.format = "auto"` answers in the API of the path.
//!
//! Metrics are process-global in this binary: every test has its own route
//! names.

mod common;

use std::convert::Infallible;
use std::path::Path;

use bytes::Bytes;
use common::*;
use cutover::api::{self, Api};
use cutover::mock::{ChatRequest, MockArgs, MockHandle, Reply};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const APIS: [Api; 3] = [Api::Chat, Api::Responses, Api::Messages];

fn path_of(api: Api) -> &'static str {
    match api {
        Api::Chat => "/v1/chat/completions",
        Api::Responses => "/v1/responses",
        Api::Messages => "/v1/messages",
    }
}

/// A request in `api`'s shape that offers one tool (so answers carry a
/// tool call too).
fn request(api: Api, say: &str, stream: bool) -> Value {
    match api {
        Api::Chat => json!({"model": "m", "stream": stream,
            "messages": [{"role": "user", "content": say}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]}),
        Api::Responses => json!({"model": "m", "stream": stream, "input": say,
            "tools": [{"type": "function", "name": "get_weather", "parameters": {}}]}),
        Api::Messages => json!({"model": "m", "stream": stream, "max_tokens": 100,
            "messages": [{"role": "user", "content": say}],
            "tools": [{"name": "get_weather", "input_schema": {}}]}),
    }
}

/// The answer text alone: a stream cut after its text still has it.
fn text_pointer(api: Api) -> Value {
    match api {
        Api::Chat => json!(["/choices/0/message/content"]),
        Api::Responses => json!(["/output/0/content/0/text"]),
        Api::Messages => json!(["/content/0/text"]),
    }
}

/// What a shadow compares: the answer text, the tool call and usage.
fn pointers(api: Api) -> Value {
    match api {
        Api::Chat => json!([
            "/choices/0/message/content",
            "/choices/0/message/tool_calls/0/function/name",
            "/choices/0/message/tool_calls/0/function/arguments",
            "/usage/completion_tokens",
        ]),
        Api::Responses => json!([
            "/output/0/content/0/text",
            "/output/1/name",
            "/output/1/arguments",
            "/usage/output_tokens",
        ]),
        Api::Messages => json!([
            "/content/0/text",
            "/content/1/name",
            "/content/1/input",
            "/stop_reason",
            "/usage/output_tokens",
        ]),
    }
}

fn head() -> String {
    r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "1s"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
"#
    .to_owned()
}

fn upstream(name: &str, url: &str) -> String {
    format!("[[upstreams]]\nname = \"{name}\"\nurl = \"{url}\"\n")
}

/// Route `name` on `/name/`: v1 on `primary`, and a shadow `next` on
/// `shadow` comparing `compare`, with `shadow_extra` keys.
fn route(name: &str, primary: &str, shadow: &str, compare: &Value, shadow_extra: &str) -> String {
    format!(
        r#"
[[routes]]
name = "{name}"
match = {{ path_prefix = "/{name}/" }}
[[routes.versions]]
name = "v1"
upstream = "{primary}"
weight = 100.0
cost = {{ input_per_mtok = 1.0, output_per_mtok = 1.0 }}
[[routes.shadows]]
name = "next"
upstream = "{shadow}"
percent = 100.0
max_in_flight = 16
timeout = "5s"
compare = {compare}
{shadow_extra}
"#
    )
}

async fn post(proxy: &Proxy, route: &str, api: Api, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/{route}{}", proxy.url(), path_of(api)))
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn compare_count(proxy: &Proxy, route: &str, result: &str) -> Option<f64> {
    metric(
        &scrape(proxy).await,
        "cutover_shadow_compare_total",
        &[("route", route), ("shadow", "next"), ("result", result)],
    )
}

async fn skipped(proxy: &Proxy, route: &str, used_by: &str, reason: &str) -> Option<f64> {
    metric(
        &scrape(proxy).await,
        "cutover_api_skipped_total",
        &[("route", route), ("use", used_by), ("reason", reason)],
    )
}

/// A test-local server that answers every request with `content_type` and
/// `body`, in one frame, ending cleanly (whatever the body says).
async fn fixed_backend(content_type: &'static str, body: Bytes) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let mut r = hyper::Response::new(Full::new(body));
                        r.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static(content_type),
                        );
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    url
}

/// The mock's answer to `request(api, say, true)` as event-stream frames.
fn mock_events(api: Api, say: &str) -> Vec<Bytes> {
    let body = request(api, say, true).to_string();
    Reply::new("agent", &ChatRequest::parse(body.as_bytes()), 1, 0).events_for(api, 4)
}

async fn mock(name: &str) -> MockHandle {
    healthy_backend(name).await
}

// ---------------------------------------------------------------- compare

#[tokio::test]
async fn shadows_compare_per_api_streamed_and_not_matching_and_mismatching() {
    let primary = mock("agent").await;
    let twin = mock("agent").await;
    let other = mock("other").await;
    let mut toml = head();
    toml.push_str(&upstream("primary", &primary.url()));
    toml.push_str(&upstream("twin", &twin.url()));
    toml.push_str(&upstream("other", &other.url()));
    for api in APIS {
        let a = api.as_str();
        let p = pointers(api);
        toml.push_str(&route(&format!("{a}-same"), "primary", "twin", &p, ""));
        toml.push_str(&route(&format!("{a}-differ"), "primary", "other", &p, ""));
        // The shadow streams while the primary answers JSON: the same
        // pointers read the same values.
        toml.push_str(&route(
            &format!("{a}-cross"),
            "primary",
            "twin",
            &p,
            "set_json = { stream = true }",
        ));
    }
    let proxy = start_proxy(&toml).await;
    for api in APIS {
        let a = api.as_str();
        for stream in [false, true] {
            for r in ["same", "differ"] {
                let response = post(
                    &proxy,
                    &format!("{a}-{r}"),
                    api,
                    &request(api, "weather in Paris", stream),
                )
                .await;
                assert_eq!(response.status(), 200, "{a} {r} stream={stream}");
                let ct = if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                };
                assert_eq!(response.headers()["content-type"], ct);
                response.bytes().await.expect("body");
            }
        }
        let response = post(
            &proxy,
            &format!("{a}-cross"),
            api,
            &request(api, "weather in Paris", false),
        )
        .await;
        assert_eq!(response.headers()["content-type"], "application/json");
        response.bytes().await.expect("body");
    }
    for api in APIS {
        let a = api.as_str();
        let route = |r: &str| format!("{a}-{r}");
        for (r, result, want) in [
            ("same", "match", 2.0),
            ("differ", "mismatch", 2.0),
            ("cross", "match", 1.0),
        ] {
            wait_metric(
                &proxy,
                "cutover_shadow_compare_total",
                &[("route", &route(r)), ("shadow", "next"), ("result", result)],
                want,
            )
            .await;
        }
        assert_eq!(
            compare_count(&proxy, &route("same"), "mismatch").await,
            Some(0.0),
            "{a}"
        );
        assert_eq!(
            compare_count(&proxy, &route("differ"), "match").await,
            Some(0.0),
            "{a}"
        );
        assert_eq!(
            compare_count(&proxy, &route("cross"), "mismatch").await,
            Some(0.0),
            "{a}"
        );
        for r in ["same", "differ", "cross"] {
            for reason in [
                "malformed",
                "wrong_shape",
                "unknown_event",
                "incomplete",
                "error_event",
            ] {
                for used_by in ["usage", "compare"] {
                    // Every route's series are there from its start, at zero.
                    assert_eq!(
                        skipped(&proxy, &route(r), used_by, reason).await,
                        Some(0.0),
                        "{a} {r}"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------- cut streams

#[tokio::test]
async fn a_stream_cut_halfway_is_never_compared_as_complete() {
    let agent = mock("agent").await;
    let aborting = backend(MockArgs {
        name: "agent".into(),
        abort_after: Some(3),
        ..MockArgs::new(loopback0())
    })
    .await;
    let mut cut_urls = Vec::new();
    let mut cut_bodies = Vec::new();
    for api in APIS {
        // Half the events, then a clean end of the HTTP body: only the
        // API's own framing says the answer is cut.
        let events = mock_events(api, "weather in Paris");
        let half: Vec<u8> = events[..events.len() / 2].concat();
        // Check the premise: the half carries the whole text.
        let partial = api::reassemble(Some(api), &half)
            .document
            .expect("readable");
        assert!(!partial.complete, "{api:?}");
        let text = partial
            .value
            .pointer(text_pointer(api)[0].as_str().unwrap_or(""))
            .cloned();
        assert_eq!(
            text,
            Some(json!("Hello from agent: weather in Paris")),
            "{api:?}"
        );
        cut_bodies.push(half.clone());
        cut_urls.push(fixed_backend("text/event-stream", Bytes::from(half)).await);
    }
    let mut toml = head();
    toml.push_str(&upstream("agent", &agent.url()));
    toml.push_str(&upstream("aborting", &aborting.url()));
    for (api, url) in APIS.iter().zip(&cut_urls) {
        let a = api.as_str();
        // Only the text, which the cut streams carry whole: what arrived
        // agrees with the full answer, and still must not count as a match.
        let p = text_pointer(*api);
        toml.push_str(&upstream(&format!("{a}-cut"), url));
        toml.push_str(&route(
            &format!("{a}-shadowcut"),
            "agent",
            &format!("{a}-cut"),
            &p,
            "",
        ));
        toml.push_str(&route(
            &format!("{a}-primarycut"),
            &format!("{a}-cut"),
            "agent",
            &p,
            "",
        ));
        toml.push_str(&route(&format!("{a}-aborted"), "agent", "aborting", &p, ""));
    }
    let proxy = start_proxy(&toml).await;
    for (api, cut_body) in APIS.iter().zip(&cut_bodies) {
        let a = api.as_str();
        let body = request(*api, "weather in Paris", true);
        for r in ["shadowcut", "primarycut", "aborted"] {
            let response = post(&proxy, &format!("{a}-{r}"), *api, &body).await;
            assert_eq!(response.status(), 200);
            let got = response.bytes().await.expect("body");
            if r == "primarycut" {
                // The client gets what the upstream sent, unchanged.
                assert_eq!(&got[..], &cut_body[..], "{a}");
            }
        }
        // A shadow cut by its API's framing: compared, and never a match.
        let shadowcut = format!("{a}-shadowcut");
        wait_metric(
            &proxy,
            "cutover_shadow_compare_total",
            &[
                ("route", &shadowcut),
                ("shadow", "next"),
                ("result", "mismatch"),
            ],
            1.0,
        )
        .await;
        assert_eq!(compare_count(&proxy, &shadowcut, "match").await, Some(0.0));
        assert_eq!(
            skipped(&proxy, &shadowcut, "compare", "incomplete").await,
            Some(1.0),
            "{a}"
        );

        // A primary cut so: nothing whole to compare with.
        let primarycut = format!("{a}-primarycut");
        wait_metric(
            &proxy,
            "cutover_shadow_requests_total",
            &[("route", &primarycut), ("shadow", "next"), ("result", "ok")],
            1.0,
        )
        .await;
        assert_eq!(
            skipped(&proxy, &primarycut, "compare", "incomplete").await,
            Some(1.0),
            "{a}"
        );
        assert_eq!(
            compare_count(&proxy, &primarycut, "match").await,
            Some(0.0),
            "{a}"
        );
        assert_eq!(
            compare_count(&proxy, &primarycut, "mismatch").await,
            Some(0.0),
            "{a}"
        );

        // A shadow whose connection broke mid-stream: a failed mirror.
        let aborted = format!("{a}-aborted");
        wait_metric(
            &proxy,
            "cutover_shadow_requests_total",
            &[
                ("route", &aborted),
                ("shadow", "next"),
                ("result", "failure"),
            ],
            1.0,
        )
        .await;
        assert_eq!(
            compare_count(&proxy, &aborted, "match").await,
            Some(0.0),
            "{a}"
        );
    }
}

// ---------------------------------------------------------------- bad input

/// The Responses or Messages mock stream with an event of a type the API
/// does not define in the middle.
fn with_unknown_event(api: Api) -> Bytes {
    let mut events = mock_events(api, "weather in Paris");
    events.insert(
        3,
        Bytes::from_static(
            b"event: banana\ndata: {\"type\":\"banana\",\"usage\":{\"note\":\"not tokens\"}}\n\n",
        ),
    );
    Bytes::from(events.concat())
}

#[tokio::test]
async fn bad_input_passes_byte_for_byte_and_usage_and_compare_skip_and_count_it() {
    let malformed = Bytes::from_static(
        b"data: {\"usage\": {\"input_tokens\": 5, \"output_tok\n\ndata: [1, 2]\n\n",
    );
    let wrong_shape: [(Api, Bytes); 3] = [
        (Api::Chat, Bytes::from_static(br#"{"choices":[],"usage":{"prompt_tokens":"many","completion_tokens":2}}"#)),
        (Api::Responses, Bytes::from_static(br#"{"object":"response","output":[],"usage":{"input_tokens":-3,"output_tokens":2}}"#)),
        (Api::Messages, Bytes::from_static(br#"{"type":"message","content":[],"usage":{"input_tokens":1.5,"output_tokens":2}}"#)),
    ];
    let mut toml = head();
    let malformed_url = fixed_backend("text/event-stream", malformed.clone()).await;
    toml.push_str(&upstream("malformed", &malformed_url));
    let mut unknown = Vec::new();
    for api in [Api::Responses, Api::Messages] {
        let body = with_unknown_event(api);
        let url = fixed_backend("text/event-stream", body.clone()).await;
        toml.push_str(&upstream(&format!("{}-unknown", api.as_str()), &url));
        unknown.push((api, body));
    }
    for (api, body) in &wrong_shape {
        let url = fixed_backend("application/json", body.clone()).await;
        toml.push_str(&upstream(&format!("{}-wrong", api.as_str()), &url));
    }
    for api in APIS {
        let a = api.as_str();
        let p = pointers(api);
        toml.push_str(&route(
            &format!("{a}-malformed"),
            "malformed",
            "malformed",
            &p,
            "",
        ));
        toml.push_str(&route(
            &format!("{a}-wrong"),
            &format!("{a}-wrong"),
            &format!("{a}-wrong"),
            &p,
            "",
        ));
    }
    for (api, _) in &unknown {
        let a = api.as_str();
        toml.push_str(&route(
            &format!("{a}-unknown"),
            &format!("{a}-unknown"),
            &format!("{a}-unknown"),
            &pointers(*api),
            "",
        ));
    }
    let proxy = start_proxy(&toml).await;

    for api in APIS {
        let a = api.as_str();
        // A malformed event stream: the client gets it unchanged.
        let route = format!("{a}-malformed");
        let got = post(&proxy, &route, api, &request(api, "x", true)).await;
        assert_eq!(got.status(), 200);
        assert_eq!(got.bytes().await.expect("body"), malformed, "{a}");
        wait_metric(
            &proxy,
            "cutover_api_skipped_total",
            &[("route", &route), ("use", "usage"), ("reason", "malformed")],
            2.0,
        )
        .await;
        wait_metric(
            &proxy,
            "cutover_api_skipped_total",
            &[
                ("route", &route),
                ("use", "compare"),
                ("reason", "malformed"),
            ],
            2.0,
        )
        .await;
        // Both answers unreadable: compared, and not a match.
        wait_metric(
            &proxy,
            "cutover_shadow_compare_total",
            &[
                ("route", &route),
                ("shadow", "next"),
                ("result", "mismatch"),
            ],
            1.0,
        )
        .await;
        let text = scrape(&proxy).await;
        assert_eq!(
            metric(
                &text,
                "cutover_tokens_total",
                &[("route", &route), ("version", "v1"), ("kind", "input")]
            ),
            Some(0.0),
            "{a}"
        );

        // JSON whose usage has the wrong shape.
        let route = format!("{a}-wrong");
        let (_, body) = wrong_shape.iter().find(|(w, _)| *w == api).expect("case");
        let got = post(&proxy, &route, api, &request(api, "x", false)).await;
        assert_eq!(got.bytes().await.expect("body"), *body, "{a}");
        wait_metric(
            &proxy,
            "cutover_api_skipped_total",
            &[
                ("route", &route),
                ("use", "usage"),
                ("reason", "wrong_shape"),
            ],
            2.0,
        )
        .await;
        let text = scrape(&proxy).await;
        assert_eq!(
            metric(
                &text,
                "cutover_tokens_total",
                &[("route", &route), ("version", "v1"), ("kind", "output")]
            ),
            Some(0.0),
            "{a}: a usage of the wrong shape is not counted at all"
        );
        // Compare reads JSON as it is: the same bytes match.
        wait_metric(
            &proxy,
            "cutover_shadow_compare_total",
            &[("route", &route), ("shadow", "next"), ("result", "match")],
            1.0,
        )
        .await;
    }

    for (api, body) in &unknown {
        let a = api.as_str();
        let route = format!("{a}-unknown");
        let got = post(
            &proxy,
            &route,
            *api,
            &request(*api, "weather in Paris", true),
        )
        .await;
        assert_eq!(got.bytes().await.expect("body"), *body, "{a}");
        // The unknown event is skipped, on both sides; the rest is read:
        // the answers match and the usage is counted.
        wait_metric(
            &proxy,
            "cutover_api_skipped_total",
            &[
                ("route", &route),
                ("use", "compare"),
                ("reason", "unknown_event"),
            ],
            2.0,
        )
        .await;
        wait_metric(
            &proxy,
            "cutover_shadow_compare_total",
            &[("route", &route), ("shadow", "next"), ("result", "match")],
            1.0,
        )
        .await;
        wait_metric(
            &proxy,
            "cutover_tokens_total",
            &[("route", &route), ("version", "v1"), ("kind", "input")],
            3.0,
        )
        .await;
        wait_metric(
            &proxy,
            "cutover_tokens_total",
            &[("route", &route), ("version", "v1"), ("kind", "output")],
            6.0,
        )
        .await;
    }
}

// ---------------------------------------------------------------- eval

fn golden_case(id: &str, api: Api, stream: bool, expect: Value) -> String {
    json!({
        "id": id,
        "request": {"method": "POST", "path": path_of(api), "body": request(api, "weather in Oslo", stream)},
        "expect": expect,
    })
    .to_string()
}

async fn eval(golden: &Path, target: &str, report: &Path) -> (Option<i32>, String, String, Value) {
    let golden = golden.display().to_string();
    let report_arg = report.display().to_string();
    let (code, out, err) = run_binary(
        &[
            "eval",
            "--golden",
            &golden,
            "--target",
            target,
            "--report-json",
            &report_arg,
        ],
        &[],
    )
    .await;
    let report = std::fs::read_to_string(report)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    (code, out, err, report)
}

#[tokio::test]
async fn eval_reads_the_same_pointers_from_streamed_and_unstreamed_responses_and_messages() {
    let agent = backend(MockArgs {
        name: "agent".into(),
        chunks: 5,
        ..MockArgs::new(loopback0())
    })
    .await;
    let text = "Hello from agent: weather in Oslo";
    let responses = json!({
        "/object": "response",
        "/status": "completed",
        "/output/0/content/0/text": text,
        "/output/1/name": "get_weather",
        "/output/1/type": "function_call",
        "/usage/input_tokens": 3,
        "/usage/output_tokens": 6,
    });
    let messages = json!({
        "/type": "message",
        "/content/0/text": text,
        "/content/1/type": "tool_use",
        "/content/1/name": "get_weather",
        "/content/1/input": {"echo": "weather in Oslo", "from": "agent"},
        "/stop_reason": "tool_use",
        "/usage": {"input_tokens": 3, "output_tokens": 6},
    });
    let mut lines = Vec::new();
    for stream in [true, false] {
        let tag = if stream { "stream" } else { "json" };
        lines.push(golden_case(
            &format!("responses-{tag}"),
            Api::Responses,
            stream,
            json!({"status": 200, "contains": [text], "json": responses}),
        ));
        lines.push(golden_case(
            &format!("messages-{tag}"),
            Api::Messages,
            stream,
            json!({"status": 200, "contains": [text], "json": messages}),
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let golden = dir.path().join("cases.jsonl");
    std::fs::write(&golden, lines.join("\n") + "\n").expect("write");
    let (code, out, err, report) = eval(&golden, &agent.url(), &dir.path().join("r.json")).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    let cases = report["target"]["cases"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(cases.len(), 4, "{report:#}");
    for c in &cases {
        assert_eq!(c["passed"], true, "{c:#}");
        // Usage read from each API's own shape, streamed or not.
        assert_eq!(c["usage"], json!({"input": 3, "output": 6}), "{c:#}");
    }

    // A stream cut before its final event is no complete answer, even when
    // every pointer it has is right.
    for api in [Api::Responses, Api::Messages] {
        let events = mock_events(api, "weather in Oslo");
        let cut = Bytes::from(events[..events.len() - 1].concat());
        let url = fixed_backend("text/event-stream", cut).await;
        let only = golden_case("cut", api, true, json!({"status": 200}));
        std::fs::write(&golden, only + "\n").expect("write");
        let (code, out, err, report) = eval(&golden, &url, &dir.path().join("cut.json")).await;
        assert_eq!(code, Some(1), "{api:?}: {out}\n{err}");
        let c = &report["target"]["cases"][0];
        assert_eq!(c["passed"], false, "{c:#}");
        let failure = &c["failures"][0];
        assert_eq!(failure["expectation"], "response", "{c:#}");
        let reason = failure["reason"].as_str().unwrap_or("");
        assert!(
            reason.contains("ended before its final event") && reason.contains(api.final_event()),
            "{reason}"
        );
    }
}

// ---------------------------------------------------------------- refusals

#[tokio::test]
async fn auto_refusals_answer_in_the_api_of_the_path() {
    let toml = format!(
        r#"{}
[[upstreams]]
name = "down"
url = "http://127.0.0.1:{}"
[[routes]]
name = "auto-refusal"
match = {{ path_prefix = "/" }}
refusal = {{ format = "auto", message = "back soon", retry_after = "7s" }}
[[routes.versions]]
name = "v1"
upstream = "down"
weight = 100.0
"#,
        head(),
        dead_port()
    );
    let proxy = start_proxy(&toml).await;
    for api in APIS {
        for stream in [false, true] {
            let r = client()
                .post(format!("{}{}", proxy.url(), path_of(api)))
                .json(&request(api, "hi", stream))
                .send()
                .await
                .expect("request");
            assert_eq!(r.status(), 200, "{api:?}");
            assert_eq!(r.headers()["x-cutover-upstream"], "refusal");
            let ct = r.headers()["content-type"]
                .to_str()
                .unwrap_or("")
                .to_owned();
            let body = r.bytes().await.expect("body");
            let doc = if stream {
                assert_eq!(ct, "text/event-stream");
                let read = api::reassemble(Some(api), &body);
                read.complete().cloned().expect("a complete stream")
            } else {
                assert_eq!(ct, "application/json");
                serde_json::from_slice(&body).expect("json")
            };
            let text = match api {
                Api::Chat => &doc["choices"][0]["message"]["content"],
                Api::Responses => &doc["output"][0]["content"][0]["text"],
                Api::Messages => &doc["content"][0]["text"],
            };
            assert_eq!(text, "back soon", "{api:?} stream={stream}");
        }
    }
    // Any other path: the OpenAI error, with its status and Retry-After.
    let r = client()
        .post(format!("{}/v1/embeddings", proxy.url()))
        .json(&json!({"input": "x"}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "7");
    let doc: Value = r.json().await.expect("json");
    assert_eq!(doc["error"]["code"], "cutover_refusal");
}

// ---------------------------------------------------------------- bench bodies

#[test]
fn the_bench_streams_are_whole_answers_with_the_same_usage() {
    use cutover::api::usage::UsageScanner;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/sse");
    let mut texts = Vec::new();
    for (api, file) in [
        (Api::Chat, "chat.sse"),
        (Api::Responses, "responses.sse"),
        (Api::Messages, "messages.sse"),
    ] {
        let body = std::fs::read(root.join(file)).expect("bench stream");
        let read = api::reassemble(Some(api), &body);
        assert_eq!(read.unknown_events, 0, "{file}");
        let doc = read
            .complete()
            .unwrap_or_else(|| panic!("{file} is not complete"));
        let text = match api {
            Api::Chat => doc["choices"][0]["message"]["content"].clone(),
            Api::Responses => doc["output"][0]["content"][0]["text"].clone(),
            Api::Messages => doc["content"][0]["text"].clone(),
        };
        texts.push(text);
        let ct = http::HeaderValue::from_static("text/event-stream");
        let mut scanner = UsageScanner::new(Some(api), Some(&ct));
        scanner.observe(&Bytes::from(body));
        let usage = scanner.finish();
        assert_eq!((usage.input, usage.output), (Some(24), Some(20)), "{file}");
    }
    // The same 20-token answer in each API.
    assert!(texts.windows(2).all(|w| w[0] == w[1]), "{texts:?}");
}
