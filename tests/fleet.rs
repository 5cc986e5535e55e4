//! The fleet (SPEC §12) end to end: a real `redis-server` on a free
//! loopback port, three real replicas of the binary (each with its own
//! state dir, traffic and admin port), in-process mock backends. Short
//! `lease` and `sync_interval` keep every test to seconds.
//!
//! Without `redis-server` these skip, loudly; under `CI=true` they fail.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::*;
use cutover::mock::MockHandle;
use serde_json::Value;

const LEASE: &str = "600ms";
const SYNC: &str = "100ms";

/// One replica: the real binary, stdout discarded (access log off),
/// stderr kept in a file that is printed if the test fails.
struct Replica {
    name: String,
    child: Option<Child>,
    traffic: SocketAddr,
    admin: SocketAddr,
    dir: tempfile::TempDir,
}

impl Replica {
    fn config_path(&self) -> PathBuf {
        self.dir.path().join("cutover.toml")
    }

    fn log_path(dir: &Path) -> PathBuf {
        dir.join("stderr.log")
    }

    async fn spawn(name: &str, config: impl Fn(&Ports) -> String) -> Replica {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sockets, traffic, admin) = traffic_and_admin();
        let ports = Ports {
            traffic,
            admin,
            state: dir.path().join("state"),
            name: name.to_string(),
        };
        let path = dir.path().join("cutover.toml");
        std::fs::write(&path, config(&ports)).expect("write config");
        let log = std::fs::File::create(Self::log_path(dir.path())).expect("log file");
        let child = handover::cutover_command(&[&sockets[0], &sockets[1]])
            .args(["serve", "--config"])
            .arg(&path)
            .env_remove("CUTOVER_ADMIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn cutover");
        drop(sockets);
        let r = Replica {
            name: name.to_string(),
            child: Some(child),
            traffic: SocketAddr::from(([127, 0, 0, 1], ports.traffic)),
            admin: SocketAddr::from(([127, 0, 0, 1], ports.admin)),
            dir,
        };
        assert!(
            wait_ready(r.admin, Duration::from_secs(20)).await,
            "{} did not start:\n{}",
            r.name,
            r.log()
        );
        r
    }

    fn url(&self) -> String {
        format!("http://{}", self.traffic)
    }

    fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(Self::log_path(self.dir.path())).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {}", self.name);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn status(&self) -> Value {
        match client()
            .get(format!("{}/status", self.admin_url()))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    async fn rollout(&self) -> Value {
        self.status().await["routes"][0]["rollout"].clone()
    }

    async fn metrics(&self) -> String {
        match reqwest::get(format!("{}/metrics", self.admin_url())).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// POST a chat request as `user`: (status, x-cutover-version, headers).
    async fn chat(&self, user: &str, body: &str) -> (u16, String, reqwest::header::HeaderMap) {
        let r = client()
            .post(format!("{}/v1/chat/completions", self.url()))
            .header("x-user-id", user)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let version = headers
            .get("x-cutover-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let _ = r.bytes().await;
        (status, version, headers)
    }

    async fn act(&self, route: &str, action: &str) -> (u16, Value) {
        let r = client()
            .post(format!(
                "{}/routes/{route}/rollout/{action}",
                self.admin_url()
            ))
            .send()
            .await
            .expect("action");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("----- {} stderr -----\n{}", self.name, self.log());
        }
    }
}

/// What a replica's config is built from.
struct Ports {
    traffic: u16,
    admin: u16,
    state: PathBuf,
    name: String,
}

/// A rollout route `chat` (baseline v1 on `base`, canary v2 on `canary`)
/// in a fleet on `redis`.
fn fleet_config(p: &Ports, redis: &str, base: &str, canary: &str, tail: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{traffic}"
shutdown_grace = "1s"
[admin]
listen = "127.0.0.1:{admin}"
[log]
access_log = false
format = "text"
level = "info,cutover::cluster=debug"
[state]
dir = "{state}"
[cluster]
redis = "{redis}"
name = "test-fleet"
replica = "{name}"
lease = "{LEASE}"
sync_interval = "{SYNC}"
[[upstreams]]
name = "base"
url = "{base}"
[[upstreams]]
name = "canary"
url = "{canary}"
connect_timeout = "200ms"
header_timeout = "2s"
[[routes]]
name = "chat"
match = {{ path_prefix = "/v1/" }}
sticky = ["header:x-user-id"]
[[routes.versions]]
name = "v1"
upstream = "base"
weight = 100.0
[[routes.versions]]
name = "v2"
upstream = "canary"
weight = 0.0
deps = {{ prompt = "support@2" }}
{tail}
"#,
        traffic = p.traffic,
        admin = p.admin,
        state = p.state.display(),
        name = p.name,
    )
}

fn rollout(steps: &str, interval: &str, min_requests: u64, rollback: &str) -> String {
    format!(
        r#"
[routes.rollout]
baseline = "v1"
canary = "v2"
steps = {steps}
interval = "{interval}"
min_requests = {min_requests}
[routes.rollout.gates]
error_rate_margin = 0.5
confidence = 0.9
{rollback}
"#
    )
}

