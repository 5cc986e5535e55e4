//! `cutover hash`: the bucket of a sticky key and the version it maps to
//! under the configured weights (SPEC §3).

use crate::cli::ConfigArg;
use crate::routing::{BucketTable, bucket};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The route whose salt and weights to use.
    #[arg(long)]
    pub route: String,
    /// The sticky key (a session id, user id, cookie value or client IP).
    pub key: String,
}

pub fn run(args: Args) -> u8 {
    let loaded = match crate::config::load(&args.config.config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return super::EXIT_USER;
        }
    };
    let Some(route) = loaded.config.route(&args.route) else {
        let names: Vec<&str> = loaded
            .config
            .routes
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        eprintln!(
            "error: {}: no route named {:?}; routes in this file: {}",
            args.config.config.display(),
            args.route,
            names.join(", ")
        );
        return super::EXIT_USER;
    };
    let b = bucket(route.salt.as_bytes(), args.key.as_bytes());
    let table = BucketTable::new(route.versions.iter().map(|v| v.weight));
    let version = &route.versions[table.index_of(b)].target.name;
    println!("bucket={b} version={version}");
    super::EXIT_OK
}
