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
