//! The operator's kit under `docker/`: the Dockerfile, the Compose stack,
//! the Kubernetes examples and the Grafana dashboard. No container engine
//! runs here, so every file is parsed and checked for the keys that make it
//! work, every config it mounts goes through `cutover check`, and the
//! health checks, probes and compose commands are run for real against the
//! binary on loopback, with listen addresses and upstream URLs rewritten.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The admin token the tests give the binary.
const TOKEN: &str = "deploy-kit-test-token";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn docker_dir() -> PathBuf {
    repo().join("docker")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every document of a YAML file as JSON, with `<<` merge keys applied.
fn yaml_docs(path: &Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let mut v = serde_norway::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", path.display()));
            v.apply_merge()
                .unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
            serde_json::to_value(&v)
                .unwrap_or_else(|e| panic!("{}: not JSON-like: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(path: &Path) -> Value {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{}: one YAML document", path.display());
    docs.remove(0)
}

fn compose() -> Value {
    yaml(&docker_dir().join("compose.yaml"))
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose
        .pointer(&format!("/services/{name}"))
        .unwrap_or_else(|| panic!("compose.yaml has no service `{name}`"))
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v:#}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| match s {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// The value after `flag` in an argument list.
fn arg_after(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr:?}"))
}

/// A cutover config's keys the kit depends on.
struct ConfigFacts {
    listen_port: u16,
    admin_port: u16,
    token_env: Option<String>,
    shutdown_grace: Duration,
    state_dir: String,
    /// (upstream name, url)
    upstreams: Vec<(String, String)>,
}

fn config_facts(toml_text: &str) -> ConfigFacts {
    let t: toml::Table = toml_text.parse().expect("config parses as TOML");
    let get = |path: &[&str]| -> Option<&toml::Value> {
        let mut v = t.get(path[0])?;
        for key in &path[1..] {
            v = v.get(key)?;
        }
        Some(v)
    };
    let s = |path: &[&str]| get(path).and_then(|v| v.as_str()).map(str::to_owned);
    ConfigFacts {
        listen_port: port_of(&s(&["server", "listen"]).expect("server.listen")),
        admin_port: port_of(&s(&["admin", "listen"]).expect("admin.listen")),
        token_env: s(&["admin", "token_env"]),
        // SPEC §2's default when absent.
        shutdown_grace: s(&["server", "shutdown_grace"])
            .map(|g| humantime::parse_duration(&g).expect("shutdown_grace is a duration"))
            .unwrap_or(Duration::from_secs(30)),
        state_dir: s(&["state", "dir"]).unwrap_or_else(|| ".cutover".into()),
        upstreams: get(&["upstreams"])
            .and_then(|u| u.as_array())
            .expect("[[upstreams]]")
            .iter()
            .map(|u| {
                (
                    u["name"].as_str().expect("name").to_owned(),
                    u["url"].as_str().expect("url").to_owned(),
                )
            })
            .collect(),
    }
}

/// Every `${NAME}` a config refers to.
fn env_vars(toml_text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = toml_text;
    while let Some(at) = rest.find("${") {
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else { break };
        let name = after[..end].to_owned();
        if !out.contains(&name) {
            out.push(name);
        }
        rest = &after[end..];
    }
    out
}

/// Values for a config's `${NAME}`s: the admin token as `TOKEN`, the rest
/// a placeholder (each value by name from `given` first).
fn env_for(toml_text: &str, given: &[(&str, &str)]) -> Vec<(String, String)> {
    let token_env = config_facts(toml_text).token_env;
    let mut names = env_vars(toml_text);
    names.extend(token_env.clone());
    names
        .into_iter()
        .map(|name| {
            let value = given
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
                .unwrap_or_else(|| {
                    if Some(&name) == token_env.as_ref() {
                        TOKEN.to_owned()
                    } else {
                        format!("test-{}", name.to_ascii_lowercase())
                    }
                });
            (name, value)
        })
        .collect()
}

/// `http://host:port[/...]` -> (host, port)
fn host_port(url: &str) -> (String, u16) {
    let rest = url.strip_prefix("http://").expect("an http:// upstream");
    let authority = rest.split('/').next().expect("authority");
    let (host, port) = authority.rsplit_once(':').expect("an explicit port");
    (host.to_owned(), port.parse().expect("numeric port"))
}

/// Rewrite a config for a loopback run: both listeners on the given ports,
/// `state.dir` in `state`, and each upstream URL through `upstream_url`.
fn loopback_config(
    toml_text: &str,
    listen: u16,
    admin: u16,
    state: &Path,
    redis: Option<&str>,
    mut upstream_url: impl FnMut(&str, &str) -> String,
) -> String {
    let mut doc: toml_edit::DocumentMut = toml_text.parse().expect("config parses");
    doc["server"]["listen"] = toml_edit::value(format!("127.0.0.1:{listen}"));
    doc["admin"]["listen"] = toml_edit::value(format!("127.0.0.1:{admin}"));
    doc["state"]["dir"] = toml_edit::value(state.display().to_string());
    if let Some(cluster) = doc.get_mut("cluster").and_then(|c| c.as_table_mut()) {
        // A local Redis, or a closed port (the replica then serves with
        // Redis unreachable, as it must).
        let redis = redis
            .map(str::to_owned)
            .unwrap_or_else(|| format!("redis://127.0.0.1:{}/0", dead_port()));
        cluster["redis"] = toml_edit::value(redis);
    }
    let ups = doc["upstreams"]
        .as_array_of_tables_mut()
        .expect("[[upstreams]]");
    for u in ups.iter_mut() {
        let name = u["name"].as_str().expect("name").to_owned();
        let url = u["url"].as_str().expect("url").to_owned();
        u["url"] = toml_edit::value(upstream_url(&name, &url));
    }
    doc.to_string()
}

// ---------------------------------------------------------------- Dockerfile

struct Instruction {
    keyword: String,
    args: String,
}

/// The Dockerfile's instructions, continuation lines joined, comments and
/// parser directives dropped, grouped by stage.
fn dockerfile_stages() -> Vec<Vec<Instruction>> {
    let text = read(&docker_dir().join("Dockerfile"));
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.starts_with('#') || trimmed.is_empty()) {
            continue;
        }
        if trimmed.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let ins = Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_owned(),
        };
        if ins.keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("the Dockerfile starts with FROM")
            .push(ins);
    }
    stages
}

/// The sources of a `COPY` from the build context (None for `--from=`).
fn copy_sources(args: &str) -> Option<Vec<String>> {
    let words: Vec<&str> = args.split_whitespace().collect();
    if words.iter().any(|w| w.starts_with("--from")) {
        return None;
    }
    let paths: Vec<&str> = words
        .iter()
        .copied()
        .filter(|w| !w.starts_with("--"))
        .collect();
    let (_, sources) = paths.split_last().expect("COPY has a destination");
    Some(
        sources
            .iter()
            .map(|s| s.trim_start_matches("./").trim_end_matches('/').to_owned())
            .collect(),
    )
}

fn covered(path: &str, copied: &[String]) -> bool {
    copied
        .iter()
        .any(|c| c == "." || path == c || path.starts_with(&format!("{c}/")))
}

/// The shell script of a `["bash", "-c", SCRIPT]` health check.
fn bash_script(cmd: &[String]) -> String {
    let at = cmd
        .iter()
        .position(|a| a == "-c")
        .unwrap_or_else(|| panic!("not a `bash -c` check: {cmd:?}"));
    assert_eq!(cmd[at - 1], "bash", "{cmd:?}");
    cmd[at + 1].clone()
}

