//! A transfer run followed second by second: its ticks on stderr in the columns of `cockroach
//! workload run`, its latency histograms (`--histograms`, HdrHistogram's interval log) and its
//! plot (`--plot`, SVG only: a file name that does not end in `.svg` is refused). The files are
//! opened before the command touches the database, so that an unwritable path is one line on
//! stderr, exit 2, and nothing written anywhere; the log is emptied when the run begins, the
//! plot when it is drawn — not at all for a run too short to plot, which is said instead.

use super::error::CliError;
use anyhow::{Context, Result};
use roachbank::workload::columns::TickTable;
use roachbank::workload::histogram_log::HistogramLog;
use roachbank::workload::plot::{self, PlotPoint};
use roachbank::workload::{TransferReport, TransferTick};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often a followed run ticks.
pub const TICK_EVERY: Duration = Duration::from_secs(1);

/// A file named on the command line, opened for writing (not yet emptied). Dropped before the
/// run begins (the command failed before it, say for want of a bank), a file it created is
/// removed again: a command that does nothing writes nothing.
#[derive(Debug)]
struct OutputFile {
    /// The option that named it, for error lines.
    option: &'static str,
    path: PathBuf,
    /// The file, until the run begins ([`OutputFile::emptied`]).
    file: Option<File>,
    /// Whether opening it created it.
    created: bool,
}

impl OutputFile {
    /// Opens `path` for writing, creating it if need be but leaving what it holds until the
    /// run begins; a path that cannot be written is bad usage.
    fn open(option: &'static str, path: &Path) -> Result<Self, CliError> {
        let create_new = OpenOptions::new().write(true).create_new(true).open(path);
        let (file, created) = match create_new {
            Ok(file) => (Ok(file), true),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                (OpenOptions::new().write(true).open(path), false)
            }
            Err(err) => (Err(err), false),
        };
        file.map(|file| OutputFile {
            option,
            path: path.to_path_buf(),
            file: Some(file),
            created,
        })
        .map_err(|err| CliError::Usage(format!("cannot write {option} {}: {err}", path.display())))
    }

    /// The file, emptied: the run begins.
    fn emptied(mut self) -> Result<(String, File)> {
        let name = format!("{} {}", self.option, self.path.display());
        let file = self.file.take().context("the file was taken already")?;
        file.set_len(0)
            .with_context(|| format!("cannot write {name}"))?;
        Ok((name, file))
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if self.file.take().is_some() && self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The files `transfer` was asked to write: `--histograms` and `--plot`.
#[derive(Debug, Default)]
pub struct OutputFiles {
    histograms: Option<OutputFile>,
    plot: Option<OutputFile>,
}

impl OutputFiles {
    /// Opens the files the options name (before anything touches the database): a path that
    /// cannot be written, or the same path for both, is bad usage.
    pub fn open(histograms: Option<&Path>, plot: Option<&Path>) -> Result<Self, CliError> {
        if let Some(plot) = plot.filter(|plot| !is_svg(plot)) {
            return Err(CliError::Usage(format!(
                "--plot {}: the plot is drawn as SVG only; give a file name ending in .svg",
                plot.display()
            )));
        }
        if let (Some(histograms), Some(plot)) = (histograms, plot) {
            if histograms == plot {
                return Err(CliError::Usage(format!(
                    "--histograms and --plot both name {}; give each its own file",
                    plot.display()
                )));
            }
        }
        Ok(OutputFiles {
            histograms: histograms
                .map(|path| OutputFile::open("--histograms", path))
                .transpose()?,
            plot: plot
                .map(|path| OutputFile::open("--plot", path))
                .transpose()?,
        })
    }
}

/// What a followed run shows and writes.
#[derive(Debug)]
pub struct Following {
    /// Whether its ticks are printed on stderr.
    show_ticks: bool,
    files: OutputFiles,
    /// A timed run's length: an interval that begins after it is the run's tail (transfers
    /// started before the time was up, finishing), neither printed nor plotted — CockroachDB
    /// prints no tick for it either — but in the log and the plot's totals all the same.
    tail_after: Option<Duration>,
}

impl Following {
    /// A run followed with ticks on stderr if `show_ticks`, into `files`; `duration` is the
    /// length of a timed run.
    pub fn new(show_ticks: bool, files: OutputFiles, duration: Option<Duration>) -> Self {
        Following {
            show_ticks,
            files,
            tail_after: duration,
        }
    }

    /// Whether there is anything to follow the run for (else it needs no ticks).
    pub fn wanted(&self) -> bool {
        self.show_ticks || self.files.histograms.is_some() || self.files.plot.is_some()
    }

    /// Runs `run`, giving it the function to call on each tick, and writes what was asked;
    /// `title` names the run in the files. Returns the run's report, and what became of the
    /// files: the lines that say where they were written (or why the plot was not drawn), or
    /// the failure to write one (which does not stop the run: the transfers are what matters,
    /// and they are reported).
    pub fn run(
        self,
        title: &str,
        run: impl FnOnce(&mut (dyn FnMut(&TransferTick) + Send)) -> TransferReport,
    ) -> (TransferReport, Result<Vec<String>>) {
        let Following {
            show_ticks,
            files,
            tail_after,
        } = self;
        let plot_file = files.plot;
        let log_path = files.histograms.as_ref().map(|log| log.path.clone());
        let histograms = match files.histograms.map(OutputFile::emptied).transpose() {
            Ok(histograms) => histograms,
            Err(err) => {
                // Nothing could be written: the run goes on, followed by nothing.
                return (run(&mut |_| {}), Err(err));
            }
        };
        let (log_name, mut log) = match histograms {
            Some((name, file)) => (name, Some(HistogramLog::new(BufWriter::new(file)))),
            None => (String::new(), None),
        };
        let mut table = TickTable::new();
        let mut points = Vec::new();
        let mut log_error = None;
        let report = {
            let mut intervals = match &mut log {
                Some(log) => match log.begin(SystemTime::now(), title) {
                    Ok(intervals) => Some(intervals),
                    Err(err) => {
                        log_error = Some(
                            anyhow::Error::new(err).context(format!("cannot write {log_name}")),
                        );
                        None
                    }
                },
                None => None,
            };
            let wants_points = plot_file.is_some();
            let mut on_tick = |tick: &TransferTick| {
                if let Some(writer) = &mut intervals {
                    let written =
                        writer.write(tick.elapsed - tick.interval, tick.interval, &tick.latencies);
                    if let Err(err) = written {
                        log_error = Some(
                            anyhow::Error::new(err).context(format!("cannot write {log_name}")),
                        );
                        intervals = None;
                    }
                }
                if wants_points {
                    // Every tick: the plot leaves out a timed run's tail, but counts it.
                    points.push(PlotPoint {
                        shown: !is_tail(tail_after, tick),
                        ..PlotPoint::from(tick)
                    });
                }
                if show_ticks && shows(tail_after, tick) {
                    let mut stderr = std::io::stderr().lock();
                    for line in table.lines(tick) {
                        let _ = writeln!(stderr, "{line}");
                    }
                }
            };
            run(&mut on_tick)
        };
        let mut written = match log_error {
            Some(err) => Err(err),
            None => Ok(Vec::new()),
        };
        if let Some(log) = log {
            let finished = log.finish().map(drop);
            let finished = finished.with_context(|| format!("cannot write {log_name}"));
            written = written.and_then(|mut said| {
                finished?;
                if let Some(path) = &log_path {
                    said.push(format!(
                        "wrote the latency histogram log to {}",
                        path.display()
                    ));
                }
                Ok(said)
            });
        }
        if let Some(plot_file) = plot_file {
            let elapsed = report.summary.elapsed;
            written = written.and_then(|mut said| {
                said.push(draw(plot_file, &points, title, elapsed)?);
                Ok(said)
            });
        }
        (report, written)
    }
}

/// Draws `points` into `file` under `title` and says where; of a run (`elapsed` long) too short
/// to plot, draws nothing and says so, the file left as it was (removed if this run made it).
fn draw(file: OutputFile, points: &[PlotPoint], title: &str, elapsed: Duration) -> Result<String> {
    let path = file.path.display().to_string();
    if !plot::plottable(points) {
        return Ok(format!(
            "--plot {path}: not drawn, the run took {:.2} s: too short to plot (a point a \
             second, and a plot needs {})",
            elapsed.as_secs_f64(),
            plot::FEWEST_PLOTTED
        ));
    }
    let (name, mut file) = file.emptied()?;
    plot::svg(points, title)
        .map_err(anyhow::Error::new)
        .and_then(|svg| {
            file.write_all(svg.as_bytes())?;
            file.flush()?;
            Ok(())
        })
        .with_context(|| format!("cannot write {name}"))?;
    Ok(format!("wrote the plot to {path}"))
}

/// Whether `path` names an SVG file (`.svg`, in any case).
fn is_svg(path: &Path) -> bool {
    path.extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("svg"))
}

