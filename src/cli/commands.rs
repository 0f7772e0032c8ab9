//! One function per command, dispatched by [`run`]: check what it was given, connect, call the
//! library, print what it did.

use super::args::{Cli, Command};
use super::error::{CliError, StdoutError};
use super::follow::{Following, OutputFiles, TICK_EVERY};
use super::hint;
use super::interrupt::Interrupt;
use anyhow::{Context, Result};
use roachbank::bank::audit::{self, AuditReport};
use roachbank::bank::points::{self, LoadMethod};
use roachbank::bank::{self, TransferStyle};
use roachbank::db::config::{Backend, DatabaseConfig, UrlSource};
use roachbank::db::durability::durability_warning;
use roachbank::db::redact::Redactor;
use roachbank::db::{echo_connection_events, one_line, ConnectOptions, Database, Flavor};
use roachbank::init::{self, InitPlan, InitReport};
use roachbank::retry::RetryPolicy;
use roachbank::sync::{into_inner, lock};
use roachbank::workload::columns::{total_line, TOTAL_HEADER};
use roachbank::workload::points::PointsRun;
use roachbank::workload::progress::Progress;
use roachbank::workload::stats::{grouped, grouped_rate};
use roachbank::workload::{RunLength, TransferOutcome, TransferRun, TransferSummary};
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Writes one line of a command's results on stdout (line-buffered, so it is written at once).
pub fn write_line(line: std::fmt::Arguments<'_>) -> Result<(), StdoutError> {
    writeln!(std::io::stdout().lock(), "{line}").map_err(StdoutError)
}

/// `println!` that returns a [`StdoutError`] instead of panicking: `say!("…", …)?`.
macro_rules! say {
    ($($arg:tt)*) => {
        write_line(format_args!($($arg)*))
    };
}

/// Transfers up to this count print one line each.
const TRANSFER_LINES_UP_TO: u64 = 10;

/// Runs the command `cli` asks for on the database `config` names. Every command goes the same
/// way: first what it was given is checked (a usage error touches nothing), and every other URL
/// it uses is added to `redactor`; then --echo is set up, with a redactor that knows every URL in
/// play, and the command connects, does its work and says what it did. Transfer and points runs
/// stop early once `interrupt` has a signal, and say so; the other commands are one transaction
/// each and run to their end (`main` then exits with the signal's code).
pub fn run(
    cli: &Cli,
    config: &DatabaseConfig,
    redactor: &mut Redactor,
    interrupt: &Interrupt,
) -> Result<(), CliError> {
    let mut invocation = Invocation {
        cli,
        config,
        redactor,
    };
    match cli.command {
        Command::Init { ref admin_url } => init(&mut invocation, admin_url.as_deref()),
        Command::Seed { accounts } => {
            invocation.on_database(|db, policy| seed(db, policy, accounts))
        }
        Command::Transfer {
            count,
            duration,
            workers,
            check: audit_after,
            style,
            ticks,
            ref histograms,
            ref plot,
        } => {
            // Before anything touches the database: an unwritable file is bad usage.
            let files = OutputFiles::open(histograms.as_deref(), plot.as_deref())?;
            invocation.on_database(|db, policy| {
                let length = duration.map_or(RunLength::Count(count), RunLength::Duration);
                let style =
                    style.map_or_else(|| TransferStyle::fastest_for(db.flavor()), Into::into);
                let run = TransferRun::new(length, workers).style(style);
                let shown = Shown {
                    ticks: ticks || (duration.is_some() && std::io::stderr().is_terminal()),
                    columns: ticks || duration.is_some(),
                };
                transfer_then_check(db, policy, run, shown, files, audit_after, interrupt)
            })
        }
        Command::Points {
            count,
            chunk_size,
            method,
        } => invocation.on_database(|db, policy| {
            let method = method.map_or_else(|| LoadMethod::fastest_for(db.flavor()), Into::into);
            add_points(db, policy, count, chunk_size, method, interrupt)
        }),
        Command::Balance => invocation.on_database(balance),
        Command::Check => invocation.on_database(check),
    }
}

