//! Opening connections: the r2d2 manager that opens and sets up each connection as the
//! [`ConnectOptions`] say (statement and idle timeouts, SQLite pragmas, the stall watchdog,
//! `--echo`), and the pool.

use super::classify::is_drain_refusal;
use super::config::{Backend, DatabaseConfig};
use super::echo::{ConnectionHooks, Echo};
use super::options::{ConnectOptions, InstrumentationFactory, STALL_GRACE};
use super::redact::Redactor;
use super::sqlite_session::{self, SqliteWriters};
use super::stall::{self, StallSignal, StallWatch};
use super::{classify, one_line, DbConnection, DbError, ErrorClass, Flavor};
use crate::sync::lock;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::R2D2Connection;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

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
    /// [`ConnectOptions::avoid_sequential_scans`].
    avoid_sequential_scans: bool,
    /// What the server is, once [`DbConnectionManager::server_is`] was told (PostgreSQL-only
    /// session settings wait for it).
    server: OnceLock<Flavor>,
    /// The URL's own password and `options.redactor`'s secrets.
    redactor: Redactor,
    /// A connection made before the pool (the one `Database::open` migrates on), which the
    /// pool's first `connect` takes instead of opening another.
    spare: Mutex<Option<DbConnection>>,
    /// SQLite: how this manager's connections take turns for the write lock
    /// ([`sqlite_session`]).
    sqlite_writers: Arc<SqliteWriters>,
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
            avoid_sequential_scans: options.avoid_sequential_scans,
            server: OnceLock::new(),
            redactor,
            spare: Mutex::new(None),
            sqlite_writers: SqliteWriters::new(),
        }
    }

    /// Hands `conn`, a connection this manager made, to the pool: its first `connect` returns it
    /// instead of opening another, so a command that opened the database on it connects once.
    pub fn keep_for_pool(&self, conn: DbConnection) {
        *lock(&self.spare) = Some(conn);
    }

    /// Records what the server is (`Database::open` detects it on its first connection) and
    /// sets `conn`, a connection this manager made, up as every later one will be: the
    /// session settings that are PostgreSQL's alone
    /// ([`ConnectOptions::avoid_sequential_scans`]). Call it after migrating on `conn`.
    pub fn server_is(&self, server: Flavor, conn: &mut DbConnection) -> QueryResult<()> {
        let _ = self.server.set(server);
        match (conn, self.postgresql_only_settings()) {
            (DbConnection::Postgresql(pg), Some(settings)) => pg.batch_execute(settings),
            _ => Ok(()),
        }
    }

    /// The session settings for a PostgreSQL server only (not CockroachDB), if any apply.
    fn postgresql_only_settings(&self) -> Option<&'static str> {
        (self.avoid_sequential_scans && self.server.get() == Some(&Flavor::PostgreSql))
            .then_some("SET enable_seqscan = off")
    }

    /// The configuration this manager connects with.
    pub fn config(&self) -> &DatabaseConfig {
        &self.config
    }

    /// SQLite: how this manager's connections take turns for the write lock (unused on a
    /// server).
    pub fn sqlite_writers(&self) -> &Arc<SqliteWriters> {
        &self.sqlite_writers
    }

    /// Opens and sets up one connection; the error message is on one line and carries no
    /// password.
    pub fn establish(&self) -> Result<DbConnection, DbError> {
        self.establish_with_stall_bound(self.stall_bound())
    }

    /// [`DbConnectionManager::establish`] that lets `look` query the connection before anything
    /// is written (on SQLite before its pragmas, which write to the file; on a server after its
    /// session settings, which write nothing): `Ok(None)` when `look` says the connection is not
    /// wanted.
    pub fn establish_if(
        &self,
        mut look: impl FnMut(&mut DbConnection) -> QueryResult<bool>,
    ) -> Result<Option<DbConnection>, DbError> {
        let statement_timeout = match self.statement_timeout {
            Some(timeout) => StatementTimeout::Set(timeout),
            None => StatementTimeout::ServerDefault,
        };
        self.connect_inner(self.stall_bound(), statement_timeout, &mut look)
            .map(|connected| connected.map(|(conn, _)| conn))
            .map_err(|err| self.connect_error(err))
    }

    /// [`DbConnectionManager::establish`] with its own stall bound (`None`: unwatched), for a
    /// session whose statements wait longer by design (see also
    /// [`establish_dedicated`](Self::establish_dedicated), which sets no statement timeout).
    pub fn establish_with_stall_bound(
        &self,
        stall_bound: Option<Duration>,
    ) -> Result<DbConnection, DbError> {
        let statement_timeout = match self.statement_timeout {
            Some(timeout) => StatementTimeout::Set(timeout),
            None => StatementTimeout::ServerDefault,
        };
        self.connect_inner(stall_bound, statement_timeout, &mut every)
            .map(|connected| connected.expect("`every` wants every connection").0)
            .map_err(|err| self.connect_error(err))
    }

    /// A connection for one long task of its own (applying migrations, holding their lock),
    /// not for the pool: no statement timeout (`SET statement_timeout = 0`, whatever the
    /// options, the URL or the role say), and `stall_bound` (`None`: unwatched) instead of the
    /// pool's.
    pub fn establish_dedicated(
        &self,
        stall_bound: Option<Duration>,
    ) -> Result<DedicatedConnection, DbError> {
        self.connect_inner(stall_bound, StatementTimeout::Off, &mut every)
            .map(|connected| connected.expect("`every` wants every connection"))
            .map(|(conn, stall)| DedicatedConnection {
                conn,
                stall_bound,
                stall,
            })
            .map_err(|err| self.connect_error(err))
    }

    fn connect_error(&self, err: diesel::ConnectionError) -> DbError {
        DbError::Connect {
            url: self.config.redacted(),
            message: one_line(&self.redactor.scrub(&err.to_string())),
        }
    }

    /// Connects, lets `look` decide whether the connection is wanted (`None` if not), and sets
    /// it up.
    fn connect_inner(
        &self,
        stall_bound: Option<Duration>,
        statement_timeout: StatementTimeout,
        look: &mut dyn FnMut(&mut DbConnection) -> QueryResult<bool>,
    ) -> Result<Option<(DbConnection, Option<StallSignal>)>, diesel::ConnectionError> {
        let mut watch = None;
        let mut conn = match self.config.backend() {
            Backend::Postgresql => {
                let (pg, socket) = stall::establish(
                    self.config.connect_bound(),
                    &self.server_ports(),
                    || self.establish_server(),
                    client_port,
                );
                watch = socket
                    .zip(stall_bound)
                    .map(|(socket, bound)| StallWatch::new(socket, bound));
                DbConnection::Postgresql(pg?)
            }
            Backend::Sqlite => DbConnection::Sqlite(SqliteConnection::establish(
                &self.config.connection_string(),
            )?),
        };
        let stall = watch.as_ref().map(StallWatch::signal);
        if self.echo || self.instrumentation.is_some() || watch.is_some() {
            conn.set_instrumentation(ConnectionHooks {
                echo: self.echo.then(|| Echo::new(self.redactor.clone())),
                extra: self.instrumentation.as_ref().map(|factory| factory()),
                stall: watch,
            });
        }
        // Before anything is written: before SQLite's pragmas, which write to the file; after a
        // server's session settings, which write nothing (so its statement timeout holds).
        let mut wanted = |conn: &mut DbConnection| {
            look(conn).map_err(diesel::ConnectionError::CouldntSetupConfiguration)
        };
        let sqlite = matches!(conn, DbConnection::Sqlite(_));
        if sqlite && !wanted(&mut conn)? {
            return Ok(None);
        }
        if let DbConnection::Sqlite(sqlite) = &mut conn {
            self.set_up_sqlite(sqlite)
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
        }
        if let DbConnection::Postgresql(pg) = &mut conn {
            // Milliseconds: an integer means milliseconds on PostgreSQL and CockroachDB alike.
            // A transaction of ours left open by a lost client (a COMMIT swallowed by a network
            // partition) is ended by the server after `idle_in_transaction_timeout`, releasing
            // its locks and its uncommitted ledger row, which the retry's INSERT waits on.
            // SERIALIZABLE for statements sent on their own too (implicit transactions, such
            // as the one-statement transfer), as for every transaction roachbank begins: it is
            // CockroachDB's default unless a role or database sets READ COMMITTED (usable there
            // from 24.1), and PostgreSQL's READ COMMITTED would let a statement write a value
            // computed from a balance another transaction has changed. `&Database` vouches for
            // this (`ConnectionSource::sessions_are_serializable`), so run_single_statement
            // never asks.
            let mut settings = format!(
                "SET default_transaction_isolation = 'serializable'; \
                 SET idle_in_transaction_session_timeout = {}",
                statement_timeout_millis(self.idle_in_transaction_timeout)
            );
            match statement_timeout {
                StatementTimeout::Set(timeout) => {
                    settings += &format!(
                        "; SET statement_timeout = {}",
                        statement_timeout_millis(timeout)
                    )
                }
                StatementTimeout::Off => settings += "; SET statement_timeout = 0",
                StatementTimeout::ServerDefault => {}
            }
            if let Some(postgresql_only) = self.postgresql_only_settings() {
                settings += "; ";
                settings += postgresql_only;
            }
            pg.batch_execute(&settings)
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
        }
        if !sqlite && !wanted(&mut conn)? {
            return Ok(None);
        }
        Ok(Some((conn, stall)))
    }
}

