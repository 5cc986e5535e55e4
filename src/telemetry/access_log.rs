//! The access log: one line per request, on every path, written by a
//! dedicated thread.
//!
//! The request path formats its line and hands it over with `try_send`: when
//! the writer falls behind (a blocked stdout, a slow disk) lines are dropped
//! and counted, never waited for. Bodies, raw sticky keys and credentials
//! are never part of a record.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, SystemTime};

use metrics::Counter;

use crate::config::LogFormat;

use super::names;

/// Lines queued ahead of the writer before new ones are dropped: at 5 ms
/// drains, room for 3 M lines/s, in 512 KiB of slots.
const QUEUE: usize = 16 * 1024;

enum Msg {
    Line(String),
    Flush(mpsc::Sender<()>),
}

/// Everything one access-log line says. Borrowed: building one allocates
/// nothing; formatting allocates the line.
#[derive(Debug, Default)]
pub struct AccessRecord<'a> {
    /// `request` for a client's request, `shadow` for a mirror (then
    /// `version` is the shadow's name).
    pub kind: &'a str,
    pub request_id: &'a str,
    pub method: &'a str,
    /// Path only: the query may carry a sticky key (`query:user`).
    pub path: &'a str,
    pub route: &'a str,
    pub version: &'a str,
    /// The version's deps as a JSON object, rendered once per generation.
    pub deps_json: &'a str,
    pub upstream: &'a str,
    /// sticky | unsticky | pinned (empty before assignment).
    pub assignment: &'a str,
    /// blake3-derived tag of the sticky key, never the key itself.
    pub key_hash: Option<u64>,
    pub status: u16,
    pub duration: Duration,
    pub ttfb: Option<Duration>,
    pub bytes: u64,
    /// hit | miss | bypass, empty when the route does not cache.
    pub cache: &'a str,
    /// Shadow lines: match | mismatch against the primary, empty when not
    /// compared.
    pub compare: &'a str,
    /// Targets tried, `v2>v1-backup>small-model`.
    pub fallback_path: &'a str,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    /// complete | upstream_error | client_aborted | local
    pub end: &'a str,
}

pub struct AccessLog {
    tx: Option<SyncSender<Msg>>,
    format: LogFormat,
    dropped: Counter,
}

impl AccessLog {
    /// A log that writes to stdout from its own thread; `enabled = false`
    /// makes `write` a no-op.
    pub fn stdout(format: LogFormat, enabled: bool) -> AccessLog {
        let dropped = metrics::counter!(names::ACCESS_LOG_DROPPED_TOTAL);
        if !enabled {
            return AccessLog {
                tx: None,
                format,
                dropped,
            };
        }
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("cutover-access-log".into())
            .spawn(move || writer(rx, std::io::stdout()));
        AccessLog {
            tx: spawned.ok().map(|_| tx),
            format,
            dropped,
        }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn write(&self, rec: &AccessRecord<'_>) {
        let Some(tx) = &self.tx else { return };
        let line = match self.format {
            LogFormat::Json => json_line(rec),
            LogFormat::Text => text_line(rec),
        };
        match tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.increment(1)
            }
        }
    }

    /// Wait (up to `timeout`) until every line queued so far is written.
    /// Used at shutdown, so the last requests' lines are not lost.
    pub fn flush(&self, timeout: Duration) {
        let Some(tx) = &self.tx else { return };
        let (done_tx, done_rx) = mpsc::channel();
        if tx.send(Msg::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(timeout);
        }
    }
}

/// How often the writer wakes to drain the queue. It never blocks in
/// `recv`: a blocked receiver would make every `try_send` pay for a futex
/// wake-up and a context switch (a quarter of the proxy's CPU in profiles).
/// Instead it sleeps, drains in a batch and writes once. Short intervals
/// keep each batch small, so a burst never holds a core for long.
const DRAIN_EVERY: Duration = Duration::from_millis(5);

fn writer(rx: Receiver<Msg>, out: std::io::Stdout) {
    lower_priority();
    let mut out = std::io::BufWriter::with_capacity(128 * 1024, out.lock());
    loop {
        std::thread::sleep(DRAIN_EVERY);
        loop {
            match rx.try_recv() {
                Ok(Msg::Line(line)) => {
                    let _ = out.write_all(line.as_bytes());
                }
                Ok(Msg::Flush(done)) => {
                    let _ = out.flush();
                    let _ = done.send(());
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        let _ = out.flush();
    }
}

/// The writer yields to request work: at nice 10, the scheduler lets the
/// proxy's threads run first when they share a core, so logging shows up
/// in neither their latency nor their tail (p99). Best effort.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take no pointers; they only read
        // and set this thread's scheduling niceness.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 10);
        }
    }
}

