//! The mock backend over real sockets on 127.0.0.1:0, one behaviour per test.
//! `spawn` returns after bind, so every mock is ready when the test starts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cutover::mock::{self, MockArgs, MockHandle};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn args() -> MockArgs {
    MockArgs::new(loopback())
}

async fn start(opts: MockArgs) -> Result<MockHandle, std::io::Error> {
    mock::spawn(opts).await
}

fn client() -> reqwest::Client {
    // reqwest is built without a default crypto provider; install ring once.
    let _ = std::sync::Arc::unwrap_or_clone(cutover::crypto::provider()).install_default();
    reqwest::Client::new()
}

fn chat(stream: bool) -> Value {
    json!({
        "model": "gpt-test",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "one two three"},
        ],
    })
}

async fn post(mock: &MockHandle, body: &Value) -> reqwest::Result<reqwest::Response> {
    client()
        .post(format!("{}/v1/chat/completions", mock.url()))
        .json(body)
        .send()
        .await
}

/// Splits an SSE body into the payloads of its `data:` events.
fn sse_payloads(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

fn sse_json(payloads: &[String]) -> Vec<Value> {
    payloads
        .iter()
        .filter(|p| p.as_str() != "[DONE]")
        .map(|p| serde_json::from_str(p).unwrap_or(Value::Null))
        .collect()
}

#[tokio::test]
async fn plain_backend_answers_json_completion_with_usage() -> TestResult {
    let mock = start(MockArgs {
        name: "alpha".into(),
        ..args()
    })
    .await?;
    let response = post(&mock, &chat(false)).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-mock-name"], "alpha");
    assert_eq!(response.headers()["content-type"], "application/json");
    let doc: Value = response.json().await?;
    assert_eq!(doc["object"], "chat.completion");
    assert_eq!(doc["model"], "gpt-test");
    assert_eq!(doc["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        doc["choices"][0]["message"]["content"],
        "Hello from alpha: one two three"
    );
    assert_eq!(doc["choices"][0]["finish_reason"], "stop");
    assert!(doc["choices"][0]["message"].get("tool_calls").is_none());
    // "be brief" + "one two three" = 5 prompt words; the reply has 6 words.
    assert_eq!(
        doc["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11})
    );
    Ok(())
}

#[tokio::test]
async fn model_is_echoed_and_defaults_to_mock_model() -> TestResult {
    let mock = start(args()).await?;
    let doc: Value = post(&mock, &json!({"model": "rewritten-by-proxy"}))
        .await?
        .json()
        .await?;
    assert_eq!(doc["model"], "rewritten-by-proxy");
    let doc: Value = post(&mock, &json!({"messages": []})).await?.json().await?;
    assert_eq!(doc["model"], "mock-model");
    Ok(())
}

#[tokio::test]
async fn malformed_json_body_gets_a_json_completion() -> TestResult {
    let mock = start(args()).await?;
    let response = client()
        .post(format!("{}/any/other/path", mock.url()))
        .body("{not json")
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await?;
    assert_eq!(doc["object"], "chat.completion");
    assert_eq!(doc["usage"]["prompt_tokens"], 1);
    Ok(())
}

#[tokio::test]
async fn sse_stream_concatenates_to_reply_and_ends_with_usage_and_done() -> TestResult {
    let mock = start(MockArgs {
        name: "beta".into(),
        chunks: 4,
        ..args()
    })
    .await?;
    let response = post(&mock, &chat(true)).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let payloads = sse_payloads(&response.text().await?);
    // role + 4 content + finish + usage + [DONE]
    assert_eq!(payloads.len(), 8, "{payloads:#?}");
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let chunks = sse_json(&payloads);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks[1..5]
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello from beta: one two three");
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-test");
    }
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[6]["choices"], json!([]));
    assert_eq!(
        chunks[6]["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11})
    );
    Ok(())
}

#[tokio::test]
async fn sse_chunks_arrive_incrementally_with_chunk_delay() -> TestResult {
    let delay = Duration::from_millis(200);
    let mock = start(MockArgs {
        chunks: 3,
        chunk_delay: delay,
        ..args()
    })
    .await?;
    let response = post(&mock, &chat(true)).await?;
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut arrivals = Vec::new();
    while let Some(frame) = body.next().await {
        buffer.push_str(std::str::from_utf8(&frame?)?);
        while let Some(end) = buffer.find("\n\n") {
            arrivals.push(Instant::now());
            buffer.drain(..end + 2);
        }
    }
    // role + 3 content + finish + usage + [DONE] = 7 events, 6 delays apart.
    assert_eq!(arrivals.len(), 7);
    let (Some(first), Some(last)) = (arrivals.first(), arrivals.last()) else {
        return Err("no events".into());
    };
    // A buffered (non-streaming) reply would deliver all events at once.
    let spread = last.duration_since(*first);
    assert!(
        spread >= delay * 5,
        "events not streamed: first-to-last {spread:?}"
    );
    Ok(())
}

#[tokio::test]
async fn status_flag_forces_every_response() -> TestResult {
    let mock = start(MockArgs {
        status: Some(http::StatusCode::SERVICE_UNAVAILABLE),
        ..args()
    })
    .await?;
    for stream in [false, true] {
        let response = post(&mock, &chat(stream)).await?;
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["content-type"], "application/json");
        let doc: Value = response.json().await?;
        assert_eq!(doc["error"]["code"], 503);
        assert!(doc["error"]["message"].is_string());
    }
    assert_eq!(mock.stats().injected_errors(), 2);
    Ok(())
}

#[tokio::test]
async fn status_below_400_keeps_the_normal_body() -> TestResult {
    let mock = start(MockArgs {
        status: Some(http::StatusCode::CREATED),
        ..args()
    })
    .await?;
    let response = post(&mock, &chat(false)).await?;
    assert_eq!(response.status(), 201);
    let doc: Value = response.json().await?;
    assert_eq!(doc["object"], "chat.completion");
    Ok(())
}

#[tokio::test]
async fn error_rate_one_fails_every_request_with_error_status() -> TestResult {
    let mock = start(MockArgs {
        error_rate: 1.0,
        error_status: http::StatusCode::BAD_GATEWAY,
        ..args()
    })
    .await?;
    for _ in 0..5 {
        let response = post(&mock, &chat(false)).await?;
        assert_eq!(response.status(), 502);
        let doc: Value = response.json().await?;
        assert_eq!(doc["error"]["type"], "mock_error");
    }
    assert_eq!(mock.stats().injected_errors(), 5);
    Ok(())
}

#[tokio::test]
async fn faults_switch_failures_on_and_off_while_running() -> TestResult {
    let mock = start(MockArgs {
        error_status: http::StatusCode::BAD_GATEWAY,
        ..args()
    })
    .await?;
    assert_eq!(post(&mock, &chat(false)).await?.status(), 200);

    mock.faults()
        .fail_with(Some(http::StatusCode::SERVICE_UNAVAILABLE));
    for _ in 0..3 {
        assert_eq!(post(&mock, &chat(false)).await?.status(), 503);
    }
    mock.faults().clear();
    assert_eq!(post(&mock, &chat(false)).await?.status(), 200);

    // A rate of 1 fails everything with --error-status; 0 nothing.
    mock.faults().set_error_rate(1.0);
    assert_eq!(post(&mock, &chat(false)).await?.status(), 502);
    mock.faults().set_error_rate(0.0);
    assert_eq!(post(&mock, &chat(false)).await?.status(), 200);

    // A share in between fails some and not others.
    mock.faults().set_error_rate(0.5);
    let mut failed = 0;
    for _ in 0..200 {
        if post(&mock, &chat(false)).await?.status() == 502 {
            failed += 1;
        }
    }
    assert!(
        (40..=160).contains(&failed),
        "{failed} of 200 failed at 0.5"
    );
    assert_eq!(mock.stats().injected_errors(), 3 + 1 + failed);
    Ok(())
}

#[tokio::test]
async fn hanging_backend_times_the_client_out_and_releases_on_shutdown() -> TestResult {
    let mock = start(MockArgs {
        hang: true,
        ..args()
    })
    .await?;
    let started = Instant::now();
    let result = client()
        .post(format!("{}/v1/chat/completions", mock.url()))
        .json(&chat(false))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    let Err(error) = result else {
        return Err("a hanging backend answered".into());
    };
    assert!(error.is_timeout(), "{error}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(mock.stats().hung(), 1);
    assert_eq!(mock.stats().requests(), 1);
    // Shutdown must release the held request instead of waiting forever.
    tokio::time::timeout(Duration::from_secs(5), mock.shutdown()).await??;
    Ok(())
}

#[tokio::test]
async fn abort_after_two_chunks_truncates_the_http1_stream() -> TestResult {
    let mock = start(MockArgs {
        abort_after: Some(2),
        ..args()
    })
    .await?;
    let response = post(&mock, &chat(true)).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_11);
    let mut body = response.bytes_stream();
    let mut received = Vec::new();
    let mut failed = false;
    while let Some(frame) = body.next().await {
        match frame {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body ended cleanly");
    let payloads = sse_payloads(&String::from_utf8(received)?);
    assert_eq!(payloads.len(), 2, "{payloads:#?}");
    assert!(!payloads.iter().any(|p| p == "[DONE]"));
    assert_eq!(mock.stats().aborted(), 1);
    Ok(())
}

#[tokio::test]
async fn abort_after_in_json_mode_sends_a_partial_body() -> TestResult {
    let mock = start(MockArgs {
        abort_after: Some(1),
        ..args()
    })
    .await?;
    let response = post(&mock, &chat(false)).await?;
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.is_err(), "the JSON body completed");
    Ok(())
}

fn h2c_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

fn h2c_request(mock: &MockHandle, body: &Value) -> Result<http::Request<Full<Bytes>>, http::Error> {
    http::Request::post(format!("{}/v1/chat/completions", mock.url()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
}

#[tokio::test]
async fn abort_after_resets_the_h2_stream() -> TestResult {
    let mock = start(MockArgs {
        abort_after: Some(2),
        ..args()
    })
    .await?;
    let response = h2c_client()
        .request(h2c_request(&mock, &chat(true))?)
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert!(
        response.into_body().collect().await.is_err(),
        "the h2 stream completed"
    );
    Ok(())
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() -> TestResult {
    let mock = start(MockArgs {
        name: "h2".into(),
        ..args()
    })
    .await?;
    let response = h2c_client()
        .request(h2c_request(&mock, &chat(false))?)
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await?.to_bytes();
    let doc: Value = serde_json::from_slice(&body)?;
    assert_eq!(
        doc["choices"][0]["message"]["content"],
        "Hello from h2: one two three"
    );
    let record = mock.stats().last_record().ok_or("no record")?;
    assert_eq!(record.version, http::Version::HTTP_2);
    Ok(())
}

#[tokio::test]
async fn fail_before_body_sends_200_headers_then_no_body_byte() -> TestResult {
    let mock = start(MockArgs {
        fail_before_body: true,
        ..args()
    })
    .await?;
    let response = post(&mock, &chat(false)).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-mock-name"], "mock");
    let mut body = response.bytes_stream();
    let mut received = 0;
    let mut failed = false;
    while let Some(frame) = body.next().await {
        match frame {
            Ok(bytes) => received += bytes.len(),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body ended cleanly");
    assert_eq!(received, 0);
    assert_eq!(mock.stats().aborted(), 1);
    Ok(())
}

#[tokio::test]
async fn latency_delays_the_response_headers() -> TestResult {
    let latency = Duration::from_millis(300);
    let mock = start(MockArgs { latency, ..args() }).await?;
    let started = Instant::now();
    let response = post(&mock, &chat(false)).await?;
    assert!(
        started.elapsed() >= latency,
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), 200);
    Ok(())
}

#[tokio::test]
async fn random_latency_is_at_least_the_minimum() -> TestResult {
    let latency = Duration::from_millis(100);
    let mock = start(MockArgs {
        latency,
        latency_max: Some(Duration::from_millis(200)),
        ..args()
    })
    .await?;
    for _ in 0..3 {
        let started = Instant::now();
        post(&mock, &chat(false)).await?;
        assert!(
            started.elapsed() >= latency,
            "answered after {:?}",
            started.elapsed()
        );
    }
    Ok(())
}

fn with_tools(stream: bool) -> Value {
    let mut body = chat(stream);
    body["tools"] = json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {}}},
    ]);
    body
}

#[tokio::test]
async fn tool_call_names_the_first_tool_in_json_and_sse() -> TestResult {
    let mock = start(MockArgs {
        chunks: 3,
        ..args()
    })
    .await?;
    let doc: Value = post(&mock, &with_tools(false)).await?.json().await?;
    let call = &doc["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments = call["function"]["arguments"]
        .as_str()
        .ok_or("arguments not a string")?;
    serde_json::from_str::<Value>(arguments)?;
    assert_eq!(doc["choices"][0]["finish_reason"], "tool_calls");

    let text = post(&mock, &with_tools(true)).await?.text().await?;
    let chunks = sse_json(&sse_payloads(&text));
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(deltas.len(), 4, "name delta + 3 argument deltas");
    assert_eq!(deltas[0]["function"]["name"], "get_weather");
    let streamed: String = deltas
        .iter()
        .filter_map(|d| d["function"]["arguments"].as_str())
        .collect();
    assert_eq!(streamed, arguments);
    Ok(())
}

#[tokio::test]
async fn request_records_keep_method_path_headers_and_body() -> TestResult {
    let mock = start(args()).await?;
    let body = chat(false);
    client()
        .post(format!("{}/v1/chat/completions?trace=1", mock.url()))
        .header("x-cutover-version", "canary")
        .json(&body)
        .send()
        .await?;
    let records = mock.stats().records();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.seq, 1);
    assert_eq!(record.method, http::Method::POST);
    assert_eq!(record.path, "/v1/chat/completions");
    assert_eq!(record.query.as_deref(), Some("trace=1"));
    assert_eq!(record.header("x-cutover-version"), Some("canary"));
    assert_eq!(record.body_json(), Some(body));
    assert_eq!(mock.stats().requests(), 1);
    Ok(())
}

#[tokio::test]
async fn healthz_is_ok_even_when_every_request_fails() -> TestResult {
    let mock = start(MockArgs {
        status: Some(http::StatusCode::SERVICE_UNAVAILABLE),
        ..args()
    })
    .await?;
    let response = client()
        .get(format!("{}/healthz", mock.url()))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(mock.stats().injected_errors(), 0);
    Ok(())
}

#[tokio::test]
async fn outcome_flag_sets_the_outcome_header() -> TestResult {
    let mock = start(MockArgs {
        outcome: Some(mock::Outcome::Failure),
        ..args()
    })
    .await?;
    let response = post(&mock, &chat(false)).await?;
    assert_eq!(response.headers()["x-cutover-outcome"], "failure");
    let plain = start(args()).await?;
    let response = post(&plain, &chat(false)).await?;
    assert!(response.headers().get("x-cutover-outcome").is_none());
    Ok(())
}

#[tokio::test]
async fn shutdown_stops_accepting_connections() -> TestResult {
    let mock = start(args()).await?;
    let addr = mock.addr();
    tokio::time::timeout(Duration::from_secs(5), mock.shutdown()).await??;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    Ok(())
}

#[tokio::test]
async fn serve_takes_an_already_bound_listener() -> TestResult {
    let listener = tokio::net::TcpListener::bind(loopback()).await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(mock::serve(listener, args(), async {
        let _ = stop_rx.await;
    }));
    let response = client()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), server).await???;
    Ok(())
}

