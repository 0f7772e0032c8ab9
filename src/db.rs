//! Connections: one connection type over CockroachDB/PostgreSQL and SQLite, the r2d2 pool
//! that hands them out, per-connection set-up (`--echo`, statement timeout, SQLite pragmas),
//! and server flavour detection. [`Database::open`] is the one way in: it connects, detects the flavour, applies
//! the embedded migrations and builds the pool.

use crate::config::{Backend, DatabaseConfig, Redactor};
use crate::conninfo::ConnInfo;
use crate::migrate::{self, MigrationError};
use crate::stall::{self, StallWatch};
use diesel::connection::{Instrumentation, InstrumentationEvent, SimpleConnection};
use diesel::prelude::*;
use diesel::r2d2::R2D2Connection;
use diesel::sql_types::Text;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// One connection to whichever database the URL names. Code that is the same on every backend
/// (the bank's queries) works on this type directly; backend-specific code matches the variant.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    /// CockroachDB or PostgreSQL, through libpq.
    Postgresql(PgConnection),
    /// An embedded SQLite file.
    Sqlite(SqliteConnection),
}

/// Runs `$body` with `$conn` bound to the concrete connection inside a [`DbConnection`], for
/// the few statements diesel's multi-backend cannot express (batch INSERT among them).
#[macro_export]
macro_rules! on_concrete_connection {
    ($conn:expr, $concrete:ident => $body:expr) => {
        match $conn {
            $crate::db::DbConnection::Postgresql($concrete) => $body,
            $crate::db::DbConnection::Sqlite($concrete) => $body,
        }
    };
}

/// Which database engine is on the other end; decides the transaction protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// CockroachDB: `SAVEPOINT cockroach_restart` protocol.
    CockroachDb,
    /// PostgreSQL: SERIALIZABLE transactions, retried whole.
    PostgreSql,
    /// SQLite: `BEGIN IMMEDIATE`, retried on busy.
    Sqlite,
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flavor::CockroachDb => "CockroachDB",
            Flavor::PostgreSql => "PostgreSQL",
            Flavor::Sqlite => "SQLite",
        })
    }
}

impl Flavor {
    /// Tells CockroachDB from PostgreSQL by `SELECT version()`; SQLite by the connection type.
    pub fn detect(conn: &mut DbConnection) -> QueryResult<Flavor> {
        match conn {
            DbConnection::Sqlite(_) => Ok(Flavor::Sqlite),
            DbConnection::Postgresql(pg) => {
                let version: String =
                    diesel::select(diesel::dsl::sql::<Text>("version()")).get_result(pg)?;
                Ok(if version.contains("CockroachDB") {
                    Flavor::CockroachDb
                } else {
                    Flavor::PostgreSql
                })
            }
        }
    }
}

/// Builds a fresh [`Instrumentation`] for each new connection (tests use it to record the
/// statements a connection sends).
pub type InstrumentationFactory = Arc<dyn Fn() -> Box<dyn Instrumentation> + Send + Sync>;

