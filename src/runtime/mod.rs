//! `Runtime`: the compiled, immutable snapshot a request runs on.
//!
//! A request loads the current `Arc<Runtime>` once and keeps it to its end,
//! so in-flight requests finish on the config they started with. A reload
//! builds a whole new `Runtime` (fallible) and swaps it in with one store
//! (infallible): route tables and weights can never tear.
//!
//! Everything the hot path needs is resolved here: bucket tables, header
//! values, pre-rendered refusals, metric handles.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use http::uri::Scheme;
use http::{HeaderName, HeaderValue};

use crate::cache::{KeyPrefix, RouteCache};
use crate::config::{
    self, Config, FallbackConfig, RouteMatch, ShadowConfig, StickySource, TargetConfig,
    UpstreamConfig, WeightBps,
};
use crate::resilience::Refusal;
use crate::rollout::registry::LiveRollout;
use crate::rollout::stats::JudgedOutcomes;
use crate::rollout::{Role, RolloutStats};
use crate::routing::{BUCKETS, BucketTable, RouteIndex};
use crate::secret::Secret;
use crate::shadow::reach::Reach;
use crate::shadow::{Shadow, ShadowStates};
use crate::telemetry::{RouteMetrics, UpstreamMetrics, VersionMetrics, names};
use crate::upstream::UpstreamState;

pub mod target;
pub use target::{Target, Upstream};

pub struct Runtime {
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub config: Arc<Config>,
    /// `server.feedback_token_env`: feedback needs this bearer token.
    pub feedback_token: Option<Secret>,
    pub routes: Box<[Route]>,
    /// The routes' match rules, indexed: [`RouteIndex::find`] gives the
    /// first matching route in file order.
    pub route_index: RouteIndex,
    pub upstreams: Box<[Arc<Upstream>]>,
}

pub struct Version {
    pub target: Target,
    /// Effective: the configured weight, or the rollout's.
    pub weight: config::WeightBps,
    /// Shared with the feedback index, which counts outcomes on it later.
    /// On a rollout's versions it also feeds the judge.
    pub metrics: Arc<VersionMetrics>,
    /// The same series without the judge, for pinned requests (a tester
    /// chose them, not the split). `None` off rollouts.
    pub pinned_metrics: Option<Arc<VersionMetrics>>,
}

/// A route under rollout, as the data plane sees it: where judged
/// requests are recorded, and which versions are judged.
pub struct Judging {
    pub stats: Arc<RolloutStats>,
    pub baseline: usize,
    pub canary: usize,
}

impl Judging {
    pub fn role(&self, version: usize) -> Option<Role> {
        if version == self.baseline {
            Some(Role::Baseline)
        } else if version == self.canary {
            Some(Role::Canary)
        } else {
            None
        }
    }
}

pub struct Route {
    pub name: Arc<str>,
    pub matcher: RouteMatch,
    pub sticky: Box<[StickySource]>,
    pub salt: Box<[u8]>,
    pub pin_header: Option<HeaderName>,
    /// `pin_token_env`: a pin counts only with `x-cutover-pin-token`.
    pub pin_token: Option<Secret>,
    pub versions: Box<[Version]>,
    pub table: BucketTable,
    pub fallbacks: Box<[Target]>,
    pub shadows: Box<[Shadow]>,
    /// What of the primary's answer its shadows' pointers reach, together.
    pub compare_reach: Arc<Reach>,
    /// `None`: the route does not cache.
    pub cache: Option<RouteCache>,
    /// `None`: no rollout on this route.
    pub judging: Option<Judging>,
    pub refusal: Refusal,
    /// Handles for responses that never reached a version (shed, 413).
    pub unassigned_metrics: VersionMetrics,
    pub metrics: RouteMetrics,
    /// Sessions of this header stay on their version (SPEC §3).
    pub session_header: Option<HeaderName>,
}

impl Route {
    /// Where `version` falls back to, in order: the route's `fallbacks`
    /// but the version itself (SPEC §5).
    pub fn fallback_chain<'r>(&'r self, version: &'r str) -> FallbackChain<'r> {
        FallbackChain {
            rest: self.fallbacks.iter(),
            version,
        }
    }

