//! The demo's terminal output: headings, captions, small tables and the
//! progress bar. On a terminal it uses a little colour and a live bar; with
//! `--no-tty` (or when stdout is not a terminal) it prints a plain
//! transcript: same words, no ANSI escapes, no redrawing.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const GREEN: &str = "\x1b[32m";
const CYAN: &str = "\x1b[36m";
const RESET: &str = "\x1b[0m";

#[derive(Clone, Copy, Debug)]
pub struct Out {
    tty: bool,
}

impl Out {
    /// Styled output only when asked for and stdout is a terminal.
    pub fn new(no_tty: bool) -> Out {
        Out {
            tty: !no_tty && std::io::stdout().is_terminal(),
        }
    }

    /// One line as is. Write errors (a closed pipe) are ignored: the demo
    /// still runs its checks and exits with their verdict.
    pub fn line(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{text}");
    }

    pub fn blank(&self) {
        self.line("");
    }

    /// The title of the show.
    pub fn title(&self, text: &str) {
        if self.tty {
            self.line(&format!("{BOLD}{text}{RESET}"));
        } else {
            self.line(text);
        }
    }

    /// An act's heading, preceded by a blank line.
    pub fn heading(&self, text: &str) {
        self.blank();
        if self.tty {
            self.line(&format!("{BOLD}{CYAN}== {text} =={RESET}"));
        } else {
            self.line(&format!("== {text} =="));
        }
    }

    /// The one line that says what to notice.
    pub fn caption(&self, text: &str) {
        if self.tty {
            self.line(&format!("   {BOLD}Notice:{RESET} {text}"));
        } else {
            self.line(&format!("   Notice: {text}"));
        }
    }

    /// A detail, indented.
    pub fn info(&self, text: &str) {
        if self.tty {
            self.line(&format!("   {DIM}{text}{RESET}"));
        } else {
            self.line(&format!("   {text}"));
        }
    }

    /// A check that held.
    pub fn ok(&self, text: &str) {
        if self.tty {
            self.line(&format!("   {GREEN}ok{RESET}  {text}"));
        } else {
            self.line(&format!("   ok  {text}"));
        }
    }

    /// A small table: numeric columns (numbers, percentages) right-aligned,
    /// text left-aligned.
    pub fn table(&self, header: &[&str], rows: &[Vec<String>]) {
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
                    && rows.iter().all(|row| {
                        row.get(c)
                            .is_some_and(|cell| cell.trim_end_matches('%').parse::<f64>().is_ok())
                    })
            })
            .collect();
        let render = |cells: Vec<&str>| {
            let mut line = String::from("    ");
            for ((cell, w), right) in cells.iter().zip(&widths).zip(&numeric) {
                if *right {
                    line.push_str(&format!(" {cell:>w$}"));
                } else {
                    line.push_str(&format!(" {cell:<w$}"));
                }
                line.push(' ');
            }
            line.trim_end().to_owned()
        };
        let head = render(header.to_vec());
        if self.tty {
            self.line(&format!("{BOLD}{head}{RESET}"));
        } else {
            self.line(&head);
        }
        for row in rows {
            let cells: Vec<&str> = row.iter().take(cols).map(String::as_str).collect();
            self.line(&render(cells));
        }
    }

    /// A live progress bar of `len` steps on a terminal; `None` otherwise.
    pub fn progress(&self, len: u64, what: &str) -> Option<ProgressBar> {
        if !self.tty {
            return None;
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stdout());
        if let Ok(style) =
            ProgressStyle::with_template("   {msg} [{bar:32.cyan/blue}] {pos}/{len} requests")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(80));
        Some(bar)
    }
}
