//! `cutover demo --fleet`: three replicas, one rollout, on Redis (SPEC
//! §12), live on loopback.
//!
//! A local `redis-server` on a free port (no persistence), two mock agent
//! versions in-process, and three replicas of this very binary as child
//! processes, each with its own ports and state directory, all in one
//! fleet. Simulated users are spread over the three; the rollout walks
//! 10 → 25 → 50 → 100 % on the fleet's summed counts. Halfway, the leader
//! is killed (SIGKILL): another replica takes the lease and the rollout
//! goes on from the stored step, to promotion, on the survivors. Like the
//! main demo it checks what it shows (one leader at a time, no step lost or
//! repeated, no user error) and exits 1 if a promise breaks.
//!
//! Without `redis-server` on PATH it says how to install it and exits 2.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::driver::{Ask, Driver, USER_HEADER};
use crate::admin::status::Status;
use crate::mock::{self, MockArgs, MockHandle};

/// The whole show must end by then.
const DEADLINE: Duration = Duration::from_secs(120);
/// Each step lasts at least this long on the fleet's clock.
const INTERVAL: &str = "2s";
const MIN_REQUESTS: u64 = 30;
const LEASE: Duration = Duration::from_millis(1500);
const SYNC: Duration = Duration::from_millis(250);
/// Users sending at once, spread over the live replicas.
const CONCURRENCY: usize = 12;
const REPLICAS: [&str; 3] = ["replica-a", "replica-b", "replica-c"];
/// "Promoted", in the sequence of steps the demo watches.
const PROMOTED: i64 = i64::MAX;

