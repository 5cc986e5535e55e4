//! Hot reload (SPEC §8) through real files and real sockets: the file
//! watcher (editor rename, in-place write, Kubernetes ConfigMap swap, a
//! swapped directory), debounce, SIGHUP to the real binary, invalid files,
//! restart-only keys, and no failed request under reload.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use cutover::mock::MockArgs;

const WAIT: Duration = Duration::from_secs(10);

/// The version that served one request.
async fn version_at(c: &reqwest::Client, base: &str) -> String {
    let resp = c
        .post(format!("{base}/v1/chat/completions"))
        .body(CHAT)
        .send()
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    resp.headers()["x-cutover-version"]
        .to_str()
        .expect("ascii")
        .to_string()
}

/// Whether the next few requests are all served by `version`.
async fn all_on(c: &reqwest::Client, base: &str, version: &str) -> bool {
    for _ in 0..5 {
        if version_at(c, base).await != version {
            return false;
        }
    }
    true
}

/// An editor's save: write a temp file beside the config, rename it over.
fn write_and_rename(path: &Path, text: &str) {
    let tmp = path.with_file_name(".cutover.toml.swp");
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A directory name as kubelet makes them (`..` + UTC time + random).
fn timestamped(n: u32) -> String {
    format!("..2026_11_25_16_{n:02}_00.{:09}", 100_000_000 + n)
}

/// Lay out `dir` as kubelet mounts a ConfigMap: `cutover.toml` →
/// `..data/cutover.toml`, `..data` → `..<timestamp>`.
fn configmap_create(dir: &Path, text: &str) -> PathBuf {
    let data = timestamped(0);
    std::fs::create_dir(dir.join(&data)).expect("mkdir");
    std::fs::write(dir.join(&data).join("cutover.toml"), text).expect("write");
    std::os::unix::fs::symlink(&data, dir.join("..data")).expect("..data");
    std::os::unix::fs::symlink("..data/cutover.toml", dir.join("cutover.toml")).expect("link");
    dir.join("cutover.toml")
}

/// Update as kubelet does (atomic_writer.go): a new timestamped dir, the
/// file in it, a `..data_tmp` symlink renamed over `..data`, the old dir
/// removed.
fn configmap_update(dir: &Path, n: u32, text: &str) {
    let old = std::fs::read_link(dir.join("..data")).expect("readlink");
    let data = timestamped(n);
    std::fs::create_dir(dir.join(&data)).expect("mkdir");
    std::fs::write(dir.join(&data).join("cutover.toml"), text).expect("write");
    std::os::unix::fs::symlink(&data, dir.join("..data_tmp")).expect("..data_tmp");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap");
    std::fs::remove_dir_all(dir.join(old)).expect("remove old");
}

/// Replace the two `127.0.0.1:0` listen addresses (server, then admin).
fn with_listen(toml: &str, server: u16, admin: u16) -> String {
    toml.replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{server}\""),
        1,
    )
    .replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{admin}\""),
        1,
    )
}

#[tokio::test]
async fn an_editors_write_and_rename_is_reloaded() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy_watching(&two_versions(&a.url(), &b.url(), 100.0, 0.0, "")).await;
    let c = client();
    assert!(all_on(&c, &proxy.url(), "v1").await);
    let before = proxy.gateway.generation();

    write_and_rename(
        &proxy.config_path,
        &two_versions(&a.url(), &b.url(), 0.0, 100.0, ""),
    );
    assert!(eventually(WAIT, || proxy.gateway.generation() > before).await);
    assert!(all_on(&c, &proxy.url(), "v2").await);
    // The temp file's events and the rename are one burst: one reload.
    assert_eq!(proxy.gateway.generation(), before + 1);
    assert_eq!(proxy.reload_stats().file_reloads(), 1);
}

