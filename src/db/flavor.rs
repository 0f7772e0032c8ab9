//! Which engine is on the other end, detected from the server.

use super::DbConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

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
            DbConnection::Postgresql(pg) => Flavor::detect_server(pg),
        }
    }

    /// Tells CockroachDB from PostgreSQL by `SELECT version()`.
    pub fn detect_server(pg: &mut PgConnection) -> QueryResult<Flavor> {
        let version: String =
            diesel::select(diesel::dsl::sql::<Text>("version()")).get_result(pg)?;
        Ok(if version.contains("CockroachDB") {
            Flavor::CockroachDb
        } else {
            Flavor::PostgreSql
        })
    }
}
