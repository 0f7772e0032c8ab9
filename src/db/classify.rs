//! What a database error means for the transaction that met it: retry, reconnect, unknown
//! outcome, or give up. By SQLSTATE where diesel exposes it, by message where it does not.
//!
//! SQLSTATE 57014 (query canceled) means different things on the two servers, and their
//! messages tell them apart, whatever protocol the caller chose:
//!
//! * **PostgreSQL** ("canceling statement due to statement timeout", "… due to user request"):
//!   the statement stopped before it finished — a cancel that takes effect makes "the current
//!   command terminate early and return an error result" (libpq docs, "Canceling Queries in
//!   Progress"); `statement_timeout` aborts "any statement that takes more than the specified
//!   amount of time" (docs, "Client Connection Defaults") — and its transaction is rolled back.
//!   A COMMIT holds cancel interrupts off from the moment it really commits
//!   (`src/backend/access/transam/xact.c`, `CommitTransaction`: "Prevent cancel/die interrupt
//!   while cleaning up"), so 57014 there means "not committed" too. It is
//!   [`ErrorClass::Permanent`], as any error after which retrying cannot help.
//! * **CockroachDB** ("query execution canceled", "… due to statement timeout"): once a
//!   statement's context is canceled, CockroachDB *overwrites whatever error the statement met*
//!   with 57014, "even in the cases where the error is a retryable error"; a timed-out
//!   statement gets it even without an error of its own (cockroachdb/cockroach
//!   `pkg/sql/conn_executor_exec.go`, `execStmtInOpenState`, the deferred function whose
//!   comments read "Detect context cancelation and overwrite whatever error might have been set
//!   on the result before", then "A timed out query should never produce retryable
//!   errors/events/payloads so we intercept and overwrite them all here"). That runs after an
//!   implicit transaction's auto-commit, and `RELEASE SAVEPOINT cockroach_restart` is a
//!   commit, so 57014 on a commit may hide one that went through, or an ambiguous result
//!   (40003): [`ErrorClass::CockroachTimeout`] and [`ErrorClass::CockroachCancel`], whose
//!   meaning at the commit point `run_transaction` decides.

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
    /// CockroachDB's 57014 after a timeout: "query execution canceled due to statement
    /// timeout" (`pkg/sql/sqlerrors`, `QueryTimeoutError`) or "… due to transaction timeout"
    /// (`TxnTimeoutError`). The caller's own bound: never retried. Before the commit point
    /// nothing was committed; on it, the commit may have gone through (see the
    /// [module documentation](self)).
    CockroachTimeout,
    /// CockroachDB's other 57014, "query execution canceled" (`pkg/util/cancelchecker`,
    /// `QueryCanceledError`): the session's or the statement's context was canceled — by a
    /// draining node, which cancels what still runs after `server.shutdown.transactions.timeout`
    /// and then closes the session with 57P01 (`pkg/sql/pgwire/server.go`, `drainImpl`;
    /// `conn.go`, `serveImpl`), or by `CANCEL QUERY`/`CANCEL SESSION` or a cancel request,
    /// which roachbank never sends. Like the 57P01 that follows it, the connection is done for:
    /// before the commit point the work goes again on a fresh one (another node, if this one
    /// drains); on it, the commit may have gone through.
    CockroachCancel,
    /// Anything else: the caller's bug, bad data, a constraint, PostgreSQL's 57014 (see the
    /// [module documentation](self)), …
    Permanent,
}

/// Classifies a database error, by SQLSTATE wherever diesel exposes it: 40001 arrives as
/// `SerializationFailure` and class 08 (or a connection libpq reports bad) as
/// `ClosedConnection`, whatever language the server speaks. Diesel 2.3 gives no other SQLSTATE,
/// so 40P01 (deadlock), 40003 (ambiguous result), 57P01 (shutdown, drain) and SQLite's busy
/// arrive as `Unknown` and are recognised by their English messages, as is CockroachDB's 57014
/// (whose words tell it from PostgreSQL's, see the [module documentation](self)). CockroachDB never
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
    // CockroachDB's 57014: every message begins so (`cancelchecker.QueryCanceledError`,
    // `sqlerrors.QueryTimeoutError`, `sqlerrors.TxnTimeoutError`).
    const COCKROACH_CANCELED: &str = "query execution canceled";
    const COCKROACH_TIMEOUTS: &[&str] = &[
        "query execution canceled due to statement timeout",
        "query execution canceled due to transaction timeout",
    ];
    if message.contains("result is ambiguous") {
        ErrorClass::Ambiguous
    } else if COCKROACH_TIMEOUTS
        .iter()
        .any(|needle| message.contains(needle))
    {
        ErrorClass::CockroachTimeout
    } else if message.contains(COCKROACH_CANCELED) {
        ErrorClass::CockroachCancel
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
    fn cockroachdb_57014_is_a_timeout_or_a_cancel() {
        for message in [
            "query execution canceled due to statement timeout",
            "query execution canceled due to transaction timeout",
        ] {
            assert_eq!(
                classify(&unknown(message)),
                ErrorClass::CockroachTimeout,
                "{message}"
            );
        }
        assert_eq!(
            classify(&unknown("query execution canceled")),
            ErrorClass::CockroachCancel
        );
    }

    #[test]
    fn postgresql_57014_is_permanent_it_rolled_back() {
        for message in [
            "canceling statement due to statement timeout",
            "canceling statement due to user request",
        ] {
            assert_eq!(
                classify(&unknown(message)),
                ErrorClass::Permanent,
                "{message}"
            );
        }
    }

    #[test]
    fn a_57014_on_commit_is_classified_from_the_commit_error() {
        let on_commit = DieselError::RollbackErrorOnCommit {
            rollback_error: Box::new(DieselError::BrokenTransactionManager),
            commit_error: Box::new(unknown("query execution canceled")),
        };
        assert_eq!(classify(&on_commit), ErrorClass::CockroachCancel);
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
