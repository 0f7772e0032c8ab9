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
    /// The schema needs migrations that could not be applied (a user with read rights only,
    /// say).
    #[error("the database needs {pending} more migration{} and they could not be applied ({reason}): run roachbank once as a user allowed to create tables in it (its owner; `roachbank init` sets one up)", if *.pending == 1 { "" } else { "s" })]
    NeedsMigrating {
        /// How many migrations are pending.
        pending: usize,
        /// Why applying them failed.
        reason: String,
    },
    /// Applying a migration (or taking the lock) failed.
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
