//! `run_transaction` against real databases: the statements each protocol issues, what is
//! retried and what is not, and that a retried transaction commits exactly once.
//!
//! CockroachDB's protocol is driven against the suite's PostgreSQL (which accepts the same
//! `SAVEPOINT cockroach_restart` statements) by overriding the detected flavour; conflicts are
//! injected with a test-only PL/pgSQL function that raises 40001 for its first K calls. On a
//! CockroachDB (`TEST_DATABASE_URL`) those tests step aside, and their counterparts inject the
//! conflicts with CockroachDB's own hook, `SET inject_retry_errors_enabled = 'true'`.

use crate::support;
use crate::support::proxy::{via_proxy, CuttingProxy};
use crate::support::{not_run_on_cockroachdb, not_run_on_postgresql, TestDb, TestSqlite};
use diesel::connection::{Instrumentation, InstrumentationEvent, SimpleConnection};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_retry::{
    run_single_statement, run_transaction, Committed, DatabaseErrorSource, RetryPolicy,
    TransactionError,
};
use roachbank::db::config::{DatabaseConfig, UrlSource};
use roachbank::db::{
    classify, sqlstate, ConnectOptions, Database, DbConnection, ErrorClass, Flavor,
};
use roachbank::schema::accounts;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

/// Every statement the pool's connections send, in order.
#[derive(Clone, Default)]
struct StatementLog(Arc<Mutex<Vec<String>>>);

impl StatementLog {
    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    /// The transaction-control statements, in order.
    fn transaction_control(&self) -> Vec<String> {
        const CONTROL: &[&str] = &["BEGIN", "SAVEPOINT", "ROLLBACK", "RELEASE", "COMMIT"];
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|sql| CONTROL.iter().any(|word| sql.starts_with(word)))
            .cloned()
            .collect()
    }
}

struct Recorder(StatementLog);

impl Instrumentation for Recorder {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            let text = query.to_string();
            let sql = text.split(" -- binds:").next().unwrap_or(&text).trim();
            self.0 .0.lock().unwrap().push(sql.to_string());
        }
    }
}

/// Opens `url` with one pooled connection, recording statements; `flavor` overrides detection.
fn open(url: &str, flavor: Option<Flavor>) -> (Database, StatementLog) {
    let log = StatementLog::default();
    let recorder_log = log.clone();
    let options = ConnectOptions {
        pool_size: 1,
        flavor_override: flavor,
        instrumentation: Some(Arc::new(move || {
            Box::new(Recorder(recorder_log.clone())) as Box<dyn Instrumentation>
        })),
        ..ConnectOptions::default()
    };
    let config = DatabaseConfig::parse(url, UrlSource::Flag).unwrap();
    let db = Database::open(config, &options).expect("open the test database");
    log.clear();
    (db, log)
}

/// A policy that retries at once (tests wait for nothing).
fn quick_policy(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        initial_backoff: Duration::from_micros(100),
        max_backoff: Duration::from_millis(5),
        ..RetryPolicy::default()
    }
}

/// Why the tests that inject conflicts with [`install_conflict_injector`] do not run on
/// CockroachDB.
const NEEDS_PLPGSQL_INJECTOR: &str = "conflicts are injected by a test-only PL/pgSQL function \
     raising 40001 (CockroachDB has PL/pgSQL only from 23.2); the *_server_injected_* tests \
     prove the same there with CockroachDB's own inject_retry_errors_enabled";

/// Creates `fail_first(k)`: raises 40001 on its first `k` calls in this database, then
/// returns. Its counter is a sequence, which rollbacks do not undo.
/// A fresh database named after `name` with the test-only `fail_first` conflict injector,
/// opened as `flavor` through a one-connection pool whose statements are logged.
fn open_with_conflict_injector(name: &str, flavor: Flavor) -> (TestDb, Database, StatementLog) {
    let db = TestDb::new(name);
    db.psql(support::CONFLICT_INJECTOR);
    let (database, log) = open(&db.url, Some(flavor));
    (db, database, log)
}

fn fail_first(conn: &mut DbConnection, k: u32) -> QueryResult<()> {
    diesel::sql_query(format!("SELECT fail_first({k})"))
        .execute(conn)
        .map(|_| ())
}

fn insert_account(conn: &mut DbConnection, id: i64, balance: i64) -> QueryResult<()> {
    diesel::insert_into(accounts::table)
        .values((accounts::id.eq(id), accounts::balance.eq(balance)))
        .execute(conn)
        .map(|_| ())
}

fn account_count(db: &TestDb) -> i64 {
    db.psql("SELECT count(*) FROM accounts").parse().unwrap()
}

