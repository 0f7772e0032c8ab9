//! The bank against real databases (a SQLite file and the harness's PostgreSQL): `seed`,
//! `balance`, `TransferRun`, the migrations run by `Database::open`, and flavour detection.
//!
//! Most checks run on both backends through `on_sqlite_and_postgresql!`, which turns each
//! `fn check(target: Target)` into `check::sqlite` and `check::postgresql` tests. Expected
//! figures are computed by SQL outside the library: psql on PostgreSQL, a plain diesel
//! `SqliteConnection` on SQLite.

use crate::support;
use crate::support::target::{try_open, Target};
use diesel::Connection;
use diesel_retry::{run_transaction, RetryPolicy, TransactionError};
use roachbank::bank::{
    self, AccountIdSlices, BankError, DepositIds, TransferStyle, ID_SPACE, OPENING_BALANCE_SPACE,
};
use roachbank::db::{Database, Flavor};
use roachbank::migrate::{MigrationError, OpenError};
use roachbank::workload::{RunLength, TransferOutcome, TransferReport, TransferRun};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::Duration;

/// A version far beyond any migration this build embeds.
const FUTURE_VERSION: &str = "99991231235959";

on_sqlite_and_postgresql!(
    seed_creates_exactly_n_accounts_in_range_and_reports_their_sum,
    seeding_twice_adds_both_batches,
    seed_draws_again_for_ids_already_taken,
    seed_puts_one_account_in_each_equal_slice_of_the_id_space,
    seed_chunks_fill_the_slices_after_the_previous_chunk,
    a_full_slice_gets_its_account_drawn_from_the_whole_id_space,
    draws_in_a_slice_too_crowded_to_read_at_once_are_looked_up,
    a_seed_in_many_steps_writes_one_deposit_per_account_under_consecutive_ids,
    seeding_as_on_cockroachdb_looks_each_draw_up_and_avoids_taken_ids,
    balance_matches_count_sum_min_max_computed_by_sql,
    balance_of_an_empty_bank_is_zero_with_no_min_or_max,
    transfers_conserve_money_and_never_make_a_balance_negative,
    one_transfer_moves_half_the_source_balance_rounded_down,
    serial_transfers_replay_exactly_as_reported,
    transfers_fail_with_not_enough_accounts_on_an_empty_bank,
    transfers_fail_with_not_enough_accounts_with_one_account,
    concurrent_opens_of_a_new_database_succeed_and_record_each_migration_once,
    concurrent_processes_opening_a_new_database_succeed_and_record_each_migration_once,
    open_refuses_a_schema_newer_than_this_build,
    open_detects_the_flavor,
);

fn policy() -> RetryPolicy {
    RetryPolicy::default()
}

/// Seeds `n` accounts and returns the money the report says it created.
fn seed(db: &Database, n: u64) -> i64 {
    let committed = bank::seed(db, &policy(), n).expect("seed");
    assert_eq!(committed.value.accounts, n, "seed report's account count");
    committed.value.money
}

fn total(target: &Target) -> i64 {
    target.int("SELECT SUM(balance) FROM accounts").unwrap_or(0)
}

fn seed_creates_exactly_n_accounts_in_range_and_reports_their_sum(target: Target) {
    let db = target.open(2);
    let money = seed(&db, 1000);
    assert_eq!(target.count("SELECT COUNT(*) FROM accounts"), 1000);
    assert_eq!(
        target.count(&format!(
            "SELECT COUNT(*) FROM accounts WHERE id < 0 OR id >= {ID_SPACE} \
             OR balance < 0 OR balance >= {OPENING_BALANCE_SPACE}"
        )),
        0,
        "ids must lie in [0, {ID_SPACE}) and balances in [0, {OPENING_BALANCE_SPACE})"
    );
    assert_eq!(money, total(&target), "report.money vs SUM(balance)");
}

fn seeding_twice_adds_both_batches(target: Target) {
    let db = target.open(2);
    let first = seed(&db, 2000);
    let second = seed(&db, 2000);
    assert_eq!(target.count("SELECT COUNT(*) FROM accounts"), 4000);
    assert_eq!(first + second, total(&target));
}