mod binary {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use super::*;

    /// Kills the child on every exit path of the test.
    struct Child(std::process::Child);

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test]
    async fn mock_backend_subcommand_prints_its_address_and_serves() -> TestResult {
        let mut child = Child(
            Command::new(env!("CARGO_BIN_EXE_cutover"))
                .args(["mock-backend", "--listen", "127.0.0.1:0", "--name", "cli"])
                .stdout(Stdio::piped())
                .spawn()?,
        );
        let stdout = child.0.stdout.take().ok_or("no stdout")?;
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await??;
        let addr = line
            .trim()
            .strip_prefix("mock-backend cli listening on ")
            .ok_or_else(|| format!("unexpected banner {line:?}"))?;
        let doc: Value = client()
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&chat(false))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(
            doc["choices"][0]["message"]["content"],
            "Hello from cli: one two three"
        );
        Ok(())
    }

    #[test]
    fn mock_backend_exits_1_when_the_port_is_taken() -> TestResult {
        let taken = std::net::TcpListener::bind(loopback())?;
        let output = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(["mock-backend", "--listen", &taken.local_addr()?.to_string()])
            .output()?;
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("cannot listen on"), "{stderr}");
        Ok(())
    }
}

#[tokio::test]
async fn http1_connection_is_kept_alive_across_requests() -> TestResult {
    let mock = start(args()).await?;
    let stream = tokio::net::TcpStream::connect(mock.addr()).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    // Both requests go over this one socket; a server closing after the
    // first response makes the second fail.
    for _ in 0..2 {
        sender.ready().await?;
        let request = http::Request::post("/v1/chat/completions")
            .header("host", mock.addr().to_string())
            .body(Full::new(Bytes::from(chat(false).to_string())))?;
        let response = sender.send_request(request).await?;
        assert_eq!(response.status(), 200);
        response.into_body().collect().await?;
    }
    assert_eq!(mock.stats().requests(), 2);
    driver.abort();
    Ok(())
}

