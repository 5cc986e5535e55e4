//! A real Prometheus server scrapes a running cutover and answers the
//! queries an operator's dashboard runs: request rates by route and version,
//! a p95 from the duration histogram's buckets, every expression of
//! docker/grafana/cutover.json (parsed and evaluated by Prometheus itself),
//! and the rollback annotation once a rollout is aborted.
//!
//! Uses Debian's `prometheus` package (`.ci/run` installs it); skipped,
//! loudly, where the binary cannot be found, and failed under `CI=true`.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A Prometheus server on a free loopback port with its own temporary
/// storage, scraping one target every second. Killed on drop.
struct Prometheus {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(binary: &PathBuf, target: std::net::SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: cutover\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("write prometheus.yml");
        let port = tool_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query: `Ok(result vector)` or `Err(Prometheus's error)`.
    async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let url = format!("{}/api/v1/query?query={}", self.base, encode(promql));
        let body: Value = client()
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encoding for a query-string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The sample value of one instant-vector element.
fn value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn label<'a>(sample: &'a Value, name: &str) -> &'a str {
    sample["metric"][name].as_str().unwrap_or("")
}

/// Poll `promql` until `accept` holds for its result or `deadline` passes.
async fn poll(
    prom: &Prometheus,
    promql: &str,
    deadline: Instant,
    accept: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut last = Err("never queried".to_owned());
    while Instant::now() < deadline {
        last = prom.query(promql).await;
        if let Ok(result) = &last
            && accept(result)
        {
            return result.clone();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "Prometheus never answered `{promql}` as expected; last answer: {last:?}\n--- prometheus log ---\n{}",
        prom.log()
    );
}

/// Two versions split by user, and a second route with a rollout (aborted
/// below, for the rollback annotation).
fn config(a: &str, b: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "2s"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
[[upstreams]]
name = "a"
url = "{a}"
[[upstreams]]
name = "b"
url = "{b}"
[[routes]]
name = "canary"
match = {{ path_prefix = "/canary/" }}
sticky = ["header:x-user-id"]
[[routes.versions]]
name = "base"
upstream = "a"
weight = 50.0
[[routes.versions]]
name = "cand"
upstream = "b"
weight = 50.0
[routes.rollout]
baseline = "base"
canary = "cand"
steps = [50, 100]
interval = "1h"
min_requests = 1000
[routes.rollout.rollback]
window = "1m"
min_requests = 1000
error_rate = 0.5
[[routes]]
name = "chat"
match = {{ path_prefix = "/v1/" }}
sticky = ["header:x-user-id"]
[[routes.versions]]
name = "v1"
upstream = "a"
weight = 50.0
[[routes.versions]]
name = "v2"
upstream = "b"
weight = 50.0
"#
    )
}

/// A dashboard expression with Grafana's variables filled in.
fn grafana_to_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "5s")
        .replace("$__range", "1m")
        .replace("$__interval", "1s")
        .replace("$route", ".*")
}

