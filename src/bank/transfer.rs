//! One random transfer: half of a random account's balance to another, written to the ledger
//! under a client-chosen id, exactly once — in the tutorial's own shape, an interactive
//! transaction ([`transfer_funds_randomly`]), or as one statement, the default on CockroachDB
//! and PostgreSQL ([`TransferStatement`]).
//!
//! The one statement picks two accounts at random in the database, moves half of the source's
//! balance to the sink and writes the ledger row — one data-modifying `WITH`, one round trip,
//! prepared once per connection. Sent on its own it is an implicit transaction, which
//! CockroachDB retries on the server when it meets a conflict (its own `workload bank`
//! transfers with one `UPDATE … CASE` statement for the same reason); see
//! [`diesel_retry::run_single_statement`].

use super::accounts::pick_random_account;
use super::error::BankError;
use super::ids::{random_account_id, LedgerIds};
use crate::db::{Database, DbConnection, Flavor};
use crate::models::LedgerEntry;
use crate::schema::{accounts, transfers};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::BigInt;
use diesel_retry::{
    run_single_statement_exactly_once, run_transaction_exactly_once, Committed, RetryPolicy,
    TransactionError,
};

/// How a transfer talks to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferStyle {
    /// The whole transfer — both picks, both balances, the ledger row — as one statement sent
    /// on its own: one round trip, an implicit transaction that CockroachDB retries on the
    /// server. CockroachDB and PostgreSQL only (SQLite has no data-modifying `WITH`).
    OneStatement,
    /// The tutorial's `transfer_funds_randomly`: an interactive transaction that picks the
    /// accounts, reads the source's balance, computes half of it in the client and updates both
    /// accounts, then writes the ledger row ([`transfer_funds_randomly`]).
    Tutorial,
}

impl TransferStyle {
    /// The fastest correct style on `flavor`: one statement on a server, where every
    /// statement is a round trip; the tutorial's transaction on SQLite, which has no round
    /// trips to save and no data-modifying `WITH`.
    pub fn fastest_for(flavor: Flavor) -> Self {
        match flavor {
            Flavor::CockroachDb | Flavor::PostgreSql => TransferStyle::OneStatement,
            Flavor::Sqlite => TransferStyle::Tutorial,
        }
    }