/// One run of a command: the command line, the database URL, and the redactor.
struct Invocation<'a> {
    cli: &'a Cli,
    config: &'a DatabaseConfig,
    /// Knows every URL in play before anything is printed: a command that uses another URL
    /// (init's admin URL) adds it before calling [`Invocation::connect_options`].
    redactor: &'a mut Redactor,
}

impl Invocation<'_> {
    /// Called once, when the command has checked what it was given and is about to connect:
    /// sets up --echo and -v (their output scrubbed by the redactor as it is now), refuses
    /// what SQLite cannot do before the file is created, says so when the embedded SQLite
    /// default is used, and returns the options to connect with.
    fn connect_options(&self) -> Result<ConnectOptions, CliError> {
        let Invocation { cli, config, .. } = *self;
        if cli.echo {
            echo_connection_events(self.redactor.clone())
                .map_err(|err| anyhow::anyhow!(one_line(&err.to_string())))?;
        }
        super::log::install(cli.verbose, cli.echo, self.redactor.clone())?;
        if config.backend() == Backend::Sqlite {
            refuse_unsupported(&cli.command, Flavor::Sqlite).map_err(CliError::Usage)?;
        }
        if config.source() == UrlSource::Default {
            note!(
                "roachbank: DATABASE_URL is not set; using the embedded SQLite file {}",
                config.redacted()
            );
        }
        Ok(ConnectOptions {
            pool_size: pool_size(&cli.command),
            echo: cli.echo,
            statement_timeout: cli.statement_timeout,
            stall_timeout: Some(cli.stall_timeout),
            idle_in_transaction_timeout: cli.idle_in_transaction_timeout,
            redactor: self.redactor.clone(),
            ..ConnectOptions::default()
        })
    }

    /// Opens the database — refusing what its flavour cannot do before any migration runs —
    /// and runs `work` on it; then, if the command wrote something, warns if the server does
    /// not make commits durable.
    fn on_database(
        &self,
        work: impl FnOnce(&Database, &RetryPolicy) -> Result<()>,
    ) -> Result<(), CliError> {
        let options = self.connect_options()?;
        let db = Database::open_checked(self.config.clone(), &options, |flavor| {
            refuse_unsupported(&self.cli.command, flavor)
        })
        .map_err(|err| {
            let hint = hint::after_failed_open(&err.to_string(), self.config);
            CliError::from_open(err).with_hint(hint)
        })?;
        let policy = RetryPolicy {
            max_retries: self.cli.max_retries,
            settle_timeout: self.cli.settle_timeout,
            ..RetryPolicy::default()
        };
        work(&db, &policy)?;
        if reports_work_done(&self.cli.command) {
            warn_if_not_durable(durability_warning(&db));
        }
        Ok(())
    }
}

/// Prints the warning that the server does not make commits durable, if there is one: once,
/// after a command that wrote something has succeeded and said what it did (a failed command
/// prints its one error line and nothing else).
fn warn_if_not_durable(warning: Option<String>) {
    if let Some(warning) = warning {
        note!("roachbank: {warning}");
    }
}

/// Refuses what `flavor` cannot do, before anything is written: asked with [`Flavor::Sqlite`]
/// before the file is created, and with the detected flavour of a server before any migration
/// runs.
fn refuse_unsupported(command: &Command, flavor: Flavor) -> Result<(), String> {
    match command {
        Command::Points {
            method: Some(method),
            ..
        } => LoadMethod::from(*method).supported_on(flavor),
        Command::Transfer {
            style: Some(style), ..
        } => TransferStyle::from(*style).supported_on(flavor),
        _ => Ok(()),
    }
}

