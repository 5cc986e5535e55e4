//! The control plane's rollouts: one [`RouteRollout`] per route that has a
//! `[routes.rollout]`, kept across reloads, ticked once a second and acted
//! on by the admin API.
//!
//! Requests never take this lock: they see a rollout only through the
//! `Arc<RolloutStats>` and the weights compiled into the `Runtime`. After a
//! transition the gateway recompiles the `Runtime` (its single writer), so
//! a route table and its weights never tear.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use http::Uri;

use crate::config::{Config, RouteConfig, WeightBps};
use crate::rollout::controller::{Action, NotAllowed, State, Transition};
use crate::rollout::persist;
use crate::rollout::route::{RolloutStatus, RouteRollout};
use crate::rollout::stats::RolloutStats;
use crate::rollout::webhook::{WebhookOptions, WebhookSender};
use crate::telemetry::{names, rollout_gauges};
use crate::upstream::breaker::{Clock, SystemClock};

/// What a compiled generation needs from a route's rollout.
#[derive(Clone)]
pub struct LiveRollout {
    /// The canary's live share; the baseline gets the rest.
    pub canary_weight: WeightBps,
    /// Shadowing: every request is mirrored to the canary.
    pub mirrored: bool,
    pub stats: Arc<RolloutStats>,
}

/// A transition that happened, with what the caller must still do.
pub struct Applied {
    pub route: String,
    pub transition: Transition,
    /// The live split changed: recompile the runtime.
    pub republish: bool,
}

pub struct RolloutRegistry {
    rollouts: Mutex<HashMap<String, RouteRollout>>,
    state_dir: Mutex<PathBuf>,
    clock: Arc<dyn Clock>,
    /// Started lazily inside the tokio runtime (the first event).
    webhook: Mutex<Option<WebhookSender>>,
}

/// Why an operator action was not carried out.
#[derive(Debug)]
pub enum ActError {
    /// The route does not exist or has no rollout (404).
    UnknownRoute,
    /// The state does not allow it (409).
    NotAllowed(NotAllowed),
}

impl RolloutRegistry {
    pub fn new(state_dir: PathBuf) -> RolloutRegistry {
        RolloutRegistry::with_clock(state_dir, Arc::new(SystemClock))
    }

