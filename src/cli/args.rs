//! The command line, as clap definitions.

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};
use roachbank::bank::points::{LoadMethod, DEFAULT_CHUNK_SIZE, MAX_CHUNK_ROWS, MAX_POINTS_PER_RUN};
use roachbank::bank::{TransferStyle, MAX_SEED_ACCOUNTS};
use roachbank::db::MAX_STATEMENT_TIMEOUT;
use roachbank::workload::stats::grouped;
use std::ffi::OsStr;
use std::marker::PhantomData;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

/// CockroachDB's bank tutorial in Rust: seed accounts, move money between them, bulk-load
/// points, and check the totals — on CockroachDB, PostgreSQL or an embedded SQLite file.
// `arg_required_else_help = false`: without a command clap would answer with the whole help on
// stderr (whose first line, the description, was all `main` printed); this way it reports a
// missing command as an error (one line listing the commands), like any other refusal.
#[derive(Debug, Parser)]
// `next_help_heading`: the flags below are global, and each command's --help lists them under
// their own heading after the command's own flags (clap would interleave them otherwise).
#[command(name = "roachbank", version, about, long_about = None, arg_required_else_help = false,
          next_help_heading = "Global options")]
pub struct Cli {
    /// Database URL: postgresql://…, cockroachdb://…, sqlite://PATH or a *.db path.
    /// Default: DATABASE_URL from the environment or .env, else the SQLite file bank.db.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// Print every SQL statement on stderr, timestamped, with its binds on the next line, like
    /// SQLAlchemy's echo=True (passwords redacted).
    #[arg(long, global = true)]
    pub echo: bool,

    /// Show on stderr what the retrying transactions do: -v each retry (its SQLSTATE,
    /// CockroachDB's retry reason, the wait) and every commit whose outcome is unknown; -vv
    /// also commits, failures and the commit probe; -vvv every attempt.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Retries per transaction before giving up (the work runs at most N+1 times).
    #[arg(long, global = true, value_name = "N", default_value_t = 50, allow_negative_numbers = true,
          value_parser = WholeNumber::<u32>::from(0..=u64::from(u32::MAX)))]
    pub max_retries: u32,

    /// Cancel any statement that runs longer than this (e.g. 5s, 500ms) instead of waiting for
    /// it: SET statement_timeout on CockroachDB/PostgreSQL. SQLite has no such setting and
    /// ignores it. A server URL can set it too: options=-c%20statement_timeout%3D5s
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_statement_timeout)]
    pub statement_timeout: Option<Duration>,

    /// A statement that gets no answer for this long (a frozen server, a proxy that stops
    /// forwarding) has its connection closed from this side; the transaction is then retried on
    /// a fresh connection, or its commit settled by the ledger probe. Never shorter than the
    /// statement timeout plus 5 s. CockroachDB/PostgreSQL only.
    #[arg(long, global = true, value_name = "DURATION", default_value = "30s",
          value_parser = parse_statement_timeout)]
    pub stall_timeout: Duration,

    /// How long settling a commit whose outcome is unknown may take: the ledger is asked
    /// whether it landed, on connections that wait no longer than what is left of this; if no
    /// answer comes in time the transfer (seed, points chunk) is reported with unknown outcome,
    /// never as failed, and never retried blindly.
    #[arg(long, global = true, value_name = "DURATION", default_value = "20s",
          value_parser = parse_duration)]
    pub settle_timeout: Duration,

    /// The server ends a transaction of ours left idle this long (SET
    /// idle_in_transaction_session_timeout): a commit lost in a network partition can hold its
    /// locks no longer, and settles within about this time. CockroachDB/PostgreSQL only.
    #[arg(long, global = true, value_name = "DURATION", default_value = "15s",
          value_parser = parse_statement_timeout)]
    pub idle_in_transaction_timeout: Duration,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands; each runs its work through `run_transaction`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create accounts with random ids in [0, 10^9), one in each N-th of that space, and
    /// random balances in [0, 10^6).
    Seed {
        /// How many accounts to create (in one transaction).
        #[arg(long, value_name = "N", default_value_t = 100, allow_negative_numbers = true,
              value_parser = WholeNumber::<u64>::from(1..=MAX_SEED_ACCOUNTS))]
        accounts: u64,
    },
    /// Move half of a random account's balance to another random account, K times (or for a
    /// while), each transfer recorded in the ledger exactly once.
    Transfer(TransferArgs),
    /// Insert N random points (x, y, z in [0, 1024)) in chunks, one transaction per chunk.
    #[command(allow_negative_numbers = true)]
    Points(PointsArgs),
    /// Show the number of accounts, the total balance, and the smallest and largest balance.
    Balance,
    /// Audit the bank against its ledger; exit 1 on any inconsistency.
    Check,
    /// First-run setup (the tutorial's Step 2): with the admin URL, create the user and the
    /// database the database URL names and grant the user what it needs, then create the
    /// tables as that user. Idempotent: a second run changes nothing.
    Init {
        /// A user allowed to create users and databases (root on CockroachDB, postgres on
        /// PostgreSQL). Default: ADMIN_DATABASE_URL from the environment or .env. Not used
        /// for SQLite, which has no users.
        #[arg(long, value_name = "URL")]
        admin_url: Option<String>,
    },
}

