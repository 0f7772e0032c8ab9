//! The engine on the other end, and the protocol's statements per engine as methods of the
//! connection: how to begin, commit, restart and roll back a transaction on CockroachDB,
//! PostgreSQL and SQLite. The driver calls these and never looks at the backend itself.

#[cfg(any(feature = "postgres", feature = "sqlite"))]
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::result::QueryResult;

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

/// How [`RetryConnection::default_isolation`] names SERIALIZABLE.
pub(crate) const SERIALIZABLE: &str = "serializable";

/// The `BEGIN` of a transaction of `access` on `flavor` (CockroachDB's `SAVEPOINT` follows it).
pub(crate) fn begin_statement(flavor: Flavor, access: Access) -> &'static str {
    match (flavor, access) {
        (Flavor::Sqlite, Access::ReadWrite) => "BEGIN IMMEDIATE",
        (Flavor::Sqlite, Access::ReadOnly) => "BEGIN",
        (_, Access::ReadWrite) => "BEGIN ISOLATION LEVEL SERIALIZABLE",
        (_, Access::ReadOnly) => "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY",
    }
}

/// The server behind `version()`'s answer: CockroachDB says its name; PostgreSQL otherwise.
pub(crate) fn server_flavor(version: &str) -> Flavor {
    if version.contains("CockroachDB") {
        Flavor::CockroachDb
    } else {
        Flavor::PostgreSql
    }
}

/// What a server is asked for its version, and for the isolation a lone statement runs at
/// (PostgreSQL and CockroachDB both have `current_setting`).
pub(crate) const VERSION: &str = "version()";
/// See [`VERSION`].
pub(crate) const DEFAULT_ISOLATION: &str = "current_setting('default_transaction_isolation')";

/// A Diesel connection [`run_transaction`](crate::run_transaction) can drive: Diesel's
/// `PgConnection` (feature `postgres`) and `SqliteConnection` (feature `sqlite`), or your own
/// connection type delegating to them.
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
    /// `COMMIT`, which only closes the transaction (its failure is ignored: the data is
    /// committed, and Diesel marks the connection for the pool to drop); elsewhere `COMMIT`.
    fn commit(&mut self, flavor: Flavor) -> QueryResult<()>;

    /// CockroachDB: `ROLLBACK TO SAVEPOINT cockroach_restart`, keeping the transaction open for
    /// the next attempt — its record and the intents of its earlier writes, with its epoch
    /// incremented. An error where no transaction is open.
    fn rollback_to_restart(&mut self) -> QueryResult<()>;

    /// Rolls back whatever transaction is open. A connection whose rollback fails is left
    /// marked broken by Diesel, so a pool discards it instead of handing out an open
    /// transaction.
    fn rollback(&mut self);

    /// Whether Diesel's transaction manager has a transaction open.
    fn in_transaction(&mut self) -> bool;

    /// Rolls back whatever transaction is open and marks the connection broken, so that a
    /// pool drops it instead of handing it out again: for a connection lost, or left in a
    /// state nobody knows, outside a transaction (where Diesel does not mark it itself).
    fn discard(&mut self);
}

/// [`RetryConnection`] for the connections Diesel manages with its ANSI transaction manager.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
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
                    if let Err(error) = self.batch_execute("SAVEPOINT cockroach_restart") {
                        self.rollback();
                        return Err(error);
                    }
                }
                Ok(())
            }

            fn commit(&mut self, flavor: Flavor) -> QueryResult<()> {
                if flavor == Flavor::CockroachDb {
                    self.batch_execute("RELEASE SAVEPOINT cockroach_restart")?;
                    let _ = AnsiTransactionManager::commit_transaction(self);
                    return Ok(());
                }
                AnsiTransactionManager::commit_transaction(self)
            }

            fn rollback_to_restart(&mut self) -> QueryResult<()> {
                if !self.in_transaction() {
                    return Err(diesel::result::Error::NotInTransaction);
                }
                self.batch_execute("ROLLBACK TO SAVEPOINT cockroach_restart")
            }

            fn rollback(&mut self) {
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
                self.rollback();
                AnsiTransactionManager::transaction_manager_status_mut(self).set_in_error();
            }
        }
    };
}

/// `SELECT <expression>`, one text value the server computes.
#[cfg(feature = "postgres")]
fn select_text(conn: &mut diesel::PgConnection, expression: &str) -> QueryResult<String> {
    use diesel::RunQueryDsl;
    diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(expression)).get_result(conn)
}

/// `SELECT version()` tells CockroachDB from PostgreSQL.
#[cfg(feature = "postgres")]
fn detect_server(conn: &mut diesel::PgConnection) -> QueryResult<Flavor> {
    Ok(server_flavor(&select_text(conn, VERSION)?))
}

/// The session's `default_transaction_isolation` (PostgreSQL and CockroachDB both have
/// `current_setting`), lower case.
#[cfg(feature = "postgres")]
fn server_default_isolation(conn: &mut diesel::PgConnection) -> QueryResult<String> {
    Ok(select_text(conn, DEFAULT_ISOLATION)?.to_lowercase())
}

#[cfg(feature = "postgres")]
ansi_retry_connection!(
    diesel::PgConnection,
    Flavor::PostgreSql,
    detect_server,
    server_default_isolation
);

#[cfg(feature = "sqlite")]
ansi_retry_connection!(
    diesel::SqliteConnection,
    Flavor::Sqlite,
    |_: &mut diesel::SqliteConnection| Ok(Flavor::Sqlite),
    |_: &mut diesel::SqliteConnection| Ok(SERIALIZABLE.to_string())
);
