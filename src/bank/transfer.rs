//! One random transfer: half of a random account's balance to another, written to the ledger
//! under a client-chosen id, exactly once.

use super::accounts::pick_random_account;
use super::error::BankError;
use super::ids::LedgerIds;
use crate::db::{Database, DbConnection};
use crate::models::LedgerEntry;
use crate::retry::{run_transaction_exactly_once, Committed, RetryPolicy, TransactionError};
use crate::schema::{accounts, transfers};
use diesel::prelude::*;

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

/// Makes one random transfer, exactly once: its ledger id is chosen before the transaction,
/// and a commit whose outcome is unknown is resolved by looking that id up.
pub fn transfer(
    db: &Database,
    policy: &RetryPolicy,
) -> Result<Committed<Transfer>, TransactionError<BankError>> {
    let ledger_id = LedgerIds::for_transfer();
    run_transaction_exactly_once(
        db,
        policy,
        |conn| transfer_funds_randomly(conn, ledger_id),
        |conn| find_transfer(conn, ledger_id),
    )
}

/// The body of a transfer: picks two distinct accounts at random, takes half of the first
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