#[tokio::test]
async fn an_in_place_write_is_reloaded() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy_watching(&two_versions(&a.url(), &b.url(), 100.0, 0.0, "")).await;
    let c = client();
    assert!(all_on(&c, &proxy.url(), "v1").await);
    let before = proxy.gateway.generation();

    std::fs::write(
        &proxy.config_path,
        two_versions(&a.url(), &b.url(), 0.0, 100.0, ""),
    )
    .expect("write");
    assert!(eventually(WAIT, || proxy.gateway.generation() > before).await);
    assert!(all_on(&c, &proxy.url(), "v2").await);
    assert_eq!(proxy.gateway.generation(), before + 1);
}

#[tokio::test]
async fn a_kubernetes_configmap_symlink_swap_is_reloaded() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = configmap_create(
        dir.path(),
        &two_versions(&a.url(), &b.url(), 100.0, 0.0, ""),
    );
    let mut proxy = start_proxy_from(dir, path).await;
    proxy.watch(cutover::reload::Options::default()).await;
    let root = proxy.config_path.parent().expect("dir").to_path_buf();
    let c = client();
    assert!(all_on(&c, &proxy.url(), "v1").await);

    // Twice: the second update proves the watch survived the first swap
    // (and the removal of the directory the file resolved to).
    for (n, (w1, w2, want)) in [(0.0, 100.0, "v2"), (100.0, 0.0, "v1")].iter().enumerate() {
        let before = proxy.gateway.generation();
        let n = u32::try_from(n).expect("small") + 1;
        configmap_update(&root, n, &two_versions(&a.url(), &b.url(), *w1, *w2, ""));
        assert!(
            eventually(WAIT, || proxy.gateway.generation() > before).await,
            "update {n} not reloaded"
        );
        assert!(all_on(&c, &proxy.url(), want).await);
        assert!(proxy.gateway.reload_state().last_error.is_none());
    }
}

#[tokio::test]
async fn a_swapped_config_directory_is_followed() {
    // `conf` is a symlink to a directory, swapped to another (as some
    // deploy tools do); the watch must move to the new directory.
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    for (name, w1, w2) in [("conf.1", 100.0, 0.0), ("conf.2", 0.0, 100.0)] {
        std::fs::create_dir(root.join(name)).expect("mkdir");
        std::fs::write(
            root.join(name).join("cutover.toml"),
            two_versions(&a.url(), &b.url(), w1, w2, ""),
        )
        .expect("write");
    }
    std::os::unix::fs::symlink("conf.1", root.join("conf")).expect("link");
    let mut proxy = start_proxy_from(dir, root.join("conf").join("cutover.toml")).await;
    proxy.watch(cutover::reload::Options::default()).await;
    let c = client();
    assert!(all_on(&c, &proxy.url(), "v1").await);

    let before = proxy.gateway.generation();
    std::os::unix::fs::symlink("conf.2", root.join("conf.tmp")).expect("link");
    std::fs::rename(root.join("conf.tmp"), root.join("conf")).expect("swap");
    assert!(eventually(WAIT, || proxy.gateway.generation() > before).await);
    assert!(all_on(&c, &proxy.url(), "v2").await);

    // An in-place write in the new directory is seen: the watch moved.
    let before = proxy.gateway.generation();
    std::fs::write(
        root.join("conf.2").join("cutover.toml"),
        two_versions(&a.url(), &b.url(), 100.0, 0.0, ""),
    )
    .expect("write");
    assert!(eventually(WAIT, || proxy.gateway.generation() > before).await);
    assert!(all_on(&c, &proxy.url(), "v1").await);
    assert!(proxy.reload_stats().rewatches() >= 1);
}

#[tokio::test]
async fn touching_the_file_without_changing_it_does_not_reload() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy_watching(&two_versions(&a.url(), &b.url(), 100.0, 0.0, "")).await;
    let before = proxy.gateway.generation();

    let file = std::fs::File::options()
        .append(true)
        .open(&proxy.config_path)
        .expect("open");
    file.set_modified(std::time::SystemTime::now())
        .expect("touch");
    drop(file);
    // Also the same bytes written again.
    let same = std::fs::read(&proxy.config_path).expect("read");
    std::fs::write(&proxy.config_path, same).expect("write");

    assert!(eventually(WAIT, || proxy.reload_stats().unchanged() >= 1).await);
    assert_eq!(proxy.gateway.generation(), before);
    assert_eq!(proxy.reload_stats().file_reloads(), 0);
}

