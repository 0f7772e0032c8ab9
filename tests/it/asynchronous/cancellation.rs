//! What a dropped future leaves behind (a caller's timeout, a `select!` going elsewhere, a
//! client gone): the run is dropped at each step — right after `BEGIN`, in the work after an
//! `UPDATE`, during CockroachDB's `RELEASE SAVEPOINT cockroach_restart`, during `COMMIT`, and
//! a single statement in flight — on a bb8 and a deadpool pool of one connection each, so that
//! "the pool's next connection" is the one a dropped run would have given back. After each, no
//! session of the database stays idle inside a transaction, the rows are free to lock, and the
//! pool's next connection is outside any transaction and its write commits. A `&mut`
//! connection dropped mid-work refuses further transactions; a run spawned as a task of its own
//! commits exactly once although its handle is dropped.
//!
//! The checks read `pg_stat_activity` (empty on CockroachDB, whose sessions are in `SHOW
//! SESSIONS`) and `txid_current_if_assigned()` (PostgreSQL's): these tests do not run there.

use super::{
    bb8_pool, cents, deadpool_pool, eventually, open_wallet, pay, psql, quick_policy, wallets_db,
    wallets_with_id, within,
};
use crate::support::control_log::ControlLog;
use crate::support::proxy::{via_proxy, CuttingProxy};
use crate::support::{not_run_on_cockroachdb, TestDb};
use diesel::result::{Error as DieselError, QueryResult};
use diesel::sql_types::{BigInt, Nullable};
use diesel_async::pooled_connection::{bb8, deadpool};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use diesel_retry::asynchronous::{run_single_statement, run_transaction};
use diesel_retry::{Flavor, Flavored, TransactionError};
use std::fmt::Debug;
use std::future::{pending, Future};
use std::ops::DerefMut;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Why these tests do not run on CockroachDB.
const NEEDS_PG_STAT_ACTIVITY: &str = "checks sessions in pg_stat_activity (empty on CockroachDB) \
     and transactions with txid_current_if_assigned(), which CockroachDB lacks";

/// A pool of at most one connection.
enum OnePool {
    Bb8(bb8::Pool<AsyncPgConnection>),
    Deadpool(deadpool::Pool<AsyncPgConnection>),
}

impl OnePool {
    /// A bb8 and a deadpool pool of one connection each to `url`.
    async fn both(url: &str) -> [OnePool; 2] {
        let log = ControlLog::default();
        [
            OnePool::Bb8(bb8_pool(url, 1, &log).await),
            OnePool::Deadpool(deadpool_pool(url, 1, &log)),
        ]
    }

    fn name(&self) -> &'static str {
        match self {
            OnePool::Bb8(_) => "bb8",
            OnePool::Deadpool(_) => "deadpool",
        }
    }

    /// The connection the pool hands out next.
    async fn next_connection(&self) -> Box<dyn DerefMut<Target = AsyncPgConnection> + Send + '_> {
        let what = format!("{}: the next connection", self.name());
        match self {
            OnePool::Bb8(pool) => Box::new(within(&what, pool.get()).await.expect(&what)),
            OnePool::Deadpool(pool) => Box::new(within(&what, pool.get()).await.expect(&what)),
        }
    }
}

/// Runs `$body` with `$source` bound to `$pool`'s pool, given `$flavor`.
macro_rules! with_source {
    ($pool:expr, $flavor:expr, |$source:ident| $body:expr) => {
        match $pool {
            OnePool::Bb8(pool) => {
                let $source = Flavored::new(pool, $flavor);
                $body
            }
            OnePool::Deadpool(pool) => {
                let $source = Flavored::new(pool, $flavor);
                $body
            }
        }
    };
}

/// Polls `run` until `reached` completes, then drops it unfinished — as a caller's timeout or
/// a `select!` does. The test fails if `run` finishes first, or `reached` takes longer than
/// [`BOUND`].
async fn drop_when<R: Debug>(
    label: &str,
    run: impl Future<Output = R>,
    reached: impl Future<Output = ()>,
) {
    let raced = within(label, async {
        tokio::select! {
            biased;
            () = reached => None,
            finished = run => Some(finished),
        }
    })
    .await;
    if let Some(finished) = raced {
        panic!("{label}: the run ended before it could be dropped: {finished:?}");
    }
}

/// Counts the sessions of `db` that `condition` (on pg_stat_activity's columns) picks.
fn sessions(db: &TestDb, condition: &str) -> String {
    format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND {condition}",
        db.name
    )
}

const IDLE_IN_TRANSACTION: &str = "state LIKE 'idle in transaction%'";
const SLEEPING: &str = "wait_event = 'PgSleep'";

