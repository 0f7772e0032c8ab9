//! Opening the database: connect once (failing fast with the driver's own reason), detect the
//! flavour, refuse work the flavour cannot do, apply the embedded migrations, build the pool.
//! It lives here, above `db`, because opening migrates.

use super::apply::run_embedded_migrations;
use super::error::MigrationError;
use crate::db::config::DatabaseConfig;
use crate::db::{ConnectOptions, Database, DbConnectionManager, DbError, Flavor, STALL_GRACE};
use diesel_retry::RetryConnection;

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No connection could be made, or a query failed while preparing the database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Applying the embedded migrations failed.
    #[error(transparent)]
    Migration(#[from] MigrationError),
    /// The work asked for cannot run on this database (see [`Database::open_checked`]).
    #[error("{0}")]
    Unsupported(String),
}

impl From<diesel::result::Error> for OpenError {
    fn from(error: diesel::result::Error) -> Self {
        OpenError::Db(DbError::Query(error))
    }
}

impl Database {
    /// Connects (failing fast with the driver's own reason), detects the flavour, applies the
    /// embedded migrations (refusing a schema newer than this build knows), then builds the pool.
    pub fn open(config: DatabaseConfig, options: &ConnectOptions) -> Result<Database, OpenError> {
        Database::open_checked(config, options, |_| Ok(()))
    }

    /// [`Database::open`] that first asks `accept` whether the work at hand can run on the
    /// detected flavour: a refusal (its reason) is returned as [`OpenError::Unsupported`] before
    /// anything is written — no migration, no table.
    pub fn open_checked<A>(
        config: DatabaseConfig,
        options: &ConnectOptions,
        accept: A,
    ) -> Result<Database, OpenError>
    where
        A: FnOnce(Flavor) -> Result<(), String>,
    {
        let manager = DbConnectionManager::new(config, options);
        let mut first = manager.establish()?;
        // What the server is decides how it is migrated; a forced flavour only how
        // transactions run.
        let server = first.detect_flavor()?;
        let flavor = options.forced_flavor().unwrap_or(server);
        accept(flavor).map_err(OpenError::Unsupported)?;
        let migrations_applied =
            run_embedded_migrations(&mut first, server, options.migration_lock_wait, |waits| {
                // A session of its own, with no statement timeout. The migrations' statements
                // wait as long as the migration stall bound lets them; the lock's wait `waits`
                // at most (their own statement timeout ends them), and a grace for the answer.
                let bound = options.migration_stall_timeout.map(|bound| {
                    if waits.is_zero() {
                        bound
                    } else {
                        waits + STALL_GRACE
                    }
                });
                manager
                    .establish_dedicated(bound)
                    .map_err(|error| error.to_string())
            })?;
        // The pool's first connection is this one: a command connects once, not twice.
        manager.keep_for_pool(first);
        Ok(Database::with_pool(
            manager,
            flavor,
            options,
            migrations_applied,
        ))
    }
}