/// Every id that is a multiple of 1000 is taken beforehand (10^6 rows, balance 0), so each
/// drawn id collides with probability 1/1000 and seeding 10,000 accounts meets about ten
/// collisions: an implementation that does not draw again for taken ids fails (unique
/// violation) or falls short, except with probability e^-10 ≈ 5·10^-5. A correct one always
/// passes.
fn seed_draws_again_for_ids_already_taken(target: Target) {
    let db = target.open(2);
    let taken = ID_SPACE / 1000;
    match &target {
        // In transactions of 10^5 rows rather than one of 10^6: CockroachDB advises batching
        // large writes.
        Target::Postgresql(_) => {
            for first in (0..taken).step_by(100_000) {
                target.execute(&format!(
                    "INSERT INTO accounts (id, balance) \
                     SELECT g * 1000, 0 FROM generate_series({first}, {}) g",
                    (first + 100_000).min(taken) - 1
                ));
            }
        }
        Target::Sqlite(_) => target.execute(&format!(
            "WITH RECURSIVE k(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM k WHERE n < {}) \
             INSERT INTO accounts (id, balance) SELECT n * 1000, 0 FROM k",
            taken - 1
        )),
    }
    assert_eq!(target.count("SELECT COUNT(*) FROM accounts"), taken);

    let money = seed(&db, 10_000);
    assert_eq!(
        target.count("SELECT COUNT(*) FROM accounts WHERE id % 1000 <> 0"),
        10_000,
        "new accounts (every multiple of 1000 was taken)"
    );
    assert_eq!(
        target.count("SELECT COUNT(*) FROM accounts WHERE id % 1000 = 0 AND balance = 0"),
        taken,
        "pre-existing accounts must be left alone"
    );
    assert_eq!(money, total(&target));
}

/// A seed of N accounts spreads them over the id space, one in each N-th of it, so that the
/// transfers' random picks (the first id at or after a random point) are close to uniform.
/// With ids drawn from the whole space, 1,000 accounts would fill all 1,000 slices with
/// probability 1000!/1000^1000 ≈ 10^-432.
fn seed_puts_one_account_in_each_equal_slice_of_the_id_space(target: Target) {
    let db = target.open(2);
    seed(&db, 1000);
    let width = ID_SPACE / 1000;
    assert_eq!(
        target.count(&format!(
            "SELECT COUNT(DISTINCT id / {width}) FROM accounts"
        )),
        1000,
        "distinct slices of {width} ids holding an account"
    );
}

/// Runs the seed's body for `count` accounts in slices `first..first + count` of `slices`.
fn create_in_slices(db: &Database, slices: AccountIdSlices, first: u64, count: u64) {
    run_transaction(db, &policy(), |conn| {
        bank::create_random_accounts(
            conn,
            slices,
            first,
            count,
            DepositIds::for_seed(bank::MAX_SEED_ACCOUNTS),
        )
    })
    .expect("create accounts");
}

/// CockroachDB seeds in chunks of [`bank::COCKROACH_SEED_CHUNK`] accounts, one transaction
/// each: every chunk takes the slices after the previous chunk's, so the whole seed is spread
/// as one.
fn seed_chunks_fill_the_slices_after_the_previous_chunk(target: Target) {
    let db = target.open(2);
    let slices = AccountIdSlices::new(100);
    create_in_slices(&db, slices, 0, 60);
    create_in_slices(&db, slices, 60, 40);
    assert_eq!(target.count("SELECT COUNT(*) FROM accounts"), 100);
    let width = ID_SPACE / 100;
    assert_eq!(
        target.count(&format!(
            "SELECT COUNT(DISTINCT id / {width}) FROM accounts"
        )),
        100,
        "distinct slices of {width} ids holding an account"
    );
}

/// A slice whose ids are all taken cannot hold the new account: after
/// [`bank::MAX_SLICE_DRAWS`] draws its id comes from the whole id space, so the seed ends.
fn a_full_slice_gets_its_account_drawn_from_the_whole_id_space(target: Target) {
    let db = target.open(2);
    // Slices one id wide: slice 5 is id 5, taken beforehand.
    let slices = AccountIdSlices::new(ID_SPACE as u64);
    assert_eq!(slices.slice(5), 5..6);
    target.execute("INSERT INTO accounts (id, balance) VALUES (5, 0)");
    create_in_slices(&db, slices, 5, 1);
    assert_eq!(target.count("SELECT COUNT(*) FROM accounts"), 2);
    assert_eq!(
        target.count(&format!(
            "SELECT COUNT(*) FROM accounts WHERE id <> 5 AND id >= 0 AND id < {ID_SPACE}"
        )),
        1,
        "the new account, somewhere else in the id space"
    );
}

