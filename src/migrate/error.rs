//! Why the schema could not be brought up to date.

use diesel::result::Error as DieselError;
use std::time::Duration;

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The database has migrations this build does not know: a newer roachbank migrated it.
    #[error("the database schema has migration {applied}, newer than this roachbank knows (latest {known}): upgrade roachbank")]
    SchemaTooNew {
        /// The unknown applied version.
        applied: String,
        /// The newest version this build embeds.
        known: String,
    },
    /// Another process held the migration lock for longer than this one would wait.
    #[error("another process has been migrating this database for over {} s (lock table {table}); try again when it is done", .waited.as_secs())]
    LockTimeout {
        /// The lock table ([`MIGRATION_LOCK_TABLE`](super::MIGRATION_LOCK_TABLE)).
        table: &'static str,
        /// How long this process waited.
        waited: Duration,
    },
    /// A table named like one of roachbank's exists with a shape or rows roachbank cannot adopt.
    #[error("cannot adopt the existing table {table}: {problem}; nothing was changed")]
    CannotAdopt {
        /// The table.
        table: String,
        /// What is wrong with it, on one line.
        problem: String,
    },
    /// The schema needs migrations and this user may not apply them (42501, insufficient
    /// privilege: a role with read rights only, say).
    #[error("the database needs {pending} more migration{} and they could not be applied ({reason}): run roachbank once as a user allowed to create tables in it (its owner; `roachbank init` sets one up)", if *.pending == 1 { "" } else { "s" })]
    NeedsMigrating {
        /// How many migrations are pending.
        pending: usize,
        /// Why applying them failed.
        reason: String,
    },
    /// A migration statement conflicted with another session (40001, 40P01) on every one of
    /// [`MIGRATION_ATTEMPTS`](super::MIGRATION_ATTEMPTS) attempts.
    #[error("applying migrations conflicted with other sessions on all {attempts} attempts (the last time: {reason}); try again")]
    Conflict {
        /// How many attempts were made.
        attempts: u32,
        /// The last conflict, on one line.
        reason: String,
    },
    /// The server canceled a migration statement (57014: a statement timeout set on the
    /// server, a cancellation by an administrator, a CockroachDB node draining).
    #[error("the server canceled a migration statement ({reason}); run roachbank again to finish the migrations")]
    Canceled {
        /// The server's message, on one line.
        reason: String,
    },
    /// The connection was lost while migrating.
    #[error("the connection was lost while applying migrations ({reason}); run roachbank again to finish them")]
    ConnectionLost {
        /// The driver's message, on one line.
        reason: String,
    },
    /// A migration statement got no answer within
    /// [`ConnectOptions::migration_stall_timeout`](crate::db::ConnectOptions::migration_stall_timeout),
    /// and its connection was closed.
    #[error("a migration statement got no answer for {} s and its connection was closed (a lock held by another session, a schema change still running, a frozen server or network); run roachbank again when that is over", .waited.as_secs())]
    Stalled {
        /// The migration stall bound that ran out.
        waited: Duration,
    },
    /// Applying a migration (or taking the lock) failed otherwise.
    #[error("applying migrations failed: {0}")]
    Failed(String),
}

/// Diesel's transaction needs an error that can hold its own: a statement's failure.
impl From<DieselError> for MigrationError {
    fn from(error: DieselError) -> Self {
        failed(error)
    }
}

/// [`MigrationError::Failed`] with `error`'s text on one line.
pub(super) fn failed(error: impl std::fmt::Display) -> MigrationError {
    MigrationError::Failed(crate::db::one_line(&error.to_string()))
}