/// Once a session of `db` is in `pg_sleep` (a statement, or a trigger at commit, in flight).
async fn sleeping(db: &TestDb) {
    eventually(
        db,
        "a statement sleeping",
        &sessions(db, SLEEPING),
        |answer| answer.as_deref() == Ok("1"),
    )
    .await;
}

/// Wallet 1's cents.
fn wallet_one(db: &TestDb) -> i64 {
    db.psql("SELECT cents FROM wallets WHERE id = 1")
        .parse()
        .unwrap()
}

/// Checks that the payment of 1 cent out of wallet 1, which held `before`, was applied once or
/// not at all.
fn assert_applied_at_most_once(label: &str, db: &TestDb, before: i64) {
    let applied = before - wallet_one(db);
    eprintln!("{label}: applied {applied} time(s)");
    assert!(
        applied == 0 || applied == 1,
        "{label}: wallet 1 went from {before} to {}: applied at most once",
        wallet_one(db)
    );
}

/// What a dropped run must leave behind, checked in the order the pool's other users meet it:
/// no session of `db` idle inside a transaction (the server ended the dropped one), wallets 1
/// and 2 free to lock for another session, and from `pool` a next connection outside any
/// transaction whose write (wallet `marker`) commits, as psql sees.
async fn assert_left_clean(label: &str, db: &TestDb, pool: &OnePool, marker: i64) {
    let ended = eventually(
        db,
        &format!("{label}: no session idle in a transaction"),
        &sessions(db, IDLE_IN_TRANSACTION),
        |answer| answer.as_deref() == Ok("0"),
    )
    .await;
    let free = eventually(
        db,
        &format!("{label}: wallets 1 and 2 free to lock"),
        "SELECT id FROM wallets WHERE id IN (1, 2) FOR UPDATE NOWAIT",
        |answer| answer.is_ok(),
    )
    .await;
    eprintln!("{label}: no transaction left after {ended:.2?}, rows free after {free:.2?}");
    let mut conn = pool.next_connection().await;
    let assigned = diesel::select(diesel::dsl::sql::<Nullable<BigInt>>(
        "txid_current_if_assigned()",
    ))
    .get_result::<Option<i64>>(&mut **conn);
    let assigned = within(label, assigned)
        .await
        .expect("ask the next connection");
    assert_eq!(
        assigned, None,
        "{label}: the pool's next connection is inside a transaction that wrote"
    );
    within(label, open_wallet(&mut conn, marker))
        .await
        .unwrap_or_else(|error| panic!("{label}: a write on the next connection: {error}"));
    drop(conn);
    assert_eq!(
        psql(
            db,
            &format!("SELECT count(*) FROM wallets WHERE id = {marker}")
        )
        .await,
        Ok("1".to_string()),
        "{label}: the next connection's write committed"
    );
}

#[tokio::test]
async fn a_run_dropped_right_after_begin_leaves_no_transaction_in_the_pool() {
    const TEST: &str = "a_run_dropped_right_after_begin_leaves_no_transaction_in_the_pool";
    if not_run_on_cockroachdb(TEST, NEEDS_PG_STAT_ACTIVITY) {
        return;
    }
    let db = wallets_db("async_drop_after_begin");
    let mut marker = 100;
    for pool in OnePool::both(&db.url).await {
        for flavor in [Flavor::PostgreSql, Flavor::CockroachDb] {
            let label = format!("{}, {flavor}, dropped after BEGIN", pool.name());
            let began = Notify::new();
            let policy = quick_policy();
            with_source!(&pool, flavor, |source| {
                // Work that pends before its first statement: the transaction is open.
                let run = run_transaction(source, &policy, async |_conn| {
                    began.notify_one();
                    pending::<()>().await;
                    Ok::<(), DieselError>(())
                });
                drop_when(&label, run, began.notified()).await
            });
            marker += 1;
            assert_left_clean(&label, &db, &pool, marker).await;
        }
    }
}

#[tokio::test]
async fn a_run_dropped_in_its_work_after_an_update_leaves_no_transaction_and_no_lock() {
    const TEST: &str =
        "a_run_dropped_in_its_work_after_an_update_leaves_no_transaction_and_no_lock";
    if not_run_on_cockroachdb(TEST, NEEDS_PG_STAT_ACTIVITY) {
        return;
    }
    let db = wallets_db("async_drop_in_work");
    let mut marker = 100;
    for pool in OnePool::both(&db.url).await {
        // With CockroachDB's protocol, this is also a drop before RELEASE.
        for flavor in [Flavor::PostgreSql, Flavor::CockroachDb] {
            let label = format!("{}, {flavor}, dropped in the work", pool.name());
            let updated = Notify::new();
            let policy = quick_policy();
            with_source!(&pool, flavor, |source| {
                let run = run_transaction(source, &policy, async |conn| {
                    pay(conn, 1).await?;
                    updated.notify_one();
                    pending::<()>().await;
                    Ok::<(), DieselError>(())
                });
                drop_when(&label, run, updated.notified()).await
            });
            marker += 1;
            assert_left_clean(&label, &db, &pool, marker).await;
            assert_eq!(cents(&db), "1000,1000", "{label}: the update rolled back");
        }
    }
}

