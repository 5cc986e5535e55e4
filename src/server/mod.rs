//! Listeners: the traffic listener (HTTP/1.1, h2c prior knowledge, TLS with
//! ALPN) and the admin listener, with graceful shutdown.
//!
//! `run` takes already-bound listeners and a shutdown future (as
//! mini-redis does), so tests bind port 0 and the demo runs in-process.

mod activity;
mod conn;
mod control;
mod inherit;
mod sniff;
mod tls;
pub(crate) mod trim;

pub use conn::{PARK_AFTER, parked_connections};
pub use control::ControlPlane;
pub use inherit::Inherited;

#[cfg(fuzzing)]
pub use sniff::quick_classify_agrees;
pub use sniff::{Ambiguous, Framing, Sniffed};

pub use tls::server_tls_config;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin;
use crate::gateway::Gateway;
use crate::proxy::ConnInfo;

/// Serve traffic and admin until `shutdown` resolves, then drain: `/readyz`
/// turns 503, the listeners close, and in-flight requests get up to
/// `server.shutdown_grace` to finish. The control plane gets a thread of
/// its own ([`ControlPlane`]), stopped before this returns.
pub async fn run(
    gateway: Arc<Gateway>,
    traffic: TcpListener,
    admin_listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let control = ControlPlane::start()?;
    run_with(gateway, traffic, admin_listener, control, shutdown).await
}

/// [`run`] on a control plane the caller started (`cutover serve` puts the
/// config watcher on it first).
pub async fn run_with(
    gateway: Arc<Gateway>,
    traffic: TcpListener,
    admin_listener: TcpListener,
    control: ControlPlane,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let rt = gateway.data_plane.runtime();
    let server = &rt.config.server;
    let tls = match &server.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(
            server_tls_config(t).map_err(std::io::Error::other)?,
        )),
        None => None,
    };
    let settings = Arc::new(conn::Settings::new(server.request_header_timeout));
    let handshake_timeout = server.request_header_timeout;
    let grace = server.shutdown_grace;
    drop(rt);

    // Every connection's task, and the signal that drains them.
    let connections = TaskTracker::new();
    let draining = CancellationToken::new();
    // The admin listener was bound on the caller's runtime: move it to the
    // control plane's, where its connections are then served.
    let admin_listener = admin_listener.into_std()?;
    control.spawn({
        let gateway = Arc::clone(&gateway);
        async move {
            match TcpListener::from_std(admin_listener) {
                Ok(listener) => admin::serve(gateway, listener).await,
                Err(e) => tracing::error!(error = %e, "cannot serve the admin listener"),
            }
        }
    });
    // The Prometheus recorder buffers histogram samples until upkeep folds
    // them into buckets. cutover's own histograms do not go through it
    // (`telemetry::histogram`), but anything recorded there is bounded.
    let handle = gateway.prometheus.clone();
    every(&control, Duration::from_secs(5), move || {
        handle.run_upkeep()
    });
    // moka applies its read and write logs on the calling thread once they
    // fill or 300 ms have passed; applying them here more often than that
    // keeps the timed runs off the traffic workers, and expiries move
    // without traffic.
    let cache = Arc::clone(&gateway.data_plane.cache);
    every(&control, Duration::from_millis(250), move || cache.upkeep());
    // Idle upstream connections past their `pool_idle_timeout` close on
    // our side, before the upstream's own keep-alive timeout closes them
    // under a request.
    let registry = Arc::clone(&gateway);
    every(&control, Duration::from_secs(1), move || {
        registry.registry.sweep()
    });
    // Parked connections freed their buffers: hand that heap back to the
    // system, here and never on a traffic worker (server::trim).
    let trim = trim::AfterParking::default();
    every(&control, Duration::from_secs(1), move || {
        trim.run();
    });
    // The rollout controllers tick once a second (SPEC §9).
    control.spawn({
        let gateway = Arc::clone(&gateway);
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                gateway.tick_rollouts().await;
            }
        }
    });
    // With [cluster]: the fleet's sync loop (SPEC §12); told to stop at
    // shutdown, when it hands the lease over.
    let (fleet_stop, fleet_stopping) = tokio::sync::watch::channel(false);
    let fleet = gateway.cluster.as_ref().map(|cluster| {
        let _on_control = control.handle().enter();
        crate::cluster::sync::spawn(Arc::clone(&gateway), Arc::clone(cluster), fleet_stopping)
    });
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = traffic.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let plane = Arc::clone(&gateway.data_plane);
        let settings = Arc::clone(&settings);
        let draining = draining.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let info = ConnInfo {
                peer,
                tls: tls.is_some(),
            };
            let Some(acceptor) = tls else {
                return conn::serve(stream, plane, info, &settings, &draining).await;
            };
            // Boxed: rustls's state is large, and the task keeps only this.
            let handshake = Box::pin(acceptor.accept(stream));
            let tls_stream = match tokio::time::timeout(handshake_timeout, handshake).await {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            if tls_stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                let io = Sniffed::passthrough(tls_stream);
                conn::serve_h2(io, plane, info, &settings, &draining).await;
            } else {
                conn::serve(tls_stream, plane, info, &settings, &draining).await;
            }
        });
    }

    // Drain: readiness first, so load balancers stop sending; then stop
    // accepting; then wait for in-flight requests within the grace period.
    gateway.draining.store(true, Ordering::Release);
    drop(traffic);
    tracing::info!(in_flight = gateway.data_plane.in_flight.load(Ordering::Relaxed), grace = ?grace, "draining");
    let deadline = tokio::time::Instant::now() + grace;
    draining.cancel();
    connections.close();
    if tokio::time::timeout_at(deadline, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace elapsed with requests still in flight");
    }
    // Mirrors get what is left of the grace period to report, never more:
    // a hung shadow must not hold the process.
    let mirrors = &gateway.data_plane.mirrors;
    mirrors.close();
    if tokio::time::timeout_at(deadline, mirrors.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            mirrors = mirrors.len(),
            "shutdown grace elapsed with mirrors still in flight; abandoning them"
        );
    }
    if let Some(task) = fleet {
        let _ = fleet_stop.send(true);
        let abort = task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .is_err()
        {
            tracing::warn!("the fleet's sync loop did not stop in time");
            abort.abort();
        }
    }
    // The admin listener, the ticks and the sweeper stop with the thread.
    control.shutdown().await;
    gateway.data_plane.access_log.flush(Duration::from_secs(2));
    Ok(())
}

/// Run `work` on the control plane every `period`, late ticks delayed
/// rather than bunched.
fn every(control: &ControlPlane, period: Duration, work: impl Fn() + Send + 'static) {
    control.spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            work();
        }
    });
}
