//! The command line, as clap definitions.

use clap::{Parser, Subcommand};
use roachbank::bank::MAX_SEED_ACCOUNTS;
use roachbank::points::{LoadMethod, DEFAULT_CHUNK_SIZE, MAX_POINTS_PER_RUN};
use std::time::Duration;

/// CockroachDB's bank tutorial in Rust: seed accounts, move money between them, bulk-load
/// points, and check the totals — on CockroachDB, PostgreSQL or an embedded SQLite file.
#[derive(Debug, Parser)]
#[command(name = "roachbank", version, about, long_about = None)]
pub struct Cli {
    /// Database URL: postgresql://…, cockroachdb://…, sqlite://PATH or a *.db path.
    /// Default: DATABASE_URL from the environment or .env, else the SQLite file bank.db.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// Print every SQL statement with its binds on stderr (passwords redacted).
    #[arg(long, global = true)]
    pub echo: bool,

    /// Retries per transaction before giving up (the work runs at most N+1 times).
    #[arg(long, global = true, value_name = "N", default_value_t = 50)]
    pub max_retries: u32,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands; each runs its work through `run_transaction`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create accounts with random ids in [0, 10^9) and random balances in [0, 10^6).
    Seed {
        /// How many accounts to create (in one transaction).
        #[arg(long, value_name = "N", default_value_t = 100,
              value_parser = clap::value_parser!(u64).range(1..=MAX_SEED_ACCOUNTS))]
        accounts: u64,
    },
    /// Move half of a random account's balance to another random account, K times (or for a
    /// while), each transfer recorded in the ledger exactly once.
    Transfer {
        /// How many transfers to make.
        #[arg(long, value_name = "K", default_value_t = 1, conflicts_with = "duration",
              value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
        /// Keep transferring for this long instead (e.g. 30s, 5m, 1h).
        #[arg(long, value_name = "D", value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Concurrent workers sharing one connection pool.
        #[arg(long, value_name = "W", default_value_t = 1,
              value_parser = clap::value_parser!(u32).range(1..=256))]
        workers: u32,
        /// Run the ledger audit (`check`) when the transfers are done.
        #[arg(long)]
        check: bool,
    },
    /// Insert N random points (x, y, z in [0, 1024)) in chunks, one transaction per chunk.
    #[command(allow_negative_numbers = true)]
    Points {
        /// How many points to insert.
        #[arg(value_name = "N",
              value_parser = clap::value_parser!(u64).range(1..=MAX_POINTS_PER_RUN))]
        count: u64,
        /// Rows per chunk (per transaction; at most 2,500 on CockroachDB).
        #[arg(long, value_name = "C", default_value_t = DEFAULT_CHUNK_SIZE,
              value_parser = clap::value_parser!(u64).range(1..))]
        chunk_size: u64,
        /// How chunks are written. Default: copy on PostgreSQL, insert on CockroachDB and
        /// SQLite.
        #[arg(long, value_enum, value_name = "METHOD")]
        method: Option<PointsMethod>,
    },
    /// Show the number of accounts, the total balance, and the smallest and largest balance.
    Balance,
    /// Audit the bank against its ledger; exit 1 on any inconsistency.
    Check,
}

/// `points --method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PointsMethod {
    /// Binary COPY FROM STDIN (PostgreSQL, CockroachDB).
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

/// A positive duration such as `30s`, `5m`, `1h30m` or `250ms`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err("the duration must be positive".to_string()),
        Err(err) => Err(format!("{err} (write e.g. 30s, 5m or 1h)")),
    }
}
