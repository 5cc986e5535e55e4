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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use http::Uri;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, RouteConfig, WeightBps};
use crate::rollout::controller::{Action, Cause, Controller, NotAllowed, State, Transition};
use crate::rollout::fleet::{FleetCounts, FleetDoc, FleetLink};
use crate::rollout::persist;
use crate::rollout::route::{RolloutStatus, RouteRollout};
use crate::rollout::stats::{RolloutStats, VersionSnapshot, WindowSnapshot};
use crate::rollout::webhook::{WebhookOptions, WebhookSender};
use crate::telemetry::metrics::rare;
use crate::telemetry::rollout_gauges;

/// What a compiled generation needs from a route's rollout.
#[derive(Clone)]
pub struct LiveRollout {
    /// The canary's live share; the baseline gets the rest.
    pub canary_weight: WeightBps,
    /// Shadowing: every request is mirrored to the canary.
    pub mirrored: bool,
    pub stats: Arc<RolloutStats>,
    /// Requests are judged (always alone; in a fleet, while this replica's
    /// config names the fleet's canary). When false the route is compiled
    /// without its judge: baseline only, nothing counted.
    pub counted: bool,
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
    /// With `[cluster]`: rollouts follow the fleet's documents in Redis
    /// (`crate::cluster`), and `state.dir` only keeps this replica's last
    /// view of them. Set once, at start.
    fleet: AtomicBool,
}

