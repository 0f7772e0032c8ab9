//! The tutorial's bank: create accounts with random ids and balances, move half of one random
//! account's money to another, and sum it all up. Every function runs through
//! [`run_transaction`].

use crate::db::{Database, DbConnection};
use crate::models::Account;
use crate::retry::{
    run_transaction, Committed, DatabaseErrorSource, RetryPolicy, TransactionError,
};
use crate::schema::accounts;
use diesel::dsl::{count_star, max, min, sql};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable};
use rand::Rng;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// New account ids are drawn from `[0, ID_SPACE)`, as in the tutorial.
pub const ID_SPACE: i64 = 1_000_000_000;
/// New balances are drawn from `[0, OPENING_BALANCE_SPACE)`, as in the tutorial.
pub const OPENING_BALANCE_SPACE: i64 = 1_000_000;
/// Most accounts one `seed` may create (ids are drawn from a space of 10^9).
pub const MAX_SEED_ACCOUNTS: u64 = 10_000_000;
/// Ids per `IN (…)` lookup and rows per INSERT: far below every backend's bind limit.
const ROWS_PER_STATEMENT: usize = 10_000;

/// Why a bank operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    /// The database refused or failed a statement.
    #[error("{0}")]
    Database(#[from] diesel::result::Error),
    /// A transfer needs two distinct accounts.
    #[error(
        "the bank has fewer than two accounts to transfer between: run `roachbank seed` first"
    )]
    NotEnoughAccounts,
    /// The tutorial's balance check (cannot trigger for half a balance, kept for fidelity).
    #[error("insufficient funds in account {account}: balance {balance}, transfer {amount}")]
    InsufficientFunds {
        /// The source account.
        account: i64,
        /// Its balance.
        balance: i64,
        /// The amount asked for.
        amount: i64,
    },
    /// An account vanished between being picked and being credited.
    #[error("account {0} does not exist")]
    MissingAccount(i64),
}

impl DatabaseErrorSource for BankError {
    fn database_error(&self) -> Option<&diesel::result::Error> {
        match self {
            BankError::Database(error) => Some(error),
            _ => None,
        }
    }
}

/// What `seed` created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedReport {
    /// Accounts created.
    pub accounts: u64,
    /// Money created: the sum of their opening balances.
    pub money: i64,
}

/// Creates `count` accounts with random ids in `[0, 10^9)` and random balances in
/// `[0, 10^6)`, in one transaction. Ids already taken (in the table or in this batch) are
/// drawn again, so a collision never fails the command and never shrinks `count`.
pub fn seed(
    db: &Database,
    policy: &RetryPolicy,
    count: u64,
) -> Result<Committed<SeedReport>, TransactionError<BankError>> {
    run_transaction(db, policy, |conn| create_random_accounts(conn, count))
}

/// The body of [`seed`]: draws fresh ids until `count` unused ones are found, then inserts.
pub fn create_random_accounts(
    conn: &mut DbConnection,
    count: u64,
) -> Result<SeedReport, BankError> {
    let mut rng = rand::rng();
    let wanted = usize::try_from(count).unwrap_or(usize::MAX);
    let mut drawn: HashSet<i64> = HashSet::with_capacity(wanted);
    let mut new_accounts: Vec<Account> = Vec::with_capacity(wanted);
    while new_accounts.len() < wanted {
        let candidates: Vec<i64> = std::iter::repeat_with(|| rng.random_range(0..ID_SPACE))
            .filter(|id| drawn.insert(*id))
            .take(wanted - new_accounts.len())
            .collect();
        let mut taken = HashSet::new();
        for chunk in candidates.chunks(ROWS_PER_STATEMENT) {
            taken.extend(
                accounts::table
                    .filter(accounts::id.eq_any(chunk))
                    .select(accounts::id)
                    .load::<i64>(conn)?,
            );
        }
        new_accounts.extend(
            candidates
                .into_iter()
                .filter(|id| !taken.contains(id))
                .map(|id| Account {
                    id,
                    balance: rng.random_range(0..OPENING_BALANCE_SPACE),
                }),
        );
    }
    for chunk in new_accounts.chunks(ROWS_PER_STATEMENT) {
        let insert = diesel::insert_into(accounts::table).values(chunk);
        crate::on_concrete_connection!(&mut *conn, c => insert.execute(c))?;
    }
    Ok(SeedReport {
        accounts: count,
        money: new_accounts.iter().map(|account| account.balance).sum(),
    })
}

/// One committed transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The account that paid.
    pub source: i64,
    /// The account that was paid.
    pub sink: i64,
    /// Half of the source's balance, rounded down.
    pub amount: i64,
}

/// Picks a random existing account: the first id at or after a random point of the id space,
/// wrapping around; `exclude` is never picked. Works on tables far too large to load.
pub fn pick_random_account(
    conn: &mut DbConnection,
    exclude: Option<i64>,
) -> Result<Option<Account>, BankError> {
    let start = rand::rng().random_range(0..ID_SPACE);
    let excluded = exclude.unwrap_or(-1);
    let after = accounts::table
        .filter(accounts::id.ge(start))
        .filter(accounts::id.ne(excluded))
        .order(accounts::id)
        .select(Account::as_select())
        .first(conn)
        .optional()?;
    if after.is_some() {
        return Ok(after);
    }
    Ok(accounts::table
        .filter(accounts::id.ne(excluded))
        .order(accounts::id)
        .select(Account::as_select())
        .first(conn)
        .optional()?)
}

