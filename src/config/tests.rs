//! One test per SPEC §2 validation error, each asserting line, column and
//! key path exactly, plus defaults, fallbacks and lints.

use std::path::Path;
use std::time::Duration;

use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "AGENT_KEY" => Some("sk-test".into()),
        "ADMIN_TOKEN" => Some("t0ken".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn load_text(text: &str) -> Result<Loaded, ConfigErrors> {
    load_str(text, Path::new("/etc/cutover/test.toml"), &env)
}

fn errors(text: &str) -> Vec<ConfigError> {
    match load_text(text) {
        Ok(_) => panic!("expected errors, the config loaded:\n{text}"),
        Err(e) => e.0,
    }
}

fn loaded(text: &str) -> Loaded {
    match load_text(text) {
        Ok(l) => l,
        Err(e) => panic!("expected a valid config:\n{e}"),
    }
}

/// The error at `path`; asserts its place and that the message says `needle`.
#[track_caller]
fn assert_error(errs: &[ConfigError], path: &str, line: usize, col: usize, needle: &str) {
    let Some(e) = errs.iter().find(|e| e.path == path) else {
        panic!("no error at {path}; got:\n{}", ConfigErrors(errs.to_vec()));
    };
    assert_eq!((e.line, e.col), (line, col), "place of {e}");
    assert!(e.message.contains(needle), "{e:?} should say {needle:?}");
    assert_eq!(e.file, Path::new("/etc/cutover/test.toml"));
}

/// Server and two upstreams `a` and `b`: 10 lines; a route follows.
const HEAD: &str = r#"[server]
listen = "127.0.0.1:8080"

[[upstreams]]
name = "a"
url = "http://127.0.0.1:9001"

[[upstreams]]
name = "b"
url = "http://127.0.0.1:9002"
"#;

fn with_head(rest: &str) -> String {
    format!("{HEAD}{rest}")
}

const ROUTE: &str = r#"
[[routes]]
name = "chat"

[[routes.versions]]
name = "v1"
upstream = "a"
weight = 95

[[routes.versions]]
name = "v2"
upstream = "b"
weight = 5
"#;

#[test]
fn a_minimal_config_loads_with_the_documented_defaults() {
    let l = loaded(&with_head(ROUTE));
    let c = &l.config;
    assert_eq!(c.server.workers, 0);
    assert_eq!(c.server.max_body, 16 << 20);
    assert_eq!(c.server.max_in_flight, 4096);
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
    assert!(!c.server.trust_forwarded_for);
    assert_eq!(
        c.server.feedback_path.as_deref(),
        Some("/_cutover/feedback")
    );
    assert_eq!(c.server.request_header_timeout, Duration::from_secs(10));
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9901");
    assert_eq!(
        (c.log.format, c.log.level.as_str(), c.log.access_log),
        (LogFormat::Json, "info", true)
    );
    assert!(c.tracing.is_none());
    assert_eq!(
        (c.cache.max_size, c.cache.max_entry_size),
        (256 << 20, 4 << 20)
    );
    assert_eq!(c.state.dir, Path::new("/etc/cutover/.cutover"));
    let u = &c.upstreams[0];
    assert_eq!(
        (
            u.connect_timeout,
            u.header_timeout,
            u.idle_timeout,
            u.max_in_flight
        ),
        (
            Duration::from_secs(2),
            Duration::from_secs(60),
            Duration::from_secs(30),
            512
        )
    );
    let statuses: Vec<u16> = u.failure_statuses.iter().map(|s| s.as_u16()).collect();
    assert_eq!(statuses, [429, 500, 502, 503, 504]);
    assert_eq!(u.breaker, BreakerConfig::default());
    let r = &c.routes[0];
    assert_eq!(r.matcher.path_prefix, "/");
    assert!(r.sticky.is_empty());
    assert_eq!(r.salt, "chat");
    assert!(r.pin_header.is_none() && r.cache.is_none() && r.rollout.is_none());
    assert_eq!(r.refusal.status, RefusalConfig::default().status);
    assert_eq!(
        r.versions[1].weight,
        WeightBps::new(500).unwrap_or_default()
    );
    assert!(l.warnings.is_empty());
}

#[test]
fn unknown_upstream_name() {
    let text = with_head(&ROUTE.replace("upstream = \"b\"", "upstream = \"c\""));
    let errs = errors(&text);
    assert_error(
        &errs,
        "routes[0].versions[1].upstream",
        22,
        12,
        "unknown upstream `c`; valid: one of a, b",
    );
}

#[test]
fn unknown_fallback_name() {
    let text = with_head(&ROUTE.replace(
        "name = \"chat\"\n",
        "name = \"chat\"\nfallbacks = [\"v1\", \"v9\"]\n",
    ));
    let errs = errors(&text);
    assert_error(
        &errs,
        "routes[0].fallbacks[1]",
        14,
        20,
        "unknown fallback name `v9`; valid: a version of this route (v1, v2)",
    );
    assert_eq!(errs.len(), 1, "{}", ConfigErrors(errs.clone()));
}

#[test]
fn duplicate_upstream_route_version_shadow_and_fallback_names() {
    let text = r#"[server]
listen = "127.0.0.1:8080"
[[upstreams]]
name = "a"
url = "http://127.0.0.1:9001"
[[upstreams]]
name = "a"
url = "http://127.0.0.1:9002"
[[routes]]
name = "chat"
fallbacks = [{ name = "f", upstream = "a" }, { name = "f", upstream = "a" }]
[[routes.versions]]
name = "v1"
upstream = "a"
weight = 50
[[routes.versions]]
name = "v1"
upstream = "a"
weight = 50
[[routes.shadows]]
name = "s"
upstream = "a"
max_in_flight = 1
[[routes.shadows]]
name = "s"
upstream = "a"
max_in_flight = 1
[[routes]]
name = "chat"
[[routes.versions]]
name = "v1"
upstream = "a"
"#;
    let errs = errors(text);
    assert_error(
        &errs,
        "upstreams[1].name",
        7,
        8,
        "duplicate upstream name `a` (first at upstreams[0])",
    );
    assert_error(
        &errs,
        "routes[0].fallbacks[1].name",
        11,
        55,
        "duplicate fallback name `f`",
    );
    assert_error(
        &errs,
        "routes[0].versions[1].name",
        17,
        8,
        "duplicate version name `v1`",
    );
    assert_error(
        &errs,
        "routes[0].shadows[1].name",
        25,
        8,
        "duplicate shadow name `s`",
    );
    assert_error(
        &errs,
        "routes[1].name",
        29,
        8,
        "duplicate route name `chat`",
    );
    assert_eq!(errs.len(), 5, "{}", ConfigErrors(errs.clone()));
}

#[test]
fn weights_must_sum_to_100() {
    let text = with_head(&ROUTE.replace("weight = 5\n", "weight = 4.5\n"));
    let errs = errors(&text);
    // Reported at the first `[[routes.versions]]` header.
    assert_error(
        &errs,
        "routes[0].versions",
        15,
        1,
        "version weights sum to 99.50 (v1 95.00 + v2 4.50); valid: weights that sum to exactly 100",
    );
}

#[test]
fn weights_take_at_most_two_decimals() {
    let text = with_head(
        &ROUTE
            .replace("weight = 95\n", "weight = 94.995\n")
            .replace("weight = 5\n", "weight = 5.005\n"),
    );
    let errs = errors(&text);
    assert_error(
        &errs,
        "routes[0].versions[0].weight",
        18,
        10,
        "weight 94.995 has more than two decimals; valid: a percent like 12.25",
    );
    assert_error(
        &errs,
        "routes[0].versions[1].weight",
        23,
        10,
        "more than two decimals",
    );
    // No second, derived "sum" error.
    assert_eq!(errs.len(), 2, "{}", ConfigErrors(errs.clone()));
}

#[test]
fn a_rollout_needs_exactly_baseline_and_canary() {
    let rollout = "\n[[routes.versions]]\nname = \"v3\"\nupstream = \"a\"\nweight = 0\n\n[routes.rollout]\nbaseline = \"v1\"\ncanary = \"v2\"\nrollback = {}\n";
    let errs = errors(&with_head(&format!("{ROUTE}{rollout}")));
    assert_error(
        &errs,
        "routes[0].rollout",
        30,
        1,
        "a route with a rollout must have exactly two versions, baseline `v1` and canary `v2`; found 3: v1, v2, v3",
    );

    let rollout = "\n[routes.rollout]\nbaseline = \"v0\"\ncanary = \"v2\"\n";
    let errs = errors(&with_head(&format!("{ROUTE}{rollout}")));
    assert_error(
        &errs,
        "routes[0].rollout.baseline",
        26,
        12,
        "`v0` is not a version of this route; valid: one of v1, v2",
    );

    let rollout = "\n[routes.rollout]\ncanary = \"v2\"\n";
    let errs = errors(&with_head(&format!("{ROUTE}{rollout}")));
    assert_error(
        &errs,
        "routes[0].rollout",
        25,
        1,
        "missing required key `baseline`",
    );
}

#[test]
fn steps_must_increase_and_end_at_100() {
    let rollout =
        "\n[routes.rollout]\nbaseline = \"v1\"\ncanary = \"v2\"\nsteps = [1, 10, 10, 50]\n";
    let errs = errors(&with_head(&format!("{ROUTE}{rollout}")));
    assert_error(
        &errs,
        "routes[0].rollout.steps[2]",
        28,
        17,
        "step 10.00% is not above the step before it (10.00%)",
    );
    assert_error(
        &errs,
        "routes[0].rollout.steps[3]",
        28,
        21,
        "the last step must be 100",
    );
}

#[test]
fn malformed_urls() {
    let text = HEAD
        .replace("http://127.0.0.1:9001", "ftp://127.0.0.1:9001")
        .replace("http://127.0.0.1:9002", "http://127.0.0.1:9002/v1?x=1");
    let errs = errors(&format!("{text}{ROUTE}"));
    assert_error(
        &errs,
        "upstreams[0].url",
        6,
        7,
        "scheme `ftp` is not supported; valid: http://HOST[:PORT][/PATH]",
    );
    assert_error(
        &errs,
        "upstreams[1].url",
        10,
        7,
        "a query or fragment is not allowed",
    );
}

#[test]
fn missing_env_variable() {
    let text = HEAD.replace(
        "name = \"a\"\n",
        "name = \"a\"\nset_headers = { authorization = \"Bearer ${AGENT_KEY}\", x-other = \"${NOT_SET}\" }\n",
    );
    let errs = errors(&format!("{text}{ROUTE}"));
    assert_error(
        &errs,
        "upstreams[0].set_headers.x-other",
        6,
        66,
        "environment variable `NOT_SET` is not set",
    );
    assert_eq!(errs.len(), 1);
    // The set variable was substituted, and the value is marked sensitive.
    let text = text.replace(", x-other = \"${NOT_SET}\"", "");
    let l = loaded(&format!("{text}{ROUTE}"));
    let (name, value) = &l.config.upstreams[0].set_headers[0];
    assert_eq!(
        (name.as_str(), value.to_str().ok()),
        ("authorization", Some("Bearer sk-test"))
    );
    assert!(value.is_sensitive());
}

#[test]
fn unreadable_tls_files_and_pem_without_cert_or_key() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let Ok(ck) = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]) else {
        panic!("rcgen");
    };
    let write = |name: &str, body: &str| {
        if let Err(e) = std::fs::write(dir.path().join(name), body) {
            panic!("{e}");
        }
    };
    write("cert.pem", &ck.cert.pem());
    write("key.pem", &ck.signing_key.serialize_pem());
    write("empty.pem", "nothing here\n");
    let cfg_path = dir.path().join("cutover.toml");
    let load_tls = |tls: &str| {
        let text = with_head(ROUTE).replace(
            "listen = \"127.0.0.1:8080\"\n",
            &format!("listen = \"127.0.0.1:8080\"\n{tls}\n"),
        );
        load_str(&text, &cfg_path, &env)
    };
    // Relative paths resolve against the config file's directory.
    match load_tls("tls = { cert = \"cert.pem\", key = \"key.pem\" }") {
        Ok(l) => {
            let tls = l.config.server.tls.unwrap_or_else(|| panic!("no tls"));
            assert_eq!(tls.cert_path, dir.path().join("cert.pem"));
            assert!(!tls.cert_pem.is_empty() && !tls.key_pem.is_empty());
        }
        Err(e) => panic!("{e}"),
    }
    let errs = match load_tls("tls = { cert = \"missing.pem\", key = \"empty.pem\" }") {
        Ok(_) => panic!("loaded"),
        Err(e) => e.0,
    };
    let cert = errs.iter().find(|e| e.path == "server.tls.cert");
    assert_eq!(cert.map(|e| (e.line, e.col)), Some((3, 16)));
    assert!(cert.is_some_and(|e| e.message.starts_with("unreadable TLS certificate file")));
    let key = errs.iter().find(|e| e.path == "server.tls.key");
    assert_eq!(key.map(|e| (e.line, e.col)), Some((3, 37)));
    assert!(key.is_some_and(|e| e.message.starts_with("no private key in")));
    let errs = match load_tls("tls = { cert = \"key.pem\", key = \"cert.pem\" }") {
        Ok(_) => panic!("loaded"),
        Err(e) => e.0,
    };
    assert!(
        errs.iter()
            .any(|e| e.path == "server.tls.cert" && e.message.starts_with("no certificate in"))
    );
    assert!(
        errs.iter()
            .any(|e| e.path == "server.tls.key" && e.message.starts_with("no private key in"))
    );
}

