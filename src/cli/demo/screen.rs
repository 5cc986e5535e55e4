//! The demo's output. On a terminal it is a dashboard redrawn in place on
//! the alternate screen: the acts and where the show is, the current act's
//! caption, a live panel of numbers, the checks that held and the latest
//! events. When the show ends the terminal gets its screen back and a short
//! summary of every act stays in the scrollback.
//!
//! With `--no-tty`, or when stdout is not a terminal, it prints a plain
//! transcript instead: the same words, one line each, no escapes, no
//! redrawing, so the tests (and CI logs) can read it.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const CYAN: &str = "\x1b[36m";
const RESET: &str = "\x1b[0m";
const ALT_SCREEN_ON: &str = "\x1b[?1049h\x1b[?25l";
const ALT_SCREEN_OFF: &str = "\x1b[?25h\x1b[?1049l";

/// Events kept on the dashboard; older ones scroll away.
const EVENTS_SHOWN: usize = 7;

pub struct Screen {
    tty: bool,
    started: Instant,
    frame: Mutex<Frame>,
}

/// Everything one redraw shows.
struct Frame {
    title: String,
    acts: Vec<ActLine>,
    current: Option<usize>,
    caption: String,
    panel: Vec<String>,
    events: VecDeque<String>,
    /// Whether the alternate screen is on (so it is left exactly once).
    drawing: bool,
}

struct ActLine {
    short: &'static str,
    title: &'static str,
    done: bool,
    checks: Vec<String>,
}

impl Screen {
    /// `acts`: (short name for the progress line, full title).
    pub fn new(no_tty: bool, title: &str, acts: &[(&'static str, &'static str)]) -> Screen {
        let tty = !no_tty && std::io::stdout().is_terminal();
        let frame = Frame {
            title: title.to_owned(),
            acts: acts
                .iter()
                .map(|(short, title)| ActLine {
                    short,
                    title,
                    done: false,
                    checks: Vec::new(),
                })
                .collect(),
            current: None,
            caption: String::new(),
            panel: Vec::new(),
            events: VecDeque::new(),
            drawing: false,
        };
        let screen = Screen {
            tty,
            started: Instant::now(),
            frame: Mutex::new(frame),
        };
        if tty {
            write_out(ALT_SCREEN_ON);
            screen.with_frame(|f| f.drawing = true);
        } else {
            println_out(title);
        }
        screen
    }

    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// Seconds since the show started, for event stamps.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// A line before the first act (where the mocks and the proxy listen).
    pub fn intro(&self, text: &str) {
        if self.tty {
            self.event(text);
        } else {
            println_out(&format!("   {text}"));
        }
    }

    /// Act `index` starts: its heading and the one line that says what to
    /// notice.
    pub fn begin(&self, index: usize, caption: &str) {
        let title = self.with_frame(|f| {
            f.current = Some(index);
            f.caption = caption.to_owned();
            f.panel.clear();
            f.events.clear();
            f.acts.get(index).map_or("", |a| a.title)
        });
        if self.tty {
            self.redraw();
        } else {
            println_out("");
            println_out(&format!("== {title} =="));
            println_out(&format!("   Notice: {caption}"));
        }
    }

    /// Something happened (a reload, a breaker opening, a step): a stamped
    /// line in the transcript, the newest line of the dashboard's events.
    pub fn event(&self, text: &str) {
        let line = format!("[{:5.1}s] {text}", self.elapsed());
        if self.tty {
            self.with_frame(|f| {
                f.events.push_back(line);
                while f.events.len() > EVENTS_SHOWN {
                    f.events.pop_front();
                }
            });
            self.redraw();
        } else {
            println_out(&format!("   {line}"));
        }
    }

    /// The live panel, replaced on every refresh (dashboard only).
    pub fn panel(&self, lines: Vec<String>) {
        if self.tty {
            self.with_frame(|f| f.panel = lines);
            self.redraw();
        }
    }

    /// Redraw as is (the clock moves on).
    pub fn refresh(&self) {
        if self.tty {
            self.redraw();
        }
    }

    /// A panel that is also worth keeping in the transcript: the numbers
    /// at the end of a phase.
    pub fn settle(&self, lines: Vec<String>) {
        if self.tty {
            self.panel(lines);
        } else {
            for line in lines {
                println_out(&format!("   {line}"));
            }
        }
    }

