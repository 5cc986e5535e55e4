//! Raw structs → the validated [`Config`], collecting every error.
//!
//! Each check pushes an [`Issue`] and carries on with a default, so one run
//! reports everything that is wrong; the caller throws the result away when
//! there is any issue. Names that other entries refer to (upstreams, route
//! versions) are read from the parsed tree, not from the deserialized units,
//! so an entry with a type error does not also make every reference to it
//! "unknown".

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::model::*;
use super::raw::*;
use super::spans::KeyPath;
use super::units::{describe, parse_duration, parse_size};

const DEFAULT_STEPS: [u16; 6] = [100, 500, 1_000, 2_500, 5_000, 10_000];

pub struct Validator<'a> {
    pub issues: Vec<Issue>,
    /// Relative file paths are resolved against this (the config's directory).
    base_dir: PathBuf,
    env: &'a dyn Fn(&str) -> Option<String>,
}

/// PEM files (certificates, keys, CAs) larger than this are refused: a
/// path like `/dev/zero` or a log file by mistake must not make the loader
/// read forever.
const MAX_PEM_FILE: u64 = 1 << 20;

/// Read a file referenced by the config, at most [`MAX_PEM_FILE`] bytes.
fn read_bounded_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB",
            MAX_PEM_FILE / 1024
        )));
    }
    Ok(bytes)
}

fn one_of(names: &[&str]) -> String {
    if names.is_empty() {
        "none are defined".to_string()
    } else {
        format!("valid: one of {}", names.join(", "))
    }
}

/// `cluster.replica` when it is left out: the host name and the process
/// id, unique on one host and recognisable in `/status`.
fn default_replica() -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|f| {
            let name: String = std::fs::read_to_string(f)
                .ok()?
                .chars()
                .filter(char::is_ascii_graphic)
                .take(100)
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .unwrap_or_else(|| "cutover".to_string());
    format!("{host}-{}", std::process::id())
}

fn table_name(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str)
}

