//! `GET /metrics` passes `promtool check metrics` (Prometheus's own linter:
//! exposition syntax, HELP/TYPE lines, naming conventions) after JSON and
//! SSE traffic has created every kind of series the proxy writes.
//!
//! Skipped, loudly, where promtool is not installed; under `CI=true` that
//! fails instead (`.ci/run` installs it).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

#[tokio::test]
async fn metrics_pass_promtool_check() {
    let Some(promtool) = tools::require("promtool", &[], "apt-get install prometheus") else {
        return;
    };
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy(&two_versions(&a.url(), &b.url(), 50.0, 50.0, "")).await;
    let http = client();
    for i in 0..20 {
        let body = if i % 2 == 0 { CHAT } else { CHAT_STREAM };
        let r = http
            .post(format!("{}/v1/chat/completions", proxy.url()))
            .header("x-user-id", format!("user-{i}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200);
        // Read to the end: usage and duration are recorded as the body ends.
        let _ = r.bytes().await.expect("body");
    }
    // A request no route matches, for the unassigned series.
    let r = http
        .get(format!("{}/nowhere", proxy.url()))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 404);
    // A reload, for the reload counter and generation gauge.
    proxy
        .reload_with(&two_versions(&a.url(), &b.url(), 75.0, 25.0, ""))
        .await;

    let metrics = http
        .get(format!("{}/metrics", proxy.admin_url()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("cutover_requests_total"), "{metrics}");

    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\nstdout:\n{}\nstderr:\n{}\n--- metrics ---\n{metrics}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// Every metric family SPEC §7 names, as a scraper that reads only those
/// names sees them: on `/metrics` of the real binary before any request,
/// reload or rollback, with the shipped example config (a rollout, a
/// shadow, fallbacks, a cache). Rare events' series start at 0, so a
/// dashboard's `increase` sees their first event.
#[tokio::test]
async fn every_spec_family_is_on_metrics_before_any_traffic() {
    const FAMILIES: &[&str] = &[
        "cutover_requests_total",
        "cutover_request_duration_seconds",
        "cutover_time_to_first_byte_seconds",
        "cutover_upstream_requests_total",
        "cutover_fallbacks_total",
        "cutover_refusals_total",
        "cutover_breaker_state",
        "cutover_shadow_requests_total",
        "cutover_shadow_duration_seconds",
        "cutover_shadow_compare_total",
        "cutover_shadow_tokens_total",
        "cutover_shadow_cost_usd_total",
        "cutover_cache_requests_total",
        "cutover_cache_bytes",
        "cutover_tokens_total",
        "cutover_cost_usd_total",
        "cutover_outcomes_total",
        "cutover_route_weight",
        "cutover_rollout_step",
        "cutover_rollout_state",
        "cutover_rollbacks_total",
        "cutover_config_reloads_total",
        "cutover_config_generation",
        "cutover_overhead_seconds",
        "cutover_upstream_retries_total",
    ];
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"))
            .expect("config/example.toml");
    let (sockets, traffic, admin) = traffic_and_admin();
    let toml = example
        .replace(
            "listen = \"0.0.0.0:8080\"",
            &format!("listen = \"127.0.0.1:{traffic}\""),
        )
        .replace(
            "listen = \"127.0.0.1:9901\"",
            &format!("listen = \"127.0.0.1:{admin}\""),
        );
    assert_ne!(toml, example, "the example's listen addresses moved");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cutover.toml");
    std::fs::write(&path, toml).expect("write");
    let _bin = Binary::spawn_with(
        &["serve", "--config", path.to_str().expect("utf-8")],
        &[],
        sockets,
    );
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    assert!(
        wait_ready(admin, std::time::Duration::from_secs(20)).await,
        "the binary serves"
    );
    let text = scrape_admin(&format!("http://{admin}")).await;
    let missing: Vec<&str> = FAMILIES
        .iter()
        .copied()
        .filter(|f| !text.contains(&format!("# TYPE {f} ")))
        .collect();
    assert!(missing.is_empty(), "missing {missing:?}:\n{text}");
    for (name, labels) in [
        ("cutover_config_reloads_total", &[("result", "ok")][..]),
        ("cutover_config_reloads_total", &[("result", "error")]),
        // The example's chain for v1: v1, then its own `small-model`.
        (
            "cutover_fallbacks_total",
            &[("route", "chat"), ("from", "v1"), ("to", "small-model")],
        ),
        (
            "cutover_rollbacks_total",
            &[("route", "chat"), ("reason", "error_rate")],
        ),
        (
            "cutover_rollbacks_total",
            &[("route", "chat"), ("reason", "abort")],
        ),
    ] {
        assert_eq!(
            metric(&text, name, labels),
            Some(0.0),
            "{name} {labels:?}:\n{text}"
        );
    }
}
