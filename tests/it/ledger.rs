//! The `transfers` ledger and the audit built on it, against real databases (a SQLite file and
//! the harness's PostgreSQL): `seed` writes one deposit per new account, every transfer writes
//! its ledger row, the backfill migration gives pre-ledger accounts an opening deposit, and
//! `audit` (CLI: `check`) holds on honest data and catches each kind of tampering.
//!
//! Ledger rows and figures are read by SQL outside the library (psql on PostgreSQL, a plain
//! diesel `SqliteConnection` on SQLite); tampering is done the same way, behind the library's
//! back. Most checks run on both backends through `on_sqlite_and_postgresql!`.

use crate::support::target::Target;
use crate::support::{not_run_on_cockroachdb, server};
use diesel::prelude::*;
use diesel_retry::RetryPolicy;
use roachbank::bank;
use roachbank::bank::audit::{self, AuditReport, Discrepancy, MAX_LISTED_ACCOUNTS};
use roachbank::db::Database;
use roachbank::models::LedgerEntry;
use roachbank::workload::{TransferOutcome, TransferRun};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Instant;

on_sqlite_and_postgresql!(
    seed_writes_exactly_one_deposit_per_new_account_equal_to_its_balance,
    transfers_write_one_ledger_row_each_and_the_ledger_replays_to_every_balance,
    audit_is_consistent_after_seed_and_transfers_with_totals_matching_sql,
    audit_of_an_empty_bank_is_consistent_with_zero_totals,
    audit_flags_a_balance_changed_behind_the_ledgers_back_and_lists_that_account,
    audit_flags_an_account_with_a_balance_but_no_ledger_rows,
    audit_counts_a_ledger_row_naming_a_missing_account_as_an_orphan,
    audit_counts_a_negative_balance_even_when_the_ledger_agrees_with_it,
    audit_counts_all_25_mismatched_accounts_but_lists_only_the_first_20_by_id,
    backfill_migration_gives_each_pre_ledger_account_one_opening_deposit,
    cli_check_exits_0_when_consistent_and_1_listing_the_tampered_account,
);

/// Base of the ids this file gives rows it inserts by hand (far from the seed blocks, which
/// start at 2^32, and below the transfer ids, which start at 2^62).
const HAND_ID: i64 = 1_000;

/// An account id no seed can draw (seed ids lie in [0, 10^9)).
const MISSING_ACCOUNT: i64 = 999_999_999_999;

fn policy() -> RetryPolicy {
    RetryPolicy::default()
}

/// Seeds `n` accounts through the library.
fn seed(db: &Database, n: u64) {
    let committed = bank::seed(db, &policy(), n).expect("seed");
    assert_eq!(committed.value.accounts, n, "seed report's account count");
}

/// Runs `count` transfers on `workers` workers; returns what each committed transfer reported.
fn transfers(db: &Database, count: u64, workers: u32) -> Vec<TransferOutcome> {
    let outcomes = Mutex::new(Vec::new());
    let report = TransferRun::new(count, workers).run(db, &policy(), &|outcome| {
        outcomes.lock().unwrap().push(outcome.clone())
    });
    if let Some(error) = &report.error {
        panic!("transfer run failed: {error} ({error:?})");
    }
    assert_eq!(report.summary.done, count, "transfers done");
    outcomes.into_inner().unwrap()
}

/// Runs the library's audit.
fn run_audit(db: &Database) -> AuditReport {
    audit::audit(db, &policy())
        .unwrap_or_else(|err| panic!("audit failed: {err} ({err:?})"))
        .value
}

/// Every ledger row, ordered by id, read outside the library.
fn ledger(target: &Target) -> Vec<LedgerEntry> {
    match target {
        Target::Postgresql(db) => db
            .psql("SELECT id, source_id, sink_id, amount FROM transfers ORDER BY id")
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split('|').collect();
                assert_eq!(fields.len(), 4, "psql row {line:?}");
                LedgerEntry {
                    id: fields[0].parse().unwrap(),
                    // psql -A prints NULL as an empty field.
                    source_id: (!fields[1].is_empty()).then(|| fields[1].parse().unwrap()),
                    sink_id: fields[2].parse().unwrap(),
                    amount: fields[3].parse().unwrap(),
                }
            })
            .collect(),
        Target::Sqlite(file) => {
            use roachbank::schema::transfers;
            transfers::table
                .select(LedgerEntry::as_select())
                .order(transfers::id)
                .load(&mut sqlite_connection(&file.path))
                .expect("load the ledger")
        }
    }
}