struct Fleet {
    redis: RedisServer,
    replicas: Vec<Replica>,
    base: MockHandle,
    canary: MockHandle,
}

impl Fleet {
    /// `None` when the test must skip (no redis-server outside CI).
    async fn start(test: &str, n: usize, tail: &str) -> Option<Fleet> {
        let redis = RedisServer::start(test).await?;
        let base = healthy_backend("base").await;
        let canary = healthy_backend("canary").await;
        let mut fleet = Fleet {
            redis,
            replicas: Vec::new(),
            base,
            canary,
        };
        for i in 0..n {
            fleet.add(&format!("r{}", i + 1), tail).await;
        }
        fleet.settled().await;
        Some(fleet)
    }

    async fn add(&mut self, name: &str, tail: &str) {
        let (redis, base, canary) = (self.redis.url(), self.base.url(), self.canary.url());
        let r = Replica::spawn(name, |p| fleet_config(p, &redis, &base, &canary, tail)).await;
        self.replicas.push(r);
    }

    /// Every replica answers, Redis is up from each, all agree on one
    /// leader and have adopted the fleet's rollout document.
    async fn settled(&self) {
        let ok = eventually_async(Duration::from_secs(20), || async {
            let mut leaders = BTreeSet::new();
            for r in &self.replicas {
                let s = r.status().await;
                let c = &s["cluster"];
                if c["up"] != true || s["routes"][0]["rollout"]["fleet"]["seq"].as_u64() == Some(0)
                {
                    return false;
                }
                leaders.insert(c["leader"].as_str().unwrap_or("").to_string());
            }
            leaders.len() == 1 && !leaders.contains("")
        })
        .await;
        assert!(ok, "the fleet did not settle:\n{}", self.dump().await);
    }

    /// Replica index of the leader, as the replicas report it.
    async fn leader(&self) -> usize {
        for (i, r) in self.replicas.iter().enumerate() {
            if r.status().await["cluster"]["is_leader"] == true {
                return i;
            }
        }
        panic!("no leader:\n{}", self.dump().await);
    }

    async fn dump(&self) -> String {
        let mut out = String::new();
        for r in &self.replicas {
            let s = r.status().await;
            out.push_str(&format!(
                "{}: cluster {} rollout {}\n",
                r.name, s["cluster"], s["routes"][0]["rollout"]
            ));
        }
        out
    }

    /// Every replica in `set` shows `state` (and `step`, if given).
    async fn all_show(&self, set: &[usize], state: &str, step: Option<i64>, within: Duration) {
        let ok = eventually_async(within, || async {
            for &i in set {
                let r = self.replicas[i].rollout().await;
                if r["state"] != state || step.is_some_and(|s| r["step"].as_i64() != Some(s)) {
                    return false;
                }
            }
            true
        })
        .await;
        assert!(
            ok,
            "not all of {set:?} show {state} {step:?}:\n{}",
            self.dump().await
        );
    }
}

/// A webhook receiver: every JSON body POSTed to it.
async fn webhook_sink() -> (String, Arc<Mutex<Vec<Value>>>) {
    use http_body_util::BodyExt;
    let events = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sink = Arc::clone(&events);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let sink = Arc::clone(&sink);
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                                sink.lock().expect("lock").push(v);
                            }
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::new()),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}/hooks/rollout"), events)
}

