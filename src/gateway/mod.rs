//! `Gateway`: the control plane's side of the process-wide state, and
//! the owner of the [`DataPlane`] that requests read.
//!
//! * [`data_plane`]: what a request reads or updates (the current
//!   `Runtime`, the cache, the in-flight count and body budget, the access
//!   log, the feedback index, mirrors, the tracer). The traffic path holds
//!   only an `Arc<DataPlane>`.
//! * here: what only reloads, the rollout tick, the admin API and the
//!   fleet's sync loop touch (the upstream registry and shadow states a
//!   compile draws from, the rollout registry, the Prometheus handle, the
//!   reload lock and state, the drain flag, `[cluster]`).
//!
//! Imports point one way: this module uses `data_plane`, never the
//! reverse, and nothing under `proxy` or `server::conn` names `Gateway`.

pub mod data_plane;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::task::TaskTracker;

use crate::cache::ResponseCache;
use crate::cluster::Cluster;
use crate::cluster::fleet_feedback::FleetClaims;
use crate::cluster::shared_cache::SharedCache;
use crate::config::{self, Config};
use crate::proxy::budget::BodyBudget;
use crate::rollout::Action;
use crate::rollout::registry::{ActError, RolloutRegistry};
use crate::rollout::route::RolloutStatus;
use crate::runtime::{Runtime, Shared};
use crate::server::trim::release_freed_memory;
use crate::shadow::ShadowStates;
use crate::telemetry::feedback_index::FeedbackIndex;
use crate::telemetry::otlp::Exporter;
use crate::telemetry::{self, AccessLog};
use crate::upstream::UpstreamRegistry;

pub use data_plane::DataPlane;

pub struct Gateway {
    /// What requests read and update; each traffic connection holds a
    /// reference.
    pub data_plane: Arc<DataPlane>,
    /// Upstream states by name and url: a compile takes its targets'
    /// states from here. Survive reloads.
    pub registry: UpstreamRegistry,
    /// Per-shadow in-flight bounds and counters, handed to each compile.
    /// Survive reloads.
    pub shadows: ShadowStates,
    /// Rollout controllers by route. Survive reloads.
    pub rollouts: RolloutRegistry,
    /// Set on SIGTERM: `/readyz` answers 503.
    pub draining: AtomicBool,
    pub prometheus: PrometheusHandle,
    /// With `[cluster]`: this replica's membership of its fleet (bound at
    /// start; a change needs a restart).
    pub cluster: Option<Arc<Cluster>>,
    /// With `[cluster]`: the Redis side of `cache.shared`.
    pub shared_cache: Option<Arc<SharedCache>>,
    /// The file reloads read.
    pub config_path: PathBuf,
    generation: AtomicU64,
    /// Reloads run one at a time (prepare, then swap).
    reload_lock: tokio::sync::Mutex<()>,
    /// What the last reload attempts left behind, for `/status`. A
    /// control-plane lock: never taken on the request path.
    reload_state: Mutex<ReloadState>,
    /// Fault injection for tests: the next reload fails as if its compile,
    /// the last fallible stage, had failed. See [`Gateway::fail_next_compile`].
    fail_next_compile: AtomicBool,
}

