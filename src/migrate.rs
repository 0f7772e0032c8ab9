//! The embedded migrations (`migrations/postgres` for CockroachDB and PostgreSQL,
//! `migrations/sqlite` for SQLite), applied before every command.
//!
//! `run_pending_migrations` takes no lock, so two processes migrating a new database at once
//! could trip over each other. PostgreSQL serialises them with an advisory lock; CockroachDB has
//! none, and SQLite's file lock covers only one statement at a time, so everywhere a failed run
//! is re-checked: if another process has applied everything meanwhile, that is success.

use crate::db::{DbConnection, Flavor};
use diesel::backend::Backend;
use diesel::connection::SimpleConnection;
use diesel::migration::MigrationSource;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::collections::BTreeSet;
use std::time::Duration;

/// The CockroachDB/PostgreSQL migration set.
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
/// The SQLite migration set.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Key of the PostgreSQL advisory lock held while migrating ("roachbnk" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x726f_6163_6862_6e6b;

/// How often a failed migration run is re-checked before giving up.
const MIGRATION_ATTEMPTS: u32 = 5;

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
    /// Applying a migration failed.
    #[error("applying migrations failed: {0}")]
    Failed(String),
}

/// Brings the schema up to date for `flavor`, refusing a schema newer than this build.
/// Returns how many migrations this call applied (0 when the schema was up to date, or another
/// process brought it up to date meanwhile).
pub fn run_embedded_migrations(
    conn: &mut DbConnection,
    flavor: Flavor,
) -> Result<usize, MigrationError> {
    match conn {
        DbConnection::Postgresql(pg) => {
            let lock = flavor == Flavor::PostgreSql;
            if lock {
                pg.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
                    .map_err(|e| MigrationError::Failed(e.to_string()))?;
            }
            let result = migrate_with_recheck(pg, &POSTGRES_MIGRATIONS);
            if lock {
                // Closing the session would release it too; an error here changes nothing.
                let _ =
                    pg.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"));
            }
            result
        }
        DbConnection::Sqlite(sqlite) => migrate_with_recheck(sqlite, &SQLITE_MIGRATIONS),
    }
}

fn migrate_with_recheck<C, DB>(
    conn: &mut C,
    migrations: &'static EmbeddedMigrations,
) -> Result<usize, MigrationError>
where
    DB: Backend,
    C: MigrationHarness<DB>,
    EmbeddedMigrations: MigrationSource<DB>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let outcome = refuse_newer_schema(conn, migrations).and_then(|()| {
            conn.run_pending_migrations(EmbeddedMigrationsRef(migrations))
                .map(|applied| applied.len())
                .map_err(|e| MigrationError::Failed(crate::db::one_line(&e.to_string())))
        });
        match outcome {
            Ok(applied) => return Ok(applied),
            Err(err @ MigrationError::SchemaTooNew { .. }) => return Err(err),
            Err(err) => {
                // Another process may have been migrating at the same moment.
                std::thread::sleep(Duration::from_millis(50 * u64::from(attempt)));
                if matches!(
                    conn.has_pending_migration(EmbeddedMigrationsRef(migrations)),
                    Ok(false)
                ) {
                    return Ok(0);
                }
                if attempt >= MIGRATION_ATTEMPTS {
                    return Err(err);
                }
            }
        }
    }
}

fn refuse_newer_schema<C, DB>(
    conn: &mut C,
    migrations: &EmbeddedMigrations,
) -> Result<(), MigrationError>
where
    DB: Backend,
    C: MigrationHarness<DB>,
    EmbeddedMigrations: MigrationSource<DB>,
{
    let known: BTreeSet<String> = MigrationSource::<DB>::migrations(migrations)
        .map_err(|e| MigrationError::Failed(e.to_string()))?
        .iter()
        .map(|m| m.name().version().to_string())
        .collect();
    let applied = conn
        .applied_migrations()
        .map_err(|e| MigrationError::Failed(crate::db::one_line(&e.to_string())))?;
    let latest = known.iter().next_back().cloned().unwrap_or_default();
    match applied
        .iter()
        .map(|version| version.to_string())
        .find(|version| !known.contains(version) && *version > latest)
    {
        Some(applied) => Err(MigrationError::SchemaTooNew {
            applied,
            known: latest,
        }),
        None => Ok(()),
    }
}

/// `EmbeddedMigrations` is neither `Clone` nor a source by reference; this lends it out.
struct EmbeddedMigrationsRef(&'static EmbeddedMigrations);

impl<DB: Backend> MigrationSource<DB> for EmbeddedMigrationsRef
where
    EmbeddedMigrations: MigrationSource<DB>,
{
    fn migrations(
        &self,
    ) -> diesel::migration::Result<Vec<Box<dyn diesel::migration::Migration<DB>>>> {
        MigrationSource::<DB>::migrations(self.0)
    }
}
