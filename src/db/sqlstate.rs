//! What a database error says about itself, for reports: its SQLSTATE, and CockroachDB's
//! reason for a retry error.

use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind, Error as DieselError, SqlState};

/// The SQLSTATE the server reported for `error` (diesel 2.4's
/// `DatabaseErrorInformation::sqlstate`), or `None`: SQLite has no SQLSTATEs, and an error libpq
/// reports itself (a connection lost, a command it could not send) carries none. Never derived
/// from diesel's error kind or guessed from the words.
pub fn sqlstate(error: &DieselError) -> Option<SqlState> {
    match error {
        DieselError::DatabaseError(_, info) => info.sqlstate(),
        DieselError::RollbackErrorOnCommit { commit_error, .. } => sqlstate(commit_error),
        _ => None,
    }
}

/// A database error known only by its words and, where known, its SQLSTATE: one that reached
/// roachbank as text (a failed migration, see `migrate::failure`), or a test's.
pub(crate) fn error_from_text(message: String, sqlstate: Option<SqlState>) -> DieselError {
    DieselError::DatabaseError(
        DatabaseErrorKind::Unknown,
        Box::new(TextError { message, sqlstate }),
    )
}

/// See [`error_from_text`].
struct TextError {
    message: String,
    sqlstate: Option<SqlState>,
}

impl DatabaseErrorInformation for TextError {
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
    match error {
        DieselError::DatabaseError(_, info) => retry_reason_in(info.message()),
        DieselError::RollbackErrorOnCommit { commit_error, .. } => {
            cockroach_retry_reason(commit_error)
        }
        _ => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::classify::test_errors::from_server;

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
