//! `cutover hash`: the bucket of a sticky key and the version it maps to
//! under the current weights (SPEC §1, §3).
//!
//! The current weights are the running proxy's: a rollout (or a fleet's
//! decision) moves them away from the file's. So they are read from the
//! admin API's `/status` when one is named (`--admin`), or, on a route
//! with a rollout, from the admin listener the config names. A named
//! admin that does not answer is an error; the config's own is tried and,
//! if it is not running, the configured weights are used, as the stderr
//! note says. Standard output is always the one `bucket=N version=NAME`
//! line.

use std::time::Duration;

use crate::admin::status::Status;
use crate::cli::ConfigArg;
use crate::config::{Config, RouteConfig, WeightBps};
use crate::routing::{BucketTable, bucket};

/// How long the config's own admin listener is given to answer when it
/// was not named: a proxy that is not running refuses at once.
const IMPLICIT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The route whose salt and weights to use.
    #[arg(long)]
    pub route: String,
    /// Admin API of the running proxy, whose weights in force are used
    /// (default: the config's `admin.listen`, on a route with a rollout).
    #[arg(long)]
    pub admin: Option<String>,
    /// Bearer token, when the proxy sets `admin.token_env` (default: that
    /// variable's value).
    #[arg(long, env = "CUTOVER_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
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
    let config = &loaded.config;
    let Some(route) = config.route(&args.route) else {
        let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        eprintln!(
            "error: {}: no route named {:?}; routes in this file: {}",
            args.config.config.display(),
            args.route,
            names.join(", ")
        );
        return super::EXIT_USER;
    };
    let configured: Vec<WeightBps> = route.versions.iter().map(|v| v.weight).collect();
    let weights = match live_source(&args, config, route) {
        None => configured,
        Some((admin, explicit)) => match live_weights(&admin, &args, config, route, explicit) {
            Ok(live) => live,
            Err(e) if explicit => {
                eprintln!("error: --admin {admin:?}: {e}");
                return super::EXIT_USER;
            }
            Err(e) => {
                eprintln!(
                    "note: route {:?} has a rollout, and the admin API at {admin} gave no weights \
                     in force ({e}): the configured weights are used",
                    route.name
                );
                configured
            }
        },
    };
    let b = bucket(route.salt.as_bytes(), args.key.as_bytes());
    let table = BucketTable::new(weights.iter().copied());
    let version = &route.versions[table.index_of(b)].target.name;
    println!("bucket={b} version={version}");
    super::EXIT_OK
}

/// The admin API to read the weights in force from, and whether it was
/// named (`--admin`); `None`: the configured weights are the current ones.
fn live_source(args: &Args, config: &Config, route: &RouteConfig) -> Option<(String, bool)> {
    if let Some(admin) = &args.admin {
        return Some((admin.clone(), true));
    }
    route.rollout.as_ref()?;
    let mut at = config.admin.listen;
    if at.ip().is_unspecified() {
        at.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Some((format!("http://{at}"), false))
}

/// The route's weights in force, in the config's version order, from
/// `/status`; an error if the proxy runs another set of versions.
fn live_weights(
    admin: &str,
    args: &Args,
    config: &Config,
    route: &RouteConfig,
    explicit: bool,
) -> Result<Vec<WeightBps>, String> {
    let url = super::status::admin_url(admin, "/status")?;
    let token = args.token.as_deref().or(config.admin.token.as_deref());
    let runtime = super::runtime(super::Threads::Current, "error")
        .map_err(|_| "cannot start the async runtime".to_string())?;
    let status: Status = runtime.block_on(async {
        let call = super::status::call(http::Method::GET, &url, token);
        let body = if explicit {
            call.await?
        } else {
            tokio::time::timeout(IMPLICIT_TIMEOUT, call)
                .await
                .map_err(|_| format!("no answer within {}s", IMPLICIT_TIMEOUT.as_secs()))??
        };
        serde_json::from_slice(&body).map_err(|e| format!("not a status document: {e}"))
    })?;
    let Some(running) = status.routes.iter().find(|r| r.name == route.name) else {
        return Err(format!("the running proxy has no route {:?}", route.name));
    };
    let weights = route
        .versions
        .iter()
        .map(|v| {
            running
                .versions
                .iter()
                .find(|r| r.name == v.target.name)
                .and_then(|r| WeightBps::from_percent(r.effective_weight))
                .ok_or_else(|| {
                    format!(
                        "the running proxy's route {:?} has no version {:?}: it runs another config",
                        route.name, v.target.name
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if running.versions.len() != weights.len() {
        return Err(format!(
            "the running proxy's route {:?} has other versions: it runs another config",
            route.name
        ));
    }
    Ok(weights)
}
