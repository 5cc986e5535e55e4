//! `cutover mock-backend`: see [`crate::mock`].

use crate::server::Inherited;

pub use crate::mock::MockArgs as Args;

/// Serves until Ctrl-C or SIGTERM. Prints `mock-backend NAME listening on
/// ADDR` (the real port when asked for port 0) once it accepts connections.
/// Takes a socket handed over for `--listen`, as `serve` does.
pub fn run(args: Args) -> u8 {
    // Before any thread or descriptor exists (see `Inherited::take`).
    let mut inherited = Inherited::take();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mock-backend: cannot start the async runtime: {error}");
            return super::EXIT_USER;
        }
    };
    runtime.block_on(async move {
        let listener = match inherited.bind(args.listen).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!(
                    "mock-backend: cannot listen on {}: {error} \
                     (use a free port, or port 0 to pick one)",
                    args.listen
                );
                return super::EXIT_USER;
            }
        };
        inherited.report();
        drop(inherited);
        let addr = listener.local_addr().unwrap_or(args.listen);
        println!("mock-backend {} listening on {addr}", args.name);
        match crate::mock::serve(listener, args, shutdown_signal()).await {
            Ok(()) => super::EXIT_OK,
            Err(error) => {
                eprintln!("mock-backend: {error}");
                super::EXIT_USER
            }
        }
    })
}

/// Ctrl-C, or SIGTERM on unix (what process supervisors and `kill` send).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                eprintln!("mock-backend: SIGTERM handler unavailable ({error}); stop with Ctrl-C");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
