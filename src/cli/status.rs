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
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return super::EXIT_USER;
        }
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
                sh.in_flight,
                sh.max_in_flight,
                sh.timeout_ms,
                sh.dropped,
                share(sh.failure_share),
                share(sh.match_share)
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
    fn bars_fill_by_percent() {
        assert_eq!(bar(0.0), format!("[{}]", ".".repeat(20)));
        assert_eq!(bar(100.0), format!("[{}]", "#".repeat(20)));
        assert_eq!(bar(25.0), format!("[{}{}]", "#".repeat(5), ".".repeat(15)));
        assert_eq!(bar(250.0), format!("[{}]", "#".repeat(20)));
    }
}
