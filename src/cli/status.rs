//! `cutover status`: a terminal view of the admin `GET /status` document
//! (SPEC §1, §10).
//!
//! Exit codes: 0 shown, 1 the admin API is unreachable or answered an
//! error, 2 usage (including an admin URL that cannot be used).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::admin::status::{RouteView, Status};

/// Long enough for a loaded proxy, short enough that a hung one does not
/// hang a terminal or a script.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Admin API base URL (plain HTTP).
    #[arg(long, default_value = "http://127.0.0.1:9901")]
    pub admin: String,
    /// Bearer token, when the proxy sets `admin.token_env`.
    #[arg(long, env = "CUTOVER_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

pub fn run(args: Args) -> u8 {
    let url = match status_url(&args.admin) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: --admin {:?}: {e}", args.admin);
            return super::EXIT_USAGE;
        }
    };
    let runtime = match super::runtime(super::Threads::Current, "error") {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(fetch(&url, args.token.as_deref())) {
        Ok(status) => {
            print!("{}", render(&status, &url));
            super::EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {url}: {e}");
            super::EXIT_USER
        }
    }
}

/// `http://host:port[/prefix]` → `http://host:port[/prefix]/status`. A bare
/// `host:port` is taken as plain HTTP.
fn status_url(admin: &str) -> Result<http::Uri, String> {
    admin_url(admin, "/status")
}

/// `PATH` on the admin listener named by `--admin` (`HOST:PORT` or an
/// `http://` URL).
pub(super) fn admin_url(admin: &str, path: &str) -> Result<http::Uri, String> {
    let admin = admin.trim();
    let mut base = if admin.contains("://") {
        admin.to_string()
    } else {
        format!("http://{admin}")
    };
    // Trailing slashes only after the scheme's own `//`.
    while base.ends_with('/') && base.len() > "http://".len() {
        base.pop();
    }
    if !base.starts_with("http://") {
        return Err("only http:// admin URLs are supported (the admin listener speaks plain HTTP); e.g. http://127.0.0.1:9901".into());
    }
    let uri: http::Uri = format!("{base}{path}")
        .parse()
        .map_err(|e| format!("not a valid URL ({e}); e.g. http://127.0.0.1:9901"))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL has no host; e.g. http://127.0.0.1:9901".into());
    }
    Ok(uri)
}

async fn fetch(url: &http::Uri, token: Option<&str>) -> Result<Status, String> {
    let body = call(http::Method::GET, url, token).await?;
    serde_json::from_slice(&body).map_err(|e| format!("the answer is not a status document: {e}"))
}

/// One admin API call; a non-2xx answer is an error carrying the API's
/// own message.
pub(super) async fn call(
    method: http::Method,
    url: &http::Uri,
    token: Option<&str>,
) -> Result<Bytes, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = http::Request::builder().method(method).uri(url.clone());
    if let Some(token) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|_| "the token is not a valid header value".to_string())?;
    let exchange = async {
        let response = client
            .request(req)
            .await
            .map_err(|e| format!("admin API unreachable: {}", error_chain(&e)))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer failed: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {}s", TIMEOUT.as_secs()))??;
    if !status.is_success() {
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        return Err(format!("admin API answered {status}: {detail}"));
    }
    Ok(body)
}

/// The innermost cause too: "client error (Connect)" alone says little.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

const BAR: usize = 20;

/// A 20-cell bar for a percent: `[#####...............]`.
fn bar(percent: f64) -> String {
    let filled = ((percent.clamp(0.0, 100.0) / 100.0) * BAR as f64).round() as usize;
    format!(
        "[{}{}]",
        "#".repeat(filled),
        ".".repeat(BAR - filled.min(BAR))
    )
}

fn or_none(items: &[String], sep: &str) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(sep)
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

