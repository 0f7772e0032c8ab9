//! A whole transfer as one SQL statement, for CockroachDB and PostgreSQL: pick two accounts at
//! random in the database, move half of the source's balance to the sink and write the ledger
//! row — one data-modifying `WITH`, one round trip, prepared once per connection.
//!
//! Sent on its own it is an implicit transaction, which CockroachDB retries on the server when
//! it meets a conflict (its own `workload bank` transfers with one `UPDATE … CASE` statement
//! for the same reason); see [`crate::retry::run_single_statement`].

use super::transfer::Transfer;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::BigInt;

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
/// (CockroachDB refuses two modifications of one table in one statement), joined on the
/// primary key to the two changes, which CockroachDB plans as a lookup join into the primary
/// index for so small an input (<https://www.cockroachlabs.com/docs/stable/joins#lookup-joins>)
/// rather than a scan of the table. The ledger row is inserted under the client-chosen id that
/// follows.
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
    SET balance = a.balance + d.delta
    FROM (SELECT source_id AS id, -amount AS delta FROM pair
          UNION ALL
          SELECT sink_id, amount FROM pair) d
    WHERE a.id = d.id
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
/// [`run_single_statement`](crate::retry::run_single_statement) sends it in an explicit
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
