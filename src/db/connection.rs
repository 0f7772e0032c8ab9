//! The connection type: one connection to whichever database the URL names.

// Diesel's `MultiConnection` derive generates public items of its own (the multi-backend type,
// its bind collector, …) that carry no documentation; everything written here does.
#![allow(missing_docs)]

use diesel::prelude::*;

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
/// the few statements diesel's multi-backend cannot express (batch INSERT among them). Private
/// to the crate.
macro_rules! on_concrete_connection {
    ($conn:expr, $concrete:ident => $body:expr) => {
        match $conn {
            $crate::db::DbConnection::Postgresql($concrete) => $body,
            $crate::db::DbConnection::Sqlite($concrete) => $body,
        }
    };
}
pub(crate) use on_concrete_connection;