#[test]
fn bad_durations() {
    let text = HEAD.replace(
        "name = \"a\"\n",
        "name = \"a\"\nconnect_timeout = \"2 parsecs\"\nheader_timeout = 60\n",
    );
    let errs = errors(&format!("{text}{ROUTE}"));
    assert_error(
        &errs,
        "upstreams[0].connect_timeout",
        6,
        19,
        "bad duration \"2 parsecs\"",
    );
    assert_error(
        &errs,
        "upstreams[0].header_timeout",
        7,
        18,
        "expected a duration, found the integer 60; valid: a string like \"250ms\", \"30s\", \"10m\", \"24h\"",
    );
}

#[test]
fn bad_sizes() {
    let text = with_head(ROUTE).replace(
        "listen = \"127.0.0.1:8080\"\n",
        "listen = \"127.0.0.1:8080\"\nmax_body = \"16 MiBs\"\n",
    ) + "\n[cache]\nmax_size = -1\n";
    let errs = errors(&text);
    assert_error(
        &errs,
        "server.max_body",
        3,
        12,
        "bad size \"16 MiBs\"; valid: an integer of bytes or a string like \"16MiB\"",
    );
    assert_error(&errs, "cache.max_size", 27, 12, "must not be negative");
}

#[test]
fn every_unknown_key_is_an_error_with_the_valid_keys() {
    let text = with_head(ROUTE)
        .replace("name = \"b\"\n", "name = \"b\"\ntimeout = \"1s\"\n")
        .replace("weight = 95\n", "weight = 95\nwieght = 1\n")
        + "\n[loging]\nlevel = \"info\"\n";
    let errs = errors(&text);
    assert_error(
        &errs,
        "upstreams[1].timeout",
        10,
        1,
        "unknown key `timeout`; valid keys here: name, url, connect_timeout",
    );
    assert_error(
        &errs,
        "routes[0].versions[0].wieght",
        20,
        1,
        "unknown key `wieght`; valid keys here: name, upstream, weight",
    );
    assert_error(
        &errs,
        "loging",
        27,
        2,
        "unknown key `loging`; valid keys here: server, admin, log",
    );
}

