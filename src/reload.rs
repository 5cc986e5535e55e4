//! Hot reload triggers (SPEC §8): a change to the config file and SIGHUP.
//! Both end in [`Gateway::reload`], which runs one reload at a time,
//! prepares (load, validate, compile) and swaps with one atomic store, and
//! logs and counts the outcome. `POST /reload` calls it directly.
//!
//! One file change, end to end:
//!
//! ```text
//! notify (its own thread) ─► watch thread: relevant? re-resolve, re-add watches ─► ping (capacity 1)
//!   ─► async task: wait until pings stop for `debounce` ─► read twice, `settle` apart
//!        ├─ the reads differ or fail ─► wait another quiet period (bounded)
//!        ├─ same blake3 hash as the last content seen ─► nothing (a touch)
//!        └─ new content ─► Gateway::reload
//! ```
//!
//! Relevance. The config file's directory is watched, not the file: an
//! editor's write-and-rename and a Kubernetes ConfigMap update replace the
//! file's inode, and a watch on the old inode would go deaf. An event
//! counts when one of its paths is the config path, the ConfigMap's
//! `..data` symlink, the file the config path resolves to (before or after
//! the event), or a watched directory itself; reads (open, close without
//! write) never count, since our own reads would otherwise wake us.
//!
//! Events of other files in the directory (an access log written beside
//! the config, say) are dropped by name before anything touches the file
//! system: only a path whose file name is one of the config path's own
//! names (its components, the symlinks it resolves through and theirs,
//! `..data`) is looked at further.
//!
//! Following swaps, as Vector's watcher does. After every relevant batch of
//! events (and once a second) the thread re-resolves the config path and re-adds
//! its watches when a watched directory was replaced (its device and inode
//! changed) or the resolved file moved to another directory. The second
//! directory watch covers a config path that is a symlink to a file
//! elsewhere. The once-a-second check also catches a swap that no watch
//! can see (a symlinked parent directory swapped in its own parent).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::gateway::Gateway;

/// Kubernetes ConfigMap volumes publish an update by renaming a new
/// `..data` symlink over the old one; the config file is a symlink through it.
const CONFIGMAP_DATA: &str = "..data";
/// How often the watch thread re-checks the resolved path and its watches
/// without an event, and notices the async side has stopped.
const RESYNC_EVERY: Duration = Duration::from_secs(1);
/// Quiet periods to wait for a file that reads differently twice in a row
/// (or cannot be read, as during a swap) before reloading anyway and
/// letting validation decide.
const MAX_UNSETTLED: u32 = 20;

/// How the reloader behaves. `Options::default()` is what `cutover serve` uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// Events must stop for this long before the file is read: an editor's
    /// save or a ConfigMap update is a burst of several events.
    pub debounce: Duration,
    /// The file is read twice this far apart and only used when both reads
    /// agree, so a file still being written is never taken as complete.
    pub settle: Duration,
    /// Reload when the config file changes.
    pub watch_file: bool,
    /// Reload on SIGHUP (unix only).
    pub sighup: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            debounce: Duration::from_millis(250),
            settle: Duration::from_millis(50),
            watch_file: true,
            sighup: true,
        }
    }
}

/// What the reloader has done, for tests and debugging. Reload outcomes
/// themselves are counted by the gateway (`cutover_config_reloads_total`).
#[derive(Debug, Default)]
pub struct Stats {
    relevant: AtomicU64,
    checks: AtomicU64,
    unchanged: AtomicU64,
    unsettled: AtomicU64,
    file_reloads: AtomicU64,
    signal_reloads: AtomicU64,
    rewatches: AtomicU64,
    resolves: AtomicU64,
}

