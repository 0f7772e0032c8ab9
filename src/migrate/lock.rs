//! The migration lock on a server: one row of [`MIGRATION_LOCK_TABLE`], updated in a
//! transaction held open on a connection of its own while another connection migrates.
//! CockroachDB has no advisory locks (`pkg/sql/sem/builtins/pg_builtins.go`), so PostgreSQL
//! uses the same row.

use super::error::MigrationError;
use super::failure::StepError;
use diesel::connection::SimpleConnection;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::PgConnection;
use std::time::{Duration, Instant};

/// The table whose one row is the migration lock on a server. The leading `__` keeps it out of
/// `diesel print-schema`, as diesel's own `__diesel_schema_migrations`.
pub const MIGRATION_LOCK_TABLE: &str = "__roachbank_migration_lock";

/// How long a process waits by default for another one's migrations before giving up with
/// [`MigrationError::LockTimeout`] (the default of `ConnectOptions::migration_lock_wait`).
pub use crate::db::options::MIGRATION_LOCK_WAIT;

/// The migration lock on a server: its row updated in a transaction left open on a connection
/// of its own; dropping the value rolls the transaction back, which releases it (so does the
/// session ending, if the process dies).
pub(super) struct MigrationLock<'c>(&'c mut PgConnection);

impl<'c> MigrationLock<'c> {
    /// Creates the lock table and its row if missing, then takes the row lock, waiting at most
    /// `wait`. Two processes creating the table at once can fail on the catalog's unique keys
    /// or with a conflict: that is tried again. Any other failure is the statement's own (a
    /// user that may not create the table, say), for the caller to name.
    pub(super) fn acquire(conn: &'c mut PgConnection, wait: Duration) -> Result<Self, StepError> {
        let started = Instant::now();
        let mut round = 0u32;
        loop {
            round += 1;
            let Err(error) = Self::try_acquire(conn, started + wait) else {
                return Ok(MigrationLock(conn));
            };
            let _ = conn.batch_execute("ROLLBACK");
            if started.elapsed() >= wait {
                // The UPDATE ran into its statement timeout (or the table kept being raced).
                return Err(StepError::Named(MigrationError::LockTimeout {
                    table: MIGRATION_LOCK_TABLE,
                    waited: started.elapsed(),
                }));
            }
            if !is_concurrent_ddl_race(&error) {
                return Err(StepError::Statement(error));
            }
            std::thread::sleep(Duration::from_millis(10 * u64::from(round.min(20))));
        }
    }

    fn try_acquire(conn: &mut PgConnection, deadline: Instant) -> Result<(), DieselError> {
        // Every statement below may wait for the holder (PostgreSQL's INSERT … ON CONFLICT waits
        // on a row another transaction has updated; CockroachDB's reads wait on its intents):
        // the statement timeout bounds each wait by what is left of ours.
        // Rounded up to the next millisecond, so that a timeout means the deadline has passed.
        let remaining =
            deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(1);
        // This session sits idle in its transaction while the migrations run on another one:
        // the server must not end it for that.
        conn.batch_execute(&format!(
            "SET statement_timeout = {}; SET idle_in_transaction_session_timeout = 0",
            crate::db::statement_timeout_millis(remaining)
        ))?;
        conn.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {MIGRATION_LOCK_TABLE} (id INT8 PRIMARY KEY, locked_by TEXT)"
        ))?;
        conn.batch_execute(&format!(
            "INSERT INTO {MIGRATION_LOCK_TABLE} (id) VALUES (1) ON CONFLICT (id) DO NOTHING"
        ))?;
        conn.batch_execute("BEGIN")?;
        conn.batch_execute(&format!(
            "UPDATE {MIGRATION_LOCK_TABLE} SET locked_by = 'roachbank pid {}' WHERE id = 1",
            std::process::id()
        ))
    }
}

impl Drop for MigrationLock<'_> {
    fn drop(&mut self) {
        // Nothing was meant to stay: rolling back releases the row. If this fails the session
        // is gone, and with it the lock.
        let _ = self.0.batch_execute("ROLLBACK");
    }
}

/// Errors two sessions creating the same table at the same moment can meet: a duplicate key in
/// the catalog (PostgreSQL), a conflict (40001, CockroachDB), or "already exists".
fn is_concurrent_ddl_race(error: &DieselError) -> bool {
    match error {
        DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation | DatabaseErrorKind::SerializationFailure,
            _,
        ) => true,
        DieselError::DatabaseError(_, info) => {
            crate::db::classify(error) == crate::db::ErrorClass::Retryable
                || info.message().contains("already exists")
        }
        _ => false,
    }
}
