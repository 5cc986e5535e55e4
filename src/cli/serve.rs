//! `cutover serve`: run the proxy.

use crate::cli::ConfigArg;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(args: Args) -> u8 {
    let _ = args;
    super::EXIT_USAGE
}
