//! `run_transaction` from a Rust user's own code: a plain Diesel r2d2 pool of `PgConnection`s
//! (PostgreSQL's protocol, or CockroachDB's once the flavour is detected or given), a single
//! `SqliteConnection`, and roachbank's own multi-backend connection — against real databases,
//! with none of roachbank's opening, migrations or pool.

use crate::support;
use crate::support::control_log::ControlLog;
use crate::support::proxy::{via_proxy, CuttingProxy};
use crate::support::{not_run_on_cockroachdb, server, target::Target, TestDb, TestSqlite};
use diesel::connection::{Instrumentation, SimpleConnection};
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::result::Error as DieselError;
use diesel_retry::{
    run_single_statement, run_transaction, run_transaction_exactly_once, ConnectionSource,
    Flavored, RetryPolicy, TransactionError, RETRY_TARGET,
};
use roachbank::db::config::{DatabaseConfig, UrlSource};
use roachbank::db::{ConnectOptions, Database, DbConnection, Flavor};
use roachbank::schema::accounts;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

diesel::table! {
    /// A user's own table, unknown to roachbank.
    wallets (id) {
        id -> BigInt,
        cents -> BigInt,
    }
}

const CREATE_WALLETS: &str = "CREATE TABLE wallets (id INT8 PRIMARY KEY, cents INT8 NOT NULL)";

/// Why the conflict-injecting tests do not run on CockroachDB (see tests/it/retry_protocol.rs,
/// whose `*_server_injected_*` tests use CockroachDB's own hook instead).
const NEEDS_PLPGSQL_INJECTOR: &str =
    "conflicts are injected by a test-only PL/pgSQL function raising 40001";

/// A plain Diesel pool on `url`, one connection, recording transaction control.
fn plain_pool(url: &str) -> (Pool<ConnectionManager<PgConnection>>, ControlLog) {
    let log = ControlLog::default();
    let pool = Pool::builder()
        .max_size(1)
        .connection_timeout(Duration::from_secs(10))
        .connection_customizer(Box::new(log.clone()))
        .build(ConnectionManager::<PgConnection>::new(url))
        .expect("a plain Diesel pool");
    (pool, log)
}

/// A fresh database with the `wallets` table and `fail_first(k)`, which raises 40001 on its
/// first `k` calls (a sequence counts them: rollbacks do not undo it).
fn database_with_injector(test: &str) -> TestDb {
    let db = TestDb::new(test);
    db.psql(CREATE_WALLETS);
    db.psql(support::CONFLICT_INJECTOR);
    db
}

/// Inserts wallet `id` after `fail_first(2)`: two conflicts, then a commit.
fn insert_after_two_conflicts(conn: &mut PgConnection, id: i64) -> QueryResult<usize> {
    diesel::sql_query("SELECT fail_first(2)").execute(conn)?;
    diesel::insert_into(wallets::table)
        .values((wallets::id.eq(id), wallets::cents.eq(100)))
        .execute(conn)
}

fn wallet_count(db: &TestDb) -> i64 {
    db.psql("SELECT count(*) FROM wallets").parse().unwrap()
}

fn quick_policy() -> RetryPolicy {
    RetryPolicy {
        max_retries: 5,
        initial_backoff: Duration::from_micros(100),
        max_backoff: Duration::from_millis(5),
        ..RetryPolicy::default()
    }
}