/// The outcome of reloads so far, as `/status` shows it.
#[derive(Clone, Debug, Default)]
pub struct ReloadState {
    /// The last failed reload's error, cleared by the next success.
    pub last_error: Option<ReloadFailure>,
    /// Keys changed in the file that only take effect after a restart
    /// (`server.listen`, `admin.listen`, ...), since the process started.
    pub restart_required: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct ReloadFailure {
    pub at: SystemTime,
    pub error: String,
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
        // One idle-connection queue per traffic worker thread.
        let workers =
            tokio::runtime::Handle::try_current().map_or(1, |h| h.metrics().num_workers());
        let registry = UpstreamRegistry::new(workers);
        let access_log = AccessLog::stdout(config.log.format, config.log.access_log);
        let config_path = config.source.clone();
        // Spawns its export task: Gateway::new runs inside the runtime.
        let tracer = match config.tracing.as_ref().and_then(|t| {
            t.otlp_endpoint
                .as_deref()
                .map(|e| (e, t.sample_ratio, t.otlp_ca_pem.as_deref()))
        }) {
            Some((endpoint, ratio, ca)) => Some(Exporter::spawn(endpoint, ratio, ca)?),
            None => None,
        };
        let shadows = ShadowStates::default();
        let cache = Arc::new(ResponseCache::new(
            config.cache.max_size,
            config.cache.max_entry_size,
        ));
        let rollouts = RolloutRegistry::new(config.state.dir.clone());
        let feedback = FeedbackIndex::default();
        // With [cluster], rollouts follow the fleet's documents from the
        // start; the Redis connection itself is made by the first call.
        let cluster = config.cluster.as_ref().map(Cluster::new).transpose()?;
        let shared_cache = cluster
            .as_ref()
            .map(|c| Arc::new(SharedCache::new(Arc::clone(c))));
        if let Some(c) = &cluster {
            rollouts.join_fleet();
            feedback.forward_to(c.feedback.sender());
        }
        if let Some(tier) = &shared_cache {
            cache.set_shared_tier(Arc::clone(tier) as Arc<dyn crate::cache::shared::SharedTier>);
            cache.set_shared(config.cache.shared);
        }
        let plan = registry.prepare(&config.upstreams)?;
        let runtime = rollouts.reload(&config, |live| {
            Runtime::compile(
                config.clone(),
                &Shared {
                    upstreams: plan.states(),
                    shadows: &shadows,
                    rollouts: live,
                },
                1,
            )
        })?;
        registry.commit(plan);
        runtime.publish_gauges();
        runtime.announce_counters();
        // A load builds a parse tree many times the file (30 MiB for a
        // thousand routes) and frees it at once: give that back.
        release_freed_memory();
        let data_plane = DataPlane {
            runtime: ArcSwap::from_pointee(runtime),
            mirrors: TaskTracker::new(),
            cache,
            in_flight: AtomicUsize::new(0),
            buffered: Arc::new(BodyBudget::default()),
            access_log,
            feedback,
            tracer,
            fleet: cluster.as_ref().map(|c| FleetClaims::new(Arc::clone(c))),
        };
        Ok(Arc::new(Gateway {
            data_plane: Arc::new(data_plane),
            registry,
            shadows,
            rollouts,
            draining: AtomicBool::new(false),
            prometheus,
            cluster,
            shared_cache,
            config_path,
            generation: AtomicU64::new(1),
            reload_lock: tokio::sync::Mutex::new(()),
            reload_state: Mutex::new(ReloadState::default()),
            fail_next_compile: AtomicBool::new(false),
        }))
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Re-read the config file and swap it in if it is valid. The running
    /// config stays on any error; the error is logged, counted and kept for
    /// `/status`. Returns the new generation.
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let result = self.prepare_and_swap().await;
        release_freed_memory();
        let mut state = self.reload_state.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(generation) => {
                state.last_error = None;
                telemetry::metrics::rare::config_reloads(true).increment(1);
                tracing::info!(generation, "config reloaded");
            }
            Err(e) => {
                state.last_error = Some(ReloadFailure {
                    at: SystemTime::now(),
                    error: e.to_string(),
                });
                telemetry::metrics::rare::config_reloads(false).increment(1);
                tracing::error!(error = %e, "config reload rejected; the running config stays");
            }
        }
        result
    }

    /// Fallible prepare (load, validate, upstream states, rollouts, compile),
    /// then one infallible commit: the upstream registry, the rollouts and
    /// the `Runtime` change together, or not at all.
    async fn prepare_and_swap(&self) -> Result<u64, ReloadError> {
        let path = self.config_path.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .map_err(|e| ReloadError::Compile(format!("reload task failed: {e}")))??;
        let current = self.data_plane.runtime.load_full();
        let restart = restart_required(&current.config, &loaded.config);
        let next = self.generation() + 1;
        let plan = self
            .registry
            .prepare(&loaded.config.upstreams)
            .map_err(ReloadError::Compile)?;
        // The rollouts prepare, wait for the compile and commit under their
        // own lock: a rollout whose canary changed starts over only if the
        // new generation is swapped in.
        let runtime = self.rollouts.reload(&loaded.config, |live| {
            let shared = Shared {
                upstreams: plan.states(),
                shadows: &self.shadows,
                rollouts: live,
            };
            let runtime = Runtime::compile(loaded.config.clone(), &shared, next)
                .map_err(ReloadError::Compile)?;
            if self.fail_next_compile.swap(false, Ordering::AcqRel) {
                return Err(ReloadError::Compile(
                    "injected failure (Gateway::fail_next_compile)".to_string(),
                ));
            }
            Ok(runtime)
        })?;
        self.registry.commit(plan);
        self.data_plane
            .cache
            .set_max_entry_size(runtime.config.cache.max_entry_size);
        self.data_plane
            .cache
            .set_shared(self.cluster.is_some() && runtime.config.cache.shared);
        runtime.publish_gauges();
        runtime.announce_counters();
        self.data_plane.runtime.store(Arc::new(runtime));
        self.generation.store(next, Ordering::Release);
        if !restart.is_empty() {
            tracing::warn!(keys = ?restart, "these settings changed and take effect only after a restart");
            let mut state = self.reload_state.lock().unwrap_or_else(|p| p.into_inner());
            for key in restart {
                if !state.restart_required.contains(&key) {
                    state.restart_required.push(key);
                }
            }
        }
        Ok(next)
    }

    /// Fault injection for tests: make the next reload fail at its last
    /// fallible stage, after the upstream states and the rollouts have
    /// been prepared and the new `Runtime` compiled, exactly as a compile
    /// error there would. It shows that a rejected reload commits nothing.
    #[doc(hidden)]
    pub fn fail_next_compile(&self) {
        self.fail_next_compile.store(true, Ordering::Release);
    }

    /// Recompile the running config with the rollouts' current weights and
    /// swap it in: the single writer of the `Runtime`, like a reload (and
    /// serialised with reloads), but the config generation stays.
    pub async fn republish(&self) {
        let _one_at_a_time = self.reload_lock.lock().await;
        let current = self.data_plane.runtime.load_full();
        let live = self.rollouts.live();
        let upstreams = current.upstream_states();
        let shared = Shared {
            upstreams: &upstreams,
            shadows: &self.shadows,
            rollouts: &live,
        };
        match Runtime::compile((*current.config).clone(), &shared, current.generation) {
            Ok(runtime) => {
                runtime.publish_gauges();
                self.data_plane.runtime.store(Arc::new(runtime));
            }
            Err(e) => tracing::error!(error = %e, "rollout weights not published"),
        }
    }

    /// One rollout tick: judge every rollout, apply transitions, and
    /// publish new weights if any changed. Called once a second.
    ///
    /// With `[cluster]` the leader judges in the fleet's sync loop
    /// instead; here, only while Redis is unreachable, each rollout checks
    /// its rollback triggers on this replica's own window (SPEC §12).
    pub async fn tick_rollouts(&self) {
        let rt = self.data_plane.runtime.load_full();
        let breaker_open = |route: &str| canary_breaker_open(&rt, route);
        let applied = match &self.cluster {
            None => self.rollouts.tick(breaker_open),
            Some(c) if !c.up() => self.rollouts.local_rollbacks(breaker_open),
            Some(_) => Vec::new(),
        };
        if applied.iter().any(|a| a.republish) {
            self.republish().await;
        }
    }

    /// An operator action (`POST /routes/{route}/rollout/{action}`). With
    /// `[cluster]`, on the fleet's rollout, whichever replica receives it.
    pub async fn rollout_action(
        &self,
        route: &str,
        action: Action,
    ) -> Result<RolloutStatus, ActError> {
        let republish = match &self.cluster {
            None => self.rollouts.act(route, action)?.0.republish,
            Some(c) => c.act(&self.rollouts, route, action).await?,
        };
        if republish {
            self.republish().await;
        }
        self.rollouts.status(route).ok_or(ActError::UnknownRoute)
    }

    pub fn reload_state(&self) -> ReloadState {
        self.reload_state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

/// Whether the breaker of `route`'s canary upstream is open now.
pub(crate) fn canary_breaker_open(rt: &Runtime, route: &str) -> bool {
    rt.routes
        .iter()
        .find(|r| &*r.name == route)
        .and_then(|r| {
            let j = r.judging.as_ref()?;
            Some(
                r.versions[j.canary].target.upstream.state.breaker.state()
                    == crate::upstream::breaker::BreakerState::Open,
            )
        })
        .unwrap_or(false)
}

/// Settings bound at start (listeners, TLS, threads, the header timeout of
/// the connection builder) that a reload cannot change.
fn restart_required(running: &Config, next: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    if running.server.listen != next.server.listen {
        keys.push("server.listen".to_string());
    }
    if running.admin.listen != next.admin.listen {
        keys.push("admin.listen".to_string());
    }
    if running.server.workers != next.server.workers {
        keys.push("server.workers".to_string());
    }
    fn tls(c: &Config) -> Option<(&[u8], &[u8])> {
        c.server
            .tls
            .as_ref()
            .map(|t| (t.cert_pem.as_slice(), t.key_pem.as_slice()))
    }
    if tls(running) != tls(next) {
        keys.push("server.tls".to_string());
    }
    if running.server.request_header_timeout != next.server.request_header_timeout {
        keys.push("server.request_header_timeout".to_string());
    }
    // The drain deadline is taken when serving starts.
    if running.server.shutdown_grace != next.server.shutdown_grace {
        keys.push("server.shutdown_grace".to_string());
    }
    let otlp = |c: &Config| {
        c.tracing.as_ref().map(|t| {
            (
                t.otlp_endpoint.clone(),
                t.sample_ratio.to_bits(),
                t.otlp_ca_pem.clone(),
            )
        })
    };
    if otlp(running) != otlp(next) {
        keys.push("tracing".to_string());
    }
    if running.log.format != next.log.format
        || running.log.access_log != next.log.access_log
        || running.log.level != next.log.level
    {
        keys.push("log".to_string());
    }
    // The store's capacity is fixed when it is built; max_entry_size is not.
    if running.cache.max_size != next.cache.max_size {
        keys.push("cache.max_size".to_string());
    }
    // The fleet's client, lease and loop are bound at start.
    if running.cluster != next.cluster {
        keys.push("cluster".to_string());
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(server: &str) -> Config {
        let text = format!(
            "[server]\n{server}\n[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:9\"\n[[routes]]\nname = \"r\"\n[[routes.versions]]\nname = \"v\"\nupstream = \"a\"\n"
        );
        match config::load_str(&text, std::path::Path::new("t.toml"), &|_| None) {
            Ok(l) => l.config,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn settings_bound_at_start_are_reported() {
        let running = config("listen = \"127.0.0.1:8080\"\nshutdown_grace = \"30s\"");
        let same = config("listen = \"127.0.0.1:8080\"\nshutdown_grace = \"30s\"\nmax_body = 10");
        assert!(restart_required(&running, &same).is_empty());
        let next = config("listen = \"127.0.0.1:8081\"\nshutdown_grace = \"5s\"");
        assert_eq!(
            restart_required(&running, &next),
            ["server.listen", "server.shutdown_grace"]
        );
    }
}
