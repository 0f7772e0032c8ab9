//! The async `run_transaction` under load: 2,000 transfers from 64 tokio tasks over a bb8 pool
//! of 8 diesel-async connections, then a check that no money appeared or vanished.
//!
//! ```text
//! DATABASE_URL=postgres://… cargo run -p diesel-retry --example async_bank --features bb8
//! ```
//!
//! `DATABASE_URL` names a PostgreSQL or CockroachDB database (the flavour is asked of the
//! server; tokio-postgres connects without TLS, so a CockroachDB cluster must be insecure or the
//! URL must not require TLS). The example creates its own table, `async_bank_accounts` — a name
//! of its own so that it never touches roachbank's `accounts` — if it is missing, and resets it
//! to 100 accounts of 1,000 each at every start, so a re-run is a fresh run. Plain SQL only
//! (`INT8` ids, SERIALIZABLE transactions): the same statements on both engines.
//!
//! It prints one summary line and exits 0, or 1 if the total changed or a transfer failed; 2,
//! with one line on stderr, if `DATABASE_URL` is unset or the database cannot be used (no URL
//! is ever printed, so no password is either).

use diesel::prelude::*;
use diesel_async::pooled_connection::{bb8, AsyncDieselConnectionManager};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_retry::asynchronous::{run_transaction, AsyncConnectionSource};
use diesel_retry::{Flavor, Flavored, RetryPolicy};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

diesel::table! {
    /// The example's own accounts (never roachbank's `accounts`).
    async_bank_accounts (id) {
        id -> BigInt,
        balance -> BigInt,
    }
}

use async_bank_accounts::dsl::{async_bank_accounts as accounts, balance, id};

/// Accounts in the table, numbered 1 to `ACCOUNTS`.
pub const ACCOUNTS: i64 = 100;
/// What each account holds at the start.
pub const OPENING_BALANCE: i64 = 1_000;
/// Transfers made in one run.
pub const TRANSFERS: u32 = 2_000;
/// Tokio tasks making them, side by side.
pub const TASKS: u32 = 64;
/// Connections in the pool the tasks share.
pub const POOL_SIZE: u32 = 8;
/// How long connecting may take before the database counts as unusable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What one run did.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The engine, as `SELECT version()` told it.
    pub flavor: Flavor,
    /// Transfers committed (the declined ones included).
    pub committed: u32,
    /// Committed transfers that moved nothing: the paying account held less than the amount.
    pub declined: u32,
    /// Transfers that did not commit (or whose commit is unknown).
    pub failed: u32,
    /// The first failure's error, if any.
    pub first_failure: Option<String>,
    /// Retries made, over all transfers.
    pub retries: u64,
    /// Wall-clock time of the transfers.
    pub seconds: f64,
    /// Sum of the balances before the transfers.
    pub total_before: i64,
    /// Sum of the balances after them.
    pub total_after: i64,
}

impl Summary {
    /// Committed transfers per second.
    pub fn tps(&self) -> f64 {
        f64::from(self.committed) / self.seconds.max(f64::EPSILON)
    }

    /// Whether every transfer committed and the total is unchanged.
    pub fn is_ok(&self) -> bool {
        self.failed == 0 && self.total_before == self.total_after
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} transfers committed ({} declined, {} failed), {} retries, {:.2} s, {:.0} tps; \
             total {} before, {} after; {}, {TASKS} tasks, pool of {POOL_SIZE}",
            self.committed,
            self.declined,
            self.failed,
            self.retries,
            self.seconds,
            self.tps(),
            self.total_before,
            self.total_after,
            self.flavor,
        )
    }
}

/// Why a run could not be made or checked.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    /// Nothing was transferred: no connection, or the table could not be set up.
    #[error("the database in DATABASE_URL cannot be used: {0}")]
    Unusable(String),
    /// The transfers ran, but their total could not be read afterwards.
    #[error("cannot read the total after the transfers: {0}")]
    TotalAfter(String),
}

/// What the transfers of one task came to.
#[derive(Debug, Default)]
struct Tally {
    committed: u32,
    declined: u32,
    failed: u32,
    first_failure: Option<String>,
    retries: u64,
}