fn strings(statements: &[&str]) -> Vec<String> {
    statements.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_plain_diesel_pg_pool_retries_40001_in_new_serializable_transactions_and_commits_once() {
    const TEST: &str =
        "a_plain_diesel_pg_pool_retries_40001_in_new_serializable_transactions_and_commits_once";
    if not_run_on_cockroachdb(TEST, NEEDS_PLPGSQL_INJECTOR) {
        return;
    }
    let db = database_with_injector("plain_pg_pool");
    let (pool, log) = plain_pool(&db.url);
    let committed = run_transaction(&pool, &quick_policy(), |conn| {
        insert_after_two_conflicts(conn, 7)
    })
    .expect("retried to a commit");
    assert_eq!(committed.attempts, 3);
    assert_eq!(wallet_count(&db), 1, "exactly one committed effect");
    let begin = "BEGIN ISOLATION LEVEL SERIALIZABLE";
    assert_eq!(
        log.statements(),
        strings(&[begin, "ROLLBACK", begin, "ROLLBACK", begin, "COMMIT"])
    );
}

/// One `tracing` event as an application's own subscriber sees it.
#[derive(Debug, Clone)]
struct Seen {
    level: Level,
    target: String,
    /// The span it happened in.
    span: Option<String>,
    /// Every field, `message` included, as text.
    fields: BTreeMap<String, String>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// A subscriber layer of the application's own: it keeps every event.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Seen>>>);

impl Collector {
    /// The events of `run_transaction` whose message is `message`.
    fn retry_events(&self, message: &str) -> Vec<Seen> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|seen| seen.target == RETRY_TARGET && seen.field("message") == Some(message))
            .cloned()
            .collect()
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Collector {
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        struct Fields(BTreeMap<String, String>);
        impl Visit for Fields {
            fn record_str(&mut self, field: &Field, value: &str) {
                self.0.insert(field.name().to_string(), value.to_string());
            }
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                self.0
                    .insert(field.name().to_string(), format!("{value:?}"));
            }
        }
        let mut fields = Fields(BTreeMap::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(Seen {
            level: *event.metadata().level(),
            target: event.metadata().target().to_string(),
            span: ctx.event_span(event).map(|span| span.name().to_string()),
            fields: fields.0,
        });
    }
}

/// Runs `f` with `collector` as the thread's subscriber, as an application would install its
/// own.
fn observed<T>(collector: &Collector, f: impl FnOnce() -> T) -> T {
    let subscriber = tracing_subscriber::registry().with(collector.clone());
    tracing::subscriber::with_default(subscriber, f)
}

#[test]
fn an_applications_own_subscriber_sees_each_retry_with_its_sqlstate() {
    const TEST: &str = "an_applications_own_subscriber_sees_each_retry_with_its_sqlstate";
    if not_run_on_cockroachdb(TEST, NEEDS_PLPGSQL_INJECTOR) {
        return;
    }
    let db = database_with_injector("subscriber_sees_retries");
    let (pool, _log) = plain_pool(&db.url);
    let collector = Collector::default();
    let committed = observed(&collector, || {
        run_transaction(&pool, &quick_policy(), |conn| {
            insert_after_two_conflicts(conn, 21)
        })
    })
    .expect("retried to a commit");
    assert_eq!(committed.attempts, 3);

    let retries = collector.retry_events("retrying transaction");
    assert_eq!(retries.len(), 2, "{retries:#?}");
    for (attempt, retry) in (1..).zip(&retries) {
        assert_eq!(retry.level, Level::INFO, "{retry:?}");
        assert_eq!(retry.span.as_deref(), Some("run_transaction"), "{retry:?}");
        assert_eq!(retry.field("attempt"), Some(attempt.to_string().as_str()));
        assert_eq!(retry.field("sqlstate"), Some("40001"), "{retry:?}");
        assert_eq!(retry.field("next"), Some("new_transaction"), "{retry:?}");
        assert_eq!(retry.field("flavor"), Some("PostgreSQL"), "{retry:?}");
        assert!(retry.field("backoff_ms").is_some(), "{retry:?}");
        assert!(
            retry
                .field("error")
                .is_some_and(|error| error.contains("injected conflict")),
            "{retry:?}"
        );
        // PostgreSQL's 40001 carries no CockroachDB reason.
        assert_eq!(retry.field("reason"), None, "{retry:?}");
    }
    let committed = collector.retry_events("transaction committed");
    assert_eq!(committed.len(), 1, "{committed:#?}");
    assert_eq!(committed[0].level, Level::DEBUG);
    assert_eq!(committed[0].field("attempts"), Some("3"));
}

/// `fail_like_cockroach(k)`: raises 40001 on its first `k` calls with the message CockroachDB
/// sends for a read within the uncertainty interval (cockroachdb/docs
/// `transaction-retry-error-reference.md`).
const COCKROACH_SHAPED_INJECTOR: &str = "CREATE SEQUENCE cockroach_conflicts;
     CREATE FUNCTION fail_like_cockroach(k BIGINT) RETURNS BIGINT LANGUAGE plpgsql AS $$
     DECLARE n BIGINT := nextval('cockroach_conflicts');
     BEGIN
       IF n <= k THEN
         RAISE EXCEPTION 'restart transaction: TransactionRetryWithProtoRefreshError: ReadWithinUncertaintyIntervalError: read at time 1591009232.376925064,0 encountered previous write with future timestamp 1591009232.493830170,0'
           USING ERRCODE = '40001';
       END IF;
       RETURN n;
     END $$;";

#[test]
fn a_subscriber_sees_cockroachdbs_retry_reason_and_no_wait_inside_the_savepoint() {
    const TEST: &str =
        "a_subscriber_sees_cockroachdbs_retry_reason_and_no_wait_inside_the_savepoint";
    if not_run_on_cockroachdb(TEST, NEEDS_PLPGSQL_INJECTOR) {
        return;
    }
    let db = TestDb::new("subscriber_sees_reason");
    db.psql(CREATE_WALLETS);
    db.psql(COCKROACH_SHAPED_INJECTOR);
    let (pool, _log) = plain_pool(&db.url);
    let bank = Flavored::new(&pool, Flavor::CockroachDb);
    let collector = Collector::default();
    let committed = observed(&collector, || {
        run_transaction(&bank, &quick_policy(), |conn| {
            diesel::sql_query("SELECT fail_like_cockroach(1)").execute(conn)?;
            diesel::insert_into(wallets::table)
                .values((wallets::id.eq(22), wallets::cents.eq(1)))
                .execute(conn)
        })
    })
    .expect("retried to a commit");
    assert_eq!(committed.attempts, 2);
    let retries = collector.retry_events("retrying transaction");
    assert_eq!(retries.len(), 1, "{retries:#?}");
    let retry = &retries[0];
    assert_eq!(retry.field("sqlstate"), Some("40001"), "{retry:?}");
    assert_eq!(
        retry.field("reason"),
        Some("ReadWithinUncertaintyIntervalError"),
        "{retry:?}"
    );
    assert_eq!(retry.field("next"), Some("same_transaction"), "{retry:?}");
    assert_eq!(retry.field("backoff_ms"), Some("0.0"), "{retry:?}");
    assert_eq!(retry.field("flavor"), Some("CockroachDB"), "{retry:?}");
}

#[test]
fn a_diesel_pg_pool_flavoured_as_cockroachdb_retries_through_the_restart_savepoint() {
    const TEST: &str =
        "a_diesel_pg_pool_flavoured_as_cockroachdb_retries_through_the_restart_savepoint";
    if not_run_on_cockroachdb(TEST, NEEDS_PLPGSQL_INJECTOR) {
        return;
    }
    let db = database_with_injector("flavoured_pg_pool");
    let (pool, log) = plain_pool(&db.url);
    // PostgreSQL accepts the same statements; the flavour is given, not detected.
    let bank = Flavored::new(&pool, Flavor::CockroachDb);
    let committed = run_transaction(&bank, &quick_policy(), |conn| {
        insert_after_two_conflicts(conn, 8)
    })
    .expect("retried to a commit");
    assert_eq!(committed.attempts, 3);
    assert_eq!(wallet_count(&db), 1, "exactly one committed effect");
    let restart = "ROLLBACK TO SAVEPOINT cockroach_restart";
    assert_eq!(
        log.statements(),
        strings(&[
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "SAVEPOINT cockroach_restart",
            restart,
            restart,
            "RELEASE SAVEPOINT cockroach_restart",
            "COMMIT",
        ])
    );
}

#[test]
fn flavored_detect_asks_the_server_which_engine_it_is() {
    let db = TestDb::new("flavored_detect");
    let (pool, _log) = plain_pool(&db.url);
    let bank = Flavored::detect(&pool).expect("detect the flavour");
    let expected = if server().is_cockroachdb() {
        Flavor::CockroachDb
    } else {
        Flavor::PostgreSql
    };
    assert_eq!(ConnectionSource::flavor(&bank), Some(expected));
}

#[test]
fn exactly_once_with_a_plain_pool_finds_a_commit_whose_answer_was_lost() {
    let db = TestDb::new("plain_pool_exactly_once");
    db.psql(CREATE_WALLETS);
    let proxy = CuttingProxy::in_front_of_server();
    let (pool, _log) = plain_pool(&via_proxy(&db, &proxy));
    proxy.cut_after("COMMIT");
    let mut runs = 0;
    let collector = Collector::default();
    let committed = observed(&collector, || {
        run_transaction_exactly_once(
            &pool,
            &quick_policy(),
            |conn| {
                runs += 1;
                diesel::insert_into(wallets::table)
                    .values((wallets::id.eq(11), wallets::cents.eq(5)))
                    .execute(conn)
                    .map(|_| 11_i64)
            },
            |conn| {
                wallets::table
                    .find(11)
                    .select(wallets::id)
                    .first::<i64>(conn)
                    .optional()
            },
        )
    })
    .expect("the probe settles the lost answer");
    // The application's subscriber saw the unknown outcome, and how it was settled.
    let unknown = collector.retry_events("commit outcome unknown");
    assert_eq!(unknown.len(), 1, "{unknown:#?}");
    assert_eq!(unknown[0].level, Level::WARN);
    assert_eq!(unknown[0].field("attempt"), Some("1"));
    assert_eq!(unknown[0].field("probe"), Some("true"));
    let settled = collector.retry_events("commit outcome settled by the probe");
    assert_eq!(settled.len(), 1, "{settled:#?}");
    assert_eq!(settled[0].field("outcome"), Some("committed"));
    assert_eq!(proxy.cuts(), 1, "the proxy cut the link after COMMIT");
    assert_eq!(committed.value, 11);
    assert_eq!(committed.attempts, 1);
    assert_eq!(runs, 1, "never run twice");
    assert_eq!(wallet_count(&db), 1, "applied exactly once");
}

#[test]
fn a_single_sqlite_connection_commits_and_rolls_back_a_failed_transaction() {
    let file = TestSqlite::new();
    let mut conn = SqliteConnection::establish(file.path.to_str().unwrap()).unwrap();
    conn.batch_execute(CREATE_WALLETS).unwrap();
    let insert = |conn: &mut SqliteConnection, id: i64| {
        diesel::insert_into(wallets::table)
            .values((wallets::id.eq(id), wallets::cents.eq(1)))
            .execute(conn)
    };
    let committed = run_transaction(&mut conn, &quick_policy(), |conn| insert(conn, 1))
        .expect("a plain SQLite connection commits");
    assert_eq!(committed.attempts, 1);
    let failed = run_transaction(&mut conn, &quick_policy(), |conn| {
        insert(conn, 2)?;
        insert(conn, 1) // duplicate key: not retryable
    });
    match failed {
        Err(TransactionError::Failed {
            cause: DieselError::DatabaseError(..),
            ..
        }) => {}
        other => panic!("expected the duplicate key unchanged, got {other:?}"),
    }
    let ids: Vec<i64> = wallets::table
        .select(wallets::id)
        .order(wallets::id)
        .load(&mut conn)
        .unwrap();
    assert_eq!(ids, vec![1], "the failed transaction left nothing behind");
}

/// Without a flavour, a `DbConnection` runs the protocol of its variant: SQLite's
/// `BEGIN IMMEDIATE`, or the server protocol (SERIALIZABLE, no savepoint) on a server.
#[test]
fn roachbanks_own_connection_runs_its_variants_protocol() {
    for (target, begin) in [
        (Target::sqlite(), "BEGIN IMMEDIATE"),
        (
            Target::postgresql("own_connection"),
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
        ),
    ] {
        let log = ControlLog::default();
        let recorder = log.clone();
        let options = ConnectOptions {
            pool_size: 1,
            instrumentation: Some(Arc::new(move || {
                Box::new(recorder.clone()) as Box<dyn Instrumentation>
            })),
            ..ConnectOptions::default()
        };
        let config = DatabaseConfig::parse(target.url(), UrlSource::Flag).unwrap();
        let db = Database::open(config, &options).expect("open the test database");
        let mut pooled = db.pool().get().unwrap();
        let conn: &mut DbConnection = &mut pooled;
        log.clear();
        let committed = run_transaction(conn, &quick_policy(), |conn| {
            diesel::insert_into(accounts::table)
                .values((accounts::id.eq(1), accounts::balance.eq(10)))
                .execute(conn)
        })
        .unwrap_or_else(|err| panic!("{}: {err}", target.url()));
        assert_eq!(committed.attempts, 1);
        assert_eq!(
            log.statements(),
            strings(&[begin, "COMMIT"]),
            "{}",
            target.url()
        );
        assert_eq!(target.count("SELECT count(*) FROM accounts"), 1);
    }
}

/// The isolation the statement `run_single_statement` sends through `source` runs at, as the
/// server says inside it.
fn single_statement_isolation<S>(source: S) -> String
where
    S: ConnectionSource<Connection = PgConnection>,
{
    run_single_statement(source, &quick_policy(), |conn| {
        diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
            "current_setting('transaction_isolation')",
        ))
        .get_result::<String>(conn)
    })
    .expect("the statement runs")
    .value
}

