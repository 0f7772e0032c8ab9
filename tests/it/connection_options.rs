//! Connection options users expect, on the suite's real server: roachbank names itself in the
//! server's activity views (unless the URL names the application), multi-host URLs fail over
//! to the next host, and a statement stuck on a lock is cancelled by `--statement-timeout` (or
//! by the URL's own `options`) with a clear one-line error.

use crate::support::bin::{
    assert_one_line_error, assert_success, describe, dir_entries, run, run_timed, stderr_of,
    temp_dir,
};
use crate::support::{not_run_on_cockroachdb, server, with_param, TestDb};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use roachbank::db::config::{DatabaseConfig, UrlSource};
use roachbank::db::{ConnectOptions, Database, DbConnection};
use std::process::Output;
use std::time::{Duration, Instant};

/// Opens `url` through the library and holds one pooled connection while `look` runs (given
/// that connection).
fn while_connected<T>(url: &str, look: impl FnOnce(&mut DbConnection) -> T) -> T {
    let db = Database::open(
        DatabaseConfig::parse(url, UrlSource::Flag).expect("a server URL"),
        &ConnectOptions {
            pool_size: 1,
            ..ConnectOptions::default()
        },
    )
    .expect("open the database");
    let mut held = db.pool().get().expect("a pooled connection");
    look(&mut held)
}

#[derive(QueryableByName)]
struct SessionId {
    #[diesel(sql_type = Text)]
    session_id: String,
}

/// The application names the server's activity view shows, as psql sees it from outside: on
/// PostgreSQL those of every session connected to `db` but psql's own (`pg_stat_activity`); on
/// CockroachDB, whose `pg_stat_activity` is empty and whose `SHOW SESSIONS` names no database,
/// that of the session `held` (found by its `session_id`).
fn application_names(db: &TestDb, held: &mut DbConnection) -> String {
    if server().is_cockroachdb() {
        let DbConnection::Postgresql(pg) = held else {
            panic!("a server connection");
        };
        let id = diesel::sql_query("SHOW session_id")
            .get_result::<SessionId>(pg)
            .expect("SHOW session_id")
            .session_id;
        db.psql(&format!(
            "SELECT application_name FROM [SHOW CLUSTER SESSIONS] WHERE session_id = '{id}'"
        ))
    } else {
        db.psql(&format!(
            "SELECT string_agg(DISTINCT application_name, ',') FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            db.name
        ))
    }
}

#[test]
fn application_name_is_roachbank_in_the_servers_activity_view_by_default() {
    let db = TestDb::new("appname_default");
    let names = while_connected(&db.url, |held| application_names(&db, held));
    assert_eq!(names, "roachbank");
}

#[test]
fn application_name_set_in_the_url_is_kept() {
    let db = TestDb::new("appname_url");
    let url = with_param(&db.url, "application_name=teller-7");
    let names = while_connected(&url, |held| application_names(&db, held));
    assert_eq!(names, "teller-7");
}

/// `db.url` with a host that refuses connections (127.0.0.1:1) put first.
fn with_dead_host_first(db: &TestDb) -> String {
    let live = format!("{}:{}", server().host(), server().port());
    assert!(db.url.contains(&live), "{} lacks {live}", db.url);
    db.url.replacen(&live, &format!("127.0.0.1:1,{live}"), 1)
}

#[test]
fn multi_host_url_with_the_first_host_down_connects_to_the_second() {
    let db = TestDb::new("multihost");
    let url = with_dead_host_first(&db);
    let dir = temp_dir();
    let seed = run(
        dir.path(),
        &["--database-url", &url, "--echo", "seed", "--accounts", "7"],
        &[],
    );
    assert_success(&seed);
    assert!(
        stderr_of(&seed).contains(&format!(
            "connecting to postgresql://{}",
            // Shown without its query: scheme, user, hosts and ports, database.
            &url["postgresql://".len()..]
                .split('?')
                .next()
                .unwrap_or_default()
        )),
        "--echo should show the multi-host URL's hosts: {}",
        describe(&seed)
    );
    assert_eq!(db.psql("SELECT count(*) FROM accounts"), "7");
    let balance = run(dir.path(), &["--database-url", &url, "balance"], &[]);
    assert_success(&balance);
}

#[test]
fn multi_host_url_with_every_host_down_fails_with_one_line_naming_each_host() {
    let dir = temp_dir();
    let output = run(
        dir.path(),
        &[
            "--database-url",
            "postgresql://u@127.0.0.1:1,127.0.0.1:2/bank",
            "balance",
        ],
        &[],
    );
    let line = assert_one_line_error(&output);
    for port in ["port 1 failed", "port 2 failed"] {
        assert!(
            line.contains(port),
            "{port:?} missing: {}",
            describe(&output)
        );
    }
    assert!(dir_entries(dir.path()).is_empty());
}

/// A database with two accounts whose rows another session holds locked (`SELECT … FOR
/// UPDATE` in an open transaction) until the returned connection is dropped or rolled back.
fn locked_bank(test_name: &str) -> (TestDb, PgConnection) {
    let db = TestDb::new(test_name);
    let seed = run(
        temp_dir().path(),
        &["--database-url", &db.url, "seed", "--accounts", "2"],
        &[],
    );
    assert_success(&seed);
    let mut locker = PgConnection::establish(&db.url).expect("connect the locking session");
    locker
        .batch_execute("BEGIN; SELECT * FROM accounts FOR UPDATE")
        .expect("lock every account row");
    (db, locker)
}