    /// A check that held.
    pub fn ok(&self, text: &str) {
        if self.tty {
            self.with_frame(|f| {
                if let Some(act) = f.current.and_then(|i| f.acts.get_mut(i)) {
                    act.checks.push(text.to_owned());
                }
            });
            self.redraw();
        } else {
            println_out(&format!("   ok  {text}"));
        }
    }

    /// The current act is over.
    pub fn end(&self) {
        self.with_frame(|f| {
            if let Some(act) = f.current.and_then(|i| f.acts.get_mut(i)) {
                act.done = true;
            }
        });
        if self.tty {
            self.redraw();
        }
    }

    /// The show is over: give the terminal back and leave a summary (on a
    /// terminal), or print the closing lines (transcript).
    pub fn finish(&self, closing: &[String]) {
        let summary = self.with_frame(|f| {
            let mut lines = vec![f.title.clone()];
            for act in &f.acts {
                let mark = if act.done { "ok" } else { "--" };
                lines.push(format!("  {mark}  {}", act.title));
                for check in &act.checks {
                    lines.push(format!("        {check}"));
                }
            }
            lines
        });
        if self.restore() {
            for line in summary {
                println_out(&line);
            }
        } else {
            println_out("");
        }
        for line in closing {
            println_out(line);
        }
    }

    /// Leave the alternate screen if it is on; true if it was.
    pub fn restore(&self) -> bool {
        let was = self.with_frame(|f| std::mem::replace(&mut f.drawing, false));
        if was {
            write_out(ALT_SCREEN_OFF);
        }
        was
    }

    fn with_frame<T>(&self, f: impl FnOnce(&mut Frame) -> T) -> T {
        // A panic while drawing must not take the demo's checks down with it.
        let mut guard = match self.frame.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    fn redraw(&self) {
        let (rows, cols) = terminal_size();
        let elapsed = self.elapsed();
        let text = self.with_frame(|f| {
            if !f.drawing {
                return None;
            }
            Some(render(f, elapsed, rows, cols))
        });
        if let Some(text) = text {
            write_out(&text);
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.restore();
    }
}

/// One frame, cut to the terminal: cursor home, each line cleared to its
/// end, then everything below cleared.
fn render(f: &Frame, elapsed: f64, rows: usize, cols: usize) -> String {
    let mut lines: Vec<String> = Vec::new();
    let clock = format!("{elapsed:5.1}s");
    let pad = cols.saturating_sub(f.title.chars().count() + clock.len() + 1);
    lines.push(format!(
        "{BOLD}{}{RESET}{}{DIM}{clock}{RESET}",
        f.title,
        " ".repeat(pad.max(1))
    ));
    let progress: Vec<String> = f
        .acts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if a.done {
                format!("{GREEN}✓ {}{RESET}", a.short)
            } else if f.current == Some(i) {
                format!("{BOLD}{YELLOW}▶ {}{RESET}", a.short)
            } else {
                format!("{DIM}· {}{RESET}", a.short)
            }
        })
        .collect();
    lines.push(progress.join("  "));
    lines.push(String::new());
    if let Some(act) = f.current.and_then(|i| f.acts.get(i)) {
        lines.push(format!("{BOLD}{CYAN}{}{RESET}", act.title));
        let notice = wrap(&f.caption, cols.saturating_sub(9).max(20));
        for (i, part) in notice.iter().enumerate() {
            if i == 0 {
                lines.push(format!("{BOLD}Notice:{RESET} {part}"));
            } else {
                lines.push(format!("        {part}"));
            }
        }
        lines.push(String::new());
        lines.extend(f.panel.iter().cloned());
        if !act.checks.is_empty() {
            lines.push(String::new());
            for check in &act.checks {
                lines.push(format!("{GREEN}ok{RESET}  {check}"));
            }
        }
    }
    if !f.events.is_empty() {
        lines.push(String::new());
        lines.push(format!("{DIM}events{RESET}"));
        for event in &f.events {
            lines.push(format!("{DIM}{event}{RESET}"));
        }
    }
    let mut out = String::from("\x1b[H");
    for line in lines.iter().take(rows.saturating_sub(1)) {
        out.push_str(&clip(line, cols));
        out.push_str("\x1b[K\n");
    }
    out.push_str("\x1b[J");
    out
}

