//! What a database error means for the transaction that met it (see [`ErrorClass`]), and what
//! it says about itself: its SQLSTATE, CockroachDB's retry reason.

use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind, Error as DieselError, SqlState};

/// What a database error means for the transaction that met it: retry, reconnect, unknown
/// outcome, or give up. By the SQLSTATE the server reported (diesel 2.4's
/// `DatabaseErrorInformation::sqlstate`), whatever language its message is in; by diesel's
/// kind and a few words only where there is no code: SQLite's busy/locked, and the connection
/// losses libpq reports itself.
///
/// SQLSTATE 57014 (query canceled) means different things on the two servers, and their
/// messages tell them apart, whatever protocol the caller chose:
///
/// * **PostgreSQL** ("canceling statement due to statement timeout", "… due to user request"):
///   the statement stopped before it finished — a cancel that takes effect makes "the current
///   command terminate early and return an error result" (libpq docs, "Canceling Queries in
///   Progress"); `statement_timeout` aborts "any statement that takes more than the specified
///   amount of time" (docs, "Client Connection Defaults") — and its transaction is rolled back.
///   A COMMIT holds cancel interrupts off from the moment it really commits
///   (`src/backend/access/transam/xact.c`, `CommitTransaction`: "Prevent cancel/die interrupt
///   while cleaning up"), so 57014 there means "not committed" too. It is
///   [`ErrorClass::Permanent`], as any error after which retrying cannot help.
/// * **CockroachDB** ("query execution canceled", "… due to statement timeout"): once a
///   statement's context is canceled, CockroachDB *overwrites whatever error the statement met*
///   with 57014, "even in the cases where the error is a retryable error"; a timed-out
///   statement gets it even without an error of its own (cockroachdb/cockroach
///   `pkg/sql/conn_executor_exec.go`, `execStmtInOpenState`, the deferred function whose
///   comments read "Detect context cancelation and overwrite whatever error might have been set
///   on the result before", then "A timed out query should never produce retryable
///   errors/events/payloads so we intercept and overwrite them all here"). That runs after an
///   implicit transaction's auto-commit, and `RELEASE SAVEPOINT cockroach_restart` is a
///   commit, so 57014 on a commit may hide one that went through, or an ambiguous result
///   (40003): [`ErrorClass::CockroachTimeout`] and [`ErrorClass::CockroachCancel`], whose
///   meaning at the commit point [`run_transaction`](crate::run_transaction) decides. CockroachDB never translates its
///   messages (`lc_messages` is unsupported), so its words are a safe test — the one test of a
///   server's words here, and only on a 57014.
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
    /// [`ErrorClass`] documentation).
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
    /// [`ErrorClass`] documentation), …
    Permanent,
}

/// Classifies a database error: a connection libpq reports bad is lost, whatever the server
/// said; otherwise by the SQLSTATE the server reported, in one table; an error without one
/// (SQLite's, or one libpq reports itself) by diesel's kind and the few words SQLite and libpq
/// use for busy and lost (see the [`ErrorClass`] documentation).
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
    match code.as_str() {
        // serialization_failure, deadlock_detected
        "40001" | "40P01" => ErrorClass::Retryable,
        // statement_completion_unknown: CockroachDB's "result is ambiguous"
        "40003" => ErrorClass::Ambiguous,
        // protocol_violation, a malformed request: the session may well be fine, and sending
        // it again cannot help. (When PostgreSQL closes the session over it, libpq reports the
        // connection bad.)
        "08P01" => ErrorClass::Permanent,
        // admin_shutdown, crash_shutdown, cannot_connect_now. 57P01 is also how a draining
        // CockroachDB node closes a session ("server is shutting down") and refuses a new one
        // ("server is not accepting clients, try another node"): cockroachdb/cockroach
        // `pkg/sql/pgwire/server.go`, `newAdminShutdownErr`. Then PostgreSQL's other
        // "terminating connection due to …" (idle in a transaction, idle session): the server
        // closes the session after them. And class 08, connection exceptions.
        "57P01" | "57P02" | "57P03" | "25P03" | "57P05" => ErrorClass::ConnectionLost,
        code if code.starts_with("08") => ErrorClass::ConnectionLost,
        // query_canceled
        "57014" => cockroach_cancel(message).unwrap_or(ErrorClass::Permanent),
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
    const CONNECTION_LOST: &[&str] = &[
        "server closed the connection",
        "no connection to the server",
        "connection to server was lost",
        "could not receive data from server",
        "could not send data to server",
        "connection reset",
        "broken pipe",
        // tokio-postgres (diesel-async reports its errors without a code as
        // `UnableToSendCommand`): `Kind::Closed`, `Kind::Io` (`tokio_postgres::error`).
        "connection closed",
        "error communicating with the server",
    ];
    let message = message.to_ascii_lowercase();
    let says = |words: &[&str]| words.iter().any(|needle| message.contains(needle));
    if kind == DatabaseErrorKind::SerializationFailure || says(SQLITE_BUSY) {
        ErrorClass::Retryable
    } else if says(CONNECTION_LOST) {
        ErrorClass::ConnectionLost
    } else {
        ErrorClass::Permanent
    }
}