/// Takes the ids `first, first + every, …` below `end` beforehand (balance 0), outside the
/// library: in transactions of 10^5 rows on PostgreSQL, one recursive INSERT on SQLite.
fn take_ids(target: &Target, first: i64, every: i64, end: i64) {
    let count = (end - first + every - 1) / every;
    match target {
        Target::Postgresql(_) => {
            for batch in (0..count).step_by(100_000) {
                target.execute(&format!(
                    "INSERT INTO accounts (id, balance) \
                     SELECT {first} + g * {every}, 0 FROM generate_series({batch}, {}) g",
                    (batch + 100_000).min(count) - 1
                ));
            }
        }
        Target::Sqlite(_) => target.execute(&format!(
            "WITH RECURSIVE k(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM k WHERE n < {}) \
             INSERT INTO accounts (id, balance) SELECT {first} + n * {every}, 0 FROM k",
            count - 1
        )),
    }
    assert_eq!(
        target.count(&format!(
            "SELECT COUNT(*) FROM accounts WHERE id >= {first} AND id < {end}"
        )),
        count
    );
}

/// A seed step reads the ids already taken in its slices with one range query, but no more
/// than a bounded number of them: a slice holding more (here every one of its 10^6 ids) gets its
/// draws looked up one by one instead — all eight taken, so the account is drawn from the whole
/// id space and looked up there. Drawing without looking up would write a taken id and fail.
fn draws_in_a_slice_too_crowded_to_read_at_once_are_looked_up(target: Target) {
    let db = target.open(2);
    let slices = AccountIdSlices::new(1000);
    assert_eq!(slices.slice(0), 0..1_000_000);
    take_ids(&target, 0, 1, 1_000_000);
    create_in_slices(&db, slices, 0, 1);
    assert_eq!(target.count("SELECT COUNT(*) FROM accounts"), 1_000_001);
    assert_eq!(
        target.count(&format!(
            "SELECT COUNT(*) FROM accounts WHERE id >= 1000000 AND id < {ID_SPACE}"
        )),
        1,
        "the new account, outside its full slice"
    );
    assert_eq!(
        target.count("SELECT COUNT(*) FROM accounts WHERE id < 1000000 AND balance = 0"),
        1_000_000,
        "the accounts there before are left alone"
    );
}

/// A seed is written a step of slices at a time, and a step ends early where the id space is
/// crowded: 10,000 accounts among 10^6 taken ids (one in each thousand) take several steps.
/// Across them, every new account gets exactly one deposit of its balance, and the deposits'
/// ids are one slot's row indexes `0..10,000` (their low 32 bits, `roachbank::bank::ids`) with
/// no gap and no overlap.
fn a_seed_in_many_steps_writes_one_deposit_per_account_under_consecutive_ids(target: Target) {
    let db = target.open(2);
    take_ids(&target, 0, 1000, ID_SPACE);
    let money = seed(&db, 10_000);
    let new_accounts = "SELECT id, balance FROM accounts WHERE id % 1000 <> 0";
    assert_eq!(
        target.count(&format!("SELECT COUNT(*) FROM ({new_accounts}) a")),
        10_000
    );
    assert_eq!(
        target.count(&format!(
            "SELECT COUNT(*) FROM ({new_accounts}) a \
             JOIN transfers t ON t.sink_id = a.id AND t.source_id IS NULL AND t.amount = a.balance"
        )),
        10_000,
        "one deposit of its balance for each new account"
    );
    assert_eq!(
        target.count(
            "SELECT COUNT(*) FROM transfers WHERE source_id IS NULL AND sink_id % 1000 <> 0"
        ),
        10_000,
        "no other deposit"
    );
    let deposits = "transfers WHERE source_id IS NULL";
    assert_eq!(
        target.ints("id % 4294967296", deposits),
        (0..10_000).collect::<Vec<i64>>(),
        "the deposits' row indexes"
    );
    assert_eq!(
        target.count(&format!(
            "SELECT COUNT(DISTINCT (id >> 32) % 67108864) FROM {deposits}"
        )),
        1,
        "one slot (bits 32–57)"
    );
    assert_eq!(
        money,
        target.count(&format!("SELECT SUM(balance) FROM ({new_accounts}) a"))
    );
}