/// The `look` of a connection that is wanted whatever its database holds.
fn every(_: &mut DbConnection) -> QueryResult<bool> {
    Ok(true)
}

/// The client port the server sees `pg` come from (`inet_client_port()`, PostgreSQL's
/// "System Information Functions"), by which [`stall::establish`] tells the connection's socket
/// from others this process opened to the server meanwhile; `None` over a Unix-domain socket
/// (NULL), or if the server cannot say (then the connection goes unwatched, as it did before
/// the question was asked).
fn client_port(pg: &mut PgConnection) -> Option<u16> {
    diesel::select(diesel::dsl::sql::<
        diesel::sql_types::Nullable<diesel::sql_types::Integer>,
    >("inet_client_port()"))
    .get_result::<Option<i32>>(pg)
    .ok()
    .flatten()
    .and_then(|port| u16::try_from(port).ok())
}

/// What a new server connection's `statement_timeout` is set to.
enum StatementTimeout {
    /// This (the options' `statement_timeout`).
    Set(Duration),
    /// Nothing is set: the URL's, the role's or the server's default holds.
    ServerDefault,
    /// 0: no timeout at all.
    Off,
}

/// A connection made by [`DbConnectionManager::establish_dedicated`]: no statement timeout, a
/// stall bound of its own, and word of whether the stall watchdog closed it.
pub struct DedicatedConnection {
    /// The connection.
    pub conn: DbConnection,
    stall_bound: Option<Duration>,
    stall: Option<StallSignal>,
}