// ---- the Responses API and Anthropic Messages, by path ----

async fn post_to(
    mock: &MockHandle,
    path: &str,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    client()
        .post(format!("{}{path}", mock.url()))
        .json(body)
        .send()
        .await
}

/// `(event name, data)` of each event of an SSE body.
fn named_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap_or(Value::Null);
                }
            }
            (name, data)
        })
        .collect()
}

#[tokio::test]
async fn responses_path_answers_a_response_object_and_its_event_stream() -> TestResult {
    let mock = start(MockArgs {
        name: "resp".into(),
        chunks: 3,
        ..args()
    })
    .await?;
    let body = json!({"model": "gpt-x", "instructions": "be brief", "input": "one two three"});
    let doc: Value = post_to(&mock, "/v1/responses", &body).await?.json().await?;
    assert_eq!(doc["object"], "response");
    assert_eq!(doc["status"], "completed");
    assert_eq!(
        doc["output"][0]["content"][0]["text"],
        "Hello from resp: one two three"
    );
    assert_eq!(doc["usage"]["input_tokens"], 5);
    assert_eq!(doc["usage"]["output_tokens"], 6);

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = post_to(&mock, "/v1/responses", &streamed).await?;
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let events = named_events(&r.text().await?);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"));
    assert_eq!(
        names
            .iter()
            .filter(|n| **n == "response.output_text.delta")
            .count(),
        3
    );
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str());
    }
    let completed = &events[events.len() - 1].1["response"];
    // The same answer (ids carry the request's number).
    assert_eq!(
        completed["output"][0]["content"],
        doc["output"][0]["content"]
    );
    assert_eq!(completed["usage"], doc["usage"]);
    Ok(())
}