    /// Whether this style can run on `flavor`; if not, why, in one line.
    pub fn supported_on(self, flavor: Flavor) -> Result<(), String> {
        match (self, flavor) {
            (TransferStyle::OneStatement, Flavor::Sqlite) => Err(
                "transfer --style one-statement needs CockroachDB or PostgreSQL; SQLite has no data-modifying WITH (its default is --style tutorial)".into(),
            ),
            _ => Ok(()),
        }
    }
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

/// Makes one random transfer, exactly once, in the fastest style for the database
/// ([`TransferStyle::fastest_for`]); see [`transfer_in_style`].
pub fn transfer(
    db: &Database,
    policy: &RetryPolicy,
) -> Result<Committed<Transfer>, TransactionError<BankError>> {
    transfer_in_style(db, policy, TransferStyle::fastest_for(db.flavor()))
}

/// Makes one random transfer in `style`, exactly once: its ledger id is chosen before the
/// transaction, and a commit whose outcome is unknown is resolved by looking that id up.
/// [`TransferStyle::OneStatement`] on SQLite fails with [`BankError::Unsupported`], writing
/// nothing.
pub fn transfer_in_style(
    db: &Database,
    policy: &RetryPolicy,
    style: TransferStyle,
) -> Result<Committed<Transfer>, TransactionError<BankError>> {
    let ledger_id = LedgerIds::for_transfer();
    let probe = |conn: &mut DbConnection| find_transfer(conn, ledger_id);
    match style {
        TransferStyle::Tutorial => run_transaction_exactly_once(
            db,
            policy,
            |conn| transfer_funds_randomly(conn, ledger_id),
            probe,
        ),
        TransferStyle::OneStatement => run_single_statement_exactly_once(
            db,
            policy,
            |conn| match conn {
                DbConnection::Postgresql(pg) => {
                    let mut rng = rand::rng();
                    let (source_from, sink_from) =
                        (random_account_id(&mut rng), random_account_id(&mut rng));
                    TransferStatement::new(source_from, sink_from, ledger_id.first())
                        .run(pg)?
                        .ok_or(BankError::NotEnoughAccounts)
                }
                DbConnection::Sqlite(_) => Err(BankError::Unsupported(
                    TransferStyle::OneStatement
                        .supported_on(Flavor::Sqlite)
                        .unwrap_err(),
                )),
            },
            probe,
        ),
    }
}

/// The body of a tutorial-style transfer: picks two distinct accounts at random, takes half of the first
/// one's balance and gives it to the second (the tutorial's `transfer_funds_randomly`), and
/// writes the movement to the ledger under `ledger_id`, all in the caller's transaction.
pub fn transfer_funds_randomly(
    conn: &mut DbConnection,
    ledger_id: LedgerIds,
) -> Result<Transfer, BankError> {
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
    // Rows are written in id order, so two transfers between the same accounts in opposite
    // directions queue behind each other instead of deadlocking (PostgreSQL would only notice
    // after `deadlock_timeout`, a second).
    let debit = |conn: &mut DbConnection| {
        diesel::update(accounts::table.find(source.id))
            .set(accounts::balance.eq(source.balance - amount))
            .execute(conn)
    };
    let credit = |conn: &mut DbConnection| {
        diesel::update(accounts::table.find(sink.id))
            .set(accounts::balance.eq(accounts::balance + amount))
            .execute(conn)
    };
    let credited = if source.id < sink.id {
        debit(conn)?;
        credit(conn)?
    } else {
        let credited = credit(conn)?;
        debit(conn)?;
        credited
    };
    if credited != 1 {
        return Err(BankError::MissingAccount(sink.id));
    }
    diesel::insert_into(transfers::table)
        .values(LedgerEntry {
            id: ledger_id.first(),
            source_id: Some(source.id),
            sink_id: sink.id,
            amount,
        })
        .execute(conn)?;
    Ok(Transfer {
        source: source.id,
        sink: sink.id,
        amount,
    })
}

/// The transfer probe: the ledger row of a transfer whose commit outcome was unknown.
fn find_transfer(
    conn: &mut DbConnection,
    ledger_id: LedgerIds,
) -> Result<Option<Transfer>, BankError> {
    let row = transfers::table
        .find(ledger_id.first())
        .select(LedgerEntry::as_select())
        .first(conn)
        .optional()?;
    Ok(row.map(|entry| Transfer {
        source: entry.source_id.unwrap_or_default(),
        sink: entry.sink_id,
        amount: entry.amount,
    }))
}

// The one-statement transfer (`TransferStyle::OneStatement`): its SQL in four pieces, one
// before each bind, then the statement that joins them.

/// The statement up to its first bind: picks the source — the first account at or after a
/// random point, wrapping around to the first account — and reads its balance.
const PICK_SOURCE: &str = "\
WITH source AS (
    (SELECT id, balance FROM accounts WHERE id >= ";
/// Then the sink: the first account at or after a second random point that is not the source,
/// wrapping around likewise. Each branch reads one or two rows through the primary key's index
/// (the second runs only when the first finds nothing), so PostgreSQL's serializable snapshot
/// isolation locks no more than a lookup of a known id would: the index page and those rows.
const PICK_SINK: &str = " ORDER BY id LIMIT 1)
    UNION ALL
    (SELECT id, balance FROM accounts ORDER BY id LIMIT 1)
    LIMIT 1
), sink AS (
    (SELECT a.id FROM accounts a, source s WHERE a.id >= ";
/// Then the pair and the amount — half of the source's balance, rounded down — as one row
/// (none when there is no sink: then nothing is written). One UPDATE writes both balances
/// (CockroachDB refuses two modifications of one table in one statement), the rows found by
/// `id IN (source, sink)` through the primary key, as pgbench's one-statement script and
/// CockroachDB's `workload bank` (`UPDATE … CASE`) do. The two ids come from the join, so
/// PostgreSQL plans the list as `id = source OR id = sink`, a bitmap scan of the primary key
/// (`BitmapOr` of two lookups in `EXPLAIN`), and a bitmap heap scan visits its rows in their
/// physical order, pages sorted (`tbm_iterate` in `tidbitmap.c`): two transfers that see the
/// same two rows lock them in the same order whichever is the source, so two transfers between
/// the same accounts in opposite directions queue rather than deadlock. (Joined to the
/// two changes as a list — source's, then sink's — they locked source first: such a pair
/// deadlocked, and PostgreSQL broke it only after `deadlock_timeout`, a second.) CockroachDB
/// plans it as a lookup join into the primary index for so small an input
/// (<https://www.cockroachlabs.com/docs/stable/joins#lookup-joins>) rather than a scan of the
/// table. The ledger row is inserted under the client-chosen id that follows.
///
/// Half a balance is `balance >> 1`: balances are never negative (the table's CHECK), so the
/// shift is exactly `floor(balance / 2)` on both engines, where `/` is not — CockroachDB's
/// integer `/` returns DECIMAL (`>>` is in its operator table:
/// <https://www.cockroachlabs.com/docs/stable/functions-and-operators#operators>). One text for
/// both keeps the statement CockroachDB runs the one the tests run.
///
/// `moved` is read by the INSERT so that it runs on every engine and version (CockroachDB
/// before 2.1 skipped a data-modifying `WITH` nothing read).
const MOVE: &str = " AND a.id <> s.id ORDER BY a.id LIMIT 1)
    UNION ALL
    (SELECT a.id FROM accounts a, source s WHERE a.id <> s.id ORDER BY a.id LIMIT 1)
    LIMIT 1
), pair AS (
    SELECT s.id AS source_id, k.id AS sink_id, s.balance >> 1 AS amount
    FROM source s, sink k
), moved AS (
    UPDATE accounts a
    SET balance = a.balance + CASE WHEN a.id = p.source_id THEN -p.amount ELSE p.amount END
    FROM pair p
    WHERE a.id IN (p.source_id, p.sink_id)
    RETURNING a.id
)
INSERT INTO transfers (id, source_id, sink_id, amount)
SELECT ";
/// The ledger row's values, and what the statement returns.
const RECORD: &str = ", source_id, sink_id, amount
FROM pair, (SELECT count(*) FROM moved) m
RETURNING source_id, sink_id, amount";

/// One random transfer as a statement. Diesel prepares it once per connection and keeps it in
/// the connection's statement cache, so each transfer is one Bind/Execute.
///
/// The statement is correct at SERIALIZABLE isolation only: the source's balance it reads is the
/// one it writes, or the statement fails with 40001 and is retried. At READ COMMITTED —
/// PostgreSQL's default, and usable on CockroachDB from 24.1 (cockroachdb/docs
/// `releases/v24.1/v24.1.0.md`: `sql.txn.read_committed_isolation.enabled` now on by default) —
/// two transfers could both move half of the same old balance. roachbank's connections set
/// `default_transaction_isolation = serializable` on both engines, and
/// [`run_single_statement`](diesel_retry::run_single_statement) sends it in an explicit
/// SERIALIZABLE transaction on a session whose default is weaker.
#[derive(Debug, Clone, Copy)]
pub struct TransferStatement {
    source_from: i64,
    sink_from: i64,
    ledger_id: i64,
}

impl TransferStatement {
    /// A transfer from the first account at or after `source_from` to the first other one at
    /// or after `sink_from` (each wrapping around), recorded under `ledger_id`.
    pub fn new(source_from: i64, sink_from: i64, ledger_id: i64) -> Self {
        TransferStatement {
            source_from,
            sink_from,
            ledger_id,
        }
    }

    /// Runs it: the transfer made, or `None` when the bank has fewer than two accounts (then
    /// nothing was written).
    pub fn run(self, conn: &mut PgConnection) -> QueryResult<Option<Transfer>> {
        let row: Option<(i64, i64, i64)> = self.get_result(conn).optional()?;
        Ok(row.map(|(source, sink, amount)| Transfer {
            source,
            sink,
            amount,
        }))
    }
}

impl QueryId for TransferStatement {
    // One text whatever the binds: Diesel's statement cache keys it by this type.
    type QueryId = TransferStatement;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for TransferStatement {
    type SqlType = (BigInt, BigInt, BigInt);
}

impl QueryFragment<Pg> for TransferStatement {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(PICK_SOURCE);
        out.push_bind_param::<BigInt, _>(&self.source_from)?;
        out.push_sql(PICK_SINK);
        out.push_bind_param::<BigInt, _>(&self.sink_from)?;
        out.push_sql(MOVE);
        out.push_bind_param::<BigInt, _>(&self.ledger_id)?;
        out.push_sql(RECORD);
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for TransferStatement {}
