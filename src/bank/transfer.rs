//! One random transfer: half of a random account's balance to another, written to the ledger
//! under a client-chosen id, exactly once — as one statement (the default on CockroachDB and
//! PostgreSQL) or in the tutorial's own shape, an interactive transaction.

use super::accounts::pick_random_account;
use super::error::BankError;
use super::ids::{random_account_id, LedgerIds};
use super::transfer_statement::TransferStatement;
use crate::db::{Database, DbConnection, Flavor};
use crate::models::LedgerEntry;
use crate::retry::{
    run_single_statement_exactly_once, run_transaction_exactly_once, Committed, RetryPolicy,
    TransactionError,
};
use crate::schema::{accounts, transfers};
use diesel::prelude::*;

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