/// The SQLSTATE the server reported for `error` (diesel 2.4's
/// `DatabaseErrorInformation::sqlstate`), or `None`: SQLite has no SQLSTATEs, and an error libpq
/// reports itself (a connection lost, a command it could not send) carries none. Never derived
/// from diesel's error kind or guessed from the words.
pub fn sqlstate(error: &DieselError) -> Option<SqlState> {
    reported(error)?.sqlstate()
}

/// What the database reported for `error` (a failed commit's own error, if its rollback
/// failed too); `None` if it is not a database error.
fn reported(error: &DieselError) -> Option<&dyn DatabaseErrorInformation> {
    match error {
        DieselError::DatabaseError(_, info) => Some(info.as_ref()),
        DieselError::RollbackErrorOnCommit { commit_error, .. } => reported(commit_error),
        _ => None,
    }
}

/// CockroachDB's reason for a retry error (40001), as its message names it: `RETRY_SERIALIZABLE`,
/// `RETRY_WRITE_TOO_OLD`, `ABORT_REASON_ABORTED_RECORD_FOUND`,
/// `ReadWithinUncertaintyIntervalError`, `WriteTooOldError`, `inject_retry_errors_enabled` …;
/// `None` for any other error (PostgreSQL's 40001 included, whose message says "could not
/// serialize access due to …").
///
/// The shapes, from cockroachdb/cockroach `pkg/kv/kvpb/errors.go` and the "Transaction Retry
/// Error Reference" (cockroachdb/docs `transaction-retry-error-reference.md`): every client-side
/// retry error reads `restart transaction: TransactionRetryWithProtoRefreshError: <cause>`, where
/// the cause is one of
///
/// * `TransactionRetryError: retry txn (<REASON>[ - <detail>])` — `REASON` a
///   `TransactionRetryReason` such as `RETRY_SERIALIZABLE` or `RETRY_COMMIT_DEADLINE_EXCEEDED`;
/// * `TransactionAbortedError(<REASON>)` — a `TransactionAbortedReason`, `ABORT_REASON_…`;
/// * another error by its type name and a colon: `ReadWithinUncertaintyIntervalError: read at
///   time …`, `WriteTooOldError: write for key … too old …`;
/// * ``injected by `inject_retry_errors_enabled` session variable`` (the test hook).
pub fn cockroach_retry_reason(error: &DieselError) -> Option<&str> {
    retry_reason_in(reported(error)?.message())
}

