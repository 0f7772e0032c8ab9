//! roachbank's connections for the helper crate: [`DbConnection`] is a
//! [`RetryConnection`] (each method on the concrete connection inside), and `&Database` a
//! [`ConnectionSource`] that knows its flavour and vouches for its sessions.

use super::connection::on_concrete_connection;
use super::sqlite_session;
use super::{Database, DbConnection, Flavor, PooledConnection};
use diesel::result::QueryResult;
use diesel_retry::{Access, ConnectionSource, PoolError, RetryConnection};
use std::time::Duration;

impl RetryConnection for DbConnection {
    fn default_flavor(&self) -> Flavor {
        match self {
            DbConnection::Postgresql(pg) => pg.default_flavor(),
            DbConnection::Sqlite(sqlite) => sqlite.default_flavor(),
        }
    }

    fn detect_flavor(&mut self) -> QueryResult<Flavor> {
        on_concrete_connection!(self, conn => conn.detect_flavor())
    }

    fn default_isolation(&mut self) -> QueryResult<String> {
        on_concrete_connection!(self, conn => conn.default_isolation())
    }

    /// A SQLite write transaction first takes its turn in the pool's write queue
    /// ([`sqlite_session::begin_write`]), held until the transaction ends.
    fn begin(&mut self, flavor: Flavor, access: Access) -> QueryResult<()> {
        match self {
            DbConnection::Sqlite(sqlite) if access == Access::ReadWrite => {
                sqlite_session::begin_write(sqlite, |sqlite| sqlite.begin(flavor, access))
            }
            _ => on_concrete_connection!(self, conn => conn.begin(flavor, access)),
        }
    }

    fn commit(&mut self, flavor: Flavor) -> QueryResult<()> {
        let committed = on_concrete_connection!(self, conn => conn.commit(flavor));
        self.end_write_if_done();
        committed
    }

    fn rollback_to_restart(&mut self) -> QueryResult<()> {
        on_concrete_connection!(self, conn => conn.rollback_to_restart())
    }

    fn rollback(&mut self) {
        on_concrete_connection!(self, conn => conn.rollback());
        self.end_write_if_done();
    }

    fn in_transaction(&mut self) -> bool {
        on_concrete_connection!(self, conn => conn.in_transaction())
    }

    fn discard(&mut self) {
        on_concrete_connection!(self, conn => conn.discard());
        self.end_write_if_done();
    }
}

impl DbConnection {
    /// SQLite: gives the write turn up unless a transaction is still open.
    fn end_write_if_done(&mut self) {
        if let DbConnection::Sqlite(sqlite) = self {
            sqlite_session::end_write_if_done(sqlite);
        }
    }
}

impl ConnectionSource for &Database {
    type Connection = DbConnection;
    type Checkout<'s>
        = PooledConnection
    where
        Self: 's;

    fn flavor(&self) -> Option<Flavor> {
        Some(Database::flavor(self))
    }

    /// Every session is set up with `default_transaction_isolation = 'serializable'`
    /// ([`DbConnectionManager`](crate::db::DbConnectionManager)); SQLite always is.
    fn sessions_are_serializable(&self) -> bool {
        true
    }

    fn checkout(&mut self) -> Result<PooledConnection, PoolError> {
        self.pool().get()
    }

    /// At most `wait`, never longer than the pool's own connection timeout.
    fn checkout_within(&mut self, wait: Duration) -> Result<PooledConnection, PoolError> {
        let pool = self.pool();
        pool.get_timeout(wait.min(pool.connection_timeout()))
    }
}
