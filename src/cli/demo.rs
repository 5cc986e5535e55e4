//! `cutover demo`: mock backends and the proxy on loopback, driven live.

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print a plain transcript instead of redrawing the terminal.
    #[arg(long)]
    pub no_tty: bool,
}

pub fn run(args: Args) -> u8 {
    let _ = args;
    super::EXIT_USAGE
}
