//! The protocol's statements, per engine, as methods of the connection: how to begin, commit,
//! restart and roll back a transaction on CockroachDB, PostgreSQL and SQLite. The retry loop
//! calls these and never looks at the backend itself.
//!
//! One verb per meaning: [`roll_back`](RetryConnection::roll_back) ends the open transaction
//! and keeps the connection;
//! [`roll_back_to_restart`](RetryConnection::roll_back_to_restart) undoes an attempt and keeps
//! the transaction (CockroachDB); [`discard`](RetryConnection::discard) rolls back and marks
//! the connection broken, so that a pool drops it.

use crate::db::connection::on_concrete_connection;
use crate::db::{classify, DbConnection, ErrorClass, Flavor};
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::prelude::*;
use diesel::result::Error as DieselError;

/// The name of CockroachDB's client-side retry savepoint, written once for the constants below.
macro_rules! restart_savepoint {
    () => {
        "cockroach_restart"
    };
}

/// The name of CockroachDB's client-side retry savepoint.
pub const RESTART_SAVEPOINT: &str = restart_savepoint!();
/// Sets the savepoint, as the transaction's first statement.
const SET_RESTART: &str = concat!("SAVEPOINT ", restart_savepoint!());
/// Commits, on CockroachDB.
const RELEASE_RESTART: &str = concat!("RELEASE SAVEPOINT ", restart_savepoint!());
/// Undoes the attempt, keeping the transaction open.
const ROLLBACK_TO_RESTART: &str = concat!("ROLLBACK TO SAVEPOINT ", restart_savepoint!());

/// How [`RetryConnection::default_isolation`] names SERIALIZABLE.
pub(super) const SERIALIZABLE: &str = "serializable";

/// Whether a transaction may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads and writes: SERIALIZABLE on a server, `BEGIN IMMEDIATE` (the write lock up front)
    /// on SQLite.
    ReadWrite,
    /// Only reads: `READ ONLY` on a server, a plain deferred `BEGIN` on SQLite, whose WAL
    /// readers never wait for a writer.
    ReadOnly,
}

/// Why a commit did not go through.
#[derive(Debug)]
pub enum CommitError {
    /// A conflict that rolled the transaction back (on CockroachDB, back to the savepoint if the
    /// transaction is still open): retry.
    Conflict(DieselError),
    /// The commit was sent and its outcome is unknown (lost connection, 40003, CockroachDB's
    /// 57014).
    Ambiguous(DieselError),
    /// Anything else; the transaction was not committed.
    Failed(DieselError),
}

impl CommitError {
    /// What a failed `RELEASE SAVEPOINT` or `COMMIT` means: a conflict means the server rolled
    /// back (PostgreSQL ends the transaction on a failed COMMIT; diesel rolls SQLite back), a
    /// lost connection or 40003 leaves the outcome unknown, and so does CockroachDB's 57014,
    /// which it puts in place of whatever the commit met, its success included
    /// ([`ErrorClass::CockroachTimeout`], [`ErrorClass::CockroachCancel`]) — whichever
    /// protocol runs on it: a plain pool on CockroachDB commits with `COMMIT`. PostgreSQL's
    /// 57014 is a commit that did not happen, [`ErrorClass::Permanent`].
    fn from_error(error: DieselError) -> CommitError {
        match classify(&error) {
            ErrorClass::Retryable => CommitError::Conflict(error),
            ErrorClass::Ambiguous
            | ErrorClass::ConnectionLost
            | ErrorClass::CockroachTimeout
            | ErrorClass::CockroachCancel => CommitError::Ambiguous(error),
            ErrorClass::Permanent => CommitError::Failed(error),
        }
    }
}

/// A Diesel connection `run_transaction` can drive: Diesel's own `PgConnection` and
/// `SqliteConnection`, and roachbank's [`DbConnection`] over both.
pub trait RetryConnection {
    /// The protocol to use when nobody said which engine this is: PostgreSQL's (SERIALIZABLE
    /// transactions retried whole, which is correct on CockroachDB too) for a server
    /// connection, SQLite's for SQLite.
    fn default_flavor(&self) -> Flavor;

    /// Which engine is on the other end: `SELECT version()` on a server, SQLite by type.
    fn detect_flavor(&mut self) -> QueryResult<Flavor>;

    /// The isolation a statement sent on its own (an implicit transaction) runs at: the
    /// session's `default_transaction_isolation` on a server, lower case (`serializable`,
    /// `read committed`, …); `serializable` on SQLite, whose transactions always are.
    fn default_isolation(&mut self) -> QueryResult<String>;

    /// Begins a transaction the way `flavor` needs: `BEGIN ISOLATION LEVEL SERIALIZABLE` on a
    /// server (`READ ONLY` for [`Access::ReadOnly`]) followed on CockroachDB by
    /// `SAVEPOINT cockroach_restart`; `BEGIN IMMEDIATE` (or `BEGIN`) on SQLite.
    fn begin(&mut self, flavor: Flavor, access: Access) -> QueryResult<()>;

    /// Commits: on CockroachDB `RELEASE SAVEPOINT cockroach_restart` (the real commit), then
    /// `COMMIT`, which only closes the transaction; elsewhere `COMMIT`.
    fn commit(&mut self, flavor: Flavor) -> Result<(), CommitError>;

    /// CockroachDB: `ROLLBACK TO SAVEPOINT cockroach_restart`, keeping the transaction open for
    /// the next attempt — its record and the intents of its earlier writes, with its epoch
    /// incremented (not a priority that wins: CockroachDB treats normal priorities as equal).
    /// An error where there is no such savepoint.
    fn roll_back_to_restart(&mut self) -> QueryResult<()>;