pub fn run(no_tty: bool) -> u8 {
    let Some(redis_server) = find_on_path("redis-server") else {
        eprintln!(
            "cutover demo --fleet needs redis-server on PATH to run its fleet's Redis.\n\
             Install it: apt-get install redis-server (Debian, Ubuntu), dnf install redis (Fedora), brew install redis (macOS).\n\
             The single-process demo needs nothing: cutover demo"
        );
        return super::super::EXIT_USAGE;
    };
    let runtime =
        match super::super::runtime(super::super::Threads::Workers(2), "cutover demo --fleet") {
            Ok(r) => r,
            Err(code) => return code,
        };
    let _ = no_tty; // the fleet demo always prints a transcript
    let verdict = runtime.block_on(async {
        tokio::select! {
            played = tokio::time::timeout(DEADLINE, play(&redis_server)) => match played {
                Ok(result) => result,
                Err(_) => Err(format!("the fleet demo did not finish within {DEADLINE:?}")),
            },
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    match verdict {
        Ok(()) => super::super::EXIT_OK,
        Err(e) => {
            eprintln!("cutover demo --fleet failed: {e}");
            super::super::EXIT_USER
        }
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

/// Wait until `proc` listens on `addr`: `Err(Some(status))` when it exits
/// first, `Err(None)` when `within` passes.
async fn listening(
    addr: SocketAddr,
    within: Duration,
    proc: &mut Proc,
) -> Result<(), Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = proc.0.try_wait() {
            return Err(Some(status));
        }
        if Instant::now() >= deadline {
            return Err(None);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A child process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Replica {
    name: &'static str,
    proc: Option<Proc>,
    traffic: SocketAddr,
    admin: SocketAddr,
    driver: Driver,
}

impl Replica {
    fn alive(&self) -> bool {
        self.proc.is_some()
    }

    async fn status(&self) -> Option<Status> {
        let uri: http::Uri = format!("http://{}/status", self.admin).parse().ok()?;
        let body = crate::cli::status::call(http::Method::GET, &uri, None)
            .await
            .ok()?;
        serde_json::from_slice(&body).ok()
    }
}

/// What one look at the fleet shows.
struct View {
    /// (replica, state, step, is leader, epoch, fleet canary requests)
    rows: Vec<(&'static str, String, i64, bool, u64, u64)>,
}

impl View {
    fn leaders(&self) -> Vec<&'static str> {
        self.rows.iter().filter(|r| r.3).map(|r| r.0).collect()
    }

    fn all(&self, state: &str) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(|r| r.1 == state)
    }

    fn min_step(&self) -> i64 {
        self.rows.iter().map(|r| r.2).min().unwrap_or(-1)
    }

    fn line(&self) -> String {
        self.rows
            .iter()
            .map(|(name, state, step, leader, _, canary)| {
                let at = match state.as_str() {
                    "canary" => format!("step {step}"),
                    other => other.to_string(),
                };
                format!(
                    "{name}{}: {at}, fleet canary n={canary}",
                    if *leader { " (leader)" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

async fn look(replicas: &[Replica]) -> View {
    let mut rows = Vec::new();
    for r in replicas.iter().filter(|r| r.alive()) {
        let Some(s) = r.status().await else { continue };
        let (leader, epoch) = s
            .cluster
            .as_ref()
            .map_or((false, 0), |c| (c.is_leader, c.epoch));
        let rollout = s
            .routes
            .first()
            .and_then(|route| route.rollout.clone())
            .unwrap_or_default();
        rows.push((
            r.name,
            rollout["state"].as_str().unwrap_or("?").to_string(),
            rollout["step"].as_i64().unwrap_or(-1),
            leader,
            epoch,
            rollout["canary"]["requests"].as_u64().unwrap_or(0),
        ));
    }
    View { rows }
}

fn say(started: Instant, line: &str) {
    println!("[{:>5.1}s] {line}", started.elapsed().as_secs_f64());
}

fn config(
    name: &str,
    traffic: u16,
    admin: u16,
    state: &Path,
    redis: u16,
    mocks: &[(&str, String)],
) -> String {
    let url = |n: &str| {
        mocks
            .iter()
            .find(|(m, _)| *m == n)
            .map_or(String::new(), |(_, u)| u.clone())
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:{traffic}"
shutdown_grace = "1s"
[admin]
listen = "127.0.0.1:{admin}"
[log]
access_log = false
level = "warn"
[state]
dir = "{state}"
[cluster]
redis = "redis://127.0.0.1:{redis}/0"
name = "demo"
replica = "{name}"
lease = "{lease}ms"
sync_interval = "{sync}ms"
[[upstreams]]
name = "agent-v1"
url = "{v1}"
[[upstreams]]
name = "agent-v2"
url = "{v2}"
[[routes]]
name = "agent"
match = {{ path_prefix = "/v1/" }}
sticky = ["header:{USER_HEADER}"]
[[routes.versions]]
name = "v1"
upstream = "agent-v1"
weight = 100.0
deps = {{ prompt = "support-prompt@2025-10-01", model = "gpt-4o-2024-08-06" }}
[[routes.versions]]
name = "v2"
upstream = "agent-v2"
weight = 0.0
deps = {{ prompt = "support-prompt@2025-11-03", model = "gpt-4o-2024-08-06" }}
[routes.rollout]
baseline = "v1"
canary = "v2"
steps = [10, 25, 50, 100]
interval = "{INTERVAL}"
min_requests = {MIN_REQUESTS}
[routes.rollout.gates]
error_rate_margin = 0.2
confidence = 0.9
[routes.rollout.rollback]
window = "30s"
min_requests = 20
error_rate = 0.5
"#,
        state = state.display(),
        lease = LEASE.as_millis(),
        sync = SYNC.as_millis(),
        v1 = url("agent-v1"),
        v2 = url("agent-v2"),
    )
}

/// Start one replica and wait for its admin port. Its ports are picked free
/// and then bound by the child, so another process can take one in
/// between (the tests run demos side by side): a replica that exits
/// before it listens is started again on fresh ports, twice at most, and
/// the last failure says what the replica wrote.
async fn start_replica(
    name: &'static str,
    exe: &Path,
    dir: &Path,
    redis_port: u16,
    urls: &[(&str, String)],
) -> Result<Replica, String> {
    let path = dir.join("cutover.toml");
    let log = dir.join("serve.log");
    let mut failure = String::new();
    for _ in 0..3 {
        let (traffic, admin) = (free_port()?, free_port()?);
        std::fs::write(
            &path,
            config(name, traffic, admin, &dir.join("state"), redis_port, urls),
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        let stderr = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = Proc(
            Command::new(exe)
                .args(["serve", "--no-watch", "--config"])
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .map_err(|e| format!("cannot start {name}: {e}"))?,
        );
        let (traffic, admin) = (
            SocketAddr::from(([127, 0, 0, 1], traffic)),
            SocketAddr::from(([127, 0, 0, 1], admin)),
        );
        let Err(exited) = listening(admin, Duration::from_secs(20), &mut child).await else {
            return Ok(Replica {
                name,
                proc: Some(child),
                traffic,
                admin,
                driver: Driver::new(traffic),
            });
        };
        let wrote = std::fs::read_to_string(&log).unwrap_or_default();
        let last = wrote.lines().last().unwrap_or("nothing");
        failure = match exited {
            Some(status) => format!("{name} exited before it listened ({status}): {last}"),
            None => return Err(format!("{name} did not start within 20 s: {last}")),
        };
    }
    Err(failure)
}

async fn play(redis_server: &Path) -> Result<(), String> {
    let started = Instant::now();
    let scratch =
        super::stage::ScratchDir::create().map_err(|e| format!("no scratch directory: {e}"))?;

    // Redis.
    let redis_port = free_port()?;
    let mut redis = Proc(
        Command::new(redis_server)
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", redis_server.display()))?,
    );
    let redis_addr = SocketAddr::from(([127, 0, 0, 1], redis_port));
    if let Err(exited) = listening(redis_addr, Duration::from_secs(10), &mut redis).await {
        return Err(match exited {
            Some(status) => format!("redis-server exited before it listened ({status})"),
            None => "redis-server did not start listening".into(),
        });
    }
    say(
        started,
        &format!(
            "redis-server on 127.0.0.1:{redis_port} (no persistence): the fleet's only shared state"
        ),
    );

    // The agents.
    let mut mocks: Vec<(&str, MockHandle)> = Vec::new();
    for name in ["agent-v1", "agent-v2"] {
        let m = mock::spawn(MockArgs {
            name: name.to_owned(),
            latency: Duration::from_millis(5),
            latency_max: Some(Duration::from_millis(25)),
            ..MockArgs::new(SocketAddr::from(([127, 0, 0, 1], 0)))
        })
        .await
        .map_err(|e| format!("cannot start the {name} mock: {e}"))?;
        mocks.push((name, m));
    }
    let urls: Vec<(&str, String)> = mocks.iter().map(|(n, m)| (*n, m.url())).collect();

    // Three replicas of this binary.
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut replicas = Vec::new();
    for name in REPLICAS {
        let dir = scratch.path().join(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let r = start_replica(name, &exe, &dir, redis_port, &urls).await?;
        say(
            started,
            &format!(
                "{}: traffic http://{}, admin http://{}",
                r.name, r.traffic, r.admin
            ),
        );
        replicas.push(r);
    }

    // One leader.
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = loop {
        let v = look(&replicas).await;
        if v.rows.len() == REPLICAS.len() && v.leaders().len() == 1 {
            break v;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the replicas never agreed on one leader: {}",
                v.line()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let leader = first.leaders()[0];
    say(
        started,
        &format!(
            "one fleet: {leader} holds the lease (epoch {}); every replica applies the same weights. Rollout of v2: steps 10/25/50/100%, each at least {INTERVAL} with {MIN_REQUESTS} judged v2 requests summed over the fleet",
            first.rows.iter().map(|r| r.4).max().unwrap_or(0)
        ),
    );

    // Traffic over the live replicas until promoted; the leader is killed
    // once the fleet is past its first step.
    let mut user = 0usize;
    let mut sent = 0u64;
    let mut errors = 0u64;
    let mut highest = -1i64;
    let mut killed: Option<(&'static str, Instant, u64)> = None;
    let mut took_over: Option<Duration> = None;
    let mut last_line = String::new();
    let mut last_look = Instant::now();
    let mut steps_seen: Vec<i64> = Vec::new();
    loop {
        let live: Vec<&Replica> = replicas.iter().filter(|r| r.alive()).collect();
        let batch = (0..CONCURRENCY).map(|i| {
            user = (user + 1) % 5000;
            let r = live[i % live.len()];
            let ask = Ask::new(
                "/v1/chat/completions",
                Some(format!("user-{user}")),
                super::acts::chat_body("where is my order?", 0.7, &[]),
            );
            async move { r.driver.send(&ask).await }
        });
        for answer in futures_util::future::join_all(batch).await {
            sent += 1;
            if !answer.is_ok_and(|a| a.status.is_success()) {
                errors += 1;
            }
        }
        if last_look.elapsed() < Duration::from_millis(300) {
            continue;
        }
        last_look = Instant::now();
        let v = look(&replicas).await;
        let line = v.line();
        if line != last_line {
            say(started, &line);
            last_line = line;
        }
        let leaders = v.leaders();
        if leaders.len() > 1 {
            return Err(format!("two replicas lead at once: {leaders:?}"));
        }
        let step = if v.all("promoted") {
            PROMOTED
        } else {
            v.min_step()
        };
        if step >= 0 && step < highest {
            return Err(format!(
                "the fleet went back from step {highest} to {step}: {}",
                v.line()
            ));
        }
        if step > highest {
            highest = step;
            steps_seen.push(step);
        }
        if let Some((_, at, epoch)) = killed
            && took_over.is_none()
            && let Some(new) = v.rows.iter().find(|r| r.3 && r.4 > epoch)
        {
            let after = at.elapsed();
            took_over = Some(after);
            say(
                started,
                &format!(
                    "{} took the lease {:.1}s after the kill (epoch {}): the rollout goes on from the step stored in Redis, with its start",
                    new.0,
                    after.as_secs_f64(),
                    new.4
                ),
            );
        }
        if killed.is_none() && (1..PROMOTED).contains(&highest) {
            let Some(l) = leaders.first().copied() else {
                continue;
            };
            let epoch = v.rows.iter().map(|r| r.4).max().unwrap_or(0);
            if let Some(r) = replicas.iter_mut().find(|r| r.name == l) {
                r.proc = None; // SIGKILL, and reaped
            }
            killed = Some((l, Instant::now(), epoch));
            say(
                started,
                &format!(
                    "killed the leader {l} (SIGKILL) halfway through the rollout; traffic goes on over the two others"
                ),
            );
            continue;
        }
        if v.all("promoted") && v.rows.len() == REPLICAS.len() - 1 {
            break;
        }
        if v.rows.iter().any(|r| r.1 == "rolled_back") {
            return Err(format!("the healthy canary was rolled back: {}", v.line()));
        }
    }

    let Some((victim, _, _)) = killed else {
        return Err("the rollout finished before the leader could be killed".into());
    };
    let Some(after) = took_over else {
        return Err("no replica took the lease after the kill".into());
    };
    if after > LEASE + SYNC * 4 {
        return Err(format!(
            "the lease changed hands only {after:?} after the kill (lease {LEASE:?})"
        ));
    }
    if steps_seen != [0, 1, 2, PROMOTED] {
        return Err(format!(
            "the fleet's steps went {steps_seen:?}; expected 0, 1, 2, promoted"
        ));
    }
    if errors > 0 {
        return Err(format!("{errors} of {sent} requests failed"));
    }
    say(
        started,
        &format!(
            "v2 promoted on the survivors: every step once and in order, {sent} requests, no user error, {victim} gone and not missed"
        ),
    );
    drop(replicas);
    drop(redis);
    for (_, m) in mocks {
        let _ = m.shutdown().await;
    }
    println!(
        "The end: three replicas, one rollout, on Redis. Read docs/fleet.md; run it yourself with docker compose -f docker/compose.fleet.yaml up"
    );
    Ok(())
}
