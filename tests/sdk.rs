//! The official OpenAI and Anthropic Python SDKs as cutover's clients
//! (tests/python/sdk.py): OpenAI Chat Completions and the Responses API
//! through `openai`, Anthropic Messages through `anthropic`, each streamed
//! with the SDK's own stream helpers and unstreamed.
//!
//! * The tokens and cost cutover counts (versions, shadows, and the
//!   rollout judge's step statistics) equal the usage the SDK read, which
//!   is the mock's exact usage.
//! * Every refusal format, and `auto`, is parsed by its SDK as a normal
//!   answer whose text is the refusal message, as JSON and as a stream.
//!
//! Under `CI=true` a missing venv fails these tests (see
//! tests/common/python.rs); elsewhere they skip, loudly.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const APIS: [&str; 3] = ["chat", "responses", "messages"];

/// Version prices, USD per million tokens: integers, so a request's cost
/// is a whole number of micro-dollars and every sum is exact.
const IN_PER_MTOK: f64 = 3.0;
const OUT_PER_MTOK: f64 = 15.0;
const SHADOW_IN_PER_MTOK: f64 = 1.0;
const SHADOW_OUT_PER_MTOK: f64 = 2.0;

/// What the SDK is given as its base URL for `api` under `prefix`.
fn base_url(proxy: &Proxy, prefix: &str, api: &str) -> String {
    match api {
        // The Anthropic SDK appends /v1/messages itself.
        "messages" => format!("{}/{prefix}", proxy.url()),
        _ => format!("{}/{prefix}/v1", proxy.url()),
    }
}

/// One route per API, `sdk-API` on `/API/`: a rollout of v2 against v1 on
/// the same mock (so the judge counts cost), and a shadow with its own
/// prices.
fn usage_config(mock: &str) -> String {
    let mut text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "1s"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
[[upstreams]]
name = "agent"
url = "{mock}"
"#
    );
    for api in APIS {
        text.push_str(&format!(
            r#"
[[routes]]
name = "sdk-{api}"
match = {{ path_prefix = "/{api}/" }}
[[routes.versions]]
name = "v1"
upstream = "agent"
weight = 50.0
cost = {{ input_per_mtok = {IN_PER_MTOK:.1}, output_per_mtok = {OUT_PER_MTOK:.1} }}
[[routes.versions]]
name = "v2"
upstream = "agent"
weight = 50.0
cost = {{ input_per_mtok = {IN_PER_MTOK:.1}, output_per_mtok = {OUT_PER_MTOK:.1} }}
[[routes.shadows]]
name = "next"
upstream = "agent"
percent = 100.0
max_in_flight = 8
cost = {{ input_per_mtok = {SHADOW_IN_PER_MTOK:.1}, output_per_mtok = {SHADOW_OUT_PER_MTOK:.1} }}
[routes.rollout]
baseline = "v1"
canary = "v2"
steps = [50, 100]
interval = "1h"
min_requests = 1000
[routes.rollout.rollback]
window = "1m"
min_requests = 1000
"#
        ));
    }
    text
}

fn sum_over_versions(text: &str, name: &str, route: &str, extra: &[(&str, &str)]) -> f64 {
    ["v1", "v2"]
        .iter()
        .map(|v| {
            let mut labels = vec![("route", route), ("version", *v)];
            labels.extend_from_slice(extra);
            metric(text, name, &labels).unwrap_or(0.0)
        })
        .sum()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 + 1e-9 * b.abs()
}

