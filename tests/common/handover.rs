//! Listening sockets handed to the real binary (systemd socket activation,
//! src/server/inherit.rs) instead of ports guessed free.
//!
//! A test binds 127.0.0.1:0, writes the port the kernel chose into the
//! config, and passes the socket itself to the child at fds 3, 4, ...
//! The port is never released between the pick and the bind, so no other
//! test (and no outgoing connection's source port) can take it in between.
//!
//! Because the socket listens before cutover starts, a connection to it is
//! accepted by the kernel at once: "the port answers" no longer means "the
//! binary is serving". Wait with [`wait_ready`] instead, which needs an
//! HTTP answer from the admin API.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A listener on 127.0.0.1 at a port the kernel picks.
pub fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

/// The port `l` listens on.
pub fn port(l: &TcpListener) -> u16 {
    l.local_addr().expect("local addr").port()
}

/// Sockets for the binary's traffic and admin listeners, to hand over at
/// spawn, and their ports: (sockets, traffic port, admin port).
pub fn traffic_and_admin() -> (Vec<TcpListener>, u16, u16) {
    let sockets = vec![listener(), listener()];
    let (traffic, admin) = (port(&sockets[0]), port(&sockets[1]));
    (sockets, traffic, admin)
}

/// A port nothing listens on (for "unreachable" tests): bound, then
/// released. Only a connection *to* it matters, so a later bind elsewhere
/// taking it is harmless.
pub fn dead_port() -> u16 {
    port(&listener())
}

/// A `Command` that runs the cutover binary with `sockets` handed over as
/// fds 3, 4, ...; add the arguments with `.args(..)`. Keep the sockets
/// open until `spawn` returns, then drop them: the child holds its copies.
///
/// `LISTEN_PID` must be the child's pid, which exists only after the fork,
/// so a shell sets it and then execs cutover in its place (same pid).
pub fn cutover_command(sockets: &[&TcpListener]) -> Command {
    const MAX: usize = 8;
    assert!(sockets.len() <= MAX, "at most {MAX} sockets");
    let n = sockets.len();
    let mut fds: [RawFd; MAX] = [-1; MAX];
    for (slot, s) in fds.iter_mut().zip(sockets) {
        *slot = s.as_raw_fd();
    }
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!("LISTEN_PID=$$ LISTEN_FDS={n} exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_cutover"));
    // SAFETY: runs between fork and exec, and only makes async-signal-safe
    // calls (fcntl, dup2, close) on a fixed-size array: no allocation.
    unsafe {
        cmd.pre_exec(move || {
            // First move every socket above the target range, so placing
            // one at 3 + i never overwrites another still to be placed.
            let mut high: [RawFd; MAX] = [-1; MAX];
            for i in 0..n {
                high[i] = libc::fcntl(fds[i], libc::F_DUPFD, 64);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in high.iter().enumerate().take(n) {
                // dup2 clears close-on-exec on the new descriptor.
                if libc::dup2(*fd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(*fd);
            }
            Ok(())
        });
    }
    cmd
}

/// Wait until the admin API at `admin` answers `GET /healthz` with 200:
/// the binary has loaded its config and serves.
pub async fn wait_ready(admin: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let probe = async {
            let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head).await.ok()?;
            Some(&head == b"HTTP/1.1 200")
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(Some(true)) = tokio::time::timeout(left, probe).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
