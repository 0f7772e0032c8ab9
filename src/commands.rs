//! One function per command: call the library, print what it did.

use crate::cli::Command;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use roachbank::bank::{self, TransferOutcome};
use roachbank::db::Database;
use roachbank::points;
use roachbank::retry::RetryPolicy;
use std::io::IsTerminal;
use std::time::Duration;

/// Transfers up to this count print one line each.
const TRANSFER_LINES_UP_TO: u64 = 10;

/// Runs `command` against `db`.
pub fn run(command: &Command, db: &Database, policy: &RetryPolicy) -> Result<()> {
    match *command {
        Command::Seed { accounts } => seed(db, policy, accounts),
        Command::Transfer { count, workers } => transfer(db, policy, count, workers),
        Command::Points { count, chunk_size } => add_points(db, policy, count, chunk_size),
        Command::Balance => balance(db, policy),
    }
}

/// The pool size a command wants.
pub fn pool_size(command: &Command) -> u32 {
    match *command {
        Command::Transfer { workers, .. } => workers,
        _ => 1,
    }
}

fn seed(db: &Database, policy: &RetryPolicy, accounts: u64) -> Result<()> {
    let committed = bank::seed(db, policy, accounts).context("seed failed")?;
    println!(
        "seeded {} accounts holding {} in total ({} attempt{})",
        committed.value.accounts,
        committed.value.money,
        committed.attempts,
        plural(u64::from(committed.attempts)),
    );
    Ok(())
}

fn transfer(db: &Database, policy: &RetryPolicy, count: u64, workers: u32) -> Result<()> {
    let print_each = count <= TRANSFER_LINES_UP_TO;
    let on_transfer = |outcome: &TransferOutcome| {
        if print_each {
            println!(
                "transferred {} from account {} to account {} ({} attempt{})",
                outcome.transfer.amount,
                outcome.transfer.source,
                outcome.transfer.sink,
                outcome.attempts,
                plural(u64::from(outcome.attempts)),
            );
        }
    };
    let report = bank::run_transfers(db, policy, count, workers, &on_transfer);
    let summary = &report.summary;
    println!(
        "transfers: {} done, {} retries, {:.1} transfers/s, p50 {}, p99 {} ({} worker{})",
        summary.done,
        summary.retries,
        summary.per_second(),
        format_latency(summary.latency_quantile(0.50)),
        format_latency(summary.latency_quantile(0.99)),
        workers,
        plural(u64::from(workers)),
    );
    match report.error {
        None => Ok(()),
        Some(error) => Err(anyhow::Error::new(error).context(format!(
            "transfer stopped after {} of {count} transfers",
            summary.done
        ))),
    }
}

fn add_points(db: &Database, policy: &RetryPolicy, count: u64, chunk_size: u64) -> Result<()> {
    let progress = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(count);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {human_pos}/{human_len} points ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let result = points::add_points(db, policy, count, chunk_size, &mut |done| {
        progress.set_position(done)
    });
    progress.finish_and_clear();
    let report = result.context("points failed")?;
    println!(
        "points: {} rows in {} chunk{}, {} retries, {:.2} s, {:.0} rows/s",
        report.rows,
        report.chunks,
        plural(report.chunks),
        report.retries,
        report.elapsed.as_secs_f64(),
        report.rows_per_second(),
    );
    Ok(())
}

fn balance(db: &Database, policy: &RetryPolicy) -> Result<()> {
    let summary = bank::balance(db, policy).context("balance failed")?.value;
    let or_dash = |value: Option<i64>| value.map_or_else(|| "-".to_string(), |v| v.to_string());
    println!("accounts: {}", summary.accounts);
    println!("total balance: {}", summary.total);
    println!("min balance: {}", or_dash(summary.min));
    println!("max balance: {}", or_dash(summary.max));
    Ok(())
}

fn format_latency(latency: Option<Duration>) -> String {
    latency.map_or_else(
        || "-".to_string(),
        |latency| format!("{:.2} ms", latency.as_secs_f64() * 1000.0),
    )
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