/// On CockroachDB a seed step looks each drawn id up instead of reading the step's range of ids
/// (`create_random_accounts_on` with `Flavor::CockroachDb`: multi-row INSERTs, `IN (…)`
/// look-ups), which runs on every database: among 10^6 taken ids (one in each thousand) the
/// 10,000 new accounts meet about ten of them and draw again.
fn seeding_as_on_cockroachdb_looks_each_draw_up_and_avoids_taken_ids(target: Target) {
    let db = target.open(2);
    take_ids(&target, 0, 1000, ID_SPACE);
    let slices = AccountIdSlices::new(10_000);
    let committed = run_transaction(&db, &policy(), |conn| {
        bank::create_random_accounts_on(
            conn,
            Flavor::CockroachDb,
            slices,
            0,
            10_000,
            DepositIds::for_seed(bank::MAX_SEED_ACCOUNTS),
        )
    })
    .expect("create accounts");
    assert_eq!(committed.value.accounts, 10_000);
    assert_eq!(
        target.count("SELECT COUNT(*) FROM accounts WHERE id % 1000 <> 0"),
        10_000,
        "new accounts (every multiple of 1000 was taken)"
    );
    assert_eq!(
        target.count("SELECT COUNT(DISTINCT id / 100000) FROM accounts WHERE id % 1000 <> 0"),
        10_000,
        "one in each slice"
    );
    assert_eq!(
        committed.value.money,
        target.count("SELECT SUM(balance) FROM accounts WHERE id % 1000 <> 0")
    );
}

fn balance_matches_count_sum_min_max_computed_by_sql(target: Target) {
    let db = target.open(2);
    seed(&db, 500);
    let summary = bank::balance(&db, &policy()).expect("balance").value;
    assert_eq!(
        summary.accounts,
        target.count("SELECT COUNT(*) FROM accounts")
    );
    assert_eq!(summary.total, total(&target));
    assert_eq!(summary.min, target.int("SELECT MIN(balance) FROM accounts"));
    assert_eq!(summary.max, target.int("SELECT MAX(balance) FROM accounts"));
    assert!(summary.min.is_some() && summary.max.is_some());
}

fn balance_of_an_empty_bank_is_zero_with_no_min_or_max(target: Target) {
    let db = target.open(1);
    let summary = bank::balance(&db, &policy()).expect("balance").value;
    assert_eq!(
        summary,
        bank::BalanceSummary {
            accounts: 0,
            total: 0,
            min: None,
            max: None
        }
    );
}

/// Checks the invariants of a finished run of `count` transfers that should have succeeded.
fn assert_transfers_ok(
    target: &Target,
    report: &TransferReport,
    count: u64,
    money: i64,
    accounts: usize,
) {
    if let Some(error) = &report.error {
        panic!("transfer run failed: {error} ({error:?})");
    }
    assert_eq!(report.summary.done, count, "summary.done");
    assert_eq!(report.summary.latencies.count(), count);
    assert_eq!(total(target), money, "the total balance must not change");
    assert_eq!(
        target.count("SELECT COUNT(*) FROM accounts WHERE balance < 0"),
        0,
        "no balance may go negative"
    );
    assert_eq!(
        target.accounts().len(),
        accounts,
        "accounts must not vanish"
    );
}

/// Runs `count` transfers on `workers` workers and returns the report and how often the
/// callback ran.
fn transfers(db: &Database, count: u64, workers: u32) -> (TransferReport, u64) {
    let calls = AtomicU64::new(0);
    let report = TransferRun::new(count, workers).run(db, &policy(), &|_| {
        calls.fetch_add(1, Ordering::Relaxed);
    });
    (report, calls.into_inner())
}

/// The transfer styles that run on `db`: both on a server, the tutorial's on SQLite.
fn styles(db: &Database) -> Vec<TransferStyle> {
    [TransferStyle::OneStatement, TransferStyle::Tutorial]
        .into_iter()
        .filter(|style| style.supported_on(db.flavor()).is_ok())
        .collect()
}

