//! `roachbank balance`: the number of accounts, the total balance, the smallest and largest.

use super::output::{count, say};
use anyhow::{Context, Result};
use diesel_retry::RetryPolicy;
use roachbank::bank;
use roachbank::db::Database;

/// Sums the bank up, one figure a line.
pub fn run(db: &Database, policy: &RetryPolicy) -> Result<()> {
    let summary = bank::balance(db, policy).context("balance failed")?.value;
    let or_dash = |value: Option<i64>| value.map_or_else(|| "-".to_string(), |v| v.to_string());
    say!("accounts: {}", count(summary.accounts))?;
    say!("total balance: {}", summary.total)?;
    say!("min balance: {}", or_dash(summary.min))?;
    say!("max balance: {}", or_dash(summary.max))?;
    Ok(())
}