pub fn render(s: &Status, url: &http::Uri) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "cutover status from {url}");
    let _ = writeln!(o, "  generation        {}", s.generation);
    let _ = writeln!(o, "  loaded at         {}", s.loaded_at);
    match &s.last_reload_error {
        None => {
            let _ = writeln!(o, "  last reload error none");
        }
        Some(e) => {
            let _ = writeln!(o, "  last reload error at {}:", e.at);
            for line in e.error.lines() {
                let _ = writeln!(o, "    {line}");
            }
        }
    }
    let _ = writeln!(
        o,
        "  restart required  {}",
        or_none(&s.restart_required, ", ")
    );
    let _ = writeln!(o, "  draining          {}", yes_no(s.draining));
    let _ = writeln!(o, "  in flight         {}", s.in_flight);
    if let Some(c) = &s.cluster {
        cluster(&mut o, c);
    }
    for r in &s.routes {
        route(&mut o, r);
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "upstreams");
    if s.upstreams.is_empty() {
        let _ = writeln!(o, "  none");
    }
    let width = s.upstreams.iter().map(|u| u.name.len()).max().unwrap_or(0);
    for u in &s.upstreams {
        let b = &u.breaker;
        let half_open = b
            .half_open_in_ms
            .map(|ms| format!(", half-open in {:.1}s", ms as f64 / 1000.0))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "  {:width$}  {}  in flight {}/{}  breaker {} ({} in a row, {}/{} failed in window{half_open})",
            u.name,
            u.url,
            u.in_flight,
            b.max_in_flight,
            if b.state.is_empty() { "?" } else { &b.state },
            b.consecutive_failures,
            b.window_failures,
            b.window_requests,
        );
    }
    let c = &s.cache;
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "cache  {} entries, {} of {} bytes, hit ratio {} ({} hits, {} misses, {} bypassed)",
        c.entries,
        c.bytes,
        c.max_size,
        share(c.hit_ratio),
        c.hits,
        c.misses,
        c.bypasses
    );
    o
}

/// The fleet this replica belongs to (`[cluster]`).
fn cluster(o: &mut String, c: &crate::cluster::status::ClusterStatus) {
    use std::fmt::Write;
    let _ = writeln!(o);
    let leader = match (&c.leader, c.is_leader) {
        (_, true) => "this replica leads".to_string(),
        (Some(l), false) => format!("leader {l}"),
        (None, false) => "no leader".to_string(),
    };
    let _ = writeln!(
        o,
        "fleet {}  (replica {}, {leader}, epoch {})",
        c.name, c.replica, c.epoch
    );
    if c.up {
        let _ = writeln!(
            o,
            "  redis       {}  up, last sync {}",
            c.redis,
            c.last_sync.as_deref().unwrap_or("-")
        );
    } else {
        let _ = writeln!(
            o,
            "  redis       {}  UNREACHABLE since {}: serving at the last weights, rollouts hold, rollback triggers checked here",
            c.redis,
            c.degraded_since.as_deref().unwrap_or("start")
        );
        if let Some(e) = &c.last_error {
            let _ = writeln!(o, "    error     {e}");
        }
    }
    let _ = writeln!(
        o,
        "  lease       {}ms, sync every {}ms, {} writes fenced off",
        c.lease_ms, c.sync_interval_ms, c.refused_writes
    );
    let live = c.replicas.iter().filter(|r| r.live).count();
    let _ = writeln!(o, "  replicas    {live} live of {} seen", c.replicas.len());
    for r in &c.replicas {
        let _ = writeln!(
            o,
            "    {}{}  last seen {}",
            r.replica,
            if r.live { "" } else { " (gone)" },
            r.last_seen
        );
    }
    let _ = writeln!(
        o,
        "  feedback    {} records written to the fleet's index, {} kept local only",
        c.feedback_written, c.feedback_dropped
    );
    if let Some(sc) = &c.shared_cache {
        let _ = writeln!(
            o,
            "  shared cache {} hits, {} misses, {} errors, {} skipped (Redis down); {} writes ({} failed, {} dropped)",
            sc.hits,
            sc.misses,
            sc.errors,
            sc.skipped,
            sc.writes,
            sc.write_errors,
            sc.writes_dropped
        );
    }
}

/// A share as a percent, or `-` before there is anything to divide.
fn share(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{:.1}%", v * 100.0))
}