fn strings(statements: &[&str]) -> Vec<String> {
    statements.iter().map(|s| s.to_string()).collect()
}

/// The transaction control of CockroachDB's protocol retrying `retries` times in one
/// transaction: BEGIN, SAVEPOINT, `retries` × ROLLBACK TO SAVEPOINT, RELEASE, COMMIT.
fn savepoint_protocol_retried(retries: usize) -> Vec<String> {
    let mut statements = strings(&[
        "BEGIN ISOLATION LEVEL SERIALIZABLE",
        "SAVEPOINT cockroach_restart",
    ]);
    statements.extend(std::iter::repeat_n(
        "ROLLBACK TO SAVEPOINT cockroach_restart".to_string(),
        retries,
    ));
    statements.extend(strings(&["RELEASE SAVEPOINT cockroach_restart", "COMMIT"]));
    statements
}

/// Turns on CockroachDB's `inject_retry_errors_enabled` for the pool's one connection (the
/// session `run_transaction` then uses): every statement but SET inside an explicit transaction
/// fails with 40001 until the transaction has been retried through `ROLLBACK TO SAVEPOINT
/// cockroach_restart` three times (cockroachdb/cockroach `pkg/sql/conn_executor_exec.go`,
/// `numTxnRetryErrors = 3`); a transaction begun anew starts that count again.
fn inject_retry_errors(database: &Database, log: &StatementLog) {
    let mut conn = database.pool().get().expect("the pool's connection");
    conn.batch_execute("SET inject_retry_errors_enabled = 'true'")
        .expect("SET inject_retry_errors_enabled");
    log.clear();
}

#[test]
fn cockroach_protocol_retries_injected_40001_through_the_savepoint_and_commits_once() {
    if not_run_on_cockroachdb(
        "cockroach_protocol_retries_injected_40001_through_the_savepoint_and_commits_once",
        NEEDS_PLPGSQL_INJECTOR,
    ) {
        return;
    }
    let (db, database, log) =
        open_with_conflict_injector("crdb_injected_40001", Flavor::CockroachDb);
    let mut runs = 0;
    let committed = run_transaction(&database, &quick_policy(10), |conn| {
        runs += 1;
        fail_first(conn, 2)?;
        insert_account(conn, 1, 100)
    })
    .expect("commits after two retries");
    assert_eq!(committed.attempts, 3);
    assert_eq!(runs, 3);
    assert_eq!(account_count(&db), 1, "exactly one committed effect");
    assert_eq!(log.transaction_control(), savepoint_protocol_retried(2));
}

/// Past `immediate_retries` a CockroachDB transaction that keeps losing waits like any other —
/// but never inside the transaction, whose intents would block every transaction behind it
/// while it sleeps: it is rolled back whole, the backoff waited out holding nothing, and begun
/// again. The first retries stay in it (its place in line: the same transaction record, its
/// earlier writes still locked, its timestamp pushed forward).
#[test]
fn cockroach_protocol_past_the_immediate_retries_rolls_back_whole_and_begins_again() {
    if not_run_on_cockroachdb(
        "cockroach_protocol_past_the_immediate_retries_rolls_back_whole_and_begins_again",
        NEEDS_PLPGSQL_INJECTOR,
    ) {
        return;
    }
    let (db, database, log) =
        open_with_conflict_injector("crdb_past_immediate", Flavor::CockroachDb);
    let policy = quick_policy(10);
    assert_eq!(policy.immediate_retries, 3, "the default");
    let committed = run_transaction(&database, &policy, |conn| {
        fail_first(conn, 5)?;
        insert_account(conn, 1, 100)
    })
    .expect("commits after five retries");
    assert_eq!(committed.attempts, 6);
    assert_eq!(account_count(&db), 1, "exactly one committed effect");
    let mut expected = savepoint_protocol_retried(3);
    expected.truncate(5); // BEGIN, SAVEPOINT, three ROLLBACK TO SAVEPOINT
    for _ in 0..2 {
        expected.extend(strings(&[
            "ROLLBACK",
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "SAVEPOINT cockroach_restart",
        ]));
    }
    expected.extend(strings(&["RELEASE SAVEPOINT cockroach_restart", "COMMIT"]));
    assert_eq!(log.transaction_control(), expected);
}

