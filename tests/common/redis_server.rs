//! A real `redis-server` on a free loopback port, for the fleet tests:
//! no persistence (`--save '' --appendonly no`), killed on drop. It can be
//! stopped and started again on the same port (an outage).
//!
//! Without `redis-server` on PATH the tests skip, loudly; under `CI=true`
//! they fail (`.ci/run` installs Debian's `redis-server`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    binary: PathBuf,
    pub port: u16,
    child: Option<Child>,
    /// Extra arguments (TLS, a password).
    extra: Vec<String>,
}

/// `redis-server` on PATH; `None` (skip) outside CI, a panic in CI.
pub fn redis_server_binary(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("redis-server"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "{test}: redis-server is not on PATH; CI must install it (apt-get install redis-server, see .ci/run)"
            );
        }
        eprintln!(
            "SKIPPED {test}: redis-server is not on PATH (apt-get install redis-server); under CI=true this fails"
        );
    }
    found
}

impl RedisServer {
    /// Start one, or `None` when the test must skip (see the module doc).
    pub async fn start(test: &str) -> Option<RedisServer> {
        let binary = redis_server_binary(test)?;
        let mut server = RedisServer {
            binary,
            port: super::tool_port(),
            child: None,
            extra: Vec::new(),
        };
        server.spawn().await;
        Some(server)
    }

    /// TLS only (no plain port), with this certificate and key, clients
    /// not asked for certificates, and `requirepass`.
    pub async fn start_tls(
        test: &str,
        cert: &std::path::Path,
        key: &std::path::Path,
        password: &str,
    ) -> Option<RedisServer> {
        let binary = redis_server_binary(test)?;
        let port = super::tool_port();
        let mut server = RedisServer {
            binary,
            port,
            child: None,
            extra: [
                "--port".to_string(),
                "0".to_string(),
                "--tls-port".to_string(),
                port.to_string(),
                "--tls-cert-file".to_string(),
                cert.display().to_string(),
                "--tls-key-file".to_string(),
                key.display().to_string(),
                "--tls-auth-clients".to_string(),
                "no".to_string(),
                "--requirepass".to_string(),
                password.to_string(),
            ]
            .to_vec(),
        };
        server.spawn().await;
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Start (again) on the same port, and wait until it answers.
    pub async fn spawn(&mut self) {
        let plain = ["--port".to_string(), self.port.to_string()];
        let ports: &[String] = if self.extra.is_empty() {
            &plain
        } else {
            &self.extra
        };
        let child = Command::new(&self.binary)
            .args(ports)
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        assert!(
            super::wait_listening(self.addr(), Duration::from_secs(10)).await,
            "redis-server did not listen on {}",
            self.addr()
        );
    }

    /// Kill it (SIGKILL: an outage, not a clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A plain connection for checks the test makes itself.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to redis-server")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