    /// Rolls back whatever transaction is open, keeping the connection for the next
    /// transaction. A connection whose rollback fails is left marked broken by Diesel, so a
    /// pool drops it instead of handing out an open transaction.
    fn roll_back(&mut self);

    /// Whether Diesel's transaction manager has a transaction open.
    fn in_transaction(&mut self) -> bool;

    /// Rolls back whatever transaction is open and marks the connection broken, so that a
    /// pool drops it instead of handing it out again: for a connection lost, or left in a
    /// state nobody knows, outside a transaction (where Diesel does not mark it itself).
    fn discard(&mut self);
}

/// The statement that begins a transaction for `flavor` and `access`.
fn begin_statement(flavor: Flavor, access: Access) -> &'static str {
    match (flavor, access) {
        (Flavor::Sqlite, Access::ReadWrite) => "BEGIN IMMEDIATE",
        (Flavor::Sqlite, Access::ReadOnly) => "BEGIN",
        (_, Access::ReadWrite) => "BEGIN ISOLATION LEVEL SERIALIZABLE",
        (_, Access::ReadOnly) => "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY",
    }
}

/// [`RetryConnection`] for the connections Diesel manages with its ANSI transaction manager
/// (`PgConnection`, `SqliteConnection`).
macro_rules! ansi_retry_connection {
    ($connection:ty, $default:expr, $detect:expr, $isolation:expr) => {
        impl RetryConnection for $connection {
            fn default_flavor(&self) -> Flavor {
                $default
            }

            fn detect_flavor(&mut self) -> QueryResult<Flavor> {
                $detect(self)
            }

            fn default_isolation(&mut self) -> QueryResult<String> {
                $isolation(self)
            }

            fn begin(&mut self, flavor: Flavor, access: Access) -> QueryResult<()> {
                AnsiTransactionManager::begin_transaction_sql(
                    self,
                    begin_statement(flavor, access),
                )?;
                if flavor == Flavor::CockroachDb {
                    if let Err(error) = self.batch_execute(SET_RESTART) {
                        self.roll_back();
                        return Err(error);
                    }
                }
                Ok(())
            }

            fn commit(&mut self, flavor: Flavor) -> Result<(), CommitError> {
                if flavor == Flavor::CockroachDb {
                    self.batch_execute(RELEASE_RESTART)
                        .map_err(CommitError::from_error)?;
                    // RELEASE was the commit. COMMIT only closes the transaction; if it fails
                    // the data is committed all the same and Diesel marks the connection for
                    // the pool to drop.
                    let _ = AnsiTransactionManager::commit_transaction(self);
                    return Ok(());
                }
                AnsiTransactionManager::commit_transaction(self).map_err(CommitError::from_error)
            }

            fn roll_back_to_restart(&mut self) -> QueryResult<()> {
                if !self.in_transaction() {
                    return Err(DieselError::NotInTransaction);
                }
                self.batch_execute(ROLLBACK_TO_RESTART)
            }

            fn roll_back(&mut self) {
                if self.in_transaction() {
                    let _ = AnsiTransactionManager::rollback_transaction(self);
                }
            }

            fn in_transaction(&mut self) -> bool {
                matches!(
                    AnsiTransactionManager::transaction_manager_status_mut(self)
                        .transaction_depth(),
                    Ok(Some(_))
                )
            }

            fn discard(&mut self) {
                self.roll_back();
                AnsiTransactionManager::transaction_manager_status_mut(self).set_in_error();
            }
        }
    };
}

/// The session's `default_transaction_isolation` (PostgreSQL and CockroachDB both have
/// `current_setting`), lower case.
fn server_default_isolation(conn: &mut PgConnection) -> QueryResult<String> {
    diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
        "current_setting('default_transaction_isolation')",
    ))
    .get_result::<String>(conn)
    .map(|isolation| isolation.to_lowercase())
}

ansi_retry_connection!(
    PgConnection,
    Flavor::PostgreSql,
    Flavor::detect_server,
    server_default_isolation
);
ansi_retry_connection!(
    SqliteConnection,
    Flavor::Sqlite,
    |_: &mut SqliteConnection| Ok(Flavor::Sqlite),
    |_: &mut SqliteConnection| Ok(SERIALIZABLE.to_string())
);

impl RetryConnection for DbConnection {
    fn default_flavor(&self) -> Flavor {
        match self {
            DbConnection::Postgresql(pg) => pg.default_flavor(),
            DbConnection::Sqlite(sqlite) => sqlite.default_flavor(),
        }
    }

    fn detect_flavor(&mut self) -> QueryResult<Flavor> {
        Flavor::detect(self)
    }

    fn default_isolation(&mut self) -> QueryResult<String> {
        on_concrete_connection!(self, conn => conn.default_isolation())
    }

    fn begin(&mut self, flavor: Flavor, access: Access) -> QueryResult<()> {
        on_concrete_connection!(self, conn => conn.begin(flavor, access))
    }

    fn commit(&mut self, flavor: Flavor) -> Result<(), CommitError> {
        on_concrete_connection!(self, conn => conn.commit(flavor))
    }

    fn roll_back_to_restart(&mut self) -> QueryResult<()> {
        on_concrete_connection!(self, conn => conn.roll_back_to_restart())
    }

    fn roll_back(&mut self) {
        on_concrete_connection!(self, conn => conn.roll_back())
    }

    fn in_transaction(&mut self) -> bool {
        on_concrete_connection!(self, conn => conn.in_transaction())
    }

    fn discard(&mut self) {
        on_concrete_connection!(self, conn => conn.discard())
    }
}
