//! `roachbank transfer`: random transfers, K of them or for a while, on W workers, then the
//! audit if `--check`; each transfer printed (up to ten), or a progress bar, or ticks every
//! second, and a summary line.

use super::args::TransferArgs;
use super::error::{CliError, StdoutError};
use super::follow::{Following, OutputFiles, TICK_EVERY};
use super::interrupt::Interrupt;
use super::invocation::Invocation;
use super::output::{format_latency, plural, retries, say};
use anyhow::{Context, Result};
use diesel_retry::RetryPolicy;
use roachbank::bank;
use roachbank::bank::transfer::TransferStyle;
use roachbank::db::Database;
use roachbank::workload::columns::{total_line, TOTAL_HEADER};
use roachbank::workload::progress::Progress;
use roachbank::workload::runner::RunLength;
use roachbank::workload::stats::{grouped, grouped_rate};
use roachbank::workload::transfers::{TransferOutcome, TransferRun, TransferSummary};
use std::io::IsTerminal;
use std::sync::{Mutex, PoisonError};

/// Transfers up to this count print one line each.
const TRANSFER_LINES_UP_TO: u64 = 10;

/// Runs `transfer` as `args` say: the files it writes are opened before anything touches the
/// database (an unwritable one is bad usage), then the transfers run, stopping early once
/// `interrupt` has a signal.
pub fn run(
    invocation: &Invocation<'_>,
    args: &TransferArgs,
    interrupt: &Interrupt,
) -> Result<(), CliError> {
    // Before anything touches the database: an unwritable file is bad usage.
    let files = OutputFiles::open(args.histograms.as_deref(), args.plot.as_deref())?;
    invocation.on_database(|db, policy| {
        refuse_fewer_than_two_accounts(db, policy)?;
        let length = args
            .duration
            .map_or(RunLength::Count(args.count), RunLength::Duration);
        let style = args
            .style
            .map_or_else(|| TransferStyle::fastest_for(db.flavor()), Into::into);
        let run = TransferRun::new(length, args.workers).style(style);
        let shown = Shown {
            ticks: args.ticks || (args.duration.is_some() && std::io::stderr().is_terminal()),
            columns: args.ticks || args.duration.is_some(),
        };
        transfer_then_check(db, policy, run, shown, files, args.check, interrupt)
    })
}

/// Fails, in one line that says to run `seed`, when the bank has fewer than two accounts: there
/// is nothing to transfer between, so the run does not start (and prints no summary of
/// transfers that were never tried).
fn refuse_fewer_than_two_accounts(db: &Database, policy: &RetryPolicy) -> Result<()> {
    let found = bank::count_accounts_up_to(db, policy, 2)
        .context("transfer failed")?
        .value;
    if found >= 2 {
        return Ok(());
    }
    let accounts = if found == 0 {
        "no accounts"
    } else {
        "only 1 account"
    };
    anyhow::bail!(
        "the bank has {accounts}: nothing to transfer between; {}",
        super::hint::SEED_FIRST
    )
}

/// What a transfer run shows besides its summary line.
#[derive(Debug, Clone, Copy)]
struct Shown {
    /// A line of figures every second on stderr (`--ticks`, or a `--duration` run on a
    /// terminal), instead of the progress display.
    ticks: bool,
    /// The total in `cockroach workload run`'s columns, on stdout (a `--duration` run, or
    /// `--ticks`).
    columns: bool,
}

/// `transfer`, then the ledger audit if `audit_after` (`--check`).
fn transfer_then_check(
    db: &Database,
    policy: &RetryPolicy,
    run: TransferRun,
    shown: Shown,
    files: OutputFiles,
    audit_after: bool,
    interrupt: &Interrupt,
) -> Result<()> {
    let transferred = transfer(db, policy, run, shown, files, interrupt);
    // The audit runs whatever happened to the transfers (that is when it matters most),
    // unless the user asked the run to stop.
    let audited = match interrupt.received() {
        _ if !audit_after => Ok(()),
        None => super::check::run(db, policy),
        Some(signal) => {
            note!(
                "roachbank: {}: the audit (--check) did not run; run `roachbank check`",
                signal.name()
            );
            Ok(())
        }
    };
    match transferred {
        // Unprinted output is the least of the failures: a failed audit outranks it.
        Err(err) if err.is::<StdoutError>() => audited.and(Err(err)),
        transferred => transferred.and(audited),
    }
}

