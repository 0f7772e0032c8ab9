//! A transfer run followed second by second: its ticks on stderr in the columns of `cockroach
//! workload run`, its latency histograms (`--histograms`, HdrHistogram's interval log) and its
//! plot (`--plot`, SVG). The files are opened before the command touches the database, so that
//! an unwritable path is one line on stderr, exit 2, and nothing written anywhere; they are
//! emptied only when the run begins.

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

/// A file named on the command line, opened for writing (not yet emptied).
#[derive(Debug)]
struct OutputFile {
    /// The option that named it, for error lines.
    option: &'static str,
    path: PathBuf,
    file: File,
}

impl OutputFile {
    /// Opens `path` for writing, creating it if need be but leaving what it holds until the
    /// run begins; a path that cannot be written is bad usage.
    fn open(option: &'static str, path: &Path) -> Result<Self, CliError> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map(|file| OutputFile {
                option,
                path: path.to_path_buf(),
                file,
            })
            .map_err(|err| {
                CliError::Usage(format!("cannot write {option} {}: {err}", path.display()))
            })
    }

    /// The file, emptied.
    fn emptied(self) -> Result<(String, File)> {
        let name = format!("{} {}", self.option, self.path.display());
        self.file
            .set_len(0)
            .with_context(|| format!("cannot write {name}"))?;
        Ok((name, self.file))
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
    /// `title` names the run in the files. Returns the run's report, and whether the files
    /// were written (a file that could not be written does not stop the run: the transfers
    /// are what matters, and they are reported).
    pub fn run(
        self,
        title: &str,
        run: impl FnOnce(&mut (dyn FnMut(&TransferTick) + Send)) -> TransferReport,
    ) -> (TransferReport, Result<()>) {
        let Following {
            show_ticks,
            files,
            tail_after,
        } = self;
        let (histograms, plot_file) = match (
            files.histograms.map(OutputFile::emptied).transpose(),
            files.plot.map(OutputFile::emptied).transpose(),
        ) {
            (Ok(histograms), Ok(plot)) => (histograms, plot),
            (Err(err), _) | (_, Err(err)) => {
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
                let shown = shows(tail_after, tick);
                if wants_points {
                    // Every tick: the plot leaves out what is not shown, but counts it.
                    points.push(PlotPoint {
                        shown,
                        ..PlotPoint::from(tick)
                    });
                }
                if show_ticks && shown {
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
            None => Ok(()),
        };
        if let Some(log) = log {
            let finished = log.finish().map(drop);
            written = written.and(finished.with_context(|| format!("cannot write {log_name}")));
        }
        if let Some((name, mut file)) = plot_file {
            let drawn = plot::svg(&points, title)
                .map_err(anyhow::Error::new)
                .and_then(|svg| {
                    file.write_all(svg.as_bytes())?;
                    file.flush()?;
                    Ok(())
                })
                .with_context(|| format!("cannot write {name}"));
            written = written.and(drawn);
        }
        (report, written)
    }
}

/// Whether `tick` is shown to people: not a last tick too short to have a rate that means
/// anything, nor the tail of a timed run of length `tail_after`.
fn shows(tail_after: Option<Duration>, tick: &TransferTick) -> bool {
    let tail = tail_after.is_some_and(|length| tick.elapsed - tick.interval >= length);
    tick.shown() && !tail
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
