//! What a database error says about itself, for reports: its SQLSTATE, and CockroachDB's
//! reason for a retry error.
//!
//! Diesel 2.3 does not expose the SQLSTATE: libpq's `PG_DIAG_SQLSTATE` is read inside diesel's
//! `PgResult` only to pick a `DatabaseErrorKind`, and `DatabaseErrorInformation` offers the
//! message, details, hint, table, column, constraint and position — no code. So the SQLSTATE is
//! derived: from the kind where diesel has one for it (40001 is `SerializationFailure`, 23505
//! `UniqueViolation` …), and otherwise from the server's English message, as
//! [`classify`](super::classify()) recognises it (40P01, 40003, 57P01, 57014; 42501 too). An
//! error neither tells has no SQLSTATE here, rather than a guessed one.

use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// The SQLSTATE of `error`, where diesel's error kind or the server's message tells it (see the
/// [module documentation](self)). SQLite has no SQLSTATEs: its errors get the standard code of
/// the kind diesel gives them (a UNIQUE constraint is 23505), and busy/locked gets none.
pub fn sqlstate(error: &DieselError) -> Option<&'static str> {
    match error {
        DieselError::DatabaseError(kind, info) => match kind {
            DatabaseErrorKind::SerializationFailure => Some("40001"),
            DatabaseErrorKind::UniqueViolation => Some("23505"),
            DatabaseErrorKind::ForeignKeyViolation => Some("23503"),
            DatabaseErrorKind::NotNullViolation => Some("23502"),
            DatabaseErrorKind::CheckViolation => Some("23514"),
            DatabaseErrorKind::RestrictViolation => Some("23001"),
            DatabaseErrorKind::ExclusionViolation => Some("23P01"),
            DatabaseErrorKind::ReadOnlyTransaction => Some("25006"),
            _ => sqlstate_from_message(info.message()),
        },
        DieselError::RollbackErrorOnCommit { commit_error, .. } => sqlstate(commit_error),
        _ => None,
    }
}

/// The SQLSTATE an English server message belongs to, for the codes diesel has no kind for.
fn sqlstate_from_message(message: &str) -> Option<&'static str> {
    let message = message.to_ascii_lowercase();
    const BY_MESSAGE: &[(&str, &str)] = &[
        ("restart transaction", "40001"),        // CockroachDB
        ("could not serialize access", "40001"), // PostgreSQL
        ("deadlock detected", "40P01"),
        ("result is ambiguous", "40003"), // CockroachDB
        ("terminating connection", "57P01"),
        // A draining CockroachDB node (cockroachdb/cockroach `pkg/sql/pgwire/server.go`).
        ("server is shutting down", "57P01"),
        ("server is not accepting clients", "57P01"),
        ("canceling statement due to statement timeout", "57014"),
        ("canceling statement due to user request", "57014"),
        // CockroachDB: every 57014 begins so (cockroachdb/cockroach `pkg/sql/sqlerrors`,
        // QueryTimeoutError and TxnTimeoutError; `pkg/util/cancelchecker`, QueryCanceledError).
        ("query execution canceled", "57014"),
        // Insufficient privilege: PostgreSQL's "permission denied for schema public", "must be
        // owner of table accounts"; CockroachDB's "user bob does not have CREATE privilege on
        // schema public" (`pkg/sql/sqlerrors/errors.go`,
        // NewInsufficientPrivilegeOnDescriptorError) and "user bob has no privileges on …".
        ("permission denied", "42501"),
        ("must be owner of", "42501"),
        ("privilege on", "42501"),
        ("has no privileges on", "42501"),
    ];
    BY_MESSAGE
        .iter()
        .find(|(needle, _)| message.contains(needle))
        .map(|(_, code)| *code)
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

    fn error(kind: DatabaseErrorKind, message: &str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(message.to_string()))
    }

    fn unknown(message: &str) -> DieselError {
        error(DatabaseErrorKind::Unknown, message)
    }

    #[test]
    fn sqlstate_comes_from_the_kind_or_the_message() {
        let translated = "konnte Zugriff nicht serialisieren";
        assert_eq!(
            sqlstate(&error(DatabaseErrorKind::SerializationFailure, translated)),
            Some("40001")
        );
        assert_eq!(
            sqlstate(&error(DatabaseErrorKind::UniqueViolation, "duplicate key")),
            Some("23505")
        );
        assert_eq!(sqlstate(&unknown("deadlock detected")), Some("40P01"));
        assert_eq!(
            sqlstate(&unknown("result is ambiguous (error=rpc error)")),
            Some("40003")
        );
        assert_eq!(
            sqlstate(&error(
                DatabaseErrorKind::ClosedConnection,
                "terminating connection due to administrator command"
            )),
            Some("57P01")
        );
        for canceled in [
            "canceling statement due to statement timeout",
            "canceling statement due to user request",
            "query execution canceled",
            "query execution canceled due to statement timeout",
            "query execution canceled due to transaction timeout",
        ] {
            assert_eq!(sqlstate(&unknown(canceled)), Some("57014"), "{canceled}");
        }
        assert_eq!(
            sqlstate(&unknown("permission denied for schema public")),
            Some("42501")
        );
        assert_eq!(
            sqlstate(&unknown("must be owner of table accounts")),
            Some("42501")
        );
        assert_eq!(
            sqlstate(&unknown(
                "user reader does not have CREATE privilege on schema public"
            )),
            Some("42501")
        );
        assert_eq!(sqlstate(&unknown("database is locked")), None);
        assert_eq!(
            sqlstate(&error(
                DatabaseErrorKind::ClosedConnection,
                "server closed the connection unexpectedly"
            )),
            None
        );
        assert_eq!(sqlstate(&DieselError::NotFound), None);
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