/// How long the proxy holds the answer to `RELEASE SAVEPOINT cockroach_restart`: the run is
/// dropped meanwhile.
const RELEASE_HELD: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_run_dropped_during_release_leaves_no_transaction_and_no_lock() {
    const TEST: &str = "a_run_dropped_during_release_leaves_no_transaction_and_no_lock";
    if not_run_on_cockroachdb(TEST, NEEDS_PG_STAT_ACTIVITY) {
        return;
    }
    let db = wallets_db("async_drop_during_release");
    let proxy = CuttingProxy::in_front_of_server();
    let mut marker = 100;
    for pool in OnePool::both(&via_proxy(&db, &proxy)).await {
        let label = format!("{}, dropped during RELEASE", pool.name());
        let released = proxy.cuts() + 1;
        proxy.delay_answer_to("RELEASE SAVEPOINT cockroach_restart", RELEASE_HELD);
        let policy = quick_policy();
        let release_sent = async {
            while proxy.cuts() < released {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        with_source!(&pool, Flavor::CockroachDb, |source| {
            let run = run_transaction(source, &policy, async |conn| pay(conn, 1).await);
            drop_when(&label, run, release_sent).await
        });
        let started = Instant::now();
        marker += 1;
        assert_left_clean(&label, &db, &pool, marker).await;
        assert!(
            started.elapsed() < RELEASE_HELD,
            "{label}: the server heard of the drop at once, not when the answer came"
        );
        // On PostgreSQL `RELEASE SAVEPOINT` is not the commit: nothing was. (On CockroachDB it
        // is, and a drop during it leaves the outcome unknown.)
        assert_eq!(cents(&db), "1000,1000", "{label}: not committed");
    }
}

/// Makes every commit of a transaction that updated wallet 1 sleep 2 s, in a deferred
/// constraint trigger that PostgreSQL runs inside `COMMIT`.
const SLOW_COMMIT: &str = "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$;
     CREATE CONSTRAINT TRIGGER slow_commit AFTER UPDATE ON wallets
       DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.id = 1)
       EXECUTE FUNCTION slow_commit();";

#[tokio::test]
async fn a_run_dropped_during_commit_leaves_no_transaction_and_applies_at_most_once() {
    const TEST: &str = "a_run_dropped_during_commit_leaves_no_transaction_and_applies_at_most_once";
    if not_run_on_cockroachdb(TEST, NEEDS_PG_STAT_ACTIVITY) {
        return;
    }
    let db = wallets_db("async_drop_during_commit");
    db.psql(SLOW_COMMIT);
    let mut marker = 100;
    for pool in OnePool::both(&db.url).await {
        let label = format!("{}, dropped during COMMIT", pool.name());
        let before = wallet_one(&db);
        let policy = quick_policy();
        with_source!(&pool, Flavor::PostgreSql, |source| {
            let run = run_transaction(source, &policy, async |conn| pay(conn, 1).await);
            drop_when(&label, run, sleeping(&db)).await
        });
        marker += 1;
        assert_left_clean(&label, &db, &pool, marker).await;
        // The COMMIT was sent: whether it went through is unknown to the dropped caller (here
        // the server finishes it, then finds its client gone). Only "at most once" holds.
        assert_applied_at_most_once(&label, &db, before);
    }
}

/// A single statement sent alone (the sessions default to SERIALIZABLE) that sleeps 3 s.
const SLOW_STATEMENT: &str =
    "UPDATE wallets SET cents = cents - 1 WHERE id = 1 AND (SELECT true FROM pg_sleep(3))";

/// A single statement is its own transaction: a run dropped while it is in flight leaves no
/// transaction open, but a connection still busy with it. The pool must not hand that one out
/// (its next user would wait behind the abandoned statement): its next connection answers at
/// once, while the statement still runs.
#[tokio::test]
async fn a_single_statement_dropped_in_flight_leaves_the_pool_a_connection_that_answers_at_once() {
    const TEST: &str =
        "a_single_statement_dropped_in_flight_leaves_the_pool_a_connection_that_answers_at_once";
    if not_run_on_cockroachdb(TEST, NEEDS_PG_STAT_ACTIVITY) {
        return;
    }
    let db = wallets_db("async_drop_single_statement");
    db.psql(&format!(
        "ALTER DATABASE \"{}\" SET default_transaction_isolation = 'serializable'",
        db.name
    ));
    for pool in OnePool::both(&db.url).await {
        let label = format!("{}, single statement dropped in flight", pool.name());
        let before = wallet_one(&db);
        let policy = quick_policy();
        with_source!(&pool, Flavor::PostgreSql, |source| {
            let run = run_single_statement(source, &policy, async |conn| {
                diesel::sql_query(SLOW_STATEMENT).execute(conn).await
            });
            drop_when(&label, run, sleeping(&db)).await
        });
        let started = Instant::now();
        let mut conn = pool.next_connection().await;
        within(&label, diesel::sql_query("SELECT 1").execute(&mut **conn))
            .await
            .expect("the next connection answers");
        let answered = started.elapsed();
        drop(conn);
        assert_eq!(
            psql(&db, &sessions(&db, SLEEPING)).await,
            Ok("1".to_string()),
            "{label}: the next connection answered after {answered:?}, not while the dropped \
             statement was still running"
        );
        eprintln!("{label}: the next connection answered after {answered:.2?}");
        // The statement commits when it ends, unknown to the dropped caller: at most once.
        eventually(
            &db,
            &format!("{label}: the dropped statement ends"),
            &sessions(&db, SLEEPING),
            |answer| answer.as_deref() == Ok("0"),
        )
        .await;
        assert_applied_at_most_once(&label, &db, before);
    }
}

#[tokio::test]
async fn a_mut_connection_dropped_mid_work_refuses_further_transactions_instead_of_writing_into_it()
{
    const TEST: &str =
        "a_mut_connection_dropped_mid_work_refuses_further_transactions_instead_of_writing_into_it";
    if not_run_on_cockroachdb(TEST, NEEDS_PG_STAT_ACTIVITY) {
        return;
    }
    let db = wallets_db("async_drop_mut_connection");
    let mut conn = within("connect", AsyncPgConnection::establish(&db.url))
        .await
        .expect("a connection");
    let updated = Notify::new();
    let policy = quick_policy();
    let run = run_transaction(&mut conn, &policy, async |conn| {
        pay(conn, 1).await?;
        updated.notify_one();
        pending::<()>().await;
        Ok::<(), DieselError>(())
    });
    drop_when("&mut, dropped in the work", run, updated.notified()).await;

    // diesel-async's own transaction on it would be a savepoint inside the abandoned one,
    // "committed" into a transaction nobody commits.
    let nested = conn.transaction(async |conn| open_wallet(conn, 7).await);
    match within("diesel-async's transaction", nested).await {
        Err(DieselError::BrokenTransactionManager) => {}
        other => {
            panic!("diesel-async's transaction: expected BrokenTransactionManager, got {other:?}")
        }
    }
    // The driver refuses it at once: retrying on it could only fail again.
    let again = run_transaction(&mut conn, &policy, async |conn| open_wallet(conn, 8).await);
    match within("run_transaction again", again).await {
        Err(TransactionError::Connection {
            attempts: 0,
            error: DieselError::BrokenTransactionManager,
        }) => {}
        other => panic!("run_transaction again: expected BrokenTransactionManager, got {other:?}"),
    }
    assert_eq!(wallets_with_id(&db, 7) + wallets_with_id(&db, 8), 0);
    assert_eq!(cents(&db), "1000,1000");
    // The abandoned transaction lives as long as the connection: dropping it ends the session.
    drop(conn);
    eventually(
        &db,
        "the dropped connection's transaction ends",
        &sessions(&db, IDLE_IN_TRANSACTION),
        |answer| answer.as_deref() == Ok("0"),
    )
    .await;
}

/// Says it `began`, waits until told to `go`, then pays 7 cents.
async fn pay_when_told(
    conn: &mut AsyncPgConnection,
    began: &Notify,
    go: &Notify,
) -> QueryResult<usize> {
    began.notify_one();
    go.notified().await;
    pay(conn, 7).await
}

/// The way to run work to its end whatever its caller does (asynchronous.rs's module
/// documentation): a task of its own. Its handle is dropped while the work waits inside the
/// transaction; it commits all the same, once.
#[tokio::test]
async fn a_spawned_transaction_whose_handle_is_dropped_still_commits_exactly_once() {
    let db = wallets_db("async_spawned_detached");
    let pool = bb8_pool(&db.url, 1, &ControlLog::default()).await;
    let (began, go) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (task_began, task_go) = (Arc::clone(&began), Arc::clone(&go));
    let task = tokio::spawn(async move {
        run_transaction(&pool, &quick_policy(), async move |conn| {
            pay_when_told(conn, &task_began, &task_go).await
        })
        .await
    });
    within("the transaction begins", began.notified()).await;
    drop(task);
    go.notify_one();
    let took = eventually(
        &db,
        "the detached transaction commits",
        "SELECT string_agg(cents::text, ',' ORDER BY id) FROM wallets",
        |answer| answer.as_deref() == Ok("993,1007"),
    )
    .await;
    eprintln!("committed {took:.2?} after its handle was dropped");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cents(&db), "993,1007", "applied exactly once");
}
