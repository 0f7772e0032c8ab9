//! The async `run_transaction` (diesel-retry's `asynchronous` module, on diesel-async's
//! `AsyncPgConnection`) against the suite's real PostgreSQL, one module per area:
//!
//! * [`paths`]: each way in — a `&mut` connection, a bb8 pool, a deadpool pool, the flavour
//!   detected or given; read-only work; a single statement; a permanent error.
//! * [`conflicts`]: two transactions forced into a serialization failure, on PostgreSQL's and
//!   CockroachDB's protocol.
//! * [`unknown_outcomes`]: a connection lost at the commit point, with and without a probe; a
//!   server that never answers.
//! * [`cancellation`]: what a dropped future leaves behind.
//!
//! CockroachDB's protocol runs on PostgreSQL through the flavour given
//! (`Flavored::new(&pool, Flavor::CockroachDb)`), as in tests/it/retry_protocol.rs. Every wait
//! is bounded ([`within`], [`eventually`]): a test that would hang fails instead.

mod cancellation;
mod conflicts;
mod paths;
mod unknown_outcomes;

use crate::support::control_log::ControlLog;
use crate::support::{server, TestDb};
use diesel::prelude::*;
use diesel_async::pooled_connection::{bb8, deadpool, AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use diesel_retry::{Flavor, RetryPolicy};
use std::future::Future;
use std::time::{Duration, Instant};

diesel::table! {
    wallets (id) {
        id -> BigInt,
        cents -> BigInt,
    }
}

/// The longest any one wait of these tests may last before the test fails.
const BOUND: Duration = Duration::from_secs(15);

/// A fresh database holding `wallets` 1 and 2 with 1,000 cents each.
fn wallets_db(test: &str) -> TestDb {
    let _ = server();
    let db = TestDb::new(test);
    db.psql("CREATE TABLE wallets (id INT8 PRIMARY KEY, cents INT8 NOT NULL); INSERT INTO wallets VALUES (1, 1000), (2, 1000)");
    db
}

/// Moves `cents` from wallet 1 to wallet 2.
async fn pay(conn: &mut AsyncPgConnection, cents: i64) -> QueryResult<usize> {
    diesel::update(wallets::table.find(1))
        .set(wallets::cents.eq(wallets::cents - cents))
        .execute(conn)
        .await?;
    diesel::update(wallets::table.find(2))
        .set(wallets::cents.eq(wallets::cents + cents))
        .execute(conn)
        .await
}

/// Inserts wallet `id` holding 1 cent; returns `id`.
async fn open_wallet(conn: &mut AsyncPgConnection, id: i64) -> QueryResult<i64> {
    diesel::insert_into(wallets::table)
        .values((wallets::id.eq(id), wallets::cents.eq(1)))
        .execute(conn)
        .await
        .map(|_| id)
}

/// The cents of wallets 1 and 2, as `1000,1000`.
fn cents(db: &TestDb) -> String {
    db.psql("SELECT string_agg(cents::text, ',' ORDER BY id) FROM wallets WHERE id IN (1, 2)")
}

/// How many wallets `id` there are (0 or 1: the work's effect, applied or not).
fn wallets_with_id(db: &TestDb, id: i64) -> i64 {
    db.psql(&format!("SELECT count(*) FROM wallets WHERE id = {id}"))
        .parse()
        .unwrap()
}

fn quick_policy() -> RetryPolicy {
    RetryPolicy {
        max_retries: 10,
        initial_backoff: Duration::from_micros(100),
        max_backoff: Duration::from_millis(5),
        ..RetryPolicy::default()
    }
}

/// The flavour the server is: what `Flavored::detect_async` must find.
fn server_flavor() -> Flavor {
    if server().is_cockroachdb() {
        Flavor::CockroachDb
    } else {
        Flavor::PostgreSql
    }
}

/// The transaction control of one attempt that commits, with `flavor`'s protocol.
fn protocol(flavor: Flavor) -> Vec<String> {
    let statements: &[&str] = match flavor {
        Flavor::CockroachDb => &[
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "SAVEPOINT cockroach_restart",
            "RELEASE SAVEPOINT cockroach_restart",
            "COMMIT",
        ],
        _ => &["BEGIN ISOLATION LEVEL SERIALIZABLE", "COMMIT"],
    };
    statements.iter().map(|s| s.to_string()).collect()
}

/// A connection to `url` recording its transaction control in `log`.
async fn logged_connection(url: &str, log: &ControlLog) -> AsyncPgConnection {
    let mut conn = within("connect", AsyncPgConnection::establish(url))
        .await
        .expect("a connection");
    conn.set_instrumentation(log.clone());
    conn
}

/// A diesel-async connection manager for `url` whose connections record their transaction
/// control in `log`.
fn logged_manager(url: &str, log: &ControlLog) -> AsyncDieselConnectionManager<AsyncPgConnection> {
    let log = log.clone();
    let mut config = ManagerConfig::default();
    config.custom_setup = Box::new(move |url| {
        let (url, log) = (url.to_string(), log.clone());
        Box::pin(async move {
            let mut conn = AsyncPgConnection::establish(&url).await?;
            conn.set_instrumentation(log);
            Ok(conn)
        })
    });
    AsyncDieselConnectionManager::new_with_config(url, config)
}

/// A bb8 pool of at most `max_size` connections to `url`, recording their transaction control
/// in `log`; a checkout waits at most [`BOUND`].
async fn bb8_pool(url: &str, max_size: u32, log: &ControlLog) -> bb8::Pool<AsyncPgConnection> {
    bb8::Pool::builder()
        .max_size(max_size)
        .connection_timeout(BOUND)
        .build(logged_manager(url, log))
        .await
        .expect("a bb8 pool")
}

/// A deadpool pool of at most `max_size` connections to `url`, recording their transaction
/// control in `log`.
fn deadpool_pool(
    url: &str,
    max_size: usize,
    log: &ControlLog,
) -> deadpool::Pool<AsyncPgConnection> {
    deadpool::Pool::builder(logged_manager(url, log))
        .max_size(max_size)
        .build()
        .expect("a deadpool pool")
}

/// What `future` gives; the test fails if that takes longer than [`BOUND`].
async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(BOUND, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: still waiting after {BOUND:?}"))
}

/// psql's answer to `sql` in `db` ([`crate::support::TestServer::try_psql`]), run on a blocking
/// thread so that the runtime's tasks (a connection being closed, say) go on meanwhile.
async fn psql(db: &TestDb, sql: &str) -> Result<String, String> {
    let (name, sql) = (db.name.clone(), sql.to_string());
    tokio::task::spawn_blocking(move || server().try_psql(&name, &sql))
        .await
        .expect("psql's thread")
}

/// Asks psql `sql` in `db` every 20 ms until `holds` accepts its answer, and returns how long
/// that took; the test fails, saying `what`, if it has not within [`BOUND`].
async fn eventually(
    db: &TestDb,
    what: &str,
    sql: &str,
    holds: impl Fn(&Result<String, String>) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let answer = psql(db, sql).await;
        if holds(&answer) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < BOUND,
            "{what}: not so after {BOUND:?}; {sql:?} answers {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