/// `transfer`'s options.
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// How many transfers to make.
    #[arg(long, value_name = "K", default_value_t = 1, conflicts_with = "duration",
          allow_negative_numbers = true, value_parser = WholeNumber::<u64>::from(1..=u64::MAX))]
    pub count: u64,
    /// Keep transferring for this long instead (e.g. 30s, 5m, 1h).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Concurrent workers sharing one connection pool.
    #[arg(long, value_name = "W", default_value_t = 1, allow_negative_numbers = true,
          value_parser = WholeNumber::<u32>::from(1..=256))]
    pub workers: u32,
    /// Run the ledger audit (`check`) when the transfers are done.
    #[arg(long)]
    pub check: bool,
    /// How each transfer talks to the database: one-statement (the default on CockroachDB
    /// and PostgreSQL: one round trip) or tutorial (the tutorial's interactive transaction;
    /// the default on SQLite).
    #[arg(long, value_enum, value_name = "STYLE")]
    pub style: Option<TransferStyleArg>,
    /// Print a line of figures every second on stderr, in the columns of `cockroach
    /// workload run` (errors, ops/sec, p50/p95/p99/pMax in ms), and the total in the same
    /// columns on stdout. A --duration run prints its ticks whenever stderr is a terminal,
    /// and its total always.
    #[arg(long)]
    pub ticks: bool,
    /// Write the latency histogram of each second to FILE, in HdrHistogram's interval log
    /// format (values in nanoseconds), for HdrHistogram's tools.
    #[arg(long, value_name = "FILE")]
    pub histograms: Option<PathBuf>,
    /// Draw the run as an SVG picture in FILE: committed transfers/s and retries/s, p50
    /// and p99 latency, second by second.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// `points`' options.
#[derive(Debug, Args)]
pub struct PointsArgs {
    /// How many points to insert.
    #[arg(value_name = "N", value_parser = WholeNumber::<u64>::from(1..=MAX_POINTS_PER_RUN))]
    pub count: u64,
    /// Rows per chunk (per transaction): at most 100,000, which bounds memory (under 64 MiB
    /// with four chunks in flight); chunks beyond 2,500 rows are cut to 2,500 on CockroachDB.
    #[arg(long, value_name = "C", default_value_t = DEFAULT_CHUNK_SIZE,
          allow_negative_numbers = true, value_parser = WholeNumber::<u64>::from(1..=MAX_CHUNK_ROWS))]
    pub chunk_size: u64,
    /// How chunks are written: copy (PostgreSQL only, its default) or insert (the default
    /// on CockroachDB and SQLite, which refuse copy from this driver).
    #[arg(long, value_enum, value_name = "METHOD")]
    pub method: Option<PointsMethod>,
}

