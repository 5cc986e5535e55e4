//! `cutover serve`: run the proxy until SIGTERM or SIGINT, reloading the
//! config when its file changes or on SIGHUP.

use std::future::Future;
use std::sync::Arc;

use crate::cli::ConfigArg;
use crate::config::{self, Config, LogFormat};
use crate::gateway::Gateway;
use crate::reload;
use crate::server::Inherited;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,

    /// Do not watch the config file; reload only on SIGHUP or POST /reload
    /// (e.g. where file events are not delivered, as on some network mounts).
    #[arg(long, env = "CUTOVER_NO_WATCH")]
    pub no_watch: bool,
}

pub fn run(args: Args) -> u8 {
    // Before any thread or descriptor exists (see `Inherited::take`).
    let inherited = Inherited::take();
    // Parsing leaves a tree many times the file's size (30 MiB for a
    // thousand routes) freed behind it. On a thread of its own, that
    // garbage stays in the thread's own heap instead of scattering free
    // chunks through the main one, which a one-worker runtime serves
    // traffic from (with glibc, every malloc there then walked them:
    // docs/performance.md).
    let path = &args.config.config;
    let loaded = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("config-load".into())
            .spawn_scoped(s, || config::load(path))
            .map(|t| t.join())
    });
    let loaded = match loaded {
        Ok(Ok(Ok(l))) => l,
        Ok(Ok(Err(e))) => {
            eprintln!("{e}");
            return super::EXIT_USER;
        }
        Ok(Err(_)) | Err(_) => {
            eprintln!("error: loading the config failed unexpectedly");
            return super::EXIT_USER;
        }
    };
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let config = loaded.config;
    init_logging(&config);
    let workers = worker_threads(&config);
    let threads = if workers == 1 {
        super::Threads::Current
    } else {
        super::Threads::Workers(workers)
    };
    let runtime = match super::runtime(threads, "error") {
        Ok(r) => r,
        Err(code) => return code,
    };
    let reload = reload::Options {
        watch_file: !args.no_watch,
        ..reload::Options::default()
    };
    match runtime.block_on(serve_with(config, reload, inherited, shutdown_signal())) {
        Ok(()) => super::EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            super::EXIT_USER
        }
    }
}

/// Bind both listeners and serve until `shutdown`, reloading with the
/// default [`reload::Options`].
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    serve_with(
        config,
        reload::Options::default(),
        Inherited::default(),
        shutdown,
    )
    .await
}

/// Bind both listeners (or take the sockets handed over for their
/// addresses) and serve until `shutdown`; the reloader runs alongside and
/// stops when shutdown begins.
pub async fn serve_with(
    config: Config,
    reload: reload::Options,
    mut inherited: Inherited,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let listen = config.server.listen;
    let admin_listen = config.admin.listen;
    let traffic = inherited
        .bind(listen)
        .await
        .map_err(|e| format!("server.listen {listen}: {e}"))?;
    let admin = inherited
        .bind(admin_listen)
        .await
        .map_err(|e| format!("admin.listen {admin_listen}: {e}"))?;
    inherited.report();
    drop(inherited);
    let gateway = Gateway::new(config)?;
    tracing::info!(%listen, admin = %admin_listen, generation = gateway.generation(), "cutover serving");
    let control = crate::server::ControlPlane::start()
        .map_err(|e| format!("cannot start the control plane's thread: {e}"))?;

    // One shutdown future, two listeners: the server polls the original and
    // the reloader hears about it through this channel (or its drop).
    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    let reloader = reload::spawn_on(control.handle(), Arc::clone(&gateway), reload, async move {
        let _ = stopping.wait_for(|s| *s).await;
    });
    // Once traffic is accepted, a change to the file is not missed.
    reloader.ready().await;
    let shutdown = async move {
        shutdown.await;
        let _ = stopping_tx.send(true);
    };
    // The reloader ends when shutdown begins, before the control plane stops.
    let served = crate::server::run_with(gateway, traffic, admin, control, shutdown).await;
    reloader.join().await;
    served.map_err(|e| e.to_string())
}

/// `CUTOVER_WORKERS` overrides `server.workers`; 0 means one per core.
fn worker_threads(config: &Config) -> usize {
    let configured = std::env::var("CUTOVER_WORKERS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(config.server.workers);
    if configured == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        configured
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Operational logs go to stderr; stdout carries the access log.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown signal received");
}