#[test]
fn a_variable_cannot_inject_keys() {
    let inject = |name: &str| (name == "EVIL").then(|| "x\"\nevil = \"1".to_string());
    let text = with_head(ROUTE).replace("name = \"chat\"", "name = \"chat\"\nsalt = \"${EVIL}\"");
    let l = match load_str(&text, Path::new("t.toml"), &inject) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(l.config.routes[0].salt, "x\"\nevil = \"1");
}

#[test]
fn syntax_error_has_line_and_column() {
    let errs = errors("[server]\nlisten = \"127.0.0.1:8080\nx = 1\n");
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].line, errs[0].path.as_str()), (2, ""));
    assert!(
        errs[0].message.starts_with("TOML syntax error"),
        "{}",
        errs[0].message
    );
}

#[test]
fn missing_server_and_routes() {
    let errs = errors("[log]\nlevel = \"info\"\n");
    assert!(
        errs.iter()
            .any(|e| e.message.contains("missing required section [server]")
                && (e.line, e.col) == (1, 1))
    );
    assert!(errs.iter().any(|e| e.message.contains("no routes")));
    let errs = errors(&with_head("\n[[routes]]\nname = \"r\"\n"));
    assert_error(&errs, "routes[0]", 12, 1, "route has no versions");
}

#[test]
fn admin_listen_and_token() {
    let text = with_head(ROUTE) + "\n[admin]\nlisten = \"0.0.0.0:9901\"\n";
    let errs = errors(&text);
    assert_error(&errs, "admin.listen", 26, 10, "is not loopback");
    let ok = loaded(
        &(with_head(ROUTE) + "\n[admin]\nlisten = \"0.0.0.0:9901\"\ntoken_env = \"ADMIN_TOKEN\"\n"),
    );
    assert_eq!(ok.config.admin.token.as_deref(), Some("t0ken"));
    let errs = errors(&(with_head(ROUTE) + "\n[admin]\ntoken_env = \"EMPTY\"\n"));
    assert_error(
        &errs,
        "admin.token_env",
        26,
        13,
        "environment variable `EMPTY` is empty",
    );
}