#[tokio::test]
async fn rapid_writes_are_debounced_into_few_reloads() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy_watching(&two_versions(&a.url(), &b.url(), 100.0, 0.0, "")).await;
    let before = proxy.gateway.generation();

    for i in 0..10u32 {
        let (w1, w2) = if i % 2 == 0 {
            (0.0, 100.0)
        } else {
            (100.0, 0.0)
        };
        let text = format!(
            "# write {i}\n{}",
            two_versions(&a.url(), &b.url(), w1, w2, "")
        );
        std::fs::write(&proxy.config_path, text).expect("write");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The last write (i = 9) is 100/0: wait until it is what runs.
    let last = std::fs::read(&proxy.config_path).expect("read");
    assert!(
        eventually(WAIT, || {
            proxy.gateway.generation() > before
                && proxy.reload_stats().checks() > proxy.reload_stats().unsettled()
        })
        .await
    );
    let c = client();
    assert!(all_on(&c, &proxy.url(), "v1").await);
    assert_eq!(std::fs::read(&proxy.config_path).expect("read"), last);
    let reloads = proxy.gateway.generation() - before;
    assert!(reloads <= 2, "{reloads} reloads for 10 writes");
}

#[tokio::test]
async fn writes_to_another_file_beside_the_config_cost_no_file_system_checks() {
    // A JSON access log beside the config: every write is an event in the
    // watched directory. Dropped by name, it must not make the watcher
    // resolve the config path (readlink, statx) each time.
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy_watching(&two_versions(&a.url(), &b.url(), 100.0, 0.0, "")).await;
    let log_path = proxy.config_path.with_file_name("access.log");
    let started = Instant::now();
    let resolves_before = proxy.reload_stats().resolves();
    let relevant_before = proxy.reload_stats().relevant_events();
    let writes = 400;
    let log = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut log = std::fs::File::create(&log_path).expect("create log");
        for i in 0..writes {
            writeln!(log, "{{\"line\":{i}}}").expect("write log");
            log.flush().expect("flush");
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    log.await.expect("log writer");
    // Let the watch thread take the last events.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seconds = started.elapsed().as_secs() + 1;
    let resolves = proxy.reload_stats().resolves() - resolves_before;
    assert!(
        resolves <= seconds + 1,
        "{resolves} file-system checks in {seconds} s for {writes} writes of another file"
    );
    assert_eq!(proxy.reload_stats().relevant_events(), relevant_before);

    // The config itself is still followed.
    let before = proxy.gateway.generation();
    write_and_rename(
        &proxy.config_path,
        &two_versions(&a.url(), &b.url(), 0.0, 100.0, ""),
    );
    assert!(eventually(WAIT, || proxy.gateway.generation() > before).await);
    assert!(all_on(&client(), &proxy.url(), "v2").await);
}

#[tokio::test]
async fn an_invalid_file_changes_nothing_until_a_valid_one_arrives() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy_watching(&two_versions(&a.url(), &b.url(), 100.0, 0.0, "")).await;
    let c = client();
    let before = proxy.gateway.generation();

    // Weights that do not sum to 100.
    write_and_rename(
        &proxy.config_path,
        &two_versions(&a.url(), &b.url(), 10.0, 100.0, ""),
    );
    assert!(eventually(WAIT, || proxy.gateway.reload_state().last_error.is_some()).await);
    let error = proxy
        .gateway
        .reload_state()
        .last_error
        .expect("error")
        .error;
    assert!(error.contains("weights sum to 110"), "{error}");
    assert_eq!(proxy.gateway.generation(), before);
    assert!(all_on(&c, &proxy.url(), "v1").await);

    // A syntax error is rejected the same way.
    std::fs::write(&proxy.config_path, "[[routes]\nname = ").expect("write");
    assert!(
        eventually(WAIT, || proxy
            .gateway
            .reload_state()
            .last_error
            .is_some_and(|e| e.error.contains("TOML syntax error")))
        .await
    );
    assert!(all_on(&c, &proxy.url(), "v1").await);

    write_and_rename(
        &proxy.config_path,
        &two_versions(&a.url(), &b.url(), 0.0, 100.0, ""),
    );
    assert!(eventually(WAIT, || proxy.gateway.reload_state().last_error.is_none()).await);
    assert_eq!(proxy.gateway.generation(), before + 1);
    assert!(all_on(&c, &proxy.url(), "v2").await);
}