/// Why an operator action was not carried out.
#[derive(Debug)]
pub enum ActError {
    /// The route does not exist or has no rollout (404).
    UnknownRoute,
    /// The state does not allow it (409).
    NotAllowed(NotAllowed),
    /// With `[cluster]`: this replica's config names another canary than
    /// the fleet's rollout, or the fleet's rollout kept changing (409).
    Conflict(String),
    /// With `[cluster]`: Redis cannot be reached, nothing was done (503).
    Unavailable(String),
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
            fleet: AtomicBool::new(false),
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
                    let mut rollout = rollout;
                    if self.in_fleet() {
                        rollout.join_fleet();
                    }
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
        // Only the series of routes this registry dropped: the gauges are
        // process-wide, and another gateway in the process (the tests run
        // several) owns its own routes.
        for gone in rollouts.keys().filter(|name| !next.contains_key(*name)) {
            rollout_gauges::registry().remove(gone);
        }
        *rollouts = next;
        *self.state_dir.lock().unwrap_or_else(|p| p.into_inner()) = dir.clone();
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
            let before = (r.canary_weight(), r.mirrored());
            if let Some(t) = r.tick(breaker_open(name)) {
                let after = (r.canary_weight(), r.mirrored());
                applied.push(self.after(name, r, t, before != after));
            }
        }
        applied
    }

    /// An operator action on a route's rollout.
    pub fn act(&self, route: &str, action: Action) -> Result<(Applied, RolloutStatus), ActError> {
        let mut rollouts = self.lock();
        let r = rollouts.get_mut(route).ok_or(ActError::UnknownRoute)?;
        let before = (r.canary_weight(), r.mirrored());
        let t = r.act(action).map_err(ActError::NotAllowed)?;
        let after = (r.canary_weight(), r.mirrored());
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
        self.announce(route, r, &t);
        Applied {
            route: route.to_string(),
            transition: t,
            republish,
        }
    }

    /// Post the webhook event of a transition (queued, never waited for).
    fn announce(&self, route: &str, r: &RouteRollout, t: &Transition) {
        if let Some(url) = r.webhook_url() {
            match url.parse::<Uri>() {
                Ok(uri) => {
                    if let Some(sender) = self.webhook() {
                        sender.send(&uri, &r.event(t, SystemTime::now()));
                    }
                }
                Err(e) => tracing::warn!(route, error = %e, "rollout webhook url is not a URI"),
            }
        }
    }

    // ---- with [cluster]: the fleet's documents (crate::cluster) -------

    /// From now on every rollout follows the fleet's document in Redis.
    pub fn join_fleet(&self) {
        self.fleet.store(true, Ordering::Release);
        for r in self.lock().values_mut() {
            r.join_fleet();
        }
    }

    pub fn in_fleet(&self) -> bool {
        self.fleet.load(Ordering::Acquire)
    }

    /// Routes with a rollout, in name order.
    pub fn routes(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().keys().cloned().collect();
        names.sort();
        names
    }

    /// What this replica pushes for a route: its link and its own counts.
    pub fn local_counts(&self, route: &str) -> Option<LocalCounts> {
        let rollouts = self.lock();
        let r = rollouts.get(route)?;
        let (baseline, canary) = r.stats().step_snapshot();
        Some(LocalCounts {
            fingerprint: r.fingerprint().to_string(),
            link: r.fleet_link().cloned().unwrap_or_default(),
            baseline,
            canary,
            window: r.stats().window_snapshot(),
        })
    }

    /// Take the fleet's document for a route (see `RouteRollout::adopt`).
    /// Returns whether the live split changed (republish).
    pub fn adopt(&self, route: &str, doc: &FleetDoc) -> bool {
        let mut rollouts = self.lock();
        let Some(r) = rollouts.get_mut(route) else {
            return false;
        };
        let (doc_id, state) = (
            r.fleet_link().map(|l| l.doc_id.clone()),
            r.controller().state().clone(),
        );
        let changed = r.adopt(doc);
        let link = r.fleet_link().cloned().unwrap_or_default();
        if Some(&link.doc_id) != doc_id.as_ref() || changed {
            if link.agrees && *r.controller().state() != state {
                tracing::info!(
                    route,
                    from = state.name(),
                    to = r.controller().state().name(),
                    step = r.controller().step_metric(),
                    seq = doc.seq,
                    by = %doc.by,
                    "rollout state from the fleet"
                );
            } else if !link.agrees && changed {
                tracing::warn!(
                    route,
                    "the fleet is rolling out another canary than this replica's config names: serving the baseline only until the config agrees"
                );
            }
            publish_metrics(r, None);
            save(self.state_dir(), r.persisted(SystemTime::now()));
        }
        changed
    }

    /// Judge the fleet's sums for a route (any replica, for `/status`);
    /// a transition comes back to be committed by the leader.
    pub fn judge_fleet(
        &self,
        route: &str,
        counts: FleetCounts,
    ) -> Option<(Controller, Transition)> {
        self.lock().get_mut(route)?.judge_fleet(counts)
    }

    /// The document to write for `controller` after `previous`.
    pub fn doc_after(
        &self,
        route: &str,
        previous: Option<&FleetDoc>,
        controller: &Controller,
        new_stage: bool,
        by: &str,
        epoch: Option<u64>,
    ) -> Option<FleetDoc> {
        let rollouts = self.lock();
        let r = rollouts.get(route)?;
        Some(r.doc_after(previous, controller, new_stage, by, epoch))
    }

    /// The first document of the fleet's rollout of `route`, written by the
    /// leader when Redis has none for this canary: this replica's current
    /// state (restored from `state.dir`, or new) when Redis has nothing,
    /// else a new rollout.
    pub fn first_doc(
        &self,
        route: &str,
        previous: Option<&FleetDoc>,
        by: &str,
        epoch: u64,
    ) -> Option<FleetDoc> {
        let rollouts = self.lock();
        let r = rollouts.get(route)?;
        let controller = match previous {
            None => r.controller().clone(),
            Some(_) => Controller::new(r.config(), self.clock.now()),
        };
        Some(r.doc_after(previous, &controller, true, by, Some(epoch)))
    }

    /// An operator action on the fleet's rollout: the controller `doc`
    /// describes (this replica's own without a document), acted on.
    /// `Conflict` when the document is about another canary.
    pub fn act_on_doc(
        &self,
        route: &str,
        doc: Option<&FleetDoc>,
        action: Action,
        by: &str,
    ) -> Result<(Controller, Transition, FleetDoc), ActError> {
        let rollouts = self.lock();
        let r = rollouts.get(route).ok_or(ActError::UnknownRoute)?;
        let mut controller = match doc {
            Some(d) if d.canary != r.fingerprint() => {
                return Err(ActError::Conflict(format!(
                    "the fleet is rolling out another canary on route {route:?} than this replica's config names; act on a replica whose config agrees, or reload this one"
                )));
            }
            Some(d) => {
                let elapsed = std::time::Duration::from_millis(
                    crate::rollout::fleet::unix_ms(SystemTime::now())
                        .saturating_sub(d.stage_started_ms),
                );
                Controller::restore(r.config(), d.state.clone(), elapsed, self.clock.now())
            }
            None => r.controller().clone(),
        };
        let t = controller
            .act(action, self.clock.now())
            .map_err(ActError::NotAllowed)?;
        let doc = r.doc_after(doc, &controller, t.stage_changed, by, None);
        Ok((controller, t, doc))
    }

    /// A transition this replica wrote to the fleet's document: apply it
    /// here and log, count, persist and announce it (this replica won the
    /// write, so it is the one that announces).
    pub fn commit(
        &self,
        route: &str,
        controller: Controller,
        t: Transition,
        doc: &FleetDoc,
    ) -> Option<Applied> {
        let mut rollouts = self.lock();
        let r = rollouts.get_mut(route)?;
        let before = (r.canary_weight(), r.mirrored(), r.counted());
        r.commit(controller, &t, doc);
        let after = (r.canary_weight(), r.mirrored(), r.counted());
        Some(self.after(route, r, t, before != after))
    }

    /// Redis is unreachable: each rollout checks its rollback triggers on
    /// this replica's own window and breaker; a rollback is applied at
    /// once (logged, counted, kept in `state.dir`) and announced when it is
    /// reported to the fleet.
    pub fn local_rollbacks(&self, breaker_open: impl Fn(&str) -> bool) -> Vec<Applied> {
        let mut applied = Vec::new();
        let mut rollouts = self.lock();
        for (name, r) in rollouts.iter_mut() {
            let before = (r.canary_weight(), r.mirrored());
            let Some(t) = r.local_rollback(breaker_open(name)) else {
                continue;
            };
            let after = (r.canary_weight(), r.mirrored());
            tracing::warn!(
                route = %name,
                reason = %t.reason(),
                "rollback on this replica's own window while the fleet's Redis is unreachable; it will be reported when Redis answers"
            );
            publish_metrics(r, Some(&t));
            save(self.state_dir(), r.persisted(SystemTime::now()));
            applied.push(Applied {
                route: name.clone(),
                transition: t,
                republish: before != after,
            });
        }
        applied
    }

    /// Local rollbacks still to be reported: (route, the rolled back state).
    pub fn pending_reports(&self) -> Vec<(String, State)> {
        self.lock()
            .iter()
            .filter_map(|(name, r)| {
                let reason = r.fleet_link()?.pending.clone()?;
                Some((name.clone(), State::RolledBack { reason }))
            })
            .collect()
    }

    /// A local rollback reached the fleet: `written` is the document this
    /// replica wrote (announced now, as the transition from the fleet's
    /// previous state), `None` when the fleet had moved on already.
    pub fn reported(&self, route: &str, written: Option<(&FleetDoc, &State)>) {
        let mut rollouts = self.lock();
        let Some(r) = rollouts.get_mut(route) else {
            return;
        };
        r.reported();
        if let Some((doc, from)) = written {
            let t = Transition {
                from: from.clone(),
                to: doc.state.clone(),
                at: self.clock.now(),
                cause: Cause::Rollback,
                stage_changed: true,
            };
            tracing::info!(route, seq = doc.seq, reason = %t.reason(), "local rollback reported to the fleet");
            self.announce(route, r, &t);
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

/// A rollout's link with the fleet and this replica's own counts, for the
/// fleet's push.
#[derive(Clone, Debug)]
pub struct LocalCounts {
    pub fingerprint: String,
    pub link: FleetLink,
    pub baseline: VersionSnapshot,
    pub canary: VersionSnapshot,
    pub window: WindowSnapshot,
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
                    mirrored: r.mirrored(),
                    stats: Arc::clone(r.stats()),
                    counted: r.counted(),
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
    if let Some(t) = t
        && let State::RolledBack { reason } = &t.to
    {
        rare::rollbacks(r.route(), reason.kind.as_str()).increment(1);
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