/// `points --method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PointsMethod {
    /// Binary COPY FROM STDIN (PostgreSQL only: CockroachDB refuses it from this driver).
    Copy,
    /// Multi-row INSERT statements.
    Insert,
}

impl From<PointsMethod> for LoadMethod {
    fn from(method: PointsMethod) -> Self {
        match method {
            PointsMethod::Copy => LoadMethod::Copy,
            PointsMethod::Insert => LoadMethod::Insert,
        }
    }
}

/// `transfer --style`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransferStyleArg {
    /// The whole transfer as one statement (CockroachDB and PostgreSQL).
    OneStatement,
    /// The tutorial's interactive transaction.
    Tutorial,
}

impl From<TransferStyleArg> for TransferStyle {
    fn from(style: TransferStyleArg) -> Self {
        match style {
            TransferStyleArg::OneStatement => TransferStyle::OneStatement,
            TransferStyleArg::Tutorial => TransferStyle::Tutorial,
        }
    }
}

/// A positive duration such as `30s`, `5m`, `1h30m` or `250ms`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err("the duration must be positive".to_string()),
        Err(err) => Err(format!("{err} (write e.g. 30s, 5m or 1h)")),
    }
}

/// A statement timeout: a positive duration of at least 1 ms and at most about 24 days
/// (PostgreSQL's limit).
fn parse_statement_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_duration(text)?;
    if timeout < Duration::from_millis(1) {
        Err("the statement timeout must be at least 1ms".to_string())
    } else if timeout > MAX_STATEMENT_TIMEOUT {
        Err(format!(
            "the statement timeout must be at most {}",
            humantime::format_duration(MAX_STATEMENT_TIMEOUT)
        ))
    } else {
        Ok(timeout)
    }
}

/// A whole number in a range, refused in the words a person would use, naming the flag (or the
/// argument) and repeating what was given: `--count must be at least 1, not 0`, `N must be a
/// positive whole number, not -5`, `--chunk-size must be at most 100,000, not 100001` (clap's
/// own range check says `0 is not in 1..18446744073709551615`).
#[derive(Debug)]
struct WholeNumber<T> {
    range: RangeInclusive<u64>,
    value: PhantomData<fn() -> T>,
}

impl<T> From<RangeInclusive<u64>> for WholeNumber<T> {
    /// Whole numbers in `range`, which must fit `T`.
    fn from(range: RangeInclusive<u64>) -> Self {
        WholeNumber {
            range,
            value: PhantomData,
        }
    }
}

impl<T> Clone for WholeNumber<T> {
    fn clone(&self) -> Self {
        WholeNumber::from(self.range.clone())
    }
}

impl<T> TypedValueParser for WholeNumber<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        let (min, max) = (*self.range.start(), *self.range.end());
        let kind = if min > 0 {
            "a positive whole number"
        } else {
            "a whole number"
        };
        let refused = match text.parse::<u64>() {
            Ok(n) if n < min => format!("at least {}, not {text}", grouped(min)),
            Ok(n) if n > max => format!("at most {}, not {text}", grouped(max)),
            Ok(n) => match T::try_from(n) {
                Ok(number) => return Ok(number),
                Err(_) => format!("at most {}, not {text}", grouped(max)),
            },
            // Only digits, yet no u64: too large.
            Err(_) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
                format!("at most {}, not {text}", grouped(max))
            }
            Err(_) => format!("{kind}, not '{text}'"),
        };
        let name = arg.map_or_else(|| "the number".to_string(), argument_name);
        Err(clap::Error::raw(
            ErrorKind::ValueValidation,
            format!("{name} must be {refused}\n"),
        )
        .with_cmd(cmd))
    }
}

/// How a person names `arg`: `--count`, or a positional argument by its value name (`N`).
fn argument_name(arg: &clap::Arg) -> String {
    match (arg.get_long(), arg.get_value_names()) {
        (Some(long), _) => format!("--{long}"),
        (None, Some([name, ..])) => name.to_string(),
        (None, _) => arg.get_id().to_string(),
    }
}