/// Runs `roachbank ARGS transfer` against a locked bank on another thread, polling
/// `pg_stat_activity` meanwhile (on PostgreSQL; CockroachDB's is empty); returns the output,
/// how long it ran, and whether a `roachbank` session was seen waiting on a lock.
fn transfer_while_locked(db: &TestDb, args: &[&str]) -> (Output, Duration, bool) {
    let dir = temp_dir();
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend([
        "transfer".to_string(),
        "--count".to_string(),
        "1".to_string(),
    ]);
    let cwd = dir.path().to_path_buf();
    let child = std::thread::spawn(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        run_timed(&cwd, &args, &[], Duration::from_secs(60))
    });
    let mut seen_waiting = false;
    while !child.is_finished() && !server().is_cockroachdb() {
        let waiting = db.psql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' \
             AND application_name = 'roachbank' AND wait_event_type = 'Lock'",
            db.name
        ));
        seen_waiting |= waiting != "0";
        std::thread::sleep(Duration::from_millis(100));
    }
    let (output, elapsed) = child.join().expect("the roachbank thread");
    (output, elapsed, seen_waiting)
}

/// The message of a statement cancelled by `statement_timeout` (SQLSTATE 57014): PostgreSQL's,
/// or CockroachDB's (cockroachdb/cockroach `pkg/sql/sqlerrors`, `QueryTimeoutError`).
fn statement_timeout_message() -> &'static str {
    if server().is_cockroachdb() {
        "query execution canceled due to statement timeout"
    } else {
        "canceling statement due to statement timeout"
    }
}

/// Checks that a transfer against the locked bank was cancelled by a 2 s statement timeout,
/// after waiting at least that long, with nothing applied.
fn assert_cancelled_by_the_timeout(db: &TestDb, output: &Output, elapsed: Duration) {
    let line = assert_one_line_error(output);
    assert_eq!(output.status.code(), Some(1), "{}", describe(output));
    assert!(
        line.contains(statement_timeout_message()),
        "{}",
        describe(output)
    );
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(15),
        "the transfer should wait out the 2 s timeout and then stop, took {elapsed:?}"
    );
    assert_eq!(
        db.psql("SELECT count(*) FROM transfers WHERE source_id IS NOT NULL"),
        "0",
        "a cancelled transfer must leave no ledger row"
    );
}

#[test]
fn statement_timeout_flag_cancels_a_transfer_stuck_on_a_row_lock_seen_as_roachbank() {
    if not_run_on_cockroachdb(
        "statement_timeout_flag_cancels_a_transfer_stuck_on_a_row_lock_seen_as_roachbank",
        "it watches the transfer wait on the row lock in pg_stat_activity.wait_event_type, \
         which CockroachDB leaves empty; the timeout itself is checked there by \
         statement_timeout_in_the_url_options_cancels_a_stuck_transfer",
    ) {
        return;
    }
    let (db, mut locker) = locked_bank("stmt_timeout_flag");
    let balances =
        db.psql("SELECT string_agg(id || ':' || balance, ',' ORDER BY id) FROM accounts");
    let started = Instant::now();
    let (output, elapsed, seen_waiting) = transfer_while_locked(
        &db,
        &["--database-url", &db.url, "--statement-timeout", "2s"],
    );
    assert_cancelled_by_the_timeout(&db, &output, elapsed);
    assert!(
        seen_waiting,
        "pg_stat_activity never showed a roachbank session waiting on the lock ({:?})",
        started.elapsed()
    );
    assert_eq!(
        db.psql("SELECT string_agg(id || ':' || balance, ',' ORDER BY id) FROM accounts"),
        balances
    );

    // Once the lock is gone the same command goes through.
    locker.batch_execute("ROLLBACK").expect("release the lock");
    let after = run(
        temp_dir().path(),
        &[
            "--database-url",
            &db.url,
            "--statement-timeout",
            "2s",
            "transfer",
        ],
        &[],
    );
    assert_success(&after);
}

#[test]
fn statement_timeout_in_the_url_options_cancels_a_stuck_transfer() {
    let (db, _locker) = locked_bank("stmt_timeout_url");
    let url = with_param(&db.url, "options=-c%20statement_timeout%3D2000");
    let (output, elapsed, _) = transfer_while_locked(&db, &["--database-url", &url]);
    assert_cancelled_by_the_timeout(&db, &output, elapsed);
}

#[test]
fn statement_timeout_below_a_millisecond_or_not_a_duration_is_a_usage_error() {
    for bad in ["0s", "500us", "abc", "-1s", "30d"] {
        let dir = temp_dir();
        let flag = format!("--statement-timeout={bad}");
        let output = run(dir.path(), &[&flag, "balance"], &[]);
        let line = assert_one_line_error(&output);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{bad}: {}",
            describe(&output)
        );
        assert!(
            line.contains("statement-timeout") || line.contains("statement timeout"),
            "{bad}: {line}"
        );
        assert!(
            dir_entries(dir.path()).is_empty(),
            "{bad}: wrote {:?}",
            dir_entries(dir.path())
        );
    }
}
