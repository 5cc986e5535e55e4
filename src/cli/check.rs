//! `cutover check`: validate a config, print its summary and lints.

use crate::cli::ConfigArg;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(args: Args) -> u8 {
    match crate::config::load(&args.config.config) {
        Ok(_) => super::EXIT_OK,
        Err(e) => {
            eprintln!("{e}");
            super::EXIT_USER
        }
    }
}