#[tokio::test]
async fn messages_path_answers_an_anthropic_message_and_its_event_stream() -> TestResult {
    let mock = start(MockArgs {
        name: "claude".into(),
        chunks: 2,
        ..args()
    })
    .await?;
    let body = json!({"model": "claude-x", "max_tokens": 100, "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "weather in Oslo"}]}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]});
    let doc: Value = post_to(&mock, "/v1/messages", &body).await?.json().await?;
    assert_eq!(doc["type"], "message");
    assert_eq!(
        doc["content"][0]["text"],
        "Hello from claude: weather in Oslo"
    );
    assert_eq!(doc["content"][1]["type"], "tool_use");
    assert_eq!(doc["content"][1]["name"], "get_weather");
    assert_eq!(doc["content"][1]["input"]["echo"], "weather in Oslo");
    assert_eq!(doc["stop_reason"], "tool_use");
    assert_eq!(doc["usage"], json!({"input_tokens": 5, "output_tokens": 6}));

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let text = post_to(&mock, "/v1/messages", &streamed)
        .await?
        .text()
        .await?;
    let events = named_events(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert!(names.contains(&"ping"));
    let json_parts: String = events
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == "input_json_delta")
        .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&json_parts)?,
        doc["content"][1]["input"]
    );
    let delta = events
        .iter()
        .find(|(n, _)| n == "message_delta")
        .ok_or("no delta")?;
    assert_eq!(delta.1["usage"]["output_tokens"], 6);
    Ok(())
}

