//! `[cluster]`: the fleet's Redis, its name, this replica, the lease.

use std::time::Duration;

use crate::config::model::*;
use crate::config::raw::*;
use crate::config::spans::KeyPath;

use super::Validator;

impl Validator<'_> {
    pub(super) fn cluster(&mut self, v: Value) -> Option<ClusterConfig> {
        let p = KeyPath::root().key("cluster");
        let raw: RawCluster = de_unit(v, &p, &mut self.issues)?;
        let redis = match raw.redis {
            Some(url) => self.redis_url(&url, p.key("redis")),
            None => {
                self.err(
                    p.clone(),
                    "missing required key `redis`; valid: a URL like \"redis://127.0.0.1:6379/0\" or \"rediss://...\" for TLS",
                );
                None
            }
        };
        let name = raw.name.unwrap_or_else(|| "cutover".to_string());
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            self.err(
                p.key("name"),
                format!("bad fleet name {name:?}; valid: 1 to 64 of A-Z a-z 0-9 . _ - (every Redis key starts with it)"),
            );
        }
        let replica = raw.replica.unwrap_or_else(default_replica);
        if replica.is_empty()
            || replica.len() > 128
            || !replica.bytes().all(|b| b.is_ascii_graphic())
        {
            self.err(
                p.key("replica"),
                format!("bad replica name {replica:?}; valid: 1 to 128 visible ASCII characters, no spaces, unique in the fleet (e.g. \"${{HOSTNAME}}\")"),
            );
        }
        let sync_interval = self.positive_duration(
            raw.sync_interval,
            p.key("sync_interval"),
            Duration::from_secs(1),
        );
        if sync_interval < Duration::from_millis(10) {
            self.err(
                p.key("sync_interval"),
                format!("{sync_interval:?} is too short; valid: at least \"10ms\" (each sync is a few Redis round trips)"),
            );
        }
        let lease = self.positive_duration(raw.lease, p.key("lease"), Duration::from_secs(5));
        if lease < sync_interval * 2 {
            self.err(
                p.key("lease"),
                format!("lease {lease:?} is shorter than twice sync_interval ({sync_interval:?}): the leader renews once per sync_interval and would lose the lease to one slow round; valid: at least 2 × sync_interval, 3 × or more recommended"),
            );
        }
        Some(ClusterConfig {
            redis: redis?,
            name,
            replica,
            lease,
            sync_interval,
        })
    }

    /// `redis://` or `rediss://`, parsed by the Redis client itself. The
    /// messages never repeat the URL with its password.
    pub(super) fn redis_url(&mut self, text: &str, path: KeyPath) -> Option<RedisUrl> {
        let Some(url) = RedisUrl::new(text) else {
            let scheme = text.split_once("://").map_or("", |(s, _)| s);
            self.err(
                path,
                format!("unsupported Redis URL scheme {scheme:?}; valid: redis://[:PASSWORD@]HOST[:PORT][/DB] or rediss://... for TLS"),
            );
            return None;
        };
        match redis::IntoConnectionInfo::into_connection_info(url.expose()) {
            Ok(_) => Some(url),
            Err(e) => {
                // The client's message may quote the URL: name only its kind.
                let kind = format!("{:?}", e.kind());
                self.err(
                    path,
                    format!("malformed Redis URL {} ({kind}); valid: redis://[:PASSWORD@]HOST[:PORT][/DB] or rediss://... (a password with reserved characters must be percent-encoded)", url.redacted()),
                );
                None
            }
        }
    }
}

/// `cluster.replica` when it is left out: the host name and the process
/// id, unique on one host and recognisable in `/status`.
fn default_replica() -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|f| {
            let name: String = std::fs::read_to_string(f)
                .ok()?
                .chars()
                .filter(char::is_ascii_graphic)
                .take(100)
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .unwrap_or_else(|| "cutover".to_string());
    format!("{host}-{}", std::process::id())
}
