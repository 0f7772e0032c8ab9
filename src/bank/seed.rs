//! `seed`: N accounts at once, with random ids spread one per N-th of the id space
//! ([`AccountIdSlices`]) and random balances, each with its opening deposit in the ledger.
//!
//! A seed transaction is streamed in steps of consecutive slices ([`SEED_STEP_ACCOUNTS`]): a
//! step reads the ids already taken in its part of the id space with one range query, draws an
//! id in each slice that avoids them, and writes its accounts and their deposits — binary COPY on
//! PostgreSQL, INSERTs elsewhere ([`LoadMethod`]) — before the next step starts. Memory holds
//! one step whatever N; the money is summed as the steps go.

use super::error::BankError;
use super::ids::{random_account_id, AccountIdSlices, DepositIds};
use super::points::LoadMethod;
use crate::db::binary_copy::write_int8_rows;
use crate::db::cached_insert;
use crate::db::connection::on_concrete_connection;
use crate::db::{Database, DbConnection, Flavor};
use crate::models::{Account, LedgerEntry};
use crate::schema::{accounts, transfers};
use diesel::dsl::{count_star, sql};
use diesel::pg::CopyFormat;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{BigInt, Nullable};
use diesel_retry::{run_transaction_exactly_once, Committed, RetryPolicy, TransactionError};
use rand::Rng;
use std::cell::RefCell;
use std::collections::HashSet;

/// New balances are drawn from `[0, OPENING_BALANCE_SPACE)`, as in the tutorial.
pub const OPENING_BALANCE_SPACE: i64 = 1_000_000;
/// Most accounts one `seed` may create (ids are drawn from a space of 10^9).
pub const MAX_SEED_ACCOUNTS: u64 = 10_000_000;
/// Draws of a seed's account id inside its own slice of the id space before it is drawn from
/// the whole space instead (a slice is at least 100 ids wide).
pub const MAX_SLICE_DRAWS: u32 = 8;

/// Accounts one step of a seed transaction draws and writes: two steps' accounts (16 bytes
/// each), the ids they have drawn and the taken ids a step reads (160,000 at most) are
/// all a seed holds, under 10 MB whatever N (peak RSS 14 MiB at 1,000,000 accounts on
/// PostgreSQL). Each step is two COPY statements on PostgreSQL, whose set-up (a thousand tuple
/// slots each) the server pays per statement: about 3% of its time with 10,000-account steps
/// (perf); 20,000 to 250,000 made no difference measured.
pub const SEED_STEP_ACCOUNTS: u64 = 100_000;

/// Most taken ids a step reads with its range query (1.3 MB): where its part of the id space
/// holds more (a seed into a bank many times its size), the step ends at the last slice those
/// ids cover, or — when even its first slice holds more (a seed of a few accounts into a large
/// bank) — checks the ids it draws with `IN (…)` lookups instead.
const MAX_TAKEN_IDS_PER_STEP: usize = 160_000;

/// Ids per `IN (…)` lookup and rows per INSERT: 8,000 ledger rows × 4 columns stay below
/// SQLite's 32,766 bind parameters (and PostgreSQL's 65,535).
const ROWS_PER_STATEMENT: usize = cached_insert::CACHED_ROWS;

/// The accounts' columns a seed writes, as SQL (for [`cached_insert::insert_all`]; quoted as
/// Diesel quotes identifiers on SQLite).
const ACCOUNTS_COLUMNS: &str = "`accounts` (`id`, `balance`)";
/// The ledger's columns a deposit gives, as SQL (for [`cached_insert::insert_all`]).
const DEPOSITS_COLUMNS: &str = "`transfers` (`id`, `source_id`, `sink_id`, `amount`)";

