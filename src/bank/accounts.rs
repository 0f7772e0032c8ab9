//! The bank's accounts: `pick_random_account` draws one, `balance` sums them all up,
//! `count_accounts_up_to` says whether there are enough to transfer between (`seed` creates
//! them: [`super::seed`](mod@super::seed)).

use super::error::BankError;
use super::ids::ID_SPACE;
use crate::db::{Database, DbConnection};
use crate::models::Account;
use crate::schema::accounts;
use diesel::dsl::{count_star, max, min, sql};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable};
use diesel_retry::{run_read_only_transaction, Committed, RetryPolicy, TransactionError};
use rand::Rng;

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