#[tokio::test]
async fn each_sdk_streams_through_cutover_and_tokens_and_cost_equal_its_usage() {
    let Some(python) = python::python_with(&["openai", "anthropic"]) else {
        return;
    };
    let _ = client(); // installs the TLS provider reqwest needs
    let mock = healthy_backend("agent").await;
    let proxy = start_proxy(&usage_config(&mock.url())).await;
    let prompt = "count these five words please";
    // One Python process for every call: the SDKs take seconds to import.
    let jobs: Vec<Vec<String>> = APIS
        .iter()
        .flat_map(|api| {
            let url = base_url(&proxy, api, api);
            ["stream", "answer"]
                .map(|mode| vec![mode.into(), (*api).into(), url.clone(), prompt.into()])
        })
        .collect();
    let jobs = serde_json::to_string(&jobs).expect("jobs");
    let answers = python::run_json(&python, "sdk.py", &["batch", &jobs]).await;
    let answers = answers.as_array().cloned().unwrap_or_default();
    assert_eq!(answers.len(), APIS.len() * 2, "{answers:?}");
    for (i, api) in APIS.iter().enumerate() {
        let route = format!("sdk-{api}");
        let mut input = 0.0;
        let mut output = 0.0;
        for (got, mode) in answers[2 * i..2 * i + 2].iter().zip(["stream", "answer"]) {
            assert_eq!(
                got["text"], "Hello from agent: count these five words please",
                "{api} {mode}"
            );
            // The mock's exact usage: the prompt's words, the reply's words.
            assert_eq!(got["input"], 5, "{api} {mode}: {got}");
            assert_eq!(got["output"], 8, "{api} {mode}: {got}");
            input += got["input"].as_f64().unwrap_or(0.0);
            output += got["output"].as_f64().unwrap_or(0.0);
        }
        let cost = (input * IN_PER_MTOK + output * OUT_PER_MTOK) / 1e6;
        let shadow_cost = (input * SHADOW_IN_PER_MTOK + output * SHADOW_OUT_PER_MTOK) / 1e6;

        // Versions: counted when each stream ends.
        let counted = eventually_async(Duration::from_secs(5), || async {
            let text = scrape(&proxy).await;
            sum_over_versions(&text, "cutover_tokens_total", &route, &[("kind", "output")])
                == output
                && metric(
                    &text,
                    "cutover_shadow_tokens_total",
                    &[("route", &route), ("shadow", "next"), ("kind", "output")],
                ) == Some(output)
        })
        .await;
        let text = scrape(&proxy).await;
        assert!(counted, "{api}: tokens not counted\n{text}");
        assert_eq!(
            sum_over_versions(&text, "cutover_tokens_total", &route, &[("kind", "input")]),
            input,
            "{api}"
        );
        let version_cost = sum_over_versions(&text, "cutover_cost_usd_total", &route, &[]);
        assert!(close(version_cost, cost), "{api}: {version_cost} != {cost}");

        // Shadows: the mirrored answers, at the shadow's prices.
        assert_eq!(
            metric(
                &text,
                "cutover_shadow_tokens_total",
                &[("route", &route), ("shadow", "next"), ("kind", "input")],
            ),
            Some(input),
            "{api}"
        );
        let mirrored = metric(
            &text,
            "cutover_shadow_cost_usd_total",
            &[("route", &route), ("shadow", "next")],
        )
        .unwrap_or(-1.0);
        assert!(
            close(mirrored, shadow_cost),
            "{api}: {mirrored} != {shadow_cost}"
        );

        // The rollout judge: the step's mean cost per request, per side.
        let status: Value = reqwest::get(format!("{}/status", proxy.admin_url()))
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        let rollout = status["routes"]
            .as_array()
            .and_then(|routes| routes.iter().find(|r| r["name"] == route.as_str()))
            .map(|r| r["rollout"].clone())
            .unwrap_or(Value::Null);
        let judged: f64 = ["baseline", "canary"]
            .iter()
            .map(|side| {
                let s = &rollout[side];
                s["requests"].as_f64().unwrap_or(0.0) * s["mean_cost_usd"].as_f64().unwrap_or(0.0)
            })
            .sum();
        assert!(
            close(judged, cost),
            "{api}: judged {judged} != {cost}: {rollout}"
        );
    }
}

/// A route per refusal format on `/fmt-FORMAT/`, all on an upstream that
/// refuses connections.
fn refusal_config() -> String {
    let mut text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "1s"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
[[upstreams]]
name = "down"
url = "http://127.0.0.1:{}"
connect_timeout = "1s"
"#,
        dead_port()
    );
    for format in [
        "openai-chat",
        "openai-responses",
        "anthropic-messages",
        "auto",
    ] {
        text.push_str(&format!(
            r#"
[[routes]]
name = "fmt-{format}"
match = {{ path_prefix = "/fmt-{format}/" }}
refusal = {{ format = "{format}", message = "cutover says: back soon ({format})" }}
[[routes.versions]]
name = "v1"
upstream = "down"
weight = 100.0
"#
        ));
    }
    text
}

#[tokio::test]
async fn every_refusal_format_and_auto_is_a_normal_answer_to_its_sdk() {
    let Some(python) = python::python_with(&["openai", "anthropic"]) else {
        return;
    };
    let _ = client(); // installs the TLS provider reqwest needs
    let proxy = start_proxy(&refusal_config()).await;
    let cases = [
        ("openai-chat", "chat"),
        ("openai-responses", "responses"),
        ("anthropic-messages", "messages"),
        ("auto", "chat"),
        ("auto", "responses"),
        ("auto", "messages"),
    ];
    let jobs: Vec<Vec<String>> = cases
        .iter()
        .map(|(format, api)| {
            let url = base_url(&proxy, &format!("fmt-{format}"), api);
            vec!["refusal".into(), (*api).into(), url]
        })
        .collect();
    let jobs = serde_json::to_string(&jobs).expect("jobs");
    let answers = python::run_json(&python, "sdk.py", &["batch", &jobs]).await;
    for ((format, api), got) in cases.iter().zip(answers.as_array().into_iter().flatten()) {
        let want = format!("cutover says: back soon ({format})");
        assert_eq!(got["json"], want.as_str(), "{format} via {api}: {got}");
        assert_eq!(got["stream"], want.as_str(), "{format} via {api}: {got}");
    }
    assert_eq!(answers.as_array().map(Vec::len), Some(cases.len()));
    let text = scrape(&proxy).await;
    assert_eq!(
        metric(
            &text,
            "cutover_refusals_total",
            &[("route", "fmt-auto"), ("reason", "exhausted")]
        ),
        Some(6.0)
    );
}