#[tokio::test]
async fn a_changed_listen_address_is_reported_as_needing_a_restart() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy_watching(&two_versions(&a.url(), &b.url(), 100.0, 0.0, "")).await;
    let before = proxy.gateway.generation();

    let moved = with_listen(
        &two_versions(&a.url(), &b.url(), 0.0, 100.0, ""),
        dead_port(),
        0,
    );
    write_and_rename(&proxy.config_path, &moved);
    assert!(
        eventually(WAIT, || proxy
            .gateway
            .reload_state()
            .restart_required
            .iter()
            .any(|k| k == "server.listen"))
        .await
    );
    // Everything else took effect, on the listener already bound.
    assert_eq!(proxy.gateway.generation(), before + 1);
    assert!(all_on(&client(), &proxy.url(), "v2").await);
}

#[tokio::test]
async fn no_request_fails_while_the_file_is_rewritten_under_load() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let proxy = start_proxy_watching(&two_versions(&a.url(), &b.url(), 100.0, 0.0, "")).await;
    let before = proxy.gateway.generation();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for i in 0..8 {
        let (stop, ok, url) = (Arc::clone(&stop), Arc::clone(&ok), proxy.url());
        loops.push(tokio::spawn(async move {
            let c = client();
            let mut failures = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let req = c
                    .post(format!("{url}/v1/chat/completions"))
                    .header("x-user-id", format!("user-{i}-{n}"))
                    .body(CHAT);
                match req.send().await {
                    Ok(r) if r.status() == 200 => match r.bytes().await {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.push(format!("body: {e}")),
                    },
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(format!("send: {e}")),
                }
            }
            failures
        }));
    }

    let started = Instant::now();
    for i in 1..=20u64 {
        let (w1, w2) = if i % 2 == 1 {
            (0.0, 100.0)
        } else {
            (100.0, 0.0)
        };
        let text = two_versions(&a.url(), &b.url(), w1, w2, "");
        // Both ways a file gets replaced.
        if i % 3 == 0 {
            std::fs::write(&proxy.config_path, text).expect("write");
        } else {
            write_and_rename(&proxy.config_path, &text);
        }
        assert!(
            eventually(WAIT, || proxy.gateway.generation() >= before + i).await,
            "rewrite {i} not reloaded"
        );
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for l in loops {
        failures.extend(l.await.expect("client loop"));
    }
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(proxy.gateway.generation(), before + 20);
    assert!(proxy.gateway.reload_state().last_error.is_none());
    let served = ok.load(Ordering::Relaxed);
    assert!(served > 100, "only {served} requests in {elapsed:?}");
    assert!(a.stats().requests() > 0 && b.stats().requests() > 0);
}

#[tokio::test]
async fn a_stream_started_before_a_reload_finishes_on_its_old_upstream() {
    let slow = backend(MockArgs {
        name: "slow".into(),
        chunks: 8,
        chunk_delay: Duration::from_millis(150),
        ..MockArgs::new(loopback0())
    })
    .await;
    let other = healthy_backend("other").await;
    let proxy =
        start_proxy_watching(&two_versions(&slow.url(), &other.url(), 100.0, 0.0, "")).await;
    let c = client();
    let before = proxy.gateway.generation();

    let mut stream = c
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .body(CHAT_STREAM)
        .send()
        .await
        .expect("response");
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["x-mock-name"], "slow");
    let mut body = Vec::new();
    body.extend_from_slice(&stream.chunk().await.expect("chunk").expect("first chunk"));

    // Point v1's upstream at the other backend while the stream runs.
    write_and_rename(
        &proxy.config_path,
        &two_versions(&other.url(), &other.url(), 100.0, 0.0, ""),
    );
    assert!(eventually(WAIT, || proxy.gateway.generation() > before).await);
    let fresh = c
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .body(CHAT)
        .send()
        .await
        .expect("response");
    assert_eq!(fresh.headers()["x-mock-name"], "other");

    // The old stream still has chunks to come, from the old upstream.
    let mut after_reload = 0;
    while let Some(chunk) = stream.chunk().await.expect("stream chunk") {
        after_reload += 1;
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).expect("utf-8");
    assert!(after_reload > 0, "the stream ended before the reload");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(slow.stats().requests(), 1);
}

