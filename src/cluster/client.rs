//! The one Redis connection of a replica, with a deadline on every call
//! and each failure counted by operation.
//!
//! redis-rs's `ConnectionManager` multiplexes every caller on one
//! connection and reconnects by itself; it is built lazily, so a replica
//! starts (and serves) while Redis is down. Every call here is wrapped in a
//! `tokio::time::timeout`, so a stalled or SIGSTOPped Redis costs at most
//! that long. Retries happen only for operations that may safely run twice
//! ([`Redis::idempotent`]): reads, overwrites of this replica's own fields,
//! and the lease script (a renewal that repeats is a renewal).
//!
//! The URL may carry a password: it is handed to the client and never to a
//! log line; errors name the operation and the redacted URL.

use std::future::Future;
use std::time::Duration;

use metrics::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisUrl;
use crate::telemetry::names;

/// What a Redis call was for: the `op` label of
/// `cutover_cluster_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Take or renew the leader's lease.
    Lease,
    /// Read the fleet's rollout state and the replicas seen.
    Read,
    /// Push this replica's counts and read the fleet's sums.
    Push,
    /// A leader's transition (or a reported local rollback).
    Transition,
    /// An operator action from the admin API.
    Action,
    /// The feedback index: records, claims.
    Feedback,
    /// The shared cache tier: a local miss looked up in Redis.
    CacheGet,
    /// The shared cache tier: a stored answer written to Redis.
    CachePut,
    /// `POST /cache/purge` on the shared tier.
    CachePurge,
}

impl Op {
    pub const ALL: [Op; 9] = [
        Op::Lease,
        Op::Read,
        Op::Push,
        Op::Transition,
        Op::Action,
        Op::Feedback,
        Op::CacheGet,
        Op::CachePut,
        Op::CachePurge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lease => "lease",
            Op::Read => "read",
            Op::Push => "push",
            Op::Transition => "transition",
            Op::Action => "action",
            Op::Feedback => "feedback",
            Op::CacheGet => "cache_get",
            Op::CachePut => "cache_put",
            Op::CachePurge => "cache_purge",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A failed call: Redis answered with an error, the connection failed, or
/// the deadline passed.
#[derive(Clone, Debug, thiserror::Error)]
#[error("redis {url}: {op} failed: {detail}")]
pub struct CallError {
    pub op: &'static str,
    pub url: String,
    pub detail: String,
}

pub struct Redis {
    conn: ConnectionManager,
    /// Every call's deadline.
    timeout: Duration,
    redacted: String,
    /// `cutover_cluster_errors_total{op}`, resolved once.
    errors: [Counter; Op::ALL.len()],
}

impl Redis {
    /// A lazily connecting client: nothing is sent until the first call.
    /// Needs a tokio runtime (the manager spawns its reconnect task).
    pub fn new(url: &RedisUrl, timeout: Duration) -> Result<Redis, String> {
        let client = redis::Client::open(url.expose())
            .map_err(|e| format!("cluster.redis {}: {:?}", url.redacted(), e.kind()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Our own loop retries each sync_interval: the manager should
            // report a dead Redis quickly rather than back off for long.
            .set_number_of_retries(1)
            .set_max_delay(timeout);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("cluster.redis {}: {:?}", url.redacted(), e.kind()))?;
        Ok(Redis {
            conn,
            timeout,
            redacted: url.redacted().to_string(),
            errors: Op::ALL
                .map(|op| metrics::counter!(names::CLUSTER_ERRORS_TOTAL, "op" => op.as_str())),
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One attempt of `call` within the deadline. For operations that must
    /// not run twice (a compare-and-set whose answer was lost has happened).
    pub async fn once<T, F, Fut>(&self, op: Op, call: F) -> Result<T, CallError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.attempt(op, self.timeout, call).await
    }

    /// One attempt within `within` (at most the usual deadline): for the
    /// shared cache's lookups, which a request waits for.
    pub async fn once_within<T, F, Fut>(
        &self,
        op: Op,
        within: Duration,
        call: F,
    ) -> Result<T, CallError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.attempt(op, within.min(self.timeout), call).await
    }

    /// `call`, and once more after a short pause if it failed, all within
    /// the one deadline. Only for operations that may safely run twice.
    pub async fn idempotent<T, F, Fut>(&self, op: Op, call: F) -> Result<T, CallError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let started = tokio::time::Instant::now();
        let first = self.attempt_uncounted(self.timeout / 2, &call).await;
        match first {
            Ok(v) => Ok(v),
            Err(_) => {
                tokio::time::sleep(self.timeout / 10).await;
                let left = self.timeout.saturating_sub(started.elapsed());
                self.attempt(op, left, call).await
            }
        }
    }

    async fn attempt<T, F, Fut>(&self, op: Op, within: Duration, call: F) -> Result<T, CallError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match self.attempt_uncounted(within, call).await {
            Ok(v) => Ok(v),
            Err(detail) => {
                self.errors[op.index()].increment(1);
                Err(CallError {
                    op: op.as_str(),
                    url: self.redacted.clone(),
                    detail,
                })
            }
        }
    }

    async fn attempt_uncounted<T, F, Fut>(&self, within: Duration, call: F) -> Result<T, String>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(within, call(self.conn.clone())).await {
            Ok(Ok(v)) => Ok(v),
            // A RedisError's text holds the server's message or the I/O
            // error, never the URL it was built from.
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {within:?}")),
        }
    }
}
