//! `cutover`: CLI dispatch only. Each subcommand lives in `cutover::cli`.

use std::process::ExitCode;

/// mimalloc, the default feature (`--no-default-features` for the system
/// allocator). It keeps objects of one size together, so what parked
/// connections keep alive sits on a few pages instead of pinning a page
/// among every connection's freed buffers: 10,000 idle connections cost
/// +34 MiB instead of glibc's +80, and a request costs a few per cent less.
/// Transparent huge pages are off (`no_thp`): with them its first arena
/// alone was 9 MiB of RSS. Its purge delay stays the default (10 ms):
/// purging at once cost the cache's workload 50 % more CPU per request.
/// Entered through `cutover::alloc`, which skips mimalloc's aligned path
/// for word-aligned layouts.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: cutover::alloc::MiMalloc = cutover::alloc::MiMalloc;

use clap::Parser;
use cutover::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve(args) => cutover::cli::serve::run(args),
        Command::Check(args) => cutover::cli::check::run(args),
        Command::Hash(args) => cutover::cli::hash::run(args),
        Command::MockBackend(args) => cutover::cli::mock_backend::run(args),
        Command::Demo(args) => cutover::cli::demo::run(args),
        Command::Status(args) => cutover::cli::status::run(args),
        Command::Rollout(args) => cutover::cli::rollout::run(args),
        Command::Eval(args) => cutover::cli::eval::run(*args),
    };
    ExitCode::from(code)
}