#[test]
fn other_values_say_what_is_valid() {
    let text = with_head(ROUTE).replace(
        "name = \"chat\"\n",
        "name = \"chat\"\nsticky = [\"header:x-user\", \"session\"]\nrefusal = { format = \"html\", status = 700 }\nmatch = { methods = [\"P O\"] }\npin_header = \"bad header\"\n",
    ) + "\n[routes.rollout]\nbaseline = \"v1\"\ncanary = \"v2\"\ngates = { confidence = 0.4 }\n[log]\nformat = \"xml\"\n";
    let errs = errors(&text);
    assert_error(
        &errs,
        "routes[0].sticky[1]",
        14,
        28,
        "valid: header:NAME, cookie:NAME, query:NAME or client_ip",
    );
    assert_error(
        &errs,
        "routes[0].refusal.format",
        15,
        22,
        "valid: one of openai-error, openai-chat, raw",
    );
    assert_error(
        &errs,
        "routes[0].refusal.status",
        15,
        39,
        "valid: 100 to 599",
    );
    assert_error(
        &errs,
        "routes[0].match.methods[0]",
        16,
        22,
        "invalid HTTP method",
    );
    assert_error(&errs, "routes[0].pin_header", 17, 14, "invalid header name");
    assert_error(
        &errs,
        "routes[0].rollout.gates.confidence",
        32,
        24,
        "more than 0.5 and less than 1",
    );
    assert_error(&errs, "log.format", 34, 10, "valid: one of json, text");
    // Every error, in file order.
    let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
    assert_eq!(errs.len(), 7, "{}", ConfigErrors(errs.clone()));
}