fn transfers_conserve_money_and_never_make_a_balance_negative(target: Target) {
    let db = target.open(4);
    let money = seed(&db, 50);
    for style in styles(&db) {
        let calls = AtomicU64::new(0);
        let report = TransferRun::new(200, 4)
            .style(style)
            .run(&db, &policy(), &|_| {
                calls.fetch_add(1, Ordering::Relaxed);
            });
        assert_transfers_ok(&target, &report, 200, money, 50);
        assert_eq!(
            calls.into_inner(),
            200,
            "{style:?}: on_transfer runs once per committed transfer"
        );
    }
}

/// Makes every balance odd (and at least 1) so that "half, rounded down" is visible.
fn make_balances_odd(target: &Target) {
    target.execute("UPDATE accounts SET balance = 2 * balance + 1");
}

fn one_transfer_moves_half_the_source_balance_rounded_down(target: Target) {
    let db = target.open(1);
    seed(&db, 20);
    for style in styles(&db) {
        one_transfer_in_style_moves_half_the_source_balance_rounded_down(&target, &db, style);
    }
}

fn one_transfer_in_style_moves_half_the_source_balance_rounded_down(
    target: &Target,
    db: &Database,
    style: TransferStyle,
) {
    make_balances_odd(target);
    let before = target.accounts();
    let outcomes = Mutex::new(Vec::new());
    let report =
        TransferRun::new(1, 1)
            .style(style)
            .run(db, &policy(), &|outcome: &TransferOutcome| {
                outcomes.lock().unwrap().push(outcome.clone())
            });
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(report.summary.done, 1);
    let outcomes = outcomes.into_inner().unwrap();
    assert_eq!(outcomes.len(), 1);
    let outcome = &outcomes[0];
    let transfer = &outcome.transfer;
    assert_eq!(
        outcome.attempts, 1,
        "{style:?}: one uncontended transfer needs no retry"
    );
    assert_ne!(transfer.source, transfer.sink, "{style:?}");
    let source_before = before[&transfer.source];
    assert_eq!(transfer.amount, source_before / 2, "{style:?}");
    assert!(
        transfer.amount * 2 < source_before,
        "{style:?}: odd balance rounds down"
    );

    let mut expected = before.clone();
    *expected.get_mut(&transfer.source).unwrap() -= transfer.amount;
    *expected.get_mut(&transfer.sink).unwrap() += transfer.amount;
    assert_eq!(
        target.accounts(),
        expected,
        "{style:?}: only source and sink change"
    );
}

/// With one worker, the reported transfers are the committed ones in commit order: replaying
/// them (each taking half of its source's balance at that point) must give the final table.
fn serial_transfers_replay_exactly_as_reported(target: Target) {
    let db = target.open(1);
    seed(&db, 10);
    for style in styles(&db) {
        serial_transfers_in_style_replay_exactly_as_reported(&target, &db, style);
    }
}

fn serial_transfers_in_style_replay_exactly_as_reported(
    target: &Target,
    db: &Database,
    style: TransferStyle,
) {
    make_balances_odd(target);
    let before = target.accounts();
    let outcomes = Mutex::new(Vec::new());
    let report =
        TransferRun::new(40, 1)
            .style(style)
            .run(db, &policy(), &|outcome: &TransferOutcome| {
                outcomes.lock().unwrap().push(outcome.transfer.clone())
            });
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(report.summary.done, 40);

    let mut replayed = before.clone();
    for transfer in outcomes.into_inner().unwrap() {
        assert_ne!(transfer.source, transfer.sink);
        let source = replayed[&transfer.source];
        assert_eq!(
            transfer.amount,
            source / 2,
            "{transfer:?} from balance {source}"
        );
        *replayed.get_mut(&transfer.source).unwrap() -= transfer.amount;
        *replayed.get_mut(&transfer.sink).unwrap() += transfer.amount;
    }
    assert_eq!(target.accounts(), replayed);
    assert_eq!(replayed.values().sum::<i64>(), before.values().sum::<i64>());
}