    pub fn with_clock(state_dir: PathBuf, clock: Arc<dyn Clock>) -> RolloutRegistry {
        RolloutRegistry {
            rollouts: Mutex::new(HashMap::new()),
            state_dir: Mutex::new(state_dir),
            clock,
            webhook: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, RouteRollout>> {
        self.rollouts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state_dir(&self) -> PathBuf {
        self.state_dir
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Bring the rollouts in line with a new config, in two phases under
    /// one lock (so no tick or operator action slips in between): prepare
    /// the next rollouts without touching the running ones (new ones
    /// restore their saved state, kept ones take the new steps and gates, a
    /// changed canary starts over, those whose route lost its rollout are
    /// dropped), hand their live view to `compile`, and only if it succeeds
    /// commit them (reset restarted stats, persist, publish the gauges).
    /// A failed `compile` leaves every rollout as it was: state, step, step
    /// start and state file (SPEC §9).
    pub fn reload<T, E>(
        &self,
        config: &Config,
        compile: impl FnOnce(&HashMap<String, LiveRollout>) -> Result<T, E>,
    ) -> Result<T, E> {
        let dir = config.state.dir.clone();
        let mut rollouts = self.lock();
        let mut next = HashMap::new();
        let mut restarted = Vec::new();
        let mut started = Vec::new();
        for route in &config.routes {
            let (Some(cfg), Some((url, deps))) = (&route.rollout, canary_identity(config, route))
            else {
                continue;
            };
            let rollout = match rollouts.get(&route.name) {
                Some(existing) => {
                    let (rollout, restart) = existing.reconfigured(cfg, url, deps);
                    if restart {
                        restarted.push(route.name.clone());
                    }
                    rollout
                }
                None => {
                    let (rollout, error) = RouteRollout::start(
                        &route.name,
                        cfg,
                        url,
                        deps,
                        Some(&dir),
                        Arc::clone(&self.clock),
                    );
                    started.push((route.name.clone(), error));
                    rollout
                }
            };
            next.insert(route.name.clone(), rollout);
        }
        let compiled = compile(&live_view(&next))?;

        // Commit: nothing below can fail.
        let mut to_save = Vec::with_capacity(restarted.len() + started.len());
        for name in &restarted {
            if let Some(r) = next.get(name) {
                tracing::info!(route = %name, "the canary changed: a new rollout starts");
                r.stats().reset_step();
                to_save.push(r.persisted(SystemTime::now()));
            }
        }
        for (name, error) in started {
            if let Some(e) = error {
                tracing::warn!(route = %name, error = %e, "rollout state unreadable; starting a new rollout");
            }
            if let Some(r) = next.get(&name) {
                tracing::info!(route = %name, state = r.controller().state().name(), "rollout");
                to_save.push(r.persisted(SystemTime::now()));
            }
        }
        *rollouts = next;
        *self.state_dir.lock().unwrap_or_else(|p| p.into_inner()) = dir.clone();
        rollout_gauges::registry().retain(|route| rollouts.contains_key(route));
        for r in rollouts.values() {
            publish_metrics(r, None);
        }
        drop(rollouts);
        for state in to_save {
            save(dir.clone(), state);
        }
        Ok(compiled)
    }

    /// The live view for a recompile without a config change.
    pub fn live(&self) -> HashMap<String, LiveRollout> {
        live_view(&self.lock())
    }

    /// One controller tick for every rollout. `breaker_open` says whether
    /// a route's canary upstream has its breaker open.
    pub fn tick(&self, breaker_open: impl Fn(&str) -> bool) -> Vec<Applied> {
        let mut applied = Vec::new();
        let mut rollouts = self.lock();
        for (name, r) in rollouts.iter_mut() {
            let before = (r.canary_weight(), r.controller().mirrored());
            if let Some(t) = r.tick(breaker_open(name)) {
                let after = (r.canary_weight(), r.controller().mirrored());
                applied.push(self.after(name, r, t, before != after));
            }
        }
        applied
    }

    /// An operator action on a route's rollout.
    pub fn act(&self, route: &str, action: Action) -> Result<(Applied, RolloutStatus), ActError> {
        let mut rollouts = self.lock();
        let r = rollouts.get_mut(route).ok_or(ActError::UnknownRoute)?;
        let before = (r.canary_weight(), r.controller().mirrored());
        let t = r.act(action).map_err(ActError::NotAllowed)?;
        let after = (r.canary_weight(), r.controller().mirrored());
        let applied = self.after(route, r, t, before != after);
        Ok((applied, r.status()))
    }

    pub fn status(&self, route: &str) -> Option<RolloutStatus> {
        self.lock().get(route).map(RouteRollout::status)
    }

    /// Log, count, persist and announce a transition. Never waits: the
    /// state file is written on the blocking pool and the webhook queued.
    fn after(&self, route: &str, r: &RouteRollout, t: Transition, republish: bool) -> Applied {
        tracing::info!(
            route,
            from = t.from.name(),
            to = t.to.name(),
            step = r.controller().step_metric(),
            reason = %t.reason(),
            "rollout transition"
        );
        publish_metrics(r, Some(&t));
        save(self.state_dir(), r.persisted(SystemTime::now()));
        if let Some(url) = r.webhook_url() {
            match url.parse::<Uri>() {
                Ok(uri) => {
                    if let Some(sender) = self.webhook() {
                        sender.send(&uri, &r.event(&t, SystemTime::now()));
                    }
                }
                Err(e) => tracing::warn!(route, error = %e, "rollout webhook url is not a URI"),
            }
        }
        Applied {
            route: route.to_string(),
            transition: t,
            republish,
        }
    }

    fn webhook(&self) -> Option<WebhookSender> {
        let mut w = self.webhook.lock().unwrap_or_else(|p| p.into_inner());
        if w.is_none() {
            match WebhookSender::spawn(WebhookOptions::default()) {
                Ok((sender, _task)) => *w = Some(sender),
                Err(e) => tracing::warn!(error = %e, "rollout webhook sender could not start"),
            }
        }
        w.clone()
    }
}

/// The canary's upstream url and deps: what identifies "the same canary".
fn canary_identity<'a>(
    config: &'a Config,
    route: &'a RouteConfig,
) -> Option<(&'a str, &'a crate::config::Deps)> {
    let cfg = route.rollout.as_ref()?;
    let canary = route.version(&cfg.canary)?;
    let upstream = config
        .upstreams
        .iter()
        .find(|u| u.name == canary.target.upstream)?;
    Some((upstream.url.raw.as_str(), &canary.target.deps))
}

fn live_view(rollouts: &HashMap<String, RouteRollout>) -> HashMap<String, LiveRollout> {
    rollouts
        .iter()
        .map(|(name, r)| {
            (
                name.clone(),
                LiveRollout {
                    canary_weight: r.canary_weight(),
                    mirrored: r.controller().mirrored(),
                    stats: Arc::clone(r.stats()),
                },
            )
        })
        .collect()
}

/// `cutover_rollout_step`, `cutover_rollout_state` and, on a rollback,
/// `cutover_rollbacks_total`. Control plane: labels hashed here are fine.
fn publish_metrics(r: &RouteRollout, t: Option<&Transition>) {
    rollout_gauges::registry().set(
        r.route(),
        r.controller().step_metric(),
        &State::NAMES,
        r.controller().state().name(),
    );
    let route = r.route().to_string();
    if let Some(t) = t
        && let State::RolledBack { reason } = &t.to
    {
        metrics::counter!(names::ROLLBACKS_TOTAL, "route" => route, "reason" => reason.kind.as_str())
            .increment(1);
    }
}

/// Write a state file on the blocking pool; a failure is logged, and the
/// next transition writes again. Writes are serialised and a write older
/// than the last one written for its route is skipped, so two quick
/// transitions can never leave the older state on disk.
fn save(dir: PathBuf, state: persist::PersistedState) {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    static WRITTEN: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed) + 1;
    let write = move || {
        let mut written = WRITTEN.lock().unwrap_or_else(|p| p.into_inner());
        let last = written.get_or_insert_with(HashMap::new);
        if last.get(&state.route).is_some_and(|&s| s > seq) {
            return;
        }
        if let Err(e) = persist::save(&dir, &state) {
            tracing::error!(route = %state.route, error = %e, "rollout state not saved");
        }
        last.insert(state.route.clone(), seq);
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(write);
        }
        Err(_) => write(),
    }
}