fn route(o: &mut String, r: &RouteView) {
    use std::fmt::Write;
    let m = &r.matcher;
    let mut matcher = vec![format!("path_prefix {}", m.path_prefix)];
    if !m.methods.is_empty() {
        matcher.push(format!("methods {}", m.methods.join(",")));
    }
    if let Some(host) = &m.host {
        matcher.push(format!("host {host}"));
    }
    for (name, value) in &m.headers {
        matcher.push(format!("header {name}={}", plain(value)));
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "route {}  ({})", r.name, matcher.join(", "));
    let _ = writeln!(o, "  sticky      {}", or_none(&r.sticky, ", "));
    if let Some(pin) = &r.pin_header {
        let _ = writeln!(o, "  pin header  {pin}");
    }
    if let Some(session) = &r.session_header {
        let _ = writeln!(o, "  sessions    {session} (kept on their version)");
    }
    let _ = writeln!(o, "  versions    configured  effective");
    let width = r
        .versions
        .iter()
        .map(|v| v.name.len() + v.upstream.len() + 3)
        .max()
        .unwrap_or(0);
    for v in &r.versions {
        let label = format!("{} -> {}", v.name, v.upstream);
        let _ = writeln!(
            o,
            "    {label:width$}  {:>7.2}%  {:>7.2}%  {}",
            v.weight,
            v.effective_weight,
            bar(v.effective_weight)
        );
        if !v.deps.is_empty() {
            let deps: Vec<String> = v
                .deps
                .iter()
                .map(|(k, val)| format!("{k}={}", plain(val)))
                .collect();
            let _ = writeln!(o, "    {:width$}  deps {}", "", deps.join(" "));
        }
    }
    if r.shadows.is_empty() {
        let _ = writeln!(o, "  shadows     none");
    } else {
        let _ = writeln!(o, "  shadows");
        for sh in &r.shadows {
            let _ = writeln!(
                o,
                "    {} -> {}  {:.2}% mirrored  in flight {}/{}  timeout {}ms  dropped {}  failures {}  match {}",
                sh.name,
                sh.upstream,
                sh.percent,
                sh.live.in_flight,
                sh.max_in_flight,
                sh.timeout_ms,
                sh.live.dropped,
                share(sh.live.failure_share),
                share(sh.live.match_share)
            );
        }
    }
    let _ = writeln!(o, "  fallbacks   {}", or_none(&r.fallbacks, " -> "));
    match &r.cache {
        None => {
            let _ = writeln!(o, "  cache       off");
        }
        Some(c) => {
            let _ = writeln!(
                o,
                "  cache       ttl {}ms, vary {}, deterministic only {}",
                c.ttl_ms,
                or_none(&c.vary, ","),
                yes_no(c.deterministic_only)
            );
        }
    }
    if let Some(r) = &r.rollout {
        rollout(o, r);
    }
}

/// The rollout block of a route: state, the step's figures and the gates
/// at the last tick. Read loosely from the JSON, so a field an older or
/// newer proxy lacks shows as `-`.
fn rollout(o: &mut String, r: &serde_json::Value) {
    use std::fmt::Write;
    let f = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_f64);
    let n =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let text = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("-")
            .to_string()
    };
    let state = text(r, "state");
    let detail = r.get("detail").cloned().unwrap_or_default();
    let mut head = state.clone();
    if let Some(stage) = detail.get("stage").and_then(|s| s.get("stage")) {
        head.push_str(&format!(" (while {})", plain(stage)));
    }
    if let Some(step) = r.get("step").and_then(serde_json::Value::as_i64)
        && step >= 0
    {
        head.push_str(&format!(", step {step}"));
    }
    let _ = writeln!(
        o,
        "  rollout     {head}, canary at {}%{}, {} on this stage",
        f(r, "canary_weight").map_or("-".into(), |w| format!("{w:.2}")),
        if r.get("mirrored").and_then(serde_json::Value::as_bool) == Some(true) {
            " (mirrored 100%)"
        } else {
            ""
        },
        f(r, "stage_seconds").map_or("-".into(), |s| format!("{s:.0}s")),
    );
    if let Some(reason) = detail.get("reason") {
        let _ = writeln!(
            o,
            "    reason    {}: {}",
            text(reason, "kind"),
            text(reason, "detail")
        );
    }
    if let Some(fleet) = r.get("fleet") {
        let agrees = fleet.get("agrees").and_then(serde_json::Value::as_bool) != Some(false);
        let _ = writeln!(
            o,
            "    fleet     document {}, counts of {} replicas summed{}",
            n(fleet, "seq"),
            n(fleet, "replicas_counted"),
            if agrees {
                ""
            } else {
                "; this replica's config names ANOTHER canary: baseline only, nothing counted"
            }
        );
        if let Some(p) = fleet
            .get("pending_rollback")
            .and_then(serde_json::Value::as_str)
        {
            let _ = writeln!(o, "    pending   local rollback to report: {p}");
        }
    }
    if state == "rolled_back" {
        // The canary gets nothing until a restart or a new canary.
        return;
    }
    let ms = |v: Option<f64>| v.map_or("-".into(), |s| format!("{:.1}ms", s * 1000.0));
    for role in ["baseline", "canary"] {
        let Some(v) = r.get(role) else { continue };
        let _ = writeln!(
            o,
            "    {role:<9} {} requests, {} failed, p95 {}, p99 {}, cost/request {}, outcomes {} ok / {} failed",
            n(v, "requests"),
            share(f(v, "failure_rate")),
            ms(f(v, "p95_seconds")),
            ms(f(v, "p99_seconds")),
            f(v, "mean_cost_usd").map_or("-".into(), |c| format!("${c:.6}")),
            n(v, "outcome_success"),
            n(v, "outcome_failure"),
        );
    }
    let _ = writeln!(
        o,
        "    window    {} canary requests, {} failed",
        n(r, "window_requests"),
        n(r, "window_failures"),
    );
    if let Some(mine) = r.get("replica") {
        let (b, c) = (&mine["baseline"], &mine["canary"]);
        let _ = writeln!(
            o,
            "    here      {} baseline and {} canary requests on this replica (the figures above are the fleet's)",
            n(b, "requests"),
            n(c, "requests"),
        );
    }
    let gates = r
        .get("judgement")
        .and_then(|j| j.get("gates"))
        .and_then(serde_json::Value::as_array);
    let Some(gates) = gates else {
        let _ = writeln!(o, "    gates     not judged yet on this stage");
        return;
    };
    // Costs per request are small: keep their digits.
    let num = |v: Option<f64>| {
        v.map_or("-".into(), |x| {
            if x != 0.0 && x.abs() < 1e-3 {
                format!("{x:.2e}")
            } else {
                format!("{x:.4}")
            }
        })
    };
    let width = gates
        .iter()
        .map(|g| text(g, "gate").len())
        .max()
        .unwrap_or(0);
    for (i, g) in gates.iter().enumerate() {
        let samples = match g.get("n_baseline").and_then(serde_json::Value::as_u64) {
            Some(b) => format!("{}/{b}", n(g, "n_canary")),
            None => n(g, "n_canary").to_string(),
        };
        let _ = writeln!(
            o,
            "    {:<9} {:width$}  {:<12}  estimate {}  bounds [{}, {}]  threshold {}  n {samples}",
            if i == 0 { "gates" } else { "" },
            text(g, "gate"),
            text(g, "verdict"),
            num(f(g, "estimate")),
            num(f(g, "lower")),
            num(f(g, "upper")),
            f(g, "threshold").map_or("-".into(), |t| t.to_string()),
        );
    }
}

