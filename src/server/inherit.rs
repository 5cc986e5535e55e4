//! Listening sockets handed over by whoever started the process, in the
//! systemd socket-activation convention (`sd_listen_fds(3)`): `LISTEN_PID`
//! names this process, `LISTEN_FDS` counts the sockets, which start at
//! fd 3. A handed-over socket stays open across a restart of cutover (no
//! refused connection while it starts) and lets a test harness bind port 0
//! and pass the socket on, instead of guessing a free port.
//!
//! Sockets are matched to `server.listen` and `admin.listen` by their bound
//! address, so the config stays the one place that names the addresses: an
//! address with no matching socket is bound as usual, and a socket that
//! matches no address is closed.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};

/// The first handed-over descriptor (after stdin, stdout and stderr).
const FIRST_FD: RawFd = 3;
/// More than any real socket unit passes; a larger count is a mistake.
const MAX_FDS: RawFd = 64;

/// The sockets this process was handed, not yet claimed by a listener.
#[derive(Debug, Default)]
pub struct Inherited {
    sockets: Vec<(SocketAddr, TcpListener)>,
    /// What was wrong with the hand-over, logged once logging is set up
    /// (`take` runs before it).
    warnings: Vec<String>,
}

impl Inherited {
    /// Take the handed-over sockets. Call it first thing in `main`, before
    /// any thread or descriptor exists: the descriptors named by
    /// `LISTEN_FDS` are then known to be the ones the parent passed. The
    /// variables are removed, so a child process does not take them too.
    pub fn take() -> Inherited {
        let pid = std::env::var("LISTEN_PID").ok();
        let count = std::env::var("LISTEN_FDS").ok();
        // SAFETY: called from `main` before the runtime or any other thread
        // starts, so nothing reads the environment concurrently.
        unsafe {
            std::env::remove_var("LISTEN_PID");
            std::env::remove_var("LISTEN_FDS");
            std::env::remove_var("LISTEN_FDNAMES");
        }
        // Variables meant for another process (a wrapper that exec'd us
        // without updating them) are ignored, as sd_listen_fds does.
        if pid.and_then(|p| p.trim().parse::<u32>().ok()) != Some(std::process::id()) {
            return Inherited::default();
        }
        let Some(count) = count.and_then(|c| c.trim().parse::<RawFd>().ok()) else {
            return Inherited::default();
        };
        let mut inherited = Inherited::default();
        if !(1..=MAX_FDS).contains(&count) {
            inherited.warnings.push(format!(
                "LISTEN_FDS={count} is not in 1..={MAX_FDS}; no socket taken"
            ));
            return inherited;
        }
        for fd in FIRST_FD..FIRST_FD + count {
            match adopt(fd).and_then(|l| Ok((l.local_addr().map_err(|_| "no address")?, l))) {
                Ok((addr, listener)) => inherited.sockets.push((addr, listener)),
                Err(why) => inherited
                    .warnings
                    .push(format!("handed-over fd {fd} ignored: {why}")),
            }
        }
        inherited
    }

    /// Log what was wrong with the hand-over, and the sockets no listener
    /// claimed (they are closed when `self` drops).
    pub fn report(&self) {
        for w in &self.warnings {
            tracing::warn!("{w}");
        }
        for (addr, _) in &self.sockets {
            tracing::warn!(%addr, "handed-over socket matches no listen address; closing it");
        }
    }

    /// The handed-over socket bound to `addr`, or a new one bound there.
    pub async fn bind(&mut self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        match self.sockets.iter().position(|(a, _)| *a == addr) {
            Some(i) => {
                let (_, listener) = self.sockets.swap_remove(i);
                listener.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(listener)
            }
            None => tokio::net::TcpListener::bind(addr).await,
        }
    }
}

/// Own `fd` as a listener if it is a listening TCP socket.
fn adopt(fd: RawFd) -> Result<TcpListener, &'static str> {
    // SAFETY: fstat and getsockopt only read the descriptor's state, and
    // fcntl(F_SETFD) only sets its close-on-exec flag; an invalid `fd`
    // makes them fail with EBADF.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return Err("not an open descriptor");
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return Err("not a socket");
        }
        let mut listening: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let got = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut listening as *mut libc::c_int).cast(),
            &mut len,
        );
        if got != 0 || listening == 0 {
            return Err("not a listening socket");
        }
        let mut kind: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let got = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut kind as *mut libc::c_int).cast(),
            &mut len,
        );
        if got != 0 || kind != libc::SOCK_STREAM {
            return Err("not a stream socket");
        }
        // Not passed on to the processes cutover starts (none today).
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        // SAFETY: the descriptor was handed to this process for it to own
        // (LISTEN_PID matched), and `take` runs once, before anything else
        // could have opened or claimed descriptors from 3 up.
        Ok(TcpListener::from_raw_fd(fd))
    }
}