/// (panel expressions, annotation expressions)
fn dashboard_expressions() -> (Vec<String>, Vec<String>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docker/grafana/cutover.json");
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard"))
        .expect("dashboard JSON");
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.extend(t["expr"].as_str().map(str::to_owned));
        }
    }
    let annotations = d["annotations"]["list"]
        .as_array()
        .expect("annotations")
        .iter()
        .filter_map(|a| a["expr"].as_str().map(str::to_owned))
        .collect();
    (out, annotations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_cutover_and_answers_dashboard_queries() {
    let Some(binary) = tools::require(
        "prometheus",
        &["/usr/bin/prometheus"],
        "apt-get install prometheus",
    ) else {
        return;
    };
    let started = Instant::now();
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy(&config(&a.url(), &b.url())).await;
    let prom = Prometheus::start(&binary, proxy.admin);
    let deadline = Instant::now() + Duration::from_secs(25);

    let ready = eventually_async(Duration::from_secs(15), || async {
        client()
            .get(format!("{}/-/ready", prom.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ready, "prometheus never became ready:\n{}", prom.log());

    // Steady traffic while Prometheus scrapes: 50 users over both routes,
    // bounded in count and stopped when the test ends.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let traffic = {
        let (stop, sent, url) = (Arc::clone(&stop), Arc::clone(&sent), proxy.url());
        tokio::spawn(async move {
            let http = client();
            for i in 0..5_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let path = if i % 4 == 3 {
                    "/canary/x"
                } else {
                    "/v1/chat/completions"
                };
                let body = if i % 2 == 0 { CHAT } else { CHAT_STREAM };
                if let Ok(r) = http
                    .post(format!("{url}{path}"))
                    .header("x-user-id", format!("user-{}", i % 50))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    let _ = r.bytes().await;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // The target is up.
    poll(&prom, r#"up{job="cutover"}"#, deadline, |r| {
        r.len() == 1 && value(&r[0]) == 1.0
    })
    .await;

    // Request rate per route and version: both versions of `chat`, > 0.
    let rates = poll(
        &prom,
        r#"sum by (route, version) (rate(cutover_requests_total{route="chat"}[5s]))"#,
        deadline,
        |r| {
            ["v1", "v2"].iter().all(|v| {
                r.iter()
                    .any(|s| label(s, "version") == *v && value(s) > 0.0)
            })
        },
    )
    .await;
    assert!(
        rates.iter().all(|s| label(s, "route") == "chat"),
        "{rates:?}"
    );

    // p95 from the histogram's buckets, overall and per version: finite,
    // positive, and no more than the slowest bucket bound in use.
    let p95 = poll(
        &prom,
        "histogram_quantile(0.95, sum by (le) (rate(cutover_request_duration_seconds_bucket[5s])))",
        deadline,
        |r| r.len() == 1 && value(&r[0]).is_finite() && value(&r[0]) > 0.0,
    )
    .await;
    assert!(value(&p95[0]) < 5.0, "mocks answer at once: p95 {p95:?}");
    poll(
        &prom,
        r#"histogram_quantile(0.95, sum by (le, route, version) (rate(cutover_request_duration_seconds_bucket{route="chat"}[5s])))"#,
        deadline,
        |r| {
            ["v1", "v2"].iter().all(|v| {
                r.iter().any(|s| {
                    label(s, "route") == "chat"
                        && label(s, "version") == *v
                        && value(s).is_finite()
                })
            })
        },
    )
    .await;

    // A rollback, then the dashboard's rollback annotation fires for it.
    let r = client()
        .post(format!("{}/routes/canary/rollout/abort", proxy.admin_url()))
        .send()
        .await
        .expect("abort");
    assert_eq!(r.status(), 200);
    // Every reason's series is there at 0 from the start, and only the
    // rollback's may show: the queries keep what is above 0. They also
    // catch a series that is new (first scraped at 1).
    let (exprs, annotations) = dashboard_expressions();
    let annotation = annotations
        .iter()
        .find(|e| e.contains("cutover_rollbacks_total"))
        .expect("the dashboard's rollback annotation");
    let panel = exprs
        .iter()
        .find(|e| e.contains("cutover_rollbacks_total"))
        .expect("the dashboard's rollbacks panel");
    for q in [annotation, panel] {
        let fired = poll(&prom, &grafana_to_promql(q), deadline, |r| {
            r.iter()
                .any(|s| label(s, "route") == "canary" && label(s, "reason") == "abort")
        })
        .await;
        assert!(fired.iter().all(|s| value(s) >= 1.0), "{q}: {fired:?}");
    }

    // Every dashboard expression is valid PromQL that Prometheus evaluates.
    assert!(exprs.len() >= 20, "{exprs:?}");
    for e in exprs.iter().chain(&annotations) {
        let q = grafana_to_promql(e);
        if let Err(err) = prom.query(&q).await {
            panic!("dashboard expression rejected by Prometheus: {err}\n{q}");
        }
    }
    // And the ones the traffic above feeds have data (the error share is
    // 0, not empty, for versions without errors).
    for needle in [
        "rate(cutover_requests_total",
        "status=\"5xx\"",
        "cutover_time_to_first_byte_seconds_bucket",
        "cutover_overhead_seconds_bucket",
        "cutover_breaker_state",
        "cutover_rollout_step",
        "cutover_rollout_state",
        "cutover_route_weight",
    ] {
        let e = exprs
            .iter()
            .find(|e| e.contains(needle))
            .unwrap_or_else(|| panic!("no dashboard expression with {needle}"));
        poll(&prom, &grafana_to_promql(e), deadline, |r| !r.is_empty()).await;
    }

    stop.store(true, Ordering::Relaxed);
    traffic.await.expect("traffic task");
    assert!(sent.load(Ordering::Relaxed) > 0);
    eprintln!(
        "prometheus roundtrip: {} requests, {:.1} s",
        sent.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}
