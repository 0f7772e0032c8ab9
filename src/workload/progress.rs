//! Progress of a run on stderr, drawn by indicatif only when stderr is a terminal (a redirected
//! or piped stderr gets nothing, so it carries only the command's diagnostics): a bar towards
//! the run's size, with the committed rate and the time left at that rate. (A timed `transfer`
//! shows CockroachDB-style ticks instead: see [`columns`](super::columns).)

use super::stats::{grouped, grouped_rate, per_second};
use crate::sync::lock;
use indicatif::{
    HumanDuration, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle, TermLike,
};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

/// The bar or spinner on screen, if one is: [`above`] prints log lines above it.
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Runs `print` (which writes to stderr) with the progress display, if one is drawn, cleared
/// first and drawn again after, so that log lines (`-v`, `--echo`) scroll above it.
pub fn above<R>(print: impl FnOnce() -> R) -> R {
    let shown = lock(&SHOWN).clone();
    match shown {
        Some(bar) => bar.suspend(print),
        None => print(),
    }
}

/// A progress display; every method does nothing when stderr is not a terminal.
#[derive(Debug)]
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// Nothing drawn, wherever stderr goes.
    pub fn hidden() -> Self {
        Progress(None)
    }

    /// A bar towards `total` `units` ("points", "transfers"): `12,345/100,000 transfers
    /// (4,115/s, eta 21s)`. The rate is what has committed so far over the time taken, a whole
    /// number with its digits grouped, and the time left is the rest at that rate — not
    /// indicatif's own estimate, which follows the last few seconds' bursts and runs ahead of
    /// the run.
    pub fn bar(total: u64, units: &str) -> Self {
        Progress::drawn(|| {
            let template = format!(
                "{{bar:40}} {{done}}/{{total}} {units} ({{committed_rate}}/s, eta {{committed_eta}})"
            );
            let style = ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .with_key(
                    "done",
                    |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                        let _ = out.write_str(&grouped(state.pos()));
                    },
                )
                .with_key(
                    "total",
                    |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                        let _ = out.write_str(&grouped(state.len().unwrap_or(0)));
                    },
                )
                .with_key(
                    "committed_rate",
                    |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                        let _ = out
                            .write_str(&grouped_rate(committed_rate(state.pos(), state.elapsed())));
                    },
                )
                .with_key(
                    "committed_eta",
                    |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                        let _ = match time_left(state.pos(), state.len(), state.elapsed()) {
                            Some(left) => write!(out, "{:#}", HumanDuration(left)),
                            None => out.write_str("-"),
                        };
                    },
                );
            ProgressBar::new(total).with_style(style)
        })
    }

    /// `make()`'s bar, drawn on [`EchoRoom`], if stderr is a terminal.
    fn drawn(make: impl FnOnce() -> ProgressBar) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let stderr = EchoRoom(console::Term::buffered_stderr());
            let target = ProgressDrawTarget::term_like_with_hz(Box::new(stderr), DRAWS_PER_SECOND);
            let bar = make();
            bar.set_draw_target(target);
            bar
        });
        if let Some(bar) = &bar {
            *lock(&SHOWN) = Some(bar.clone());
        }
        Progress(bar)
    }
    /// `n` more done.
    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(n);
        }
    }

    /// `done` done in all.
    pub fn set_position(&self, done: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(done);
        }
    }

    /// Clears the display, so that what the command prints next starts on a clean line.
    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            lock(&SHOWN).take();
            bar.finish_and_clear();
        }
    }
}

/// How often the display is drawn at most (indicatif's own default for stderr).
const DRAWS_PER_SECOND: u8 = 20;

/// Columns left free at the right of the display for what the terminal echoes: `^C`.
const ECHO_COLUMNS: u16 = 2;

/// stderr as indicatif draws on it, [`ECHO_COLUMNS`] narrower than it is. indicatif fills every
/// line of its display with spaces to the right edge of the terminal, leaving the cursor there;
/// the `^C` a terminal echoes when Ctrl-C is pressed then starts a line of its own below the
/// display, and clearing the display (counted from that line) would leave its first line on
/// screen above the summary. With the columns spare, the echo ends the display's last line and
/// is cleared with it.
#[derive(Debug)]
struct EchoRoom(console::Term);

impl TermLike for EchoRoom {
    fn width(&self) -> u16 {
        TermLike::width(&self.0).saturating_sub(ECHO_COLUMNS).max(1)
    }

    fn height(&self) -> u16 {
        TermLike::height(&self.0)
    }

    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        TermLike::move_cursor_up(&self.0, n)
    }

    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        TermLike::move_cursor_down(&self.0, n)
    }

    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        TermLike::move_cursor_right(&self.0, n)
    }

    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        TermLike::move_cursor_left(&self.0, n)
    }

    fn write_line(&self, line: &str) -> std::io::Result<()> {
        TermLike::write_line(&self.0, line)
    }

    fn write_str(&self, text: &str) -> std::io::Result<()> {
        TermLike::write_str(&self.0, text)
    }

    fn clear_line(&self) -> std::io::Result<()> {
        TermLike::clear_line(&self.0)
    }

    fn flush(&self) -> std::io::Result<()> {
        TermLike::flush(&self.0)
    }
}

/// What has committed per second so far: `done` over the whole of `elapsed`.
fn committed_rate(done: u64, elapsed: Duration) -> f64 {
    per_second(done, elapsed)
}

/// The time the rest of `total` takes at the committed rate; none before anything has committed
/// (no rate yet) or without a total.
fn time_left(done: u64, total: Option<u64>, elapsed: Duration) -> Option<Duration> {
    let left = total?.saturating_sub(done);
    if done == 0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        left as f64 / committed_rate(done, elapsed),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_left_is_the_rest_at_the_committed_rate() {
        // 1,000 done in 4 s: 250/s, so the other 3,000 take 12 s.
        let elapsed = Duration::from_secs(4);
        assert_eq!(committed_rate(1_000, elapsed), 250.0);
        assert_eq!(
            time_left(1_000, Some(4_000), elapsed),
            Some(Duration::from_secs(12))
        );
        assert_eq!(time_left(4_000, Some(4_000), elapsed), Some(Duration::ZERO));
        assert_eq!(time_left(0, Some(4_000), elapsed), None, "no rate yet");
        assert_eq!(time_left(10, None, elapsed), None);
    }
}
