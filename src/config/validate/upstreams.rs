//! `[[upstreams]]`: address, timeouts, limits, headers and the breaker.

use std::time::Duration;

use http::StatusCode;

use crate::config::model::*;
use crate::config::raw::*;
use crate::config::spans::KeyPath;

use super::Validator;

impl Validator<'_> {
    pub(super) fn upstream(&mut self, v: Value, p: KeyPath) -> Option<UpstreamConfig> {
        let raw: RawUpstream = de_unit(v, &p, &mut self.issues)?;
        if raw.name.is_empty() {
            self.err(p.key("name"), "empty name; valid: a non-empty unique name");
        }
        let url = self.url(&raw.url, p.key("url"));
        let connect_timeout = self.positive_duration(
            raw.connect_timeout,
            p.key("connect_timeout"),
            Duration::from_secs(2),
        );
        let header_timeout = self.positive_duration(
            raw.header_timeout,
            p.key("header_timeout"),
            Duration::from_secs(60),
        );
        let idle_timeout = self.positive_duration(
            raw.idle_timeout,
            p.key("idle_timeout"),
            Duration::from_secs(30),
        );
        let pool_idle_timeout = self.positive_duration(
            raw.pool_idle_timeout,
            p.key("pool_idle_timeout"),
            Duration::from_secs(4),
        );
        let max_in_flight = self.at_least_one(raw.max_in_flight, p.key("max_in_flight"), 512);
        let max_in_flight = self.usize_of(max_in_flight, p.key("max_in_flight"));
        let failure_statuses = match raw.failure_statuses {
            None => [429, 500, 502, 503, 504]
                .into_iter()
                .filter_map(|s| StatusCode::from_u16(s).ok())
                .collect(),
            Some(list) => list
                .into_iter()
                .enumerate()
                .filter_map(|(i, s)| self.status(s, p.key("failure_statuses").index(i)))
                .collect(),
        };
        let set_headers = self.headers(raw.set_headers, &p.key("set_headers"));
        let remove_headers = raw
            .remove_headers
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, h)| self.header_name(h, p.key("remove_headers").index(i)))
            .collect();
        let breaker = self.breaker(raw.breaker.unwrap_or_default(), &p.key("breaker"));
        Some(UpstreamConfig {
            name: raw.name,
            url: url?,
            connect_timeout,
            header_timeout,
            idle_timeout,
            pool_idle_timeout,
            retry_reused: raw.retry_reused.unwrap_or(true),
            max_in_flight,
            failure_statuses,
            set_headers,
            remove_headers,
            breaker,
        })
    }

    pub(super) fn breaker(&mut self, raw: RawBreaker, p: &KeyPath) -> BreakerConfig {
        let d = BreakerConfig::default();
        let consecutive_failures = match raw.consecutive_failures {
            Some(0) => {
                self.err(p.key("consecutive_failures"), "must be at least 1");
                d.consecutive_failures
            }
            Some(n) => n,
            None => d.consecutive_failures,
        };
        let failure_rate = self
            .ranged(
                raw.failure_rate,
                p.key("failure_rate"),
                |x| x > 0.0 && x <= 1.0,
                "more than 0.0, at most 1.0",
            )
            .unwrap_or(d.failure_rate);
        let half_open_probes = match raw.half_open_probes {
            Some(0) => {
                self.err(p.key("half_open_probes"), "must be at least 1");
                d.half_open_probes
            }
            Some(n) => n,
            None => d.half_open_probes,
        };
        BreakerConfig {
            consecutive_failures,
            failure_rate,
            min_requests: raw.min_requests.unwrap_or(d.min_requests),
            window: self.positive_duration(raw.window, p.key("window"), d.window),
            open_for: self.positive_duration(raw.open_for, p.key("open_for"), d.open_for),
            half_open_probes,
        }
    }
}
