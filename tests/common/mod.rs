//! Test fixtures: a proxy started in-process on 127.0.0.1:0 from config
//! text, mock backends named for their behaviour, and small clients.
#![allow(dead_code)]

pub mod handover;
pub mod redis_server;
pub mod tools;

#[allow(unused_imports)] // each test crate uses some of them
pub use handover::{dead_port, listener, port, traffic_and_admin, wait_ready};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover::gateway::Gateway;
use cutover::mock::{self, MockArgs, MockHandle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub gateway: Arc<Gateway>,
    pub config_path: PathBuf,
    /// The file watcher and SIGHUP handler, when started
    /// (`start_proxy_watching`, `Proxy::watch`). Dropped with the proxy.
    pub reloader: Option<cutover::reload::Reloader>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// Rewrite the config file and reload it.
    pub async fn reload_with(&self, toml: &str) -> u64 {
        std::fs::write(&self.config_path, toml).expect("write config");
        self.gateway.reload().await.expect("reload")
    }

    /// Start reloading on file changes and SIGHUP, as `cutover serve` does.
    /// Returns once the watch is in place.
    pub async fn watch(&mut self, options: cutover::reload::Options) {
        let reloader =
            cutover::reload::spawn_with(Arc::clone(&self.gateway), options, std::future::pending());
        reloader.ready().await;
        self.reloader = Some(reloader);
    }

    /// The running reloader's counters.
    pub fn reload_stats(&self) -> &cutover::reload::Stats {
        self.reloader.as_ref().expect("watching").stats()
    }

    /// Trigger graceful shutdown and wait for it.
    pub async fn shutdown(mut self) {
        self.reloader = None;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    pub fn begin_shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().expect("running")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Start a proxy from config text. Listen addresses in the text are
/// ignored: both listeners are bound on 127.0.0.1:0.
pub async fn start_proxy(toml: &str) -> Proxy {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("cutover.toml");
    std::fs::write(&config_path, toml).expect("write config");
    start_proxy_from(dir, config_path).await
}

/// `start_proxy`, then watch the config file (default reload options).
pub async fn start_proxy_watching(toml: &str) -> Proxy {
    let mut proxy = start_proxy(toml).await;
    proxy.watch(cutover::reload::Options::default()).await;
    proxy
}

/// Start a proxy from a config file already laid out in `dir` (e.g. a
/// symlink, as a Kubernetes ConfigMap mounts it). Listen addresses in the
/// file are ignored.
pub async fn start_proxy_from(dir: tempfile::TempDir, config_path: PathBuf) -> Proxy {
    let loaded =
        cutover::config::load(&config_path).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    let mut proxy = start_proxy_from_config(loaded.config, dir).await;
    // The path as the test laid it out (a symlink stays a symlink).
    proxy.config_path = config_path;
    proxy
}

/// A healthy mock that answers at once.
pub async fn healthy_backend(name: &str) -> MockHandle {
    mock::spawn(MockArgs {
        name: name.into(),
        ..MockArgs::new(loopback0())
    })
    .await
    .expect("mock")
}

pub async fn backend(args: MockArgs) -> MockHandle {
    mock::spawn(args).await.expect("mock")
}

pub fn loopback0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A plain HTTP client (HTTP/1.1, keep-alive).
/// A client that speaks HTTP/2 with prior knowledge (h2c).
pub fn h2c() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub fn client() -> reqwest::Client {
    // reqwest is built without a bundled crypto provider (we use ring).
    let _ = std::sync::Arc::unwrap_or_clone(cutover::crypto::provider()).install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

pub const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hello there"}]}"#;
pub const CHAT_STREAM: &str =
    r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hello there"}]}"#;

/// A two-version route config (v1 on `a`, v2 on `b`) with the given
/// weights and extra route-level keys.
pub fn two_versions(a: &str, b: &str, w1: f64, w2: f64, route_extra: &str) -> String {
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
name = "a"
url = "{a}"
[[upstreams]]
name = "b"
url = "{b}"
[[routes]]
name = "chat"
match = {{ path_prefix = "/v1/" }}
sticky = ["header:x-user-id"]
pin_header = "x-cutover-version"
{route_extra}
[[routes.versions]]
name = "v1"
upstream = "a"
weight = {w1:.2}
[[routes.versions]]
name = "v2"
upstream = "b"
weight = {w2:.2}
"#
    )
}

/// Poll `check` until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Send raw bytes on a fresh connection and read what comes back until the
/// server closes or `wait` passes.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One-version route on `url` with extra `[server]` keys.
pub fn one_version(url: &str, server_extra: &str, route_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"
{server_extra}
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
[[upstreams]]
name = "a"
url = "{url}"
[[routes]]
name = "chat"
{route_extra}
[[routes.versions]]
name = "v1"
upstream = "a"
weight = 100.0
"#
    )
}

/// A port for an outside tool that binds its own (redis-server,
/// prometheus), which cannot take a handed-over socket the way cutover
/// does ([`handover`]). Everything else binds port 0 and keeps the socket.
///
/// Taken below Linux's ephemeral range (32768-60999), not from port 0:
/// a port the kernel hands out for `:0` is also the next candidate for an
/// outgoing connection's source port, so between this call and the tool's
/// bind another test's client could take it (seen in CI as "Address
/// already in use"). Each test process walks its own window of the range,
/// seeded by its pid, and never returns a port twice.
pub fn tool_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(2_654_435_761)) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-31999");
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as
/// PEM files into `dir`: (cert path, key path, cert DER).
pub fn test_certificate(dir: &std::path::Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("certificate");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    (cert, key, ck.cert.der().to_vec())
}

