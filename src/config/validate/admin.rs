//! `[admin]`: the admin listener and its bearer token.

use std::net::SocketAddr;

use crate::config::model::*;
use crate::config::raw::*;
use crate::config::spans::KeyPath;

use super::Validator;

impl Validator<'_> {
    pub(super) fn admin(&mut self, v: Option<Value>) -> Option<AdminConfig> {
        let p = KeyPath::root().key("admin");
        let raw: RawAdmin = match v {
            Some(v) => de_unit(v, &p, &mut self.issues)?,
            None => RawAdmin::default(),
        };
        let listen = match raw.listen {
            Some(l) => self.socket_addr(&l, p.key("listen"))?,
            None => SocketAddr::from(([127, 0, 0, 1], 9901)),
        };
        let token = match &raw.token_env {
            None => {
                if !listen.ip().is_loopback() {
                    self.err(
                        p.key("listen"),
                        format!("admin listen address {listen} is not loopback, so anyone on the network could drive rollouts; valid: set `admin.token_env`, or listen on 127.0.0.1 or [::1]"),
                    );
                }
                None
            }
            Some(name) => self.token_env(
                name,
                p.key("token_env"),
                "the admin bearer token",
                "`token_env`",
            ),
        };
        Some(AdminConfig {
            listen,
            token_env: raw.token_env,
            token,
        })
    }
}