/// `text` split at spaces into lines of at most `width` characters (a
/// longer word gets a line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// `line` cut to `cols` visible characters; escape sequences do not count
/// and are kept, so colours still reset.
fn clip(line: &str, cols: usize) -> String {
    let mut out = String::with_capacity(line.len());
    let mut visible = 0;
    let mut in_escape = false;
    for c in line.chars() {
        if in_escape {
            out.push(c);
            if c.is_ascii_alphabetic() {
                in_escape = false;
            }
        } else if c == '\x1b' {
            in_escape = true;
            out.push(c);
        } else if visible < cols {
            out.push(c);
            visible += 1;
        }
    }
    out.push_str(RESET);
    out
}

/// (rows, columns) of the terminal on stdout; 24x80 when unknown.
fn terminal_size() -> (usize, usize) {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we own; on
    // failure it writes nothing and we fall back below.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_row > 0 && size.ws_col > 0 {
        (usize::from(size.ws_row), usize::from(size.ws_col))
    } else {
        (24, 80)
    }
}

/// Write errors (a closed pipe) are ignored: the demo still runs its
/// checks and exits with their verdict.
fn write_out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn println_out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
}

/// A small table: numeric columns (numbers, percentages, durations)
/// right-aligned, text left-aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..cols)
        .map(|c| {
            !rows.is_empty()
                && rows
                    .iter()
                    .all(|row| row.get(c).is_some_and(|cell| looks_numeric(cell)))
        })
        .collect();
    let render = |cells: Vec<&str>| {
        let mut line = String::new();
        for ((cell, w), right) in cells.iter().zip(&widths).zip(&numeric) {
            if *right {
                line.push_str(&format!("{cell:>w$}  "));
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        line.trim_end().to_owned()
    };
    let mut lines = vec![render(header.to_vec())];
    for row in rows {
        lines.push(render(row.iter().take(cols).map(String::as_str).collect()));
    }
    lines
}

fn looks_numeric(cell: &str) -> bool {
    let trimmed = cell.trim_end_matches(['%', 's']).trim_end_matches("m");
    cell == "-" || trimmed.parse::<f64>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_numbers_right_and_text_left() {
        let lines = table(
            &["version", "requests", "share"],
            &[
                vec!["v1".into(), "1080".into(), "90.0%".into()],
                vec!["v2".into(), "120".into(), "10.0%".into()],
            ],
        );
        assert_eq!(
            lines,
            [
                "version  requests  share",
                "v1           1080  90.0%",
                "v2            120  10.0%",
            ]
        );
    }

    #[test]
    fn captions_wrap_at_spaces() {
        assert_eq!(wrap("aa bb cc dd", 5), ["aa bb", "cc dd"]);
        assert_eq!(wrap("abcdefgh ij", 4), ["abcdefgh", "ij"]);
        assert!(wrap("", 10).is_empty());
    }

    #[test]
    fn clipping_counts_visible_characters_only() {
        let line = format!("{BOLD}abcdef{RESET}gh");
        let clipped = clip(&line, 4);
        assert!(
            clipped.starts_with(&format!("{BOLD}abcd{RESET}")),
            "{clipped:?}"
        );
        assert!(!clipped.contains('e') && !clipped.contains('g'));
    }

    #[test]
    fn frames_fit_the_terminal() {
        let frame = Frame {
            title: "t".into(),
            acts: vec![ActLine {
                short: "a",
                title: "Act 1",
                done: false,
                checks: vec!["c".into(); 50],
            }],
            current: Some(0),
            caption: "x".repeat(500),
            panel: vec!["p".repeat(300); 40],
            events: VecDeque::new(),
            drawing: true,
        };
        let text = render(&frame, 1.0, 20, 60);
        assert_eq!(text.matches('\n').count(), 19);
        for line in text.split('\n') {
            let visible: String = strip(line);
            assert!(visible.chars().count() <= 60, "{visible:?}");
        }
    }

    fn strip(s: &str) -> String {
        let mut out = String::new();
        let mut esc = false;
        for c in s.chars() {
            if esc {
                esc = !c.is_ascii_alphabetic();
            } else if c == '\x1b' {
                esc = true;
            } else {
                out.push(c);
            }
        }
        out
    }
}
