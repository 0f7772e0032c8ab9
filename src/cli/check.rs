//! `roachbank check` (and `transfer --check`): the ledger audit, one line of totals and a line
//! per account the ledger disagrees with; an inconsistent bank is a failure (exit 1).

use super::error::StdoutError;
use super::output::{count, plural, say};
use anyhow::{Context, Result};
use diesel_retry::RetryPolicy;
use roachbank::bank::audit::{self, AuditReport};
use roachbank::db::Database;
use std::time::{Duration, Instant};

/// Audits the bank against its ledger and says what it found.
pub fn run(db: &Database, policy: &RetryPolicy) -> Result<()> {
    let started = Instant::now();
    let report = audit::audit(db, policy).context("check failed")?.value;
    let printed = print(&report, started.elapsed());
    // An inconsistent bank outranks unprinted output.
    if report.is_consistent() {
        Ok(printed?)
    } else {
        anyhow::bail!("the audit found inconsistencies (see above)")
    }
}

/// The audit's line of totals, then the accounts it lists; of a bank that has nothing in it, one
/// line saying so (it is consistent, but "OK" would suggest there was something to check).
fn print(report: &AuditReport, elapsed: Duration) -> Result<(), StdoutError> {
    let totals = &report.totals;
    if report.is_consistent() && totals.accounts == 0 && totals.ledger_rows == 0 {
        return say!(
            "check: the bank is empty — no accounts, no ledger rows; run `roachbank seed` to \
             create some ({:.2} s)",
            elapsed.as_secs_f64(),
        );
    }
    say!(
        "check: {} — {} account{}, {} ledger row{}, total balance {} vs deposits {}, \
         {} account{} off the ledger, {} negative balance{}, {} orphan ledger row{} ({:.2} s)",
        if report.is_consistent() {
            "OK"
        } else {
            "FAILED"
        },
        count(totals.accounts),
        plural(totals.accounts as u64),
        count(totals.ledger_rows),
        plural(totals.ledger_rows as u64),
        totals.total_balance,
        totals.total_deposits,
        count(report.mismatched_accounts),
        plural(report.mismatched_accounts as u64),
        count(totals.negative_balances),
        plural(totals.negative_balances as u64),
        count(totals.orphan_rows),
        plural(totals.orphan_rows as u64),
        elapsed.as_secs_f64(),
    )?;
    for row in &report.listed {
        say!(
            "  account {}: balance {}, ledger says {} (off by {})",
            row.account_id,
            row.balance,
            row.expected,
            row.balance - row.expected
        )?;
    }
    Ok(())
}
