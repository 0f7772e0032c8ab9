//! Each way into the async driver commits with the protocol it should: a `&mut` connection, a
//! bb8 pool and a deadpool pool, the flavour detected or given; read-only work runs read-only;
//! a single statement runs at SERIALIZABLE whatever the session's default; a permanent error
//! is returned unchanged after one attempt, with nothing applied.

use super::{
    bb8_pool, cents, deadpool_pool, logged_connection, open_wallet, pay, protocol, quick_policy,
    server_flavor, wallets, wallets_db, wallets_with_id, within,
};
use crate::support::control_log::ControlLog;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_retry::asynchronous::{
    run_read_only_transaction, run_single_statement, run_transaction, AsyncConnectionSource,
};
use diesel_retry::{Committed, Flavor, Flavored, RetryPolicy, TransactionError};
use std::fmt::Debug;

/// Pays `amount` through `source` and checks it committed at once with the statements of
/// `flavor`'s protocol, as `log` recorded them.
async fn pays_with_protocol<S>(source: S, amount: i64, log: &ControlLog, flavor: Flavor)
where
    S: AsyncConnectionSource<Connection = AsyncPgConnection>,
    S::Error: Debug,
{
    log.clear();
    let policy = quick_policy();
    let done = within(
        "pay",
        run_transaction(source, &policy, async |conn| pay(conn, amount).await),
    )
    .await
    .unwrap_or_else(|error| panic!("{flavor}: {error:?}"));
    assert_eq!(done.attempts, 1, "{flavor}");
    assert_eq!(log.statements(), protocol(flavor), "{flavor}");
}

#[tokio::test]
async fn a_mut_connection_commits_with_postgresqls_protocol_and_stays_usable() {
    let db = wallets_db("async_mut_connection");
    let log = ControlLog::default();
    let mut conn = logged_connection(&db.url, &log).await;
    // A bare connection does not know its engine: PostgreSQL's protocol, correct on both.
    pays_with_protocol(&mut conn, 1, &log, Flavor::PostgreSql).await;
    pays_with_protocol(&mut conn, 10, &log, Flavor::PostgreSql).await;
    assert_eq!(cents(&db), "989,1011");
}

#[tokio::test]
async fn a_bb8_and_a_deadpool_pool_run_the_protocol_of_the_flavour_they_detect() {
    let db = wallets_db("async_detected");
    let log = ControlLog::default();
    let expected = server_flavor();

    let pool = bb8_pool(&db.url, 2, &log).await;
    let bank = within("detect", Flavored::detect_async(&pool))
        .await
        .expect("detect the flavour on bb8");
    assert_eq!(AsyncConnectionSource::flavor(&bank), Some(expected));
    pays_with_protocol(bank, 1, &log, expected).await;

    let pool = deadpool_pool(&db.url, 2, &log);
    let bank = within("detect", Flavored::detect_async(&pool))
        .await
        .expect("detect the flavour on deadpool");
    assert_eq!(AsyncConnectionSource::flavor(&bank), Some(expected));
    pays_with_protocol(bank, 10, &log, expected).await;
    assert_eq!(cents(&db), "989,1011");
}

#[tokio::test]
async fn every_path_given_the_cockroachdb_flavour_commits_through_the_restart_savepoint() {
    let db = wallets_db("async_given_cockroachdb");
    let log = ControlLog::default();
    let cockroach = Flavor::CockroachDb;
    let mut conn = logged_connection(&db.url, &log).await;
    pays_with_protocol(Flavored::new(&mut conn, cockroach), 1, &log, cockroach).await;
    let pool = bb8_pool(&db.url, 2, &log).await;
    pays_with_protocol(Flavored::new(&pool, cockroach), 10, &log, cockroach).await;
    let pool = deadpool_pool(&db.url, 2, &log);
    pays_with_protocol(Flavored::new(&pool, cockroach), 100, &log, cockroach).await;
    assert_eq!(cents(&db), "889,1111");
}

#[tokio::test]
async fn read_only_work_runs_in_a_read_only_transaction_and_a_write_there_fails_once() {
    let db = wallets_db("async_read_only");
    let log = ControlLog::default();
    let pool = bb8_pool(&db.url, 1, &log).await;
    let policy = quick_policy();
    let read = within(
        "read",
        run_read_only_transaction(&pool, &policy, async |conn| {
            let read_only = diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
                "current_setting('transaction_read_only')",
            ))
            .get_result::<String>(conn)
            .await?;
            let wallets = wallets::table.count().get_result::<i64>(conn).await?;
            Ok::<_, DieselError>((read_only, wallets))
        }),
    )
    .await
    .expect("the read commits");
    assert_eq!(read.value, ("on".to_string(), 2));
    assert_eq!(read.attempts, 1);
    assert_eq!(
        log.statements(),
        ["BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY", "COMMIT"]
    );

    let mut runs = 0;
    let write = within(
        "write",
        run_read_only_transaction(&pool, &policy, async |conn| {
            runs += 1;
            pay(conn, 1).await
        }),
    )
    .await;
    match write {
        Err(TransactionError::Failed {
            attempts: 1,
            cause: DieselError::DatabaseError(DatabaseErrorKind::ReadOnlyTransaction, _),
        }) => {}
        other => panic!("expected the read-only refusal after one attempt, got {other:?}"),
    }
    assert_eq!(runs, 1);
    assert_eq!(cents(&db), "1000,1000");
}