/// The reason in a CockroachDB retry error's message (see [`cockroach_retry_reason`]).
fn retry_reason_in(message: &str) -> Option<&str> {
    const WRAPPER: &str = "TransactionRetryWithProtoRefreshError:";
    let cause = message.split_once(WRAPPER)?.1.trim_start();
    let word_at = |start: usize| {
        let rest = &cause[start..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        Some(&rest[..end]).filter(|word| !word.is_empty())
    };
    for marker in ["retry txn (", "TransactionAbortedError("] {
        if let Some(at) = cause.find(marker) {
            return word_at(at + marker.len());
        }
    }
    if cause.contains("inject_retry_errors_enabled") {
        return Some("inject_retry_errors_enabled");
    }
    // `ReadWithinUncertaintyIntervalError: …`, `WriteTooOldError: …`: the type name.
    word_at(0).filter(|name| cause[name.len()..].starts_with(':') && name.ends_with("Error"))
}

/// Errors as diesel gives them, for the tests.
#[cfg(test)]
pub(crate) mod test_errors {
    use diesel::result::{
        DatabaseErrorInformation, DatabaseErrorKind, Error as DieselError, SqlState,
    };

    /// An error the server reported with SQLSTATE `code` and `message`, as diesel 2.4's
    /// `PgConnection` gives one (`DatabaseErrorInformation::sqlstate`).
    pub(crate) fn from_server(code: &str, message: &str) -> DieselError {
        let sqlstate = Some(code.parse().expect("a SQLSTATE"));
        let message = message.to_string();
        DieselError::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new(ServerError { message, sqlstate }),
        )
    }

    /// An error of `kind` with no SQLSTATE: SQLite's, or one libpq reports itself.
    pub(crate) fn without_code(kind: DatabaseErrorKind, message: &str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(message.to_string()))
    }

    struct ServerError {
        message: String,
        sqlstate: Option<SqlState>,
    }

    impl DatabaseErrorInformation for ServerError {
        fn message(&self) -> &str {
            &self.message
        }
        fn details(&self) -> Option<&str> {
            None
        }
        fn hint(&self) -> Option<&str> {
            None
        }
        fn table_name(&self) -> Option<&str> {
            None
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            None
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
        fn sqlstate(&self) -> Option<SqlState> {
            self.sqlstate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_errors::{from_server, without_code};
    use super::*;

    #[test]
    fn errors_without_their_own_kind_are_recognised_by_their_sqlstate() {
        assert_eq!(
            classify(&from_server("40P01", "deadlock detected")),
            ErrorClass::Retryable
        );
        assert_eq!(
            classify(&from_server(
                "40003",
                "result is ambiguous (error=rpc error)"
            )),
            ErrorClass::Ambiguous
        );
        assert_eq!(
            classify(&without_code(
                DatabaseErrorKind::Unknown,
                "database is locked"
            )),
            ErrorClass::Retryable
        );
        assert_eq!(
            classify(&from_server(
                "57P01",
                "terminating connection due to administrator command"
            )),
            ErrorClass::ConnectionLost
        );
        assert_eq!(
            classify(&from_server(
                "23505",
                "duplicate key value violates unique constraint"
            )),
            ErrorClass::Permanent
        );
        assert_eq!(classify(&DieselError::NotFound), ErrorClass::Permanent);
    }

    #[test]
    fn errors_are_classified_by_their_sqlstate_whatever_their_language() {
        // PostgreSQL translates its messages when lc_messages is not English; the code stays.
        let cases = [
            (
                "40001",
                "konnte Zugriff nicht serialisieren",
                ErrorClass::Retryable,
            ),
            (
                "40P01",
                "Verklemmung (Deadlock) entdeckt",
                ErrorClass::Retryable,
            ),
            ("40003", "Ergebnis ist mehrdeutig", ErrorClass::Ambiguous),
            ("08000", "Verbindungsfehler", ErrorClass::ConnectionLost),
            (
                "08003",
                "Verbindung existiert nicht",
                ErrorClass::ConnectionLost,
            ),
            (
                "08006",
                "Verbindung fehlgeschlagen",
                ErrorClass::ConnectionLost,
            ),
            (
                "57P01",
                "Verbindung wird abgebrochen",
                ErrorClass::ConnectionLost,
            ),
            (
                "57P02",
                "Verbindung wird abgebrochen (Absturz)",
                ErrorClass::ConnectionLost,
            ),
            (
                "57P03",
                "das Datenbanksystem fährt hoch",
                ErrorClass::ConnectionLost,
            ),
            (
                "25P03",
                "Verbindung wird abgebrochen wegen Leerlauf",
                ErrorClass::ConnectionLost,
            ),
            (
                "57P05",
                "Verbindung wird abgebrochen wegen Leerlauf",
                ErrorClass::ConnectionLost,
            ),
            (
                "57014",
                "storniere Anfrage wegen Statement-Timeout",
                ErrorClass::Permanent,
            ),
            (
                "42501",
                "keine Berechtigung für Schema public",
                ErrorClass::Permanent,
            ),
            (
                "23505",
                "doppelter Schlüsselwert verletzt Unique-Constraint",
                ErrorClass::Permanent,
            ),
            // A malformed request, which PostgreSQL may answer without closing the session
            // ("bind message supplies 1 parameters, but prepared statement requires 2"):
            // sending it again cannot help. When it does close the session, libpq reports the
            // connection bad, and that is a lost connection (see the next test).
            ("08P01", "Protokollverletzung", ErrorClass::Permanent),
        ];
        for (code, message, class) in cases {
            assert_eq!(
                classify(&from_server(code, message)),
                class,
                "{code} {message}"
            );
        }
    }

    #[test]
    fn errors_without_a_sqlstate_are_known_by_kind_or_by_the_few_words_of_sqlite_libpq_and_tokio_postgres(
    ) {
        for message in [
            "database is locked",
            "database table is locked",
            "database schema is locked",
        ] {
            assert_eq!(
                classify(&without_code(DatabaseErrorKind::Unknown, message)),
                ErrorClass::Retryable,
                "{message}"
            );
        }
        for message in [
            "server closed the connection unexpectedly\n\tThis probably means …",
            "no connection to the server",
            "connection to server was lost",
            "could not receive data from server: Connection reset by peer",
            "could not send data to server: Broken pipe",
            // tokio-postgres's, as diesel-async reports them (`UnableToSendCommand`).
            "connection closed",
            "error communicating with the server: Connection reset by peer (os error 104)",
        ] {
            for kind in [
                DatabaseErrorKind::Unknown,
                DatabaseErrorKind::UnableToSendCommand,
            ] {
                assert_eq!(
                    classify(&without_code(kind, message)),
                    ErrorClass::ConnectionLost,
                    "{kind:?} {message}"
                );
            }
        }
        // libpq reports the connection bad: lost, whatever the words (and any code).
        assert_eq!(
            classify(&without_code(
                DatabaseErrorKind::ClosedConnection,
                "Verbindung zum Server wurde unerwartet geschlossen"
            )),
            ErrorClass::ConnectionLost
        );
        assert_eq!(
            classify(&DieselError::BrokenTransactionManager),
            ErrorClass::ConnectionLost
        );
        // A server's words without its code decide nothing.
        assert_eq!(
            classify(&without_code(
                DatabaseErrorKind::Unknown,
                "deadlock detected"
            )),
            ErrorClass::Permanent
        );
    }

    #[test]
    fn a_draining_cockroachdb_node_is_a_lost_connection() {
        // Both are 57P01 (cockroachdb/cockroach `pkg/sql/pgwire/server.go`,
        // `newAdminShutdownErr`).
        for message in [
            "server is shutting down",
            "server is not accepting clients, try another node",
        ] {
            assert_eq!(
                classify(&from_server("57P01", message)),
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
                classify(&from_server("57014", message)),
                ErrorClass::CockroachTimeout,
                "{message}"
            );
        }
        assert_eq!(
            classify(&from_server("57014", "query execution canceled")),
            ErrorClass::CockroachCancel
        );
        // The words decide only between the two servers' 57014.
        assert_eq!(
            classify(&from_server("P0001", "query execution canceled")),
            ErrorClass::Permanent
        );
    }

    #[test]
    fn postgresql_57014_is_permanent_it_rolled_back() {
        for message in [
            "canceling statement due to statement timeout",
            "canceling statement due to user request",
            "storniere Anfrage wegen Aufforderung durch den Benutzer",
        ] {
            assert_eq!(
                classify(&from_server("57014", message)),
                ErrorClass::Permanent,
                "{message}"
            );
        }
    }

    #[test]
    fn a_57014_on_commit_is_classified_from_the_commit_error() {
        let on_commit = DieselError::RollbackErrorOnCommit {
            rollback_error: Box::new(DieselError::BrokenTransactionManager),
            commit_error: Box::new(from_server("57014", "query execution canceled")),
        };
        assert_eq!(classify(&on_commit), ErrorClass::CockroachCancel);
    }

    #[test]
    fn errors_with_a_sqlstate_kind_are_classified_whatever_their_language() {
        let translated = |kind| without_code(kind, "konnte Zugriff nicht serialisieren");
        assert_eq!(
            classify(&translated(DatabaseErrorKind::SerializationFailure)),
            ErrorClass::Retryable
        );
        assert_eq!(
            classify(&translated(DatabaseErrorKind::ClosedConnection)),
            ErrorClass::ConnectionLost
        );
    }

    // What a database error says about itself, for the tracing events.

    fn error(kind: DatabaseErrorKind, message: &str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(message.to_string()))
    }

    /// The SQLSTATE of `error` as text.
    fn code_of(error: &DieselError) -> Option<String> {
        sqlstate(error).map(|code| code.to_string())
    }

    #[test]
    fn sqlstate_is_the_code_the_server_reported_whatever_the_message() {
        for (code, message) in [
            ("40001", "konnte Zugriff nicht serialisieren"),
            ("40P01", "Verklemmung (Deadlock) entdeckt"),
            ("40003", "result is ambiguous (error=rpc error)"),
            (
                "57P01",
                "terminating connection due to administrator command",
            ),
            ("57014", "storniere Anfrage wegen Statement-Timeout"),
            ("57014", "query execution canceled"),
            ("42501", "keine Berechtigung für Schema public"),
            ("23505", "duplicate key value violates unique constraint"),
            ("P0001", "permission denied, says a trigger"),
        ] {
            assert_eq!(
                code_of(&from_server(code, message)).as_deref(),
                Some(code),
                "{message}"
            );
        }
        let on_commit = DieselError::RollbackErrorOnCommit {
            rollback_error: Box::new(DieselError::BrokenTransactionManager),
            commit_error: Box::new(from_server("40003", "result is ambiguous")),
        };
        assert_eq!(code_of(&on_commit).as_deref(), Some("40003"));
    }

    #[test]
    fn an_error_without_a_reported_code_has_no_sqlstate() {
        // SQLite has none (diesel: `sqlstate` always `None` there), nor do libpq's own errors;
        // none is derived from a kind or guessed from words.
        assert_eq!(
            code_of(&error(DatabaseErrorKind::Unknown, "database is locked")),
            None
        );
        assert_eq!(
            code_of(&error(
                DatabaseErrorKind::UniqueViolation,
                "UNIQUE constraint failed"
            )),
            None
        );
        assert_eq!(
            code_of(&error(DatabaseErrorKind::Unknown, "deadlock detected")),
            None
        );
        assert_eq!(
            code_of(&error(
                DatabaseErrorKind::ClosedConnection,
                "server closed the connection unexpectedly"
            )),
            None
        );
        assert_eq!(code_of(&DieselError::NotFound), None);
    }

    #[test]
    fn cockroach_retry_reasons_are_read_from_each_message_shape() {
        let cases = [
            (
                "restart transaction: TransactionRetryWithProtoRefreshError: TransactionRetryError: \
                 retry txn (RETRY_SERIALIZABLE - failed preemptive refresh due to conflicting locks \
                 on /Table/106/1/918951292305080321/0 [reason=wait_policy]): \"sql txn\" meta={id=07d42834}",
                Some("RETRY_SERIALIZABLE"),
            ),
            (
                "restart transaction: TransactionRetryWithProtoRefreshError: TransactionRetryError: \
                 retry txn (RETRY_WRITE_TOO_OLD)",
                Some("RETRY_WRITE_TOO_OLD"),
            ),
            (
                "restart transaction: TransactionRetryWithProtoRefreshError:TransactionAbortedError(\
                 ABORT_REASON_ABORTED_RECORD_FOUND): \"sql txn\"",
                Some("ABORT_REASON_ABORTED_RECORD_FOUND"),
            ),
            (
                "restart transaction: TransactionRetryWithProtoRefreshError: \
                 ReadWithinUncertaintyIntervalError: read at time 1591009232.376925064,0 \
                 encountered previous write with future timestamp 1591009232.493830170,0",
                Some("ReadWithinUncertaintyIntervalError"),
            ),
            (
                "restart transaction: TransactionRetryWithProtoRefreshError: WriteTooOldError: \
                 write for key /Table/106/1/5/0 at timestamp 1.0,0 too old; must write at or above 2.0,1",
                Some("WriteTooOldError"),
            ),
            (
                "restart transaction: TransactionRetryWithProtoRefreshError: injected by \
                 `inject_retry_errors_enabled` session variable",
                Some("inject_retry_errors_enabled"),
            ),
            (
                "could not serialize access due to concurrent update",
                None,
            ),
            ("restart transaction: injected conflict 1 of 2", None),
        ];
        for (message, reason) in cases {
            assert_eq!(
                cockroach_retry_reason(&error(DatabaseErrorKind::SerializationFailure, message)),
                reason,
                "{message}"
            );
        }
        assert_eq!(cockroach_retry_reason(&DieselError::NotFound), None);
    }
}