/// `toml` with its `[server]` and `[admin]` listeners (both
/// `127.0.0.1:0` in the test configs) moved to `port` and `admin`: the
/// ports of [`traffic_and_admin`]'s sockets, handed to the binary.
pub fn on_ports(toml: &str, port: u16, admin: u16) -> String {
    toml.replace(
        "listen = \"127.0.0.1:0\"\n[admin]",
        &format!("listen = \"127.0.0.1:{port}\"\n[admin]"),
    )
    .replace(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        &format!("[admin]\nlisten = \"127.0.0.1:{admin}\""),
    )
}

/// The real binary, killed on drop.
pub struct Binary {
    pub child: std::process::Child,
}

impl Binary {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Binary {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"));
        cmd.args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Binary {
            child: cmd.spawn().expect("spawn cutover"),
        }
    }

    /// [`Binary::spawn`] with `sockets` handed over (see
    /// [`handover`]); they are closed here once the child holds them.
    pub fn spawn_with(
        args: &[&str],
        env: &[(&str, &str)],
        sockets: Vec<std::net::TcpListener>,
    ) -> Binary {
        let refs: Vec<&std::net::TcpListener> = sockets.iter().collect();
        let mut cmd = handover::cutover_command(&refs);
        cmd.args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn cutover");
        drop(sockets);
        Binary { child }
    }

    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Wait for exit up to `timeout`; `None` if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until something accepts connections on `addr`.
pub async fn wait_listening(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// `eventually` for async checks.
pub async fn eventually_async<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of one Prometheus sample: `name` with exactly these labels
/// (order-insensitive), from `/metrics` text.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let found: Vec<(&str, &str)> = if rest.is_empty() {
                Vec::new()
            } else {
                rest.split("\",")
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once("=\"")?;
                        Some((k, v.trim_end_matches('"')))
                    })
                    .collect()
            };
            let matches = found.len() == labels.len() && labels.iter().all(|l| found.contains(l));
            matches.then(|| value.parse().ok()).flatten()
        })
}

pub async fn scrape(proxy: &Proxy) -> String {
    scrape_admin(&proxy.admin_url()).await
}

/// `GET /metrics` of the admin API at `admin` (`http://host:port`).
pub async fn scrape_admin(admin: &str) -> String {
    client()
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// Start a proxy from config text with a fake environment for `${VAR}` and
/// `admin.token_env` (tests cannot set real env vars safely: other threads
/// read them). Reloads read the real environment, so a config that needs
/// the fake one cannot be reloaded.
pub async fn start_proxy_with_env(toml: &str, env: &[(&str, &str)]) -> Proxy {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("cutover.toml");
    std::fs::write(&config_path, toml).expect("write config");
    let lookup = |name: &str| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_string())
    };
    let loaded = cutover::config::load_str(toml, &config_path, &lookup)
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    start_proxy_from_config(loaded.config, dir).await
}

/// Start a proxy from an already-loaded config whose `source` lives in
/// `dir` (kept alive as long as the proxy). Listen addresses in the config
/// are ignored: both listeners are bound on 127.0.0.1:0.
pub async fn start_proxy_from_config(
    config: cutover::config::Config,
    dir: tempfile::TempDir,
) -> Proxy {
    let config_path = config.source.clone();
    let traffic = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = traffic.local_addr().expect("addr");
    let admin_addr = admin.local_addr().expect("addr");
    let gateway = Gateway::new(config).expect("gateway");
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(cutover::server::run(
        Arc::clone(&gateway),
        traffic,
        admin,
        async move {
            let _ = stop_rx.await;
        },
    ));
    Proxy {
        addr,
        admin: admin_addr,
        gateway,
        config_path,
        stop: Some(stop_tx),
        task: Some(task),
        reloader: None,
        _dir: dir,
    }
}

/// Run the real binary to completion (off the async runtime's threads):
/// (exit code, stdout, stderr).
pub async fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"));
        cmd.args(&args).env_remove("CUTOVER_ADMIN_TOKEN");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run cutover");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}
/// Wait until one Prometheus sample reaches `want` (metrics are recorded
/// when a request's stream ends, which can be just after the client read
/// its last byte); panics with the last value and the whole scrape if not.
pub async fn wait_metric(proxy: &Proxy, name: &str, labels: &[(&str, &str)], want: f64) {
    let reached = eventually_async(Duration::from_secs(3), || async {
        metric(&scrape(proxy).await, name, labels) == Some(want)
    })
    .await;
    if !reached {
        let text = scrape(proxy).await;
        panic!(
            "{name}{labels:?} = {:?}, want {want}\n{text}",
            metric(&text, name, labels)
        );
    }
}
pub mod python;