#[test]
fn cockroach_protocol_retries_server_injected_40001_through_the_savepoint_and_commits_once() {
    if not_run_on_postgresql(
        "cockroach_protocol_retries_server_injected_40001_through_the_savepoint_and_commits_once",
        "inject_retry_errors_enabled session variable",
    ) {
        return;
    }
    let db = TestDb::new("crdb_server_injected_40001");
    let (database, log) = open(&db.url, None);
    assert_eq!(database.flavor(), Flavor::CockroachDb, "detected");
    inject_retry_errors(&database, &log);
    let mut runs = 0;
    let committed = run_transaction(&database, &quick_policy(10), |conn| {
        runs += 1;
        insert_account(conn, 1, 100)
    })
    .expect("commits after three retries");
    assert_eq!(
        committed.attempts, 4,
        "three injected 40001s, then the commit"
    );
    assert_eq!(runs, 4);
    assert_eq!(account_count(&db), 1, "exactly one committed effect");
    assert_eq!(
        log.transaction_control(),
        savepoint_protocol_retried(3),
        "every retry stayed in the one transaction"
    );
}

#[test]
fn postgres_protocol_retries_injected_40001_with_a_new_serializable_transaction_and_commits_once() {
    if not_run_on_cockroachdb(
        "postgres_protocol_retries_injected_40001_with_a_new_serializable_transaction_and_commits_once",
        NEEDS_PLPGSQL_INJECTOR,
    ) {
        return;
    }
    let (db, database, log) = open_with_conflict_injector("pg_injected_40001", Flavor::PostgreSql);
    let committed = run_transaction(&database, &quick_policy(10), |conn| {
        fail_first(conn, 2)?;
        insert_account(conn, 1, 100)
    })
    .expect("commits after two retries");
    assert_eq!(committed.attempts, 3);
    assert_eq!(account_count(&db), 1, "exactly one committed effect");
    assert_eq!(
        log.transaction_control(),
        strings(&[
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "ROLLBACK",
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "ROLLBACK",
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "COMMIT",
        ])
    );
}

/// One statement that raises 40001 on its first `k` runs (through `fail_first`) and otherwise
/// inserts account `id`.
fn insert_account_failing_first(conn: &mut DbConnection, k: u32, id: i64) -> QueryResult<()> {
    diesel::sql_query(format!(
        "INSERT INTO accounts (id, balance) SELECT {id}, 100 FROM (SELECT fail_first({k})) f"
    ))
    .execute(conn)
    .map(|_| ())
}

#[test]
fn single_statement_sends_no_transaction_control_and_retries_40001_by_sending_it_again() {
    if not_run_on_cockroachdb(
        "single_statement_sends_no_transaction_control_and_retries_40001_by_sending_it_again",
        NEEDS_PLPGSQL_INJECTOR,
    ) {
        return;
    }
    for flavor in [Flavor::PostgreSql, Flavor::CockroachDb] {
        let (db, database, log) = open_with_conflict_injector("single_statement_40001", flavor);
        let mut runs = 0;
        let committed = run_single_statement(&database, &quick_policy(10), |conn| {
            runs += 1;
            insert_account_failing_first(conn, 2, 1)
        })
        .expect("commits after two retries");
        assert_eq!(committed.attempts, 3, "{flavor}");
        assert_eq!(runs, 3, "{flavor}");
        assert_eq!(
            account_count(&db),
            1,
            "{flavor}: exactly one committed effect"
        );
        assert_eq!(
            log.transaction_control(),
            Vec::<String>::new(),
            "{flavor}: no BEGIN, SAVEPOINT, ROLLBACK, RELEASE or COMMIT: the statement is its \
             own transaction"
        );
        // Beside the session's set-up (SET …) when the pool opens its connection.
        let sent: Vec<String> = log
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|sql| !sql.starts_with("SET "))
            .cloned()
            .collect();
        assert_eq!(
            sent.len(),
            3,
            "{flavor}: one statement per attempt, nothing else: {sent:?}"
        );
    }
}

/// The statements one transfer sends, on each protocol, in each style: the default is one
/// statement and nothing else (one round trip); the tutorial's is an interactive transaction.
#[test]
fn a_one_statement_transfer_sends_one_statement_and_a_tutorial_one_an_interactive_transaction() {
    use roachbank::bank::{self, TransferStyle};
    for flavor in [Flavor::PostgreSql, Flavor::CockroachDb] {
        let db = TestDb::new("statements_per_transfer");
        let (database, log) = open(&db.url, Some(flavor));
        bank::seed(&database, &quick_policy(10), 10).expect("seed");
        let sent = |style| {
            log.clear();
            bank::transfer_in_style(&database, &quick_policy(10), style).expect("a transfer");
            log.0.lock().unwrap().clone()
        };
        let one = sent(TransferStyle::OneStatement);
        assert_eq!(one.len(), 1, "{flavor}: {one:?}");
        assert!(one[0].starts_with("WITH source AS"), "{flavor}: {one:?}");
        let tutorial = sent(TransferStyle::Tutorial);
        let (first, last) = match flavor {
            Flavor::CockroachDb => ("SAVEPOINT cockroach_restart", "COMMIT"),
            _ => ("BEGIN ISOLATION LEVEL SERIALIZABLE", "COMMIT"),
        };
        assert!(
            tutorial.iter().any(|sql| sql == first)
                && tutorial.last().map(String::as_str) == Some(last),
            "{flavor}: {tutorial:?}"
        );
        assert!(
            tutorial.len() >= 7,
            "{flavor}: BEGIN, two picks, two UPDATEs, the INSERT, COMMIT: {tutorial:?}"
        );
    }
}

