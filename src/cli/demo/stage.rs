//! `Stage`: everything the demo runs on loopback: one mock backend per
//! version, the config file in a scratch directory (with the upstreams
//! pointed at the mocks), and the proxy itself, started in-process the way
//! `tests/common` does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use toml_edit::{DocumentMut, value};

use crate::gateway::Gateway;
use crate::mock::{self, MockArgs, MockHandle};

/// The demo config, embedded so `cutover demo` works from any directory.
pub const DEMO_TOML: &str = include_str!("../../../config/demo.toml");

/// The route the demo drives (`[[routes]] name` in `config/demo.toml`).
pub const ROUTE: &str = "chat";

/// Mock backends: (version name, upstream name in the config).
const BACKENDS: [(&str, &str); 2] = [("v1", "agent-v1"), ("v2", "agent-v2")];

/// Mock latency: uniform in this range, so the traffic feels real.
pub const MOCK_LATENCY: (Duration, Duration) =
    (Duration::from_millis(5), Duration::from_millis(30));

/// How long the proxy and the mocks get to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Stage {
    pub gateway: Arc<Gateway>,
    pub traffic: SocketAddr,
    pub admin: SocketAddr,
    /// (version, mock) pairs.
    pub mocks: Vec<(String, MockHandle)>,
    config: DocumentMut,
    config_path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    /// Removed when the stage is dropped.
    _scratch: ScratchDir,
}

impl Stage {
    /// Start the mocks, write the config, start the proxy.
    pub async fn start() -> Result<Stage, String> {
        let mut mocks = Vec::new();
        for (version, _) in BACKENDS {
            let handle = mock::spawn(MockArgs {
                name: version.to_owned(),
                latency: MOCK_LATENCY.0,
                latency_max: Some(MOCK_LATENCY.1),
                ..MockArgs::new(SocketAddr::from(([127, 0, 0, 1], 0)))
            })
            .await
            .map_err(|e| format!("cannot start the {version} mock backend on 127.0.0.1: {e}"))?;
            mocks.push((version.to_owned(), handle));
        }

        let mut config: DocumentMut = DEMO_TOML
            .parse()
            .map_err(|e| format!("the embedded config/demo.toml is not valid TOML: {e}"))?;
        for ((_, upstream), (_, mock)) in BACKENDS.iter().zip(&mocks) {
            set_upstream_url(&mut config, upstream, &mock.url())?;
        }

        let scratch = ScratchDir::create()
            .map_err(|e| format!("cannot create a scratch directory for the config: {e}"))?;
        let config_path = scratch.path().join("cutover.toml");
        write_config(&config_path, &config)?;
        let loaded = crate::config::load(&config_path).map_err(|e| {
            format!("the demo config (config/demo.toml with the mock URLs) is invalid:\n{e}")
        })?;

        let traffic = bind().await?;
        let admin = bind().await?;
        let traffic_addr = local_addr(&traffic)?;
        let admin_addr = local_addr(&admin)?;
        let gateway = Gateway::new(loaded.config)?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(crate::server::run(
            Arc::clone(&gateway),
            traffic,
            admin,
            async move {
                let _ = stop_rx.await;
            },
        ));
        Ok(Stage {
            gateway,
            traffic: traffic_addr,
            admin: admin_addr,
            mocks,
            config,
            config_path,
            stop: Some(stop_tx),
            task: Some(task),
            _scratch: scratch,
        })
    }

    /// The weights in force, in percent, as the running proxy sees them.
    pub fn weights(&self) -> Result<Vec<(String, f64)>, String> {
        let runtime = self.gateway.runtime.load();
        let route = runtime
            .config
            .routes
            .iter()
            .find(|r| r.name == ROUTE)
            .ok_or_else(|| format!("the running config has no route {ROUTE}"))?;
        Ok(route
            .versions
            .iter()
            .map(|v| (v.target.name.clone(), v.weight.percent()))
            .collect())
    }

    /// Rewrite the config file with new weights and reload it, as an
    /// operator would; returns the new config generation.
    pub async fn set_weights(&mut self, weights: &[(&str, f64)]) -> Result<u64, String> {
        for (version, weight) in weights {
            set_version_weight(&mut self.config, version, *weight)?;
        }
        write_config(&self.config_path, &self.config)?;
        self.gateway
            .reload()
            .await
            .map_err(|e| format!("reloading {}: {e}", self.config_path.display()))
    }