/// How [`Database::open`] connects.
#[derive(Clone)]
pub struct ConnectOptions {
    /// Most connections the pool holds (size it to the number of workers).
    pub pool_size: u32,
    /// Print every SQL statement with its binds on stderr (`--echo`).
    pub echo: bool,
    /// Extra instrumentation installed on every connection.
    pub instrumentation: Option<InstrumentationFactory>,
    /// Use this flavour instead of detecting it. Meant for tests that drive the CockroachDB
    /// protocol against PostgreSQL, which accepts the same statements.
    pub flavor_override: Option<Flavor>,
    /// How long a SQLite connection waits for another writer's lock before reporting busy.
    pub sqlite_busy_timeout: Duration,
    /// How long `pool.get()` waits for a free connection.
    pub pool_timeout: Duration,
    /// Cancel any statement running longer than this (`SET statement_timeout` on every
    /// CockroachDB/PostgreSQL connection). SQLite has no such setting: ignored there.
    pub statement_timeout: Option<Duration>,
    /// How long a transaction of ours may sit idle on the server before the server ends it
    /// (`SET idle_in_transaction_session_timeout` on every CockroachDB/PostgreSQL connection;
    /// default [`IDLE_IN_TRANSACTION_TIMEOUT`]). This bounds how long a transaction whose
    /// client lost it — a COMMIT swallowed by a network partition — can hold its locks, and so
    /// how long the retry that settles it waits. SQLite: ignored.
    pub idle_in_transaction_timeout: Duration,
    /// How long a statement may go without an answer before its connection counts as stalled
    /// and is closed from this side (a frozen server, a proxy that stops forwarding): the
    /// transaction then fails as on a lost connection — retried on a fresh one before its
    /// commit, settled by the probe during it. Default [`stall::STALL_TIMEOUT`]; `None` waits
    /// for ever, as libpq does. Never shorter than the statement timeout plus
    /// [`STALL_GRACE`]. SQLite: ignored.
    pub stall_timeout: Option<Duration>,
    /// How long [`Database::open`] waits for another process's migrations (see
    /// [`migrate::MIGRATION_LOCK_WAIT`]).
    pub migration_lock_wait: Duration,
    /// Secrets to scrub from `--echo` output and connection errors besides the database URL's
    /// own password (say, another URL's, when a command uses two).
    pub redactor: Redactor,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            pool_size: 4,
            echo: false,
            instrumentation: None,
            flavor_override: None,
            sqlite_busy_timeout: Duration::from_secs(5),
            pool_timeout: Duration::from_secs(30),
            statement_timeout: None,
            idle_in_transaction_timeout: IDLE_IN_TRANSACTION_TIMEOUT,
            stall_timeout: Some(stall::STALL_TIMEOUT),
            migration_lock_wait: migrate::MIGRATION_LOCK_WAIT,
            redactor: Redactor::new(),
        }
    }
}

/// How much longer than its statement timeout a statement may go unanswered before its
/// connection counts as stalled: the server's own cancellation needs a moment to arrive.
pub const STALL_GRACE: Duration = Duration::from_secs(5);

/// Default of [`ConnectOptions::idle_in_transaction_timeout`]: far above the longest pause
/// roachbank's own work makes between two statements of a transaction (drawing the ids of a
/// 10,000,000-account seed), and low enough that an unknown commit settles well within 30 s.
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(15);