#[tokio::test]
async fn sighup_reloads_the_real_binary() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cutover.toml");
    let (sockets, port, admin) = traffic_and_admin();
    let config = |w1, w2| with_listen(&two_versions(&a.url(), &b.url(), w1, w2, ""), port, admin);
    std::fs::write(&path, config(100.0, 0.0)).expect("write");
    let path_arg = path.to_str().expect("utf-8 path");
    // Without the file watcher, only SIGHUP can reload.
    let bin = Binary::spawn_with(&["serve", "-c", path_arg, "--no-watch"], &[], sockets);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        wait_ready(([127, 0, 0, 1], admin).into(), WAIT).await,
        "binary did not serve"
    );
    let base = format!("http://{addr}");
    let c = client();
    assert!(all_on(&c, &base, "v1").await);

    std::fs::write(&path, config(0.0, 100.0)).expect("write");
    assert!(all_on(&c, &base, "v1").await, "reloaded without SIGHUP");
    bin.signal("HUP");
    assert!(
        eventually_async(WAIT, || async { version_at(&c, &base).await == "v2" }).await,
        "SIGHUP did not reload"
    );
    assert!(all_on(&c, &base, "v2").await);
}

#[tokio::test]
async fn the_real_binary_reloads_when_its_file_changes() {
    let a = healthy_backend("a").await;
    let b = healthy_backend("b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cutover.toml");
    let (sockets, port, admin) = traffic_and_admin();
    let config = |w1, w2| with_listen(&two_versions(&a.url(), &b.url(), w1, w2, ""), port, admin);
    std::fs::write(&path, config(100.0, 0.0)).expect("write");
    let mut bin = Binary::spawn_with(
        &["serve", "-c", path.to_str().expect("utf-8 path")],
        &[],
        sockets,
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        wait_ready(([127, 0, 0, 1], admin).into(), WAIT).await,
        "binary did not serve"
    );
    let base = format!("http://{addr}");
    let c = client();
    assert!(all_on(&c, &base, "v1").await);

    write_and_rename(&path, &config(0.0, 100.0));
    assert!(
        eventually_async(WAIT, || async { version_at(&c, &base).await == "v2" }).await,
        "file change did not reload"
    );

    // The reloader stops with the server.
    bin.signal("TERM");
    let status = bin.wait_timeout(WAIT).expect("exited after SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// An upstream that counts the TCP connections it accepts (the proxy's
/// pool is visible as connections reused) and answers every request 200.
async fn connection_counting_upstream() -> (String, Arc<AtomicUsize>) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(br#"{"ok":true}"#)))
                            .expect("response"),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, accepted)
}

/// SPEC §8 and §9: a reload rejected at its last stage (after the upstream
/// states and rollouts were prepared and the runtime compiled) changes
/// nothing: not a rollout (state, step, step start, state file), not a
/// breaker (its thresholds), not a pool (its connections).
#[tokio::test]
async fn a_reload_rejected_at_the_last_stage_changes_nothing() {
    let (a_url, connections) = connection_counting_upstream().await;
    let failing = backend(MockArgs {
        status: Some(http::StatusCode::SERVICE_UNAVAILABLE),
        ..MockArgs::new(loopback0())
    })
    .await;
    let state = tempfile::tempdir().expect("state dir");
    let state_dir = state.path().display().to_string();
    let config = |connect_timeout: &str, streak: u32, prompt: &str| {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "2s"
[admin]
listen = "127.0.0.1:0"
[log]
access_log = false
[state]
dir = "{state_dir}"
[[upstreams]]
name = "a"
url = "{a_url}"
connect_timeout = "{connect_timeout}"
[[upstreams]]
name = "b"
url = "{b_url}"
[upstreams.breaker]
consecutive_failures = {streak}
open_for = "60s"
[[routes]]
name = "r"
match = {{ path_prefix = "/v1/" }}
[[routes.versions]]
name = "v1"
upstream = "a"
weight = 100.0
[[routes.versions]]
name = "v2"
upstream = "a"
weight = 0.0
deps = {{ prompt = "{prompt}" }}
[routes.rollout]
baseline = "v1"
canary = "v2"
steps = [10, 50, 100]
interval = "1h"
min_requests = 1000
[routes.rollout.gates]
error_rate_margin = 0.5
[[routes]]
name = "fail"
match = {{ path_prefix = "/fail/" }}
[[routes.versions]]
name = "v"
upstream = "b"
"#,
            b_url = failing.url()
        )
    };
    let good = config("2s", 5, "p1");
    let proxy = start_proxy(&good).await;
    let c = client();
    let send = async |path: &str| {
        let r = c
            .post(format!("{}{path}", proxy.url()))
            .body(CHAT)
            .send()
            .await
            .expect("response");
        let status = r.status();
        let _ = r.bytes().await;
        status
    };
    assert_eq!(send("/v1/chat").await, 200);
    assert_eq!(connections.load(Ordering::SeqCst), 1);

    // The rollout moves to step 1; upstream b fails twice (its breaker
    // opens at 5 in a row).
    let advanced = c
        .post(format!("{}/routes/r/rollout/advance", proxy.admin_url()))
        .send()
        .await
        .expect("advance");
    assert_eq!(advanced.status(), 200);
    for _ in 0..2 {
        assert_eq!(send("/fail/x").await, 503);
    }
    let gw = &proxy.gateway;
    let breaker = gw.registry.get("b").expect("b").breaker.clone();
    assert_eq!(breaker.status().consecutive_failures, 2);
    let before = gw.rollouts.status("r").expect("rollout");
    assert_eq!((before.state, before.step), ("canary", 1));
    let state_file = state.path().join("r.json");
    assert!(
        eventually(WAIT, || {
            std::fs::read(&state_file)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v["step"] == 1)
        })
        .await,
        "the advance is persisted"
    );
    let saved = std::fs::read(&state_file).expect("state file");

    // A reload that would restart the rollout (new canary deps), lower the
    // breaker's threshold to 3 and rebuild a's pool (new connect_timeout),
    // rejected at the last stage.
    std::fs::write(&proxy.config_path, config("3s", 3, "p2")).expect("write");
    gw.fail_next_compile();
    let err = gw.reload().await.expect_err("rejected");
    assert!(err.to_string().contains("injected"), "{err}");
    assert_eq!(gw.generation(), 1);

    let after = gw.rollouts.status("r").expect("rollout");
    assert_eq!((after.state, after.step), ("canary", 1), "{after:?}");
    assert!(
        after.stage_seconds >= before.stage_seconds,
        "the step start moved: {before:?} -> {after:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        std::fs::read(&state_file).expect("state file"),
        saved,
        "the state file was rewritten"
    );
    // A third failure: under the rejected threshold (3) the breaker would
    // open now; under the running one (5) it stays closed.
    assert_eq!(send("/fail/x").await, 503);
    assert_eq!(
        breaker.status().state,
        cutover::upstream::BreakerState::Closed,
        "the rejected breaker threshold took effect"
    );
    assert!(Arc::ptr_eq(
        &gw.registry.get("b").expect("b").breaker,
        &breaker
    ));

    // Back to the running config, accepted: a's pool is the one from before
    // the rejected reload, so its idle connection is reused.
    std::fs::write(&proxy.config_path, &good).expect("write");
    assert_eq!(gw.reload().await.expect("reload"), 2);
    assert_eq!(send("/v1/chat").await, 200);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the pool was replaced by the rejected reload"
    );
    let last = gw.rollouts.status("r").expect("rollout");
    assert_eq!((last.state, last.step), ("canary", 1));
    assert!(last.stage_seconds >= after.stage_seconds);
}
