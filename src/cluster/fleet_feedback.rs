//! The feedback index in Redis (SPEC §12, §7): feedback posted to any
//! replica counts, once, within an hour of the request.
//!
//! Recording stays off the request path: the local index
//! (`telemetry::feedback_index`) hands each record to a bounded queue
//! (`try_send`, dropped and counted when full), and one task writes what
//! has queued up at most once per `sync_interval`, as one `HSET` per
//! [`BATCH`] records and one `EXPIRE` per hour bucket. So Redis sees a
//! command per thousand requests, and none at idle. Batches are small on
//! purpose: each is encoded, then its round trip awaited before the next,
//! so the control plane's thread never holds a CPU for long. One `HSET` of
//! 16,384 fields in one go took the CPU from the traffic worker when both
//! shared one, and raised its p99 (docs/fleet.md). The price of the
//! batching: a record reaches the fleet up to one `sync_interval` after the
//! answer; until then feedback for it is counted by the replica that served
//! it, and another replica answers 404 (a client retries).
//!
//! A record is a field of `feedback:HOUR` (the Unix hour it was written
//! in): the request id's digest → `USED JUDGED UNIX_SECS:LEN:ROUTE VERSION`.
//! A bucket expires two hours after its last write, and a claim looks in
//! this hour's and the previous one's: every record younger than an hour
//! is in one of them. The claim script checks the age and flips `USED`
//! atomically, so two replicas claiming at once count it once.
//!
//! A claim whose id Redis does not know (yet: the record may still sit in
//! the queue of the replica that served it, or Redis may be down) falls
//! back to the local index, and a local claim is queued to Redis as a used
//! record, so the fleet cannot count it a second time later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::Cluster;
use super::client::{CallError, Op};
use crate::telemetry::feedback_index::{FEEDBACK_WINDOW, Forwarded};

/// Records waiting for Redis at most; more are dropped (and counted).
const QUEUE: usize = 65_536;
/// Records per `HSET`: encoding one batch takes the control plane's
/// thread about a tenth of a millisecond.
const BATCH: usize = 1_024;
/// How long a bucket outlives its last write.
const BUCKET_TTL_SECS: u64 = 2 * 3600;

static CLAIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
-- KEYS[1] this hour's bucket, KEYS[2] the previous hour's
-- ARGV[1] the id's digest, ARGV[2] now (Unix s), ARGV[3] the window (s)
for i = 1, 2 do
  local v = redis.call('HGET', KEYS[i], ARGV[1])
  if v then
    local at = tonumber(string.match(v, '^..(%d+):') or '0')
    if tonumber(ARGV[2]) - at > tonumber(ARGV[3]) then return {0, ''} end
    if string.sub(v, 1, 1) == '1' then return {2, ''} end
    redis.call('HSET', KEYS[i], ARGV[1], '1' .. string.sub(v, 2))
    return {1, v}
  end
end
return {0, ''}
"#,
    )
});

/// What the fleet's index says of a request id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Counted now: the version that served it.
    Claimed {
        route: String,
        version: String,
        /// It was a judged request (not pinned): its outcome feeds the
        /// rollout's judge.
        judged: bool,
    },
    /// Already counted.
    Repeat,
    /// Not known to the fleet (unknown, expired, or not written yet).
    Unknown,
}

pub struct FleetFeedback {
    tx: mpsc::Sender<Forwarded>,
    rx: Mutex<Option<mpsc::Receiver<Forwarded>>>,
    written: AtomicU64,
}

impl FleetFeedback {
    pub fn new() -> FleetFeedback {
        let (tx, rx) = mpsc::channel(QUEUE);
        FleetFeedback {
            tx,
            rx: Mutex::new(Some(rx)),
            written: AtomicU64::new(0),
        }
    }

    /// For the local index: where to hand records.
    pub fn sender(&self) -> mpsc::Sender<Forwarded> {
        self.tx.clone()
    }

    /// Records written to Redis so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Start the writer (once; later calls do nothing).
    pub fn start(&self, cluster: Arc<Cluster>) {
        let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(rx) = rx {
            let every = cluster.config.sync_interval;
            tokio::spawn(write_loop(cluster, rx, every));
        }
    }
}

