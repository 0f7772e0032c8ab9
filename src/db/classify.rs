//! What a database error means for the transaction that met it: retry, reconnect, unknown
//! outcome, or give up. By SQLSTATE where diesel exposes it, by message where it does not.

use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// What an error means for the transaction that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// A conflict the database resolved by aborting us: 40001 (CockroachDB's "restart
    /// transaction", PostgreSQL's serialization failure), 40P01 deadlock, SQLite busy/locked.
    Retryable,
    /// The connection is gone (closed, reset, backend terminated).
    ConnectionLost,
    /// 40003 "result is ambiguous": CockroachDB cannot tell whether the commit happened.
    Ambiguous,
    /// Anything else: the caller's bug, bad data, a constraint, …
    Permanent,
}

/// Classifies a database error, by SQLSTATE wherever diesel exposes it: 40001 arrives as
/// `SerializationFailure` and class 08 (or a connection libpq reports bad) as
/// `ClosedConnection`, whatever language the server speaks. Diesel 2.3 gives no other SQLSTATE,
/// so 40P01 (deadlock), 40003 (ambiguous result), 57P01 (shutdown, drain) and SQLite's busy
/// arrive as `Unknown` and are recognised by their English messages. CockroachDB never
/// translates its messages; PostgreSQL does when `lc_messages` is not English, and then a
/// deadlock would count as permanent (docs/design.md, "CockroachDB compatibility").
pub fn classify(error: &DieselError) -> ErrorClass {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => {
            ErrorClass::Retryable
        }
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => {
            ErrorClass::ConnectionLost
        }
        DieselError::DatabaseError(_, info) => classify_message(info.message()),
        DieselError::BrokenTransactionManager => ErrorClass::ConnectionLost,
        DieselError::RollbackErrorOnCommit { commit_error, .. } => classify(commit_error),
        _ => ErrorClass::Permanent,
    }
}

fn classify_message(message: &str) -> ErrorClass {
    let message = message.to_ascii_lowercase();
    const RETRYABLE: &[&str] = &[
        "restart transaction",        // CockroachDB 40001
        "could not serialize access", // PostgreSQL 40001
        "deadlock detected",          // PostgreSQL 40P01
        "database is locked",         // SQLITE_BUSY
        "database table is locked",   // SQLITE_LOCKED
        "database schema is locked",  // SQLITE_LOCKED_SHAREDCACHE
    ];
    const CONNECTION_LOST: &[&str] = &[
        "terminating connection", // 57P01 admin shutdown / pg_terminate_backend
        // A draining CockroachDB node: 57P01 to open sessions, and the refusal of new ones
        // (cockroachdb/cockroach `pkg/sql/pgwire/server.go`). Another node, or this one after
        // its restart, will take the work.
        "server is shutting down",
        "server is not accepting clients",
        "server closed the connection",       // libpq
        "no connection to the server",        // libpq
        "connection to server was lost",      // libpq
        "could not receive data from server", // libpq
        "could not send data to server",      // libpq
        "connection reset",
        "broken pipe",
    ];
    if message.contains("result is ambiguous") {
        ErrorClass::Ambiguous
    } else if RETRYABLE.iter().any(|needle| message.contains(needle)) {
        ErrorClass::Retryable
    } else if CONNECTION_LOST
        .iter()
        .any(|needle| message.contains(needle))
    {
        ErrorClass::ConnectionLost
    } else {
        ErrorClass::Permanent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(message: &str) -> DieselError {
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, Box::new(message.to_string()))
    }

    #[test]
    fn messages_without_their_own_kind_are_recognised() {
        assert_eq!(
            classify(&unknown("deadlock detected")),
            ErrorClass::Retryable
        );
        assert_eq!(
            classify(&unknown("result is ambiguous (error=rpc error)")),
            ErrorClass::Ambiguous
        );
        assert_eq!(
            classify(&unknown("database is locked")),
            ErrorClass::Retryable
        );
        assert_eq!(
            classify(&unknown(
                "terminating connection due to administrator command"
            )),
            ErrorClass::ConnectionLost
        );
        assert_eq!(
            classify(&unknown("duplicate key value violates unique constraint")),
            ErrorClass::Permanent
        );
        assert_eq!(classify(&DieselError::NotFound), ErrorClass::Permanent);
    }

    #[test]
    fn a_draining_cockroachdb_node_is_a_lost_connection() {
        for message in [
            "server is shutting down",
            "server is not accepting clients, try another node",
        ] {
            assert_eq!(
                classify(&unknown(message)),
                ErrorClass::ConnectionLost,
                "{message}"
            );
        }
    }

    #[test]
    fn errors_with_a_sqlstate_kind_are_classified_whatever_their_language() {
        let translated = |kind| {
            DieselError::DatabaseError(
                kind,
                Box::new("konnte Zugriff nicht serialisieren".to_string()),
            )
        };
        assert_eq!(
            classify(&translated(DatabaseErrorKind::SerializationFailure)),
            ErrorClass::Retryable
        );
        assert_eq!(
            classify(&translated(DatabaseErrorKind::ClosedConnection)),
            ErrorClass::ConnectionLost
        );
    }
}
