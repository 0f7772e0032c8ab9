//! Connections, the lowest layer: one connection type over CockroachDB/PostgreSQL and SQLite
//! and its flavour, the r2d2 pool that hands connections out with their per-connection set-up,
//! the helper crate's traits for them (`retry.rs`), the connection URL and the redaction of its
//! secrets. Error classification and the flavour come from `diesel_retry`, re-exported here.
//! Nothing here knows about transactions, migrations or the bank.

pub mod binary_copy;
pub mod binds;
pub mod cached_insert;
pub mod classify;
pub mod config;
pub mod connection;
pub mod database;
pub mod durability;
pub mod echo;
pub mod error;
pub mod long_waiters;
pub mod manager;
pub mod options;
pub mod redact;
mod retry;
pub mod sqlite_session;
pub mod sqlstate;
pub mod stall;
pub mod url;
pub mod write_queue;

pub use connection::DbConnection;
pub use database::Database;
pub use diesel_retry::{classify, cockroach_retry_reason, sqlstate, ErrorClass, Flavor};
pub use echo::{echo_connection_events, ECHO_TARGET};
pub use error::{one_line, DbError};
pub use manager::{
    statement_timeout_millis, DbConnectionManager, DedicatedConnection, Pool, PooledConnection,
    MAX_STATEMENT_TIMEOUT,
};
pub use options::{
    ConnectOptions, InstrumentationFactory, IDLE_IN_TRANSACTION_TIMEOUT, MIGRATION_STALL_TIMEOUT,
    STALL_GRACE,
};
pub use redact::Redactor;
pub use url::ConnectionUrl;
