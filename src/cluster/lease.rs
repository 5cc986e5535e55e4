//! The leader's lease and the fencing epoch (SPEC §12).
//!
//! One key holds `TOKEN REPLICA` of the leader with a time to live of
//! `lease`. Each `sync_interval` every replica runs one script:
//!
//! * the holder (same value) renews it: compare-and-renew;
//! * anyone else, if the key is gone, takes it with `SET NX PX` and, in the
//!   same script, increments the epoch: a new lease always has a new epoch,
//!   even if the process dies right after (a `SET` followed by a separate
//!   `INCR` could leave a leader with the previous leader's epoch);
//! * otherwise it learns who leads and how long the lease still runs, and
//!   tries again right when it ends.
//!
//! The script is safe to repeat (a lost answer then retried renews what the
//! first call took), so it is retried like a read.
//!
//! The token is random per process: a restarted replica with the same name
//! is a new holder, and an old process that wakes up (SIGCONT) holds a token
//! nobody renews. It believes it leads only until `lease` after its last
//! successful renewal, by its own monotonic clock, minus one call timeout;
//! every transition it writes is fenced by the epoch anyway.

use std::sync::LazyLock;
use std::time::Duration;

use tokio::time::Instant;

use super::client::{CallError, Op, Redis};
use super::keys::Keys;

static ACQUIRE_OR_RENEW: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
-- KEYS[1] leader, KEYS[2] epoch; ARGV[1] 'TOKEN REPLICA', ARGV[2] lease ms
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(redis.call('GET', KEYS[2]) or '0'), cur, tonumber(ARGV[2])}
end
if not cur then
  if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return {1, redis.call('INCR', KEYS[2]), ARGV[1], tonumber(ARGV[2])}
  end
  cur = redis.call('GET', KEYS[1]) or ''
end
return {0, tonumber(redis.call('GET', KEYS[2]) or '0'), cur, redis.call('PTTL', KEYS[1])}
"#,
    )
});

static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
-- KEYS[1] leader; ARGV[1] 'TOKEN REPLICA': delete only our own lease
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#,
    )
});

/// Who leads, as of one lease round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// The leader's replica name; `None` when the key vanished between two
    /// reads of the script (rare).
    pub leader: Option<String>,
    /// The fleet's current epoch.
    pub epoch: u64,
    /// This replica holds the lease.
    pub mine: bool,
    /// How long the current lease still runs.
    pub remaining: Duration,
}

/// This replica's side of the lease.
pub struct Lease {
    value: String,
    length: Duration,
    /// (epoch, when the last renewal was sent) while this replica holds it.
    held: Option<(u64, Instant)>,
}

impl Lease {
    pub fn new(replica: &str, length: Duration) -> Lease {
        let token: u128 = rand::random();
        Lease {
            value: format!("{token:032x} {replica}"),
            length,
            held: None,
        }
    }

    /// One round: renew, take, or learn who leads.
    pub async fn round(&mut self, redis: &Redis, keys: &Keys) -> Result<LeaseView, CallError> {
        let sent = Instant::now();
        let ms = u64::try_from(self.length.as_millis()).unwrap_or(u64::MAX);
        let (leader_key, epoch_key) = (keys.leader(), keys.epoch());
        let result = redis
            .idempotent(Op::Lease, |mut c| {
                let (leader_key, epoch_key, value) = (&leader_key, &epoch_key, &self.value);
                async move {
                    ACQUIRE_OR_RENEW
                        .key(leader_key)
                        .key(epoch_key)
                        .arg(value)
                        .arg(ms)
                        .invoke_async::<(u8, u64, String, i64)>(&mut c)
                        .await
                }
            })
            .await;
        let (mine, epoch, holder, remaining_ms) = match result {
            Ok(r) => r,
            Err(e) => {
                // Keep believing only within the lease we last renewed.
                if self.current_epoch(redis.timeout()).is_none() {
                    self.held = None;
                }
                return Err(e);
            }
        };
        let mine = mine == 1;
        self.held = mine.then_some((epoch, sent));
        Ok(LeaseView {
            leader: holder
                .split_once(' ')
                .map(|(_, replica)| replica.to_string()),
            epoch,
            mine,
            remaining: Duration::from_millis(u64::try_from(remaining_ms).unwrap_or(0)),
        })
    }

    /// The epoch to fence writes with, while this replica may still believe
    /// it leads: until `lease` after the last renewal was *sent*, less one
    /// call timeout (the renewal may have landed late).
    pub fn current_epoch(&self, call_timeout: Duration) -> Option<u64> {
        let (epoch, sent) = self.held?;
        let valid = self.length.saturating_sub(call_timeout);
        (sent.elapsed() < valid).then_some(epoch)
    }

    /// On shutdown: hand the lease over now instead of after it expires.
    pub async fn release(&mut self, redis: &Redis, keys: &Keys) {
        if self.held.take().is_none() {
            return;
        }
        let leader_key = keys.leader();
        let _ = redis
            .once(Op::Lease, |mut c| {
                let (leader_key, value) = (&leader_key, &self.value);
                async move {
                    RELEASE
                        .key(leader_key)
                        .arg(value)
                        .invoke_async::<i64>(&mut c)
                        .await
                }
            })
            .await;
    }
}