/// Whether `tick` is shown to people: not a last tick too short to have a rate that means
/// anything, nor the tail of a timed run of length `tail_after`.
fn shows(tail_after: Option<Duration>, tick: &TransferTick) -> bool {
    tick.shown() && !is_tail(tail_after, tick)
}

/// Whether `tick` is the tail of a timed run of length `tail_after`: transfers started before
/// the time was up, finishing after it.
fn is_tail(tail_after: Option<Duration>, tick: &TransferTick) -> bool {
    tail_after.is_some_and(|length| tick.elapsed - tick.interval >= length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(start_ms: u64, end_ms: u64, last: bool) -> TransferTick {
        TransferTick {
            elapsed: Duration::from_millis(end_ms),
            interval: Duration::from_millis(end_ms - start_ms),
            last,
            ..TransferTick::default()
        }
    }

    #[test]
    fn the_tail_of_a_timed_run_and_a_short_last_tick_are_not_shown() {
        let timed = Some(Duration::from_secs(3));
        assert!(shows(timed, &tick(2_000, 3_001, false)), "a full second");
        assert!(
            !shows(timed, &tick(3_001, 3_800, true)),
            "after the time was up: the tail"
        );
        assert!(
            shows(timed, &tick(2_000, 2_900, true)),
            "cut short (Ctrl-C): the run's own last 0.9 s"
        );
        assert!(
            shows(None, &tick(7_000, 7_600, true)),
            "a counted run's end"
        );
        assert!(
            !shows(None, &tick(7_000, 7_100, true)),
            "too short for a rate"
        );
    }
}
