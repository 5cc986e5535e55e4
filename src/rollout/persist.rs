//! Rollout state on disk: `state.dir/<route>.json`, written atomically on
//! every transition and read once at start.
//!
//! What persists: the state (with the paused stage or the rollback reason),
//! the step's start as wall-clock time, and a fingerprint of the canary
//! (its upstream url and deps). What does not: the step's counters. A
//! restart resumes the same step with its original start, so the interval
//! is not restarted and no step is skipped, but the step collects its
//! `min_requests` again from zero (counts from a previous process cannot be
//! trusted to be complete, and a fresh confidence sequence is valid on its
//! own).
//!
//! `paused` restores as `paused` on the same stage: an operator's pause
//! must survive a crash or a deploy. `rolled_back` and `promoted` restore as
//! they were; a changed fingerprint (a new canary) starts a new rollout.
//!
//! The write is the classic sequence: write a temporary file in the same
//! directory, fsync it, rename it over the target, fsync the directory; a
//! crash leaves either the old file or the new one, never a torn one.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{Deps, RolloutConfig};
use crate::rollout::controller::{Controller, State};

/// The file's format version; a file of another version starts afresh.
pub const FORMAT: u32 = 1;

/// The JSON written to `state.dir/<route>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PersistedState {
    pub format: u32,
    pub route: String,
    /// [`fingerprint`] of the canary this state belongs to.
    pub canary: String,
    #[serde(flatten)]
    pub state: State,
    /// When the current stage began, in Unix milliseconds.
    pub stage_started_ms: u64,
    pub saved_at_ms: u64,
}