/// A direct connection to a SQLite file, waiting up to 10 s for locks.
fn sqlite_connection(path: &Path) -> SqliteConnection {
    let mut conn = SqliteConnection::establish(path.to_str().expect("UTF-8 temp path"))
        .expect("open the SQLite file directly");
    diesel::sql_query("PRAGMA busy_timeout = 10000")
        .execute(&mut conn)
        .expect("set busy_timeout");
    conn
}

/// The balances the ledger says every account must have: deposits + incoming − outgoing.
fn replay(ledger: &[LedgerEntry]) -> BTreeMap<i64, i64> {
    let mut balances = BTreeMap::new();
    for row in ledger {
        if let Some(source) = row.source_id {
            *balances.entry(source).or_insert(0) -= row.amount;
        }
        *balances.entry(row.sink_id).or_insert(0) += row.amount;
    }
    balances
}

/// The deposit rows (no source).
fn deposits(ledger: &[LedgerEntry]) -> Vec<LedgerEntry> {
    ledger
        .iter()
        .filter(|row| row.source_id.is_none())
        .copied()
        .collect()
}

/// The account ids, ascending.
fn account_ids(target: &Target) -> Vec<i64> {
    target.accounts().into_keys().collect()
}

// ---------------------------------------------------------------------------------------------
// 1. seed
// ---------------------------------------------------------------------------------------------

/// Checks that the ledger rows added since `before_ledger` are exactly one deposit for each
/// account added since `before_accounts`, of that account's balance, under fresh positive ids.
fn assert_one_deposit_per_new_account(
    target: &Target,
    before_accounts: &BTreeMap<i64, i64>,
    before_ledger: &[LedgerEntry],
    new: usize,
) {
    let accounts = target.accounts();
    let new_accounts: BTreeMap<i64, i64> = accounts
        .iter()
        .filter(|(id, _)| !before_accounts.contains_key(id))
        .map(|(&id, &balance)| (id, balance))
        .collect();
    assert_eq!(new_accounts.len(), new, "new accounts");
    let old_ids: BTreeSet<i64> = before_ledger.iter().map(|row| row.id).collect();
    let added: Vec<LedgerEntry> = ledger(target)
        .into_iter()
        .filter(|row| !old_ids.contains(&row.id))
        .collect();
    assert_eq!(added.len(), new, "one new ledger row per new account");
    assert!(
        added.iter().all(|row| row.source_id.is_none()),
        "seed writes deposits only (source_id NULL): {added:?}"
    );
    let ids: BTreeSet<i64> = added.iter().map(|row| row.id).collect();
    assert_eq!(ids.len(), new, "deposit ids are distinct");
    assert!(
        added.iter().all(|row| row.id > 0),
        "deposit ids are positive: {:?}",
        added.iter().map(|row| row.id).min()
    );
    let deposited: BTreeMap<i64, i64> = added.iter().map(|row| (row.sink_id, row.amount)).collect();
    assert_eq!(
        deposited.len(),
        new,
        "no account gets two deposits from one seed"
    );
    assert_eq!(
        deposited, new_accounts,
        "deposit sinks = the new accounts, amounts = their balances"
    );
}

fn seed_writes_exactly_one_deposit_per_new_account_equal_to_its_balance(target: Target) {
    let db = target.open(1);
    seed(&db, 300);
    assert_one_deposit_per_new_account(&target, &BTreeMap::new(), &[], 300);

    // A second seed adds deposits for its own accounts only.
    let before_accounts = target.accounts();
    let before_ledger = ledger(&target);
    seed(&db, 200);
    assert_one_deposit_per_new_account(&target, &before_accounts, &before_ledger, 200);
    assert_eq!(target.count("SELECT COUNT(*) FROM transfers"), 500);
}

// ---------------------------------------------------------------------------------------------
// 2. transfers
// ---------------------------------------------------------------------------------------------