impl Default for FleetFeedback {
    fn default() -> Self {
        FleetFeedback::new()
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `USED JUDGED UNIX_SECS:LEN:ROUTE VERSION`: the script reads the first
/// two characters and the seconds; the names are length-delimited, so any
/// name reads back as written.
#[cfg(test)]
fn encode(used: bool, judged: bool, at: u64, route: &str, version: &str) -> String {
    let mut out = String::new();
    encode_into(&mut out, used, judged, at, route, version);
    out
}

/// [`encode`] appended to `out`, without an allocation of its own.
fn encode_into(out: &mut String, used: bool, judged: bool, at: u64, route: &str, version: &str) {
    out.push(if used { '1' } else { '0' });
    out.push(if judged { '1' } else { '0' });
    out.push_str(itoa::Buffer::new().format(at));
    out.push(':');
    out.push_str(itoa::Buffer::new().format(route.len()));
    out.push(':');
    out.push_str(route);
    out.push_str(version);
}

fn decode(v: &str) -> Option<(bool, String, String)> {
    let judged = v.as_bytes().get(1)? == &b'1';
    let rest = v.get(2..)?;
    let (_, rest) = rest.split_once(':')?;
    let (len, names) = rest.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let route = names.get(..len)?;
    let version = names.get(len..)?;
    Some((judged, route.to_string(), version.to_string()))
}

async fn write_loop(cluster: Arc<Cluster>, mut rx: mpsc::Receiver<Forwarded>, every: Duration) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut value = String::new();
    loop {
        // Wait for the first record, then write everything queued by now,
        // BATCH records per command.
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        // The bucket given its expiry in this flush.
        let mut expired = None;
        loop {
            write_batch(&cluster, &batch, &mut value, &mut expired).await;
            let full = batch.len() == BATCH;
            batch.clear();
            if !full {
                break;
            }
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
        }
        // At most one flush per sync_interval.
        tokio::time::sleep(every).await;
    }
}

/// One `HSET` of the records into this hour's bucket, and the bucket's
/// expiry unless this flush already set it (`expired`). `value` is the
/// encoding buffer, reused.
async fn write_batch(
    cluster: &Cluster,
    batch: &[Forwarded],
    value: &mut String,
    expired: &mut Option<u64>,
) {
    let at = unix_secs();
    let hour = at / 3600;
    let key = cluster.keys.feedback(hour);
    let mut hset = redis::cmd("HSET");
    hset.arg(&key);
    for r in batch {
        value.clear();
        encode_into(
            value,
            r.claimed,
            r.metrics.outcome_sink.is_some(),
            at,
            &r.metrics.route,
            &r.metrics.version,
        );
        hset.arg(&r.id[..]).arg(value.as_str());
    }
    let mut pipe = redis::pipe();
    pipe.add_command(hset).ignore();
    if *expired != Some(hour) {
        pipe.cmd("EXPIRE").arg(&key).arg(BUCKET_TTL_SECS).ignore();
    }
    // An overwrite with the same fields: safe to retry.
    let sent = cluster
        .redis
        .idempotent(Op::Feedback, |mut c| {
            let pipe = &pipe;
            async move { pipe.query_async::<()>(&mut c).await }
        })
        .await;
    match sent {
        Ok(()) => {
            *expired = Some(hour);
            cluster
                .feedback
                .written
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::debug!(error = %e, records = batch.len(), "feedback records not written to the fleet's index; they stay local")
        }
    }
}

impl Cluster {
    /// Claim a request id in the fleet's index. Not retried: a claim that
    /// landed but whose answer was lost would read as a repeat.
    pub async fn claim_feedback(&self, id: [u8; 16]) -> Result<Claim, CallError> {
        let now = unix_secs();
        let (this, previous) = (
            self.keys.feedback(now / 3600),
            self.keys.feedback((now / 3600).saturating_sub(1)),
        );
        let window = FEEDBACK_WINDOW.as_secs();
        let (code, value): (u8, String) = self
            .redis
            .once(Op::Feedback, |mut c| {
                let (this, previous) = (&this, &previous);
                async move {
                    CLAIM
                        .key(this)
                        .key(previous)
                        .arg(&id[..])
                        .arg(now)
                        .arg(window)
                        .invoke_async(&mut c)
                        .await
                }
            })
            .await?;
        Ok(match code {
            1 => match decode(&value) {
                Some((judged, route, version)) => Claim::Claimed {
                    route,
                    version,
                    judged,
                },
                None => Claim::Unknown,
            },
            2 => Claim::Repeat,
            _ => Claim::Unknown,
        })
    }
}

/// What the data plane holds of the fleet, for the feedback endpoint:
/// whether Redis answered the last sync round (an atomic), and a claim.
/// Not the lease, the sync loop or the rollout documents.
#[derive(Clone)]
pub struct FleetClaims {
    cluster: Arc<Cluster>,
}

impl FleetClaims {
    pub fn new(cluster: Arc<Cluster>) -> FleetClaims {
        FleetClaims { cluster }
    }

    /// Redis answered the last sync round.
    pub fn up(&self) -> bool {
        self.cluster.up()
    }

    /// [`Cluster::claim_feedback`].
    pub async fn claim(&self, id: [u8; 16]) -> Result<Claim, CallError> {
        self.cluster.claim_feedback(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_the_layout_the_claim_script_reads() {
        // Used, judged, the seconds the script compares, then the names.
        assert_eq!(
            encode(true, false, 1_700_000_000, "chat", "v2"),
            "101700000000:4:chatv2"
        );
    }

    #[test]
    fn records_read_back_whatever_the_names() {
        for (route, version) in [("chat", "v2"), ("a:b", "1:2"), ("r", ""), ("ü", "x y")] {
            let v = encode(false, true, 1_700_000_000, route, version);
            assert!(v.starts_with("011700000000:"), "{v}");
            assert_eq!(
                decode(&v),
                Some((true, route.to_string(), version.to_string()))
            );
        }
        assert_eq!(decode("0"), None);
        assert_eq!(decode("01x:99:ab"), None);
    }
}