/// The body of a transfer: picks two distinct accounts at random, takes half of the first
/// one's balance and gives it to the second (the tutorial's `transfer_funds_randomly`).
pub fn transfer_funds_randomly(conn: &mut DbConnection) -> Result<Transfer, BankError> {
    let source = pick_random_account(conn, None)?.ok_or(BankError::NotEnoughAccounts)?;
    let sink = pick_random_account(conn, Some(source.id))?.ok_or(BankError::NotEnoughAccounts)?;
    let amount = source.balance / 2;
    if source.balance < amount {
        return Err(BankError::InsufficientFunds {
            account: source.id,
            balance: source.balance,
            amount,
        });
    }
    diesel::update(accounts::table.find(source.id))
        .set(accounts::balance.eq(source.balance - amount))
        .execute(conn)?;
    let credited = diesel::update(accounts::table.find(sink.id))
        .set(accounts::balance.eq(accounts::balance + amount))
        .execute(conn)?;
    if credited != 1 {
        return Err(BankError::MissingAccount(sink.id));
    }
    Ok(Transfer {
        source: source.id,
        sink: sink.id,
        amount,
    })
}

/// One transfer as the run saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferOutcome {
    /// What moved.
    pub transfer: Transfer,
    /// Attempts it took.
    pub attempts: u32,
    /// Wall time from first attempt to commit.
    pub latency: Duration,
}

/// Figures of a transfer run.
#[derive(Debug, Clone, Default)]
pub struct TransferSummary {
    /// Transfers committed.
    pub done: u64,
    /// Retries over all committed transfers.
    pub retries: u64,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Latency of every committed transfer, sorted.
    pub latencies: Vec<Duration>,
}

impl TransferSummary {
    /// Committed transfers per second of wall time.
    pub fn per_second(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// The latency below which `quantile` (0..=1) of the transfers fall.
    pub fn latency_quantile(&self, quantile: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let rank = (quantile * self.latencies.len() as f64).ceil() as usize;
        Some(self.latencies[rank.clamp(1, self.latencies.len()) - 1])
    }
}

/// How a transfer run ended: its figures, and the error that stopped it early, if any.
#[derive(Debug)]
pub struct TransferReport {
    /// What was done.
    pub summary: TransferSummary,
    /// The first failure; the run stops at it.
    pub error: Option<TransactionError<BankError>>,
}

/// Runs `count` random transfers on `workers` threads sharing `db`'s pool, calling
/// `on_transfer` after each commit. Stops at the first failure.
pub fn run_transfers(
    db: &Database,
    policy: &RetryPolicy,
    count: u64,
    workers: u32,
    on_transfer: &(dyn Fn(&TransferOutcome) + Sync),
) -> TransferReport {
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let first_error = Mutex::new(None);
    let started = Instant::now();
    let per_worker: Vec<(u64, Vec<Duration>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut retries = 0;
                    let mut latencies = Vec::new();
                    while !stop.load(Ordering::Relaxed)
                        && next.fetch_add(1, Ordering::Relaxed) < count
                    {
                        let begun = Instant::now();
                        match run_transaction(db, policy, transfer_funds_randomly) {
                            Ok(committed) => {
                                let outcome = TransferOutcome {
                                    transfer: committed.value,
                                    attempts: committed.attempts,
                                    latency: begun.elapsed(),
                                };
                                retries += u64::from(outcome.attempts - 1);
                                latencies.push(outcome.latency);
                                on_transfer(&outcome);
                            }
                            Err(error) => {
                                stop.store(true, Ordering::Relaxed);
                                first_error
                                    .lock()
                                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                                    .get_or_insert(error);
                            }
                        }
                    }
                    (retries, latencies)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_default())
            .collect()
    });
    let mut summary = TransferSummary {
        elapsed: started.elapsed(),
        ..TransferSummary::default()
    };
    for (retries, latencies) in per_worker {
        summary.retries += retries;
        summary.latencies.extend(latencies);
    }
    summary.done = summary.latencies.len() as u64;
    summary.latencies.sort_unstable();
    TransferReport {
        summary,
        error: first_error
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    }
}

/// The tutorial's verification step: how many accounts, how much money, smallest and largest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceSummary {
    /// Number of accounts.
    pub accounts: i64,
    /// Sum of all balances.
    pub total: i64,
    /// Smallest balance (none without accounts).
    pub min: Option<i64>,
    /// Largest balance (none without accounts).
    pub max: Option<i64>,
}

/// Sums up the accounts in one consistent read.
pub fn balance(
    db: &Database,
    policy: &RetryPolicy,
) -> Result<Committed<BalanceSummary>, TransactionError<BankError>> {
    run_transaction(db, policy, |conn| {
        let (accounts, total, min, max) = accounts::table
            .select((
                count_star(),
                // SUM(BIGINT) is NUMERIC on PostgreSQL; the total of 64-bit balances fits.
                sql::<Nullable<BigInt>>("CAST(SUM(balance) AS BIGINT)"),
                min(accounts::balance),
                max(accounts::balance),
            ))
            .first::<(i64, Option<i64>, Option<i64>, Option<i64>)>(conn)?;
        Ok(BalanceSummary {
            accounts,
            total: total.unwrap_or(0),
            min,
            max,
        })
    })
}