/// A JSON value for a terminal: strings without their quotes.
fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls_normalize() {
        let u = |s: &str| status_url(s).map(|u| u.to_string());
        assert_eq!(
            u("http://127.0.0.1:9901"),
            Ok("http://127.0.0.1:9901/status".into())
        );
        assert_eq!(
            u("http://127.0.0.1:9901/"),
            Ok("http://127.0.0.1:9901/status".into())
        );
        assert_eq!(
            u("127.0.0.1:9901"),
            Ok("http://127.0.0.1:9901/status".into())
        );
        assert!(u("https://127.0.0.1:9901").is_err());
        assert!(u("http://").is_err());
        assert!(u("http:///").is_err());
        assert!(u("").is_err());
    }

    #[test]
    fn a_rollout_is_shown_with_its_gates() {
        let r = serde_json::json!({
            "state": "canary", "detail": {"state": "canary", "step": 0},
            "step": 0, "canary_weight": 1.0, "mirrored": false, "stage_seconds": 31.1,
            "baseline": {"requests": 2824, "failures": 0, "failure_rate": 0.0, "p95_seconds": 0.0597, "p99_seconds": 0.0614, "mean_cost_usd": 4.3e-05, "outcome_success": 0, "outcome_failure": 0},
            "canary": {"requests": 55, "failures": 0, "failure_rate": null, "p95_seconds": null, "p99_seconds": null, "mean_cost_usd": null, "outcome_success": 0, "outcome_failure": 0},
            "window_requests": 40, "window_failures": 12,
            "judgement": {"gates": [
                {"gate": "error_rate_margin", "verdict": "inconclusive", "estimate": 0.0, "lower": -0.004, "upper": 0.1077, "threshold": 0.01, "n_canary": 55, "n_baseline": 2824},
                {"gate": "max_cost_per_request", "verdict": "pass", "estimate": 4.3e-05, "lower": 4.3e-05, "upper": 4.3e-05, "threshold": 0.05, "n_canary": 55, "n_baseline": null}
            ]}
        });
        let mut o = String::new();
        rollout(&mut o, &r);
        for needle in [
            "  rollout     canary, step 0, canary at 1.00%, 31s on this stage\n",
            "    baseline  2824 requests, 0.0% failed, p95 59.7ms",
            "    canary    55 requests, - failed, p95 -",
            "    window    40 canary requests, 12 failed\n",
            "    gates     error_rate_margin     inconclusive  estimate 0.0000  bounds [-0.0040, 0.1077]  threshold 0.01  n 55/2824\n",
            "              max_cost_per_request  pass          estimate 4.30e-5  bounds [4.30e-5, 4.30e-5]  threshold 0.05  n 55\n",
        ] {
            assert!(o.contains(needle), "missing {needle:?} in:\n{o}");
        }

        let mut o = String::new();
        rollout(
            &mut o,
            &serde_json::json!({"state": "rolled_back", "step": -1, "canary_weight": 0.0, "stage_seconds": 2.0,
                "detail": {"state": "rolled_back", "reason": {"kind": "breaker_open", "detail": "the canary upstream's circuit breaker is open"}}}),
        );
        assert_eq!(
            o,
            "  rollout     rolled_back, canary at 0.00%, 2s on this stage\n    reason    breaker_open: the canary upstream's circuit breaker is open\n"
        );

        let mut o = String::new();
        rollout(
            &mut o,
            &serde_json::json!({"state": "paused", "detail": {"state": "paused", "stage": {"stage": "canary", "step": 2}}, "step": 2, "canary_weight": 10.0}),
        );
        assert!(
            o.starts_with(
                "  rollout     paused (while canary), step 2, canary at 10.00%, - on this stage\n"
            ),
            "{o}"
        );
        assert!(o.contains("not judged yet"), "{o}");
    }

    #[test]
    fn the_fleet_is_shown_up_or_degraded() {
        let up: crate::cluster::status::ClusterStatus = serde_json::from_value(serde_json::json!({
            "name": "chat-gateway", "replica": "pod-a", "redis": "redis://:***@redis:6379/0",
            "up": true, "degraded": false, "last_sync": "2025-01-01T00:00:00.000Z",
            "leader": "pod-b", "is_leader": false, "epoch": 4, "lease_ms": 5000, "sync_interval_ms": 1000,
            "replicas": [{"replica": "pod-a", "last_seen": "2025-01-01T00:00:00.000Z", "live": true},
                         {"replica": "pod-c", "last_seen": "2024-12-31T23:50:00.000Z", "live": false}],
            "refused_writes": 1, "feedback_written": 7, "feedback_dropped": 0
        }))
        .unwrap_or_default();
        let mut o = String::new();
        cluster(&mut o, &up);
        for needle in [
            "fleet chat-gateway  (replica pod-a, leader pod-b, epoch 4)\n",
            "  redis       redis://:***@redis:6379/0  up, last sync 2025-01-01T00:00:00.000Z\n",
            "  lease       5000ms, sync every 1000ms, 1 writes fenced off\n",
            "  replicas    1 live of 2 seen\n",
            "    pod-c (gone)  last seen 2024-12-31T23:50:00.000Z\n",
        ] {
            assert!(o.contains(needle), "missing {needle:?} in:\n{o}");
        }
        let down = crate::cluster::status::ClusterStatus {
            up: false,
            degraded: true,
            degraded_since: Some("2025-01-01T00:01:00.000Z".into()),
            last_error: Some("lease failed: Connection refused".into()),
            is_leader: false,
            ..up
        };
        let mut o = String::new();
        cluster(&mut o, &down);
        assert!(
            o.contains("UNREACHABLE since 2025-01-01T00:01:00.000Z: serving at the last weights"),
            "{o}"
        );
        assert!(
            o.contains("    error     lease failed: Connection refused\n"),
            "{o}"
        );

        let mut o = String::new();
        rollout(
            &mut o,
            &serde_json::json!({"state": "canary", "step": 0, "canary_weight": 0.0,
                "fleet": {"seq": 3, "stage_seq": 2, "agrees": false, "replicas_counted": 2, "pending_rollback": null},
                "replica": {"baseline": {"requests": 5}, "canary": {"requests": 0}}}),
        );
        assert!(o.contains("    fleet     document 3, counts of 2 replicas summed; this replica's config names ANOTHER canary"), "{o}");
        assert!(
            o.contains("    here      5 baseline and 0 canary requests on this replica"),
            "{o}"
        );
    }

    #[test]
    fn bars_fill_by_percent() {
        assert_eq!(bar(0.0), format!("[{}]", ".".repeat(20)));
        assert_eq!(bar(100.0), format!("[{}]", "#".repeat(20)));
        assert_eq!(bar(25.0), format!("[{}{}]", "#".repeat(5), ".".repeat(15)));
        assert_eq!(bar(250.0), format!("[{}]", "#".repeat(20)));
    }
}