/// `run_single_statement` promises SERIALIZABLE (a statement that writes what it read is only
/// safe there), but a plain pool's sessions start at the server's default: READ COMMITTED on
/// PostgreSQL, and on CockroachDB 24.1+ whatever a role or database sets (READ COMMITTED is
/// usable by default there: cockroachdb/docs `releases/v24.1/v24.1.0.md`). On such a pool the
/// statement still runs at SERIALIZABLE — in an explicit transaction, since an implicit one
/// takes the session's default; on a pool whose sessions default to SERIALIZABLE it is sent on
/// its own, with no transaction control.
#[test]
fn single_statement_on_a_users_read_committed_pool_still_runs_at_serializable() {
    let db = TestDb::new("single_statement_read_committed");
    let set_default = |isolation: &str| {
        db.psql(&format!(
            "ALTER DATABASE \"{}\" SET default_transaction_isolation = '{isolation}'",
            db.name
        ))
    };

    set_default("read committed");
    let (pool, log) = plain_pool(&db.url);
    assert_eq!(
        single_statement_isolation(&pool),
        "serializable",
        "on a READ COMMITTED session the statement must still run at SERIALIZABLE"
    );
    assert_eq!(
        log.statements(),
        strings(&["BEGIN ISOLATION LEVEL SERIALIZABLE", "COMMIT"]),
        "in an explicit SERIALIZABLE transaction"
    );
    // Given as CockroachDB, the explicit transaction is CockroachDB's protocol.
    let (pool, log) = plain_pool(&db.url);
    assert_eq!(
        single_statement_isolation(Flavored::new(&pool, Flavor::CockroachDb)),
        "serializable"
    );
    assert_eq!(
        log.statements(),
        strings(&[
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "SAVEPOINT cockroach_restart",
            "RELEASE SAVEPOINT cockroach_restart",
            "COMMIT"
        ])
    );

    set_default("serializable");
    let (pool, log) = plain_pool(&db.url);
    assert_eq!(single_statement_isolation(&pool), "serializable");
    assert_eq!(
        log.statements(),
        Vec::<String>::new(),
        "a session that is SERIALIZABLE already sends the statement on its own"
    );
}
