//! `roachbank seed`: create the accounts, in one transaction.

use super::output::{plural, say};
use anyhow::{Context, Result};
use diesel_retry::RetryPolicy;
use roachbank::bank;
use roachbank::db::Database;
use roachbank::workload::stats::grouped;

/// Creates `accounts` accounts and says how many, holding how much, in how many attempts.
pub fn run(db: &Database, policy: &RetryPolicy, accounts: u64) -> Result<()> {
    let committed = bank::seed(db, policy, accounts).context("seed failed")?;
    say!(
        "seeded {} account{} holding {} in total ({} attempt{})",
        grouped(committed.value.accounts),
        plural(committed.value.accounts),
        committed.value.money,
        committed.attempts,
        plural(u64::from(committed.attempts)),
    )?;
    Ok(())
}