impl<'a> Validator<'a> {
    pub fn new(source: &Path, env: &'a dyn Fn(&str) -> Option<String>) -> Validator<'a> {
        Validator {
            issues: Vec::new(),
            base_dir: source.parent().map(Path::to_path_buf).unwrap_or_default(),
            env,
        }
    }

    fn err(&mut self, path: KeyPath, message: impl Into<String>) {
        self.issues.push(Issue::at(path, message));
    }

    // ---- leaves -------------------------------------------------------

    fn duration(&mut self, v: Option<Value>, path: KeyPath, default: Duration) -> Duration {
        match v {
            None => default,
            Some(v) => parse_duration(&v).unwrap_or_else(|m| {
                self.err(path, m);
                default
            }),
        }
    }

    /// A duration that must be more than zero (timeouts, windows).
    fn positive_duration(
        &mut self,
        v: Option<Value>,
        path: KeyPath,
        default: Duration,
    ) -> Duration {
        let d = self.duration(v, path.clone(), default);
        if d.is_zero() {
            self.err(
                path,
                "must be more than 0s; valid: a string like \"250ms\", \"30s\", \"10m\"",
            );
            return default;
        }
        d
    }

    fn opt_duration(&mut self, v: Option<Value>, path: KeyPath) -> Option<Duration> {
        let v = v?;
        match parse_duration(&v) {
            Ok(d) => Some(d),
            Err(m) => {
                self.err(path, m);
                None
            }
        }
    }

    fn size(&mut self, v: Option<Value>, path: KeyPath, default: u64) -> u64 {
        match v {
            None => default,
            Some(v) => parse_size(&v).unwrap_or_else(|m| {
                self.err(path, m);
                default
            }),
        }
    }

    fn at_least_one(&mut self, v: Option<u64>, path: KeyPath, default: u64) -> u64 {
        match v {
            Some(0) => {
                self.err(path, "must be at least 1");
                default
            }
            Some(n) => n,
            None => default,
        }
    }

    fn usize_of(&mut self, n: u64, path: KeyPath) -> usize {
        usize::try_from(n).unwrap_or_else(|_| {
            self.err(path, format!("{n} is too large for this platform"));
            0
        })
    }

    /// A float in a range; `rule` names the range for the message.
    fn ranged(
        &mut self,
        v: Option<f64>,
        path: KeyPath,
        ok: impl Fn(f64) -> bool,
        rule: &str,
    ) -> Option<f64> {
        let x = v?;
        if x.is_finite() && ok(x) {
            Some(x)
        } else {
            self.err(path, format!("{x} is out of range; valid: {rule}"));
            None
        }
    }

    fn header_name(&mut self, name: &str, path: KeyPath) -> Option<HeaderName> {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.err(
                    path,
                    format!(
                        "invalid header name {name:?}; valid: letters, digits and !#$%&'*+-.^_`|~"
                    ),
                );
                None
            }
        }
    }

    /// `name = "value"` pairs; values are marked sensitive (they often hold
    /// credentials and must never be logged).
    fn headers(&mut self, table: Option<Table>, path: &KeyPath) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        for (k, v) in table.unwrap_or_default() {
            let p = path.key(&k);
            let name = self.header_name(&k, p.clone());
            let Some(text) = v.as_str() else {
                self.err(
                    p,
                    format!("expected a string header value, found {}", describe(&v)),
                );
                continue;
            };
            match HeaderValue::from_str(text) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    if let Some(name) = name {
                        out.push((name, value));
                    }
                }
                Err(_) => self.err(
                    p,
                    "invalid header value; valid: visible ASCII characters, spaces and tabs",
                ),
            }
        }
        out
    }

    fn json_map(
        &mut self,
        table: Option<Table>,
        path: &KeyPath,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for (k, v) in table.unwrap_or_default() {
            let p = path.key(&k);
            if let Some(j) = self.json(v, &p) {
                out.insert(k, j);
            }
        }
        out
    }

    fn json(&mut self, v: Value, path: &KeyPath) -> Option<serde_json::Value> {
        Some(match v {
            Value::String(s) => serde_json::Value::String(s),
            Value::Integer(n) => serde_json::Value::from(n),
            Value::Float(x) => match serde_json::Number::from_f64(x) {
                Some(n) => serde_json::Value::Number(n),
                None => {
                    self.err(
                        path.clone(),
                        format!("{x} cannot be written as JSON; valid: a finite number"),
                    );
                    return None;
                }
            },
            Value::Boolean(b) => serde_json::Value::Bool(b),
            Value::Datetime(d) => serde_json::Value::String(d.to_string()),
            Value::Array(items) => serde_json::Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, v)| self.json(v, &path.index(i)))
                    .collect(),
            ),
            Value::Table(t) => serde_json::Value::Object(self.json_map(Some(t), path)),
        })
    }

    fn socket_addr(&mut self, text: &str, path: KeyPath) -> Option<SocketAddr> {
        match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    path,
                    format!("bad listen address {text:?}; valid: an IP address and port like \"0.0.0.0:8080\" or \"[::1]:8080\""),
                );
                None
            }
        }
    }

    fn url(&mut self, text: &str, path: KeyPath) -> Option<UpstreamUrl> {
        match parse_url(text) {
            Ok(u) => Some(u),
            Err(m) => {
                self.err(path, format!("malformed URL {text:?}: {m}; valid: http://HOST[:PORT][/PATH] or https://..."));
                None
            }
        }
    }

    fn file_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    // ---- sections -----------------------------------------------------

    pub fn config(&mut self, root: Table, source: &Path) -> Option<Config> {
        let root_path = KeyPath::root();
        let mut sections: HashMap<String, Value> = HashMap::new();
        for (k, v) in root {
            if TOP_LEVEL_KEYS.contains(&k.as_str()) {
                sections.insert(k, v);
            } else {
                let p = root_path.key(&k);
                let m = unknown_key_message(&p);
                self.issues.push(Issue::at_key(p, m));
            }
        }
        let mut take_table = |name: &str, issues: &mut Vec<Issue>| -> Option<Value> {
            let v = sections.remove(name)?;
            if v.is_table() {
                Some(v)
            } else {
                issues.push(Issue::at(
                    KeyPath::root().key(name),
                    format!("expected a table [{name}], found {}", describe(&v)),
                ));
                None
            }
        };
        let server_v = take_table("server", &mut self.issues);
        let admin_v = take_table("admin", &mut self.issues);
        let log_v = take_table("log", &mut self.issues);
        let tracing_v = take_table("tracing", &mut self.issues);
        let cache_v = take_table("cache", &mut self.issues);
        let state_v = take_table("state", &mut self.issues);
        let cluster_v = take_table("cluster", &mut self.issues);
        let upstreams_v = self.array_of_tables(sections.remove("upstreams"), "upstreams");
        let routes_v = self.array_of_tables(sections.remove("routes"), "routes");

        let server = match server_v {
            Some(v) => self.server(v),
            None => {
                self.err(
                    root_path.clone(),
                    "missing required section [server] (with `listen`)",
                );
                None
            }
        };
        let admin = self.admin(admin_v);
        let log = self.log(log_v);
        let tracing = tracing_v.and_then(|v| self.tracing(v));
        let cache = self.cache(cache_v);
        let state = self.state(state_v);
        let cluster = cluster_v.and_then(|v| self.cluster(v));
        if let Some(c) = &cache
            && c.shared
            && cluster.is_none()
        {
            self.err(
                root_path.key("cache").key("shared"),
                "`shared = true` needs a [cluster] section: the shared tier lives in the fleet's Redis; valid: false, or add [cluster] with `redis = \"redis://...\"`",
            );
        }

        let upstream_names =
            self.unique_names(&upstreams_v, &root_path.key("upstreams"), "upstream");
        let mut upstreams = Vec::new();
        for (i, v) in upstreams_v.into_iter().enumerate() {
            if let Some(u) = self.upstream(v, root_path.key("upstreams").index(i)) {
                upstreams.push(u);
            }
        }

        if routes_v.is_empty() {
            self.err(
                root_path.clone(),
                "no routes; valid: at least one [[routes]] with a name and [[routes.versions]]",
            );
        }
        self.unique_names(&routes_v, &root_path.key("routes"), "route");
        let mut routes = Vec::new();
        for (i, v) in routes_v.into_iter().enumerate() {
            if let Some(r) = self.route(v, root_path.key("routes").index(i), &upstream_names) {
                routes.push(r);
            }
        }

        Some(Config {
            source: source.to_path_buf(),
            server: server?,
            admin: admin?,
            log: log?,
            tracing,
            cache: cache?,
            state,
            cluster,
            upstreams,
            routes,
        })
    }

    fn array_of_tables(&mut self, v: Option<Value>, name: &str) -> Vec<Value> {
        let path = KeyPath::root().key(name);
        match v {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    if item.is_table() {
                        Some(item)
                    } else {
                        self.err(
                            path.index(i),
                            format!(
                                "expected a table, found {}; valid: [[{name}]] entries",
                                describe(&item)
                            ),
                        );
                        None
                    }
                })
                .collect(),
            Some(other) => {
                self.err(
                    path,
                    format!(
                        "expected an array of tables, found {}; valid: [[{name}]] entries",
                        describe(&other)
                    ),
                );
                Vec::new()
            }
        }
    }

    /// Report duplicate `name`s among table entries; return the names in
    /// order (read from the tree, so they exist even when an entry has
    /// another error).
    fn unique_names(&mut self, items: &[Value], path: &KeyPath, what: &str) -> Vec<String> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut names = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(name) = table_name(item) else {
                continue;
            };
            if let Some(first) = seen.get(name) {
                self.err(
                    path.index(i).key("name"),
                    format!("duplicate {what} name `{name}` (first at {}); valid: a name not used by another {what}", path.index(*first)),
                );
            } else {
                seen.insert(name, i);
                names.push(name.to_string());
            }
        }
        names
    }

    fn server(&mut self, v: Value) -> Option<ServerConfig> {
        let p = KeyPath::root().key("server");
        let raw: RawServer = de_unit(v, &p, &mut self.issues)?;
        let listen = match raw.listen {
            Some(l) => self.socket_addr(&l, p.key("listen")),
            None => {
                self.err(
                    p.clone(),
                    "missing required key `listen`; valid: an address like \"0.0.0.0:8080\"",
                );
                None
            }
        };
        let workers = raw.workers.unwrap_or(0);
        let workers = self.usize_of(workers, p.key("workers"));
        let max_body = self.size(raw.max_body, p.key("max_body"), 16 << 20);
        let max_in_flight = self.at_least_one(raw.max_in_flight, p.key("max_in_flight"), 4096);
        let max_in_flight = self.usize_of(max_in_flight, p.key("max_in_flight"));
        let shutdown_grace = self.duration(
            raw.shutdown_grace,
            p.key("shutdown_grace"),
            Duration::from_secs(30),
        );
        let request_header_timeout = self.positive_duration(
            raw.request_header_timeout,
            p.key("request_header_timeout"),
            Duration::from_secs(10),
        );
        let feedback_path = match raw.feedback_path {
            None => Some("/_cutover/feedback".to_string()),
            Some(s) if s.is_empty() => None,
            Some(s) => {
                if !s.starts_with('/')
                    || s.contains(['?', '#'])
                    || s.chars().any(char::is_whitespace)
                {
                    self.err(
                        p.key("feedback_path"),
                        format!("bad feedback path {s:?}; valid: \"\" (disabled) or a path starting with `/`, without query or spaces"),
                    );
                }
                Some(s)
            }
        };
        let tls = raw.tls.and_then(|t| self.tls(t, &p.key("tls")));
        let feedback_token = raw.feedback_token_env.as_deref().and_then(|name| {
            self.token_env(
                name,
                p.key("feedback_token_env"),
                "the feedback bearer token",
            )
        });
        let max_buffered = self.size(raw.max_buffered, p.key("max_buffered"), 256 << 20);
        if max_buffered < max_body {
            self.err(
                p.key("max_buffered"),
                format!("max_buffered ({max_buffered} bytes) is smaller than max_body ({max_body} bytes), so a body within max_body could never be taken; valid: at least max_body"),
            );
        }
        Some(ServerConfig {
            listen: listen?,
            workers,
            max_body,
            max_in_flight,
            shutdown_grace,
            trust_forwarded_for: raw.trust_forwarded_for.unwrap_or(false),
            feedback_path,
            feedback_token_env: raw.feedback_token_env,
            feedback_token,
            max_buffered,
            tls,
            request_header_timeout,
        })
    }

    /// The token in environment variable `name` (`*_token_env` keys): a
    /// missing or empty variable is an error, since a token that silently
    /// went away would open what it guards.
    fn token_env(&mut self, name: &str, p: KeyPath, what: &str) -> Option<String> {
        match (self.env)(name) {
            Some(t) if !t.is_empty() => Some(t),
            Some(_) => {
                self.err(
                    p,
                    format!("environment variable `{name}` is empty; valid: set it to {what}"),
                );
                None
            }
            None => {
                self.err(p, format!("environment variable `{name}` is not set; valid: set it to {what}, or remove the key"));
                None
            }
        }
    }

    /// A PEM file of at least one certificate, read now so that a bad file
    /// is a config error rather than a runtime failure.
    fn pem_certificates(&mut self, path: &Path, p: KeyPath, what: &str) -> Option<Vec<u8>> {
        match read_bounded_file(path) {
            Ok(bytes) => {
                let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
                match certs {
                    Ok(c) if !c.is_empty() => Some(bytes),
                    Ok(_) => {
                        self.err(p, format!("no certificate in {}; valid: a PEM file with at least one BEGIN CERTIFICATE block", path.display()));
                        None
                    }
                    Err(e) => {
                        self.err(
                            p,
                            format!("bad PEM in {}: {e}; valid: {what}", path.display()),
                        );
                        None
                    }
                }
            }
            Err(e) => {
                self.err(p, format!("unreadable {what} file {}: {e}; valid: a readable PEM file (relative paths start at the config file's directory)", path.display()));
                None
            }
        }
    }

    fn tls(&mut self, raw: RawTls, p: &KeyPath) -> Option<TlsConfig> {
        let cert_path = self.file_path(&raw.cert);
        let key_path = self.file_path(&raw.key);
        let cert_pem = match read_bounded_file(&cert_path) {
            Ok(bytes) => {
                let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
                match certs {
                    Ok(c) if !c.is_empty() => Some(bytes),
                    Ok(_) => {
                        self.err(p.key("cert"), format!("no certificate in {}; valid: a PEM file with at least one BEGIN CERTIFICATE block", cert_path.display()));
                        None
                    }
                    Err(e) => {
                        self.err(
                            p.key("cert"),
                            format!(
                                "bad PEM in {}: {e}; valid: a PEM certificate chain",
                                cert_path.display()
                            ),
                        );
                        None
                    }
                }
            }
            Err(e) => {
                self.err(p.key("cert"), format!("unreadable TLS certificate file {}: {e}; valid: a readable PEM file (relative paths start at the config file's directory)", cert_path.display()));
                None
            }
        };
        let key_pem = match read_bounded_file(&key_path) {
            Ok(bytes) => match PrivateKeyDer::from_pem_slice(&bytes) {
                Ok(_) => Some(bytes),
                Err(e) => {
                    self.err(p.key("key"), format!("no private key in {} ({e}); valid: a PEM file with one PRIVATE KEY block (PKCS#8, PKCS#1 or SEC1)", key_path.display()));
                    None
                }
            },
            Err(e) => {
                self.err(p.key("key"), format!("unreadable TLS key file {}: {e}; valid: a readable PEM file (relative paths start at the config file's directory)", key_path.display()));
                None
            }
        };
        Some(TlsConfig {
            cert_path,
            key_path,
            cert_pem: cert_pem?,
            key_pem: key_pem?,
        })
    }

    fn admin(&mut self, v: Option<Value>) -> Option<AdminConfig> {
        let p = KeyPath::root().key("admin");
        let raw: RawAdmin = match v {
            Some(v) => de_unit(v, &p, &mut self.issues)?,
            None => RawAdmin::default(),
        };
        let listen = match raw.listen {
            Some(l) => self.socket_addr(&l, p.key("listen"))?,
            None => SocketAddr::from(([127, 0, 0, 1], 9901)),
        };
        let token = match &raw.token_env {
            None => {
                if !listen.ip().is_loopback() {
                    self.err(
                        p.key("listen"),
                        format!("admin listen address {listen} is not loopback, so anyone on the network could drive rollouts; valid: set `admin.token_env`, or listen on 127.0.0.1 or [::1]"),
                    );
                }
                None
            }
            Some(name) => match (self.env)(name) {
                Some(t) if !t.is_empty() => Some(t),
                Some(_) => {
                    self.err(p.key("token_env"), format!("environment variable `{name}` is empty; valid: set it to the admin bearer token"));
                    None
                }
                None => {
                    self.err(p.key("token_env"), format!("environment variable `{name}` is not set; valid: set it to the admin bearer token, or remove `token_env`"));
                    None
                }
            },
        };
        Some(AdminConfig {
            listen,
            token_env: raw.token_env,
            token,
        })
    }

    fn log(&mut self, v: Option<Value>) -> Option<LogConfig> {
        let p = KeyPath::root().key("log");
        let raw: RawLog = match v {
            Some(v) => de_unit(v, &p, &mut self.issues)?,
            None => RawLog::default(),
        };
        let format = match raw.format.as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                self.err(
                    p.key("format"),
                    format!("unknown log format {other:?}; valid: one of json, text"),
                );
                LogFormat::Json
            }
        };
        let level = raw.level.unwrap_or_else(|| "info".to_string());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
            self.err(p.key("level"), format!("bad log level {level:?} ({e}); valid: trace, debug, info, warn, error, or a filter like \"info,cutover=debug\""));
        }
        Some(LogConfig {
            format,
            level,
            access_log: raw.access_log.unwrap_or(true),
        })
    }

    fn tracing(&mut self, v: Value) -> Option<TracingConfig> {
        let p = KeyPath::root().key("tracing");
        let raw: RawTracing = de_unit(v, &p, &mut self.issues)?;
        if let Some(e) = &raw.otlp_endpoint {
            self.url(e, p.key("otlp_endpoint"));
        }
        let sample_ratio = self
            .ranged(
                raw.sample_ratio,
                p.key("sample_ratio"),
                |x| (0.0..=1.0).contains(&x),
                "0.0 to 1.0",
            )
            .unwrap_or(1.0);
        let otlp_ca_file = raw.otlp_ca_file.as_deref().map(|f| self.file_path(f));
        let otlp_ca_pem = otlp_ca_file.as_deref().and_then(|f| {
            self.pem_certificates(f, p.key("otlp_ca_file"), "a PEM file of CA certificates")
        });
        Some(TracingConfig {
            otlp_endpoint: raw.otlp_endpoint,
            sample_ratio,
            otlp_ca_file,
            otlp_ca_pem,
        })
    }

    fn cache(&mut self, v: Option<Value>) -> Option<CacheConfig> {
        let p = KeyPath::root().key("cache");
        let raw: RawCache = match v {
            Some(v) => de_unit(v, &p, &mut self.issues)?,
            None => RawCache::default(),
        };
        let max_size = self.size(raw.max_size, p.key("max_size"), 256 << 20);
        let max_entry_size = self.size(raw.max_entry_size, p.key("max_entry_size"), 4 << 20);
        if max_entry_size > max_size {
            self.err(p.key("max_entry_size"), format!("max_entry_size ({max_entry_size} bytes) is larger than max_size ({max_size} bytes); valid: at most max_size"));
        }
        let lock_timeout = self.duration(
            raw.lock_timeout,
            p.key("lock_timeout"),
            Duration::from_secs(5),
        );
        Some(CacheConfig {
            max_size,
            max_entry_size,
            shared: raw.shared.unwrap_or(false),
            lock_timeout,
        })
    }

    fn cluster(&mut self, v: Value) -> Option<ClusterConfig> {
        let p = KeyPath::root().key("cluster");
        let raw: RawCluster = de_unit(v, &p, &mut self.issues)?;
        let redis = match raw.redis {
            Some(url) => self.redis_url(&url, p.key("redis")),
            None => {
                self.err(
                    p.clone(),
                    "missing required key `redis`; valid: a URL like \"redis://127.0.0.1:6379/0\" or \"rediss://...\" for TLS",
                );
                None
            }
        };
        let name = raw.name.unwrap_or_else(|| "cutover".to_string());
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            self.err(
                p.key("name"),
                format!("bad fleet name {name:?}; valid: 1 to 64 of A-Z a-z 0-9 . _ - (every Redis key starts with it)"),
            );
        }
        let replica = raw.replica.unwrap_or_else(default_replica);
        if replica.is_empty()
            || replica.len() > 128
            || !replica.bytes().all(|b| b.is_ascii_graphic())
        {
            self.err(
                p.key("replica"),
                format!("bad replica name {replica:?}; valid: 1 to 128 visible ASCII characters, no spaces, unique in the fleet (e.g. \"${{HOSTNAME}}\")"),
            );
        }
        let sync_interval = self.positive_duration(
            raw.sync_interval,
            p.key("sync_interval"),
            Duration::from_secs(1),
        );
        if sync_interval < Duration::from_millis(10) {
            self.err(
                p.key("sync_interval"),
                format!("{sync_interval:?} is too short; valid: at least \"10ms\" (each sync is a few Redis round trips)"),
            );
        }
        let lease = self.positive_duration(raw.lease, p.key("lease"), Duration::from_secs(5));
        if lease < sync_interval * 2 {
            self.err(
                p.key("lease"),
                format!("lease {lease:?} is shorter than twice sync_interval ({sync_interval:?}): the leader renews once per sync_interval and would lose the lease to one slow round; valid: at least 2 × sync_interval, 3 × or more recommended"),
            );
        }
        Some(ClusterConfig {
            redis: redis?,
            name,
            replica,
            lease,
            sync_interval,
        })
    }

    /// `redis://` or `rediss://`, parsed by the Redis client itself. The
    /// messages never repeat the URL with its password.
    fn redis_url(&mut self, text: &str, path: KeyPath) -> Option<RedisUrl> {
        let Some(url) = RedisUrl::new(text) else {
            let scheme = text.split_once("://").map_or("", |(s, _)| s);
            self.err(
                path,
                format!("unsupported Redis URL scheme {scheme:?}; valid: redis://[:PASSWORD@]HOST[:PORT][/DB] or rediss://... for TLS"),
            );
            return None;
        };
        match redis::IntoConnectionInfo::into_connection_info(url.expose()) {
            Ok(_) => Some(url),
            Err(e) => {
                // The client's message may quote the URL: name only its kind.
                let kind = format!("{:?}", e.kind());
                self.err(
                    path,
                    format!("malformed Redis URL {} ({kind}); valid: redis://[:PASSWORD@]HOST[:PORT][/DB] or rediss://... (a password with reserved characters must be percent-encoded)", url.redacted()),
                );
                None
            }
        }
    }

    fn state(&mut self, v: Option<Value>) -> StateConfig {
        let p = KeyPath::root().key("state");
        let raw: RawState = match v {
            Some(v) => de_unit(v, &p, &mut self.issues).unwrap_or_default(),
            None => RawState::default(),
        };
        let dir = raw.dir.unwrap_or_else(|| ".cutover".to_string());
        if dir.is_empty() {
            self.err(p.key("dir"), "empty state directory; valid: a directory path (relative paths start at the config file's directory)");
        }
        StateConfig {
            dir: self.file_path(&dir),
        }
    }

    fn upstream(&mut self, v: Value, p: KeyPath) -> Option<UpstreamConfig> {
        let raw: RawUpstream = de_unit(v, &p, &mut self.issues)?;
        if raw.name.is_empty() {
            self.err(p.key("name"), "empty name; valid: a non-empty unique name");
        }
        let url = self.url(&raw.url, p.key("url"));
        let connect_timeout = self.positive_duration(
            raw.connect_timeout,
            p.key("connect_timeout"),
            Duration::from_secs(2),
        );
        let header_timeout = self.positive_duration(
            raw.header_timeout,
            p.key("header_timeout"),
            Duration::from_secs(60),
        );
        let idle_timeout = self.positive_duration(
            raw.idle_timeout,
            p.key("idle_timeout"),
            Duration::from_secs(30),
        );
        let pool_idle_timeout = self.positive_duration(
            raw.pool_idle_timeout,
            p.key("pool_idle_timeout"),
            Duration::from_secs(4),
        );
        let max_in_flight = self.at_least_one(raw.max_in_flight, p.key("max_in_flight"), 512);
        let max_in_flight = self.usize_of(max_in_flight, p.key("max_in_flight"));
        let failure_statuses = match raw.failure_statuses {
            None => [429, 500, 502, 503, 504]
                .into_iter()
                .filter_map(|s| StatusCode::from_u16(s).ok())
                .collect(),
            Some(list) => list
                .into_iter()
                .enumerate()
                .filter_map(|(i, s)| self.status(s, p.key("failure_statuses").index(i)))
                .collect(),
        };
        let set_headers = self.headers(raw.set_headers, &p.key("set_headers"));
        let remove_headers = raw
            .remove_headers
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, h)| self.header_name(h, p.key("remove_headers").index(i)))
            .collect();
        let breaker = self.breaker(raw.breaker.unwrap_or_default(), &p.key("breaker"));
        Some(UpstreamConfig {
            name: raw.name,
            url: url?,
            connect_timeout,
            header_timeout,
            idle_timeout,
            pool_idle_timeout,
            retry_reused: raw.retry_reused.unwrap_or(true),
            max_in_flight,
            failure_statuses,
            set_headers,
            remove_headers,
            breaker,
        })
    }

    fn status(&mut self, s: i64, path: KeyPath) -> Option<StatusCode> {
        let code = u16::try_from(s).ok().filter(|c| (100..=599).contains(c));
        match code.and_then(|c| StatusCode::from_u16(c).ok()) {
            Some(c) => Some(c),
            None => {
                self.err(
                    path,
                    format!("{s} is not an HTTP status; valid: 100 to 599"),
                );
                None
            }
        }
    }

    fn breaker(&mut self, raw: RawBreaker, p: &KeyPath) -> BreakerConfig {
        let d = BreakerConfig::default();
        let consecutive_failures = match raw.consecutive_failures {
            Some(0) => {
                self.err(p.key("consecutive_failures"), "must be at least 1");
                d.consecutive_failures
            }
            Some(n) => n,
            None => d.consecutive_failures,
        };
        let failure_rate = self
            .ranged(
                raw.failure_rate,
                p.key("failure_rate"),
                |x| x > 0.0 && x <= 1.0,
                "more than 0.0, at most 1.0",
            )
            .unwrap_or(d.failure_rate);
        let half_open_probes = match raw.half_open_probes {
            Some(0) => {
                self.err(p.key("half_open_probes"), "must be at least 1");
                d.half_open_probes
            }
            Some(n) => n,
            None => d.half_open_probes,
        };
        BreakerConfig {
            consecutive_failures,
            failure_rate,
            min_requests: raw.min_requests.unwrap_or(d.min_requests),
            window: self.positive_duration(raw.window, p.key("window"), d.window),
            open_for: self.positive_duration(raw.open_for, p.key("open_for"), d.open_for),
            half_open_probes,
        }
    }

    // ---- routes -------------------------------------------------------

    fn route(&mut self, v: Value, p: KeyPath, upstreams: &[String]) -> Option<RouteConfig> {
        let raw: RawRoute = de_unit(v, &p, &mut self.issues)?;
        if raw.name.is_empty() {
            self.err(p.key("name"), "empty name; valid: a non-empty unique name");
        }
        let matcher = self.matcher(raw.matcher, &p.key("match"));
        let sticky = raw
            .sticky
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.sticky(s, p.key("sticky").index(i)))
            .collect();
        let pin_header = raw
            .pin_header
            .and_then(|h| self.header_name(&h, p.key("pin_header")));
        let pin_token = raw
            .pin_token_env
            .as_deref()
            .and_then(|name| self.token_env(name, p.key("pin_token_env"), "the pin token"));
        if raw.pin_token_env.is_some() && pin_header.is_none() {
            self.err(
                p.key("pin_token_env"),
                "pin_token_env without pin_header guards nothing; valid: set `pin_header` too, or remove `pin_token_env`",
            );
        }

        let versions_v = self.entries(raw.versions, &p.key("versions"));
        if versions_v.is_empty() {
            self.err(p.clone(), "route has no versions; valid: at least one [[routes.versions]] with name, upstream and weight");
        }
        let version_names = self.unique_names(&versions_v, &p.key("versions"), "version");
        let single = versions_v.len() == 1;
        let mut versions = Vec::new();
        let mut weights_ok = true;
        for (j, v) in versions_v.into_iter().enumerate() {
            match self.version(v, p.key("versions").index(j), upstreams, single) {
                Some(ver) => versions.push(ver),
                None => weights_ok = false,
            }
        }
        if weights_ok && !versions.is_empty() {
            let sum: u32 = versions.iter().map(|v| u32::from(v.weight.get())).sum();
            if sum != 10_000 {
                let list: Vec<String> = versions
                    .iter()
                    .map(|v| format!("{} {}", v.target.name, v.weight))
                    .collect();
                self.err(
                    p.key("versions"),
                    format!("version weights sum to {}.{:02} ({}); valid: weights that sum to exactly 100", sum / 100, sum % 100, list.join(" + ")),
                );
            }
        }

        let shadows_v = self.entries(raw.shadows, &p.key("shadows"));
        self.unique_names(&shadows_v, &p.key("shadows"), "shadow");
        let shadows = shadows_v
            .into_iter()
            .enumerate()
            .filter_map(|(j, v)| self.shadow(v, p.key("shadows").index(j), upstreams))
            .collect();

        let fallbacks = self.fallbacks(
            raw.fallbacks,
            &p.key("fallbacks"),
            &version_names,
            upstreams,
        );

        let cache = raw.cache.and_then(|v| self.route_cache(v, p.key("cache")));
        let refusal = match raw.refusal {
            Some(v) => self.refusal(v, p.key("refusal")),
            None => RefusalConfig::default(),
        };
        let rollout = raw
            .rollout
            .and_then(|v| self.rollout(v, p.key("rollout"), &version_names));
        let session_header = raw
            .session_header
            .and_then(|h| self.header_name(&h, p.key("session_header")));
        if let (Some(session), Some(pin)) = (&session_header, &pin_header)
            && session == pin
        {
            self.err(
                p.key("session_header"),
                format!("`{session}` is also the pin_header; valid: a header of its own, like \"mcp-session-id\""),
            );
        }

        Some(RouteConfig {
            salt: raw.salt.unwrap_or_else(|| raw.name.clone()),
            name: raw.name,
            matcher,
            sticky,
            pin_header,
            pin_token_env: raw.pin_token_env,
            pin_token,
            versions,
            shadows,
            fallbacks,
            cache,
            refusal,
            rollout,
            session_header,
        })
    }

    /// An array whose entries must all be tables.
    fn entries(&mut self, v: Option<Vec<Value>>, p: &KeyPath) -> Vec<Value> {
        v.unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| {
                if item.is_table() {
                    Some(item)
                } else {
                    self.err(
                        p.index(i),
                        format!("expected a table, found {}", describe(&item)),
                    );
                    None
                }
            })
            .collect()
    }

    fn matcher(&mut self, v: Option<Value>, p: &KeyPath) -> RouteMatch {
        let raw: RawMatch = match v {
            Some(v) => de_unit(v, p, &mut self.issues).unwrap_or_default(),
            None => RawMatch::default(),
        };
        let path_prefix = raw.path_prefix.unwrap_or_else(|| "/".to_string());
        if !path_prefix.starts_with('/') {
            self.err(p.key("path_prefix"), format!("bad path prefix {path_prefix:?}; valid: a path starting with `/`, like \"/v1/\""));
        }
        let methods = raw
            .methods
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let upper = m.to_ascii_uppercase();
                match Method::from_bytes(upper.as_bytes()) {
                    Ok(m) if !upper.is_empty() => Some(m),
                    _ => {
                        self.err(p.key("methods").index(i), format!("invalid HTTP method {m:?}; valid: a method like GET, POST, PUT, DELETE"));
                        None
                    }
                }
            })
            .collect();
        let host = raw.host.map(|h| h.to_ascii_lowercase());
        if host
            .as_deref()
            .is_some_and(|h| h.is_empty() || h.contains(['/', ' ']))
        {
            self.err(
                p.key("host"),
                "bad host; valid: a host name like \"api.example.com\"",
            );
        }
        let mut headers = Vec::new();
        for (k, v) in raw.headers.unwrap_or_default() {
            let hp = p.key("headers").key(&k);
            let name = self.header_name(&k, hp.clone());
            match (name, v.as_str()) {
                (Some(n), Some(s)) => headers.push((n, s.to_string())),
                (_, None) => self.err(hp, format!("expected a string, found {}", describe(&v))),
                _ => {}
            }
        }
        RouteMatch {
            path_prefix,
            methods,
            host,
            headers,
        }
    }

    fn sticky(&mut self, s: &str, path: KeyPath) -> Option<StickySource> {
        const VALID: &str = "valid: header:NAME, cookie:NAME, query:NAME or client_ip";
        if s == "client_ip" {
            return Some(StickySource::ClientIp);
        }
        let source = match s.split_once(':') {
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                .ok()
                .map(StickySource::Header),
            Some(("cookie", name)) if !name.is_empty() => {
                Some(StickySource::Cookie(name.to_string()))
            }
            Some(("query", name)) if !name.is_empty() => {
                Some(StickySource::Query(name.to_string()))
            }
            _ => None,
        };
        if source.is_none() {
            self.err(path, format!("bad sticky source {s:?}; {VALID}"));
        }
        source
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the shared fields of versions, shadows and fallbacks"
    )]
    fn target(
        &mut self,
        p: &KeyPath,
        name: String,
        upstream: String,
        upstreams: &[String],
        set_headers: Option<Table>,
        set_json: Option<Table>,
        cost: Option<RawCost>,
        deps: Option<Table>,
    ) -> TargetConfig {
        if name.is_empty() {
            self.err(p.key("name"), "empty name; valid: a non-empty name");
        }
        if !upstreams.contains(&upstream) {
            let names: Vec<&str> = upstreams.iter().map(String::as_str).collect();
            self.err(
                p.key("upstream"),
                format!("unknown upstream `{upstream}`; {}", one_of(&names)),
            );
        }
        let set_headers = self.headers(set_headers, &p.key("set_headers"));
        let set_json = self.json_map(set_json, &p.key("set_json"));
        let raw_cost = cost.unwrap_or_default();
        let nonneg = |x: f64| x >= 0.0;
        let cost = Cost {
            input_per_mtok: self
                .ranged(
                    raw_cost.input_per_mtok,
                    p.key("cost").key("input_per_mtok"),
                    nonneg,
                    "0 or more (USD per million tokens)",
                )
                .unwrap_or(0.0),
            output_per_mtok: self
                .ranged(
                    raw_cost.output_per_mtok,
                    p.key("cost").key("output_per_mtok"),
                    nonneg,
                    "0 or more (USD per million tokens)",
                )
                .unwrap_or(0.0),
        };
        let deps = self.json_map(deps, &p.key("deps"));
        TargetConfig {
            name,
            upstream,
            set_headers,
            set_json,
            cost,
            deps,
        }
    }

    fn version(
        &mut self,
        v: Value,
        p: KeyPath,
        upstreams: &[String],
        single: bool,
    ) -> Option<VersionConfig> {
        let raw: RawVersion = de_unit(v, &p, &mut self.issues)?;
        let weight = match raw.weight {
            None if single => Some(WeightBps::FULL),
            None => {
                self.err(p.clone(), "missing required key `weight`; valid: a percent with at most two decimals (a route's weights sum to 100)");
                None
            }
            Some(w) => self.percent(w, p.key("weight"), "weight"),
        };
        let target = self.target(
            &p,
            raw.name,
            raw.upstream,
            upstreams,
            raw.set_headers,
            raw.set_json,
            raw.cost,
            raw.deps,
        );
        Some(VersionConfig {
            target,
            weight: weight?,
        })
    }

    /// A percent with at most two decimals, as basis points.
    fn percent(&mut self, x: f64, path: KeyPath, what: &str) -> Option<WeightBps> {
        match WeightBps::from_percent(x) {
            Some(w) => Some(w),
            None if x.is_finite() && (0.0..=100.0).contains(&x) => {
                self.err(
                    path,
                    format!("{what} {x} has more than two decimals; valid: a percent like 12.25"),
                );
                None
            }
            None => {
                self.err(path, format!("{what} {x} is out of range; valid: a percent from 0 to 100 with at most two decimals"));
                None
            }
        }
    }

    fn shadow(&mut self, v: Value, p: KeyPath, upstreams: &[String]) -> Option<ShadowConfig> {
        let raw: RawShadow = de_unit(v, &p, &mut self.issues)?;
        let percent = match raw.percent {
            None => Some(WeightBps::FULL),
            Some(x) => self.percent(x, p.key("percent"), "percent"),
        };
        let max_in_flight = match raw.max_in_flight {
            None => None,
            Some(n) => {
                let n = self.at_least_one(Some(n), p.key("max_in_flight"), 64);
                Some(self.usize_of(n, p.key("max_in_flight")))
            }
        };
        let timeout =
            self.positive_duration(raw.timeout, p.key("timeout"), Duration::from_secs(60));
        let compare = raw.compare.unwrap_or_default();
        for (i, ptr) in compare.iter().enumerate() {
            if !(ptr.is_empty() || ptr.starts_with('/')) {
                self.err(p.key("compare").index(i), format!("bad JSON pointer {ptr:?}; valid: \"\" (the whole body) or a pointer starting with `/`, like \"/choices/0/message/content\""));
            }
        }
        let target = self.target(
            &p,
            raw.name,
            raw.upstream,
            upstreams,
            raw.set_headers,
            raw.set_json,
            raw.cost,
            raw.deps,
        );
        Some(ShadowConfig {
            target,
            percent: percent?,
            max_in_flight,
            timeout,
            compare,
        })
    }

    fn fallbacks(
        &mut self,
        v: Option<Vec<Value>>,
        p: &KeyPath,
        versions: &[String],
        upstreams: &[String],
    ) -> Vec<FallbackConfig> {
        let mut out = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (k, item) in v.unwrap_or_default().into_iter().enumerate() {
            let ip = p.index(k);
            let (name, name_path) = match &item {
                Value::String(s) => (s.clone(), ip.clone()),
                Value::Table(_) => match table_name(&item) {
                    Some(n) => (n.to_string(), ip.key("name")),
                    None => (String::new(), ip.clone()),
                },
                _ => (String::new(), ip.clone()),
            };
            if !name.is_empty() {
                if let Some(first) = seen.get(&name) {
                    self.err(name_path.clone(), format!("duplicate fallback name `{name}` (first at {}); valid: each fallback once", p.index(*first)));
                } else {
                    seen.insert(name.clone(), k);
                }
            }
            match item {
                Value::String(s) => {
                    if versions.contains(&s) {
                        out.push(FallbackConfig::Version(s));
                    } else {
                        let names: Vec<&str> = versions.iter().map(String::as_str).collect();
                        self.err(
                            ip,
                            format!("unknown fallback name `{s}`; valid: a version of this route ({}), or a table {{ name, upstream, ... }}", names.join(", ")),
                        );
                    }
                }
                Value::Table(_) => {
                    if let Some(raw) = de_unit::<RawFallback>(item, &ip, &mut self.issues) {
                        let t = self.target(&ip, raw.name, raw.upstream, upstreams, raw.set_headers, raw.set_json, raw.cost, raw.deps);
                        out.push(FallbackConfig::Target(t));
                    }
                }
                other => self.err(ip, format!("expected a version name or a table, found {}; valid: \"v1\" or {{ name = \"small\", upstream = \"openai\" }}", describe(&other))),
            }
        }
        out
    }

    fn route_cache(&mut self, v: Value, p: KeyPath) -> Option<RouteCacheConfig> {
        let raw: RawRouteCache = de_unit(v, &p, &mut self.issues)?;
        let ttl = match raw.ttl {
            Some(t) => self.positive_duration(Some(t), p.key("ttl"), Duration::from_secs(600)),
            None => {
                self.err(
                    p.clone(),
                    "missing required key `ttl`; valid: a duration like \"10m\"",
                );
                Duration::from_secs(600)
            }
        };
        let vary = match raw.vary {
            None => vec![http::header::AUTHORIZATION],
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, h)| self.header_name(h, p.key("vary").index(i)))
                .collect(),
        };
        Some(RouteCacheConfig {
            ttl,
            vary,
            deterministic_only: raw.deterministic_only.unwrap_or(false),
        })
    }

    fn refusal(&mut self, v: Value, p: KeyPath) -> RefusalConfig {
        let d = RefusalConfig::default();
        let Some(raw) = de_unit::<RawRefusal>(v, &p, &mut self.issues) else {
            return d;
        };
        let status = match raw.status {
            Some(s) => self.status(s, p.key("status")).unwrap_or(d.status),
            None => d.status,
        };
        let retry_after = match raw.retry_after {
            Some(v) => self.opt_duration(Some(v), p.key("retry_after")),
            None => d.retry_after,
        };
        let message = raw.message.unwrap_or(d.message);
        let format = match raw.format.as_deref() {
            None | Some("openai-error") => RefusalFormat::OpenAiError,
            Some("openai-chat") => RefusalFormat::OpenAiChat,
            Some("openai-responses") => RefusalFormat::OpenAiResponses,
            Some("anthropic-messages") => RefusalFormat::AnthropicMessages,
            Some("auto") => RefusalFormat::Auto,
            Some("raw") => {
                let content_type = raw
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "text/plain; charset=utf-8".to_string());
                if HeaderValue::from_str(&content_type).is_err() {
                    self.err(p.key("content_type"), "invalid content type; valid: a header value like \"text/plain; charset=utf-8\"");
                }
                RefusalFormat::Raw {
                    body: raw.body.clone().unwrap_or_else(|| message.clone()),
                    content_type,
                }
            }
            Some(other) => {
                self.err(p.key("format"), format!("unknown refusal format {other:?}; valid: one of openai-error, openai-chat, raw, openai-responses, anthropic-messages, auto"));
                RefusalFormat::OpenAiError
            }
        };
        if !matches!(format, RefusalFormat::Raw { .. }) {
            for (key, present) in [
                ("body", raw.body.is_some()),
                ("content_type", raw.content_type.is_some()),
            ] {
                if present {
                    self.issues.push(Issue::at_key(
                        p.key(key),
                        format!("`{key}` is only used with format = \"raw\"; valid: remove it, or set format = \"raw\""),
                    ));
                }
            }
        }
        RefusalConfig {
            status,
            retry_after,
            format,
            message,
        }
    }

    fn rollout(&mut self, v: Value, p: KeyPath, versions: &[String]) -> Option<RolloutConfig> {
        let raw: RawRollout = de_unit(v, &p, &mut self.issues)?;
        let names: Vec<&str> = versions.iter().map(String::as_str).collect();
        let role = |this: &mut Self, v: Option<String>, key: &str| -> Option<String> {
            match v {
                None => {
                    this.err(p.clone(), format!("missing required key `{key}`; valid: the name of a version of this route ({})", names.join(", ")));
                    None
                }
                Some(n) if !versions.contains(&n) => {
                    this.err(
                        p.key(key),
                        format!("`{n}` is not a version of this route; {}", one_of(&names)),
                    );
                    None
                }
                Some(n) => Some(n),
            }
        };
        let baseline = role(self, raw.baseline, "baseline");
        let canary = role(self, raw.canary, "canary");
        if let (Some(b), Some(c)) = (&baseline, &canary) {
            if b == c {
                self.err(
                    p.key("canary"),
                    format!("canary is the baseline `{b}`; valid: another version of this route"),
                );
            } else if versions.len() != 2 {
                self.err(
                    p.clone(),
                    format!(
                        "a route with a rollout must have exactly two versions, baseline `{b}` and canary `{c}`; found {}: {}",
                        versions.len(),
                        names.join(", ")
                    ),
                );
            }
        }
        let steps_p = p.key("steps");
        let steps: Vec<WeightBps> = match raw.steps {
            None => DEFAULT_STEPS
                .iter()
                .filter_map(|&b| WeightBps::new(b))
                .collect(),
            Some(list) => {
                let mut out = Vec::new();
                let mut prev: Option<WeightBps> = None;
                let mut all_ok = true;
                for (i, x) in list.iter().enumerate() {
                    match self.percent(*x, steps_p.index(i), "step") {
                        Some(w) => {
                            if let Some(pw) = prev.filter(|pw| w <= *pw) {
                                self.err(steps_p.index(i), format!("step {w}% is not above the step before it ({pw}%); valid: strictly increasing percents ending at 100"));
                            }
                            prev = Some(w);
                            out.push(w);
                        }
                        None => all_ok = false,
                    }
                }
                if list.is_empty() {
                    self.err(steps_p.clone(), "no steps; valid: strictly increasing percents ending at 100, like [1, 5, 25, 100]");
                } else if all_ok && out.last() != Some(&WeightBps::FULL) {
                    let last = list.len() - 1;
                    self.err(steps_p.index(last), "the last step must be 100; valid: strictly increasing percents ending at 100");
                }
                out
            }
        };
        let interval =
            self.positive_duration(raw.interval, p.key("interval"), Duration::from_secs(600));
        let shadow_first = raw.shadow_first.map(|sf| ShadowFirstConfig {
            min_duration: self.duration(
                sf.min_duration,
                p.key("shadow_first").key("min_duration"),
                Duration::from_secs(1800),
            ),
            min_requests: sf.min_requests.unwrap_or(500),
        });
        let gates = self.gates(raw.gates.unwrap_or_default(), &p.key("gates"));
        let rollback = raw.rollback.map(|rb| self.rollback(rb, &p.key("rollback")));
        Some(RolloutConfig {
            baseline: baseline?,
            canary: canary?,
            shadow_first,
            steps,
            interval,
            min_requests: raw.min_requests.unwrap_or(200),
            gates,
            rollback,
        })
    }

    fn gates(&mut self, raw: RawGates, p: &KeyPath) -> GatesConfig {
        let unit = |x: f64| (0.0..=1.0).contains(&x);
        GatesConfig {
            error_rate_margin: self.ranged(
                raw.error_rate_margin,
                p.key("error_rate_margin"),
                unit,
                "0.0 to 1.0",
            ),
            max_error_rate: self.ranged(
                raw.max_error_rate,
                p.key("max_error_rate"),
                unit,
                "0.0 to 1.0",
            ),
            latency_p95_ratio: self.ranged(
                raw.latency_p95_ratio,
                p.key("latency_p95_ratio"),
                |x| x > 0.0,
                "more than 0, like 1.25",
            ),
            max_latency_p95: self.opt_duration(raw.max_latency_p95, p.key("max_latency_p95")),
            max_cost_per_request: self.ranged(
                raw.max_cost_per_request,
                p.key("max_cost_per_request"),
                |x| x >= 0.0,
                "0 or more (USD)",
            ),
            outcome_margin: self.ranged(
                raw.outcome_margin,
                p.key("outcome_margin"),
                unit,
                "0.0 to 1.0",
            ),
            confidence: self
                .ranged(
                    raw.confidence,
                    p.key("confidence"),
                    |x| x > 0.5 && x < 1.0,
                    "more than 0.5 and less than 1, like 0.95",
                )
                .unwrap_or(0.95),
        }
    }

    fn rollback(&mut self, raw: RawRollback, p: &KeyPath) -> RollbackConfig {
        if let Some(w) = &raw.webhook {
            self.url(w, p.key("webhook"));
        }
        RollbackConfig {
            window: self.positive_duration(raw.window, p.key("window"), Duration::from_secs(60)),
            min_requests: raw.min_requests.unwrap_or(20),
            error_rate: self.ranged(
                raw.error_rate,
                p.key("error_rate"),
                |x| x > 0.0 && x <= 1.0,
                "more than 0.0, at most 1.0",
            ),
            latency_p99: self.opt_duration(raw.latency_p99, p.key("latency_p99")),
            on_breaker_open: raw.on_breaker_open.unwrap_or(true),
            webhook: raw.webhook,
        }
    }
}