    /// A version by the bytes of its name (the pin header's value).
    pub fn version_index(&self, name: &[u8]) -> Option<usize> {
        self.versions
            .iter()
            .position(|v| v.target.name.as_bytes() == name)
    }

    /// The version a session value `VERSION.VALUE` names, and where its
    /// bare value starts (see [`crate::routing::session`]).
    pub fn session_version(&self, value: &[u8]) -> Option<(usize, usize)> {
        crate::routing::session::named_version(
            self.versions.iter().map(|v| v.target.name.as_bytes()),
            value,
        )
    }

    /// Session affinity (SPEC §3), checked before pins and the split: the
    /// version the request's session header names, live or gone. A value
    /// naming no version (or not visible ASCII) gives `None`: the request
    /// is split as usual, its header left as it is.
    pub fn session(&self, headers: &http::HeaderMap) -> Option<crate::routing::session::Session> {
        use crate::routing::session::Session;
        let value = headers.get(self.session_header.as_ref()?)?;
        let (index, at) = self.session_version(value.as_bytes())?;
        if self.versions[index].weight.get() == 0 {
            return Some(Session::Gone(index));
        }
        let bare = HeaderValue::from_bytes(&value.as_bytes()[at..]).ok()?;
        Some(Session::Live(index, bare))
    }
}

/// Mirrors in flight to a shadowing canary at most.
const CANARY_MIRRORS_IN_FLIGHT: usize = 256;

/// The long-lived state, kept by the gateway across generations, that a
/// config is compiled against.
pub struct Shared<'a> {
    /// The upstreams' long-lived states, in config order (a prepared
    /// [`crate::upstream::UpstreamPlan`], or the running generation's).
    pub upstreams: &'a [Arc<UpstreamState>],
    pub shadows: &'a ShadowStates,
    /// Rollouts by route name: their live weights and stats.
    pub rollouts: &'a HashMap<String, LiveRollout>,
}