/// Sets up the table on the database at `url`, makes the transfers and checks the total.
pub async fn run(url: &str) -> Result<Summary, BankError> {
    let unusable =
        |what: &str, error: &dyn std::fmt::Display| BankError::Unusable(format!("{what}: {error}"));
    // One connection first: a bad URL or a refused login is reported as it is, where a pool
    // would only say that it timed out.
    let mut conn =
        match tokio::time::timeout(CONNECT_TIMEOUT, AsyncPgConnection::establish(url)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(error)) => return Err(unusable("cannot connect", &error)),
            Err(_) => {
                let waited = format!("no answer within {} s", CONNECT_TIMEOUT.as_secs());
                return Err(unusable("cannot connect", &waited));
            }
        };
    conn.batch_execute(
        "CREATE TABLE IF NOT EXISTS async_bank_accounts \
         (id INT8 PRIMARY KEY, balance INT8 NOT NULL)",
    )
    .await
    .map_err(|error| unusable("cannot create async_bank_accounts", &error))?;
    let opening: Vec<_> = (1..=ACCOUNTS)
        .map(|n| (id.eq(n), balance.eq(OPENING_BALANCE)))
        .collect();
    run_transaction(&mut conn, &RetryPolicy::default(), async |conn| {
        diesel::delete(accounts).execute(conn).await?;
        diesel::insert_into(accounts)
            .values(&opening)
            .execute(conn)
            .await
    })
    .await
    .map_err(|error| unusable("cannot reset async_bank_accounts", &error))?;
    let total_before = total(&mut conn)
        .await
        .map_err(|error| unusable("cannot read the total", &error))?;
    drop(conn);

    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
    let pool = bb8::Pool::builder()
        .max_size(POOL_SIZE)
        .connection_timeout(CONNECT_TIMEOUT)
        .build(manager)
        .await
        .map_err(|error| unusable("cannot open a pool", &error))?;
    // `Flavored` around a borrowed pool; each task below owns a handle of its own (bb8's pool
    // is an `Arc` inside) and wraps it with the flavour detected here, once.
    let flavor = Flavored::detect_async(&pool)
        .await
        .map_err(|error| unusable("cannot tell the engine", &error))?
        .flavor()
        .unwrap_or(Flavor::PostgreSql);

    let started = Instant::now();
    let next = Arc::new(AtomicU32::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let (pool, next) = (pool.clone(), Arc::clone(&next));
        tasks.spawn(async move {
            let (bank, policy) = (Flavored::new(&pool, flavor), RetryPolicy::default());
            let mut tally = Tally::default();
            while next.fetch_add(1, Ordering::Relaxed) < TRANSFERS {
                // Chosen once: a retry makes the same transfer again. `async move`: the closure
                // keeps copies; capturing them by reference fails rustc's `Send` check inside a
                // spawned task (rust-lang/rust#139475).
                let from = rand::random_range(1..=ACCOUNTS);
                let to = 1 + (from + rand::random_range(0..ACCOUNTS - 1)) % ACCOUNTS;
                let amount = rand::random_range(1..=100);
                let done = run_transaction(bank, &policy, async move |conn| {
                    transfer(conn, from, to, amount).await
                })
                .await;
                match done {
                    Ok(done) => {
                        tally.committed += 1;
                        tally.declined += u32::from(!done.value);
                        tally.retries += u64::from(done.retries());
                    }
                    Err(error) => {
                        tally.failed += 1;
                        tally.retries += u64::from(error.attempts().saturating_sub(1));
                        tally.first_failure.get_or_insert_with(|| error.to_string());
                    }
                }
            }
            tally
        });
    }
    let mut summary = Summary {
        flavor,
        committed: 0,
        declined: 0,
        failed: 0,
        first_failure: None,
        retries: 0,
        seconds: 0.0,
        total_before,
        total_after: 0,
    };
    while let Some(tally) = tasks.join_next().await {
        let tally = tally.expect("a transfer task panicked");
        summary.committed += tally.committed;
        summary.declined += tally.declined;
        summary.failed += tally.failed;
        summary.retries += tally.retries;
        summary.first_failure = summary.first_failure.or(tally.first_failure);
    }
    summary.seconds = started.elapsed().as_secs_f64();
    let mut conn = pool
        .get()
        .await
        .map_err(|error| BankError::TotalAfter(error.to_string()))?;
    summary.total_after = total(&mut conn)
        .await
        .map_err(|error| BankError::TotalAfter(error.to_string()))?;
    Ok(summary)
}

/// Moves `amount` from account `from` to account `to` if `from` holds that much; whether it
/// did.
///
/// The lower id is written first, so every transfer takes its two row locks in the same order:
/// two transfers between the same accounts in opposite directions queue instead of
/// deadlocking. (Paying first deadlocked about once in five runs here; PostgreSQL breaks a
/// deadlock only after `deadlock_timeout`, a second, and such a run took twice as long.) When
/// the payee comes first and the payer then cannot pay, the credit is taken back: nothing moves.
async fn transfer(
    conn: &mut AsyncPgConnection,
    from: i64,
    to: i64,
    amount: i64,
) -> QueryResult<bool> {
    if to < from {
        credit(conn, to, amount).await?;
        if !debit(conn, from, amount).await? {
            credit(conn, to, -amount).await?;
            return Ok(false);
        }
        return Ok(true);
    }
    if !debit(conn, from, amount).await? {
        return Ok(false);
    }
    credit(conn, to, amount).await?;
    Ok(true)
}

/// Takes `amount` from `account` if it holds that much; whether it did.
async fn debit(conn: &mut AsyncPgConnection, account: i64, amount: i64) -> QueryResult<bool> {
    let paid = diesel::update(accounts.find(account).filter(balance.ge(amount)))
        .set(balance.eq(balance - amount))
        .execute(conn)
        .await?;
    Ok(paid == 1)
}

/// Adds `amount` to `account`.
async fn credit(conn: &mut AsyncPgConnection, account: i64, amount: i64) -> QueryResult<()> {
    diesel::update(accounts.find(account))
        .set(balance.eq(balance + amount))
        .execute(conn)
        .await?;
    Ok(())
}

/// The sum of all balances (added up here: `SUM` of `INT8` is `NUMERIC` on PostgreSQL and
/// `DECIMAL` on CockroachDB).
async fn total(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
    let balances: Vec<i64> = accounts.select(balance).load(conn).await?;
    Ok(balances.iter().sum())
}

#[tokio::main]
async fn main() -> ExitCode {
    let Some(url) = std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        eprintln!("async_bank: DATABASE_URL is not set (a PostgreSQL or CockroachDB URL)");
        return ExitCode::from(2);
    };
    match run(&url).await {
        Ok(summary) => {
            println!("async_bank: {summary}");
            if let Some(failure) = &summary.first_failure {
                eprintln!("async_bank: first failed transfer: {failure}");
            }
            if summary.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error @ BankError::Unusable(_)) => {
            eprintln!("async_bank: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("async_bank: {error}");
            ExitCode::from(1)
        }
    }
}