/// Whether `command` writes to the database and reports work done (`seed`, `transfer`,
/// `points`, `init`): after such a command succeeds, it warns if the server does not make
/// commits durable.
fn reports_work_done(command: &Command) -> bool {
    match command {
        Command::Seed { .. }
        | Command::Transfer { .. }
        | Command::Points { .. }
        | Command::Init { .. } => true,
        Command::Balance | Command::Check => false,
    }
}

/// The pool size a command wants.
fn pool_size(command: &Command) -> u32 {
    match *command {
        Command::Transfer { workers, .. } => workers,
        Command::Points { .. } => points::SERVER_LOADERS,
        _ => 1,
    }
}

/// `init`: resolve the admin URL and check the plan (a usage error touches nothing), set up the
/// user, the database and the tables, say what was done, and warn if the server does not make
/// commits durable.
fn init(invocation: &mut Invocation<'_>, admin_url: Option<&str>) -> Result<(), CliError> {
    let admin = DatabaseConfig::resolve_admin(admin_url)?;
    if let Some(admin) = &admin {
        // Before anything can print: --echo's connection events and the error line scrub it.
        invocation.redactor.add_config(admin);
    }
    let plan = InitPlan::new(invocation.config, admin.as_ref()).map_err(CliError::from_init)?;
    let options = invocation.connect_options()?;
    let (report, db) = init::init(&plan, &options)
        .map_err(|err| CliError::from_init(err).context("init failed"))?;
    print_init(&report)?;
    // Asked on the session of the user init set up (the one that migrated), as the other
    // commands ask.
    warn_if_not_durable(durability_warning(&db));
    Ok(())
}

fn print_init(report: &InitReport) -> Result<(), StdoutError> {
    for step in &report.steps {
        say!("{}: {}", step.subject, step.outcome)?;
    }
    let who = report
        .user
        .as_deref()
        .map(|user| format!(" as {}", init::quote_ident(user)))
        .unwrap_or_default();
    if report.migrations_applied > 0 {
        say!("migrations: {} applied{who}", report.migrations_applied)?;
    } else {
        say!("migrations: up to date{who}")?;
    }
    match report.changes() {
        0 => say!("init: {} database ready; nothing changed", report.flavor)?,
        n => say!(
            "init: {} database ready; {n} change{}",
            report.flavor,
            plural(n as u64)
        )?,
    }
    Ok(())
}