#[test]
fn fallbacks_mix_versions_and_targets_in_try_order() {
    let text = with_head(&ROUTE.replace(
        "name = \"chat\"\n",
        "name = \"chat\"\nfallbacks = [\"v1\", { name = \"small\", upstream = \"b\", set_json = { model = \"m\" } }]\n",
    ));
    let l = loaded(&text);
    let names: Vec<&str> = l.config.routes[0]
        .fallbacks
        .iter()
        .map(|f| f.name())
        .collect();
    assert_eq!(names, ["v1", "small"]);
    assert!(matches!(&l.config.routes[0].fallbacks[0], FallbackConfig::Version(v) if v == "v1"));
    // The array-of-tables form works too.
    let text = with_head(&format!(
        "{ROUTE}\n[[routes.fallbacks]]\nname = \"small\"\nupstream = \"zzz\"\n"
    ));
    let errs = errors(&text);
    assert_error(
        &errs,
        "routes[0].fallbacks[0].upstream",
        27,
        12,
        "unknown upstream `zzz`",
    );
}

#[test]
fn lints_are_separate_from_errors() {
    let text = with_head(ROUTE)
        .replace(
            "weight = 95\n",
            "weight = 95\ndeps = { model = \"gpt-4o\" }\n",
        )
        .replace(
            "weight = 5\n",
            "weight = 5\ndeps = { model = \"claude-3-5-sonnet-20241022\" }\n",
        )
        + "\n[[routes.shadows]]\nname = \"s\"\nupstream = \"a\"\ndeps = { model = \"gpt-4-latest\" }\n\n[routes.rollout]\nbaseline = \"v1\"\ncanary = \"v2\"\n";
    let l = loaded(&text);
    let paths: Vec<&str> = l.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "routes[0].versions[0].deps.model",
            "routes[0].shadows[0].deps.model",
            "routes[0].shadows[0]",
            "routes[0].rollout"
        ]
    );
    assert!(l.warnings[0].to_string().starts_with(
        "warning: routes[0].versions[0].deps.model: `gpt-4o` looks like a floating model alias"
    ));
}

