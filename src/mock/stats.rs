//! What the mock saw: counters and the last few requests, so tests can
//! assert what the proxy actually forwarded.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, Method, Version};

/// How many request records are kept; older ones are dropped first.
pub const RECORD_CAPACITY: usize = 64;

/// One request as the mock received it (after the proxy rewrote it).
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// 1-based arrival number, matching the `chatcmpl-mock-N` reply id.
    pub seq: u64,
    pub method: Method,
    /// Path without the query string.
    pub path: String,
    pub query: Option<String>,
    /// HTTP/1.1 or HTTP/2 (h2c), as negotiated with the client.
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RequestRecord {
    /// A header as a string, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn body_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Counters are atomics so the request path never waits on a reader.
#[derive(Debug, Default)]
pub struct MockStats {
    requests: AtomicU64,
    injected_errors: AtomicU64,
    aborted: AtomicU64,
    hung: AtomicU64,
    /// A std (not tokio) mutex: it is held only to push or clone, never
    /// across an `.await`, so it cannot stall the runtime.
    records: Mutex<VecDeque<RequestRecord>>,
}

impl MockStats {
    /// Requests received (every method and path, `/healthz` included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Responses with an error status from `--status` or `--error-rate`.
    pub fn injected_errors(&self) -> u64 {
        self.injected_errors.load(Ordering::Relaxed)
    }

    /// Responses cut on purpose by `--abort-after` or `--fail-before-body`.
    pub fn aborted(&self) -> u64 {
        self.aborted.load(Ordering::Relaxed)
    }

    /// Requests held without an answer by `--hang`.
    pub fn hung(&self) -> u64 {
        self.hung.load(Ordering::Relaxed)
    }

    /// The last [`RECORD_CAPACITY`] requests, oldest first.
    pub fn records(&self) -> Vec<RequestRecord> {
        self.lock().iter().cloned().collect()
    }

    /// The most recent request, if any.
    pub fn last_record(&self) -> Option<RequestRecord> {
        self.lock().back().cloned()
    }

    /// Numbers the request (1-based) and keeps its record.
    pub(crate) fn record(&self, mut record: RequestRecord) -> u64 {
        let seq = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        record.seq = seq;
        let mut records = self.lock();
        if records.len() == RECORD_CAPACITY {
            records.pop_front();
        }
        records.push_back(record);
        seq
    }

    pub(crate) fn count_injected_error(&self) {
        self.injected_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_aborted(&self) {
        self.aborted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_hung(&self) {
        self.hung.fetch_add(1, Ordering::Relaxed);
    }

    /// A panic elsewhere while holding the lock cannot leave the deque in a
    /// broken state (push/pop are atomic from our view), so poison is ignored.
    fn lock(&self) -> MutexGuard<'_, VecDeque<RequestRecord>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str) -> RequestRecord {
        RequestRecord {
            seq: 0,
            method: Method::POST,
            path: path.to_owned(),
            query: None,
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    #[test]
    fn keeps_only_the_last_records_in_order() {
        let stats = MockStats::default();
        for i in 0..RECORD_CAPACITY + 6 {
            stats.record(record(&format!("/r{i}")));
        }
        let records = stats.records();
        assert_eq!(records.len(), RECORD_CAPACITY);
        assert_eq!(records[0].path, "/r6");
        assert_eq!(records[0].seq, 7);
        assert_eq!(stats.requests(), (RECORD_CAPACITY + 6) as u64);
        let last = stats.last_record().map(|r| r.path);
        assert_eq!(
            last.as_deref(),
            Some(format!("/r{}", RECORD_CAPACITY + 5).as_str())
        );
    }
}