#[tokio::test]
async fn injected_errors_take_the_apis_error_shape() -> TestResult {
    let mock = start(MockArgs {
        status: Some(http::StatusCode::SERVICE_UNAVAILABLE),
        ..args()
    })
    .await?;
    let r = post_to(&mock, "/v1/messages", &json!({})).await?;
    assert_eq!(r.status(), 503);
    let doc: Value = r.json().await?;
    assert_eq!(doc["type"], "error");
    assert_eq!(doc["error"]["type"], "overloaded_error");
    let doc: Value = post_to(&mock, "/v1/responses", &json!({}))
        .await?
        .json()
        .await?;
    assert_eq!(doc["error"]["code"], 503);
    Ok(())
}

// ---- --mcp ----

async fn mcp_post(
    mock: &MockHandle,
    session: Option<&str>,
    body: Value,
) -> reqwest::Result<reqwest::Response> {
    let mut req = client()
        .post(format!("{}/mcp", mock.url()))
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    req.send().await
}

#[tokio::test]
async fn mcp_mode_runs_a_session_from_initialize_to_delete() -> TestResult {
    let mock = start(MockArgs {
        name: "tools-v1".into(),
        mcp: true,
        ..args()
    })
    .await?;
    // Anything but initialize needs a session.
    let r = mcp_post(
        &mock,
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    )
    .await?;
    assert_eq!(r.status(), 400);
    let r = mcp_post(
        &mock,
        Some("nope"),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    )
    .await?;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await?["error"]["code"], -32001);

    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let r = mcp_post(&mock, None, init).await?;
    assert_eq!(r.status(), 200);
    let session = r.headers()["mcp-session-id"].to_str()?.to_owned();
    let doc: Value = r.json().await?;
    assert_eq!(doc["result"]["protocolVersion"], "2025-03-26");
    assert_eq!(doc["result"]["serverInfo"]["name"], "tools-v1");

    let r = mcp_post(
        &mock,
        Some(&session),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await?;
    assert_eq!(r.status(), 202);
    let tools: Value = mcp_post(
        &mock,
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await?
    .json()
    .await?;
    assert_eq!(tools["result"]["tools"][0]["name"], "whoami");
    // tools/call streams when the client accepts it.
    let r = mcp_post(
        &mock,
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "whoami", "arguments": {}}}),
    )
    .await?;
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let events = named_events(&r.text().await?);
    assert_eq!(
        events[0].1["result"]["content"][0]["text"],
        format!("served by tools-v1, session {session}").as_str()
    );

    // The GET stream opens with a notification.
    let mut get = client()
        .get(format!("{}/mcp", mock.url()))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .send()
        .await?;
    assert_eq!(get.status(), 200);
    let first = get.chunk().await?.ok_or("no first event")?;
    assert!(std::str::from_utf8(&first)?.contains("notifications/message"));
    drop(get);

    let r = client()
        .delete(format!("{}/mcp", mock.url()))
        .header("mcp-session-id", &session)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let r = mcp_post(
        &mock,
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 4, "method": "ping"}),
    )
    .await?;
    assert_eq!(r.status(), 404);
    Ok(())
}