/// A run on a bank with too few accounts stops at once with `NotEnoughAccounts`, changing
/// nothing.
fn assert_not_enough_accounts(target: &Target, db: &Database) {
    let before = target.accounts();
    let (report, calls) = transfers(db, 3, 1);
    match &report.error {
        Some(
            error @ TransactionError::Failed {
                cause: BankError::NotEnoughAccounts,
                ..
            },
        ) => {
            assert_eq!(error.attempts(), 1);
        }
        other => panic!("expected Failed(NotEnoughAccounts), got {other:?}"),
    }
    assert_eq!(report.summary.done, 0);
    assert_eq!(calls, 0);
    assert_eq!(target.accounts(), before, "nothing may change");
}

fn transfers_fail_with_not_enough_accounts_on_an_empty_bank(target: Target) {
    let db = target.open(1);
    assert_not_enough_accounts(&target, &db);
}

fn transfers_fail_with_not_enough_accounts_with_one_account(target: Target) {
    let db = target.open(1);
    seed(&db, 1);
    assert_not_enough_accounts(&target, &db);
}

/// Rounds of concurrent first opens, each on a brand-new database: a fresh SQLite file is
/// cheap, so it gets more chances to show a race than a fresh PostgreSQL database.
fn migration_rounds(target: &Target, postgresql: usize, sqlite: usize) -> usize {
    match target {
        Target::Postgresql(_) => postgresql,
        Target::Sqlite(_) => sqlite,
    }
}

/// A brand-new database of the same backend as `target`.
fn fresh_like(target: &Target, name: &str) -> Target {
    match target {
        Target::Postgresql(_) => Target::postgresql(name),
        Target::Sqlite(_) => Target::sqlite(),
    }
}

fn concurrent_opens_of_a_new_database_succeed_and_record_each_migration_once(target: Target) {
    for round in 0..migration_rounds(&target, 5, 20) {
        let fresh = fresh_like(&target, "concurrent_opens");
        let barrier = Barrier::new(2);
        let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        try_open(fresh.url(), 1)
                            .map(|_| ())
                            .map_err(|err| format!("{err} ({err:?})"))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for result in results {
            if let Err(err) = result {
                panic!("round {round}: a concurrent Database::open failed: {err}");
            }
        }
        assert_eq!(
            fresh.applied_migrations(),
            fresh.embedded_migrations(),
            "round {round}: one row per migration"
        );
        // The schema is usable.
        let db = fresh.open(1);
        seed(&db, 3);
        assert_eq!(fresh.count("SELECT COUNT(*) FROM accounts"), 3);
    }
}

