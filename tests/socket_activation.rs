//! Listening sockets handed to the real binary (systemd socket activation:
//! LISTEN_PID, LISTEN_FDS, fds from 3), matched to `server.listen` and
//! `admin.listen` by address. See src/server/inherit.rs.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::*;

fn config(traffic: u16, admin: u16, backend: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{traffic}"
[admin]
listen = "127.0.0.1:{admin}"
[log]
access_log = false
[[upstreams]]
name = "a"
url = "{backend}"
[[routes]]
name = "chat"
[[routes.versions]]
name = "v1"
upstream = "a"
weight = 100.0
"#
    )
}

/// A request sent before cutover starts waits in the handed-over socket's
/// queue and is answered once it serves: nothing is refused while the
/// process starts (or restarts, when a supervisor holds the socket).
#[tokio::test]
async fn a_request_sent_before_the_binary_starts_is_answered() {
    let a = healthy_backend("a").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    let (sockets, traffic, admin) = traffic_and_admin();
    std::fs::write(&path, config(traffic, admin, &a.url())).expect("write");

    // Connected and written before the process exists.
    let mut early = std::net::TcpStream::connect(("127.0.0.1", traffic)).expect("connect");
    early
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 2\r\nconnection: close\r\n\r\n{}",
        )
        .expect("write");

    let _bin = Binary::spawn_with(
        &["serve", "--config", path.to_str().expect("utf-8")],
        &[],
        sockets,
    );
    early
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let answer = tokio::task::spawn_blocking(move || {
        let mut answer = String::new();
        let _ = early.read_to_string(&mut answer);
        answer
    })
    .await
    .expect("join");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("x-cutover-version: v1"), "{answer}");
}

/// A handed-over socket that matches neither listen address is closed
/// (and logged), not left accepting connections nobody serves.
#[tokio::test]
async fn a_socket_matching_no_listen_address_is_closed() {
    let a = healthy_backend("a").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    let (mut sockets, traffic, admin) = traffic_and_admin();
    let stray = listener();
    let stray_port = port(&stray);
    sockets.push(stray);
    std::fs::write(&path, config(traffic, admin, &a.url())).expect("write");
    let mut bin = Binary::spawn_with(
        &["serve", "--config", path.to_str().expect("utf-8")],
        &[],
        sockets,
    );
    assert!(wait_ready(([127, 0, 0, 1], admin).into(), Duration::from_secs(20)).await);
    let refused = eventually(Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", stray_port)).is_err()
    })
    .await;
    assert!(refused, "the stray socket still accepts");
    let r = client()
        .post(format!("http://127.0.0.1:{traffic}/v1/chat/completions"))
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);

    bin.signal("TERM");
    assert!(bin.wait_timeout(Duration::from_secs(10)).is_some());
    let mut err = String::new();
    if let Some(mut e) = bin.child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        err.contains("matches no listen address") && err.contains(&stray_port.to_string()),
        "{err}"
    );
}

/// Variables naming another process (LISTEN_PID is not ours) are ignored,
/// as sd_listen_fds ignores them: the descriptor is not taken, so binding
/// the address it holds fails with a clear error instead of serving on a
/// socket meant for someone else.
#[tokio::test]
async fn sockets_meant_for_another_process_are_not_taken() {
    let a = healthy_backend("a").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    let held = listener();
    let traffic = port(&held);
    let admin = dead_port();
    std::fs::write(&path, config(traffic, admin, &a.url())).expect("write");
    let fd = held.as_raw_fd();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"));
    cmd.args(["serve", "--config", path.to_str().expect("utf-8")])
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1");
    // SAFETY: dup2 is async-signal-safe; it places the socket at fd 3
    // without close-on-exec, as a supervisor would.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // Killed on drop, should it wrongly take the socket and serve.
    let mut bin = Binary {
        child: cmd.spawn().expect("spawn cutover"),
    };
    let exit = bin.wait_timeout(Duration::from_secs(20));
    if exit.is_none() {
        // Still serving: stop it, so its stderr can be read to the end.
        let _ = bin.child.kill();
        let _ = bin.child.wait();
    }
    drop(held);
    let mut err = String::new();
    if let Some(mut e) = bin.child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert_eq!(exit.and_then(|s| s.code()), Some(1), "{err}");
    assert!(
        err.contains(&format!("server.listen 127.0.0.1:{traffic}")) && err.contains("in use"),
        "{err}"
    );
}