/// Requests from fresh users, round robin over `targets`, until stopped:
/// (the task, failed requests, passes over the targets started).
fn background_traffic(
    targets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> (tokio::task::JoinHandle<()>, Arc<AtomicU64>, Arc<AtomicU64>) {
    let failed = Arc::new(AtomicU64::new(0));
    let failures = Arc::clone(&failed);
    let passes = Arc::new(AtomicU64::new(0));
    let passes_seen = Arc::clone(&passes);
    let task = tokio::spawn(async move {
        let c = client();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let urls = targets.lock().expect("lock").clone();
            passes.fetch_add(1, Ordering::Relaxed);
            for url in urls {
                n += 1;
                let sent = c
                    .post(format!("{url}/v1/chat/completions"))
                    .header("x-user-id", format!("bg-{n}"))
                    .body(CHAT)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (task, failed, passes_seen)
}

/// Fresh users round robin over the three replicas until `target` canary
/// answers in all; `canary` counts them per replica.
async fn send_canary_until(fleet: &Fleet, target: u64, canary: &mut [u64; 3], user: &mut u64) {
    while canary.iter().sum::<u64>() < target {
        let i = (*user % 3) as usize;
        *user += 1;
        let (status, version, _) = fleet.replicas[i].chat(&format!("user-{user}"), CHAT).await;
        assert_eq!(status, 200);
        if version == "v2" {
            canary[i] += 1;
        }
    }
}

/// Poll `check` every 50 ms until it returns true; fail with `what` and
/// the fleet's state after `within`.
async fn until(fleet: &Fleet, within: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "{what}:\n{}", fleet.dump().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_replica_alone_reaches_min_requests_but_the_fleet_does() {
    let tail = rollout("[50, 100]", "1s", 60, "");
    let Some(fleet) = Fleet::start("counts_summed", 3, &tail).await else {
        return;
    };
    // Canary answers per replica, counted here from the responses.
    let mut canary = [0u64; 3];
    let mut user = 0u64;
    send_canary_until(&fleet, 59, &mut canary, &mut user).await;
    assert!(canary.iter().all(|c| *c < 60), "{canary:?}");
    // The fleet's sums reach 59, past the interval, and the step holds:
    // the judge waits for min_requests on the fleet's counts.
    let leader = fleet.leader().await;
    let summed = eventually_async(Duration::from_secs(10), || async {
        let r = fleet.replicas[leader].rollout().await;
        r["canary"]["requests"] == 59 && r["stage_seconds"].as_f64().unwrap_or(0.0) > 1.5
    })
    .await;
    assert!(
        summed,
        "fleet sums never reached 59:\n{}",
        fleet.dump().await
    );
    for (i, r) in fleet.replicas.iter().enumerate() {
        let ro = r.rollout().await;
        assert_eq!(
            ro["state"],
            "canary",
            "advanced early:\n{}",
            fleet.dump().await
        );
        assert_eq!(ro["step"], 0);
        assert_eq!(
            ro["replica"]["canary"]["requests"].as_u64(),
            Some(canary[i]),
            "{}'s own count",
            r.name
        );
    }
    // One more canary request anywhere: the fleet has 60, no replica
    // alone more than about 20, and the step advances (to 100 %:
    // promoted).
    send_canary_until(&fleet, 60, &mut canary, &mut user).await;
    assert!(canary.iter().all(|c| *c < 30), "{canary:?}");
    fleet
        .all_show(&[0, 1, 2], "promoted", None, Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_gets_the_same_version_on_every_replica() {
    let tail = rollout("[10, 50, 100]", "1h", 1_000_000, "");
    let Some(fleet) = Fleet::start("same_version", 3, &tail).await else {
        return;
    };
    let users: Vec<String> = (0..200).map(|i| format!("sticky-{i}")).collect();
    let mut on_canary_at: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for step in [0i64, 1] {
        if step == 1 {
            // An operator advances through one follower; all follow.
            let leader = fleet.leader().await;
            let follower = (leader + 1) % 3;
            let (code, body) = fleet.replicas[follower].act("chat", "advance").await;
            assert_eq!(code, 200, "{body}");
            assert_eq!(body["rollout"]["step"], 1, "{body}");
            fleet
                .all_show(&[0, 1, 2], "canary", Some(1), Duration::from_secs(5))
                .await;
        }
        for user in &users {
            let mut seen = BTreeSet::new();
            for r in &fleet.replicas {
                let (status, version, _) = r.chat(user, CHAT).await;
                assert_eq!(status, 200);
                seen.insert(version);
            }
            assert_eq!(seen.len(), 1, "{user} got {seen:?} at step {step}");
            if seen.contains("v2") {
                on_canary_at.entry(step).or_default().insert(user.clone());
            }
        }
    }
    let at10 = on_canary_at.get(&0).cloned().unwrap_or_default();
    let at50 = on_canary_at.get(&1).cloned().unwrap_or_default();
    assert!(
        (5..=45).contains(&at10.len()),
        "about 10 % of 200 on v2: {}",
        at10.len()
    );
    assert!(
        (70..=130).contains(&at50.len()),
        "about 50 % of 200 on v2: {}",
        at50.len()
    );
    assert!(at10.is_subset(&at50), "a canary user stays on the canary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_killing_it_mid_step_loses_no_step() {
    let (hook, events) = webhook_sink().await;
    let rollback = format!(
        "[routes.rollout.rollback]\nwindow = \"30s\"\nmin_requests = 100000\nerror_rate = 0.9\nwebhook = \"{hook}\"\n"
    );
    let tail = rollout("[20, 40, 60, 100]", "1s", 10, &rollback);
    let Some(mut fleet) = Fleet::start("failover", 3, &tail).await else {
        return;
    };
    // Exactly one leader, by /status and by the metric.
    let leader = fleet.leader().await;
    let mut leaders = 0.0;
    for r in &fleet.replicas {
        leaders += metric(&r.metrics().await, "cutover_cluster_leader", &[]).unwrap_or(0.0);
    }
    assert_eq!(leaders, 1.0, "cutover_cluster_leader summed over the fleet");
    let epoch = fleet.replicas[leader].status().await["cluster"]["epoch"]
        .as_u64()
        .unwrap_or(0);
    assert!(epoch >= 1);

    let targets = Arc::new(Mutex::new(
        fleet.replicas.iter().map(Replica::url).collect::<Vec<_>>(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let (traffic, failed, passes) = background_traffic(Arc::clone(&targets), Arc::clone(&stop));

    // Mid-rollout: step 1 reached and announced.
    let announced = eventually(Duration::from_secs(20), || {
        events.lock().expect("lock").iter().any(|e| e["step"] == 1)
    })
    .await;
    assert!(announced, "step 1 never announced:\n{}", fleet.dump().await);

    // Kill the leader.
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    targets
        .lock()
        .expect("lock")
        .retain(|u| *u != fleet.replicas[leader].url());
    // A pass over the old list may still be sending to it: wait for the
    // next pass to start, so no request is in flight to the one killed.
    let from = passes.load(Ordering::Relaxed);
    let moved_on = eventually(Duration::from_secs(10), || {
        passes.load(Ordering::Relaxed) >= from + 2
    })
    .await;
    assert!(moved_on, "the traffic stopped");
    let killed_at = Instant::now();
    fleet.replicas[leader].signal("KILL");
    fleet.replicas[leader].kill();

    // A survivor takes over within the lease (plus one sync round and
    // some slack for a busy machine), with a new epoch.
    until(
        &fleet,
        Duration::from_secs(10),
        "no new leader",
        async || {
            for &i in &survivors {
                let c = fleet.replicas[i].status().await["cluster"].clone();
                if c["is_leader"] == true && c["epoch"].as_u64().unwrap_or(0) > epoch {
                    return true;
                }
            }
            false
        },
    )
    .await;
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_millis(600 + 100 + 1500),
        "took over after {took:?}"
    );

    // The step never goes back on any survivor, and the rollout completes.
    let mut highest = [-1i64; 3];
    until(
        &fleet,
        Duration::from_secs(30),
        "not promoted on the survivors",
        async || {
            let mut promoted = 0;
            for &i in &survivors {
                let r = fleet.replicas[i].rollout().await;
                let step = r["step"].as_i64().unwrap_or(-1);
                assert!(
                    step >= highest[i],
                    "{} went back from step {} to {step}",
                    fleet.replicas[i].name,
                    highest[i]
                );
                highest[i] = step;
                if r["state"] == "promoted" {
                    promoted += 1;
                }
            }
            promoted == survivors.len()
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.await;
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed");

    // One event per transition for the fleet: 0→1, 1→2, 2→promoted.
    let steps: Vec<(String, String, i64)> = events
        .lock()
        .expect("lock")
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap_or("").to_string(),
                e["to"].as_str().unwrap_or("").to_string(),
                e["step"].as_i64().unwrap_or(-9),
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            ("canary".into(), "canary".into(), 1),
            ("canary".into(), "canary".into(), 2),
            ("canary".into(), "promoted".into(), 3),
        ],
        "webhook events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_leader_cannot_overwrite_a_newer_decision() {
    let tail = rollout("[20, 40, 60, 100]", "1h", 1_000_000, "");
    let Some(fleet) = Fleet::start("stale_leader", 3, &tail).await else {
        return;
    };
    let old = fleet.leader().await;
    let old_epoch = fleet.replicas[old].status().await["cluster"]["epoch"]
        .as_u64()
        .unwrap_or(0);
    fleet.replicas[old].signal("STOP");
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let mut new_epoch = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while new_epoch <= old_epoch {
        for &i in &others {
            let c = fleet.replicas[i].status().await["cluster"].clone();
            if c["is_leader"] == true {
                new_epoch = c["epoch"].as_u64().unwrap_or(0);
            }
        }
        if Instant::now() > deadline {
            fleet.replicas[old].signal("CONT");
            panic!(
                "no new leader while the old one is stopped:\n{}",
                fleet.dump().await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A newer decision, made while the old leader sleeps.
    let (code, body) = fleet.replicas[others[0]].act("chat", "advance").await;
    assert_eq!(code, 200, "{body}");
    fleet
        .all_show(&others, "canary", Some(1), Duration::from_secs(5))
        .await;
    fleet.replicas[old].signal("CONT");

    // Woken up, it follows: step 1 and not the leader; no replica ever
    // shows step 0 again.
    fleet
        .all_show(&[0, 1, 2], "canary", Some(1), Duration::from_secs(5))
        .await;
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_millis(1500) {
        for r in &fleet.replicas {
            let ro = r.rollout().await;
            assert_eq!(
                ro["step"],
                1,
                "{} reverted:\n{}",
                r.name,
                fleet.dump().await
            );
        }
    }
    assert_eq!(
        fleet.replicas[old].status().await["cluster"]["is_leader"],
        false
    );

    // The fence itself: a write with the old epoch, or on an older seq, is
    // refused by the script and leaves the document as it was.
    let config = cutover::config::ClusterConfig {
        redis: cutover::config::RedisUrl::new(&fleet.redis.url()).expect("url"),
        name: "test-fleet".into(),
        replica: "intruder".into(),
        lease: Duration::from_secs(5),
        sync_interval: Duration::from_secs(1),
    };
    let cluster = cutover::cluster::Cluster::new(&config).expect("cluster");
    use cutover::cluster::client::Op;
    use cutover::cluster::fleet::Written;
    let stored = cluster.read_doc(Op::Read, "chat").await.expect("read");
    let current = stored.doc.expect("a document");
    assert_eq!(current.state, cutover::rollout::State::Canary { step: 1 });
    let revert = cutover::rollout::fleet::FleetDoc::next(
        Some(&current),
        &current.canary,
        cutover::rollout::State::Canary { step: 0 },
        true,
        0,
        "intruder",
        Some(old_epoch),
    );
    assert!(matches!(
        cluster
            .write_doc(Op::Transition, "chat", &revert, Some(old_epoch))
            .await,
        Ok(Written::Refused { .. })
    ));
    let mut stale = revert.clone();
    stale.seq = current.seq; // as if written on the document before
    assert!(matches!(
        cluster
            .write_doc(Op::Transition, "chat", &stale, Some(new_epoch))
            .await,
        Ok(Written::Refused { .. })
    ));
    let after = cluster.read_doc(Op::Read, "chat").await.expect("read");
    assert_eq!(
        after.doc.as_ref(),
        Some(&current),
        "the document is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_on_a_follower_pauses_the_fleet() {
    let tail = rollout("[20, 50, 100]", "1h", 1_000_000, "");
    let Some(fleet) = Fleet::start("pause", 3, &tail).await else {
        return;
    };
    let leader = fleet.leader().await;
    let f1 = (leader + 1) % 3;
    let f2 = (leader + 2) % 3;
    let (code, body) = fleet.replicas[f1].act("chat", "pause").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["rollout"]["state"], "paused", "{body}");
    fleet
        .all_show(&[0, 1, 2], "paused", Some(0), Duration::from_secs(5))
        .await;
    // `cutover rollout` and `cutover status` against another follower.
    let (code, out, err) =
        run_binary(&["status", "--admin", &fleet.replicas[f2].admin_url()], &[]).await;
    assert_eq!(code, Some(0), "{err}");
    let leader_name = &fleet.replicas[leader].name;
    assert!(
        out.contains(&format!("leader {leader_name}")) && out.contains("3 live of 3 seen"),
        "{out}"
    );
    // §10's answers, from any replica.
    let (code, body) = fleet.replicas[f2].act("chat", "pause").await;
    assert_eq!(code, 409, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("paused")));
    let (code, _) = fleet.replicas[f2].act("nope", "pause").await;
    assert_eq!(code, 404);
    let (code, _) = fleet.replicas[f2].act("chat", "jump").await;
    assert_eq!(code, 404);
    // Paused holds the step's weight: users still split 80/20.
    let mut v2 = 0;
    for i in 0..100 {
        let (_, version, _) = fleet.replicas[i % 3].chat(&format!("p-{i}"), CHAT).await;
        if version == "v2" {
            v2 += 1;
        }
    }
    assert!(
        (5..=40).contains(&v2),
        "{v2} of 100 on v2 while paused at 20 %"
    );
    let (code, out, err) = run_binary(
        &[
            "rollout",
            "resume",
            "chat",
            "--admin",
            &fleet.replicas[f2].admin_url(),
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    fleet
        .all_show(&[0, 1, 2], "canary", Some(0), Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_serves_holds_rolls_back_locally_then_resumes() {
    let (hook, events) = webhook_sink().await;
    let rollback = format!(
        "[routes.rollout.rollback]\nwindow = \"30s\"\nmin_requests = 10\nerror_rate = 0.5\non_breaker_open = false\nwebhook = \"{hook}\"\n"
    );
    let tail = rollout("[50, 100]", "1h", 1_000_000, &rollback);
    let Some(mut fleet) = Fleet::start("redis_down", 3, &tail).await else {
        return;
    };
    fleet.redis.kill();
    // Every replica notices, says since when, stays ready, and serves.
    let noticed = eventually_async(Duration::from_secs(5), || async {
        for r in &fleet.replicas {
            let c = r.status().await["cluster"].clone();
            if c["up"] != false || !c["degraded_since"].is_string() {
                return false;
            }
        }
        true
    })
    .await;
    assert!(noticed, "{}", fleet.dump().await);
    let (code, out, err) =
        run_binary(&["status", "--admin", &fleet.replicas[2].admin_url()], &[]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("fleet test-fleet  (replica r3") && out.contains("UNREACHABLE since"),
        "{out}"
    );
    for (i, r) in fleet.replicas.iter().enumerate() {
        assert_eq!(
            metric(&r.metrics().await, "cutover_cluster_up", &[]),
            Some(0.0)
        );
        let ready = reqwest::get(format!("{}/readyz", r.admin_url()))
            .await
            .expect("readyz");
        assert_eq!(ready.status(), 200);
        for u in 0..20 {
            let (status, _, _) = r.chat(&format!("down-{i}-{u}"), CHAT).await;
            assert_eq!(status, 200, "a request failed while Redis is down");
        }
    }
    // The rollout holds: nothing can move it now.
    let (code, body) = fleet.replicas[1].act("chat", "advance").await;
    assert_eq!(code, 503, "{body}");
    for r in &fleet.replicas {
        assert_eq!(r.rollout().await["state"], "canary");
    }

    // A failing canary, seen by replica 0 alone: its own window trips.
    fleet
        .canary
        .faults()
        .fail_with(Some(http::StatusCode::INTERNAL_SERVER_ERROR));
    let mut u = 0;
    let tripped = eventually_async(Duration::from_secs(10), || {
        u += 1;
        let user = format!("bad-{u}");
        let r0 = &fleet.replicas[0];
        async move {
            let _ = r0.chat(&user, CHAT).await;
            r0.rollout().await["state"] == "rolled_back"
        }
    })
    .await;
    assert!(tripped, "{}", fleet.dump().await);
    let r0 = fleet.replicas[0].rollout().await;
    assert!(
        r0["fleet"]["pending_rollback"]
            .as_str()
            .is_some_and(|p| p.starts_with("error_rate")),
        "{r0}"
    );
    // Its canary share is 0 at once, locally: its users are all on v1.
    for i in 0..20 {
        let (_, version, _) = fleet.replicas[0].chat(&format!("after-{i}"), CHAT).await;
        assert_eq!(version, "v1");
    }
    for r in &fleet.replicas[1..] {
        assert_eq!(
            r.rollout().await["state"],
            "canary",
            "only replica 0 saw it"
        );
    }
    assert!(
        events.lock().expect("lock").is_empty(),
        "nothing announced yet"
    );

    // Redis returns (empty: it had no persistence): the rollback is
    // reported, the whole fleet rolls back, all without an operator.
    fleet.redis.spawn().await;
    fleet
        .all_show(&[0, 1, 2], "rolled_back", None, Duration::from_secs(10))
        .await;
    let up = eventually_async(Duration::from_secs(5), || async {
        for r in &fleet.replicas {
            let c = r.status().await["cluster"].clone();
            if c["up"] != true || !c["degraded_since"].is_null() {
                return false;
            }
        }
        true
    })
    .await;
    assert!(up, "{}", fleet.dump().await);
    let announced = eventually(Duration::from_secs(5), || {
        !events.lock().expect("lock").is_empty()
    })
    .await;
    assert!(announced);
    // Once for the fleet.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rolled: Vec<Value> = events
        .lock()
        .expect("lock")
        .iter()
        .filter(|e| e["to"] == "rolled_back")
        .cloned()
        .collect();
    assert_eq!(rolled.len(), 1, "{rolled:?}");
    assert!(
        rolled[0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("error_rate")),
        "{rolled:?}"
    );
    for r in &fleet.replicas {
        assert!(r.rollout().await["fleet"]["pending_rollback"].is_null());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_posted_to_another_replica_counts_once() {
    let tail = rollout("[50, 100]", "1h", 1_000_000, "");
    let Some(fleet) = Fleet::start("feedback", 3, &tail).await else {
        return;
    };
    let (status, version, headers) = fleet.replicas[0].chat("fb-user", CHAT).await;
    assert_eq!(status, 200);
    let id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id")
        .to_string();
    let post = |r: usize, id: String| {
        let url = format!("{}/_cutover/feedback", fleet.replicas[r].url());
        async move {
            client()
                .post(url)
                .json(&serde_json::json!({"request_id": id, "outcome": "success"}))
                .send()
                .await
                .expect("feedback")
                .status()
                .as_u16()
        }
    };
    // Replica 0 writes its records to Redis within one sync_interval (100 ms here): until then
    // replica 1 answers 404 (and counts nothing).
    let mut first = 404;
    let deadline = Instant::now() + Duration::from_secs(5);
    while first == 404 && Instant::now() < deadline {
        first = post(1, id.clone()).await;
        if first == 404 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(first, 200, "feedback on replica 1");
    assert_eq!(post(2, id.clone()).await, 409, "counted once for the fleet");
    assert_eq!(post(0, id.clone()).await, 409);
    assert_eq!(post(2, "no-such-request".into()).await, 404);
    // Counted on the replica that took it.
    let labels = [
        ("route", "chat"),
        ("version", version.as_str()),
        ("outcome", "success"),
        ("source", "feedback"),
    ];
    let on1 = metric(
        &fleet.replicas[1].metrics().await,
        "cutover_outcomes_total",
        &labels,
    );
    assert_eq!(on1, Some(1.0));
    for r in [0, 2] {
        let v = metric(
            &fleet.replicas[r].metrics().await,
            "cutover_outcomes_total",
            &labels,
        );
        assert_ne!(v, Some(1.0), "replica {r} counted it too");
    }
    // And it is in the fleet's sums the judge reads.
    let role = if version == "v2" {
        "canary"
    } else {
        "baseline"
    };
    let judged = eventually_async(Duration::from_secs(5), || async {
        fleet.replicas[2].rollout().await[role]["outcome_success"] == 1
    })
    .await;
    assert!(judged, "{}", fleet.dump().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_cache_hit_across_replicas() {
    let Some(redis) = RedisServer::start("shared_cache").await else {
        return;
    };
    let base = healthy_backend("base").await;
    let mut replicas = Vec::new();
    for i in 1..=3 {
        let (redis, base) = (redis.url(), base.url());
        replicas.push(
            Replica::spawn(&format!("c{i}"), |p| {
                format!(
                    r#"
[server]
listen = "127.0.0.1:{}"
[admin]
listen = "127.0.0.1:{}"
[log]
access_log = false
format = "text"
[cache]
shared = true
[cluster]
redis = "{redis}"
name = "cache-fleet"
replica = "{}"
lease = "{LEASE}"
sync_interval = "{SYNC}"
[[upstreams]]
name = "base"
url = "{base}"
[[routes]]
name = "chat"
match = {{ path_prefix = "/v1/" }}
cache = {{ ttl = "1m", deterministic_only = true }}
[[routes.versions]]
name = "v1"
upstream = "base"
weight = 100.0
"#,
                    p.traffic, p.admin, p.name
                )
            })
            .await,
        );
    }
    let up = eventually_async(Duration::from_secs(10), || async {
        for r in &replicas {
            if r.status().await["cluster"]["up"] != true {
                return false;
            }
        }
        true
    })
    .await;
    assert!(up);
    let question = r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"what is the refund policy?"}]}"#;
    let cache_of = |h: &reqwest::header::HeaderMap| {
        h.get("x-cutover-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (status, _, h) = replicas[0].chat("u", question).await;
    assert_eq!((status, cache_of(&h).as_str()), (200, "miss"));
    assert_eq!(base.stats().requests(), 1);
    let written = eventually_async(Duration::from_secs(5), || async {
        replicas[0].status().await["cluster"]["shared_cache"]["writes"] == 1
    })
    .await;
    assert!(written, "{}", replicas[0].status().await["cluster"]);
    for r in &replicas[1..] {
        let (status, _, h) = r.chat("u", question).await;
        assert_eq!(
            (status, cache_of(&h).as_str()),
            (200, "hit"),
            "on {}",
            r.name
        );
    }
    assert_eq!(
        base.stats().requests(),
        1,
        "one upstream call for the fleet"
    );

    // Purge on one replica: the fleet's tier is emptied too.
    let purged: Value = client()
        .post(format!("{}/cache/purge", replicas[2].admin_url()))
        .send()
        .await
        .expect("purge")
        .json()
        .await
        .expect("json");
    assert_eq!(purged["shared_purged"], 1, "{purged}");
    let (_, _, h) = replicas[2].chat("u", question).await;
    assert_eq!(cache_of(&h), "miss", "neither local nor shared any more");
    assert_eq!(base.stats().requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_another_canary_serves_the_baseline_until_it_agrees() {
    let tail = rollout("[50, 100]", "1h", 1_000_000, "");
    let Some(mut fleet) = Fleet::start("other_canary", 2, &tail).await else {
        return;
    };
    // A third replica whose config names another canary (other deps).
    let other = tail.clone();
    let (redis, base, canary) = (fleet.redis.url(), fleet.base.url(), fleet.canary.url());
    let late = Replica::spawn("r3", |p| {
        fleet_config(p, &redis, &base, &canary, &other)
            .replace("prompt = \"support@2\"", "prompt = \"support@3\"")
    })
    .await;
    fleet.replicas.push(late);
    let disagrees = eventually_async(Duration::from_secs(5), || async {
        fleet.replicas[2].rollout().await["fleet"]["agrees"] == false
    })
    .await;
    assert!(disagrees, "{}", fleet.dump().await);
    for i in 0..40 {
        let (_, version, _) = fleet.replicas[2].chat(&format!("o-{i}"), CHAT).await;
        assert_eq!(version, "v1", "another canary: the baseline only");
    }
    let r3 = fleet.replicas[2].rollout().await;
    assert_eq!(r3["canary_weight"], 0.0, "{r3}");
    // It counts nothing for the fleet.
    let leader = fleet.leader().await;
    assert_eq!(
        fleet.replicas[leader].rollout().await["fleet"]["replicas_counted"],
        2
    );
    // Its config catches up (the file is watched): it joins the rollout.
    let path = fleet.replicas[2].config_path();
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, text.replace("support@3", "support@2")).expect("write");
    let agrees = eventually_async(Duration::from_secs(10), || async {
        let r = fleet.replicas[2].rollout().await;
        r["fleet"]["agrees"] == true && r["canary_weight"] == 50.0
    })
    .await;
    assert!(agrees, "{}", fleet.dump().await);
    let counted = eventually_async(Duration::from_secs(5), || async {
        fleet.replicas[leader].rollout().await["fleet"]["replicas_counted"] == 3
    })
    .await;
    assert!(counted, "{}", fleet.dump().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_password_from_the_environment_that_never_shows() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key, _) = test_certificate(certs.path());
    const PASSWORD: &str = "s3cret-redis-pw";
    let Some(redis) = RedisServer::start_tls("rediss", &cert, &key, PASSWORD).await else {
        return;
    };
    let base = healthy_backend("base").await;
    let config = |p: &Ports| {
        format!(
            r#"
[server]
listen = "127.0.0.1:{}"
[admin]
listen = "127.0.0.1:{}"
[log]
access_log = false
format = "text"
level = "debug"
[cluster]
redis = "rediss://:${{REDIS_PASSWORD}}@localhost:{}/0"
replica = "tls-1"
lease = "{LEASE}"
sync_interval = "{SYNC}"
[[upstreams]]
name = "base"
url = "{}"
[[routes]]
name = "chat"
[[routes.versions]]
name = "v1"
upstream = "base"
weight = 100.0
"#,
            p.traffic,
            p.admin,
            redis.port,
            base.url()
        )
    };
    // The password and the certificate to trust come from the environment
    // (rustls-native-certs reads SSL_CERT_FILE).
    let spawn = |password: &'static str| {
        let cert = cert.clone();
        async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let (sockets, traffic, admin) = traffic_and_admin();
            let ports = Ports {
                traffic,
                admin,
                state: dir.path().join("state"),
                name: "tls-1".into(),
            };
            let path = dir.path().join("cutover.toml");
            std::fs::write(&path, config(&ports)).expect("write");
            let log = std::fs::File::create(Replica::log_path(dir.path())).expect("log");
            let child = handover::cutover_command(&[&sockets[0], &sockets[1]])
                .args(["serve", "--config"])
                .arg(&path)
                .env("REDIS_PASSWORD", password)
                .env("SSL_CERT_FILE", &cert)
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn");
            drop(sockets);
            let r = Replica {
                name: "tls-1".into(),
                child: Some(child),
                traffic: SocketAddr::from(([127, 0, 0, 1], ports.traffic)),
                admin: SocketAddr::from(([127, 0, 0, 1], ports.admin)),
                dir,
            };
            assert!(wait_ready(r.admin, Duration::from_secs(20)).await);
            r
        }
    };
    let good = spawn(PASSWORD).await;
    let up = eventually_async(Duration::from_secs(10), || async {
        let c = good.status().await["cluster"].clone();
        c["up"] == true && c["is_leader"] == true
    })
    .await;
    assert!(up, "over rediss://: {}", good.status().await["cluster"]);
    let status = good.status().await.to_string();
    assert!(status.contains("rediss://:***@localhost:"), "{status}");
    // A wrong password: Redis refuses, the replica serves, and the
    // password shows nowhere.
    let bad = spawn("wrong-password").await;
    let refused = eventually_async(Duration::from_secs(10), || async {
        let c = bad.status().await["cluster"].clone();
        c["up"] == false && c["last_error"].is_string()
    })
    .await;
    assert!(refused, "{}", bad.status().await["cluster"]);
    let (code, _, _) = bad.chat("u", CHAT).await;
    assert_eq!(code, 200, "a Redis that refuses us fails no request");
    for r in [&good, &bad] {
        let everything = format!("{}{}{}", r.status().await, r.metrics().await, r.log());
        for secret in [PASSWORD, "wrong-password"] {
            assert!(!everything.contains(secret), "{secret} shown by {}", r.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_starts_while_redis_is_down_and_joins_when_it_answers() {
    let tail = rollout("[20, 100]", "1h", 1_000_000, "");
    let Some(mut redis) = RedisServer::start("start_without_redis").await else {
        return;
    };
    redis.kill();
    let base = healthy_backend("base").await;
    let canary = healthy_backend("canary").await;
    let (url, b, c) = (redis.url(), base.url(), canary.url());
    let r = Replica::spawn("r1", |p| fleet_config(p, &url, &b, &c, &tail)).await;
    // It serves at once, at the rollout's first stage, and says why.
    for i in 0..20 {
        let (status, _, _) = r.chat(&format!("early-{i}"), CHAT).await;
        assert_eq!(status, 200);
    }
    let ready = reqwest::get(format!("{}/readyz", r.admin_url()))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let s = r.status().await;
    assert_eq!(s["cluster"]["up"], false, "{}", s["cluster"]);
    assert!(s["cluster"]["degraded_since"].is_string());
    assert_eq!(s["routes"][0]["rollout"]["canary_weight"], 20.0);
    // Redis comes up: the replica joins, leads (alone) and writes the
    // fleet's rollout.
    redis.spawn().await;
    let joined = eventually_async(Duration::from_secs(10), || async {
        let s = r.status().await;
        s["cluster"]["up"] == true
            && s["cluster"]["is_leader"] == true
            && s["routes"][0]["rollout"]["fleet"]["seq"] == 1
    })
    .await;
    assert!(joined, "{}", r.status().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_document_is_held_until_an_operator_replaces_it() {
    let tail = rollout("[20, 50, 100]", "1h", 1_000_000, "");
    let Some(fleet) = Fleet::start("unreadable_document", 2, &tail).await else {
        return;
    };
    // A newer cutover (or a hand edit) leaves a document this one cannot read.
    let mut conn = fleet.redis.connection();
    let key = "cutover:{test-fleet}:rollout:chat";
    redis::cmd("HSET")
        .arg(key)
        .arg("seq")
        .arg(41)
        .arg("doc")
        .arg(r#"{"format":99}"#)
        .query::<()>(&mut conn)
        .expect("HSET");
    // Nobody overwrites it on their own, and traffic goes on.
    let warned = eventually(Duration::from_secs(5), || {
        fleet
            .replicas
            .iter()
            .all(|r| r.log().contains("not in a format this replica reads"))
    })
    .await;
    assert!(warned, "{}", fleet.dump().await);
    let seq: u64 = redis::cmd("HGET")
        .arg(key)
        .arg("seq")
        .query(&mut conn)
        .expect("HGET");
    assert_eq!(seq, 41, "held, not replaced");
    let (status, _, _) = fleet.replicas[1].chat("u", CHAT).await;
    assert_eq!(status, 200);
    // An operator action replaces it, after its seq; everyone follows.
    let (code, body) = fleet.replicas[0].act("chat", "pause").await;
    assert_eq!(code, 200, "{body}");
    fleet
        .all_show(&[0, 1], "paused", Some(0), Duration::from_secs(5))
        .await;
    let seq: u64 = redis::cmd("HGET")
        .arg(key)
        .arg("seq")
        .query(&mut conn)
        .expect("HGET");
    assert_eq!(seq, 42);
}
