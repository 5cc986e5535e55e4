//! Progress while cases run, on stderr (stdout keeps the table): a bar on a
//! terminal, one plain line per finished case otherwise (CI logs), so both
//! a person and a log reader see which case is slow or failing.

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::check::CheckResult;
use super::golden::Case;
use super::run::Response;

pub enum Progress {
    Bar(ProgressBar),
    Lines { total: usize, done: AtomicUsize },
    Quiet,
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines when it is not.
    pub fn auto(total: usize) -> Progress {
        use std::io::IsTerminal as _;
        if std::io::stderr().is_terminal() {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} [{bar:30}] {pos}/{len} {elapsed} {wide_msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            // The elapsed time and spinner move while slow cases run.
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            Progress::Bar(bar)
        } else {
            Progress::Lines {
                total,
                done: AtomicUsize::new(0),
            }
        }
    }

    pub fn done(&self, side: &str, case: &Case, response: &Response, verdict: &CheckResult) {
        let outcome = if verdict.passed() {
            "PASS".to_owned()
        } else {
            let kinds: Vec<&str> = verdict.failures.iter().map(|f| f.kind.as_str()).collect();
            format!("FAIL ({})", kinds.join(", "))
        };
        let latency = response
            .latency
            .map(super::check::ms)
            .unwrap_or_else(|| "-".into());
        match self {
            Progress::Bar(bar) => {
                if !verdict.passed() {
                    bar.println(format!("{side:<8} {} {outcome} {latency}", case.id));
                }
                bar.set_message(format!("{side} {}", case.id));
                bar.inc(1);
            }
            Progress::Lines { total, done } => {
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                let width = total.to_string().len();
                // One write per line: the two sides finish interleaved.
                let line = format!(
                    "[{n:>width$}/{total}] {side:<8} {} {outcome} {latency}\n",
                    case.id
                );
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            Progress::Quiet => {}
        }
    }

    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