/// Split an `http(s)://host[:port][/path]` URL. No user info, query or
/// fragment: credentials go in `set_headers`, and a query would be
/// ambiguous when request paths are appended.
pub fn parse_url(text: &str) -> Result<UpstreamUrl, String> {
    let (scheme, rest) = text.split_once("://").ok_or("no scheme")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(format!("scheme `{other}` is not supported")),
    };
    if rest.contains('?') || rest.contains('#') {
        return Err("a query or fragment is not allowed".into());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err("credentials in the URL are not supported (use set_headers)".into());
    }
    if authority.is_empty() {
        return Err("no host".into());
    }
    let authority =
        http::uri::Authority::from_str(authority).map_err(|e| format!("bad host or port ({e})"))?;
    let host = authority.host().to_string();
    if host.is_empty() {
        return Err("no host".into());
    }
    let port_text = authority.as_str().get(host.len()..).unwrap_or("");
    let port = match authority.port_u16() {
        Some(p) => p,
        None if !port_text.is_empty() => {
            return Err(format!(
                "bad port `{}`; valid: 1 to 65535",
                port_text.trim_start_matches(':')
            ));
        }
        None => match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        },
    };
    if !path.is_empty() {
        http::uri::PathAndQuery::from_str(path).map_err(|e| format!("bad path ({e})"))?;
    }
    Ok(UpstreamUrl {
        raw: text.to_string(),
        scheme,
        authority,
        host,
        port,
        path_prefix: path.trim_end_matches('/').to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:9001").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.path_prefix.as_str()),
            (Scheme::Http, "127.0.0.1", 9001, "")
        );
        let u = parse_url("https://api.openai.com/v1/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (u.scheme, u.port, u.path_prefix.as_str()),
            (Scheme::Https, 443, "/v1")
        );
        let u = parse_url("http://[::1]:8080/api").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((u.port, u.path_prefix.as_str()), (8080, "/api"));
        for bad in [
            "ftp://x",
            "http://",
            "http:///x",
            "http://x?y=1",
            "http://x#f",
            "http://u:p@x",
            "x",
            "http://x:99999",
            "http://x:",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
