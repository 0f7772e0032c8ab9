//! Progress of a run on stderr, drawn by indicatif only when stderr is a terminal (a redirected
//! or piped stderr gets nothing, so it carries only the command's diagnostics): a bar when the
//! run's size is known, a spinner for a timed run.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The bar or spinner on screen, if one is: [`above`] prints log lines above it.
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Runs `print` (which writes to stderr) with the progress display, if one is drawn, cleared
/// first and drawn again after, so that log lines (`-v`, `--echo`) scroll above it.
pub fn above<R>(print: impl FnOnce() -> R) -> R {
    let shown = SHOWN.lock().unwrap_or_else(PoisonError::into_inner).clone();
    match shown {
        Some(bar) => bar.suspend(print),
        None => print(),
    }
}

/// How often a spinner moves while nothing completes (a server that has stopped answering).
const SPINNER_TICK: Duration = Duration::from_millis(200);

/// A progress display; every method does nothing when stderr is not a terminal.
#[derive(Debug)]
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// Nothing drawn, wherever stderr goes.
    pub fn hidden() -> Self {
        Progress(None)
    }

    /// A bar towards `total` `units` ("points", "transfers"), with the rate and the time left.
    pub fn bar(total: u64, units: &str) -> Self {
        Progress::drawn(|| {
            let template = format!(
                "{{bar:40}} {{human_pos}}/{{human_len}} {units} ({{per_sec}}, eta {{eta}})"
            );
            ProgressBar::new(total).with_style(
                ProgressStyle::with_template(&template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            )
        })
    }

    /// A spinner counting `units` done during a run of `length`, with the rate.
    pub fn timed(length: Duration, units: &str) -> Self {
        Progress::drawn(|| {
            let template = format!(
                "{{spinner}} {{human_pos}} {units} in {{elapsed}} of {} ({{per_sec}})",
                humantime::format_duration(length)
            );
            let spinner = ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template(&template)
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            spinner.enable_steady_tick(SPINNER_TICK);
            spinner
        })
    }

    /// `make()`'s bar if stderr is a terminal.
    fn drawn(make: impl FnOnce() -> ProgressBar) -> Self {
        let bar = std::io::stderr().is_terminal().then(make);
        if let Some(bar) = &bar {
            *SHOWN.lock().unwrap_or_else(PoisonError::into_inner) = Some(bar.clone());
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
            SHOWN.lock().unwrap_or_else(PoisonError::into_inner).take();
            bar.finish_and_clear();
        }
    }
}