/// A stable digest of what makes a canary *this* canary: its upstream url
/// and its deps. Deps are a BTreeMap-backed JSON map, so their encoding is
/// canonical.
pub fn fingerprint(canary_upstream_url: &str, deps: &Deps) -> String {
    let mut h = blake3::Hasher::new();
    let url = canary_upstream_url.as_bytes();
    h.update(&(url.len() as u64).to_le_bytes());
    h.update(url);
    let deps = serde_json::to_vec(deps).unwrap_or_default();
    h.update(&deps);
    h.finalize().to_hex()[..32].to_string()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl PersistedState {
    /// What to save for `controller` now. `now` and `wall_now` are the same
    /// moment on the monotonic and the wall clock.
    pub fn capture(
        route: &str,
        canary: &str,
        controller: &Controller,
        now: Instant,
        wall_now: SystemTime,
    ) -> PersistedState {
        let elapsed = now.saturating_duration_since(controller.stage_started());
        let started = wall_now.checked_sub(elapsed).unwrap_or(UNIX_EPOCH);
        PersistedState {
            format: FORMAT,
            route: route.to_string(),
            canary: canary.to_string(),
            state: controller.state().clone(),
            stage_started_ms: unix_ms(started),
            saved_at_ms: unix_ms(wall_now),
        }
    }
}

/// The controller to run at start: the persisted rollout if it belongs to
/// this canary, else a new one. A wall clock that went backwards counts as
/// no time elapsed.
pub fn restore_controller(
    cfg: &RolloutConfig,
    canary: &str,
    persisted: Option<PersistedState>,
    now: Instant,
    wall_now: SystemTime,
) -> Controller {
    match persisted {
        Some(p) if p.format == FORMAT && p.canary == canary => {
            let elapsed_ms = unix_ms(wall_now).saturating_sub(p.stage_started_ms);
            Controller::restore(cfg, p.state, Duration::from_millis(elapsed_ms), now)
        }
        _ => Controller::new(cfg, now),
    }
}

/// `dir/<route>.json`. Route names are config names, but a `/` or `..`
/// must still not leave the directory: anything but `[A-Za-z0-9._-]` is
/// percent-encoded, and a leading dot too.
pub fn state_path(dir: &Path, route: &str) -> PathBuf {
    let mut name = String::with_capacity(route.len() + 5);
    for (i, b) in route.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0) {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name.push_str(".json");
    dir.join(name)
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a rollout state file: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Writes the state atomically (temp file, fsync, rename, fsync dir).
/// Blocking I/O: call it from `spawn_blocking` or a control-plane thread.
pub fn save(dir: &Path, state: &PersistedState) -> Result<(), PersistError> {
    let path = state_path(dir, &state.route);
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PersistError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let json = serde_json::to_vec_pretty(state).map_err(|source| PersistError::Parse {
        path: path.clone(),
        source,
    })?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&json).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    // The rename is durable only once the directory entry is.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(())
}

/// Reads `dir/<route>.json`: `Ok(None)` when there is none.
pub fn load(dir: &Path, route: &str) -> Result<Option<PersistedState>, PersistError> {
    let path = state_path(dir, route);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PersistError::Io { path, source }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| PersistError::Parse { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::controller::{Action, Stage};

    fn cfg() -> RolloutConfig {
        crate::rollout::test_config(
            &[100, 500, 2_500, 10_000],
            Duration::from_secs(600),
            100,
            0.01,
            None,
        )
    }

    #[test]
    fn fingerprint_changes_with_url_or_deps() {
        let mut deps = Deps::new();
        deps.insert("model".into(), "m1".into());
        let a = fingerprint("http://a", &deps);
        assert_eq!(a, fingerprint("http://a", &deps));
        assert_ne!(a, fingerprint("http://b", &deps));
        deps.insert("prompt".into(), "p@2".into());
        assert_ne!(a, fingerprint("http://a", &deps));
    }

    #[test]
    fn paths_stay_in_the_directory() {
        let dir = Path::new("/state");
        assert_eq!(state_path(dir, "chat"), Path::new("/state/chat.json"));
        assert_eq!(state_path(dir, "../x"), Path::new("/state/%2E.%2Fx.json"));
        assert_eq!(state_path(dir, "a/b"), Path::new("/state/a%2Fb.json"));
    }

    #[test]
    fn a_restart_resumes_the_same_step_with_its_start() -> Result<(), PersistError> {
        let tmp = tempfile::tempdir().map_err(|source| PersistError::Io {
            path: PathBuf::new(),
            source,
        })?;
        let t0 = Instant::now();
        let wall0 = SystemTime::now();
        let mut c = Controller::restore(&cfg(), State::Canary { step: 2 }, Duration::ZERO, t0);
        assert!(c.act(Action::Pause, t0).is_ok());
        // Saved 100 s into the step.
        let saved = PersistedState::capture(
            "chat",
            "fp1",
            &c,
            t0 + Duration::from_secs(100),
            wall0 + Duration::from_secs(100),
        );
        save(tmp.path(), &saved)?;
        assert_eq!(load(tmp.path(), "chat")?, Some(saved.clone()));
        assert_eq!(load(tmp.path(), "other")?, None);
        // The process comes back 50 s later.
        let t1 = Instant::now();
        let wall1 = wall0 + Duration::from_secs(150);
        let c = restore_controller(&cfg(), "fp1", load(tmp.path(), "chat")?, t1, wall1);
        assert_eq!(
            c.state(),
            &State::Paused {
                stage: Stage::Canary { step: 2 }
            }
        );
        let elapsed = t1.duration_since(c.stage_started());
        assert!(
            elapsed >= Duration::from_millis(149_900) && elapsed <= Duration::from_millis(150_100),
            "{elapsed:?}"
        );
        // Another canary: a new rollout.
        let c = restore_controller(&cfg(), "fp2", load(tmp.path(), "chat")?, t1, wall1);
        assert_eq!(c.state(), &State::Canary { step: 0 });
        // A torn or foreign file is an error for the caller to log.
        fs::write(state_path(tmp.path(), "bad"), b"{").map_err(|source| PersistError::Io {
            path: PathBuf::new(),
            source,
        })?;
        assert!(matches!(
            load(tmp.path(), "bad"),
            Err(PersistError::Parse { .. })
        ));
        Ok(())
    }

    #[test]
    fn rolled_back_persists_with_its_reason() {
        let t0 = Instant::now();
        let mut c = Controller::new(&cfg(), t0);
        assert!(c.act(Action::Abort, t0).is_ok());
        let p = PersistedState::capture("chat", "fp", &c, t0, SystemTime::now());
        let json = serde_json::to_string(&p).unwrap_or_default();
        assert!(json.contains(r#""state":"rolled_back""#), "{json}");
        assert!(json.contains(r#""kind":"abort""#), "{json}");
        let back: Option<PersistedState> = serde_json::from_str(&json).ok();
        let c = restore_controller(&cfg(), "fp", back, t0, SystemTime::now());
        assert_eq!(c.state().name(), "rolled_back");
    }
}