impl DedicatedConnection {
    /// The stall bound it was made with, if the watchdog watches it.
    pub fn stall_bound(&self) -> Option<Duration> {
        self.stall.as_ref().and(self.stall_bound)
    }

    /// Whether the stall watchdog closed it: a statement got no answer within
    /// [`stall_bound`](Self::stall_bound).
    pub fn stalled(&self) -> bool {
        self.stall.as_ref().is_some_and(StallSignal::stalled)
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

    /// The TCP ports the URL names for its hosts; empty unless it names one for every host
    /// (libpq takes the others from the environment, a service file or its default, which are
    /// not guessed here).
    fn server_ports(&self) -> Vec<u16> {
        self.config
            .url()
            .filter(|url| url.get("service").is_none())
            .and_then(|url| {
                url.get("port")?
                    .split(',')
                    .map(|port| port.trim().parse().ok())
                    .collect::<Option<Vec<u16>>>()
            })
            .unwrap_or_default()
    }

    /// Connects to the server the URL names. When a draining CockroachDB node refuses the
    /// session ("server is not accepting clients, try another node", 57P01, on which libpq does
    /// not move on) and the URL lists other hosts, tries again starting from each next host in
    /// turn ([`ConnectionUrl::with_hosts_rotated`](super::ConnectionUrl::with_hosts_rotated)).
    /// Any other outcome is libpq's own.
    fn establish_server(&self) -> Result<PgConnection, diesel::ConnectionError> {
        let url = &self.config.connection_string();
        let refusal = match PgConnection::establish(url) {
            Err(error) if is_drain_refusal(&error) => error,
            other => return other,
        };
        let Some(parsed) = self.config.url() else {
            return Err(refusal);
        };
        for by in 1..parsed.host_count() {
            match PgConnection::establish(&parsed.with_hosts_rotated(by).to_conninfo()) {
                Err(error) if is_drain_refusal(&error) => continue,
                other => return other,
            }
        }
        Err(refusal)
    }
}

/// `timeout` in whole milliseconds for `SET statement_timeout`, at least 1 (0 would mean
/// "no timeout") and at most [`MAX_STATEMENT_TIMEOUT`].
pub fn statement_timeout_millis(timeout: Duration) -> u128 {
    timeout.min(MAX_STATEMENT_TIMEOUT).as_millis().max(1)
}

/// The longest statement timeout PostgreSQL accepts (`i32::MAX` milliseconds, about 24.8 days).
pub const MAX_STATEMENT_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

impl DbConnectionManager {
    /// The write queue and the steady busy handler ([`sqlite_session`]; the busy timeout
    /// bounds every wait for the write lock), WAL journal (readers never block the writer) and
    /// foreign keys. Switching a new file to WAL needs a moment's exclusive lock and answers
    /// "locked" at once rather than waiting out the busy timeout, so it is tried again until
    /// the timeout is up.
    fn set_up_sqlite(&self, sqlite: &mut SqliteConnection) -> QueryResult<()> {
        sqlite_session::install(
            sqlite,
            Arc::clone(&self.sqlite_writers),
            self.sqlite_busy_timeout,
        )?;
        sqlite.batch_execute("PRAGMA foreign_keys = ON")?;
        let deadline = std::time::Instant::now() + self.sqlite_busy_timeout;
        loop {
            match sqlite.batch_execute("PRAGMA journal_mode = WAL") {
                Err(error)
                    if classify(&error) == ErrorClass::Retryable
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
        let spare = lock(&self.spare).take();
        match spare {
            Some(mut conn) => {
                if conn.is_broken() {
                    self.establish()
                } else {
                    Ok(conn)
                }
            }
            None => self.establish(),
        }
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