/// Failures to reach or prepare the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be made (unreachable server, wrong password, bad TLS files …).
    #[error("cannot connect to {url}: {message}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The driver's reason, on one line, password scrubbed.
        message: String,
    },
    /// A query failed while preparing the database.
    #[error("{0}")]
    Query(#[from] diesel::result::Error),
    /// Applying the embedded migrations failed.
    #[error(transparent)]
    Migration(#[from] MigrationError),
    /// The work asked for cannot run on this database (see [`Database::open_checked`]).
    #[error("{0}")]
    Unsupported(String),
}

/// Creates [`DbConnection`]s of the variant the URL names (never by trial: SQLite would accept
/// any string as a file name) and sets each one up.
pub struct DbConnectionManager {
    config: DatabaseConfig,
    echo: bool,
    instrumentation: Option<InstrumentationFactory>,
    sqlite_busy_timeout: Duration,
    statement_timeout: Option<Duration>,
    stall_timeout: Option<Duration>,
    idle_in_transaction_timeout: Duration,
    /// The URL's own password and `options.redactor`'s secrets.
    redactor: Redactor,
}

impl DbConnectionManager {
    /// A manager for `config` with the per-connection settings of `options`.
    pub fn new(config: DatabaseConfig, options: &ConnectOptions) -> Self {
        let mut redactor = Redactor::for_config(&config);
        redactor.extend(&options.redactor);
        DbConnectionManager {
            config,
            echo: options.echo,
            instrumentation: options.instrumentation.clone(),
            sqlite_busy_timeout: options.sqlite_busy_timeout,
            statement_timeout: options.statement_timeout,
            idle_in_transaction_timeout: options.idle_in_transaction_timeout,
            stall_timeout: options.stall_timeout,
            redactor,
        }
    }

    /// The configuration this manager connects with.
    pub fn config(&self) -> &DatabaseConfig {
        &self.config
    }

    /// Opens and sets up one connection; the error message is on one line and carries no
    /// password.
    pub fn establish(&self) -> Result<DbConnection, DbError> {
        self.establish_with_stall_bound(self.stall_bound())
    }

    /// [`DbConnectionManager::establish`] with its own stall bound (`None`: unwatched), for a
    /// session whose statements wait longer by design (the migration lock's).
    pub fn establish_with_stall_bound(
        &self,
        stall_bound: Option<Duration>,
    ) -> Result<DbConnection, DbError> {
        self.connect_inner(stall_bound)
            .map_err(|err| DbError::Connect {
                url: self.config.redacted(),
                message: one_line(&self.redactor.scrub(&err.to_string())),
            })
    }

    fn connect_inner(
        &self,
        stall_bound: Option<Duration>,
    ) -> Result<DbConnection, diesel::ConnectionError> {
        let mut watch = None;
        let mut conn = match self.config.backend() {
            Backend::Server => {
                let (pg, socket) = stall::establish(|| self.establish_server());
                watch = socket
                    .zip(stall_bound)
                    .map(|(socket, bound)| StallWatch::new(socket, bound));
                DbConnection::Postgresql(pg?)
            }
            Backend::Sqlite => {
                let mut sqlite = SqliteConnection::establish(self.config.connection_string())?;
                self.set_up_sqlite(&mut sqlite)
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                DbConnection::Sqlite(sqlite)
            }
        };
        if self.echo || self.instrumentation.is_some() || watch.is_some() {
            conn.set_instrumentation(ConnectionHooks {
                echo: self.echo.then(|| self.redactor.clone()),
                extra: self.instrumentation.as_ref().map(|factory| factory()),
                stall: watch,
            });
        }
        if let DbConnection::Postgresql(pg) = &mut conn {
            // Milliseconds: an integer means milliseconds on PostgreSQL and CockroachDB alike.
            // A transaction of ours left open by a lost client (a COMMIT swallowed by a network
            // partition) is ended by the server after `idle_in_transaction_timeout`, releasing
            // its locks and its uncommitted ledger row, which the retry's INSERT waits on.
            let mut settings = format!(
                "SET idle_in_transaction_session_timeout = {}",
                statement_timeout_millis(self.idle_in_transaction_timeout)
            );
            if let Some(timeout) = self.statement_timeout {
                settings += &format!(
                    "; SET statement_timeout = {}",
                    statement_timeout_millis(timeout)
                );
            }
            pg.batch_execute(&settings)
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
        }
        Ok(conn)
    }
}

impl DbConnectionManager {
    /// How long a statement may go unanswered before its connection counts as stalled: the
    /// stall timeout, or the statement timeout and [`STALL_GRACE`] if that is longer (the
    /// server cancels the statement itself then, and answers).
    pub fn stall_bound(&self) -> Option<Duration> {
        let server_answers_by = self.statement_timeout.map(|timeout| timeout + STALL_GRACE);
        self.stall_timeout
            .map(|stall| server_answers_by.map_or(stall, |by| stall.max(by)))
    }

    /// Connects to the server the URL names. When a draining CockroachDB node refuses the
    /// session ("server is not accepting clients, try another node", 57P01, on which libpq does
    /// not move on) and the URL lists other hosts, tries again starting from each next host in
    /// turn (see [`crate::conninfo`]). Any other outcome is libpq's own.
    fn establish_server(&self) -> Result<PgConnection, diesel::ConnectionError> {
        let url = self.config.connection_string();
        let refusal = match PgConnection::establish(url) {
            Err(error) if is_drain_refusal(&error) => error,
            other => return other,
        };
        let Some(info) = ConnInfo::parse(url) else {
            return Err(refusal);
        };
        for by in 1..info.host_count() {
            match PgConnection::establish(&info.with_hosts_rotated(by).to_conninfo_string()) {
                Err(error) if is_drain_refusal(&error) => continue,
                other => return other,
            }
        }
        Err(refusal)
    }
}

/// Whether a failed connection attempt was a draining CockroachDB node's refusal
/// (cockroachdb/cockroach `pkg/sql/pgwire/server.go`, `ErrDrainingNewConn`).
fn is_drain_refusal(error: &diesel::ConnectionError) -> bool {
    matches!(error, diesel::ConnectionError::BadConnection(message)
        if message.contains("server is not accepting clients"))
}

/// `timeout` in whole milliseconds for `SET statement_timeout`, at least 1 (0 would mean
/// "no timeout") and at most [`MAX_STATEMENT_TIMEOUT`].
pub fn statement_timeout_millis(timeout: Duration) -> u128 {
    timeout.min(MAX_STATEMENT_TIMEOUT).as_millis().max(1)
}

/// The longest statement timeout PostgreSQL accepts (`i32::MAX` milliseconds, about 24.8 days).
pub const MAX_STATEMENT_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

impl DbConnectionManager {
    /// Busy timeout, WAL journal (readers never block the writer) and foreign keys.
    /// Switching a new file to WAL needs a moment's exclusive lock and answers "locked" at once
    /// rather than waiting out the busy timeout, so it is tried again until the timeout is up.
    fn set_up_sqlite(&self, sqlite: &mut SqliteConnection) -> QueryResult<()> {
        sqlite.batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA foreign_keys = ON;",
            self.sqlite_busy_timeout.as_millis()
        ))?;
        let deadline = std::time::Instant::now() + self.sqlite_busy_timeout;
        loop {
            match sqlite.batch_execute("PRAGMA journal_mode = WAL") {
                Err(error)
                    if crate::retry::classify(&error) == crate::retry::ErrorClass::Retryable
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                result => return result,
            }
        }
    }
}

