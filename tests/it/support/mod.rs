//! Shared helpers for the integration tests (`mod support;` in `tests/it/main.rs`).
//!
//! * [`server()`] gives the PostgreSQL server the tests talk to: `TEST_DATABASE_URL`
//!   when set (an existing CockroachDB or PostgreSQL), otherwise a throwaway
//!   PostgreSQL server started on first use, one for the whole test binary.
//! * [`TestDb`] is a fresh database on that server, dropped again when the value is.
//! * [`TestSqlite`] is a fresh SQLite file in a temporary directory.
//! * [`control_log::ControlLog`] records the transaction control a connection sends.
//! * [`bin`] runs the `roachbank` binary and checks what it printed; [`echo`] reads its
//!   `--echo` and `-v` output.
//! * [`tls::tls_server()`] is a second throwaway server with TLS and client certificates.
//! * [`pty`] runs the binary on a terminal of its own, and replays what it left on screen.
//! * [`not_run_on_cockroachdb`] and [`not_run_on_postgresql`]: the one way a test steps aside
//!   on a server it cannot run on, saying `NOT RUN on …` and why.

pub mod bin;
pub mod control_log;
pub mod echo;
mod pg_server;
pub mod proxy;
pub mod pty;
#[macro_use]
pub mod target;
pub mod tls;

use percent_encoding::percent_decode_str;
use roachbank::db::ConnectionUrl;
use std::path::PathBuf;

// Re-exported for the tests.
pub use pg_server::{
    server, start_durable_server, ServerSpec, TestDb, TestServer, PASSWORD_CHECKED_GROUP,
};

/// Creates [`PASSWORD_CHECKED_GROUP`] on [`server()`] if it is missing (any test may be first).
pub fn ensure_password_checked_group() {
    server().psql(
        "postgres",
        &format!(
            "DO $$ BEGIN \
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PASSWORD_CHECKED_GROUP}') THEN \
                 CREATE ROLE {PASSWORD_CHECKED_GROUP} NOLOGIN; \
               END IF; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; \
             END $$"
        ),
    );
}

/// A fresh SQLite database file in a temporary directory that lives as long as
/// the value (the directory and the file are removed when it is dropped).
pub struct TestSqlite {
    /// The temporary directory holding the database file.
    pub dir: tempfile::TempDir,
    /// Path of the database file (not created yet; SQLite creates it on first connect).
    pub path: PathBuf,
    /// `sqlite://` followed by `path`.
    pub url: String,
}

impl TestSqlite {
    /// Creates a new temporary directory and picks a database file path inside it.
    pub fn new() -> TestSqlite {
        let dir = tempfile::Builder::new()
            .prefix("roachbank-sqlite-")
            .tempdir()
            .expect("create a temporary directory for the SQLite test database");
        let path = dir.path().join("test.db");
        let url = format!("sqlite://{}", path.display());
        TestSqlite { dir, path, url }
    }
}

impl Default for TestSqlite {
    /// Same as [`TestSqlite::new`].
    fn default() -> Self {
        TestSqlite::new()
    }
}

/// Whether `test` must step aside because [`server()`] is CockroachDB (`TEST_DATABASE_URL`).
/// If so, it says so on stderr — `NOT RUN on CockroachDB: <test>: <reason>` — and the caller
/// returns at once. The one way a test is left out on CockroachDB: never silently.
pub fn not_run_on_cockroachdb(test: &str, reason: &str) -> bool {
    if server().is_cockroachdb() {
        eprintln!("NOT RUN on CockroachDB: {test}: {reason}");
        return true;
    }
    false
}

/// The counterpart for a test of one of CockroachDB's own hooks (`hook`: a session variable,
/// a builtin, a statement PostgreSQL lacks): unless [`server()`] is CockroachDB it says
/// `NOT RUN on PostgreSQL: <test>: needs CockroachDB's <hook>` on stderr, and the caller returns.
pub fn not_run_on_postgresql(test: &str, hook: &str) -> bool {
    if !server().is_cockroachdb() {
        eprintln!("NOT RUN on PostgreSQL: {test}: needs CockroachDB's {hook}");
        return true;
    }
    false
}

/// The tables the tutorial's SQLAlchemy models make with `create_all` (`Integer` primary keys
/// become SERIAL; `balance` and the coordinates are nullable), with a few rows: what roachbank
/// adopts (`tests/it/adopt.rs`, `tests/it/schema.rs`).
pub const TUTORIAL_TABLES: &str = "\
    CREATE TABLE accounts (id SERIAL NOT NULL, balance INTEGER, PRIMARY KEY (id)); \
    CREATE TABLE points (id SERIAL NOT NULL, x FLOAT, y FLOAT, z FLOAT, PRIMARY KEY (id)); \
    INSERT INTO accounts (id, balance) VALUES (1, 100), (2, 250), (3, 0); \
    INSERT INTO points (x, y, z) VALUES (1.5, 2.5, 3.5), (4.0, 5.0, 6.0)";

/// Creates `fail_first(k)`, a test-only PL/pgSQL function that raises 40001 ("restart
/// transaction") on its first `k` calls in the database, then returns. Its counter is a
/// sequence, which rollbacks do not undo.
pub const CONFLICT_INJECTOR: &str = "CREATE SEQUENCE injected_conflicts;
     CREATE FUNCTION fail_first(k BIGINT) RETURNS BIGINT LANGUAGE plpgsql AS $$
     DECLARE n BIGINT := nextval('injected_conflicts');
     BEGIN
       IF n <= k THEN
         RAISE EXCEPTION 'restart transaction: injected conflict % of %', n, k
           USING ERRCODE = '40001';
       END IF;
       RETURN n;
     END $$;";

/// `url` with `param` (`name=value`, percent-encoded) set, everything else kept
/// ([`ConnectionUrl::with`], [`ConnectionUrl::to_url`]).
pub fn with_param(url: &str, param: &str) -> String {
    let (name, value) = param.split_once('=').expect("a name=value parameter");
    let decoded = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
    ConnectionUrl::parse(url)
        .unwrap_or_else(|err| panic!("with_param: {err}"))
        .with(&decoded(name), &decoded(value))
        .to_url()
}

/// `n` as the binary writes counts and rates: digits grouped by threes with commas
/// (`12,345`). Written here independently of the library's own, so that the output is checked
/// against the format, not against itself.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut text = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}
