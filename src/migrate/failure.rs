//! Naming what went wrong while migrating on a server. A failure of the migrating step is
//! reported as what it was: a conflict with another session (after the retries), a statement
//! the server canceled, a connection lost or closed by the stall watchdog, a user that may not
//! create tables (with the hint to run as one that may) — or, failing all those, the driver's
//! own words.

use super::error::MigrationError;
use crate::db::sqlstate::error_from_text;
use crate::db::{classify, one_line, sqlstate, DedicatedConnection, ErrorClass};
use diesel::pg::sql_state;
use diesel::result::{Error as DieselError, SqlState};

/// A failure of the migrating step, before it is named.
#[derive(Debug)]
pub(super) enum StepError {
    /// Named already: a table that cannot be adopted, a schema newer than this build, the
    /// lock waited for too long.
    Named(MigrationError),
    /// A statement failed.
    Statement(DieselError),
}

impl From<DieselError> for StepError {
    fn from(error: DieselError) -> Self {
        StepError::Statement(error)
    }
}

impl From<MigrationError> for StepError {
    fn from(error: MigrationError) -> Self {
        StepError::Named(error)
    }
}

impl StepError {
    /// An error of diesel_migrations' `run_pending_migrations`: the statement's own error,
    /// with its SQLSTATE, where it is kept as it is (setting up `__diesel_schema_migrations`,
    /// recording a version). A failed `up.sql` comes wrapped in a type diesel_migrations 2.4
    /// still does not export (`RunMigrationsError::QueryError`, with no `source()`), which
    /// keeps the statement's error only as text (`Failed to run <version> with: <message>`):
    /// its SQLSTATE is then read from the words ([`sqlstate_in_harness_text`]).
    pub(super) fn from_harness(error: Box<dyn std::error::Error + Send + Sync>) -> StepError {
        match error.downcast::<DieselError>() {
            Ok(error) => StepError::Statement(*error),
            Err(other) => {
                let message = one_line(&other.to_string());
                let sqlstate = sqlstate_in_harness_text(&message);
                StepError::Statement(error_from_text(message, sqlstate))
            }
        }
    }

    /// Whether the step may succeed if tried again: it met a conflict (40001, 40P01), which
    /// rolled back what it was doing (on PostgreSQL the whole run; on CockroachDB the statement,
    /// and every statement of a migration can run again).
    pub(super) fn is_conflict(&self) -> bool {
        matches!(self, StepError::Statement(error) if classify(error) == ErrorClass::Retryable)
    }

    /// What happened, for the user: the failure of `attempts` attempts at applying `pending`
    /// migrations, the last on `session` (`None`: not on a watched session of its own).
    pub(super) fn name(
        self,
        pending: usize,
        attempts: u32,
        session: Option<&DedicatedConnection>,
    ) -> MigrationError {
        let error = match self {
            StepError::Named(error) => return error,
            StepError::Statement(error) => error,
        };
        let reason = one_line(&error.to_string());
        let stalled_after = session
            .filter(|session| session.stalled())
            .and_then(DedicatedConnection::stall_bound);
        match (classify(&error), sqlstate(&error)) {
            (ErrorClass::Retryable, _) => MigrationError::Conflict { attempts, reason },
            (ErrorClass::ConnectionLost, _) => match stalled_after {
                Some(waited) => MigrationError::Stalled { waited },
                None => MigrationError::ConnectionLost { reason },
            },
            (_, Some(sql_state::QUERY_CANCELED)) => MigrationError::Canceled { reason },
            (_, Some(sql_state::INSUFFICIENT_PRIVILEGE)) => {
                MigrationError::NeedsMigrating { pending, reason }
            }
            _ => MigrationError::Failed(reason),
        }
    }
}