/// The transfers themselves: each printed, or a progress bar, or followed second by second
/// ([`Following`]); then the summary, and the first failure if there was one.
fn transfer(
    db: &Database,
    policy: &RetryPolicy,
    run: TransferRun,
    shown: Shown,
    files: OutputFiles,
    interrupt: &Interrupt,
) -> Result<()> {
    let (length, workers) = (run.length(), run.workers());
    let print_each = matches!(length, RunLength::Count(count) if count <= TRANSFER_LINES_UP_TO);
    let progress = match length {
        _ if print_each || shown.ticks => Progress::hidden(),
        RunLength::Count(count) => Progress::bar(count, "transfers"),
        // A timed run on a terminal shows ticks; elsewhere nothing is drawn anyway.
        RunLength::Duration(_) => Progress::hidden(),
    };
    // The first failed write to stdout: the transfers go on (at most TRANSFER_LINES_UP_TO of
    // them), unprinted, and the run reports it at the end. A worker that panicked while
    // holding the lock left it as it was: taken over as it is.
    let unprinted: Mutex<Option<StdoutError>> = Mutex::new(None);
    let on_transfer = |outcome: &TransferOutcome| {
        if print_each {
            let mut unprinted = unprinted.lock().unwrap_or_else(PoisonError::into_inner);
            if unprinted.is_none() {
                *unprinted = say!(
                    "transferred {} from account {} to account {} ({} attempt{})",
                    outcome.transfer.amount,
                    outcome.transfer.source,
                    outcome.transfer.sink,
                    outcome.attempts,
                    plural(u64::from(outcome.attempts)),
                )
                .err();
            }
            return;
        }
        progress.inc(1);
    };
    let run = run.cancel(interrupt.flag());
    let timed = match length {
        RunLength::Duration(duration) => Some(duration),
        RunLength::Count(_) => None,
    };
    let following = Following::new(shown.ticks, files, timed);
    let (report, files_written) = if following.wanted() {
        let title = format!(
            "roachbank transfer: {} worker{}, {} style, {}",
            workers,
            plural(u64::from(workers)),
            style_name(run.style_on(db.flavor())),
            db.flavor(),
        );
        following.run(&title, |on_tick| {
            run.run_ticking(db, policy, &on_transfer, TICK_EVERY, on_tick)
        })
    } else {
        (run.run(db, policy, &on_transfer), Ok(Vec::new()))
    };
    progress.finish();
    let summary = &report.summary;
    if let Some(signal) = interrupt.received() {
        note!(
            "roachbank: {}: stopped after {:.1} s; no transfer started after it, those in flight committed or rolled back",
            signal.name(),
            summary.elapsed.as_secs_f64(),
        );
    }
    let printed = match unprinted
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
    {
        Some(error) => Err(error),
        None => print_summary(summary, shown, workers),
    };
    // A panicked worker (a bug) or a failed transfer outranks unprinted output: the exit status
    // must say the run went wrong.
    if let Some(panicked) = report.panicked {
        let failed = report
            .error
            .map(|error| format!(" (and a transfer failed: {error})"))
            .unwrap_or_default();
        return Err(anyhow::Error::new(panicked).context(format!(
            "the transfers stopped{failed}; run `roachbank check` to see whether the books balance"
        )));
    }
    match report.error {
        None => {
            // A file that could not be written outranks unprinted output too.
            for line in files_written? {
                // After the summary: where the files went, or why the plot was not drawn.
                note!("roachbank: {line}");
            }
            Ok(printed?)
        }
        Some(error) => Err(anyhow::Error::new(error).context(format!(
            "{} transfer{} failed (none of them applied), {} with unknown outcome; the first",
            grouped(summary.failed),
            plural(summary.failed),
            grouped(summary.unknown),
        ))),
    }
}

/// The name `--style` gives `style`.
fn style_name(style: TransferStyle) -> &'static str {
    match style {
        TransferStyle::OneStatement => "one-statement",
        TransferStyle::Tutorial => "tutorial",
    }
}

/// A transfer run's summary on stdout: the total in `cockroach workload run`'s columns if
/// `shown.columns` (after a blank line if ticks were printed, as CockroachDB does), then the
/// `transfers:` line.
fn print_summary(summary: &TransferSummary, shown: Shown, workers: u32) -> Result<(), StdoutError> {
    if shown.columns {
        if shown.ticks {
            say!("")?;
        }
        say!("{TOTAL_HEADER}")?;
        say!("{}", total_line(summary))?;
    }
    say!(
        "transfers: {} done, {} failed, {}{}, {} transfers/s, p50 {}, p99 {}, pMax {} ({} worker{})",
        grouped(summary.done),
        grouped(summary.failed),
        if summary.unknown > 0 {
            format!("{} with unknown outcome, ", grouped(summary.unknown))
        } else {
            String::new()
        },
        retries(summary.retries),
        grouped_rate(summary.per_second()),
        format_latency(summary.latency_quantile(0.50)),
        format_latency(summary.latency_quantile(0.99)),
        format_latency(summary.latency_quantile(1.0)),
        workers,
        plural(u64::from(workers)),
    )
}
