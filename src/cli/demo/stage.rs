//! `Stage`: everything the demo runs on loopback: one mock backend per
//! upstream, the config file in a scratch directory (with the upstreams
//! pointed at the mocks), and the proxy itself, started in-process the way
//! `tests/common` does. Acts change the config the way an operator would:
//! edit the file, then reload.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use toml_edit::{DocumentMut, Table, value};

use crate::admin::status::{self, Status};
use crate::gateway::Gateway;
use crate::mock::{self, MockArgs, MockHandle};
use crate::rollout::RolloutStatus;

/// The demo config, embedded so `cutover demo` works from any directory.
pub const DEMO_TOML: &str = include_str!("../../../config/demo.toml");

/// One mock backend per upstream of `config/demo.toml`, named after it,
/// with its latency range in milliseconds. agent-v3 (the shadow) is slow on
/// purpose: the demo shows that users never wait for it.
const MOCKS: [(&str, u64, u64); 7] = [
    ("agent-v1", 5, 30),
    ("agent-v2", 5, 30),
    ("agent-v3", 60, 150),
    ("agent-main", 5, 30),
    ("agent-backup", 10, 40),
    ("small-model", 5, 20),
    ("agent-faq", 20, 60),
];

/// How long the proxy and the mocks get to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Stage {
    pub gateway: Arc<Gateway>,
    pub traffic: SocketAddr,
    pub admin: SocketAddr,
    /// (upstream name, mock) pairs.
    pub mocks: Vec<(&'static str, MockHandle)>,
    config: DocumentMut,
    config_path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    /// Removed when the stage is dropped.
    _scratch: ScratchDir,
}

impl Stage {
    /// Start the mocks, write the config (after `prepare` has edited it),
    /// start the proxy.
    pub async fn start(
        prepare: impl FnOnce(&mut DocumentMut) -> Result<(), String>,
    ) -> Result<Stage, String> {
        let mut mocks = Vec::new();
        for (name, low, high) in MOCKS {
            let handle = mock::spawn(MockArgs {
                name: name.to_owned(),
                latency: Duration::from_millis(low),
                latency_max: Some(Duration::from_millis(high)),
                ..MockArgs::new(SocketAddr::from(([127, 0, 0, 1], 0)))
            })
            .await
            .map_err(|e| format!("cannot start the {name} mock backend on 127.0.0.1: {e}"))?;
            mocks.push((name, handle));
        }

        let mut config: DocumentMut = DEMO_TOML
            .parse()
            .map_err(|e| format!("the embedded config/demo.toml is not valid TOML: {e}"))?;
        for (name, mock) in &mocks {
            set_upstream_url(&mut config, name, &mock.url())?;
        }
        prepare(&mut config)?;

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

    /// The mock behind upstream `name`.
    pub fn mock(&self, name: &str) -> Result<&MockHandle, String> {
        self.mocks
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| m)
            .ok_or_else(|| format!("the demo has no mock backend for upstream {name}"))
    }

    /// Requests the mock behind upstream `name` has received so far.
    pub fn upstream_calls(&self, name: &str) -> Result<u64, String> {
        Ok(self.mock(name)?.stats().requests())
    }

    /// What `GET /status` would answer now.
    pub fn status(&self) -> Status {
        status::build(&self.gateway)
    }

    /// The rollout of `route`, as `/status` shows it.
    pub fn rollout(&self, route: &str) -> Result<RolloutStatus, String> {
        self.gateway
            .rollouts
            .status(route)
            .ok_or_else(|| format!("route {route} has no rollout"))
    }

    /// The effective weights of `route`, in percent, as the running proxy
    /// uses them.
    pub fn weights(&self, route: &str) -> Result<Vec<(String, f64)>, String> {
        let status = self.status();
        let view = status
            .routes
            .iter()
            .find(|r| r.name == route)
            .ok_or_else(|| format!("the running config has no route {route}"))?;
        Ok(view
            .versions
            .iter()
            .map(|v| (v.name.clone(), v.effective_weight))
            .collect())
    }

    /// Edit the config file as an operator would, then reload it; returns
    /// the new config generation.
    pub async fn edit(
        &mut self,
        change: impl FnOnce(&mut DocumentMut) -> Result<(), String>,
    ) -> Result<u64, String> {
        change(&mut self.config)?;
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
        for (name, mock) in std::mem::take(&mut self.mocks) {
            match tokio::time::timeout(STOP_TIMEOUT, mock.shutdown()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("the {name} mock stopped with an error: {e}")),
                Err(_) => return Err(format!("the {name} mock did not stop in time")),
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
    let entry = named_mut(config.as_table_mut(), "upstreams", upstream)?;
    entry["url"] = value(url);
    Ok(())
}

/// The `[[routes]]` table named `route`.
pub fn route_mut<'a>(config: &'a mut DocumentMut, route: &str) -> Result<&'a mut Table, String> {
    named_mut(config.as_table_mut(), "routes", route)
}

/// The entry of the array of tables `key` (in `table`) whose `name` is
/// `name`: an upstream, a route, a version, a shadow.
pub fn named_mut<'a>(table: &'a mut Table, key: &str, name: &str) -> Result<&'a mut Table, String> {
    table
        .get_mut(key)
        .and_then(|item| item.as_array_of_tables_mut())
        .and_then(|entries| {
            entries
                .iter_mut()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
        })
        .ok_or_else(|| format!("the demo config has no {key} entry named {name}"))
}

/// Set a version's weight on `route`.
pub fn set_version_weight(
    config: &mut DocumentMut,
    route: &str,
    version: &str,
    weight: f64,
) -> Result<(), String> {
    let entry = named_mut(route_mut(config, route)?, "versions", version)?;
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
pub(super) struct ScratchDir(PathBuf);

impl ScratchDir {
    pub(super) fn create() -> std::io::Result<ScratchDir> {
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

    pub(super) fn path(&self) -> &Path {
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
        for (n, (name, _, _)) in MOCKS.iter().enumerate() {
            set_upstream_url(&mut doc, name, &format!("http://127.0.0.1:{}", 41001 + n))
                .expect("url");
        }
        set_version_weight(&mut doc, "chat", "v1", 75.0).expect("v1 weight");
        set_version_weight(&mut doc, "chat", "v2", 25.0).expect("v2 weight");
        let text = doc.to_string();
        assert!(!text.contains("\"http://127.0.0.1:91"), "{text}");
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
        assert_eq!(urls.len(), MOCKS.len(), "one mock per upstream: {urls:?}");
        for (n, url) in urls.iter().enumerate() {
            assert!(url.contains(&(41001 + n).to_string()), "{urls:?}");
        }
    }

    #[test]
    fn unknown_names_are_errors_not_silent() {
        let mut doc: DocumentMut = DEMO_TOML.parse().expect("demo.toml is TOML");
        assert!(set_upstream_url(&mut doc, "agent-v9", "http://x").is_err());
        assert!(set_version_weight(&mut doc, "chat", "v9", 1.0).is_err());
        assert!(set_version_weight(&mut doc, "nope", "v1", 1.0).is_err());
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