impl Runtime {
    /// Compile a validated config. Fails only on what validation cannot
    /// see. Has no side effects: the caller publishes the result (and its
    /// gauges, [`Runtime::publish_gauges`]) once it is sure to swap it in.
    pub fn compile(
        config: Config,
        shared: &Shared<'_>,
        generation: u64,
    ) -> Result<Runtime, String> {
        if shared.upstreams.len() != config.upstreams.len() {
            return Err(format!(
                "{} upstream states for {} upstreams",
                shared.upstreams.len(),
                config.upstreams.len()
            ));
        }
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .zip(shared.upstreams)
            .map(|(u, state)| compile_upstream(u, Arc::clone(state)).map(Arc::new))
            .collect::<Result<_, _>>()?;
        let find = |name: &str| {
            upstreams
                .iter()
                .find(|u| &*u.name == name)
                .cloned()
                .ok_or_else(|| format!("unknown upstream {name:?}"))
        };
        let mut routes = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let live = r
                .rollout
                .as_ref()
                .zip(shared.rollouts.get(&r.name))
                .and_then(|(cfg, live)| {
                    let baseline = r
                        .versions
                        .iter()
                        .position(|v| v.target.name == cfg.baseline)?;
                    let canary = r
                        .versions
                        .iter()
                        .position(|v| v.target.name == cfg.canary)?;
                    Some((live, baseline, canary))
                });
            let versions: Vec<Version> = r
                .versions
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let mut weight = v.weight;
                    let mut metrics = VersionMetrics::new(&r.name, &v.target.name);
                    let mut pinned_metrics = None;
                    if let Some((live, baseline, canary)) = live {
                        let canary_bps = live.canary_weight.get();
                        let (role, bps) = if i == canary {
                            (Role::Canary, canary_bps)
                        } else if i == baseline {
                            (Role::Baseline, BUCKETS - canary_bps.min(BUCKETS))
                        } else {
                            return Err(format!(
                                "route {:?}: a version outside its rollout",
                                r.name
                            ));
                        };
                        weight = WeightBps::new(bps).unwrap_or(weight);
                        // A fleet replica whose config names another canary
                        // than the fleet's serves the baseline and judges
                        // nothing (SPEC §12).
                        if live.counted {
                            pinned_metrics =
                                Some(Arc::new(VersionMetrics::new(&r.name, &v.target.name)));
                            metrics.outcome_sink = Some(Arc::new(JudgedOutcomes {
                                stats: Arc::clone(&live.stats),
                                role,
                            }));
                        }
                    }
                    Ok(Version {
                        target: compile_target(&r.name, &v.target, find(&v.target.upstream)?)?,
                        weight,
                        metrics: Arc::new(metrics),
                        pinned_metrics,
                    })
                })
                .collect::<Result<_, String>>()?;
            let fallbacks = r
                .fallbacks
                .iter()
                .map(|f| {
                    let t = match f {
                        FallbackConfig::Target(t) => t,
                        FallbackConfig::Version(name) => {
                            &r.version(name)
                                .ok_or_else(|| format!("unknown fallback version {name:?}"))?
                                .target
                        }
                    };
                    compile_target(&r.name, t, find(&t.upstream)?)
                })
                .collect::<Result<Vec<_>, String>>()?;
            let mut shadows = r
                .shadows
                .iter()
                .map(|s| {
                    let target = compile_target(&r.name, &s.target, find(&s.target.upstream)?)?;
                    let state = shared.shadows.get(&r.name, &s.target.name);
                    Ok(Shadow::new(s, target, &r.name, &r.salt, state))
                })
                .collect::<Result<Vec<_>, String>>()?;
            // Shadowing (SPEC §9): every request is mirrored to the canary,
            // whose answers feed the judge.
            if let Some((live, _, canary)) = live
                && live.mirrored
            {
                let v = &r.versions[canary];
                let upstream = find(&v.target.upstream)?;
                let mirror = ShadowConfig {
                    target: v.target.clone(),
                    percent: WeightBps::FULL,
                    max_in_flight: Some(CANARY_MIRRORS_IN_FLIGHT),
                    timeout: upstream.config.header_timeout + upstream.config.idle_timeout,
                    compare: Vec::new(),
                };
                let target = compile_target(&r.name, &v.target, upstream)?;
                let state = shared.shadows.get(&r.name, "rollout/canary");
                let mut shadow = Shadow::new(&mirror, target, &r.name, &r.salt, state);
                shadow.judged = Some(Arc::clone(&live.stats));
                shadows.push(shadow);
            }
            routes.push(Route {
                name: r.name.as_str().into(),
                matcher: r.matcher.clone(),
                sticky: r.sticky.clone().into_boxed_slice(),
                salt: r.salt.as_bytes().into(),
                pin_header: r.pin_header.clone(),
                pin_token: r.pin_token.as_deref().map(Secret::new),
                table: BucketTable::new(versions.iter().map(|v| v.weight)),
                versions: versions.into_boxed_slice(),
                fallbacks: fallbacks.into_boxed_slice(),
                compare_reach: Arc::new(Reach::of(
                    shadows
                        .iter()
                        .flat_map(|s| s.compare.iter().map(String::as_str)),
                )),
                shadows: shadows.into_boxed_slice(),
                cache: r.cache.as_ref().map(|c| RouteCache::new(&r.name, c)),
                judging: live.filter(|(live, _, _)| live.counted).map(
                    |(live, baseline, canary)| Judging {
                        stats: Arc::clone(&live.stats),
                        baseline,
                        canary,
                    },
                ),
                refusal: Refusal::render(&r.refusal),
                unassigned_metrics: VersionMetrics::new(&r.name, ""),
                metrics: RouteMetrics::new(&r.name),
                session_header: r.session_header.clone(),
            });
        }
        Ok(Runtime {
            route_index: RouteIndex::new(routes.iter().map(|r| &r.matcher)),
            generation,
            feedback_token: config.server.feedback_token.as_deref().map(Secret::new),
            loaded_at: SystemTime::now(),
            config: Arc::new(config),
            routes: routes.into_boxed_slice(),
            upstreams: upstreams.into_boxed_slice(),
        })
    }
}

