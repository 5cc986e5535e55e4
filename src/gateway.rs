//! `Gateway`: the process-wide state that outlives any one config
//! generation: the current `Runtime`, the upstream registry, the global
//! in-flight count, the access log, and the drain flag.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::{self, Config};
use crate::runtime::Runtime;
use crate::telemetry::{self, AccessLog};
use crate::upstream::UpstreamRegistry;

pub struct Gateway {
    /// The config in force. Loaded once per request (one atomic), stored
    /// once per reload.
    pub runtime: ArcSwap<Runtime>,
    pub registry: UpstreamRegistry,
    /// Requests in flight on the traffic listener, for `max_in_flight`.
    pub in_flight: AtomicUsize,
    /// Set on SIGTERM: `/readyz` answers 503.
    pub draining: AtomicBool,
    pub access_log: AccessLog,
    pub prometheus: PrometheusHandle,
    /// The file reloads read.
    pub config_path: PathBuf,
    generation: AtomicU64,
    /// Reloads run one at a time (prepare, then swap).
    reload_lock: tokio::sync::Mutex<()>,
}

/// Why a reload did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Invalid(#[from] config::ConfigErrors),
    #[error("{0}")]
    Compile(String),
}

impl Gateway {
    /// Build the first generation from a validated config.
    pub fn new(config: Config) -> Result<Arc<Gateway>, String> {
        let prometheus = telemetry::install_recorder();
        let registry = UpstreamRegistry::new();
        let access_log = AccessLog::stdout(config.log.format, config.log.access_log);
        let config_path = config.source.clone();
        let runtime = Runtime::compile(config, &registry, 1)?;
        Ok(Arc::new(Gateway {
            runtime: ArcSwap::from_pointee(runtime),
            registry,
            in_flight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            access_log,
            prometheus,
            config_path,
            generation: AtomicU64::new(1),
            reload_lock: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Re-read the config file and swap it in if it is valid. The running
    /// config stays on any error. Returns the new generation.
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let path = self.config_path.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .map_err(|e| ReloadError::Compile(format!("reload task failed: {e}")))??;
        let next = self.generation() + 1;
        let runtime =
            Runtime::compile(loaded.config, &self.registry, next).map_err(ReloadError::Compile)?;
        self.runtime.store(Arc::new(runtime));
        self.generation.store(next, Ordering::Release);
        Ok(next)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}