/// The isolation the statement `run_single_statement` sends through `source` runs at, as the
/// server says inside it.
async fn single_statement_isolation<S>(source: S) -> String
where
    S: AsyncConnectionSource<Connection = AsyncPgConnection>,
    S::Error: Debug,
{
    let policy = quick_policy();
    let statement = run_single_statement(source, &policy, async |conn| {
        diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
            "current_setting('transaction_isolation')",
        ))
        .get_result::<String>(conn)
        .await
    });
    within("the statement", statement)
        .await
        .expect("the statement runs")
        .value
}

/// The async twin of library_use.rs's
/// `single_statement_on_a_users_read_committed_pool_still_runs_at_serializable`: on a session
/// whose default is READ COMMITTED the statement runs in an explicit SERIALIZABLE transaction
/// (an implicit one takes the session's default); on a SERIALIZABLE session it is sent alone.
#[tokio::test]
async fn a_single_statement_runs_at_serializable_even_on_a_read_committed_session() {
    let db = wallets_db("async_single_statement");
    let set_default = |isolation: &str| {
        db.psql(&format!(
            "ALTER DATABASE \"{}\" SET default_transaction_isolation = '{isolation}'",
            db.name
        ))
    };
    set_default("read committed");
    let log = ControlLog::default();
    let pool = bb8_pool(&db.url, 1, &log).await;
    assert_eq!(single_statement_isolation(&pool).await, "serializable");
    assert_eq!(log.statements(), protocol(Flavor::PostgreSql));
    log.clear();
    let pool = deadpool_pool(&db.url, 1, &log);
    let bank = Flavored::new(&pool, Flavor::CockroachDb);
    assert_eq!(single_statement_isolation(bank).await, "serializable");
    assert_eq!(log.statements(), protocol(Flavor::CockroachDb));

    set_default("serializable");
    let log = ControlLog::default();
    let mut conn = logged_connection(&db.url, &log).await;
    assert_eq!(single_statement_isolation(&mut conn).await, "serializable");
    assert_eq!(
        log.statements(),
        Vec::<String>::new(),
        "a session that is SERIALIZABLE already sends the statement on its own"
    );
}

/// Opens wallet 3, then wallet 1 again: a unique violation, which no retry can fix.
async fn open_a_duplicate(conn: &mut AsyncPgConnection, runs: &mut u32) -> QueryResult<i64> {
    *runs += 1;
    open_wallet(conn, 3).await?;
    open_wallet(conn, 1).await
}

/// Checks that `result` is the unique violation after one attempt, unchanged.
fn assert_unique_violation<P: Debug>(
    path: &str,
    result: Result<Committed<i64>, TransactionError<DieselError, P>>,
) {
    match result {
        Err(TransactionError::Failed {
            attempts: 1,
            cause: DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info),
        }) => assert!(
            info.message().contains("duplicate key"),
            "{path}: {}",
            info.message()
        ),
        other => panic!("{path}: expected the unique violation after one attempt, got {other:?}"),
    }
}

#[tokio::test]
async fn a_unique_violation_fails_after_one_attempt_unchanged_and_nothing_is_applied() {
    let db = wallets_db("async_unique_violation");
    let log = ControlLog::default();
    let policy = RetryPolicy::default();
    let mut runs = 0;

    let mut conn = logged_connection(&db.url, &log).await;
    let result = run_transaction(&mut conn, &policy, async |conn| {
        open_a_duplicate(conn, &mut runs).await
    });
    assert_unique_violation("&mut connection", within("run", result).await);

    let pool = bb8_pool(&db.url, 1, &log).await;
    let result = run_transaction(&pool, &policy, async |conn| {
        open_a_duplicate(conn, &mut runs).await
    });
    assert_unique_violation("bb8", within("run", result).await);

    let pool = deadpool_pool(&db.url, 1, &log);
    let bank = Flavored::new(&pool, Flavor::CockroachDb);
    let result = run_transaction(bank, &policy, async |conn| {
        open_a_duplicate(conn, &mut runs).await
    });
    assert_unique_violation(
        "deadpool, CockroachDB's protocol",
        within("run", result).await,
    );

    assert_eq!(runs, 3, "one attempt each");
    assert_eq!(wallets_with_id(&db, 3), 0, "wallet 3 rolled back each time");
    assert_eq!(cents(&db), "1000,1000");
}

#[tokio::test]
async fn a_transaction_runs_in_a_task_of_its_own_on_a_connection_and_on_borrowed_pools() {
    let db = wallets_db("async_spawned");
    let log = ControlLog::default();
    let mut conn = logged_connection(&db.url, &log).await;
    let on_connection = tokio::spawn(async move {
        run_transaction(&mut conn, &RetryPolicy::default(), async |conn| {
            pay(conn, 1).await
        })
        .await
    });
    within("the task", on_connection).await.unwrap().unwrap();
    let pool = bb8_pool(&db.url, 2, &log).await;
    let on_bb8 = tokio::spawn(async move {
        run_transaction(&pool, &RetryPolicy::default(), async |conn| {
            pay(conn, 10).await
        })
        .await
    });
    within("the task", on_bb8).await.unwrap().unwrap();
    let pool = deadpool_pool(&db.url, 2, &log);
    let on_deadpool = tokio::spawn(async move {
        let bank = Flavored::new(&pool, Flavor::CockroachDb);
        run_transaction(bank, &RetryPolicy::default(), async |conn| {
            pay(conn, 100).await
        })
        .await
    });
    within("the task", on_deadpool).await.unwrap().unwrap();
    assert_eq!(cents(&db), "889,1111");
}