impl Runtime {
    /// The states of this generation's upstreams, in config order: what a
    /// recompile of the same config runs on.
    pub fn upstream_states(&self) -> Vec<Arc<UpstreamState>> {
        self.upstreams
            .iter()
            .map(|u| Arc::clone(&u.state))
            .collect()
    }

    /// `cutover_route_weight` and `cutover_config_generation` for this
    /// generation, once it is the one in force.
    pub fn publish_gauges(&self) {
        for route in self.routes.iter() {
            for v in route.versions.iter() {
                metrics::gauge!(names::ROUTE_WEIGHT, "route" => route.name.to_string(), "version" => v.target.name.to_string())
                    .set(v.weight.percent());
            }
        }
        metrics::gauge!(names::CONFIG_GENERATION).set(self.generation as f64);
    }

    /// Create, at 0, the counter series this config makes possible but
    /// that only count rare events (a reload, a fallback, a rollback), so
    /// every SPEC §7 family is on `/metrics` from the start and `increase`
    /// sees their first event. Adding 0 keeps any count already there.
    /// Once per generation: a republish changes weights, not these series.
    pub fn announce_counters(&self) {
        use crate::telemetry::metrics::rare;
        for ok in [true, false] {
            rare::config_reloads(ok).increment(0);
        }
        for route in self.routes.iter() {
            // Each version's chain: itself, then the fallbacks but itself.
            for v in route.versions.iter() {
                let mut from = &v.target.name;
                for to in route.fallback_chain(&v.target.name) {
                    rare::fallbacks(&route.name, from, &to.name).increment(0);
                    from = &to.name;
                }
            }
            if route.judging.is_some() {
                for reason in crate::rollout::ReasonKind::all() {
                    rare::rollbacks(&route.name, reason.as_str()).increment(0);
                }
            }
        }
    }
}

/// A version's fallbacks ([`Route::fallback_chain`]). A named type, not
/// a `filter` adaptor: the fallback phase holds it across awaits, where a
/// closure's type trips the request future's `Send`.
#[derive(Clone)]
pub struct FallbackChain<'r> {
    rest: std::slice::Iter<'r, Target>,
    version: &'r str,
}

impl<'r> Iterator for FallbackChain<'r> {
    type Item = &'r Target;

    fn next(&mut self) -> Option<&'r Target> {
        let version = self.version;
        self.rest.find(|f| *f.name != *version)
    }
}

fn header_value(s: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(s).map_err(|_| format!("{s:?} is not a valid header value"))
}

fn compile_upstream(u: &UpstreamConfig, state: Arc<UpstreamState>) -> Result<Upstream, String> {
    let scheme = match u.url.scheme {
        config::Scheme::Http => Scheme::HTTP,
        config::Scheme::Https => Scheme::HTTPS,
    };
    Ok(Upstream {
        name: u.name.as_str().into(),
        name_header: header_value(&u.name)?,
        config: u.clone(),
        state,
        scheme,
        authority: u.url.authority.clone(),
        host_header: header_value(u.url.authority.as_str())?,
        path_prefix: (!u.url.path_prefix.is_empty()).then(|| u.url.path_prefix.as_str().into()),
        metrics: UpstreamMetrics::new(&u.name),
    })
}

fn compile_target(
    route: &str,
    t: &TargetConfig,
    upstream: Arc<Upstream>,
) -> Result<Target, String> {
    let set_json = (!t.set_json.is_empty()).then(|| t.set_json.clone());
    Ok(Target {
        cache_key: KeyPrefix::new(route, &t.name, &t.deps, set_json.as_ref()),
        name: t.name.as_str().into(),
        name_header: header_value(&t.name)?,
        upstream,
        set_headers: t.set_headers.clone().into_boxed_slice(),
        set_json,
        cost: t.cost,
        deps_json: serde_json::Value::Object(t.deps.clone())
            .to_string()
            .into_boxed_str(),
        deps: t.deps.clone(),
    })
}