fn json_line(r: &AccessRecord<'_>) -> String {
    let mut s = String::with_capacity(512);
    s.push_str("{\"ts\":\"");
    let _ = write!(s, "{}", humantime::format_rfc3339_millis(SystemTime::now()));
    s.push_str("\",\"kind\":");
    json_str(&mut s, r.kind);
    s.push_str(",\"request_id\":");
    json_str(&mut s, r.request_id);
    s.push_str(",\"method\":");
    json_str(&mut s, r.method);
    s.push_str(",\"path\":");
    json_str(&mut s, r.path);
    s.push_str(",\"route\":");
    json_str(&mut s, r.route);
    s.push_str(",\"version\":");
    json_str(&mut s, r.version);
    s.push_str(",\"deps\":");
    s.push_str(if r.deps_json.is_empty() {
        "{}"
    } else {
        r.deps_json
    });
    s.push_str(",\"upstream\":");
    json_str(&mut s, r.upstream);
    s.push_str(",\"assignment\":");
    json_str(&mut s, r.assignment);
    s.push_str(",\"key_hash\":");
    match r.key_hash {
        Some(h) => {
            let _ = write!(s, "\"{h:016x}\"");
        }
        None => s.push_str("null"),
    }
    let _ = write!(s, ",\"status\":{},\"duration_ms\":", r.status);
    push_ms(&mut s, r.duration);
    s.push_str(",\"ttfb_ms\":");
    match r.ttfb {
        Some(t) => push_ms(&mut s, t),
        None => s.push_str("null"),
    }
    let _ = write!(s, ",\"bytes\":{}", r.bytes);
    s.push_str(",\"cache\":");
    json_str(&mut s, r.cache);
    if !r.compare.is_empty() {
        s.push_str(",\"compare\":");
        json_str(&mut s, r.compare);
    }
    s.push_str(",\"fallback_path\":");
    json_str(&mut s, r.fallback_path);
    s.push_str(",\"input_tokens\":");
    opt_num(&mut s, r.input_tokens);
    s.push_str(",\"output_tokens\":");
    opt_num(&mut s, r.output_tokens);
    s.push_str(",\"cost_usd\":");
    match r.cost_usd {
        Some(c) => {
            let _ = write!(s, "{c}");
        }
        None => s.push_str("null"),
    }
    s.push_str(",\"end\":");
    json_str(&mut s, r.end);
    s.push_str("}\n");
    s
}

fn text_line(r: &AccessRecord<'_>) -> String {
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "{} {} {} {} {} route={} version={} upstream={} assignment={} status={} duration_ms={:.3} path={} end={}",
        humantime::format_rfc3339_millis(SystemTime::now()),
        r.kind,
        r.request_id,
        r.method,
        r.path,
        r.route,
        r.version,
        r.upstream,
        r.assignment,
        r.status,
        r.duration.as_secs_f64() * 1000.0,
        r.fallback_path,
        r.end,
    );
    if let Some(h) = r.key_hash {
        let _ = write!(s, " key_hash={h:016x}");
    }
    s.push('\n');
    s
}

fn opt_num(s: &mut String, n: Option<u64>) {
    match n {
        Some(n) => {
            let _ = write!(s, "{n}");
        }
        None => s.push_str("null"),
    }
}

/// Append `v` as a JSON string literal.
pub fn json_str(s: &mut String, v: &str) {
    s.push('"');
    // Fast path: ids, names and paths rarely need escaping.
    if !v.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        s.push_str(v);
        s.push('"');
        return;
    }
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

/// Milliseconds with microsecond precision, without float formatting.
fn push_ms(s: &mut String, d: Duration) {
    let micros = d.as_micros();
    let _ = write!(s, "{}.{:03}", micros / 1000, micros % 1000);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_is_valid_json() {
        let rec = AccessRecord {
            request_id: "abc\"\n",
            method: "POST",
            path: "/v1/chat",
            route: "chat",
            version: "v1",
            deps_json: r#"{"model":"m"}"#,
            key_hash: Some(0xdead_beef),
            status: 200,
            duration: Duration::from_millis(12),
            ttfb: Some(Duration::from_millis(3)),
            end: "complete",
            ..Default::default()
        };
        let line = json_line(&rec);
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(v["request_id"], "abc\"\n");
        assert_eq!(v["deps"]["model"], "m");
        assert_eq!(v["key_hash"], "00000000deadbeef");
        assert_eq!(v["status"], 200);
        assert!(line.ends_with('\n'));
    }
}