#[test]
fn the_example_config_is_valid() {
    let text = include_str!("../../config/example.toml");
    let l = loaded(text);
    assert_eq!(l.config.routes.len(), 2);
    let chat = l.config.route("chat").unwrap_or_else(|| panic!("no chat"));
    assert_eq!(chat.fallbacks.len(), 2);
    assert_eq!(chat.rollout.as_ref().map(|r| r.steps.len()), Some(6));
    assert!(matches!(
        l.config.route("embeddings").map(|r| &r.refusal.format),
        Some(RefusalFormat::Raw { .. })
    ));
}

#[test]
fn a_tls_or_ca_file_that_never_ends_is_refused_not_read_forever() {
    // `/dev/zero` by mistake: the loader reads at most 1 MiB of it.
    let text = HEAD.replacen(
        "listen = ",
        "tls = { cert = \"/dev/zero\", key = \"/dev/zero\" }\nlisten = ",
        1,
    );
    let started = std::time::Instant::now();
    let errs = errors(&format!(
        "{text}{ROUTE}\n[tracing]\notlp_ca_file = \"/dev/zero\"\n"
    ));
    assert!(started.elapsed() < Duration::from_secs(5));
    for path in ["server.tls.cert", "server.tls.key", "tracing.otlp_ca_file"] {
        let e = errs
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no error at {path}: {}", ConfigErrors(errs.clone())));
        assert!(e.message.contains("larger than 1024 KiB"), "{}", e.message);
    }
}

#[test]
fn token_variables_must_be_set_and_non_empty() {
    let server = HEAD.replacen("listen = ", "feedback_token_env = \"EMPTY\"\nlisten = ", 1);
    let errs = errors(&format!("{server}{ROUTE}"));
    let e = errs
        .iter()
        .find(|e| e.path == "server.feedback_token_env")
        .expect("an error at server.feedback_token_env");
    assert!(e.message.contains("`EMPTY` is empty"), "{}", e.message);
    let route = ROUTE.replacen(
        "name = \"chat\"\n",
        "name = \"chat\"\npin_token_env = \"ADMIN_TOKEN\"\n",
        1,
    );
    let errs = errors(&format!("{HEAD}{route}"));
    let e = errs
        .iter()
        .find(|e| e.path == "routes[0].pin_token_env")
        .expect("an error at routes[0].pin_token_env");
    assert!(e.message.contains("without pin_header"), "{}", e.message);
    let route = route.replacen(
        "pin_token_env",
        "pin_header = \"x-cutover-version\"\npin_token_env",
        1,
    );
    let l = loaded(&format!("{HEAD}{route}"));
    assert_eq!(l.config.routes[0].pin_token.as_deref(), Some("t0ken"));
}
