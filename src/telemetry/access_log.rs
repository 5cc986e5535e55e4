//! The access log: one line per request, on every path, written by a
//! dedicated thread.
//!
//! The request path formats its line (itoa and ryu for numbers, a calendar
//! timestamp cached per second per thread) and hands it over with
//! `try_send`: when the writer falls behind (a blocked stdout, a slow disk)
//! lines are dropped and counted, never waited for. Bodies, raw sticky keys and credentials
//! are never part of a record.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, SystemTime};

use metrics::Counter;

use crate::ascii::json_escape_at;
use crate::config::LogFormat;

use super::names;

/// Lines queued ahead of the writer before new ones are dropped: at 5 ms
/// drains, room for 800 K lines/s (200 K at the 20 ms of a slow rate, see
/// [`DRAIN_SLOW`]), and a stalled stdout is absorbed for 80
/// ms at one worker's full rate (50 K lines/s), in 128 KiB of slots. The
/// queue is a ring, so under steady load every slot is touched and resident
/// however few lines wait: 16 K slots cost 512 KiB to hold about 250.
const QUEUE: usize = 4 * 1024;

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

/// How often the writer wakes to drain the queue while lines come. It does
/// not block in `recv` then: a blocked receiver would make every
/// `try_send` pay for a futex wake-up and a context switch (a quarter of
/// the proxy's CPU in profiles). Instead it sleeps, drains in a batch and
/// writes once. Short intervals keep each batch small, so a burst never
/// holds a core for long.
const DRAIN_EVERY: Duration = Duration::from_millis(5);

/// The interval while lines come slowly (under [`SLOW_BATCH`] a batch):
/// each wake-up costs the writer ~50 µs of system time here (a timer, a
/// switch, a `write`, and an inotify event for a watcher of the log's
/// directory), so at a few thousand lines a second four times fewer
/// wake-ups are ~2 µs less CPU a request. At 20 ms the queue still holds
/// a jump to 200 K lines/s, and a faster rate returns it to 5 ms.
const DRAIN_SLOW: Duration = Duration::from_millis(20);

/// Lines a batch may hold and still count as slow: the rate (25 K lines/s
/// at 20 ms) below which the writer wakes every [`DRAIN_SLOW`].
const SLOW_BATCH: usize = QUEUE / 8;
// At the mark, a rate four times higher for one slow drain still fits.
const _: () = assert!(SLOW_BATCH * 4 <= QUEUE);

/// Drains in a row that found nothing (about a tenth of a second) before
/// the writer blocks in `recv` instead: an idle gateway's writer would
/// otherwise wake 50 times a second for nothing. Only the first line after
/// such a pause pays for a wake-up.
const IDLE_DRAINS: u32 = 5;