/// The SQLSTATE the words of a failed `up.sql` belong to, as diesel_migrations leaves it (text
/// only) — only for the codes a migration failure is named by, in the server's English
/// (CockroachDB never translates; a PostgreSQL speaking another language gets
/// [`MigrationError::Failed`] with its own words). A connection libpq lost carries no code
/// anyway, and [`classify`] knows libpq's words for it.
fn sqlstate_in_harness_text(message: &str) -> Option<SqlState> {
    const BY_WORDS: &[(&str, SqlState)] = &[
        ("restart transaction", sql_state::T_R_SERIALIZATION_FAILURE), // CockroachDB
        (
            "could not serialize access",
            sql_state::T_R_SERIALIZATION_FAILURE,
        ), // PostgreSQL
        ("deadlock detected", sql_state::T_R_DEADLOCK_DETECTED),
        ("terminating connection", sql_state::ADMIN_SHUTDOWN),
        // A draining CockroachDB node (cockroachdb/cockroach `pkg/sql/pgwire/server.go`).
        ("server is shutting down", sql_state::ADMIN_SHUTDOWN),
        (
            "canceling statement due to statement timeout",
            sql_state::QUERY_CANCELED,
        ),
        (
            "canceling statement due to user request",
            sql_state::QUERY_CANCELED,
        ),
        // CockroachDB: every 57014 begins so (`pkg/sql/sqlerrors`, QueryTimeoutError and
        // TxnTimeoutError; `pkg/util/cancelchecker`, QueryCanceledError).
        ("query execution canceled", sql_state::QUERY_CANCELED),
        // PostgreSQL's "permission denied for schema public", "must be owner of table
        // accounts"; CockroachDB's "user bob does not have CREATE privilege on schema public"
        // (`pkg/sql/sqlerrors/errors.go`, NewInsufficientPrivilegeOnDescriptorError) and "user
        // bob has no privileges on …".
        ("permission denied", sql_state::INSUFFICIENT_PRIVILEGE),
        ("must be owner of", sql_state::INSUFFICIENT_PRIVILEGE),
        ("privilege on", sql_state::INSUFFICIENT_PRIVILEGE),
        ("has no privileges on", sql_state::INSUFFICIENT_PRIVILEGE),
    ];
    let message = message.to_ascii_lowercase();
    BY_WORDS
        .iter()
        .find(|(words, _)| message.contains(words))
        .map(|(_, code)| *code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(message: &str) -> MigrationError {
        StepError::from_harness(Box::new(MessageOnly(message.to_string()))).name(4, 5, None)
    }

    /// An error known only by its text, as diesel_migrations' own wrapper.
    #[derive(Debug)]
    struct MessageOnly(String);

    impl std::fmt::Display for MessageOnly {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "Failed to run 2024-01-03-000000_document_tables with: {}",
                self.0
            )
        }
    }

    impl std::error::Error for MessageOnly {}

    #[test]
    fn each_failure_is_named_for_what_it_was() {
        assert!(matches!(
            named("restart transaction: TransactionRetryWithProtoRefreshError: …"),
            MigrationError::Conflict { attempts: 5, .. }
        ));
        assert!(matches!(
            named("deadlock detected"),
            MigrationError::Conflict { .. }
        ));
        assert!(matches!(
            named("server closed the connection unexpectedly\n\tThis probably means …"),
            MigrationError::ConnectionLost { .. }
        ));
        assert!(matches!(
            named("canceling statement due to statement timeout"),
            MigrationError::Canceled { .. }
        ));
        assert!(matches!(
            named("query execution canceled due to statement timeout"),
            MigrationError::Canceled { .. }
        ));
        assert!(matches!(
            named("permission denied for schema public"),
            MigrationError::NeedsMigrating { pending: 4, .. }
        ));
        assert!(matches!(
            named("user reader does not have CREATE privilege on schema public"),
            MigrationError::NeedsMigrating { .. }
        ));
        assert!(matches!(
            named("relation \"nowhere\" does not exist"),
            MigrationError::Failed(_)
        ));
        assert!(matches!(
            StepError::from(DieselError::NotInTransaction).name(4, 1, None),
            MigrationError::Failed(_)
        ));
    }

    #[test]
    fn a_statements_own_error_is_named_by_its_sqlstate_whatever_its_language() {
        use crate::db::classify::test_errors::from_server;
        let named = |code: &str, message: &str| {
            StepError::from(from_server(code, message)).name(4, 5, None)
        };
        assert!(matches!(
            named("40P01", "Verklemmung (Deadlock) entdeckt"),
            MigrationError::Conflict { attempts: 5, .. }
        ));
        assert!(matches!(
            named("40001", "konnte Zugriff nicht serialisieren"),
            MigrationError::Conflict { .. }
        ));
        assert!(matches!(
            named("57P01", "Verbindung wird abgebrochen"),
            MigrationError::ConnectionLost { .. }
        ));
        assert!(matches!(
            named(
                "57014",
                "storniere Anfrage wegen Aufforderung durch den Benutzer"
            ),
            MigrationError::Canceled { .. }
        ));
        assert!(matches!(
            named("42501", "keine Berechtigung für Schema public"),
            MigrationError::NeedsMigrating { pending: 4, .. }
        ));
        assert!(matches!(
            named("42P01", "Relation »nowhere« existiert nicht"),
            MigrationError::Failed(_)
        ));
        assert!(StepError::from(from_server("40P01", "Verklemmung entdeckt")).is_conflict());
    }
}
