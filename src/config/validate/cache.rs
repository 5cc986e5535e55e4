//! `[cache]`, the process-wide store, and a route's `cache` table.

use std::time::Duration;

use crate::config::model::*;
use crate::config::raw::*;
use crate::config::spans::KeyPath;

use super::Validator;

impl Validator<'_> {
    pub(super) fn cache(&mut self, v: Option<Value>) -> Option<CacheConfig> {
        let p = KeyPath::root().key("cache");
        let raw: RawCache = match v {
            Some(v) => de_unit(v, &p, &mut self.issues)?,
            None => RawCache::default(),
        };
        let max_size = self.size(raw.max_size, p.key("max_size"), 256 << 20);
        let max_entry_size = self.size(raw.max_entry_size, p.key("max_entry_size"), 4 << 20);
        if max_entry_size > max_size {
            self.err(p.key("max_entry_size"), format!("max_entry_size ({max_entry_size} bytes) is larger than max_size ({max_size} bytes); valid: at most max_size"));
        }
        let lock_timeout = self.duration(
            raw.lock_timeout,
            p.key("lock_timeout"),
            Duration::from_secs(5),
        );
        Some(CacheConfig {
            max_size,
            max_entry_size,
            shared: raw.shared.unwrap_or(false),
            lock_timeout,
        })
    }

    pub(super) fn route_cache(&mut self, v: Value, p: KeyPath) -> Option<RouteCacheConfig> {
        let raw: RawRouteCache = de_unit(v, &p, &mut self.issues)?;
        let ttl = match raw.ttl {
            Some(t) => self.positive_duration(Some(t), p.key("ttl"), Duration::from_secs(600)),
            None => {
                self.err(
                    p.clone(),
                    "missing required key `ttl`; valid: a duration like \"10m\"",
                );
                Duration::from_secs(600)
            }
        };
        let vary = match raw.vary {
            None => vec![http::header::AUTHORIZATION],
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, h)| self.header_name(h, p.key("vary").index(i)))
                .collect(),
        };
        Some(RouteCacheConfig {
            ttl,
            vary,
            deterministic_only: raw.deterministic_only.unwrap_or(false),
        })
    }
}