fn transfers_write_one_ledger_row_each_and_the_ledger_replays_to_every_balance(target: Target) {
    const ACCOUNTS: u64 = 30;
    const TRANSFERS: u64 = 80;
    let db = target.open(2);
    seed(&db, ACCOUNTS);
    let outcomes = transfers(&db, TRANSFERS, 2);

    let rows = ledger(&target);
    let moves: Vec<LedgerEntry> = rows
        .iter()
        .filter(|row| row.source_id.is_some())
        .copied()
        .collect();
    assert_eq!(moves.len() as u64, TRANSFERS, "one ledger row per transfer");
    assert_eq!(
        deposits(&rows).len() as u64,
        ACCOUNTS,
        "transfers write no deposits"
    );
    assert!(
        moves.iter().all(|row| row.id >= 1 << 62),
        "transfer ids lie in [2^62, 2^63): {moves:?}"
    );
    assert!(
        moves.iter().all(|row| row.source_id != Some(row.sink_id)),
        "no transfer pays its own source: {moves:?}"
    );

    // The ledger's transfer rows are exactly the transfers the run reported committed.
    let mut in_ledger: Vec<(i64, i64, i64)> = moves
        .iter()
        .map(|row| (row.source_id.unwrap(), row.sink_id, row.amount))
        .collect();
    let mut reported: Vec<(i64, i64, i64)> = outcomes
        .iter()
        .map(|o| (o.transfer.source, o.transfer.sink, o.transfer.amount))
        .collect();
    in_ledger.sort_unstable();
    reported.sort_unstable();
    assert_eq!(
        in_ledger, reported,
        "ledger transfer rows vs reported transfers"
    );

    // Replaying deposits and transfers gives every balance exactly.
    let balances = target.accounts();
    assert_eq!(balances.len() as u64, ACCOUNTS);
    assert_eq!(
        replay(&rows),
        balances,
        "balances replayed from the ledger vs the accounts table"
    );
    assert!(
        moves.iter().any(|row| row.amount > 0),
        "the run moved some money (otherwise the replay proves little)"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. audit on honest data
// ---------------------------------------------------------------------------------------------

/// The totals of `report` equal the same figures computed by SQL outside the library.
fn assert_totals_match_sql(target: &Target, report: &AuditReport) {
    let totals = &report.totals;
    assert_eq!(
        totals.accounts,
        target.count("SELECT COUNT(*) FROM accounts")
    );
    assert_eq!(
        totals.ledger_rows,
        target.count("SELECT COUNT(*) FROM transfers")
    );
    assert_eq!(
        totals.total_balance,
        target.int("SELECT SUM(balance) FROM accounts").unwrap_or(0)
    );
    assert_eq!(
        totals.total_deposits,
        target
            .int("SELECT SUM(amount) FROM transfers WHERE source_id IS NULL")
            .unwrap_or(0)
    );
}

fn audit_is_consistent_after_seed_and_transfers_with_totals_matching_sql(target: Target) {
    let db = target.open(2);
    seed(&db, 100);
    transfers(&db, 60, 2);
    seed(&db, 20);
    transfers(&db, 20, 1);
    let report = run_audit(&db);
    assert!(report.is_consistent(), "{report:#?}");
    assert_eq!(report.mismatched_accounts, 0);
    assert!(report.listed.is_empty(), "{report:#?}");
    assert_eq!(report.totals.negative_balances, 0);
    assert_eq!(report.totals.orphan_rows, 0);
    assert_eq!(report.totals.accounts, 120);
    assert_eq!(report.totals.ledger_rows, 120 + 80);
    assert_eq!(report.totals.total_balance, report.totals.total_deposits);
    assert_totals_match_sql(&target, &report);
}

fn audit_of_an_empty_bank_is_consistent_with_zero_totals(target: Target) {
    let db = target.open(1);
    let report = run_audit(&db);
    assert!(report.is_consistent(), "{report:#?}");
    assert_eq!(
        report.totals,
        audit::AuditTotals {
            accounts: 0,
            ledger_rows: 0,
            total_balance: 0,
            total_deposits: 0,
            negative_balances: 0,
            orphan_rows: 0,
        }
    );
    assert_eq!(report.mismatched_accounts, 0);
    assert!(report.listed.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 4. audit on tampered data
// ---------------------------------------------------------------------------------------------

/// A seeded bank with a few transfers made, whose audit is consistent before tampering.
fn honest_bank(target: &Target, accounts: u64) -> Database {
    let db = target.open(1);
    seed(&db, accounts);
    transfers(&db, 10, 1);
    let report = run_audit(&db);
    assert!(report.is_consistent(), "before tampering: {report:#?}");
    db
}

fn audit_flags_a_balance_changed_behind_the_ledgers_back_and_lists_that_account(target: Target) {
    let db = honest_bank(&target, 20);
    let accounts = target.accounts();
    let (&x, &before) = accounts.iter().nth(7).unwrap();
    target.execute(&format!(
        "UPDATE accounts SET balance = balance + 7 WHERE id = {x}"
    ));

    let report = run_audit(&db);
    assert!(!report.is_consistent(), "{report:#?}");
    assert_eq!(report.mismatched_accounts, 1, "{report:#?}");
    assert_eq!(
        report.listed,
        vec![Discrepancy {
            account_id: x,
            balance: before + 7,
            expected: before,
            mismatches: 1,
        }]
    );
    assert_eq!(
        report.totals.total_balance,
        report.totals.total_deposits + 7,
        "total balance vs total deposits"
    );
    assert_eq!(report.totals.negative_balances, 0);
    assert_eq!(report.totals.orphan_rows, 0);
    assert_totals_match_sql(&target, &report);
}

fn audit_flags_an_account_with_a_balance_but_no_ledger_rows(target: Target) {
    let db = honest_bank(&target, 10);
    target.execute(&format!(
        "INSERT INTO accounts (id, balance) VALUES ({MISSING_ACCOUNT}, 5)"
    ));
    let report = run_audit(&db);
    assert!(!report.is_consistent(), "{report:#?}");
    assert_eq!(report.mismatched_accounts, 1, "{report:#?}");
    assert_eq!(
        report.listed,
        vec![Discrepancy {
            account_id: MISSING_ACCOUNT,
            balance: 5,
            expected: 0,
            mismatches: 1,
        }]
    );
    assert_eq!(
        report.totals.total_balance,
        report.totals.total_deposits + 5
    );
}

fn audit_counts_a_ledger_row_naming_a_missing_account_as_an_orphan(target: Target) {
    let db = honest_bank(&target, 10);
    let x = account_ids(&target)[3];
    // Amount 0 from/to a real account: no balance and no total is off, so only the orphan
    // check can notice these rows.
    for (label, row) in [
        ("missing sink", format!("{x}, {MISSING_ACCOUNT}")),
        ("missing source", format!("{MISSING_ACCOUNT}, {x}")),
    ] {
        target.execute(&format!(
            "INSERT INTO transfers (id, source_id, sink_id, amount) VALUES ({HAND_ID}, {row}, 0)"
        ));
        let report = run_audit(&db);
        assert_eq!(report.totals.orphan_rows, 1, "{label}: {report:#?}");
        assert!(!report.is_consistent(), "{label}: {report:#?}");
        assert_eq!(report.mismatched_accounts, 0, "{label}: {report:#?}");
        assert_eq!(report.totals.negative_balances, 0, "{label}");
        assert_eq!(
            report.totals.total_balance, report.totals.total_deposits,
            "{label}"
        );
        target.execute(&format!("DELETE FROM transfers WHERE id = {HAND_ID}"));
        assert!(run_audit(&db).is_consistent(), "{label}: after removing it");
    }
}

fn audit_counts_a_negative_balance_even_when_the_ledger_agrees_with_it(target: Target) {
    let db = honest_bank(&target, 10);
    let accounts = target.accounts();
    let mut iter = accounts.iter();
    let (&x, &x_balance) = iter.next().unwrap();
    let (&y, _) = iter.next().unwrap();
    // X pays Y its whole balance and 5 more, in the ledger as in the balances: every balance
    // matches its ledger and the total is unchanged; only X's balance (-5) is wrong.
    let amount = x_balance + 5;
    let tamper = format!(
        "UPDATE accounts SET balance = -5 WHERE id = {x}; \
         UPDATE accounts SET balance = balance + {amount} WHERE id = {y}; \
         INSERT INTO transfers (id, source_id, sink_id, amount) VALUES ({HAND_ID}, {x}, {y}, {amount});"
    );
    match &target {
        Target::Postgresql(_) => {
            // Its own statement, so the drop is done before the tampering writes: CockroachDB
            // runs a multi-statement string as one transaction and finishes a schema change
            // only once its transaction commits.
            let check = balance_check_constraint(&target);
            target.execute(&format!("ALTER TABLE accounts DROP CONSTRAINT \"{check}\""));
            target.execute(&tamper);
        }
        // SQLite cannot drop a CHECK constraint; this connection may ignore it instead.
        Target::Sqlite(_) => {
            target.execute(&format!("PRAGMA ignore_check_constraints = ON; {tamper}"))
        }
    }
    assert_eq!(
        target.int(&format!("SELECT balance FROM accounts WHERE id = {x}")),
        Some(-5)
    );

    let report = run_audit(&db);
    assert_eq!(report.totals.negative_balances, 1, "{report:#?}");
    assert!(!report.is_consistent(), "{report:#?}");
    assert_eq!(report.mismatched_accounts, 0, "{report:#?}");
    assert_eq!(report.totals.orphan_rows, 0);
    assert_eq!(report.totals.total_balance, report.totals.total_deposits);
}

/// The name of the unnamed CHECK on `accounts.balance`: `accounts_balance_check` on PostgreSQL,
/// `check_balance` on CockroachDB, looked up rather than assumed.
fn balance_check_constraint(target: &Target) -> String {
    let Target::Postgresql(db) = target else {
        panic!("SQLite constraints have no names to drop them by");
    };
    let names = if server().is_cockroachdb() {
        db.psql(
            "SELECT constraint_name FROM [SHOW CONSTRAINTS FROM accounts] \
             WHERE constraint_type = 'CHECK'",
        )
    } else {
        db.psql(
            "SELECT conname FROM pg_constraint \
             WHERE conrelid = 'accounts'::regclass AND contype = 'c'",
        )
    };
    let names: Vec<&str> = names.lines().collect();
    assert_eq!(names.len(), 1, "one CHECK on accounts: {names:?}");
    names[0].to_string()
}

fn audit_counts_all_25_mismatched_accounts_but_lists_only_the_first_20_by_id(target: Target) {
    assert_eq!(MAX_LISTED_ACCOUNTS, 20, "this test assumes a listing of 20");
    let db = honest_bank(&target, 60);
    let ids = account_ids(&target);
    // Every other account (not a prefix of the id order, so an unordered listing shows).
    let tampered: Vec<i64> = ids.iter().skip(1).step_by(2).take(25).copied().collect();
    assert_eq!(tampered.len(), 25);
    let list = tampered
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    target.execute(&format!(
        "UPDATE accounts SET balance = balance + 3 WHERE id IN ({list})"
    ));

    let report = run_audit(&db);
    assert!(!report.is_consistent());
    assert_eq!(report.mismatched_accounts, 25, "{report:#?}");
    assert_eq!(report.listed.len(), 20, "{report:#?}");
    let listed: Vec<i64> = report.listed.iter().map(|d| d.account_id).collect();
    assert_eq!(
        listed,
        tampered[..20],
        "the 20 smallest tampered ids, ascending"
    );
    for discrepancy in &report.listed {
        assert_eq!(
            discrepancy.balance - discrepancy.expected,
            3,
            "{discrepancy:?}"
        );
        assert_eq!(discrepancy.mismatches, 25, "{discrepancy:?}");
    }
    assert_eq!(
        report.totals.total_balance,
        report.totals.total_deposits + 25 * 3
    );
}

// ---------------------------------------------------------------------------------------------
// 5. the backfill migration
// ---------------------------------------------------------------------------------------------

/// First version of the ledger migrations.
const LEDGER_VERSION: &str = "20240102000000";

fn backfill_migration_gives_each_pre_ledger_account_one_opening_deposit(target: Target) {
    // A database as a pre-ledger roachbank left it: the first migration only, some accounts.
    drop(target.open(1));
    // Two statements, not one string: CockroachDB runs a string as one transaction, where a
    // schema change may not follow a write ("schema change statement cannot follow a statement
    // that has written in the same transaction", cockroachdb/cockroach#26508).
    target.execute("DROP TABLE transfers");
    target.execute(&format!(
        "DELETE FROM __diesel_schema_migrations WHERE version >= '{LEDGER_VERSION}'"
    ));
    assert!(
        target
            .applied_migrations()
            .iter()
            .all(|v| v.as_str() < LEDGER_VERSION),
        "{:?}",
        target.applied_migrations()
    );
    let old: BTreeMap<i64, i64> = [
        (0, 10),
        (5, 0),
        (42, 7),
        (123_456, 654_321),
        (999_999_999, 1),
    ]
    .into_iter()
    .collect();
    let values = old
        .iter()
        .map(|(id, balance)| format!("({id}, {balance})"))
        .collect::<Vec<_>>()
        .join(", ");
    target.execute(&format!(
        "INSERT INTO accounts (id, balance) VALUES {values}"
    ));

    // This roachbank opens it: the ledger migrations run and backfill the opening deposits.
    let db = target.open(2);
    assert_eq!(target.applied_migrations(), target.embedded_migrations());
    let expected: Vec<LedgerEntry> = old
        .iter()
        .rev() // ids -1 - account id: the largest account comes first
        .map(|(&id, &balance)| LedgerEntry {
            id: -1 - id,
            source_id: None,
            sink_id: id,
            amount: balance,
        })
        .collect();
    assert_eq!(ledger(&target), expected, "one opening deposit per account");
    let report = run_audit(&db);
    assert!(report.is_consistent(), "{report:#?}");
    assert_eq!(report.totals.accounts, old.len() as i64);
    assert_eq!(report.totals.total_deposits, old.values().sum::<i64>());

    // Opening again adds nothing, and the bank keeps working on top of the backfill.
    drop(db);
    let db = target.open(2);
    assert_eq!(ledger(&target), expected, "after a second open");
    seed(&db, 10);
    transfers(&db, 30, 2);
    let report = run_audit(&db);
    assert!(
        report.is_consistent(),
        "after seed + transfers: {report:#?}"
    );
    assert_eq!(
        ledger(&target).iter().filter(|row| row.id < 0).count(),
        old.len(),
        "new deposits and transfers never take negative ids"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. the CLI
// ---------------------------------------------------------------------------------------------

/// Runs the binary with `args` and `--database-url url` in `dir`, `DATABASE_URL` removed.
fn roachbank(dir: &Path, url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_roachbank"))
        .args(args)
        .args(["--database-url", url])
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run the roachbank binary")
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn cli_check_exits_0_when_consistent_and_1_listing_the_tampered_account(target: Target) {
    let dir = tempfile::Builder::new()
        .prefix("roachbank-ledger-cli-")
        .tempdir()
        .expect("create a temporary directory");
    let dir = dir.path();
    let url = target.url().to_string();

    let seeded = roachbank(dir, &url, &["seed", "--accounts", "25"]);
    assert!(seeded.status.success(), "seed: {}", describe(&seeded));

    let ok = roachbank(dir, &url, &["check"]);
    assert_eq!(ok.status.code(), Some(0), "check: {}", describe(&ok));
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(stdout.starts_with("check: OK"), "check: {}", describe(&ok));

    let moved = roachbank(dir, &url, &["transfer", "--count", "20", "--check"]);
    assert_eq!(
        moved.status.code(),
        Some(0),
        "transfer --check: {}",
        describe(&moved)
    );
    let stdout = String::from_utf8_lossy(&moved.stdout);
    assert!(
        stdout.lines().any(|line| line.starts_with("check: OK")),
        "transfer --check: {}",
        describe(&moved)
    );

    // Tamper with one balance behind the ledger's back.
    let accounts = target.accounts();
    let (&x, &before) = accounts.iter().nth(4).unwrap();
    target.execute(&format!(
        "UPDATE accounts SET balance = balance + 7 WHERE id = {x}"
    ));

    let failed = roachbank(dir, &url, &["check"]);
    assert_eq!(
        failed.status.code(),
        Some(1),
        "check: {}",
        describe(&failed)
    );
    let stdout = String::from_utf8_lossy(&failed.stdout);
    assert!(
        stdout.starts_with("check: FAILED"),
        "check: {}",
        describe(&failed)
    );
    let line = stdout
        .lines()
        .find(|line| line.contains(&format!("account {x}:")))
        .unwrap_or_else(|| panic!("no line for account {x}: {}", describe(&failed)));
    for figure in [
        (before + 7).to_string(),
        before.to_string(),
        "7".to_string(),
    ] {
        assert!(line.contains(&figure), "{line:?} lacks {figure}");
    }
    assert_eq!(
        stdout
            .lines()
            .filter(|line| line.trim_start().starts_with("account "))
            .count(),
        1,
        "one account listed: {}",
        describe(&failed)
    );
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(
        stderr.lines().count(),
        1,
        "stderr is one line: {}",
        describe(&failed)
    );
    assert!(
        stderr.ends_with('\n') && stderr.starts_with("roachbank: "),
        "{stderr:?}"
    );

    // `transfer --check` audits too: on the tampered bank it fails after its transfer.
    let moved = roachbank(dir, &url, &["transfer", "--count", "1", "--check"]);
    assert_eq!(
        moved.status.code(),
        Some(1),
        "transfer --check on a tampered bank: {}",
        describe(&moved)
    );
    assert!(
        String::from_utf8_lossy(&moved.stdout).contains("check: FAILED"),
        "{}",
        describe(&moved)
    );
}

/// `--check runs the audit afterwards` (README), and the audit matters most when some transfers
/// did not commit: 8 workers on 2 accounts with `--max-retries 0` on PostgreSQL (SERIALIZABLE)
/// make some transfers fail with serialization conflicts, which ends the command with exit 1 —
/// and the audit must still have run and found the books consistent.
#[test]
fn transfer_check_runs_the_audit_even_when_some_transfers_failed() {
    let target = Target::postgresql("transfer_check_after_failures");
    let db = target.open(1);
    seed(&db, 2);
    drop(db);
    let dir = tempfile::Builder::new()
        .prefix("roachbank-ledger-cli-")
        .tempdir()
        .expect("create a temporary directory");
    let output = roachbank(
        dir.path(),
        target.url(),
        &[
            "--max-retries",
            "0",
            "transfer",
            "--count",
            "60",
            "--workers",
            "8",
            "--check",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .lines()
        .find(|line| line.starts_with("transfers: "))
        .unwrap_or_else(|| panic!("no summary line: {}", describe(&output)));
    eprintln!("{summary}");
    if output.status.success() {
        eprintln!("no transfer failed this time; only the audit's presence is checked");
    } else {
        assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
        assert!(
            !summary.contains(" 0 failed"),
            "exit 1 must come from failed transfers: {}",
            describe(&output)
        );
    }
    assert!(
        stdout.lines().any(|line| line.starts_with("check: OK")),
        "transfer --check must run the audit after the transfers, failed ones or not: {}",
        describe(&output)
    );
}

// ---------------------------------------------------------------------------------------------
// 7. audit speed on 10^6 ledger rows
// ---------------------------------------------------------------------------------------------

/// Ledger rows in the speed tests, deposits included.
const BIG_LEDGER: i64 = 1_000_000;
/// Accounts in the speed tests.
const BIG_ACCOUNTS: i64 = 1_000;

/// One index definition, as SQLite stores it.
#[derive(QueryableByName)]
struct IndexDef {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    sql: String,
}

/// Statements that drop `transfers`' secondary indexes and that create them again exactly as
/// the migrations defined them (read back from the catalogue): a bulk load runs about twice
/// as fast without them, and the audit is then timed on the same indexes.
fn without_and_with_ledger_indexes(target: &Target) -> (String, String) {
    let indexes: Vec<(String, String)> = match target {
        Target::Postgresql(db) => db
            .psql(
                "SELECT indexrelid::regclass, pg_get_indexdef(indexrelid) FROM pg_index \
                 WHERE indrelid = 'transfers'::regclass AND NOT indisprimary ORDER BY 1",
            )
            .lines()
            .map(|line| {
                let (name, sql) = line.split_once('|').expect("name|definition");
                (name.to_string(), sql.to_string())
            })
            .collect(),
        Target::Sqlite(file) => diesel::sql_query(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' \
             AND tbl_name = 'transfers' AND sql IS NOT NULL ORDER BY name",
        )
        .load::<IndexDef>(&mut sqlite_connection(&file.path))
        .expect("read the ledger's index definitions")
        .into_iter()
        .map(|index| (index.name, index.sql))
        .collect(),
    };
    let drop = indexes
        .iter()
        .map(|(name, _)| format!("DROP INDEX {name};"))
        .collect::<Vec<_>>()
        .join(" ");
    let create = indexes
        .iter()
        .map(|(_, sql)| format!("{sql};"))
        .collect::<Vec<_>>()
        .join(" ");
    (drop, create)
}

/// Seeds `BIG_ACCOUNTS` accounts through the library, adds `BIG_LEDGER - BIG_ACCOUNTS`
/// transfer rows with `bulk_insert` (given the first row id, the last row number and the
/// number of accounts), times the audit, checks it is consistent, then tampers with one
/// balance and checks that the audit at this size still finds exactly that account.
///
/// The bulk rows come in 999 cycles over the accounts in id order: in cycle k, the account at
/// index i pays the one at index i + 1 (mod 1000) the same amount k % 1000 + 1, so every
/// account pays and receives the same within a cycle and every balance stays as seeded.
fn time_audit_on_a_million_rows(target: Target, bulk_insert: fn(i64, i64, i64) -> String) {
    let db = target.open(1);
    seed(&db, BIG_ACCOUNTS as u64);
    let (drop_indexes, create_indexes) = without_and_with_ledger_indexes(&target);
    let started = Instant::now();
    target.execute(&format!(
        "{drop_indexes} {} {create_indexes} ANALYZE;",
        bulk_insert(1 << 62, BIG_LEDGER - BIG_ACCOUNTS - 1, BIG_ACCOUNTS)
    ));
    let loaded = started.elapsed();
    assert_eq!(target.count("SELECT COUNT(*) FROM transfers"), BIG_LEDGER);
    let (_, recreated) = without_and_with_ledger_indexes(&target);
    assert_eq!(recreated, create_indexes, "the ledger's indexes are back");

    let started = Instant::now();
    let report = run_audit(&db);
    let took = started.elapsed();
    eprintln!(
        "audit of {} ledger rows took {:.3} s on {} (bulk load {:.1} s)",
        report.totals.ledger_rows,
        took.as_secs_f64(),
        db.flavor(),
        loaded.as_secs_f64()
    );
    assert!(report.is_consistent(), "{report:#?}");
    assert_eq!(report.totals.ledger_rows, BIG_LEDGER);
    assert_eq!(report.totals.accounts, BIG_ACCOUNTS);

    let x = account_ids(&target)[500];
    target.execute(&format!(
        "UPDATE accounts SET balance = balance + 1 WHERE id = {x}"
    ));
    let report = run_audit(&db);
    assert_eq!(report.mismatched_accounts, 1, "{report:#?}");
    assert_eq!(report.listed[0].account_id, x);
}

#[test]
fn audit_of_a_million_ledger_rows_on_postgresql_is_consistent_and_timed() {
    if not_run_on_cockroachdb(
        "audit_of_a_million_ledger_rows_on_postgresql_is_consistent_and_timed",
        "the bulk load is PostgreSQL's: indexes read back with pg_get_indexdef, 10^6 rows in \
         one transaction with integer `/`, and a bare ANALYZE",
    ) {
        return;
    }
    time_audit_on_a_million_rows(Target::postgresql("audit_million_rows"), |base, last, n| {
        format!(
            "INSERT INTO transfers (id, source_id, sink_id, amount) \
                 SELECT {base} + g, a.ids[1 + g % a.n], a.ids[1 + (g + 1) % a.n], \
                        (g / a.n) % 1000 + 1 \
                 FROM (SELECT array_agg(id ORDER BY id) AS ids, COUNT(*)::int AS n \
                       FROM accounts) a, \
                      generate_series(0, {last}) AS g \
                 WHERE a.n = {n};"
        )
    });
}

#[test]
fn audit_of_a_million_ledger_rows_on_sqlite_is_consistent_and_timed() {
    time_audit_on_a_million_rows(Target::sqlite(), |base, last, n| {
        // A large page cache for this connection: the load would otherwise spill to disk.
        format!(
            "PRAGMA cache_size = -400000; \
             CREATE TEMP TABLE ix (i INTEGER PRIMARY KEY, id BIGINT NOT NULL); \
             INSERT INTO ix SELECT ROW_NUMBER() OVER (ORDER BY id) - 1, id FROM accounts; \
             WITH RECURSIVE k(g) AS (SELECT 0 UNION ALL SELECT g + 1 FROM k WHERE g < {last}) \
             INSERT INTO transfers (id, source_id, sink_id, amount) \
             SELECT {base} + k.g, s.id, t.id, (k.g / {n}) % 1000 + 1 \
             FROM k JOIN ix s ON s.i = k.g % {n} JOIN ix t ON t.i = (k.g + 1) % {n};"
        )
    });
}