/// How often a seed transaction that met a unique violation — an id another seed took after
/// this one looked, see [`seed`] — runs again.
pub const MAX_SEED_RERUNS: u32 = 8;

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
/// ledger. Ids already taken (in the table or in this batch) are drawn again, so a collision
/// never fails the command and never shrinks `count`. One transaction on PostgreSQL and SQLite;
/// on CockroachDB one per [`seed_chunk_size`] accounts, committed in turn. Each transaction is
/// exactly once: an unknown commit outcome is resolved by looking its deposits up under their
/// client-chosen ids. Rows are written by [`LoadMethod::fastest_for`] the database, a step of
/// [`SEED_STEP_ACCOUNTS`] at a time. `attempts` in the result counts the attempts of every
/// transaction.
///
/// On PostgreSQL the transaction runs at READ COMMITTED: it only inserts rows under keys it
/// found free, so the primary keys alone keep it correct. At SERIALIZABLE, transfers running
/// meanwhile made PostgreSQL abort the seed as the pivot of a read/write cycle, again and again
/// (a 20,000-account seed took 41 attempts beside two transfer workers), and the conflict
/// tracking cost a million-account seed 7% (4.14 against 3.88 s, best of 12). What SERIALIZABLE
/// did for two seeds that draw the same id at once — a 40001, retried — a unique violation now
/// does: the transaction runs again with fresh draws (which see the other seed's committed ids)
/// and a fresh deposits block, at most [`MAX_SEED_RERUNS`] times.
pub fn seed(
    db: &Database,
    policy: &RetryPolicy,
    count: u64,
) -> Result<Committed<SeedReport>, SeedError> {
    let flavor = db.flavor();
    let chunk = seed_chunk_size(flavor);
    // The deposits' shard turns with every transaction ([`DepositIds`]): on CockroachDB each
    // transaction writes to a part of the key space of its own; elsewhere the seed is one
    // transaction, its ids only grow, and its B-tree grows at the right edge.
    let mut deposits = DepositIds::for_seed(chunk);
    let slices = AccountIdSlices::new(count);
    let mut created = SeedReport {
        accounts: 0,
        money: 0,
    };
    let mut attempts = 0;
    let mut reruns = 0;
    // At least one transaction, so that even `count == 0` has run through the protocol.
    loop {
        let accounts = chunk.min(count - created.accounts);
        let ids = deposits.offset(created.accounts);
        let result = run_transaction_exactly_once(
            db,
            policy,
            |conn| {
                if flavor == Flavor::PostgreSql {
                    // The transaction's first statement, so that it may still change its level.
                    // (The setting's own name for it: the fault tests' proxy takes any statement
                    // holding "COMMIT" in capitals for the commit.)
                    diesel::sql_query("SET transaction_isolation = 'read committed'")
                        .execute(conn)?;
                }
                create_random_accounts_on(conn, flavor, slices, created.accounts, accounts, ids)
            },
            |conn| find_deposits(conn, ids, accounts),
        );
        let committed = match result {
            Err(TransactionError::Failed {
                attempts: failed,
                cause:
                    BankError::Database(DieselError::DatabaseError(
                        DatabaseErrorKind::UniqueViolation,
                        _,
                    )),
            }) if reruns < MAX_SEED_RERUNS => {
                reruns += 1;
                attempts += failed;
                deposits = DepositIds::for_seed(chunk);
                continue;
            }
            other => other.map_err(|cause| SeedError {
                created: created.clone(),
                cause,
            })?,
        };
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

/// The body of [`seed`], as every database takes it (multi-row INSERTs; `seed` itself uses
/// [`create_random_accounts_on`] its database): creates one account in each of the slices
/// `first_slice..first_slice + count` of `slices` — its id drawn at random inside the slice,
/// drawn again while it is taken (after [`MAX_SLICE_DRAWS`] draws anywhere in the id space) —
/// with a random balance, and one deposit each, with ledger id `deposits.id(i)`.
pub fn create_random_accounts(
    conn: &mut DbConnection,
    slices: AccountIdSlices,
    first_slice: u64,
    count: u64,
    deposits: DepositIds,
) -> Result<SeedReport, BankError> {
    let writes = SeedWrites {
        method: LoadMethod::Insert,
        taken: TakenIds::RangeQuery,
    };
    writes.create_random_accounts(conn, slices, first_slice, count, deposits)
}

/// [`create_random_accounts`] the way [`seed`] runs it on `flavor`, a step of
/// [`SEED_STEP_ACCOUNTS`] at a time: on PostgreSQL written by binary COPY; on CockroachDB with
/// each drawn id looked up rather than the step's range of ids read (a range read there would
/// make the transaction restart when a transfer updates an account inside it).
pub fn create_random_accounts_on(
    conn: &mut DbConnection,
    flavor: Flavor,
    slices: AccountIdSlices,
    first_slice: u64,
    count: u64,
    deposits: DepositIds,
) -> Result<SeedReport, BankError> {
    let writes = SeedWrites {
        method: LoadMethod::fastest_for(flavor),
        taken: match flavor {
            Flavor::CockroachDb => TakenIds::LookUps,
            Flavor::PostgreSql | Flavor::Sqlite => TakenIds::RangeQuery,
        },
    };
    writes.create_random_accounts(conn, slices, first_slice, count, deposits)
}

/// How a seed step finds the ids already taken among those it draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TakenIds {
    /// One range query over the step's slices (at most [`MAX_TAKEN_IDS_PER_STEP`] ids), then
    /// look-ups only for draws outside them: one cheap index scan instead of thousands of
    /// probes (a `= ANY` of 10,000 ids took 65–90 ms on PostgreSQL, the range 1 ms).
    RangeQuery,
    /// Every draw looked up with `IN (…)`: reads only the keys drawn. CockroachDB, whose
    /// SERIALIZABLE transaction must "refresh" its reads when its timestamp is pushed and
    /// restarts if anything was written in a span it read since
    /// (cockroachdb/cockroach `pkg/kv/kvclient/kvcoord/txn_interceptor_span_refresher.go`):
    /// a transfer updating an existing account in a step's range would restart the chunk,
    /// while nobody writes the absent keys a look-up reads.
    LookUps,
}

/// How a seed transaction writes its rows and finds the ids already taken.
#[derive(Debug, Clone, Copy)]
struct SeedWrites {
    /// How the rows are written.
    method: LoadMethod,
    /// How taken ids are found.
    taken: TakenIds,
}

impl SeedWrites {
    /// [`create_random_accounts`] with these writes, a step of [`SEED_STEP_ACCOUNTS`] at a time.
    /// Each step's ids are drawn while the step before it is still being written: once its
    /// last rows are sent, while the server works through them.
    fn create_random_accounts(
        self,
        conn: &mut DbConnection,
        slices: AccountIdSlices,
        first_slice: u64,
        count: u64,
        deposits: DepositIds,
    ) -> Result<SeedReport, BankError> {
        let end = first_slice + count;
        let mut created = SeedReport {
            accounts: 0,
            money: 0,
        };
        if count == 0 {
            return Ok(created);
        }
        let rng = RefCell::new(rand::rng());
        let mut step = Step::default();
        step.draw(slices, first_slice, end, &mut rng.borrow_mut());
        let next = RefCell::new(Step::default());
        loop {
            let covered = step.check(conn, self.taken, slices, &mut rng.borrow_mut())?;
            let after = step.first + covered;
            let draw_next = || {
                if after < end {
                    next.borrow_mut()
                        .draw(slices, after, end, &mut rng.borrow_mut());
                }
            };
            step.write(
                conn,
                self.method,
                deposits.offset(step.first - first_slice),
                &draw_next,
            )?;
            created.accounts += covered;
            created.money += step
                .accounts
                .iter()
                .map(|account| account.balance)
                .sum::<i64>();
            if after >= end {
                return Ok(created);
            }
            std::mem::swap(&mut step, &mut next.borrow_mut());
        }
    }
}

/// One step of a seed: its accounts, and the buffers it draws them with (kept from step to
/// step).
#[derive(Default)]
struct Step {
    /// The slice of the first account.
    first: u64,
    /// The step's accounts, in slice order.
    accounts: Vec<Account>,
    /// How many draws each account's id took so far (above [`MAX_SLICE_DRAWS`]: drawn from the
    /// whole id space).
    draws: Vec<u32>,
    /// Ids the range query found taken, ascending.
    taken: Vec<i64>,
    /// Ids drawn in this step, free or not: none is drawn twice.
    drawn: HashSet<i64>,
    /// Draws still to be looked up in the table: (index in `accounts`, draws so far, id).
    unchecked: Vec<(usize, u32, i64)>,
}

impl Step {
    /// Draws, without asking the database, an id and a balance for each of the slices
    /// `first..` up to [`SEED_STEP_ACCOUNTS`] of them, none past `end`, and none past the last
    /// slice (those wrap around to the first: a step stops there, so that its slices are
    /// consecutive in the id space). [`Step::check`] then makes sure the ids are free.
    fn draw(&mut self, slices: AccountIdSlices, first: u64, end: u64, rng: &mut impl Rng) {
        let count = (end - first)
            .min(SEED_STEP_ACCOUNTS)
            .min(slices.count() - first % slices.count());
        self.first = first;
        self.accounts.clear();
        self.draws.clear();
        self.drawn.clear();
        for slice in first..first + count {
            let mut draws = 0;
            let id = loop {
                if draws == MAX_SLICE_DRAWS {
                    // Only where slices overlap (more slices than ids): from anywhere instead.
                    break self.draw_anywhere(&mut draws, rng);
                }
                let candidate = slices.draw(slice, rng);
                draws += 1;
                if self.drawn.insert(candidate) {
                    break candidate;
                }
            };
            self.accounts.push(Account {
                id,
                balance: rng.random_range(0..OPENING_BALANCE_SPACE),
            });
            self.draws.push(draws);
        }
    }

    /// Makes every drawn id free: reads the ids already taken in the step's slices with one
    /// range query (or, for [`TakenIds::LookUps`], looks each one up) and draws again for those
    /// taken. Where the step's slices hold more taken ids than [`MAX_TAKEN_IDS_PER_STEP`], the
    /// step ends with the last slice those cover (its later accounts are dropped), or, when
    /// even its first slice holds more, each draw is looked up. Returns the slices it covers.
    fn check(
        &mut self,
        conn: &mut DbConnection,
        taken: TakenIds,
        slices: AccountIdSlices,
        rng: &mut impl Rng,
    ) -> Result<u64, DieselError> {
        let first = self.first;
        let mut count = self.accounts.len() as u64;
        self.taken.clear();
        self.unchecked.clear();
        // Whether `taken` holds every taken id of the step's slices; if not, each draw is
        // looked up.
        let mut complete = taken == TakenIds::RangeQuery;
        if complete {
            let low = slices.slice(first).start;
            let high = slices.slice(first + count - 1).end;
            self.taken = accounts::table
                .filter(accounts::id.ge(low))
                .filter(accounts::id.lt(high))
                .order(accounts::id)
                .select(accounts::id)
                .limit(MAX_TAKEN_IDS_PER_STEP as i64 + 1)
                .load(conn)?;
        }
        if let Some(&last) = self.taken.get(MAX_TAKEN_IDS_PER_STEP) {
            // Every taken id up to `last` is known: the step ends with the last slice that
            // ends there, if there is one.
            let closed = (0..count)
                .take_while(|&i| slices.slice(first + i).end <= last + 1)
                .count() as u64;
            if closed > 0 {
                count = closed;
                self.accounts.truncate(closed as usize);
                self.draws.truncate(closed as usize);
            } else {
                complete = false;
                self.taken = Vec::new();
            }
        }
        for index in 0..self.accounts.len() {
            let (id, mut draws) = (self.accounts[index].id, self.draws[index]);
            if draws > MAX_SLICE_DRAWS || !complete {
                self.unchecked.push((index, draws, id));
                continue;
            }
            if self.taken.binary_search(&id).is_err() {
                continue;
            }
            // Taken: again inside the slice, checked against the same ids.
            let mut free = None;
            while draws < MAX_SLICE_DRAWS && free.is_none() {
                let candidate = slices.draw(first + index as u64, rng);
                draws += 1;
                if self.drawn.insert(candidate) && self.taken.binary_search(&candidate).is_err() {
                    free = Some(candidate);
                }
            }
            self.accounts[index].id = match free {
                Some(id) => id,
                None => {
                    let id = self.draw_anywhere(&mut draws, rng);
                    self.unchecked.push((index, draws, id));
                    id
                }
            };
        }
        self.look_up_unchecked(conn, slices, rng)?;
        Ok(count)
    }

    /// A draw from the whole id space, not drawn before in this step (`draws` counts it).
    fn draw_anywhere(&mut self, draws: &mut u32, rng: &mut impl Rng) -> i64 {
        loop {
            let candidate = random_account_id(rng);
            *draws = (*draws).max(MAX_SLICE_DRAWS) + 1;
            if self.drawn.insert(candidate) {
                return candidate;
            }
        }
    }

    /// Looks the unchecked draws up in the table and draws again for those taken (in their
    /// slice until [`MAX_SLICE_DRAWS`], then anywhere), until every account has a free id.
    fn look_up_unchecked(
        &mut self,
        conn: &mut DbConnection,
        slices: AccountIdSlices,
        rng: &mut impl Rng,
    ) -> Result<(), DieselError> {
        while !self.unchecked.is_empty() {
            let mut taken = HashSet::new();
            for chunk in self.unchecked.chunks(ROWS_PER_STATEMENT) {
                let ids: Vec<i64> = chunk.iter().map(|&(_, _, id)| id).collect();
                taken.extend(
                    accounts::table
                        .filter(accounts::id.eq_any(ids))
                        .select(accounts::id)
                        .load::<i64>(conn)?,
                );
            }
            for (index, mut draws, id) in std::mem::take(&mut self.unchecked) {
                if !taken.contains(&id) {
                    continue;
                }
                let mut redrawn = None;
                while draws < MAX_SLICE_DRAWS && redrawn.is_none() {
                    let candidate = slices.draw(self.first + index as u64, rng);
                    draws += 1;
                    if self.drawn.insert(candidate) {
                        redrawn = Some(candidate);
                    }
                }
                let id = match redrawn {
                    Some(id) => id,
                    None => self.draw_anywhere(&mut draws, rng),
                };
                self.unchecked.push((index, draws, id));
                self.accounts[index].id = id;
            }
        }
        Ok(())
    }

    /// Writes the step's accounts and their deposits (ledger ids `deposits.id(0)` on)
    /// by `method`, calling `then` once every row is sent (on PostgreSQL while the server is
    /// still working through them).
    fn write(
        &self,
        conn: &mut DbConnection,
        method: LoadMethod,
        deposits: DepositIds,
        then: &dyn Fn(),
    ) -> Result<(), DieselError> {
        let deposit = |(i, account): (usize, &Account)| LedgerEntry {
            id: deposits.id(i as u64),
            source_id: None,
            sink_id: account.id,
            amount: account.balance,
        };
        // The columns as BIGINTs, for binary COPY and SQLite's cached INSERTs.
        let account_rows = || {
            self.accounts
                .iter()
                .map(|account| [Some(account.id), Some(account.balance)])
        };
        let deposit_rows = || {
            self.accounts.iter().enumerate().map(deposit).map(|entry| {
                [
                    Some(entry.id),
                    entry.source_id,
                    Some(entry.sink_id),
                    Some(entry.amount),
                ]
            })
        };
        match (method, &mut *conn) {
            (LoadMethod::Copy, DbConnection::Postgresql(pg)) => {
                diesel::copy_from(accounts::table)
                    .from_raw_data((accounts::id, accounts::balance), |out| {
                        write_int8_rows(out, account_rows())
                    })
                    .with_format(CopyFormat::Binary)
                    .execute(pg)?;
                diesel::copy_from(transfers::table)
                    .from_raw_data(
                        (
                            transfers::id,
                            transfers::source_id,
                            transfers::sink_id,
                            transfers::amount,
                        ),
                        |out| {
                            write_int8_rows(out, deposit_rows())?;
                            then();
                            Ok::<_, DieselError>(())
                        },
                    )
                    .with_format(CopyFormat::Binary)
                    .execute(pg)?;
            }
            (LoadMethod::Copy, DbConnection::Sqlite(_)) => {
                return Err(DieselError::QueryBuilderError(
                    "COPY needs PostgreSQL; use the INSERT method on SQLite".into(),
                ))
            }
            (LoadMethod::Insert, DbConnection::Sqlite(sqlite)) => {
                // Statements prepared once per connection (see `crate::db::cached_insert`).
                cached_insert::insert_all(sqlite, ACCOUNTS_COLUMNS, account_rows())?;
                cached_insert::insert_all(sqlite, DEPOSITS_COLUMNS, deposit_rows())?;
                then();
            }
            (LoadMethod::Insert, _) => {
                for rows in self.accounts.chunks(ROWS_PER_STATEMENT) {
                    let insert = diesel::insert_into(accounts::table).values(rows);
                    on_concrete_connection!(&mut *conn, c => insert.execute(c))?;
                }
                let mut entries = Vec::with_capacity(ROWS_PER_STATEMENT);
                for (chunk, rows) in self.accounts.chunks(ROWS_PER_STATEMENT).enumerate() {
                    entries.clear();
                    entries.extend(
                        rows.iter()
                            .enumerate()
                            .map(|(i, account)| deposit((chunk * ROWS_PER_STATEMENT + i, account))),
                    );
                    let insert = diesel::insert_into(transfers::table).values(&entries);
                    on_concrete_connection!(&mut *conn, c => insert.execute(c))?;
                }
                then();
            }
        }
        Ok(())
    }
}

/// The seed probe: the deposits of a seed transaction whose commit outcome was unknown, if
/// they landed — counted in `deposits.ranges(count)`: one range, a transaction's deposits
/// being one block of ids, one shard.
fn find_deposits(
    conn: &mut DbConnection,
    deposits: DepositIds,
    count: u64,
) -> Result<Option<SeedReport>, BankError> {
    let mut found = SeedReport {
        accounts: 0,
        money: 0,
    };
    for range in deposits.ranges(count) {
        let (rows, money) = transfers::table
            .filter(transfers::id.between(*range.start(), *range.end()))
            .select((
                count_star(),
                sql::<Nullable<BigInt>>("CAST(SUM(amount) AS BIGINT)"),
            ))
            .first::<(i64, Option<i64>)>(conn)?;
        found.accounts += rows as u64;
        found.money += money.unwrap_or(0);
    }
    Ok((found.accounts > 0).then_some(found))
}