/// Like the threaded test, with two `roachbank points 1` processes started together (a command
/// that creates the bank where there is none; `balance` would refuse).
fn concurrent_processes_opening_a_new_database_succeed_and_record_each_migration_once(
    target: Target,
) {
    for round in 0..migration_rounds(&target, 3, 20) {
        let fresh = fresh_like(&target, "concurrent_processes");
        let points = ["points", "1", "--database-url", fresh.url()];
        for output in support::bin::run_at_once(2, &points) {
            assert!(
                output.status.success(),
                "round {round}: roachbank points failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        assert_eq!(
            fresh.applied_migrations(),
            fresh.embedded_migrations(),
            "round {round}: one row per migration"
        );
    }
}

fn open_refuses_a_schema_newer_than_this_build(target: Target) {
    drop(target.open(1));
    target.execute(&format!(
        "INSERT INTO __diesel_schema_migrations (version) VALUES ('{FUTURE_VERSION}')"
    ));
    let latest = target.embedded_migrations().pop().unwrap();
    match try_open(target.url(), 1) {
        Err(OpenError::Migration(MigrationError::SchemaTooNew { applied, known })) => {
            assert_eq!(applied, FUTURE_VERSION);
            assert_eq!(known, latest);
        }
        Err(other) => panic!("expected SchemaTooNew, got {other:?}"),
        Ok(_) => panic!("Database::open accepted a schema newer than this build"),
    }
}

fn open_detects_the_flavor(target: Target) {
    let db = target.open(1);
    assert_eq!(db.flavor(), target.expected_flavor());
}

/// `workers` workers make `count` transfers between 100 accounts; prints the figures.
fn stress(target: Target, count: u64, workers: u32) {
    let db = target.open(workers);
    let money = seed(&db, 100);
    let (report, calls) = transfers(&db, count, workers);
    let summary = &report.summary;
    eprintln!(
        "stress on {}: {} transfers, {workers} workers: {} retries, {:.0} transfers/s, \
         {:.2} s, p50 {:?}, p99 {:?}",
        db.flavor(),
        summary.done,
        summary.retries,
        summary.per_second(),
        summary.elapsed.as_secs_f64(),
        summary.latency_quantile(0.5),
        summary.latency_quantile(0.99),
    );
    assert_transfers_ok(&target, &report, count, money, 100);
    assert_eq!(calls, count);
}

#[test]
fn eight_workers_make_4000_transfers_on_postgresql_conserving_money() {
    stress(Target::postgresql("stress_8_workers"), 4000, 8);
}

/// Two accounts, eight workers: every pair of concurrent one-statement transfers meets on both
/// rows, half of them in opposite directions. Each must lock its rows in one order (lowest id
/// first) so that they queue; locked source first, opposite transfers deadlocked and waited out
/// PostgreSQL's `deadlock_timeout` (a second) before one was aborted (40P01) and retried.
#[test]
fn one_statement_transfers_in_opposite_directions_never_deadlock_on_postgresql() {
    if support::not_run_on_cockroachdb(
        "one_statement_transfers_in_opposite_directions_never_deadlock_on_postgresql",
        "PostgreSQL's deadlock counter (pg_stat_database.deadlocks)",
    ) {
        return;
    }
    let target = Target::postgresql("no_deadlocks");
    let db = target.open(8);
    let money = seed(&db, 2);
    let report = TransferRun::new(RunLength::Duration(Duration::from_secs(3)), 8)
        .style(TransferStyle::OneStatement)
        .run(&db, &policy(), &|_| {});
    let summary = &report.summary;
    assert!(summary.done > 0, "{summary:?}");
    assert_eq!(summary.failed + summary.unknown, 0, "{summary:?}");
    drop(db);
    let Target::Postgresql(pg) = &target else {
        unreachable!("a PostgreSQL target")
    };
    pg.wait_for_sessions_to_end();
    let deadlocks =
        target.count("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()");
    assert_eq!(
        deadlocks, 0,
        "{deadlocks} deadlocks among {} transfers",
        summary.done
    );
    assert_eq!(
        target.count("SELECT sum(balance) FROM accounts"),
        money,
        "money is conserved"
    );
}

#[test]
fn four_workers_make_400_transfers_on_sqlite_conserving_money() {
    stress(Target::sqlite(), 400, 4);
}

#[test]
fn balance_and_the_audit_on_sqlite_read_at_once_while_another_writer_holds_the_lock() {
    let target = Target::sqlite();
    let db = target.open(1);
    let money = seed(&db, 20);
    let Target::Sqlite(file) = &target else {
        unreachable!("a SQLite target")
    };
    // Another connection (as another process would) holds SQLite's write lock, uncommitted.
    let mut writer = diesel::SqliteConnection::establish(file.path.to_str().unwrap())
        .expect("a second connection to the file");
    diesel::connection::SimpleConnection::batch_execute(
        &mut writer,
        "BEGIN IMMEDIATE; UPDATE accounts SET balance = balance + 1",
    )
    .expect("take the write lock");
    // A reader that queued for the write lock would wait out the 5 s busy timeout.
    let started = std::time::Instant::now();
    let summary = bank::balance(&db, &policy()).expect("balance").value;
    let report = roachbank::bank::audit::audit(&db, &policy())
        .expect("audit")
        .value;
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(1),
        "the reads waited {took:?} for the writer"
    );
    assert_eq!(
        summary.total, money,
        "the last committed state, not the writer's"
    );
    assert!(report.is_consistent(), "{report:?}");
    diesel::connection::SimpleConnection::batch_execute(&mut writer, "ROLLBACK").unwrap();
}

/// `url` with its user replaced by `user` (the suite's URLs are `postgresql://USER@host…`).
fn as_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (_, host_and_rest) = rest.split_once('@').expect("a user in the URL");
    format!("{scheme}://{user}@{host_and_rest}")
}