impl Stats {
    /// Batches of relevant file events seen by the watch thread.
    pub fn relevant_events(&self) -> u64 {
        self.relevant.load(Ordering::Relaxed)
    }
    /// Quiet periods that ended in reading the file.
    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }
    /// Checks that found the content unchanged (e.g. a `touch`).
    pub fn unchanged(&self) -> u64 {
        self.unchanged.load(Ordering::Relaxed)
    }
    /// Checks that found the file unreadable or still changing.
    pub fn unsettled(&self) -> u64 {
        self.unsettled.load(Ordering::Relaxed)
    }
    /// Reloads started because the file changed.
    pub fn file_reloads(&self) -> u64 {
        self.file_reloads.load(Ordering::Relaxed)
    }
    /// Reloads started by SIGHUP.
    pub fn signal_reloads(&self) -> u64 {
        self.signal_reloads.load(Ordering::Relaxed)
    }
    /// Times a watch was re-added because a directory was replaced or the
    /// config path now resolves elsewhere.
    pub fn rewatches(&self) -> u64 {
        self.rewatches.load(Ordering::Relaxed)
    }
    /// Times the watch thread asked the file system about the config path
    /// (resolving it, or an event's path): after a relevant event and once
    /// a second, never for events of other files.
    pub fn resolves(&self) -> u64 {
        self.resolves.load(Ordering::Relaxed)
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A running reloader. Dropping it stops it; [`Reloader::join`] waits for
/// it to stop on its own (after its shutdown future resolved).
pub struct Reloader {
    task: Option<JoinHandle<()>>,
    stats: Arc<Stats>,
    ready: tokio::sync::watch::Receiver<bool>,
}

impl Reloader {
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Resolves once the watches are in place and the current content is
    /// known: a change made after this is reloaded. (Also resolves if the
    /// reloader stopped or could not watch; see the logs.)
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Wait until the reloader has stopped.
    pub async fn join(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Start the file watcher and the SIGHUP handler with the default options;
/// they stop when `shutdown` resolves. Needs a tokio runtime.
pub fn spawn(
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Reloader {
    spawn_with(gateway, Options::default(), shutdown)
}

/// [`spawn`] with explicit options.
pub fn spawn_with(
    gateway: Arc<Gateway>,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Reloader {
    spawn_on(
        &tokio::runtime::Handle::current(),
        gateway,
        options,
        shutdown,
    )
}

/// [`spawn_with`] on a given runtime: `cutover serve` runs the reloader,
/// and so the reloads it starts, on the control plane's thread.
pub fn spawn_on(
    runtime: &tokio::runtime::Handle,
    gateway: Arc<Gateway>,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Reloader {
    let stats = Arc::new(Stats::default());
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let stats_for_task = Arc::clone(&stats);
    let task = runtime.spawn(async move {
        watch(
            gateway,
            options,
            Arc::clone(&stats_for_task),
            shutdown,
            Some(ready_tx),
        )
        .await;
    });
    Reloader {
        task: Some(task),
        stats,
        ready,
    }
}

/// Reload on file changes and SIGHUP until `shutdown` resolves. `ready`
/// is set to true once the watches are in place.
pub async fn watch(
    gateway: Arc<Gateway>,
    options: Options,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
    ready: Option<tokio::sync::watch::Sender<bool>>,
) {
    let path =
        std::path::absolute(&gateway.config_path).unwrap_or_else(|_| gateway.config_path.clone());

    // Capacity 1: a ping only says "look again", so pings that find one
    // already queued are dropped, and the channel cannot grow.
    let (ping_tx, mut pings) = mpsc::channel::<()>(1);
    let mut watching = false;
    if options.watch_file {
        let thread_path = path.clone();
        let thread_stats = Arc::clone(&stats);
        let (watching_tx, watching_rx) = tokio::sync::oneshot::channel::<()>();
        match std::thread::Builder::new()
            .name("cutover-config-watch".into())
            .spawn(move || watch_thread(&thread_path, &ping_tx, &thread_stats, watching_tx))
        {
            Ok(_) => {
                watching = true;
                // Dropped unsent if the watcher cannot be created.
                let _ = watching_rx.await;
            }
            Err(e) => tracing::error!(error = %e,
                "cannot start the config file watcher; reload with SIGHUP or POST /reload"),
        }
    }
    let mut hangup = if options.sighup {
        hangup_stream()
    } else {
        None
    };

    // Started after the watch thread, so a change from here on is either
    // in this hash or seen as an event.
    let mut last = read(&path).await.ok().map(|b| blake3::hash(&b));
    if let Some(ready) = ready {
        let _ = ready.send(true);
    }
    let mut deadline: Option<Instant> = None;
    let mut unsettled = 0u32;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            ping = pings.recv(), if watching => match ping {
                Some(()) => {
                    deadline = Some(Instant::now() + options.debounce);
                    unsettled = 0;
                }
                None => {
                    watching = false;
                    tracing::warn!(path = %path.display(),
                        "the config file watcher stopped; reload with SIGHUP or POST /reload");
                }
            },
            () = next_hangup(&mut hangup) => {
                bump(&stats.signal_reloads);
                // Remember what is being loaded, so the file events of the
                // same change find nothing new.
                if let Ok(bytes) = read(&path).await {
                    last = Some(blake3::hash(&bytes));
                }
                tracing::info!(trigger = "sighup", "reloading the config");
                let _ = gateway.reload().await;
            }
            () = until(deadline) => {
                deadline = None;
                bump(&stats.checks);
                match settled_read(&path, options.settle).await {
                    Ok(bytes) => {
                        let hash = blake3::hash(&bytes);
                        if last == Some(hash) {
                            bump(&stats.unchanged);
                            tracing::debug!(path = %path.display(), "config file touched, content unchanged");
                        } else {
                            // Remembered even if it turns out invalid: the
                            // same bytes would fail the same way. Fixing an
                            // outside cause (an env var, a TLS file) needs
                            // SIGHUP or POST /reload.
                            last = Some(hash);
                            bump(&stats.file_reloads);
                            tracing::info!(trigger = "file", path = %path.display(), "config file changed; reloading");
                            let _ = gateway.reload().await;
                        }
                    }
                    Err(why) => {
                        bump(&stats.unsettled);
                        unsettled += 1;
                        if unsettled < MAX_UNSETTLED {
                            tracing::debug!(path = %path.display(), %why, "config file not settled; waiting");
                            deadline = Some(Instant::now() + options.debounce);
                        } else {
                            // Let the gateway try: it records and shows the
                            // error if the file is really gone or broken.
                            unsettled = 0;
                            last = None;
                            bump(&stats.file_reloads);
                            tracing::warn!(path = %path.display(), %why, "config file did not settle; reloading anyway");
                            let _ = gateway.reload().await;
                        }
                    }
                }
            }
        }
    }
    // Dropping `pings` tells the watch thread to stop (within RESYNC_EVERY).
}

async fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    tokio::fs::read(path).await
}

/// The file's content if two reads `settle` apart agree.
async fn settled_read(path: &Path, settle: Duration) -> Result<Vec<u8>, String> {
    let first = read(path).await.map_err(|e| format!("cannot read: {e}"))?;
    tokio::time::sleep(settle).await;
    let second = read(path).await.map_err(|e| format!("cannot read: {e}"))?;
    if first == second {
        Ok(second)
    } else {
        Err("the content changed between two reads".to_string())
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_stream() -> Option<Hangup> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by file or POST /reload");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_stream() -> Option<Hangup> {
    None
}

/// Resolves on the next SIGHUP; never without a handler.
async fn next_hangup(hangup: &mut Option<Hangup>) {
    #[cfg(unix)]
    if let Some(signal) = hangup {
        if signal.recv().await.is_some() {
            return;
        }
        *hangup = None;
    }
    #[cfg(not(unix))]
    let _ = hangup;
    std::future::pending().await
}

// ---------------------------------------------------------------------------
// The watch thread. notify delivers events on its own thread and its
// watch/unwatch calls wait for that thread's reply; deciding relevance also
// takes stat and canonicalize calls. None of it belongs on a runtime worker,
// so this thread owns the watcher and hands the runtime a ping.

/// Every file name on the way from `path` to the file it resolves to: the
/// components of `path` and of `real`, of every symlink target met along
/// the way (each component of `path` followed, up to 40 links), and
/// `..data`. An event whose path ends in any other name cannot change what
/// the config path reads.
fn names_of(path: &Path, real: Option<&Path>) -> Vec<std::ffi::OsString> {
    let mut names: Vec<std::ffi::OsString> = vec![CONFIGMAP_DATA.into()];
    let mut add = |p: &Path| {
        for c in p.components() {
            if let std::path::Component::Normal(n) = c
                && !names.iter().any(|k| k == n)
            {
                names.push(n.to_os_string());
            }
        }
    };
    add(path);
    if let Some(real) = real {
        add(real);
    }
    // Symlinks anywhere along the path: each prefix that is a link, and
    // where it points (relative targets add their own names).
    let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
    let mut hops = 0;
    while let Some(p) = pending.pop() {
        let mut prefix = PathBuf::new();
        for c in p.components() {
            prefix.push(c);
            if hops >= 40 {
                break;
            }
            if let Ok(target) = std::fs::read_link(&prefix) {
                hops += 1;
                add(&target);
                let base = prefix.parent().unwrap_or(Path::new("/"));
                pending.push(base.join(target));
            }
        }
    }
    names
}

/// (device, inode): tells a directory from the one that replaced it.
type Identity = (u64, u64);

#[cfg(unix)]
fn identity(path: &Path) -> Option<Identity> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(path: &Path) -> Option<Identity> {
    std::fs::metadata(path).ok().map(|_| (0, 0))
}

struct Follower {
    /// The config path as configured, made absolute (not resolved).
    path: PathBuf,
    /// Its directory: always watched.
    dir: PathBuf,
    /// What `path` resolves to now, if it resolves.
    real: Option<PathBuf>,
    /// Directories watched, with their identity when the watch was added.
    watched: Vec<(PathBuf, Option<Identity>)>,
    /// Every file name an event must carry to concern the config path (see
    /// [`Follower::may_concern`]), refreshed by each sync.
    names: Vec<std::ffi::OsString>,
    watcher: notify::RecommendedWatcher,
    /// The first sync only sets up: nothing has moved yet.
    started: bool,
}

fn watch_thread(
    path: &Path,
    ping: &mpsc::Sender<()>,
    stats: &Stats,
    watching: tokio::sync::oneshot::Sender<()>,
) {
    let (tx, events) = std::sync::mpsc::channel::<notify::Result<notify::Event>>();
    let watcher = match notify::recommended_watcher(tx) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the config file watcher; reload with SIGHUP or POST /reload");
            return;
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut follower = Follower {
        path: path.to_path_buf(),
        dir,
        real: None,
        watched: Vec::new(),
        names: Vec::new(),
        watcher,
        started: false,
    };
    follower.sync();
    bump(&stats.resolves);
    if follower.watched.is_empty() {
        tracing::error!(path = %path.display(), "cannot watch the config file's directory; retrying every second");
    } else {
        tracing::debug!(dirs = ?follower.watched.iter().map(|(d, _)| d).collect::<Vec<_>>(), "watching the config file");
    }
    let _ = watching.send(());

    let mut synced = std::time::Instant::now();
    loop {
        let mut relevant = false;
        match events.recv_timeout(RESYNC_EVERY.saturating_sub(synced.elapsed())) {
            Ok(first) => {
                relevant |= follower.relevant(&first, stats);
                // Take the rest of the burst in one go.
                while let Ok(more) = events.try_recv() {
                    relevant |= follower.relevant(&more, stats);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if ping.is_closed() {
            return;
        }
        // Other files' events (a busy log beside the config) neither
        // count nor make us resolve the path again: that waits for a
        // relevant event or the once-a-second check.
        if !relevant && synced.elapsed() < RESYNC_EVERY {
            continue;
        }
        synced = std::time::Instant::now();
        bump(&stats.resolves);
        let moved = follower.sync();
        if moved {
            bump(&stats.rewatches);
        }
        if relevant || moved {
            bump(&stats.relevant);
            if let Err(mpsc::error::TrySendError::Closed(())) = ping.try_send(()) {
                return;
            }
        }
    }
}

impl Follower {
    fn relevant(&mut self, event: &notify::Result<notify::Event>, stats: &Stats) -> bool {
        use notify::EventKind;
        use notify::event::{AccessKind, AccessMode};
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                // A lost watch, a full queue: look again, and re-add every
                // watch on the next sync.
                tracing::warn!(error = %e, "config file watcher error");
                self.watched.iter_mut().for_each(|(_, id)| *id = None);
                return true;
            }
        };
        if event.need_rescan() {
            return true;
        }
        match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
            // Opens and reads, ours included.
            EventKind::Access(_) => return false,
            _ => {}
        }
        if event.paths.is_empty() {
            return true;
        }
        event.paths.iter().any(|p| {
            self.may_concern(p) && {
                bump(&stats.resolves);
                self.concerns(p)
            }
        })
    }

    /// Whether `p`'s file name is one a path the config depends on carries:
    /// the one check made for every event, without touching the file system.
    fn may_concern(&self, p: &Path) -> bool {
        match p.file_name() {
            Some(name) => self.names.iter().any(|n| n == name),
            None => true,
        }
    }

    /// Whether a change at `p` may change what the config path reads.
    fn concerns(&self, p: &Path) -> bool {
        if p == self.path || self.real.as_deref() == Some(p) {
            return true;
        }
        if self.watched.iter().any(|(d, _)| d == p) {
            return true;
        }
        if p.parent() == Some(self.dir.as_path())
            && p.file_name().is_some_and(|n| n == CONFIGMAP_DATA)
        {
            return true;
        }
        // Another name for the file (a symlink to it).
        match (&self.real, std::fs::canonicalize(p)) {
            (Some(real), Ok(target)) => &target == real,
            _ => false,
        }
    }

    /// Re-resolve the config path and make the watches match: its
    /// directory, and the resolved file's directory. A directory whose
    /// identity changed was replaced and is watched again. Returns whether
    /// anything moved (a re-added watch or a new resolved path).
    fn sync(&mut self) -> bool {
        use notify::{RecursiveMode, Watcher};
        let first = !std::mem::replace(&mut self.started, true);
        let real = std::fs::canonicalize(&self.path).ok();
        let mut moved = real != self.real;
        self.real = real;
        self.names = names_of(&self.path, self.real.as_deref());

        let mut wanted = vec![self.dir.clone()];
        if let Some(parent) = self.real.as_deref().and_then(Path::parent)
            && parent != self.dir
            && identity(parent) != identity(&self.dir)
        {
            wanted.push(parent.to_path_buf());
        }

        // Drop watches no longer wanted (e.g. an old ConfigMap data dir).
        let mut kept = Vec::with_capacity(wanted.len());
        for (dir, id) in std::mem::take(&mut self.watched) {
            if wanted.contains(&dir) {
                kept.push((dir, id));
            } else {
                // It may be gone already; notify forgets deleted dirs itself.
                let _ = self.watcher.unwatch(&dir);
            }
        }
        self.watched = kept;

        for dir in wanted {
            let now = identity(&dir);
            let current = self.watched.iter().position(|(d, _)| *d == dir);
            if let Some(i) = current {
                if now.is_some() && self.watched[i].1 == now {
                    continue;
                }
                let _ = self.watcher.unwatch(&dir);
                self.watched.swap_remove(i);
            }
            if now.is_none() {
                continue;
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.push((dir, now));
                    moved = true;
                }
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "cannot watch; retrying");
                }
            }
        }
        moved && !first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_every_symlink_to_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir(root.join("..2026_01")).expect("mkdir");
        std::fs::write(root.join("..2026_01").join("real.toml"), "").expect("write");
        std::os::unix::fs::symlink("..2026_01", root.join("..data")).expect("..data");
        std::os::unix::fs::symlink("..data/real.toml", root.join("cutover.toml")).expect("link");
        let path = root.join("cutover.toml");
        let real = std::fs::canonicalize(&path).ok();
        let names = names_of(&path, real.as_deref());
        for want in ["cutover.toml", "..data", "..2026_01", "real.toml"] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        assert!(!names.iter().any(|n| n == "access.log"));
    }
}