    /// Graceful shutdown: the proxy drains, then the mocks stop.
    pub async fn stop(mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(STOP_TIMEOUT, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => return Err(format!("the proxy stopped with an error: {e}")),
                Ok(Err(e)) => return Err(format!("the proxy task failed: {e}")),
                Err(_) => return Err(format!("the proxy did not stop within {STOP_TIMEOUT:?}")),
            }
        }
        for (version, mock) in std::mem::take(&mut self.mocks) {
            match tokio::time::timeout(STOP_TIMEOUT, mock.shutdown()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("the {version} mock stopped with an error: {e}")),
                Err(_) => return Err(format!("the {version} mock did not stop in time")),
            }
        }
        Ok(())
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn set_upstream_url(config: &mut DocumentMut, upstream: &str, url: &str) -> Result<(), String> {
    let upstreams = config
        .get_mut("upstreams")
        .and_then(|u| u.as_array_of_tables_mut())
        .ok_or("the embedded config/demo.toml has no [[upstreams]]")?;
    let entry = upstreams
        .iter_mut()
        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(upstream))
        .ok_or_else(|| format!("the embedded config/demo.toml has no upstream {upstream}"))?;
    entry["url"] = value(url);
    Ok(())
}

fn set_version_weight(config: &mut DocumentMut, version: &str, weight: f64) -> Result<(), String> {
    let route = config
        .get_mut("routes")
        .and_then(|r| r.as_array_of_tables_mut())
        .and_then(|routes| {
            routes
                .iter_mut()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(ROUTE))
        })
        .ok_or_else(|| format!("the demo config has no route {ROUTE}"))?;
    let entry = route
        .get_mut("versions")
        .and_then(|v| v.as_array_of_tables_mut())
        .and_then(|versions| {
            versions
                .iter_mut()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(version))
        })
        .ok_or_else(|| format!("route {ROUTE} has no version {version}"))?;
    entry["weight"] = value(weight);
    Ok(())
}

fn write_config(path: &Path, config: &DocumentMut) -> Result<(), String> {
    std::fs::write(path, config.to_string())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

async fn bind() -> Result<TcpListener, String> {
    TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, String> {
    listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))
}

/// A fresh directory under the system temp dir, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create() -> std::io::Result<ScratchDir> {
        let base = std::env::temp_dir();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut last = None;
        for attempt in 0..32u32 {
            let dir = base.join(format!(
                "cutover-demo-{}-{}",
                std::process::id(),
                nanos.wrapping_add(attempt)
            ));
            // create_dir (not create_dir_all) fails if it exists: never reuse one.
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(ScratchDir(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free name")))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_config_is_patched_and_still_valid() {
        let mut doc: DocumentMut = DEMO_TOML.parse().expect("demo.toml is TOML");
        set_upstream_url(&mut doc, "agent-v1", "http://127.0.0.1:41001").expect("v1 url");
        set_upstream_url(&mut doc, "agent-v2", "http://127.0.0.1:41002").expect("v2 url");
        set_version_weight(&mut doc, "v1", 75.0).expect("v1 weight");
        set_version_weight(&mut doc, "v2", 25.0).expect("v2 weight");
        let text = doc.to_string();
        assert!(
            !text.contains("\"http://127.0.0.1:9101\"")
                && !text.contains("\"http://127.0.0.1:9102\""),
            "{text}"
        );
        let loaded = crate::config::load_str(&text, Path::new("demo.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("patched demo config invalid:\n{e}"));
        let route = &loaded.config.routes[0];
        let weights: Vec<u16> = route.versions.iter().map(|v| v.weight.get()).collect();
        assert_eq!(weights, [7500, 2500]);
        let urls: Vec<String> = loaded
            .config
            .upstreams
            .iter()
            .map(|u| u.url.raw.clone())
            .collect();
        assert!(
            urls[0].contains("41001") && urls[1].contains("41002"),
            "{urls:?}"
        );
    }

    #[test]
    fn unknown_names_are_errors_not_silent() {
        let mut doc: DocumentMut = DEMO_TOML.parse().expect("demo.toml is TOML");
        assert!(set_upstream_url(&mut doc, "agent-v9", "http://x").is_err());
        assert!(set_version_weight(&mut doc, "v9", 1.0).is_err());
    }

    #[test]
    fn scratch_dirs_are_unique_and_removed() {
        let a = ScratchDir::create().expect("a");
        let b = ScratchDir::create().expect("b");
        assert_ne!(a.path(), b.path());
        let path = a.path().to_path_buf();
        assert!(path.is_dir());
        drop(a);
        assert!(!path.exists());
    }
}