impl r2d2::ManageConnection for DbConnectionManager {
    type Connection = DbConnection;
    type Error = DbError;

    fn connect(&self) -> Result<DbConnection, DbError> {
        self.establish()
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), DbError> {
        conn.ping().map_err(DbError::Query)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        std::thread::panicking() || conn.is_broken()
    }
}

/// The pool of connections every command draws from.
pub type Pool = r2d2::Pool<DbConnectionManager>;

/// A connection borrowed from the [`Pool`].
pub type PooledConnection = r2d2::PooledConnection<DbConnectionManager>;

/// An open, migrated database: its pool and its flavour.
pub struct Database {
    pool: Pool,
    flavor: Flavor,
    config: DatabaseConfig,
    migrations_applied: usize,
}

impl Database {
    /// Connects (failing fast with the driver's own reason), detects the flavour, applies the
    /// embedded migrations (refusing a schema newer than this build knows), then builds the pool.
    pub fn open(config: DatabaseConfig, options: &ConnectOptions) -> Result<Database, DbError> {
        Database::open_checked(config, options, |_| Ok(()))
    }

    /// [`Database::open`] that first asks `accept` whether the work at hand can run on the
    /// detected flavour: a refusal (its reason) is returned as [`DbError::Unsupported`] before
    /// anything is written — no migration, no table.
    pub fn open_checked<A>(
        config: DatabaseConfig,
        options: &ConnectOptions,
        accept: A,
    ) -> Result<Database, DbError>
    where
        A: FnOnce(Flavor) -> Result<(), String>,
    {
        let manager = DbConnectionManager::new(config.clone(), options);
        let mut first = manager.establish()?;
        let flavor = match options.flavor_override {
            Some(flavor) => flavor,
            None => Flavor::detect(&mut first)?,
        };
        accept(flavor).map_err(DbError::Unsupported)?;
        let migrations_applied = migrate::run_embedded_migrations(
            &mut first,
            flavor,
            options.migration_lock_wait,
            || {
                // The lock's UPDATE may wait the whole lock wait for another process.
                let bound = manager
                    .stall_bound()
                    .map(|bound| bound.max(options.migration_lock_wait + STALL_GRACE));
                manager
                    .establish_with_stall_bound(bound)
                    .map_err(|error| error.to_string())
            },
        )?;
        drop(first);
        let pool = r2d2::Pool::builder()
            .max_size(options.pool_size.max(1))
            .min_idle(Some(0))
            .connection_timeout(options.pool_timeout)
            // No `SELECT 1` before every checkout: run_transaction already retries work whose
            // connection turns out dead before COMMIT, on a fresh one.
            .test_on_check_out(false)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(manager);
        Ok(Database {
            pool,
            flavor,
            config,
            migrations_applied,
        })
    }