/// The Dockerfile's HEALTHCHECK command (exec form).
fn dockerfile_healthcheck() -> Vec<String> {
    let stages = dockerfile_stages();
    let last = stages.last().expect("a runtime stage");
    let hc = last
        .iter()
        .find(|i| i.keyword == "HEALTHCHECK")
        .expect("the runtime stage has a HEALTHCHECK");
    let json = &hc.args[hc.args.find("CMD").expect("HEALTHCHECK CMD") + 3..];
    serde_json::from_str(json.trim()).expect("HEALTHCHECK CMD in exec (JSON) form")
}

/// `Cargo.toml`'s target paths that must exist for the manifest to load:
/// [lib], [[bin]], [[bench]] (default `benches/NAME.rs`), and build.rs.
/// (Auto-discovered examples and tests are not needed to build the binary.)
fn manifest_target_paths() -> Vec<String> {
    let manifest: toml::Table = read(&repo().join("Cargo.toml"))
        .parse()
        .expect("Cargo.toml");
    let mut paths = Vec::new();
    if let Some(lib) = manifest.get("lib") {
        paths.push(
            lib.get("path")
                .and_then(|p| p.as_str())
                .unwrap_or("src/lib.rs")
                .to_owned(),
        );
    }
    for (kind, dir) in [("bin", "src/bin"), ("bench", "benches")] {
        for t in manifest
            .get(kind)
            .and_then(|t| t.as_array())
            .into_iter()
            .flatten()
        {
            let name = t["name"].as_str().expect("target name");
            let default = if kind == "bin" && name == "cutover" {
                "src/main.rs".to_owned()
            } else {
                format!("{dir}/{name}.rs")
            };
            paths.push(
                t.get("path")
                    .and_then(|p| p.as_str())
                    .map(str::to_owned)
                    .unwrap_or(default),
            );
        }
    }
    match manifest
        .get("package")
        .and_then(|p| p.get("build"))
        .and_then(|b| b.as_str())
    {
        Some(build) => paths.push(build.to_owned()),
        None if repo().join("build.rs").exists() => paths.push("build.rs".into()),
        None => {}
    }
    paths
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `path` relative to the repository, `..` resolved.
fn normalize(path: &Path) -> String {
    let rel = path.strip_prefix(repo()).expect("inside the repository");
    let mut parts: Vec<String> = Vec::new();
    for c in rel.components() {
        match c {
            Component::ParentDir => {
                parts.pop().expect("stays inside the repository");
            }
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    parts.join("/")
}

/// Every `include_str!`/`include_bytes!` under src/, as repository paths.
fn included_files() -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&repo().join("src"), &mut files);
    let mut out = Vec::new();
    for file in files {
        let text = read(&file);
        for mac in ["include_str!(", "include_bytes!("] {
            for (at, _) in text.match_indices(mac) {
                let rest = text[at + mac.len()..].trim_start();
                let literal = rest
                    .strip_prefix('"')
                    .and_then(|r| r.split_once('"'))
                    .map(|(lit, _)| lit)
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: {mac} without a plain string literal; teach this test its path",
                            file.display()
                        )
                    });
                let dir = file.parent().expect("parent");
                out.push(normalize(&dir.join(literal)));
            }
        }
    }
    out
}

#[test]
fn dockerfile_copies_every_path_the_build_reads() {
    let stages = dockerfile_stages();
    assert!(stages.len() >= 2, "a multi-stage build");
    let build = &stages[0];
    let mut copied_before_cargo: Option<Vec<String>> = None;
    let mut stub_run = String::new();
    let mut copied = Vec::new();
    for ins in build {
        match ins.keyword.as_str() {
            "COPY" => {
                copied.extend(copy_sources(&ins.args).expect("build-stage COPY from context"))
            }
            "RUN" if ins.args.contains("cargo ") && copied_before_cargo.is_none() => {
                copied_before_cargo = Some(copied.clone());
                stub_run = ins.args.clone();
            }
            _ => {}
        }
    }
    let before = copied_before_cargo.expect("a RUN with cargo in the build stage");
    for needed in ["Cargo.toml", "Cargo.lock"] {
        assert!(
            covered(needed, &before),
            "{needed} is copied before the first cargo step"
        );
    }
    // The first cargo step loads the manifest, so every target it declares
    // must exist by then: copied, or stubbed by that RUN itself.
    let targets = manifest_target_paths();
    assert!(
        targets.iter().any(|t| t == "benches/cache_key.rs"),
        "{targets:?}"
    );
    for target in &targets {
        assert!(
            covered(target, &before) || stub_run.contains(target.as_str()),
            "Cargo.toml declares {target}, but it is neither copied nor stubbed before `{stub_run}`"
        );
        assert!(
            covered(target, &copied),
            "{target} is not copied for the real build"
        );
    }
    let includes = included_files();
    assert!(!includes.is_empty(), "src/ has include_str! files");
    for inc in &includes {
        assert!(repo().join(inc).exists(), "{inc} is included but missing");
        assert!(
            covered(inc, &copied),
            "src/ includes {inc}, which the Dockerfile never copies"
        );
    }

    // The context exclusions must not hide what the build copies.
    let ignore = read(&docker_dir().join("Dockerfile.dockerignore"));
    for pattern in ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let p = pattern.trim_start_matches("**/").trim_end_matches('/');
        for c in &copied {
            assert!(
                !(c == p || c.starts_with(&format!("{p}/"))),
                "Dockerfile.dockerignore's `{pattern}` hides `{c}`, which the build copies"
            );
        }
    }
    // Everything the runtime stage copies from the context exists.
    let runtime = stages.last().expect("runtime stage");
    for ins in runtime.iter().filter(|i| i.keyword == "COPY") {
        for src in copy_sources(&ins.args).into_iter().flatten() {
            assert!(repo().join(&src).exists(), "runtime COPY of missing {src}");
        }
    }
}

#[test]
fn dockerfile_runs_unprivileged_with_a_health_check_on_the_admin_port() {
    let stages = dockerfile_stages();
    let runtime = stages.last().expect("runtime stage");
    let user = runtime
        .iter()
        .rfind(|i| i.keyword == "USER")
        .expect("the runtime stage sets USER");
    assert!(
        !["0", "root", "0:0"].contains(&user.args.as_str()),
        "USER {}",
        user.args
    );
    // The default config baked into the image is the one the check targets.
    let baked = runtime
        .iter()
        .filter(|i| i.keyword == "COPY")
        .filter_map(|i| copy_sources(&i.args))
        .flatten()
        .find(|s| s.ends_with(".toml"))
        .expect("a default config is copied into the image");
    let facts = config_facts(&read(&repo().join(&baked)));
    let script = bash_script(&dockerfile_healthcheck());
    assert!(
        script.contains(&format!("/dev/tcp/127.0.0.1/{}", facts.admin_port)),
        "the HEALTHCHECK targets the baked config's admin port {}: {script}",
        facts.admin_port
    );
    assert!(script.contains("GET /healthz "), "{script}");
    let exposed: Vec<u16> = runtime
        .iter()
        .filter(|i| i.keyword == "EXPOSE")
        .flat_map(|i| i.args.split_whitespace().map(|p| p.parse().expect("port")))
        .collect();
    assert!(exposed.contains(&facts.listen_port), "{exposed:?}");
    assert!(exposed.contains(&facts.admin_port), "{exposed:?}");
}

// ------------------------------------------------------------------- Compose

#[test]
fn compose_file_follows_the_compose_specification() {
    // tests/fixtures/compose-spec.json: the Compose Specification's schema
    // (Apache-2.0, see LICENSE.compose-spec beside it). Services reject
    // unknown keys, so a misspelt key fails here.
    let schema: Value =
        serde_json::from_str(&read(&repo().join("tests/fixtures/compose-spec.json")))
            .expect("schema");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let compose = compose();
    let errors: Vec<String> = validator
        .iter_errors(&compose)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "compose.yaml: {errors:#?}");
    // The schema itself rejects a typo (so the check above can fail).
    let mut typo = compose.clone();
    typo["services"]["cutover"]["helthcheck"] = Value::Bool(true);
    assert!(!validator.is_valid(&typo));
}

