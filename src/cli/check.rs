//! `cutover check`: validate a config, print its summary and lints.
//!
//! Valid (even with warnings): the summary and the warnings on stdout, exit
//! 0. Invalid: every error on stderr, one per line
//! (`error: file:line:col: path: message`), exit 1.

use std::fmt::Write as _;
use std::time::Duration;

use crate::cli::ConfigArg;
use crate::config::{
    Config, FallbackConfig, Loaded, RefusalFormat, RouteConfig, StickySource, TargetConfig,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(args: Args) -> u8 {
    match crate::config::load(&args.config.config) {
        Ok(loaded) => {
            print!("{}", summary(&loaded));
            super::EXIT_OK
        }
        Err(e) => {
            eprintln!("{e}");
            super::EXIT_USER
        }
    }
}

fn dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn json_inline(map: &serde_json::Map<String, serde_json::Value>) -> String {
    map.iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn target_line(t: &TargetConfig) -> String {
    let mut s = format!("upstream {}", t.upstream);
    if !t.deps.is_empty() {
        let _ = write!(s, "  deps: {}", json_inline(&t.deps));
    }
    if !t.set_json.is_empty() {
        let _ = write!(s, "  set_json: {}", json_inline(&t.set_json));
    }
    s
}

fn sticky(s: &StickySource) -> String {
    match s {
        StickySource::Header(h) => format!("header:{h}"),
        StickySource::Cookie(c) => format!("cookie:{c}"),
        StickySource::Query(q) => format!("query:{q}"),
        StickySource::ClientIp => "client_ip".to_string(),
    }
}

fn route(out: &mut String, r: &RouteConfig) {
    let m = &r.matcher;
    let mut matcher = format!("path_prefix {}", m.path_prefix);
    if !m.methods.is_empty() {
        let methods: Vec<&str> = m.methods.iter().map(|m| m.as_str()).collect();
        let _ = write!(matcher, ", methods {}", methods.join("|"));
    }
    if let Some(h) = &m.host {
        let _ = write!(matcher, ", host {h}");
    }
    for (k, v) in &m.headers {
        let _ = write!(matcher, ", header {k}={v}");
    }
    let _ = writeln!(out, "  {}", r.name);
    let _ = writeln!(out, "    match: {matcher}");
    let sticky_list: Vec<String> = r.sticky.iter().map(sticky).collect();
    let _ = writeln!(
        out,
        "    sticky: {}",
        if sticky_list.is_empty() {
            "(none: every request is assigned at random by weight)".to_string()
        } else {
            sticky_list.join(", ")
        }
    );
    let _ = writeln!(out, "    salt: {}", r.salt);
    if let Some(h) = &r.pin_header {
        let _ = writeln!(out, "    pin header: {h}");
    }
    if let Some(h) = &r.session_header {
        let _ = writeln!(
            out,
            "    session header: {h} (sessions stay on their version)"
        );
    }
    let _ = writeln!(out, "    versions:");
    for v in &r.versions {
        let _ = writeln!(
            out,
            "      {:<12} {:>7}%  {}",
            v.target.name,
            v.weight.to_string(),
            target_line(&v.target)
        );
    }
    if !r.shadows.is_empty() {
        let _ = writeln!(out, "    shadows:");
        for s in &r.shadows {
            let max = s
                .max_in_flight
                .map_or("unset".to_string(), |n| n.to_string());
            let _ = writeln!(
                out,
                "      {:<12} {:>7}%  {}  timeout {}  max_in_flight {}",
                s.target.name,
                s.percent.to_string(),
                target_line(&s.target),
                dur(s.timeout),
                max
            );
        }
    }
    let mut chain: Vec<String> = r
        .fallbacks
        .iter()
        .map(|f| match f {
            FallbackConfig::Version(v) => format!("{v} (version)"),
            FallbackConfig::Target(t) => format!("{} ({})", t.name, target_line(t)),
        })
        .collect();
    let refusal = match &r.refusal.format {
        RefusalFormat::OpenAiError => "openai-error",
        RefusalFormat::OpenAiChat => "openai-chat",
        RefusalFormat::OpenAiResponses => "openai-responses",
        RefusalFormat::AnthropicMessages => "anthropic-messages",
        RefusalFormat::Auto => "auto",
        RefusalFormat::Raw { .. } => "raw",
    };
    // The API-shaped formats answer 200, so their SDKs read a normal reply;
    // `auto` uses `status` only on paths that name no model API.
    let status = r.refusal.status.as_u16();
    chain.push(match &r.refusal.format {
        RefusalFormat::OpenAiChat
        | RefusalFormat::OpenAiResponses
        | RefusalFormat::AnthropicMessages => format!("refusal 200 {refusal}"),
        RefusalFormat::Auto => format!("refusal auto (by path; {status} openai-error elsewhere)"),
        _ => format!("refusal {status} {refusal}"),
    });
    let _ = writeln!(out, "    fallbacks: {}", chain.join(" -> "));
    match &r.cache {
        Some(c) => {
            let vary: Vec<&str> = c.vary.iter().map(|h| h.as_str()).collect();
            let _ = writeln!(
                out,
                "    cache: ttl {}, vary [{}]{}",
                dur(c.ttl),
                vary.join(", "),
                if c.deterministic_only {
                    ", deterministic only"
                } else {
                    ""
                }
            );
        }
        None => {
            let _ = writeln!(out, "    cache: off");
        }
    }
    if let Some(ro) = &r.rollout {
        let steps: Vec<String> = ro.steps.iter().map(|s| format!("{s}%")).collect();
        let _ = writeln!(
            out,
            "    rollout: {} -> {}, steps [{}], interval {}, min_requests {}{}{}",
            ro.baseline,
            ro.canary,
            steps.join(", "),
            dur(ro.interval),
            ro.min_requests,
            if ro.shadow_first.is_some() {
                ", shadow first"
            } else {
                ""
            },
            if ro.rollback.is_some() {
                ", rollback on"
            } else {
                ", no rollback"
            }
        );
    }
}

fn config_body(out: &mut String, c: &Config) {
    let _ = writeln!(out, "config: {}", c.source.display());
    let _ = writeln!(
        out,
        "server: listen {}, admin {}",
        c.server.listen, c.admin.listen
    );
    if let Some(cl) = &c.cluster {
        let _ = writeln!(
            out,
            "cluster: {} as replica {}, redis {}, lease {}, sync every {}{}",
            cl.name,
            cl.replica,
            cl.redis.redacted(),
            dur(cl.lease),
            dur(cl.sync_interval),
            if c.cache.shared {
                ", shared cache tier"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(out, "upstreams:");
    for u in &c.upstreams {
        let _ = writeln!(
            out,
            "  {:<12} {}  connect {}, header {}, idle {}, max_in_flight {}",
            u.name,
            u.url.raw,
            dur(u.connect_timeout),
            dur(u.header_timeout),
            dur(u.idle_timeout),
            u.max_in_flight
        );
    }
    let _ = writeln!(out, "routes:");
    for r in &c.routes {
        route(out, r);
    }
}

/// The text `check` prints for a valid config.
pub fn summary(loaded: &Loaded) -> String {
    let mut out = String::new();
    config_body(&mut out, &loaded.config);
    for w in &loaded.warnings {
        let _ = writeln!(out, "{w}");
    }
    let _ = writeln!(
        out,
        "config OK: {}, {}, {}",
        plural(loaded.config.routes.len(), "route", "routes"),
        plural(loaded.config.upstreams.len(), "upstream", "upstreams"),
        plural(loaded.warnings.len(), "warning", "warnings")
    );
    out
}