fn seed(db: &Database, policy: &RetryPolicy, accounts: u64) -> Result<()> {
    let committed = bank::seed(db, policy, accounts).context("seed failed")?;
    say!(
        "seeded {} account{} holding {} in total ({} attempt{})",
        grouped(committed.value.accounts),
        plural(committed.value.accounts),
        committed.value.money,
        committed.attempts,
        plural(u64::from(committed.attempts)),
    )?;
    Ok(())
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
        None => check(db, policy),
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
    // them), unprinted, and the run reports it at the end.
    let unprinted: Mutex<Option<StdoutError>> = Mutex::new(None);
    let on_transfer = |outcome: &TransferOutcome| {
        if print_each {
            let mut unprinted = lock(&unprinted);
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
        (run.run(db, policy, &on_transfer), Ok(()))
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
    let printed = match into_inner(unprinted) {
        Some(error) => Err(error),
        None => print_transfer_summary(summary, shown, workers),
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
            files_written?;
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
fn print_transfer_summary(
    summary: &TransferSummary,
    shown: Shown,
    workers: u32,
) -> Result<(), StdoutError> {
    if shown.columns {
        if shown.ticks {
            say!("")?;
        }
        say!("{TOTAL_HEADER}")?;
        say!("{}", total_line(summary))?;
    }
    say!(
        "transfers: {} done, {} failed, {}{}, {} transfers/s, p50 {}, p99 {} ({} worker{})",
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
        workers,
        plural(u64::from(workers)),
    )
}

fn check(db: &Database, policy: &RetryPolicy) -> Result<()> {
    let started = Instant::now();
    let report = audit::audit(db, policy).context("check failed")?.value;
    let printed = print_audit(&report, started.elapsed());
    // An inconsistent bank outranks unprinted output.
    if report.is_consistent() {
        Ok(printed?)
    } else {
        anyhow::bail!("the audit found inconsistencies (see above)")
    }
}

fn print_audit(report: &AuditReport, elapsed: Duration) -> Result<(), StdoutError> {
    let totals = &report.totals;
    say!(
        "check: {} — {} account{}, {} ledger row{}, total balance {} vs deposits {}, \
         {} account{} off the ledger, {} negative balance{}, {} orphan ledger row{} ({:.2} s)",
        if report.is_consistent() {
            "OK"
        } else {
            "FAILED"
        },
        count(totals.accounts),
        plural(totals.accounts as u64),
        count(totals.ledger_rows),
        plural(totals.ledger_rows as u64),
        totals.total_balance,
        totals.total_deposits,
        count(report.mismatched_accounts),
        plural(report.mismatched_accounts as u64),
        count(totals.negative_balances),
        plural(totals.negative_balances as u64),
        count(totals.orphan_rows),
        plural(totals.orphan_rows as u64),
        elapsed.as_secs_f64(),
    )?;
    for row in &report.listed {
        say!(
            "  account {}: balance {}, ledger says {} (off by {})",
            row.account_id,
            row.balance,
            row.expected,
            row.balance - row.expected
        )?;
    }
    Ok(())
}

fn add_points(
    db: &Database,
    policy: &RetryPolicy,
    count: u64,
    chunk_size: u64,
    method: LoadMethod,
    interrupt: &Interrupt,
) -> Result<()> {
    let effective = points::effective_chunk_size(db.flavor(), chunk_size);
    if effective != chunk_size {
        note!(
            "roachbank: chunks of {} rows instead of {}: {} advises keeping transactions small",
            grouped(effective),
            grouped(chunk_size),
            db.flavor()
        );
    }
    let progress = Progress::bar(count, "points");
    let result = PointsRun::new(count, chunk_size)
        .method(method)
        .cancel(interrupt.flag())
        .run(db, policy, &mut |done| progress.set_position(done));
    progress.finish();
    let report = result.context("points failed")?;
    if let Some(signal) = interrupt.received() {
        if report.rows < count {
            note!(
                "roachbank: {}: stopped after {} of {} row{} ({} chunk{}) committed, each exactly once; no chunk started after it",
                signal.name(),
                grouped(report.rows),
                grouped(count),
                plural(count),
                grouped(report.chunks),
                plural(report.chunks),
            );
        }
    }
    say!(
        "points: {} row{} in {} chunk{}, {}, {:.2} s, {} rows/s",
        grouped(report.rows),
        plural(report.rows),
        grouped(report.chunks),
        plural(report.chunks),
        retries(report.retries),
        report.elapsed.as_secs_f64(),
        grouped_rate(report.rows_per_second()),
    )?;
    Ok(())
}

fn balance(db: &Database, policy: &RetryPolicy) -> Result<()> {
    let summary = bank::balance(db, policy).context("balance failed")?.value;
    let or_dash = |value: Option<i64>| value.map_or_else(|| "-".to_string(), |v| v.to_string());
    say!("accounts: {}", count(summary.accounts))?;
    say!("total balance: {}", summary.total)?;
    say!("min balance: {}", or_dash(summary.min))?;
    say!("max balance: {}", or_dash(summary.max))?;
    Ok(())
}

fn format_latency(latency: Option<Duration>) -> String {
    latency.map_or_else(
        || "-".to_string(),
        |latency| format!("{:.2} ms", latency.as_secs_f64() * 1000.0),
    )
}

/// "1 retry", "2 retries", "1,024 retries".
fn retries(n: u64) -> String {
    format!("{} retr{}", grouped(n), if n == 1 { "y" } else { "ies" })
}

/// A count the database returned (never negative), its digits grouped; money and ids stay
/// plain.
fn count(n: i64) -> String {
    grouped(n.max(0) as u64)
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