#[test]
fn a_role_with_read_rights_only_reads_an_up_to_date_bank_and_is_told_when_it_needs_migrating() {
    if support::not_run_on_cockroachdb(
        "a_role_with_read_rights_only_reads_an_up_to_date_bank_and_is_told_when_it_needs_migrating",
        "roles without a password and PostgreSQL's default privileges on schema public",
    ) {
        return;
    }
    let target = Target::postgresql("read_only_role");
    let money = seed(&target.open(1), 10);
    let Target::Postgresql(db) = &target else {
        unreachable!("a PostgreSQL target")
    };
    let reader = format!("reader_{}", &db.name[db.name.len() - 12..]);
    db.psql(&format!(
        "CREATE ROLE {reader} LOGIN; \
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader}"
    ));
    let as_reader = try_open(&as_user(target.url(), &reader), 1)
        .unwrap_or_else(|err| panic!("a reader opens an up-to-date bank: {err}"));
    let summary = bank::balance(&as_reader, &policy()).expect("balance as the reader");
    assert_eq!((summary.value.accounts, summary.value.total), (10, money));
    assert!(roachbank::bank::audit::audit(&as_reader, &policy())
        .expect("check as the reader")
        .value
        .is_consistent());

    // A database that still needs its migrations: one line saying so, nothing changed.
    let fresh = Target::postgresql("read_only_role_fresh");
    let Target::Postgresql(fresh_db) = &fresh else {
        unreachable!("a PostgreSQL target")
    };
    fresh_db.psql(&format!(
        "GRANT CONNECT ON DATABASE \"{}\" TO {reader}",
        fresh_db.name
    ));
    match try_open(&as_user(fresh.url(), &reader), 1) {
        Err(err) => {
            let text = err.to_string();
            let pending = fresh.embedded_migrations().len();
            assert!(
                text.contains(&format!("needs {pending} more migrations")),
                "{text}"
            );
            assert_eq!(text.lines().count(), 1, "{text}");
        }
        Ok(_) => panic!("a role that may not create tables migrated a new database"),
    }
    assert_eq!(
        fresh.count("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'"),
        0,
        "nothing was created"
    );
    db.psql(&format!("DROP OWNED BY {reader}; DROP ROLE {reader}"));
}

/// On a small bank whose statistics say it fits in a page or two, PostgreSQL plans the
/// transfer's lookups by key as a scan of the whole `accounts` table, and under SERIALIZABLE a
/// scan takes a predicate lock on the whole table (PostgreSQL's documentation, "Serializable
/// Isolation Level"), which every concurrent transfer's write then conflicts with: on a freshly
/// analyzed 100-account bank 80% of transfers at 8 workers failed with 40001, and backoffs grew
/// to seconds. `roachbank transfer`'s sessions set `enable_seqscan = off`
/// (`ConnectOptions::avoid_sequential_scans`): no transfer, in either style, scans `accounts`.
#[test]
fn transfers_on_a_small_analyzed_bank_never_scan_the_accounts_table() {
    if support::not_run_on_cockroachdb(
        "transfers_on_a_small_analyzed_bank_never_scan_the_accounts_table",
        "PostgreSQL's table statistics (pg_stat_user_tables.seq_scan) and planner setting \
         (enable_seqscan)",
    ) {
        return;
    }
    use support::bin::{assert_success, run, temp_dir};
    let db = support::TestDb::new("transfers_never_scan_accounts");
    let dir = temp_dir();
    let roachbank = |args: &[&str]| {
        let mut all = vec!["--database-url", db.url.as_str()];
        all.extend_from_slice(args);
        assert_success(&run(dir.path(), &all, &[]));
    };
    roachbank(&["seed", "--accounts", "100"]);
    // What autovacuum does to a table this size within a minute: the planner now knows the
    // table is one page.
    db.psql("ANALYZE accounts");
    let ended_sessions_scans = || {
        db.wait_for_sessions_to_end();
        db.psql("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'accounts'")
            .parse::<i64>()
            .expect("a count of scans")
    };
    let before = ended_sessions_scans();
    for style in ["one-statement", "tutorial"] {
        roachbank(&[
            "transfer",
            "--count",
            "50",
            "--workers",
            "2",
            "--style",
            style,
        ]);
    }
    let scans = ended_sessions_scans() - before;
    assert_eq!(
        scans, 0,
        "100 transfers scanned the accounts table {scans} times"
    );
}
