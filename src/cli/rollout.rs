//! `cutover rollout ACTION ROUTE`: drive a route's rollout through the admin
//! API (`POST /routes/{route}/rollout/{action}`, SPEC §10).

use super::status::{admin_url, call};
use crate::rollout::Action;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[arg(value_enum)]
    pub action: Action,
    /// The route whose rollout to act on.
    pub route: String,
    /// The admin listener (`admin.listen`).
    #[arg(long, default_value = "http://127.0.0.1:9901")]
    pub admin: String,
    /// Bearer token, when `admin.token_env` is set.
    #[arg(long, env = "CUTOVER_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

pub fn run(args: Args) -> u8 {
    let path = format!("/routes/{}/rollout/{}", args.route, args.action.as_str());
    let url = match admin_url(&args.admin, &path) {
        Ok(u) => u,
        Err(e) => {
            eprintln!(
                "error: --admin {:?} / route {:?}: {e}",
                args.admin, args.route
            );
            return super::EXIT_USAGE;
        }
    };
    let runtime = match super::runtime(super::Threads::Current, "error") {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(call(http::Method::POST, &url, args.token.as_deref())) {
        Ok(body) => {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let r = &v["rollout"];
            println!(
                "{}: {} -> state {} step {} canary {}%",
                args.route,
                args.action.as_str(),
                r["state"].as_str().unwrap_or("?"),
                r["step"],
                r["canary_weight"],
            );
            super::EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            super::EXIT_USER
        }
    }
}
