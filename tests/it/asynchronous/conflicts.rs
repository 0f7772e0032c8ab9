//! A real conflict, retried: two transfers out of one wallet that both read its balance before
//! either writes (a tokio `Barrier` holds each at that point until the other is there too) —
//! under SERIALIZABLE one of them must fail with 40001 and go again — on PostgreSQL's
//! protocol (a new transaction each time) and CockroachDB's (in place through the restart
//! savepoint, then whole), both commit, and the totals are exact. The async twin of
//! retry_protocol.rs's `write_skew_race_between_two_threads_ends_with_correct_balances_after_a_retry`.

use super::{bb8_pool, deadpool_pool, quick_policy, wallets, wallets_db, within};
use crate::support::control_log::ControlLog;
use crate::support::TestDb;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_retry::asynchronous::{run_transaction, AsyncConnectionSource};
use diesel_retry::{Flavor, Flavored};
use std::fmt::Debug;
use tokio::sync::Barrier;

/// Moves `amount` from wallet 1 to wallet `sink` through `source`, computing wallet 1's new
/// balance from the one it read; on its first attempt it waits at `barrier` between the read
/// and the writes. Returns how many attempts it took.
async fn read_then_write<S>(source: S, barrier: &Barrier, sink: i64, amount: i64) -> u32
where
    S: AsyncConnectionSource<Connection = AsyncPgConnection>,
    S::Error: Debug,
{
    let mut first = true;
    let policy = quick_policy();
    let transfer = run_transaction(source, &policy, async |conn| {
        let balance: i64 = wallets::table
            .find(1)
            .select(wallets::cents)
            .first(conn)
            .await?;
        if std::mem::take(&mut first) {
            barrier.wait().await;
        }
        diesel::update(wallets::table.find(1))
            .set(wallets::cents.eq(balance - amount))
            .execute(conn)
            .await?;
        diesel::update(wallets::table.find(sink))
            .set(wallets::cents.eq(wallets::cents + amount))
            .execute(conn)
            .await?;
        Ok::<_, DieselError>(())
    });
    transfer
        .await
        .unwrap_or_else(|error| panic!("the transfer to {sink} commits: {error:?}"))
        .attempts
}

/// Runs the two racing transfers (30 cents to wallet 2, 50 to wallet 3) through `source` and
/// checks the totals; returns each one's attempts.
async fn race<S>(db: &TestDb, source: impl Fn() -> S) -> [u32; 2]
where
    S: AsyncConnectionSource<Connection = AsyncPgConnection>,
    S::Error: Debug,
{
    let barrier = Barrier::new(2);
    let both = async {
        tokio::join!(
            read_then_write(source(), &barrier, 2, 30),
            read_then_write(source(), &barrier, 3, 50),
        )
    };
    let (to_2, to_3) = within("the two transfers", both).await;
    let attempts = [to_2, to_3];
    assert_eq!(
        db.psql("SELECT string_agg(cents::text, ',' ORDER BY id) FROM wallets"),
        "920,1030,1050",
        "both applied, once each, from the balance the other left ({attempts:?} attempts)"
    );
    assert!(
        attempts.iter().any(|&attempts| attempts > 1),
        "one of the two must have been retried: {attempts:?}"
    );
    attempts
}

fn racing_wallets(test: &str) -> TestDb {
    let db = wallets_db(test);
    db.psql("INSERT INTO wallets VALUES (3, 1000)");
    db
}

fn count(statements: &[String], statement: &str) -> usize {
    statements.iter().filter(|sent| *sent == statement).count()
}

#[tokio::test]
async fn a_forced_conflict_is_retried_in_a_new_transaction_with_postgresqls_protocol() {
    let db = racing_wallets("async_conflict_postgresql");
    let log = ControlLog::default();
    let pool = bb8_pool(&db.url, 2, &log).await;
    let attempts = race(&db, || Flavored::new(&pool, Flavor::PostgreSql)).await;
    let statements = log.statements();
    eprintln!("PostgreSQL's protocol: attempts {attempts:?}, {statements:?}");
    assert_eq!(
        count(&statements, "BEGIN ISOLATION LEVEL SERIALIZABLE"),
        attempts.iter().sum::<u32>() as usize,
        "each attempt in a transaction of its own: {statements:?}"
    );
    assert_eq!(count(&statements, "COMMIT"), 2, "{statements:?}");
    assert!(
        statements.iter().all(|sent| !sent.contains("SAVEPOINT")),
        "{statements:?}"
    );
}

/// On PostgreSQL a retry in place cannot succeed here (the transaction keeps its snapshot
/// across `ROLLBACK TO SAVEPOINT`, and meets the other's committed update again): the loser
/// goes through the savepoint for its immediate retries, then begins again whole.
#[tokio::test]
async fn a_forced_conflict_is_retried_through_the_restart_savepoint_with_cockroachdbs_protocol() {
    let db = racing_wallets("async_conflict_cockroachdb");
    let log = ControlLog::default();
    let pool = deadpool_pool(&db.url, 2, &log);
    let attempts = race(&db, || Flavored::new(&pool, Flavor::CockroachDb)).await;
    let statements = log.statements();
    eprintln!("CockroachDB's protocol: attempts {attempts:?}, {statements:?}");
    assert!(
        count(&statements, "ROLLBACK TO SAVEPOINT cockroach_restart") >= 1,
        "retried in place first: {statements:?}"
    );
    assert_eq!(
        count(&statements, "RELEASE SAVEPOINT cockroach_restart"),
        2,
        "{statements:?}"
    );
    assert_eq!(count(&statements, "COMMIT"), 2, "{statements:?}");
}