fn writer(rx: Receiver<Msg>, out: std::io::Stdout) {
    lower_priority();
    let mut out = std::io::BufWriter::with_capacity(128 * 1024, out.lock());
    let mut empty_drains = 0;
    let mut interval = DRAIN_SLOW;
    loop {
        let mut taken = 0;
        if empty_drains >= IDLE_DRAINS {
            let Ok(msg) = rx.recv() else {
                let _ = out.flush();
                return;
            };
            take(&mut out, msg);
            taken += 1;
        } else {
            std::thread::sleep(interval);
        }
        loop {
            match rx.try_recv() {
                Ok(msg) => {
                    take(&mut out, msg);
                    taken += 1;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        empty_drains = if taken > 0 { 0 } else { empty_drains + 1 };
        interval = next_interval(interval, taken);
        let _ = out.flush();
    }
}

/// The sleep after a drain that took `taken` lines after sleeping
/// `interval`. Judged by the rate (what a slow interval's batch would
/// be), not by the batch, so a rate between the two marks does not flip
/// the interval every drain.
fn next_interval(interval: Duration, taken: usize) -> Duration {
    let at_slow =
        taken.saturating_mul((DRAIN_SLOW.as_millis() / interval.as_millis().max(1)) as usize);
    if at_slow > SLOW_BATCH {
        DRAIN_EVERY
    } else {
        DRAIN_SLOW
    }
}

fn take(out: &mut impl std::io::Write, msg: Msg) {
    match msg {
        Msg::Line(line) => {
            let _ = out.write_all(line.as_bytes());
        }
        Msg::Flush(done) => {
            let _ = out.flush();
            let _ = done.send(());
        }
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

/// The JSON line of a record, as the writer receives it. Public for the
/// benchmarks.
pub fn json_line(r: &AccessRecord<'_>) -> String {
    let mut s = String::with_capacity(512);
    s.push_str("{\"ts\":\"");
    push_timestamp(&mut s);
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
            s.push('"');
            push_hex16(&mut s, h);
            s.push('"');
        }
        None => s.push_str("null"),
    }
    s.push_str(",\"status\":");
    push_int(&mut s, r.status);
    s.push_str(",\"duration_ms\":");
    push_ms(&mut s, r.duration);
    s.push_str(",\"ttfb_ms\":");
    match r.ttfb {
        Some(t) => push_ms(&mut s, t),
        None => s.push_str("null"),
    }
    s.push_str(",\"bytes\":");
    push_int(&mut s, r.bytes);
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
        Some(c) => push_f64(&mut s, c),
        None => s.push_str("null"),
    }
    s.push_str(",\"end\":");
    json_str(&mut s, r.end);
    s.push_str("}\n");
    s
}

/// The text line of a record. Public for the benchmarks.
pub fn text_line(r: &AccessRecord<'_>) -> String {
    let mut s = String::with_capacity(256);
    push_timestamp(&mut s);
    for (sep, v) in [
        (" ", r.kind),
        (" ", r.request_id),
        (" ", r.method),
        (" ", r.path),
        (" route=", r.route),
        (" version=", r.version),
        (" upstream=", r.upstream),
        (" assignment=", r.assignment),
    ] {
        s.push_str(sep);
        s.push_str(v);
    }
    s.push_str(" status=");
    push_int(&mut s, r.status);
    // Rounded to three decimals exactly as `{:.3}` rounds the float.
    let _ = write!(s, " duration_ms={:.3}", r.duration.as_secs_f64() * 1000.0);
    s.push_str(" path=");
    s.push_str(r.fallback_path);
    s.push_str(" end=");
    s.push_str(r.end);
    if let Some(h) = r.key_hash {
        s.push_str(" key_hash=");
        push_hex16(&mut s, h);
    }
    s.push('\n');
    s
}

fn opt_num(s: &mut String, n: Option<u64>) {
    match n {
        Some(n) => push_int(s, n),
        None => s.push_str("null"),
    }
}

#[inline]
fn push_int(s: &mut String, n: impl itoa::Integer) {
    s.push_str(itoa::Buffer::new().format(n));
}

/// `{:016x}`.
fn push_hex16(s: &mut String, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
    // Hex digits are ASCII.
    s.push_str(std::str::from_utf8(&out).unwrap_or_default());
}

/// An `f64` exactly as its `Display` prints it (the shortest digits that
/// read back to the same value, never an exponent), from ryu's shortest
/// digits: `1` for 1.0, `0.0000001` for 1e-7, `-0` for -0.0.
///
/// Up to 15 significant digits the shortest form is unique (two 15-digit
/// decimals are further apart than any double's rounding interval is
/// wide), so ryu and `Display` agree. With 16 or 17 two forms can be
/// equally short, and ryu and the standard library sometimes pick
/// differently in the last digit: those values (rare for prices) go
/// through `Display` itself.
pub fn push_f64(s: &mut String, v: f64) {
    if !v.is_finite() {
        let _ = write!(s, "{v}");
        return;
    }
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(v);
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exp) = match text.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    // The mantissa's digits and where the decimal point falls among them.
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits = [0u8; 40];
    let mut n = 0;
    for b in int_part.bytes().chain(frac_part.bytes()) {
        if n < digits.len() {
            digits[n] = b;
            n += 1;
        }
    }
    let mut point = int_part.len() as i32 + exp;
    let mut first = 0;
    while first < n && digits[first] == b'0' {
        first += 1;
        point -= 1;
    }
    while n > first && digits[n - 1] == b'0' {
        n -= 1;
    }
    if n - first > 15 {
        let _ = write!(s, "{v}");
        return;
    }
    let digits = &digits[first..n];
    if negative {
        s.push('-');
    }
    if digits.is_empty() {
        s.push('0');
        return;
    }
    // ryu's digits are ASCII.
    let text = std::str::from_utf8(digits).unwrap_or_default();
    let len = digits.len() as i32;
    if point <= 0 {
        s.push_str("0.");
        (0..-point).for_each(|_| s.push('0'));
        s.push_str(text);
    } else if point >= len {
        s.push_str(text);
        (0..point - len).for_each(|_| s.push('0'));
    } else {
        s.push_str(&text[..point as usize]);
        s.push('.');
        s.push_str(&text[point as usize..]);
    }
}

/// RFC 3339 with milliseconds, as `humantime::format_rfc3339_millis`
/// prints the time now. The calendar part is formatted once a second per
/// thread; each line only copies it and writes the three millisecond digits.
fn push_timestamp(s: &mut String) {
    push_time(s, SystemTime::now());
}

fn push_time(s: &mut String, now: SystemTime) {
    /// `2026-01-01T00:00:00.000Z`
    const LEN: usize = 24;
    thread_local! {
        /// (whole seconds since the epoch, the line for that second).
        static SECOND: std::cell::Cell<(u64, [u8; LEN])> = const { std::cell::Cell::new((u64::MAX, [0; LEN])) };
    }
    let Ok(since) = now.duration_since(SystemTime::UNIX_EPOCH) else {
        let _ = write!(s, "{}", humantime::format_rfc3339_millis(now));
        return;
    };
    let secs = since.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let formatted = humantime::format_rfc3339_millis(whole).to_string();
        if formatted.len() != LEN {
            // Past year 9999: no fixed layout to patch.
            let _ = write!(s, "{}", humantime::format_rfc3339_millis(now));
            return;
        }
        text.copy_from_slice(formatted.as_bytes());
        SECOND.set((secs, text));
    }
    let ms = since.subsec_millis();
    text[20] = b'0' + (ms / 100) as u8;
    text[21] = b'0' + (ms / 10 % 10) as u8;
    text[22] = b'0' + (ms % 10) as u8;
    // Formatted by humantime, digits patched in: ASCII.
    s.push_str(std::str::from_utf8(&text).unwrap_or_default());
}