    /// How many migrations [`Database::open`] applied (0: the schema was up to date).
    pub fn migrations_applied(&self) -> usize {
        self.migrations_applied
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The engine on the other end.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The configuration this database was opened with.
    pub fn config(&self) -> &DatabaseConfig {
        &self.config
    }
}

/// What every connection reports its statements to: `--echo` (every statement with its binds
/// on stderr, like SQLAlchemy's `echo=True`, secrets scrubbed) and any extra instrumentation.
struct ConnectionHooks {
    echo: Option<Redactor>,
    extra: Option<Box<dyn Instrumentation>>,
    stall: Option<StallWatch>,
}

impl Instrumentation for ConnectionHooks {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let Some(watch) = &self.stall {
            match event {
                InstrumentationEvent::StartQuery { .. } => watch.statement_started(),
                InstrumentationEvent::FinishQuery { .. } => watch.statement_finished(),
                _ => {}
            }
        }
        if let Some(redactor) = &self.echo {
            echo_event(redactor, &event);
        }
        if let Some(extra) = &mut self.extra {
            extra.on_connection_event(event);
        }
    }
}

/// Prints one instrumentation event for `--echo`, scrubbed: connection attempts (diesel's
/// `StartEstablishConnection`/`FinishEstablishConnection`, which carry the full URL, password
/// included — redacted where libpq would take a password from it even if `redactor` does not
/// know it, then scrubbed), statements with their binds, and statement errors.
fn echo_event(redactor: &Redactor, event: &InstrumentationEvent<'_>) {
    match event {
        InstrumentationEvent::StartEstablishConnection { url, .. } => {
            eprintln!(
                "roachbank: connecting to {}",
                redactor.scrub(&crate::config::redact_url(url))
            );
        }
        InstrumentationEvent::FinishEstablishConnection {
            url,
            error: Some(error),
            ..
        } => {
            eprintln!(
                "roachbank: connecting to {} failed: {}",
                redactor.scrub(&crate::config::redact_url(url)),
                one_line(&redactor.scrub(&error.to_string()))
            );
        }
        InstrumentationEvent::StartQuery { query, .. } => {
            eprintln!("roachbank: SQL: {}", redactor.scrub(&query.to_string()));
        }
        InstrumentationEvent::FinishQuery {
            error: Some(error), ..
        } => {
            eprintln!(
                "roachbank: SQL error: {}",
                one_line(&redactor.scrub(&error.to_string()))
            );
        }
        _ => {}
    }
}

/// The secrets [`echo_connection_events`] scrubs; `None` until it is called.
static CONNECTION_ECHO: RwLock<Option<Redactor>> = RwLock::new(None);

/// Makes diesel's own connection events — every connection attempt, with the URL libpq is
/// given, and its failure if it fails — print on stderr for `--echo`, scrubbed by `redactor`
/// (which should know every URL in play). Process-wide: it installs diesel's default
/// instrumentation, which each new connection starts with until [`DbConnectionManager`] puts
/// its own in place (so statements are printed once).
pub fn echo_connection_events(redactor: Redactor) -> Result<(), DbError> {
    *CONNECTION_ECHO
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(redactor);
    diesel::connection::set_default_instrumentation(|| {
        let redactor = CONNECTION_ECHO
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()?;
        Some(Box::new(ConnectionEcho(redactor)))
    })?;
    Ok(())
}

/// Diesel's default instrumentation while [`echo_connection_events`] is on.
struct ConnectionEcho(Redactor);

impl Instrumentation for ConnectionEcho {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        echo_event(&self.0, &event);
    }
}

/// Folds a multi-line driver message (libpq's end in newlines and tabs) onto one line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
