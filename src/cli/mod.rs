//! Command-line interface: one module per subcommand (SPEC §1).
//!
//! Exit codes: 0 ok, 1 user error (bad config, regression found), 2 usage
//! error (clap's own errors exit 2 too).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub mod check;
pub mod demo;
pub mod eval;
pub mod hash;
pub mod mock_backend;
pub mod rollout;
pub mod serve;
pub mod status;

pub const EXIT_OK: u8 = 0;
pub const EXIT_USER: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// The threads a subcommand's async runtime runs on.
#[derive(Clone, Copy, Debug)]
pub enum Threads {
    /// The calling thread only.
    Current,
    /// This many worker threads (0: one per core).
    Workers(usize),
}

/// Build a subcommand's runtime, or say why not on stderr (prefixed with
/// `who`) and give the exit code to return.
pub fn runtime(threads: Threads, who: &str) -> Result<tokio::runtime::Runtime, u8> {
    let mut builder = match threads {
        Threads::Current => tokio::runtime::Builder::new_current_thread(),
        Threads::Workers(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 0 {
                b.worker_threads(n);
            }
            b
        }
    };
    builder.enable_all().build().map_err(|e| {
        eprintln!("{who}: cannot start the async runtime: {e}");
        EXIT_USER
    })
}

#[derive(Debug, Parser)]
#[command(
    name = "cutover",
    version,
    about = "A reverse proxy for shipping new LLM agent versions safely: shadow, canary, ramp-up, rollback."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve(serve::Args),
    /// Parse and validate a config; print a summary and lint warnings.
    Check(check::Args),
    /// Print the bucket (0..9999) of a sticky key and the version it maps to.
    Hash(hash::Args),
    /// Run a fake agent backend (Chat Completions, Responses, Anthropic Messages; or MCP with --mcp) for demos and tests.
    MockBackend(mock_backend::Args),
    /// Start mock backends and the proxy on loopback and show what happens.
    Demo(demo::Args),
    /// Show what a running proxy is doing (admin `GET /status`).
    Status(status::Args),
    /// Act on a route's rollout: advance, promote, pause, resume, abort, restart.
    Rollout(rollout::Args),
    /// CI gate: replay a golden data set, score it, exit non-zero on regression.
    Eval(Box<eval::Args>),
}

/// `--config FILE`, defaulting to `$CUTOVER_CONFIG`, then `cutover.toml`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// Config file (default: $CUTOVER_CONFIG, then cutover.toml).
    #[arg(
        long,
        short = 'c',
        env = "CUTOVER_CONFIG",
        default_value = "cutover.toml"
    )]
    pub config: PathBuf,
}