/// Append `v` as a JSON string literal.
pub fn json_str(s: &mut String, v: &str) {
    s.push('"');
    // Fast path: ids, names and paths rarely need escaping.
    if !needs_escape(v.as_bytes()) {
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

/// Whether `bytes` hold a control character, `"` or `\`.
fn needs_escape(bytes: &[u8]) -> bool {
    json_escape_at(bytes) < bytes.len()
}

/// Milliseconds with microsecond precision, without float formatting.
fn push_ms(s: &mut String, d: Duration) {
    // In u64, not `as_micros`'s u128: its divisions are library calls.
    let micros = d.as_secs().saturating_mul(1_000_000) + u64::from(d.subsec_micros());
    push_int(s, micros / 1000);
    let frac = (micros % 1000) as u32;
    s.push('.');
    s.push(char::from(b'0' + (frac / 100) as u8));
    s.push(char::from(b'0' + (frac / 10 % 10) as u8));
    s.push(char::from(b'0' + (frac % 10) as u8));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_wakes_less_often_while_lines_come_slowly() {
        // 5 K lines/s (one connection's load): 100 a slow drain, stay slow.
        assert_eq!(next_interval(DRAIN_SLOW, 100), DRAIN_SLOW);
        assert_eq!(next_interval(DRAIN_EVERY, 25), DRAIN_SLOW);
        // 50 K lines/s: 250 a fast drain would be 1,000 a slow one.
        assert_eq!(next_interval(DRAIN_EVERY, 250), DRAIN_EVERY);
        assert_eq!(next_interval(DRAIN_SLOW, 1_000), DRAIN_EVERY);
        // Between the marks by batch size (200 lines in 5 ms is 40 K
        // lines/s): judged by rate, so it stays fast, without flipping.
        assert_eq!(next_interval(DRAIN_EVERY, 200), DRAIN_EVERY);
    }

    #[test]
    fn needs_escape_finds_each_byte_anywhere() {
        for len in 0..20 {
            let clean = vec![b'a'; len];
            assert!(!needs_escape(&clean));
            assert!(!needs_escape("é€ abc~\x7f".as_bytes()));
            for at in 0..len {
                for b in (0..0x20).chain([b'"', b'\\']) {
                    let mut bytes = clean.clone();
                    bytes[at] = b;
                    assert!(needs_escape(&bytes), "{bytes:?}");
                }
                for b in [0x20, 0x21, 0x23, 0x5b, 0x5d, 0x80, 0xa2, 0xdc, 0xff] {
                    let mut bytes = clean.clone();
                    bytes[at] = b;
                    assert!(!needs_escape(&bytes), "{bytes:?}");
                }
            }
        }
    }

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

    /// The lines as they were formatted through `fmt` before, timestamp
    /// left out: the new formatting must give the same bytes.
    fn fmt_json(r: &AccessRecord<'_>) -> String {
        let mut s = String::new();
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
        let ms = |d: Duration| {
            let micros = d.as_micros();
            format!("{}.{:03}", micros / 1000, micros % 1000)
        };
        let _ = write!(
            s,
            ",\"status\":{},\"duration_ms\":{}",
            r.status,
            ms(r.duration)
        );
        s.push_str(",\"ttfb_ms\":");
        s.push_str(&r.ttfb.map_or("null".to_string(), ms));
        let _ = write!(s, ",\"bytes\":{}", r.bytes);
        s.push_str(",\"cache\":");
        json_str(&mut s, r.cache);
        if !r.compare.is_empty() {
            s.push_str(",\"compare\":");
            json_str(&mut s, r.compare);
        }
        s.push_str(",\"fallback_path\":");
        json_str(&mut s, r.fallback_path);
        let num = |n: Option<u64>| n.map_or("null".to_string(), |n| n.to_string());
        let _ = write!(
            s,
            ",\"input_tokens\":{},\"output_tokens\":{}",
            num(r.input_tokens),
            num(r.output_tokens)
        );
        s.push_str(",\"cost_usd\":");
        s.push_str(&r.cost_usd.map_or("null".to_string(), |c| format!("{c}")));
        s.push_str(",\"end\":");
        json_str(&mut s, r.end);
        s.push_str("}\n");
        s
    }

    fn fmt_text(r: &AccessRecord<'_>) -> String {
        let mut s = format!(
            " {} {} {} {} route={} version={} upstream={} assignment={} status={} duration_ms={:.3} path={} end={}",
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

    #[test]
    fn lines_are_byte_for_byte_what_fmt_wrote() {
        let full = AccessRecord {
            kind: "request",
            request_id: "0190-abc",
            method: "POST",
            path: "/v1/chat/completions",
            route: "chat",
            version: "canary",
            deps_json: r#"{"model":"m","prompt":"p@2"}"#,
            upstream: "up",
            assignment: "sticky",
            key_hash: Some(0x0123_4567_89ab_cdef),
            status: 200,
            duration: Duration::from_nanos(12_345_678_901),
            ttfb: Some(Duration::from_nanos(999)),
            bytes: 18_446_744_073_709_551_615,
            cache: "miss",
            compare: "match",
            fallback_path: "canary>stable",
            input_tokens: Some(0),
            output_tokens: Some(4_294_967_296),
            cost_usd: Some(0.000_123_4),
            end: "complete",
        };
        let mut records = vec![full, AccessRecord::default()];
        for (i, cost) in [1.0, 1e-7, 2.5e-12, 123_456.789, 1e21, 0.1 + 0.2, -0.0]
            .into_iter()
            .enumerate()
        {
            records.push(AccessRecord {
                cost_usd: Some(cost),
                key_hash: Some(i as u64),
                duration: Duration::from_micros(i as u64 * 1_000_500),
                status: 499,
                ..AccessRecord::default()
            });
        }
        for r in &records {
            let json = json_line(r);
            let (ts, rest) = json["{\"ts\":\"".len()..].split_at(24);
            assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{json}");
            assert_eq!(rest, fmt_json(r));
            let text = text_line(r);
            assert_eq!(&text[24..], fmt_text(r));
        }
    }

    #[test]
    fn floats_print_as_display_does() {
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            -1.5,
            0.1,
            0.3,
            1e-7,
            1.5e-7,
            1e15,
            1e16,
            1e21,
            1.7976931348623157e308,
            5e-324,
            2.2250738585072014e-308,
            123_456.789,
            0.000_001_234,
            9_007_199_254_740_993.0,
        ];
        // A deterministic spread over every exponent (xorshift bits).
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(f64::from_bits(x));
        }
        // Costs: token counts times prices per million.
        for tokens in [1u64, 17, 250, 4096, 123_457] {
            for price in [0.15, 0.6, 2.5, 3.0, 10.0, 15.0, 75.0] {
                values.push(tokens as f64 * price / 1_000_000.0);
            }
        }
        let mut s = String::new();
        for v in values.into_iter().filter(|v| v.is_finite()) {
            s.clear();
            push_f64(&mut s, v);
            assert_eq!(s, format!("{v}"), "{v:e}");
        }
    }

    #[test]
    fn timestamps_match_humantime_across_seconds() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        let mut s = String::new();
        for ms in [
            0u64, 1, 999, 1000, 1001, 59_999, 60_000, 86_399_999, 86_400_000, 7,
        ] {
            let t = base + Duration::from_millis(ms) + Duration::from_micros(321);
            s.clear();
            push_time(&mut s, t);
            assert_eq!(s, humantime::format_rfc3339_millis(t).to_string());
        }
    }
}
