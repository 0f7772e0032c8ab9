//! What a database error means for the transaction that met it: retry, reconnect, unknown
//! outcome, or give up. By the SQLSTATE the server reported (diesel 2.4's
//! `DatabaseErrorInformation::sqlstate`), whatever language its message is in; by diesel's
//! kind and a few words only where there is no code: SQLite's busy/locked, and the connection
//! losses libpq reports itself.
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
//!   meaning at the commit point `run_transaction` decides. CockroachDB never translates its
//!   messages (`lc_messages` is unsupported), so its words are a safe test — the one test of a
//!   server's words here, and only on a 57014.

use diesel::pg::sql_state;
use diesel::result::{DatabaseErrorKind, Error as DieselError, SqlState, SqlStateClass};
use diesel::ConnectionError;

/// What an error means for the transaction that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// A conflict the database resolved by aborting us: 40001 (CockroachDB's "restart
    /// transaction", PostgreSQL's serialization failure), 40P01 deadlock, SQLite busy/locked.
    Retryable,
    /// The connection is gone: class 08, 57P01/57P02/57P03 (shutdown, a draining CockroachDB
    /// node), 25P03/57P05 (idle timeouts), a connection libpq reports bad or lost.
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

/// Classifies a database error: a connection libpq reports bad is lost, whatever the server
/// said; otherwise by the SQLSTATE the server reported, in one table; an error without one
/// (SQLite's, or one libpq reports itself) by diesel's kind and the few words SQLite and libpq
/// use for busy and lost (see the [module documentation](self)).
pub fn classify(error: &DieselError) -> ErrorClass {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => {
            ErrorClass::ConnectionLost
        }
        DieselError::DatabaseError(kind, info) => match info.sqlstate() {
            Some(code) => class_of_code(code, info.message()),
            None => class_without_code(*kind, info.message()),
        },
        DieselError::BrokenTransactionManager => ErrorClass::ConnectionLost,
        DieselError::RollbackErrorOnCommit { commit_error, .. } => classify(commit_error),
        _ => ErrorClass::Permanent,
    }
}

/// The class of SQLSTATE `code`; `message` only tells CockroachDB's 57014 from PostgreSQL's.
fn class_of_code(code: SqlState, message: &str) -> ErrorClass {
    match code {
        sql_state::T_R_SERIALIZATION_FAILURE | sql_state::T_R_DEADLOCK_DETECTED => {
            ErrorClass::Retryable
        }
        sql_state::T_R_STATEMENT_COMPLETION_UNKNOWN => ErrorClass::Ambiguous,
        // A malformed request: the session may well be fine, and sending it again cannot help.
        // (When PostgreSQL closes the session over it, libpq reports the connection bad.)
        sql_state::PROTOCOL_VIOLATION => ErrorClass::Permanent,
        // 57P01 is also how a draining CockroachDB node closes a session ("server is shutting
        // down") and refuses a new one ("server is not accepting clients, try another node"):
        // cockroachdb/cockroach `pkg/sql/pgwire/server.go`, `newAdminShutdownErr`.
        sql_state::ADMIN_SHUTDOWN | sql_state::CRASH_SHUTDOWN | sql_state::CANNOT_CONNECT_NOW => {
            ErrorClass::ConnectionLost
        }
        // PostgreSQL's other "terminating connection due to …" (idle in a transaction, idle
        // session): the server closes the session after it.
        sql_state::IDLE_IN_TRANSACTION_SESSION_TIMEOUT | sql_state::IDLE_SESSION_TIMEOUT => {
            ErrorClass::ConnectionLost
        }
        sql_state::QUERY_CANCELED => cockroach_cancel(message).unwrap_or(ErrorClass::Permanent),
        code if code.class() == SqlStateClass::CONNECTION_EXCEPTION => ErrorClass::ConnectionLost,
        _ => ErrorClass::Permanent,
    }
}

/// CockroachDB's 57014, told from PostgreSQL's by its words: every one of its messages begins
/// "query execution canceled" (`cancelchecker.QueryCanceledError`,
/// `sqlerrors.QueryTimeoutError`, `sqlerrors.TxnTimeoutError`); PostgreSQL's begin "canceling
/// statement due to …" in English.
fn cockroach_cancel(message: &str) -> Option<ErrorClass> {
    let message = message.to_ascii_lowercase();
    if message.contains("query execution canceled due to statement timeout")
        || message.contains("query execution canceled due to transaction timeout")
    {
        Some(ErrorClass::CockroachTimeout)
    } else if message.contains("query execution canceled") {
        Some(ErrorClass::CockroachCancel)
    } else {
        None
    }
}

/// The class of an error that carries no SQLSTATE: a serialization failure diesel already
/// named, SQLite's busy/locked (SQLite has no SQLSTATE), or a connection loss libpq reports
/// itself (its text, no server code). Anything else, whatever its words, is permanent.
fn class_without_code(kind: DatabaseErrorKind, message: &str) -> ErrorClass {
    const SQLITE_BUSY: &[&str] = &[
        "database is locked",        // SQLITE_BUSY
        "database table is locked",  // SQLITE_LOCKED
        "database schema is locked", // SQLITE_LOCKED_SHAREDCACHE
    ];
    const LIBPQ_CONNECTION_LOST: &[&str] = &[
        "server closed the connection",
        "no connection to the server",
        "connection to server was lost",
        "could not receive data from server",
        "could not send data to server",
        "connection reset",
        "broken pipe",
    ];
    let message = message.to_ascii_lowercase();
    let says = |words: &[&str]| words.iter().any(|needle| message.contains(needle));
    if kind == DatabaseErrorKind::SerializationFailure || says(SQLITE_BUSY) {
        ErrorClass::Retryable
    } else if says(LIBPQ_CONNECTION_LOST) {
        ErrorClass::ConnectionLost
    } else {
        ErrorClass::Permanent
    }
}

/// Whether a failed connection attempt was a draining CockroachDB node's refusal. It is 57P01
/// (cockroachdb/cockroach `pkg/sql/pgwire/server.go`, `ErrDrainingNewConn` through
/// `newAdminShutdownErr`), but a refused start-up reaches diesel's `establish` as libpq's text
/// only, so its words tell.
pub(crate) fn is_drain_refusal(error: &ConnectionError) -> bool {
    matches!(error, ConnectionError::BadConnection(message)
        if message.contains("server is not accepting clients"))
}

/// Errors as diesel gives them, for the tests of every module that reads them.
#[cfg(test)]
pub(crate) mod test_errors {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};

    /// An error the server reported with SQLSTATE `code` and `message`, as diesel 2.4's
    /// `PgConnection` gives one (`DatabaseErrorInformation::sqlstate`).
    pub(crate) fn from_server(code: &str, message: &str) -> DieselError {
        let code = code.parse().expect("a SQLSTATE");
        crate::db::sqlstate::error_from_text(message.to_string(), Some(code))
    }

    /// An error of `kind` with no SQLSTATE: SQLite's, or one libpq reports itself.
    pub(crate) fn without_code(kind: DatabaseErrorKind, message: &str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(message.to_string()))
    }
}

#[cfg(test)]
mod tests;