#[test]
fn compose_wires_cutover_mocks_prometheus_and_grafana() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    for name in ["cutover", "mock-v1", "mock-v2", "prometheus", "grafana"] {
        assert!(services.contains_key(name), "service {name} missing");
    }
    let dir = docker_dir();

    // cutover: built from docker/Dockerfile with the repository as context.
    let cutover = service(&compose, "cutover");
    let context = dir.join(str_at(cutover, "/build/context"));
    assert_eq!(
        context.canonicalize().expect("context"),
        repo().canonicalize().expect("repo")
    );
    assert!(context.join(str_at(cutover, "/build/dockerfile")).is_file());
    let image = str_at(cutover, "/image");

    // Its config: mounted where `--config` points, read-only.
    let command = strings(&cutover["command"]);
    assert_eq!(command[0], "serve");
    let config_path = arg_after(&command, "--config").expect("serve --config");
    let volumes = strings(&cutover["volumes"]);
    let config_mount = volumes
        .iter()
        .find(|v| v.split(':').nth(1) == Some(config_path.as_str()))
        .unwrap_or_else(|| panic!("nothing mounted on {config_path}: {volumes:?}"));
    assert_eq!(config_mount.split(':').next(), Some("./cutover.toml"));
    let facts = config_facts(&read(&dir.join("cutover.toml")));

    // Published ports: the traffic and admin listeners.
    let published: Vec<u16> = strings(&cutover["ports"])
        .iter()
        .map(|p| port_of(p))
        .collect();
    assert!(published.contains(&facts.listen_port), "{published:?}");
    assert!(published.contains(&facts.admin_port), "{published:?}");

    // The admin token: a non-loopback admin.listen needs one.
    let token_env = facts.token_env.clone().expect("admin.token_env set");
    assert!(
        cutover["environment"].get(&token_env).is_some(),
        "compose passes {token_env}"
    );
    // state.dir is a volume (the config directory is a read-only file mount).
    assert!(
        volumes
            .iter()
            .any(|v| v.split(':').nth(1) == Some(facts.state_dir.as_str())),
        "state.dir {} is not a volume: {volumes:?}",
        facts.state_dir
    );
    // Health check: the image's own, on the admin port.
    let hc = strings(&cutover["healthcheck"]["test"]);
    assert_eq!(hc[0], "CMD");
    assert_eq!(bash_script(&hc), bash_script(&dockerfile_healthcheck()));
    assert!(bash_script(&hc).contains(&format!("/dev/tcp/127.0.0.1/{}", facts.admin_port)));
    // Stopping waits for the drain.
    let stop = humantime::parse_duration(str_at(cutover, "/stop_grace_period")).expect("duration");
    assert!(
        stop >= facts.shutdown_grace,
        "stop_grace_period {stop:?} < shutdown_grace"
    );

    // The mocks: the same image running `cutover mock-backend`, one per
    // upstream, each with a health check on its own port.
    let mut mock_ports = BTreeMap::new();
    for name in ["mock-v1", "mock-v2"] {
        let mock = service(&compose, name);
        assert_eq!(
            str_at(mock, "/image"),
            image,
            "{name} runs the cutover image"
        );
        let cmd = strings(&mock["command"]);
        assert_eq!(cmd[0], "mock-backend", "{name}");
        let listen = arg_after(&cmd, "--listen").expect("--listen");
        assert!(
            listen.starts_with("0.0.0.0:"),
            "{name} listens on all interfaces"
        );
        let port = port_of(&listen);
        let script = bash_script(&strings(&mock["healthcheck"]["test"]));
        assert!(
            script.contains(&format!("/dev/tcp/127.0.0.1/{port} ")),
            "{name}: {script}"
        );
        mock_ports.insert(name.to_owned(), port);
    }
    for (upstream, url) in &facts.upstreams {
        let (host, port) = host_port(url);
        assert_eq!(
            mock_ports.get(&host),
            Some(&port),
            "upstream {upstream} ({url}) is not a mock service's listen address"
        );
    }
    let depends = cutover["depends_on"].as_object().expect("depends_on");
    for name in mock_ports.keys() {
        assert_eq!(
            depends[name]["condition"], "service_healthy",
            "cutover waits for {name}"
        );
    }

    // Prometheus: its config mounted where --config.file points; it scrapes
    // cutover's admin /metrics.
    let prom = service(&compose, "prometheus");
    let prom_cmd = strings(&prom["command"]);
    let prom_config = prom_cmd
        .iter()
        .find_map(|a| a.strip_prefix("--config.file="))
        .expect("--config.file");
    let prom_volumes = strings(&prom["volumes"]);
    assert!(
        prom_volumes
            .iter()
            .any(|v| v.starts_with("./prometheus.yml:") && v.split(':').nth(1) == Some(prom_config)),
        "{prom_volumes:?}"
    );
    assert!(strings(&prom["ports"]).iter().any(|p| port_of(p) == 9090));
    let prom_yml = yaml(&dir.join("prometheus.yml"));
    let job = prom_yml["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .find(|j| j["job_name"] == "cutover")
        .expect("a cutover job");
    assert_eq!(job["metrics_path"], "/metrics");
    let targets = strings(&job["static_configs"][0]["targets"]);
    assert_eq!(targets, vec![format!("cutover:{}", facts.admin_port)]);

    // Grafana: provisioning mounted, the dashboard where the provider reads.
    let grafana = service(&compose, "grafana");
    assert!(
        strings(&grafana["ports"])
            .iter()
            .any(|p| port_of(p) == 3000)
    );
    let g_volumes = strings(&grafana["volumes"]);
    let mount_of = |src: &str| -> String {
        g_volumes
            .iter()
            .find(|v| v.split(':').next() == Some(src))
            .and_then(|v| v.split(':').nth(1))
            .unwrap_or_else(|| panic!("grafana does not mount {src}: {g_volumes:?}"))
            .to_owned()
    };
    assert_eq!(
        mount_of("./grafana/provisioning"),
        "/etc/grafana/provisioning"
    );
    let dashboard_at = mount_of("./grafana/cutover.json");
    let provider = yaml(&dir.join("grafana/provisioning/dashboards/cutover.yaml"));
    let provider_path = str_at(&provider, "/providers/0/options/path");
    assert_eq!(
        Path::new(&dashboard_at).parent(),
        Some(Path::new(provider_path)),
        "the dashboard is mounted into the provider's folder"
    );
    let datasource = yaml(&dir.join("grafana/provisioning/datasources/prometheus.yaml"));
    let ds = &datasource["datasources"][0];
    assert_eq!(ds["type"], "prometheus");
    assert_eq!(ds["url"], "http://prometheus:9090");
    assert_eq!(ds["uid"], dashboard_datasource_uid());

    // Every bind-mount source exists.
    for (name, svc) in services {
        for v in svc.get("volumes").map(strings).unwrap_or_default() {
            let src = v.split(':').next().expect("source");
            if src.starts_with('.') {
                assert!(
                    dir.join(src).exists(),
                    "service {name} mounts missing {src}"
                );
            }
        }
    }

    // promtool agrees that prometheus.yml is a valid config. (Without it,
    // `require` said so on stderr, and failed under CI=true.)
    if let Some(promtool) = tools::require("promtool", &[], "apt-get install prometheus") {
        let out = std::process::Command::new(promtool)
            .args(["check", "config"])
            .arg(dir.join("prometheus.yml"))
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool check config: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ------------------------------------------------------------- Compose fleet

fn compose_fleet() -> Value {
    yaml(&docker_dir().join("compose.fleet.yaml"))
}

const FLEET_REPLICAS: [&str; 3] = ["cutover-1", "cutover-2", "cutover-3"];

#[test]
fn compose_fleet_runs_three_replicas_behind_one_port_on_one_redis() {
    let schema: Value =
        serde_json::from_str(&read(&repo().join("tests/fixtures/compose-spec.json")))
            .expect("schema");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let compose = compose_fleet();
    let errors: Vec<String> = validator
        .iter_errors(&compose)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "compose.fleet.yaml: {errors:#?}");
    let dir = docker_dir();
    let services = compose["services"].as_object().expect("services");
    for name in ["redis", "lb", "mock-v1", "mock-v2", "prometheus", "grafana"]
        .iter()
        .chain(FLEET_REPLICAS.iter())
    {
        assert!(services.contains_key(*name), "service {name} missing");
    }

    // Redis: healthy before any replica starts, on the port the config names.
    let redis = service(&compose, "redis");
    assert_eq!(
        strings(&redis["healthcheck"]["test"]),
        ["CMD", "redis-cli", "ping"]
    );
    let config_text = read(&dir.join("fleet/cutover.toml"));
    let facts = config_facts(&config_text);
    let t: toml::Table = config_text.parse().expect("TOML");
    let url = t["cluster"]["redis"].as_str().expect("cluster.redis");
    let (host, port) = url
        .strip_prefix("redis://")
        .and_then(|r| r.split('/').next())
        .and_then(|a| a.rsplit_once(':'))
        .expect("redis://HOST:PORT");
    assert_eq!(host, "redis");
    assert!(strings(&redis["expose"]).contains(&port.to_owned()));

    // Three replicas of one image and one config, each with its own name
    // and admin port, all waiting for Redis and the mocks.
    let mut names = BTreeSet::new();
    let mut admin_ports = BTreeSet::new();
    for name in FLEET_REPLICAS {
        let r = service(&compose, name);
        let command = strings(&r["command"]);
        let config_path = arg_after(&command, "--config").expect("--config");
        let volumes = strings(&r["volumes"]);
        assert!(
            volumes
                .iter()
                .any(|v| v.starts_with("./fleet/cutover.toml:")
                    && v.split(':').nth(1) == Some(config_path.as_str())),
            "{name}: {volumes:?}"
        );
        for var in env_vars(&config_text) {
            assert!(
                r["environment"].get(&var).is_some(),
                "{name}: the config needs ${{{var}}}"
            );
        }
        names.insert(
            r["environment"]["CUTOVER_REPLICA"]
                .as_str()
                .expect("CUTOVER_REPLICA")
                .to_owned(),
        );
        for p in strings(&r["ports"]) {
            let (published, inside) = p.split_once(':').expect("HOST:CONTAINER");
            assert_eq!(
                port_of(&format!(":{inside}")),
                facts.admin_port,
                "{name}: {p}"
            );
            admin_ports.insert(published.to_owned());
        }
        for dep in ["redis", "mock-v1", "mock-v2"] {
            assert_eq!(
                r["depends_on"][dep]["condition"], "service_healthy",
                "{name}"
            );
        }
        let hc = strings(&r["healthcheck"]["test"]);
        assert_eq!(bash_script(&hc), bash_script(&dockerfile_healthcheck()));
    }
    assert_eq!(names.len(), 3, "one replica name each: {names:?}");
    assert_eq!(admin_ports.len(), 3, "one admin port each: {admin_ports:?}");

    // One port in front: nginx round robin over the three traffic ports.
    let lb = service(&compose, "lb");
    let lb_ports = strings(&lb["ports"]);
    assert_eq!(lb_ports.len(), 1);
    let lb_inside = port_of(&lb_ports[0]);
    let conf_at = strings(&lb["volumes"])
        .into_iter()
        .find(|v| v.starts_with("./fleet/nginx.conf:"))
        .expect("nginx.conf mounted");
    assert_eq!(conf_at.split(':').nth(1), Some("/etc/nginx/nginx.conf"));
    let nginx = read(&dir.join("fleet/nginx.conf"));
    let servers: BTreeSet<String> = nginx
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .filter(|l| l.ends_with(';'))
        .map(|l| l.trim_end_matches(';').trim().to_owned())
        .collect();
    let want: BTreeSet<String> = FLEET_REPLICAS
        .iter()
        .map(|n| format!("{n}:{}", facts.listen_port))
        .collect();
    assert_eq!(servers, want, "nginx upstream");
    assert!(nginx.contains(&format!("listen {lb_inside};")), "{nginx}");
    for name in FLEET_REPLICAS {
        assert_eq!(lb["depends_on"][name]["condition"], "service_healthy");
    }

    // Prometheus scrapes every replica.
    let prom_yml = yaml(&dir.join("fleet/prometheus.yml"));
    let job = prom_yml["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .find(|j| j["job_name"] == "cutover")
        .expect("a cutover job");
    let targets: BTreeSet<String> = strings(&job["static_configs"][0]["targets"])
        .into_iter()
        .collect();
    let want: BTreeSet<String> = FLEET_REPLICAS
        .iter()
        .map(|n| format!("{n}:{}", facts.admin_port))
        .collect();
    assert_eq!(targets, want);

    for (name, svc) in services {
        for v in svc.get("volumes").map(strings).unwrap_or_default() {
            let src = v.split(':').next().expect("source");
            if src.starts_with('.') {
                assert!(
                    dir.join(src).exists(),
                    "service {name} mounts missing {src}"
                );
            }
        }
    }
    if let Some(promtool) = which("promtool") {
        let out = std::process::Command::new(promtool)
            .args(["check", "config"])
            .arg(dir.join("fleet/prometheus.yml"))
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// The fleet kit's config as three replicas on a real Redis: one fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_fleet_config_runs_as_one_fleet_on_loopback() {
    let Some(redis) = common::redis_server::RedisServer::start("compose_fleet_on_loopback").await
    else {
        return;
    };
    let config_text = read(&docker_dir().join("fleet/cutover.toml"));
    let mut mocks = Vec::new();
    let mut urls = BTreeMap::new();
    for (name, _) in config_facts(&config_text).upstreams {
        let b = healthy_backend(&name).await;
        urls.insert(name, b.url());
        mocks.push(b);
    }
    let mut replicas = Vec::new();
    for name in FLEET_REPLICAS {
        let state = tempfile::tempdir().expect("state");
        let (bin, listen, admin, dir) = serve_loopback_with(
            &config_text,
            state.path(),
            &[("CUTOVER_REPLICA", name)],
            Some(&redis.url()),
            |upstream, _| urls[upstream].clone(),
        )
        .await;
        replicas.push((bin, listen, admin, dir, state));
    }
    let status = |admin: u16| async move {
        client()
            .get(format!("http://127.0.0.1:{admin}/status"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("status")
            .json::<Value>()
            .await
            .expect("json")
    };
    // One fleet: every replica sees the three and the same leader.
    let one = eventually_async(Duration::from_secs(20), || async {
        let mut leaders = BTreeSet::new();
        for (_, _, admin, _, _) in &replicas {
            let c = status(*admin).await["cluster"].clone();
            let live = c["replicas"]
                .as_array()
                .map_or(0, |r| r.iter().filter(|r| r["live"] == true).count());
            if c["up"] != true || live != 3 {
                return false;
            }
            leaders.insert(c["leader"].as_str().unwrap_or("").to_owned());
        }
        leaders.len() == 1 && !leaders.contains("")
    })
    .await;
    assert!(one, "the kit's replicas never formed one fleet");
    check_admin(replicas[0].2).await;
    for (_, listen, _, _, _) in &replicas {
        chat_through(*listen, "user-1").await;
    }
    // An operator action on one replica is the fleet's.
    let paused = client()
        .post(format!(
            "http://127.0.0.1:{}/routes/chat/rollout/pause",
            replicas[1].2
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("pause");
    assert_eq!(paused.status(), 200);
    let everywhere = eventually_async(Duration::from_secs(10), || async {
        for (_, _, admin, _, _) in &replicas {
            if status(*admin).await["routes"][0]["rollout"]["state"] != "paused" {
                return false;
            }
        }
        true
    })
    .await;
    assert!(everywhere, "the pause did not reach every replica");
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------- Kubernetes

struct K8sExample {
    file: &'static str,
    docs: Vec<Value>,
}

impl K8sExample {
    fn load(file: &'static str) -> K8sExample {
        K8sExample {
            file,
            docs: yaml_docs(&docker_dir().join("k8s").join(file)),
        }
    }

    fn kinds(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    fn named(&self, kind: &str, name: &str) -> &Value {
        self.docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{}: no {kind} named {name}", self.file))
    }

    fn deployment(&self) -> &Value {
        let d = self.kinds("Deployment");
        assert_eq!(d.len(), 1, "{}: one Deployment", self.file);
        d[0]
    }

    fn pod(&self) -> &Value {
        &self.deployment()["spec"]["template"]["spec"]
    }

    fn cutover_container(&self) -> &Value {
        self.pod()["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .find(|c| c["name"] == "cutover")
            .unwrap_or_else(|| panic!("{}: no container named cutover", self.file))
    }

    /// The config file cutover reads, and the ConfigMap volume holding it.
    fn config(&self) -> (String, String) {
        let c = self.cutover_container();
        let args = strings(&c["args"]);
        let path = arg_after(&args, "--config").expect("serve --config");
        let mount = c["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
            .find(|m| {
                Path::new(&path).parent() == Some(Path::new(m["mountPath"].as_str().expect("path")))
            })
            .unwrap_or_else(|| panic!("{}: no volume mounted on {path}'s directory", self.file));
        assert!(
            mount.get("subPath").is_none() && mount.get("subPathExpr").is_none(),
            "{}: the ConfigMap must be mounted as a directory: a subPath mount never sees updates",
            self.file
        );
        let volume = self.pod()["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mounted volume");
        let cm_name = str_at(volume, "/configMap/name");
        assert!(
            volume["configMap"].get("items").is_none(),
            "{}: `items` would rename keys",
            self.file
        );
        let cm = self.named("ConfigMap", cm_name);
        let key = Path::new(&path)
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let text = cm["data"][&key]
            .as_str()
            .unwrap_or_else(|| panic!("{}: ConfigMap {cm_name} has no key {key}", self.file))
            .to_owned();
        (path, text)
    }

    /// containerPort of a named (or numeric) port of the cutover container.
    fn port(&self, port: &Value) -> u16 {
        if let Some(n) = port.as_u64() {
            return u16::try_from(n).expect("port");
        }
        let name = port.as_str().expect("port name or number");
        self.cutover_container()["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .map(|p| u16::try_from(p).expect("port"))
            .unwrap_or_else(|| panic!("{}: no port named {name}", self.file))
    }

    fn probe(&self, which: &str) -> (String, u16) {
        let get = &self.cutover_container()[which]["httpGet"];
        (str_at(get, "/path").to_owned(), self.port(&get["port"]))
    }
}

const K8S_FILES: [&str; 2] = ["sidecar.yaml", "gateway.yaml"];

#[test]
fn k8s_examples_probe_the_admin_port_and_hot_reload_their_configmap() {
    for file in K8S_FILES {
        let kit = K8sExample::load(file);
        let (_, toml_text) = kit.config();
        let facts = config_facts(&toml_text);

        // Ports match the config's listeners.
        let c = kit.cutover_container();
        assert_eq!(kit.port(&Value::from("http")), facts.listen_port, "{file}");
        assert_eq!(kit.port(&Value::from("admin")), facts.admin_port, "{file}");
        // Probes: readiness on /readyz (503 while draining), liveness on
        // /healthz, both on the admin port (never the traffic port).
        assert_eq!(
            kit.probe("readinessProbe"),
            ("/readyz".into(), facts.admin_port),
            "{file}"
        );
        assert_eq!(
            kit.probe("livenessProbe"),
            ("/healthz".into(), facts.admin_port),
            "{file}"
        );

        // Draining fits in the pod's grace period.
        let grace = kit.pod()["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
        let pre_stop = c
            .pointer("/lifecycle/preStop/exec/command")
            .map(strings)
            .map(|cmd| {
                assert_eq!(cmd[0], "sleep", "{file}: preStop");
                cmd[1].parse::<u64>().expect("sleep seconds")
            })
            .unwrap_or(0);
        assert!(
            Duration::from_secs(grace) >= facts.shutdown_grace + Duration::from_secs(pre_stop),
            "{file}: terminationGracePeriodSeconds {grace} < preStop {pre_stop}s + shutdown_grace {:?}",
            facts.shutdown_grace
        );

        // The admin token comes from a Secret in the same file.
        let token_env = facts.token_env.clone().expect("admin.token_env");
        let env = c["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == token_env.as_str())
            .unwrap_or_else(|| panic!("{file}: {token_env} not in the container's env"));
        let secret_name = str_at(env, "/valueFrom/secretKeyRef/name");
        let secret_key = str_at(env, "/valueFrom/secretKeyRef/key");
        let secret = kit.named("Secret", secret_name);
        assert!(
            secret["stringData"].get(secret_key).is_some()
                || secret["data"].get(secret_key).is_some(),
            "{file}: Secret {secret_name} has no key {secret_key}"
        );

        // state.dir is a writable volume (the root filesystem is read-only
        // and the ConfigMap mount always is).
        let state_mount = c["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
            .find(|m| m["mountPath"] == facts.state_dir.as_str())
            .unwrap_or_else(|| panic!("{file}: state.dir {} is not a volume", facts.state_dir));
        assert_ne!(state_mount["readOnly"], true, "{file}");
        assert_eq!(
            c.pointer("/securityContext/readOnlyRootFilesystem"),
            Some(&Value::Bool(true)),
            "{file}"
        );

        // The Deployment selects its own pods; the Service sends traffic to
        // the traffic port.
        let dep = kit.deployment();
        let labels = dep["spec"]["template"]["metadata"]["labels"]
            .as_object()
            .expect("labels");
        for (k, v) in dep["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("matchLabels")
        {
            assert_eq!(labels.get(k), Some(v), "{file}: selector {k}");
        }
        // (Other Services, like the gateway's Redis, select other pods.)
        let services: Vec<&Value> = kit
            .kinds("Service")
            .into_iter()
            .filter(|svc| {
                svc["spec"]["selector"]
                    .as_object()
                    .expect("selector")
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect();
        assert_eq!(services.len(), 1, "{file}: one Service for cutover");
        // Every ${NAME} of the config is in the container's environment.
        let env_names: Vec<&str> = c["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        for var in env_vars(&toml_text) {
            assert!(
                env_names.contains(&var.as_str()),
                "{file}: the config needs ${{{var}}}, the container does not set it"
            );
        }
        let svc_ports = services[0]["spec"]["ports"].as_array().expect("ports");
        assert!(
            svc_ports
                .iter()
                .any(|p| kit.port(&p["targetPort"]) == facts.listen_port),
            "{file}: the Service reaches the traffic port"
        );
    }
    // The gateway is a fleet: three replicas, one rollout, on the Redis of
    // the same file, with the password from one Secret for both.
    let gateway = K8sExample::load("gateway.yaml");
    assert_eq!(gateway.deployment()["spec"]["replicas"], 3);
    assert_ne!(
        gateway.deployment()["spec"]["strategy"]["type"],
        "Recreate",
        "replicas share their state through Redis: roll them"
    );
    let (_, text) = gateway.config();
    let t: toml::Table = text.parse().expect("TOML");
    let redis = t["cluster"]["redis"].as_str().expect("cluster.redis");
    assert!(
        redis.starts_with("redis://:${REDIS_PASSWORD}@"),
        "the password comes through the environment: {redis}"
    );
    let authority = redis
        .rsplit_once('@')
        .and_then(|(_, rest)| rest.split('/').next())
        .expect("host:port");
    let (host, port) = authority.rsplit_once(':').expect("host:port");
    let redis_svc = gateway.named("Service", host);
    assert!(
        redis_svc["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["port"].as_u64() == port.parse::<u64>().ok()),
        "cluster.redis {authority} is the Redis Service's port"
    );
    let redis_set = gateway.named("StatefulSet", host);
    for (k, v) in redis_svc["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(
            &redis_set["spec"]["template"]["metadata"]["labels"][k], v,
            "the Redis Service selects the Redis pods"
        );
    }
    let secret_of = |container: &Value| -> (String, String) {
        let e = container["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == "REDIS_PASSWORD")
            .expect("REDIS_PASSWORD");
        (
            str_at(e, "/valueFrom/secretKeyRef/name").to_owned(),
            str_at(e, "/valueFrom/secretKeyRef/key").to_owned(),
        )
    };
    let redis_container = &redis_set["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        secret_of(gateway.cutover_container()),
        secret_of(redis_container)
    );
    let redis_args = strings(&redis_container["args"]);
    assert_eq!(
        arg_after(&redis_args, "--requirepass").as_deref(),
        Some("$(REDIS_PASSWORD)")
    );
    // A ReadWriteOnce claim cannot be shared by three pods; with [cluster]
    // state.dir is only each pod's last view of the fleet.
    let state_volume = gateway.pod()["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "state")
        .expect("a state volume");
    assert!(state_volume.get("emptyDir").is_some(), "{state_volume}");

    // The sidecar shares its pod with the agent.
    let sidecar = K8sExample::load("sidecar.yaml");
    let containers = sidecar.pod()["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 2, "agent + cutover");
    let (_, toml_text) = sidecar.config();
    assert!(
        config_facts(&toml_text)
            .upstreams
            .iter()
            .any(|(_, url)| url.starts_with("http://127.0.0.1:")),
        "the sidecar reaches its agent on loopback"
    );
}

/// Every config the kit mounts, with where it comes from.
fn mounted_configs() -> Vec<(String, String)> {
    let mut out = vec![
        (
            "docker/cutover.toml".to_owned(),
            read(&docker_dir().join("cutover.toml")),
        ),
        (
            "docker/fleet/cutover.toml".to_owned(),
            read(&docker_dir().join("fleet/cutover.toml")),
        ),
    ];
    for file in K8S_FILES {
        let (_, text) = K8sExample::load(file).config();
        out.push((format!("docker/k8s/{file} ConfigMap"), text));
    }
    out
}

#[tokio::test]
async fn every_mounted_config_passes_cutover_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, (origin, text)) in mounted_configs().into_iter().enumerate() {
        let path = dir.path().join(format!("config-{i}.toml"));
        std::fs::write(&path, &text).expect("write");
        let path = path.to_str().expect("utf-8 path");
        let token_env = config_facts(&text).token_env.expect("token_env");
        let env = env_for(&text, &[]);
        let all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (code, out, err) = run_binary(&["check", "--config", path], &all).await;
        assert_eq!(code, Some(0), "{origin}: cutover check failed:\n{out}{err}");
        assert!(
            out.contains(", 0 warnings"),
            "{origin}: lint warnings:\n{out}{err}"
        );
        // Without the token variable the non-loopback admin is refused:
        // the manifests must pass it.
        let but_token: Vec<(&str, &str)> = all
            .iter()
            .copied()
            .filter(|(k, _)| *k != token_env)
            .collect();
        let (code, _, err) = run_binary(&["check", "--config", path], &but_token).await;
        assert_eq!(code, Some(1), "{origin}: valid without {token_env}?\n{err}");
    }
}

// ------------------------------------------------- the kit, run on loopback

async fn run_script(script: &str) -> bool {
    run_script_with(script, std::process::Stdio::inherit()).await
}

async fn run_script_with(script: &str, stderr: std::process::Stdio) -> bool {
    tokio::process::Command::new("bash")
        .args(["-c", script])
        .stderr(stderr)
        .status()
        .await
        .expect("run bash")
        .success()
}

/// A health-check script pointed at `port` instead of `from`.
fn retarget(script: &str, from: u16, port: u16) -> String {
    let old = format!("/dev/tcp/127.0.0.1/{from} ");
    assert!(script.contains(&old), "{script}");
    script.replace(&old, &format!("/dev/tcp/127.0.0.1/{port} "))
}

async fn get(url: &str, token: Option<&str>) -> u16 {
    let mut req = client().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("request").status().as_u16()
}

/// Start `cutover serve` on `config_text` rewritten for loopback; returns
/// the binary, the traffic port and the admin port once both answer.
async fn serve_loopback(
    config_text: &str,
    state: &Path,
    upstream_url: impl FnMut(&str, &str) -> String,
) -> (Binary, u16, u16, tempfile::TempDir) {
    serve_loopback_with(config_text, state, &[], None, upstream_url).await
}

/// `serve_loopback` with values for some of the config's `${NAME}`s and,
/// for a `[cluster]`, the Redis to use.
async fn serve_loopback_with(
    config_text: &str,
    state: &Path,
    env: &[(&str, &str)],
    redis: Option<&str>,
    upstream_url: impl FnMut(&str, &str) -> String,
) -> (Binary, u16, u16, tempfile::TempDir) {
    let sockets = vec![listener(), listener()];
    let (listen, admin) = (port(&sockets[0]), port(&sockets[1]));
    let text = loopback_config(config_text, listen, admin, state, redis, upstream_url);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cutover.toml");
    std::fs::write(&path, text).expect("write");
    let env = env_for(config_text, env);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let bin = Binary::spawn_with(
        &["serve", "--config", path.to_str().expect("utf-8")],
        &env,
        sockets,
    );
    assert!(
        wait_ready(([127, 0, 0, 1], admin).into(), Duration::from_secs(10)).await,
        "cutover never served its admin API on {admin}"
    );
    (bin, listen, admin, dir)
}

/// One chat request through the traffic port: the version that answered.
async fn chat_through(port: u16, user: &str) -> String {
    let r = client()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-user-id", user)
        .body(CHAT)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let version = r.headers()["x-cutover-version"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body = r.text().await.expect("body");
    assert!(body.contains("Hello from"), "{body}");
    version
}

/// The admin endpoints the kit relies on, with and without the token.
async fn check_admin(admin: u16) {
    let base = format!("http://127.0.0.1:{admin}");
    let ready = eventually_async(Duration::from_secs(5), || async {
        get(&format!("{base}/readyz"), None).await == 200
    })
    .await;
    assert!(ready, "/readyz never answered 200");
    assert_eq!(get(&format!("{base}/healthz"), None).await, 200);
    assert_eq!(
        get(&format!("{base}/metrics"), None).await,
        200,
        "Prometheus needs no token"
    );
    assert_eq!(
        get(&format!("{base}/status"), None).await,
        401,
        "the token guards /status"
    );
    assert_eq!(get(&format!("{base}/status"), Some(TOKEN)).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_stack_runs_on_loopback() {
    let compose = compose();
    let config_text = read(&docker_dir().join("cutover.toml"));
    let facts = config_facts(&config_text);

    // The mocks, started with compose's own commands (listen rewritten),
    // and their compose health checks run against them.
    let mut mocks = Vec::new();
    let mut mock_ports = BTreeMap::new();
    for name in ["mock-v1", "mock-v2"] {
        let svc = service(&compose, name);
        let mut cmd = strings(&svc["command"]);
        // As written, but without random errors: the request count below
        // must not depend on luck.
        if let Some(at) = cmd.iter().position(|a| a == "--error-rate") {
            cmd.drain(at..at + 2);
        }
        let at = cmd.iter().position(|a| a == "--listen").expect("--listen") + 1;
        let socket = listener();
        let port = port(&socket);
        let declared = port_of(&cmd[at]);
        cmd[at] = format!("127.0.0.1:{port}");
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        // The mock answers once it serves: the handed-over socket queues
        // connections until then.
        mocks.push(Binary::spawn_with(&args, &[], vec![socket]));
        let script = bash_script(&strings(&svc["healthcheck"]["test"]));
        assert!(
            run_script(&retarget(&script, declared, port)).await,
            "{name}'s compose health check fails against the real mock"
        );
        mock_ports.insert(name.to_owned(), port);
    }

    // cutover on docker/cutover.toml, upstreams at those mocks.
    let state = tempfile::tempdir().expect("state");
    let (_cutover, listen, admin, _dir) = serve_loopback(&config_text, state.path(), |_, url| {
        let (host, _) = host_port(url);
        format!("http://127.0.0.1:{}", mock_ports[&host])
    })
    .await;
    check_admin(admin).await;
    // The image's HEALTHCHECK and compose's, run as written.
    for (origin, cmd) in [
        ("Dockerfile HEALTHCHECK", dockerfile_healthcheck()),
        (
            "compose healthcheck",
            strings(&service(&compose, "cutover")["healthcheck"]["test"]),
        ),
    ] {
        let script = retarget(&bash_script(&cmd), facts.admin_port, admin);
        assert!(run_script(&script).await, "{origin} fails against cutover");
    }
    // A health check aimed at a dead port fails (so the ones above could).
    let dead = retarget(
        &bash_script(&dockerfile_healthcheck()),
        facts.admin_port,
        dead_port(),
    );
    assert!(!run_script_with(&dead, std::process::Stdio::null()).await);

    // Traffic flows through to the mocks (concurrently: the compose mocks
    // answer in 50-400 ms).
    let versions = futures_util::future::join_all(
        (0..40).map(|i| async move { chat_through(listen, &format!("user-{i}")).await }),
    )
    .await;
    let seen: BTreeSet<String> = versions.into_iter().collect();
    assert!(seen.contains("v1"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_configs_run_and_answer_their_probes() {
    for file in K8S_FILES {
        let kit = K8sExample::load(file);
        let (_, config_text) = kit.config();
        let mut backends = Vec::new();
        let mut urls = BTreeMap::new();
        for (name, _) in config_facts(&config_text).upstreams {
            let b = healthy_backend(&name).await;
            urls.insert(name, b.url());
            backends.push(b);
        }
        let state = tempfile::tempdir().expect("state");
        let (_cutover, listen, admin, _dir) =
            serve_loopback(&config_text, state.path(), |name, _| urls[name].clone()).await;
        // The probes exactly as the Deployment declares them.
        for probe in ["readinessProbe", "livenessProbe"] {
            let (path, _) = kit.probe(probe);
            let ok = eventually_async(Duration::from_secs(5), || async {
                get(&format!("http://127.0.0.1:{admin}{path}"), None).await == 200
            })
            .await;
            assert!(ok, "{file}: {probe} {path} never answered 200");
        }
        check_admin(admin).await;
        chat_through(listen, "user-1").await;
    }
}

// ----------------------------------------------------------------- Grafana

fn dashboard() -> Value {
    serde_json::from_str(&read(&docker_dir().join("grafana/cutover.json")))
        .expect("the dashboard is JSON")
}

/// Every panel, rows' nested panels included.
fn all_panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested.iter());
        }
    }
    out
}

/// Every PromQL expression: panel targets, annotations, template variables.
fn dashboard_expressions(d: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in all_panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.extend(t["expr"].as_str().map(str::to_owned));
        }
    }
    for a in d["annotations"]["list"].as_array().expect("annotations") {
        out.extend(a["expr"].as_str().map(str::to_owned));
    }
    for v in d["templating"]["list"].as_array().expect("templating") {
        out.extend(v["definition"].as_str().map(str::to_owned));
        out.extend(
            v["query"]
                .as_str()
                .or_else(|| v["query"]["query"].as_str())
                .map(str::to_owned),
        );
    }
    out
}

fn metric_names(expr: &str) -> BTreeSet<String> {
    let bytes = expr.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while let Some(at) = expr[i..].find("cutover_") {
        let start = i + at;
        let boundary = start == 0 || {
            let b = bytes[start - 1];
            !(b.is_ascii_alphanumeric() || b == b'_')
        };
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        if boundary {
            out.insert(expr[start..end].to_owned());
        }
        i = end;
    }
    out
}

fn dashboard_datasource_uid() -> String {
    let d = dashboard();
    let mut uids = BTreeSet::new();
    collect_datasource_uids(&d, &mut uids);
    uids.remove("-- Grafana --");
    assert_eq!(uids.len(), 1, "one datasource: {uids:?}");
    uids.into_iter().next().expect("a datasource")
}

fn collect_datasource_uids(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            if let Some(ds) = map.get("datasource") {
                match ds.get("uid").and_then(Value::as_str) {
                    Some(uid) => {
                        out.insert(uid.to_owned());
                    }
                    None => panic!("a datasource without a uid: {ds}"),
                }
            }
            for child in map.values() {
                collect_datasource_uids(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_datasource_uids(i, out)),
        _ => {}
    }
}

#[test]
fn dashboard_is_a_grafana_dashboard_covering_every_topic() {
    let d = dashboard();
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    assert!(
        d.get("id").is_none_or(Value::is_null),
        "no instance id in a provisioned file"
    );
    let panels = all_panels(&d);
    let mut ids = BTreeSet::new();
    for p in &panels {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].as_u64().is_some(), "panel {id} gridPos.{k}");
        }
        assert!(
            p["gridPos"]["x"].as_u64().unwrap_or(0) + p["gridPos"]["w"].as_u64().unwrap_or(0) <= 24
        );
        assert!(p["type"].as_str().is_some(), "panel {id} type");
        if p["type"] != "row" {
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "panel {id} has no query");
            let mut refs = BTreeSet::new();
            for t in targets {
                assert!(
                    refs.insert(t["refId"].as_str().expect("refId")),
                    "panel {id}"
                );
                assert!(
                    t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                    "panel {id}"
                );
            }
        }
    }
    // The datasource is the provisioned one, by uid (checked against the
    // provisioning file in the compose test).
    assert_eq!(dashboard_datasource_uid(), "cutover-prometheus");

    // Each topic: a panel whose queries together hold every fragment.
    let topics: &[(&str, &[&str])] = &[
        (
            "request rate per version",
            &["rate(cutover_requests_total", "version"],
        ),
        (
            "error share per version",
            &["cutover_requests_total", "status=\"5xx\"", "/", "version"],
        ),
        (
            "p50 latency per version",
            &[
                "histogram_quantile(0.5,",
                "cutover_request_duration_seconds_bucket",
                "version",
            ],
        ),
        (
            "p95 latency per version",
            &[
                "histogram_quantile(0.95,",
                "cutover_request_duration_seconds_bucket",
                "version",
            ],
        ),
        (
            "p99 latency per version",
            &[
                "histogram_quantile(0.99,",
                "cutover_request_duration_seconds_bucket",
                "version",
            ],
        ),
        (
            "p50 TTFB per version",
            &[
                "histogram_quantile(0.5,",
                "cutover_time_to_first_byte_seconds_bucket",
                "version",
            ],
        ),
        (
            "p95 TTFB per version",
            &[
                "histogram_quantile(0.95,",
                "cutover_time_to_first_byte_seconds_bucket",
                "version",
            ],
        ),
        (
            "p99 TTFB per version",
            &[
                "histogram_quantile(0.99,",
                "cutover_time_to_first_byte_seconds_bucket",
                "version",
            ],
        ),
        (
            "cutover overhead",
            &["histogram_quantile(", "cutover_overhead_seconds_bucket"],
        ),
        ("breaker states", &["cutover_breaker_state", "upstream"]),
        (
            "fallbacks and refusals",
            &["cutover_fallbacks_total", "cutover_refusals_total"],
        ),
        (
            "shadow compare match share",
            &["cutover_shadow_compare_total", "result=\"match\"", "/"],
        ),
        (
            "cache hit ratio",
            &["cutover_cache_requests_total", "result=\"hit\"", "/"],
        ),
        ("tokens per version", &["cutover_tokens_total", "version"]),
        ("cost per version", &["cutover_cost_usd_total", "version"]),
        ("rollout step over time", &["cutover_rollout_step"]),
        (
            "rollout state over time",
            &["cutover_rollout_state", "state"],
        ),
        (
            "fleet: Redis reachable and the leader, per replica",
            &["cutover_cluster_up", "cutover_cluster_leader", "instance"],
        ),
        ("fleet: replicas seen", &["cutover_cluster_replicas"]),
        (
            "fleet: failed Redis operations",
            &["rate(cutover_cluster_errors_total", "op"],
        ),
    ];
    for (topic, fragments) in topics {
        let found = panels.iter().any(|p| {
            let exprs: String = p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["expr"].as_str())
                .collect::<Vec<_>>()
                .join("\n");
            fragments.iter().all(|f| exprs.contains(f))
        });
        assert!(
            found,
            "no panel covers {topic} (queries with {fragments:?})"
        );
    }
    // Rollbacks are annotations: an enabled query on increases of the counter.
    let rollbacks = d["annotations"]["list"]
        .as_array()
        .expect("annotations")
        .iter()
        .find(|a| {
            a["expr"]
                .as_str()
                .is_some_and(|e| e.contains("increase(cutover_rollbacks_total"))
        })
        .expect("an annotation on increase(cutover_rollbacks_total)");
    assert_eq!(rollbacks["enable"], true);
    assert!(rollbacks["datasource"]["uid"].as_str().is_some());
}

/// A config that makes every series family appear: a split with a cache,
/// a compared shadow and a fallback chain; a rollout (then a rollback); a
/// route whose only upstream fails (refusals).
fn everything_config(ok: &str, shadow: &str, bad: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
[[upstreams]]
name = "ok"
url = "{ok}"
[[upstreams]]
name = "shadow"
url = "{shadow}"
[[upstreams]]
name = "bad"
url = "{bad}"
[[routes]]
name = "chat"
match = {{ path_prefix = "/v1/" }}
sticky = ["header:x-user-id"]
fallbacks = ["v1"]
cache = {{ ttl = "1m", deterministic_only = true }}
[[routes.versions]]
name = "v1"
upstream = "ok"
weight = 50.0
cost = {{ input_per_mtok = 2.5, output_per_mtok = 10.0 }}
[[routes.versions]]
name = "v2"
upstream = "bad"
weight = 50.0
cost = {{ input_per_mtok = 2.5, output_per_mtok = 10.0 }}
[[routes.shadows]]
name = "v3"
upstream = "shadow"
percent = 100.0
max_in_flight = 16
timeout = "5s"
compare = ["/choices/0/message/tool_calls/0/function/name"]
cost = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }}
[[routes]]
name = "canary"
match = {{ path_prefix = "/canary/" }}
sticky = ["header:x-user-id"]
[[routes.versions]]
name = "base"
upstream = "ok"
weight = 50.0
[[routes.versions]]
name = "cand"
upstream = "ok"
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
name = "down"
match = {{ path_prefix = "/down/" }}
[[routes.versions]]
name = "only"
upstream = "bad"
weight = 100.0
"#
    )
}

/// One route on `ok`, in a fleet whose Redis does not answer.
fn fleet_config(ok: &str) -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
[cluster]
redis = "redis://127.0.0.1:{closed}/0"
name = "dashboard"
lease = "600ms"
sync_interval = "100ms"
[[upstreams]]
name = "ok"
url = "{ok}"
[[routes]]
name = "fleet"
match = {{ path_prefix = "/fleet/" }}
[[routes.versions]]
name = "only"
upstream = "ok"
weight = 100.0
"#
    )
}

/// Sample names in a scrape, plus histogram base names from `# TYPE`.
fn scraped_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            if let (Some(name), Some("histogram")) = (words.next(), words.next()) {
                out.insert(name.to_owned());
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            out.insert(line[..end].to_owned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_only_metrics_that_exist() {
    let d = dashboard();
    let mut wanted = BTreeSet::new();
    for e in dashboard_expressions(&d) {
        wanted.extend(metric_names(&e));
    }
    assert!(wanted.len() >= 15, "{wanted:?}");
    // Every name is one cutover declares (src/telemetry/names.rs), or a
    // histogram's series of one.
    let declared = read(&repo().join("src/telemetry/names.rs"));
    for name in &wanted {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| b.ends_with("_seconds"))
            .unwrap_or(name);
        assert!(
            declared.contains(&format!("\"{base}\"")),
            "{name} is not declared in src/telemetry/names.rs"
        );
    }

    let ok = backend(cutover::mock::MockArgs {
        name: "ok".into(),
        outcome: Some(cutover::mock::Outcome::Success),
        ..cutover::mock::MockArgs::new(loopback0())
    })
    .await;
    let shadow = healthy_backend("shadow").await;
    let bad = backend(cutover::mock::MockArgs {
        name: "bad".into(),
        status: Some(http::StatusCode::INTERNAL_SERVER_ERROR),
        ..cutover::mock::MockArgs::new(loopback0())
    })
    .await;
    let proxy = start_proxy(&everything_config(&ok.url(), &shadow.url(), &bad.url())).await;
    // The fleet row's series come from a replica with [cluster]: its Redis
    // here is a closed port, which is enough for every series to exist
    // (up 0, leader 0, replicas 0, errors counted by operation).
    let fleet_replica = start_proxy(&fleet_config(&ok.url())).await;
    let http = client();
    let cached = r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"lookup"}}]}"#;
    for i in 0..20 {
        for (path, body) in [
            (
                "/v1/chat/completions",
                if i % 2 == 0 { CHAT } else { CHAT_STREAM },
            ),
            ("/v1/chat/completions", cached),
            ("/canary/chat", CHAT),
            ("/down/chat", CHAT),
        ] {
            let r = http
                .post(format!("{}{path}", proxy.url()))
                .header("x-user-id", format!("user-{i}"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("request");
            let _ = r.bytes().await.expect("body");
        }
    }
    let r = http
        .post(format!("{}/routes/canary/rollout/abort", proxy.admin_url()))
        .send()
        .await
        .expect("abort");
    assert_eq!(r.status(), 200, "abort the rollout");

    let missing = std::cell::RefCell::new(Vec::new());
    let complete = eventually_async(Duration::from_secs(5), || {
        let (proxy, fleet_replica, wanted, missing) = (&proxy, &fleet_replica, &wanted, &missing);
        async move {
            let mut names = scraped_names(&scrape(proxy).await);
            names.extend(scraped_names(&scrape(fleet_replica).await));
            *missing.borrow_mut() = wanted
                .iter()
                .filter(|n| !names.contains(*n))
                .cloned()
                .collect::<Vec<_>>();
            missing.borrow().is_empty()
        }
    })
    .await;
    let text = scrape(&proxy).await;
    assert!(
        complete,
        "the dashboard queries metrics /metrics does not expose: {:?}\n{text}",
        missing.into_inner()
    );
}
