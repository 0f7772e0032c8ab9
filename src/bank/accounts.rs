//! The bank's accounts: `seed` creates them (random ids and balances, each with its opening
//! deposit in the ledger), `pick_random_account` draws one, `balance` sums them all up,
//! `count_accounts_up_to` says whether there are enough to transfer between.

use super::error::BankError;
use super::ids::{random_account_id, AccountIdSlices, LedgerIds, ID_SPACE};
use crate::db::connection::on_concrete_connection;
use crate::db::{Database, DbConnection, Flavor};
use crate::models::{Account, LedgerEntry};
use crate::schema::{accounts, transfers};
use diesel::dsl::{count_star, max, min, sql};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable};
use diesel_retry::{
    run_read_only_transaction, run_transaction_exactly_once, Committed, RetryPolicy,
    TransactionError,
};
use rand::Rng;
use std::collections::HashSet;

/// New balances are drawn from `[0, OPENING_BALANCE_SPACE)`, as in the tutorial.
pub const OPENING_BALANCE_SPACE: i64 = 1_000_000;
/// Most accounts one `seed` may create (ids are drawn from a space of 10^9).
pub const MAX_SEED_ACCOUNTS: u64 = 10_000_000;
/// Draws of a seed's account id inside its own slice of the id space before it is drawn from
/// the whole space instead (a slice is at least 100 ids wide).
pub const MAX_SLICE_DRAWS: u32 = 8;
/// Ids per `IN (…)` lookup and rows per INSERT: 8,000 ledger rows × 4 columns stay below
/// SQLite's 32,766 bind parameters (and PostgreSQL's 65,535).
const ROWS_PER_STATEMENT: usize = 8_000;

/// Accounts per transaction when seeding CockroachDB: each account is two rows (the account
/// and its opening deposit) and four keys with the ledger's indexes, so a chunk stays within the
/// transaction size CockroachDB is comfortable with (see [`crate::bank::points::COCKROACH_MAX_CHUNK_ROWS`])
/// and a 40001 replays one chunk, not the whole seed.
pub const COCKROACH_SEED_CHUNK: u64 = 2_500;

/// What `seed` created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedReport {
    /// Accounts created.
    pub accounts: u64,
    /// Money created: the sum of their opening balances.
    pub money: i64,
}

/// A seed that stopped part-way: the transaction that failed, and what the transactions before
/// it created (on CockroachDB a seed commits in chunks; elsewhere nothing was created).
#[derive(Debug, thiserror::Error)]
#[error("{cause}{}", if .created.accounts > 0 { format!(" ({} accounts holding {} were created by earlier transactions of this seed and stay)", .created.accounts, .created.money) } else { String::new() })]
pub struct SeedError {
    /// What committed before the failure.
    pub created: SeedReport,
    /// Why the failing transaction did not commit.
    pub cause: TransactionError<BankError>,
}

/// How many accounts one seed transaction creates on `flavor`: [`COCKROACH_SEED_CHUNK`] on
/// CockroachDB; everything at once elsewhere.
pub fn seed_chunk_size(flavor: Flavor) -> u64 {
    match flavor {
        Flavor::CockroachDb => COCKROACH_SEED_CHUNK,
        Flavor::PostgreSql | Flavor::Sqlite => MAX_SEED_ACCOUNTS,
    }
}

/// Creates `count` accounts with random ids in `[0, 10^9)`, one in each of `count` equal slices
/// of that space ([`AccountIdSlices`]: random ids, evenly spread, so that random picks are
/// close to uniform), and random balances in `[0, 10^6)`, each with its opening deposit in the
/// ledger. Ids already taken (in the table or in this batch) are drawn again, so a collision never fails the command and never shrinks
/// `count`. One transaction on PostgreSQL and SQLite; on CockroachDB one per
/// [`seed_chunk_size`] accounts, committed in turn. Each transaction is exactly once: an
/// unknown commit outcome is resolved by looking its deposits up under their client-chosen ids.
/// `attempts` in the result counts the attempts of every transaction.
pub fn seed(
    db: &Database,
    policy: &RetryPolicy,
    count: u64,
) -> Result<Committed<SeedReport>, SeedError> {
    let chunk = seed_chunk_size(db.flavor());
    let deposits = LedgerIds::for_deposits();
    let slices = AccountIdSlices::new(count);
    let mut created = SeedReport {
        accounts: 0,
        money: 0,
    };
    let mut attempts = 0;
    // At least one transaction, so that even `count == 0` has run through the protocol.
    loop {
        let accounts = chunk.min(count - created.accounts);
        let ids = deposits.offset(created.accounts);
        let committed = run_transaction_exactly_once(
            db,
            policy,
            |conn| create_random_accounts(conn, slices, created.accounts, accounts, ids),
            |conn| find_deposits(conn, ids, accounts),
        )
        .map_err(|cause| SeedError {
            created: created.clone(),
            cause,
        })?;
        attempts += committed.attempts;
        created.accounts += committed.value.accounts;
        created.money += committed.value.money;
        if created.accounts >= count {
            break;
        }
    }
    Ok(Committed {
        value: created,
        attempts,
    })
}

