//! `cutover serve`: run the proxy until SIGTERM or SIGINT.

use std::future::Future;

use crate::cli::ConfigArg;
use crate::config::{self, Config, LogFormat};
use crate::gateway::Gateway;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(args: Args) -> u8 {
    let loaded = match config::load(&args.config.config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return super::EXIT_USER;
        }
    };
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let config = loaded.config;
    init_logging(&config);
    let workers = worker_threads(&config);
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return super::EXIT_USER;
        }
    };
    match runtime.block_on(serve(config, shutdown_signal())) {
        Ok(()) => super::EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            super::EXIT_USER
        }
    }
}

/// Bind both listeners and serve until `shutdown`.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let listen = config.server.listen;
    let admin_listen = config.admin.listen;
    let traffic = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("server.listen {listen}: {e}"))?;
    let admin = tokio::net::TcpListener::bind(admin_listen)
        .await
        .map_err(|e| format!("admin.listen {admin_listen}: {e}"))?;
    let gateway = Gateway::new(config)?;
    tracing::info!(%listen, admin = %admin_listen, generation = gateway.generation(), "cutover serving");
    crate::server::run(gateway, traffic, admin, shutdown)
        .await
        .map_err(|e| e.to_string())
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
