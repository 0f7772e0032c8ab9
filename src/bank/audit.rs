//! `roachbank check`: proves from the ledger that no money was created or lost. Set-based SQL,
//! run in one transaction so that every figure comes from the same snapshot.

use crate::db::{Database, DbConnection};
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_retry::{run_read_only_transaction, Committed, RetryPolicy, TransactionError};

/// Accounts listed in a report at most.
pub const MAX_LISTED_ACCOUNTS: i64 = 20;

/// The whole-bank figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct AuditTotals {
    /// Number of accounts.
    #[diesel(sql_type = BigInt)]
    pub accounts: i64,
    /// Number of ledger rows (deposits and transfers).
    #[diesel(sql_type = BigInt)]
    pub ledger_rows: i64,
    /// Sum of all balances.
    #[diesel(sql_type = BigInt)]
    pub total_balance: i64,
    /// Sum of all deposits (money that entered the bank).
    #[diesel(sql_type = BigInt)]
    pub total_deposits: i64,
    /// Accounts with a negative balance.
    #[diesel(sql_type = BigInt)]
    pub negative_balances: i64,
    /// References from ledger rows to accounts that do not exist (a row naming two missing
    /// accounts counts twice).
    #[diesel(sql_type = BigInt)]
    pub orphan_rows: i64,
}

/// An account whose balance differs from what its ledger says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct Discrepancy {
    /// The account.
    #[diesel(sql_type = BigInt)]
    pub account_id: i64,
    /// Its balance.
    #[diesel(sql_type = BigInt)]
    pub balance: i64,
    /// Deposits + incoming − outgoing, from the ledger.
    #[diesel(sql_type = BigInt)]
    pub expected: i64,
    /// How many accounts differ in all (the same on every row).
    #[diesel(sql_type = BigInt)]
    pub mismatches: i64,
}

/// What the audit found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// Whole-bank figures.
    pub totals: AuditTotals,
    /// How many accounts' balances differ from their ledger.
    pub mismatched_accounts: i64,
    /// The first [`MAX_LISTED_ACCOUNTS`] of them, by id.
    pub listed: Vec<Discrepancy>,
}

impl AuditReport {
    /// True when every check holds.
    pub fn is_consistent(&self) -> bool {
        self.mismatched_accounts == 0
            && self.totals.negative_balances == 0
            && self.totals.orphan_rows == 0
            && self.totals.total_balance == self.totals.total_deposits
    }
}

const TOTALS_SQL: &str = "
SELECT
    (SELECT COUNT(*) FROM accounts) AS accounts,
    (SELECT COUNT(*) FROM transfers) AS ledger_rows,
    (SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM accounts) AS total_balance,
    (SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM transfers WHERE source_id IS NULL)
        AS total_deposits,
    (SELECT COUNT(*) FROM accounts WHERE balance < 0) AS negative_balances,
    -- Two anti-joins rather than one NOT EXISTS … OR NOT EXISTS, which PostgreSQL plans as a
    -- costly per-row filter. A row naming two missing accounts counts twice.
    (SELECT COUNT(*) FROM transfers t
        WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = t.sink_id))
    + (SELECT COUNT(*) FROM transfers t
        WHERE t.source_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = t.source_id))
        AS orphan_rows";

const DISCREPANCIES_SQL: &str = "
WITH flows AS (
    SELECT sink_id AS account_id, amount AS delta FROM transfers
    UNION ALL
    SELECT source_id AS account_id, -amount AS delta FROM transfers WHERE source_id IS NOT NULL
), expected AS (
    SELECT account_id, SUM(delta) AS balance FROM flows GROUP BY account_id
)
SELECT a.id AS account_id,
       a.balance AS balance,
       CAST(COALESCE(e.balance, 0) AS BIGINT) AS expected,
       COUNT(*) OVER () AS mismatches
FROM accounts a LEFT JOIN expected e ON e.account_id = a.id
WHERE a.balance <> COALESCE(e.balance, 0)
ORDER BY a.id
LIMIT $LIMIT";

/// Audits the bank: every balance equals its deposits + incoming − outgoing; no balance is
/// negative; the total balance equals the total deposited; no ledger row names a missing
/// account.
pub fn audit(
    db: &Database,
    policy: &RetryPolicy,
) -> Result<Committed<AuditReport>, TransactionError<diesel::result::Error>> {
    run_read_only_transaction(db, policy, audit_in_transaction)
}

/// The body of [`audit`], for a caller's transaction.
pub fn audit_in_transaction(conn: &mut DbConnection) -> QueryResult<AuditReport> {
    let totals: AuditTotals = diesel::sql_query(TOTALS_SQL).get_result(conn)?;
    let listed: Vec<Discrepancy> =
        diesel::sql_query(DISCREPANCIES_SQL.replace("$LIMIT", &MAX_LISTED_ACCOUNTS.to_string()))
            .load(conn)?;
    Ok(AuditReport {
        totals,
        mismatched_accounts: listed.first().map_or(0, |row| row.mismatches),
        listed,
    })
}