/// CockroachDB retries a statement sent on its own (an implicit transaction) on the server:
/// `crdb_internal.force_retry` makes it fail with a retryable error until the interval has
/// passed since the transaction began, and the client sees one attempt that succeeded.
#[test]
fn single_statement_forced_to_retry_is_retried_by_cockroachdb_itself() {
    if not_run_on_postgresql(
        "single_statement_forced_to_retry_is_retried_by_cockroachdb_itself",
        "crdb_internal.force_retry and the server's automatic retry of implicit transactions",
    ) {
        return;
    }
    let db = TestDb::new("single_statement_server_retry");
    let (database, log) = open(&db.url, None);
    let committed = run_single_statement(&database, &quick_policy(10), |conn| {
        diesel::sql_query(
            "INSERT INTO accounts (id, balance) \
             SELECT 1, 100 FROM (SELECT crdb_internal.force_retry('50ms')) f",
        )
        .execute(conn)
    })
    .expect("the server retried it until it committed");
    assert_eq!(committed.attempts, 1, "the client never saw the retries");
    assert_eq!(account_count(&db), 1);
    assert!(log.transaction_control().is_empty());
}

#[test]
fn write_skew_race_between_two_threads_ends_with_correct_balances_after_a_retry() {
    let db = TestDb::new("write_skew");
    let config = DatabaseConfig::parse(&db.url, UrlSource::Flag).unwrap();
    let database = Database::open(
        config,
        &ConnectOptions {
            pool_size: 2,
            ..ConnectOptions::default()
        },
    )
    .unwrap();
    db.psql("INSERT INTO accounts (id, balance) VALUES (1, 100), (2, 0), (3, 0)");
    let barrier = Barrier::new(2);
    let policy = quick_policy(20);
    // Both take money from account 1 based on the balance they read; the barrier makes both
    // read before either writes, which loses an update unless the loser is retried.
    let attempts: Vec<u32> = std::thread::scope(|scope| {
        let handles: Vec<_> = [(2, 30), (3, 50)]
            .into_iter()
            .map(|(sink, amount)| {
                let (database, barrier, policy) = (&database, &barrier, &policy);
                scope.spawn(move || {
                    let mut first = true;
                    run_transaction(database, policy, |conn| {
                        let balance: i64 = accounts::table
                            .find(1)
                            .select(accounts::balance)
                            .first(conn)?;
                        if std::mem::take(&mut first) {
                            barrier.wait();
                        }
                        diesel::update(accounts::table.find(1))
                            .set(accounts::balance.eq(balance - amount))
                            .execute(conn)?;
                        diesel::update(accounts::table.find(sink))
                            .set(accounts::balance.eq(accounts::balance + amount))
                            .execute(conn)?;
                        Ok::<_, DieselError>(())
                    })
                    .expect("both transfers commit")
                    .attempts
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        db.psql("SELECT string_agg(balance::text, ',' ORDER BY id) FROM accounts"),
        "20,30,50"
    );
    assert!(
        attempts.iter().sum::<u32>() > 2,
        "one of the two must have been retried: {attempts:?}"
    );
}

#[test]
fn exhausted_retries_return_the_typed_error_with_attempts_and_last_cause_and_commit_nothing() {
    if not_run_on_cockroachdb(
        "exhausted_retries_return_the_typed_error_with_attempts_and_last_cause_and_commit_nothing",
        NEEDS_PLPGSQL_INJECTOR,
    ) {
        return;
    }
    for flavor in [Flavor::CockroachDb, Flavor::PostgreSql] {
        let (db, database, log) = open_with_conflict_injector("exhausted", flavor);
        let mut runs = 0;
        let result = run_transaction(&database, &quick_policy(2), |conn| {
            runs += 1;
            insert_account(conn, runs, 1)?;
            fail_first(conn, 100)
        });
        assert_exhausted_after_three_attempts(flavor, result, runs, &db, &log);
    }
}

/// With one CockroachDB session injecting 40001 into every attempt — the savepoint protocol's
/// first three, and every one of the PostgreSQL protocol's new transactions — a policy of two
/// retries gives up after three attempts, whichever protocol runs.
#[test]
fn exhausted_retries_of_server_injected_40001_return_the_typed_error_and_commit_nothing() {
    if not_run_on_postgresql(
        "exhausted_retries_of_server_injected_40001_return_the_typed_error_and_commit_nothing",
        "inject_retry_errors_enabled session variable",
    ) {
        return;
    }
    for flavor in [Flavor::CockroachDb, Flavor::PostgreSql] {
        let db = TestDb::new("exhausted_server_injected");
        let (database, log) = open(&db.url, Some(flavor));
        inject_retry_errors(&database, &log);
        let mut runs = 0;
        let result = run_transaction(&database, &quick_policy(2), |conn| {
            runs += 1;
            insert_account(conn, runs, 1)
        });
        assert_exhausted_after_three_attempts(flavor, result, runs, &db, &log);
    }
}

/// `result` is `RetriesExhausted` after 3 attempts (the work ran 3 times) with a serialization
/// failure as its last cause, nothing was committed, and the last word was a ROLLBACK.
fn assert_exhausted_after_three_attempts(
    flavor: Flavor,
    result: Result<Committed<()>, TransactionError<DieselError>>,
    runs: i64,
    db: &TestDb,
    log: &StatementLog,
) {
    match result {
        Err(TransactionError::RetriesExhausted { attempts, last }) => {
            assert_eq!(attempts, 3, "{flavor}");
            assert!(
                matches!(
                    last,
                    DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _)
                ),
                "{flavor}: last cause {last:?}"
            );
        }
        other => panic!("{flavor}: expected RetriesExhausted, got {other:?}"),
    }
    assert_eq!(runs, 3, "{flavor}");
    assert_eq!(account_count(db), 0, "{flavor}: nothing committed");
    assert_eq!(
        log.transaction_control().last().map(String::as_str),
        Some("ROLLBACK"),
        "{flavor}"
    );
}

/// An application error type wrapping database errors, as callers write them.
#[derive(Debug)]
enum WorkError {
    Database(DieselError),
    Refused(&'static str),
}

impl From<DieselError> for WorkError {
    fn from(error: DieselError) -> Self {
        WorkError::Database(error)
    }
}

impl DatabaseErrorSource for WorkError {
    fn database_error(&self) -> Option<&DieselError> {
        match self {
            WorkError::Database(error) => Some(error),
            WorkError::Refused(_) => None,
        }
    }
}

fn assert_non_retryable_errors_roll_back_after_one_attempt(url: &str, flavor: Option<Flavor>) {
    let (database, _log) = open(url, flavor);
    let label = format!("{flavor:?} {url}");
    // A database error that retrying cannot fix: a duplicate key.
    let mut runs = 0;
    let result = run_transaction(&database, &quick_policy(10), |conn| {
        runs += 1;
        insert_account(conn, 7, 1)?;
        insert_account(conn, 7, 1)
    });
    assert!(
        matches!(
            result,
            Err(TransactionError::Failed {
                cause: DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _),
                ..
            })
        ),
        "{label}: {result:?}"
    );
    assert_eq!(runs, 1, "{label}");
    // The application's own error comes back unchanged.
    let mut runs = 0;
    let result = run_transaction(&database, &quick_policy(10), |conn| {
        runs += 1;
        insert_account(conn, 8, 1)?;
        Err::<(), _>(WorkError::Refused("not today"))
    });
    assert!(
        matches!(
            result,
            Err(TransactionError::Failed {
                cause: WorkError::Refused("not today"),
                ..
            })
        ),
        "{label}: {result:?}"
    );
    assert_eq!(runs, 1, "{label}");
    // Neither insert survived, and the connection is usable for the next transaction.
    let count = run_transaction(&database, &quick_policy(0), |conn| {
        accounts::table.count().get_result::<i64>(conn)
    })
    .unwrap();
    assert_eq!(count.value, 0, "{label}: both transactions rolled back");
}

#[test]
fn non_retryable_error_is_rolled_back_and_returned_unchanged_after_one_attempt() {
    for flavor in [Flavor::CockroachDb, Flavor::PostgreSql] {
        let db = TestDb::new("non_retryable");
        assert_non_retryable_errors_roll_back_after_one_attempt(&db.url, Some(flavor));
    }
    let sqlite = TestSqlite::new();
    assert_non_retryable_errors_roll_back_after_one_attempt(&sqlite.url, None);
}

/// Why the tests raising errors in another language do not run on CockroachDB.
const RAISES_TRANSLATED_ERRORS: &str = "errors are raised by a test-only PL/pgSQL function \
     (CockroachDB has PL/pgSQL only from 23.2), in German as a PostgreSQL with lc_messages = \
     'de_DE' speaks; CockroachDB's own messages are never translated (lc_messages is \
     unsupported, pkg/sql/unsupported_vars.go)";

/// Creates `raise_first(k, code, message)`: raises `message` with SQLSTATE `code` on its first
/// `k` calls in this database, then returns. Any role may raise any code this way, where
/// `SET lc_messages` (which translates the server's own messages) needs a superuser.
const RAISE_FIRST: &str = "CREATE SEQUENCE raised_errors;
     CREATE FUNCTION raise_first(k BIGINT, code TEXT, message TEXT) RETURNS BIGINT
     LANGUAGE plpgsql AS $$
     DECLARE n BIGINT := nextval('raised_errors');
     BEGIN
       IF n <= k THEN
         RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message;
       END IF;
       RETURN n;
     END $$;";

fn raise_first(conn: &mut DbConnection, k: u32, code: &str, message: &str) -> QueryResult<()> {
    diesel::sql_query(format!("SELECT raise_first({k}, '{code}', '{message}')"))
        .execute(conn)
        .map(|_| ())
}

#[test]
fn errors_from_the_server_are_classified_by_their_sqlstate_whatever_their_language() {
    if not_run_on_cockroachdb(
        "errors_from_the_server_are_classified_by_their_sqlstate_whatever_their_language",
        RAISES_TRANSLATED_ERRORS,
    ) {
        return;
    }
    let db = TestDb::new("classified_by_sqlstate");
    db.psql(RAISE_FIRST);
    let mut conn = DbConnection::establish(&db.url).expect("connect");
    let cases = [
        (
            "40P01",
            "Verklemmung (Deadlock) entdeckt",
            ErrorClass::Retryable,
        ),
        (
            "40001",
            "konnte Zugriff nicht serialisieren",
            ErrorClass::Retryable,
        ),
        ("40003", "Ergebnis ist mehrdeutig", ErrorClass::Ambiguous),
        (
            "57P01",
            "Verbindung wird abgebrochen aufgrund von Anweisung des Administrators",
            ErrorClass::ConnectionLost,
        ),
        (
            "57014",
            "storniere Anfrage wegen Statement-Timeout",
            ErrorClass::Permanent,
        ),
        (
            "57014",
            "query execution canceled due to statement timeout",
            ErrorClass::CockroachTimeout,
        ),
        (
            "57014",
            "query execution canceled",
            ErrorClass::CockroachCancel,
        ),
        (
            "42501",
            "keine Berechtigung für Schema public",
            ErrorClass::Permanent,
        ),
    ];
    for (code, message, class) in cases {
        let error = raise_first(&mut conn, 1_000, code, message).expect_err("raised");
        assert_eq!(error.to_string(), message, "the server's own words");
        assert_eq!(classify(&error), class, "{code} {message}");
        assert_eq!(
            sqlstate(&error).map(|code| code.to_string()).as_deref(),
            Some(code),
            "{message}"
        );
    }
}

#[test]
fn a_deadlock_reported_in_german_is_retried_by_its_sqlstate_and_commits_once() {
    if not_run_on_cockroachdb(
        "a_deadlock_reported_in_german_is_retried_by_its_sqlstate_and_commits_once",
        RAISES_TRANSLATED_ERRORS,
    ) {
        return;
    }
    for flavor in [Flavor::CockroachDb, Flavor::PostgreSql] {
        let db = TestDb::new("german_deadlock");
        db.psql(RAISE_FIRST);
        let (database, _log) = open(&db.url, Some(flavor));
        let mut runs = 0;
        let committed = run_transaction(&database, &quick_policy(10), |conn| {
            runs += 1;
            insert_account(conn, 1, 100)?;
            raise_first(conn, 1, "40P01", "Verklemmung (Deadlock) entdeckt")
        })
        .unwrap_or_else(|err| panic!("{flavor:?}: commits after one retry: {err:?}"));
        assert_eq!(committed.attempts, 2, "{flavor:?}");
        assert_eq!(runs, 2, "{flavor:?}");
        assert_eq!(
            account_count(&db),
            1,
            "{flavor:?}: exactly one committed effect"
        );
    }
}

/// Installs a deferred constraint trigger on a new table `probe` that runs `body` (PL/pgSQL)
/// when the inserting transaction commits.
fn install_commit_trigger(db: &TestDb, body: &str) {
    db.psql(&format!(
        "CREATE TABLE probe (id BIGINT PRIMARY KEY);
         CREATE FUNCTION at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN {body} RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON probe
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION at_commit();"
    ));
}

fn insert_probe(conn: &mut DbConnection) -> QueryResult<()> {
    conn.batch_execute("INSERT INTO probe (id) VALUES (1)")
}

#[test]
fn ambiguous_40003_at_commit_is_reported_and_not_retried() {
    if not_run_on_cockroachdb(
        "ambiguous_40003_at_commit_is_reported_and_not_retried",
        "40003 is raised at COMMIT by a PL/pgSQL deferred constraint trigger, which CockroachDB \
         lacks; an ambiguous commit on CockroachDB is proven by \
         link_cut_after_commit_is_sent_is_ambiguous_for_both_protocols",
    ) {
        return;
    }
    let db = TestDb::new("ambiguous_40003");
    install_commit_trigger(
        &db,
        "RAISE EXCEPTION 'result is ambiguous (injected at commit)' USING ERRCODE = '40003';",
    );
    let (database, log) = open(&db.url, Some(Flavor::PostgreSql));
    let mut runs = 0;
    let result = run_transaction(&database, &quick_policy(10), |conn| {
        runs += 1;
        insert_probe(conn)
    });
    match result {
        Err(TransactionError::AmbiguousCommit { attempts, cause }) => {
            assert_eq!(attempts, 1);
            assert!(cause.to_string().contains("result is ambiguous"), "{cause}");
        }
        other => panic!("expected AmbiguousCommit, got {other:?}"),
    }
    assert_eq!(runs, 1, "an ambiguous commit is never retried blindly");
    assert_eq!(
        log.transaction_control(),
        strings(&["BEGIN ISOLATION LEVEL SERIALIZABLE", "COMMIT"])
    );
}

#[test]
fn connection_lost_during_commit_is_ambiguous_and_not_retried() {
    if not_run_on_cockroachdb(
        "connection_lost_during_commit_is_ambiguous_and_not_retried",
        "the backend kills itself at COMMIT from a PL/pgSQL deferred constraint trigger with \
         pg_terminate_backend, neither of which CockroachDB has; a link lost with the commit \
         in flight is proven there by link_cut_after_commit_is_sent_is_ambiguous_for_both_protocols",
    ) {
        return;
    }
    let db = TestDb::new("lost_at_commit");
    // The backend kills itself while COMMIT runs its deferred triggers.
    install_commit_trigger(
        &db,
        "PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5);",
    );
    let (database, _log) = open(&db.url, Some(Flavor::PostgreSql));
    let mut runs = 0;
    let result = run_transaction(&database, &quick_policy(10), |conn| {
        runs += 1;
        insert_probe(conn)
    });
    match result {
        Err(TransactionError::AmbiguousCommit { attempts, .. }) => assert_eq!(attempts, 1),
        other => panic!("expected AmbiguousCommit, got {other:?}"),
    }
    assert_eq!(runs, 1);
    // The pool replaced the dead connection: the next transaction works.
    let count = run_transaction(&database, &quick_policy(3), |conn| {
        diesel::sql_query("SELECT 1").execute(conn)
    });
    assert!(count.is_ok(), "{count:?}");
}

#[test]
fn link_cut_after_commit_is_sent_is_ambiguous_for_both_protocols() {
    for (flavor, statement) in [
        (Flavor::PostgreSql, "COMMIT"),
        (Flavor::CockroachDb, "RELEASE SAVEPOINT cockroach_restart"),
    ] {
        let db = TestDb::new("cut_at_commit");
        let proxy = CuttingProxy::in_front_of_server();
        let (database, log) = open(&via_proxy(&db, &proxy), Some(flavor));
        proxy.cut_after(statement);
        let mut runs = 0;
        let result = run_transaction(&database, &quick_policy(10), |conn| {
            runs += 1;
            insert_account(conn, 42, 1)
        });
        assert_eq!(proxy.cuts(), 1, "{flavor}: the proxy cut the link");
        match result {
            Err(TransactionError::AmbiguousCommit { attempts, .. }) => {
                assert_eq!(attempts, 1, "{flavor}")
            }
            other => panic!("{flavor}: expected AmbiguousCommit, got {other:?}"),
        }
        assert_eq!(runs, 1, "{flavor}: never retried blindly");
        assert_eq!(
            log.transaction_control().last().map(String::as_str),
            Some(statement),
            "{flavor}: the commit statement was the last one sent"
        );
    }
}

/// A statement sent on its own commits as it runs: a link cut once it was sent leaves its
/// outcome unknown, and without a probe it is reported so, never sent again.
#[test]
fn link_cut_after_a_single_statement_is_sent_is_ambiguous_and_not_retried() {
    for flavor in [Flavor::PostgreSql, Flavor::CockroachDb] {
        let db = TestDb::new("cut_single_statement");
        let proxy = CuttingProxy::in_front_of_server();
        let (database, _log) = open(&via_proxy(&db, &proxy), Some(flavor));
        proxy.cut_after("INSERT INTO \"accounts\"");
        let mut runs = 0;
        let result = run_single_statement(&database, &quick_policy(10), |conn| {
            runs += 1;
            insert_account(conn, 42, 1)
        });
        assert_eq!(proxy.cuts(), 1, "{flavor}: the proxy cut the link");
        match result {
            Err(TransactionError::AmbiguousCommit { attempts, .. }) => {
                assert_eq!(attempts, 1, "{flavor}")
            }
            other => panic!("{flavor}: expected AmbiguousCommit, got {other:?}"),
        }
        assert_eq!(runs, 1, "{flavor}: never retried blindly");
        assert_eq!(account_count(&db), 1, "{flavor}: the statement landed");
    }
}

/// The statement on which [`connection_lost_before_commit_is_retried_on_a_fresh_connection`]
/// loses its link to the server.
const LOSE_THE_LINK_HERE: &str = "lose the link here";

/// The first attempt loses its connection mid-transaction, before the commit: a proxy drops the
/// statement carrying [`LOSE_THE_LINK_HERE`] and cuts the link, so the server rolls the attempt
/// back. The same on PostgreSQL and CockroachDB (which has no `pg_terminate_backend`; a backend
/// terminated by the server is faults.rs's backend killer, on PostgreSQL).
#[test]
fn connection_lost_before_commit_is_retried_on_a_fresh_connection() {
    for flavor in [Flavor::CockroachDb, Flavor::PostgreSql] {
        let db = TestDb::new("lost_before_commit");
        let proxy = CuttingProxy::in_front_of_server();
        let (database, _log) = open(&via_proxy(&db, &proxy), Some(flavor));
        proxy.cut_instead_of(LOSE_THE_LINK_HERE);
        let mut pids = Vec::new();
        let committed = run_transaction(&database, &quick_policy(5), |conn| {
            // INT8 on both: PostgreSQL's pg_backend_pid() is INT4, CockroachDB's INT8.
            let pid: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                "pg_backend_pid()::INT8",
            ))
            .get_result(conn)?;
            pids.push(pid);
            insert_account(conn, 5, 10)?;
            if pids.len() == 1 {
                diesel::sql_query(format!("SELECT '{LOSE_THE_LINK_HERE}'")).execute(conn)?;
            }
            Ok::<_, DieselError>(())
        })
        .unwrap_or_else(|err| panic!("{flavor}: retried to success, got {err:?}"));
        assert_eq!(proxy.cuts(), 1, "{flavor}: the proxy cut the link");
        assert_eq!(committed.attempts, 2, "{flavor}");
        assert_eq!(pids.len(), 2, "{flavor}");
        assert_ne!(
            pids[0], pids[1],
            "{flavor}: the retry ran on a fresh connection"
        );
        assert_eq!(
            account_count(&db),
            1,
            "{flavor}: exactly one committed effect"
        );
    }
}

#[test]
fn sqlite_busy_is_retried_until_the_other_writer_lets_go() {
    let sqlite = TestSqlite::new();
    let config = DatabaseConfig::parse(&sqlite.url, UrlSource::Flag).unwrap();
    let database = Database::open(
        config,
        &ConnectOptions {
            pool_size: 1,
            sqlite_busy_timeout: Duration::from_millis(1),
            ..ConnectOptions::default()
        },
    )
    .unwrap();
    assert_eq!(database.flavor(), Flavor::Sqlite);
    let mut other = SqliteConnection::establish(sqlite.path.to_str().unwrap()).unwrap();
    other.batch_execute("BEGIN IMMEDIATE").unwrap();
    let holder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        other.batch_execute("COMMIT").unwrap();
    });
    let policy = RetryPolicy {
        max_retries: 50,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    let committed = run_transaction(&database, &policy, |conn| insert_account(conn, 1, 1))
        .expect("commits once the other writer is done");
    holder.join().unwrap();
    assert!(
        committed.attempts > 1,
        "the first attempt met the other writer's lock"
    );
    let count = run_transaction(&database, &policy, |conn| {
        accounts::table.count().get_result::<i64>(conn)
    })
    .unwrap();
    assert_eq!(count.value, 1);
}