/// The body of [`seed`]: creates one account in each of the slices
/// `first_slice..first_slice + count` of `slices` — its id drawn at random inside the slice,
/// drawn again while it is taken (after [`MAX_SLICE_DRAWS`] draws anywhere in the id space) —
/// with a random balance, and one deposit each, with ledger ids `deposits.first() + i`.
pub fn create_random_accounts(
    conn: &mut DbConnection,
    slices: AccountIdSlices,
    first_slice: u64,
    count: u64,
    deposits: LedgerIds,
) -> Result<SeedReport, BankError> {
    let mut rng = rand::rng();
    let wanted = usize::try_from(count).unwrap_or(usize::MAX);
    let mut drawn: HashSet<i64> = HashSet::with_capacity(wanted);
    let mut new_accounts: Vec<Account> = Vec::with_capacity(wanted);
    // The slices still without an account, with how often each has been drawn from.
    let mut pending: Vec<(u64, u32)> = (first_slice..first_slice + count)
        .map(|slice| (slice, 0))
        .collect();
    while !pending.is_empty() {
        let mut candidates = Vec::with_capacity(pending.len());
        for (slice, draws) in pending.drain(..) {
            let id = if draws < MAX_SLICE_DRAWS {
                slices.draw(slice, &mut rng)
            } else {
                random_account_id(&mut rng)
            };
            candidates.push((slice, draws + 1, id));
        }
        let (fresh, drawn_before): (Vec<_>, Vec<_>) = candidates
            .into_iter()
            .partition(|&(_, _, id)| drawn.insert(id));
        pending.extend(drawn_before.iter().map(|&(slice, draws, _)| (slice, draws)));
        let mut taken = HashSet::new();
        for chunk in fresh.chunks(ROWS_PER_STATEMENT) {
            let ids: Vec<i64> = chunk.iter().map(|&(_, _, id)| id).collect();
            taken.extend(
                accounts::table
                    .filter(accounts::id.eq_any(ids))
                    .select(accounts::id)
                    .load::<i64>(conn)?,
            );
        }
        for (slice, draws, id) in fresh {
            if taken.contains(&id) {
                pending.push((slice, draws));
            } else {
                new_accounts.push(Account {
                    id,
                    balance: rng.random_range(0..OPENING_BALANCE_SPACE),
                });
            }
        }
    }
    for chunk in new_accounts.chunks(ROWS_PER_STATEMENT) {
        let insert = diesel::insert_into(accounts::table).values(chunk);
        on_concrete_connection!(&mut *conn, c => insert.execute(c))?;
    }
    let ledger: Vec<LedgerEntry> = new_accounts
        .iter()
        .zip(deposits.first()..)
        .map(|(account, id)| LedgerEntry {
            id,
            source_id: None,
            sink_id: account.id,
            amount: account.balance,
        })
        .collect();
    for chunk in ledger.chunks(ROWS_PER_STATEMENT) {
        let insert = diesel::insert_into(transfers::table).values(chunk);
        on_concrete_connection!(&mut *conn, c => insert.execute(c))?;
    }
    Ok(SeedReport {
        accounts: count,
        money: new_accounts.iter().map(|account| account.balance).sum(),
    })
}

/// The seed probe: the deposits of a seed whose commit outcome was unknown, if they landed.
fn find_deposits(
    conn: &mut DbConnection,
    deposits: LedgerIds,
    count: u64,
) -> Result<Option<SeedReport>, BankError> {
    let last = deposits.first() + i64::try_from(count).unwrap_or(i64::MAX) - 1;
    let (found, money) = transfers::table
        .filter(transfers::id.between(deposits.first(), last))
        .select((
            count_star(),
            sql::<Nullable<BigInt>>("CAST(SUM(amount) AS BIGINT)"),
        ))
        .first::<(i64, Option<i64>)>(conn)?;
    Ok((found > 0).then(|| SeedReport {
        accounts: found as u64,
        money: money.unwrap_or(0),
    }))
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

/// How many accounts the bank has, counted up to `up_to` and no further (a transfer needs two):
/// one read of at most `up_to` ids, however large the table.
pub fn count_accounts_up_to(
    db: &Database,
    policy: &RetryPolicy,
    up_to: u32,
) -> Result<Committed<u32>, TransactionError<BankError>> {
    run_read_only_transaction(db, policy, |conn| {
        let ids: Vec<i64> = accounts::table
            .select(accounts::id)
            .limit(i64::from(up_to))
            .load(conn)?;
        Ok(ids.len() as u32)
    })
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
    run_read_only_transaction(db, policy, |conn| {
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
