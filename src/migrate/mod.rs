//! The embedded migrations (`migrations/postgres` for CockroachDB and PostgreSQL,
//! `migrations/sqlite` for SQLite), applied before every command.
//!
//! * **No transaction around a server migration.** CockroachDB 25.1+ turns
//!   `autocommit_before_ddl` on by default: the first DDL statement commits the transaction it
//!   is in (CockroachDB docs, `v25.1/session-variables.md`, `autocommit_before_ddl`). Diesel's
//!   per-migration transaction would be committed under it and its COMMIT then fail. So every
//!   server migration says `run_in_transaction = false` in its `metadata.toml`, and every
//!   statement in it can run again harmlessly (`IF NOT EXISTS`, `NOT EXISTS`): a migration cut
//!   off half-way is finished by the next run. The same files work on 23.2, 24.x and 25.x,
//!   through roachbank and through `diesel migration run` alike.
//! * **One migrating process at a time.** `run_pending_migrations` takes no lock. On a server
//!   the lock is a row: [`MIGRATION_LOCK_TABLE`]'s single row is updated in a transaction held
//!   open on a second connection while the migrations run, and rolled back afterwards. Another
//!   process's UPDATE waits for it (for at most [`MIGRATION_LOCK_WAIT`]), then finds nothing
//!   left to do. A process that dies releases it with its session. This works on CockroachDB,
//!   which has no advisory locks (`pg_advisory_lock` is not implemented there), and on
//!   PostgreSQL alike, so both run the same code. SQLite's file lock covers one statement at a
//!   time, so there a failed run is re-checked: if another process has applied everything
//!   meanwhile, that is success.

mod adopt;
mod lock;
mod open;

pub use open::OpenError;

use crate::db::{DbConnection, Flavor};
use diesel::backend::Backend;
use diesel::migration::MigrationSource;
use diesel::result::Error as DieselError;
use diesel::sql_types::Text;
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::collections::BTreeSet;
use std::time::Duration;

/// The CockroachDB/PostgreSQL migration set.
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
/// The SQLite migration set.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// The table whose one row is the migration lock on a server. The leading `__` keeps it out of
/// `diesel print-schema`, as diesel's own `__diesel_schema_migrations`.
pub const MIGRATION_LOCK_TABLE: &str = "__roachbank_migration_lock";

/// How long a process waits by default for another one's migrations before giving up with
/// [`MigrationError::LockTimeout`] (the default of `ConnectOptions::migration_lock_wait`).
pub use crate::db::manager::MIGRATION_LOCK_WAIT;

/// How often a failed SQLite migration run is re-checked before giving up.
const SQLITE_MIGRATION_ATTEMPTS: u32 = 5;

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
    #[error("another process has been migrating this database for over {} s (lock table {MIGRATION_LOCK_TABLE}); try again when it is done", .waited.as_secs())]
    LockTimeout {
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
fn failed(error: impl std::fmt::Display) -> MigrationError {
    MigrationError::Failed(crate::db::one_line(&error.to_string()))
}

/// Brings the schema up to date, refusing a schema newer than this build. On a server,
/// `connect` opens the second connection that holds the migration lock; it is called only
/// when a migration is pending, and waits at most `lock_wait` for another process's lock. Returns how many migrations this call applied (0 when the
/// schema was up to date, or another process brought it up to date meanwhile).
pub fn run_embedded_migrations<C>(
    conn: &mut DbConnection,
    flavor: Flavor,
    lock_wait: Duration,
    connect: C,
) -> Result<usize, MigrationError>
where
    C: FnOnce() -> Result<DbConnection, String>,
{
    match conn {
        DbConnection::Postgresql(pg) => {
            let pending = pending_migrations(pg)?;
            if pending == 0 {
                return Ok(0);
            }
            // Refuse tables roachbank cannot adopt before writing anything, the lock included.
            adopt::adopt_server_tables(pg, adopt::Apply::CheckOnly)?;
            // A user with read rights only gets here only if the schema needs migrating.
            let needs_migrating = |error: MigrationError| match error {
                MigrationError::Failed(reason) => {
                    MigrationError::NeedsMigrating { pending, reason }
                }
                other => other,
            };
            let mut lock_conn = connect().map_err(MigrationError::Failed)?;
            let DbConnection::Postgresql(lock_pg) = &mut lock_conn else {
                return Err(MigrationError::Failed(
                    "the migration lock needs a server connection".into(),
                ));
            };
            let _lock =
                lock::MigrationLock::acquire(lock_pg, lock_wait).map_err(needs_migrating)?;
            // Another process may have migrated (further) while this one waited for the lock.
            pending_migrations(pg)?;
            let adopt_and_migrate = |pg: &mut PgConnection| -> Result<usize, MigrationError> {
                adopt::adopt_server_tables(pg, adopt::Apply::Change)?;
                pg.run_pending_migrations(EmbeddedMigrationsRef(&POSTGRES_MIGRATIONS))
                    .map(|applied| applied.len())
                    .map_err(failed)
            };
            let applied = if flavor == Flavor::PostgreSql {
                // PostgreSQL's DDL is transactional: a run that fails leaves the database as
                // it found it. (CockroachDB 25.1+ commits at each DDL statement; there every
                // statement can run again instead.)
                pg.transaction(adopt_and_migrate)
            } else {
                adopt_and_migrate(pg)
            };
            applied.map_err(needs_migrating)
        }
        DbConnection::Sqlite(sqlite) => {
            adopt::check_sqlite_tables(sqlite)?;
            migrate_with_recheck(sqlite, &SQLITE_MIGRATIONS)
        }
    }
}

/// How many embedded migrations are not applied yet, read without DDL and without the lock
/// (so that on an up-to-date database — every command after the first — a user with read
/// rights only gets through). A schema newer than this build is refused here; if the
/// migrations table cannot be read (none yet, say), all of them are pending.
fn pending_migrations(pg: &mut PgConnection) -> Result<usize, MigrationError> {
    #[derive(QueryableByName)]
    struct Version {
        #[diesel(sql_type = Text)]
        version: String,
    }
    let known = known_versions::<diesel::pg::Pg>(&POSTGRES_MIGRATIONS)?;
    let Ok(applied) =
        diesel::sql_query("SELECT version FROM __diesel_schema_migrations").load::<Version>(pg)
    else {
        return Ok(known.len());
    };
    let applied: BTreeSet<String> = applied.into_iter().map(|row| row.version).collect();
    check_not_newer(&applied, &known)?;
    Ok(known.difference(&applied).count())
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
                .map_err(failed)
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
                if attempt >= SQLITE_MIGRATION_ATTEMPTS {
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
    let known = known_versions::<DB>(migrations)?;
    let applied: BTreeSet<String> = conn
        .applied_migrations()
        .map_err(failed)?
        .iter()
        .map(|version| version.to_string())
        .collect();
    check_not_newer(&applied, &known)
}

/// The versions of the embedded migrations.
fn known_versions<DB>(migrations: &EmbeddedMigrations) -> Result<BTreeSet<String>, MigrationError>
where
    DB: Backend,
    EmbeddedMigrations: MigrationSource<DB>,
{
    Ok(MigrationSource::<DB>::migrations(migrations)
        .map_err(failed)?
        .iter()
        .map(|m| m.name().version().to_string())
        .collect())
}

/// Refuses an applied version this build does not know and that is newer than its latest.
fn check_not_newer(
    applied: &BTreeSet<String>,
    known: &BTreeSet<String>,
) -> Result<(), MigrationError> {
    let latest = known.iter().next_back().cloned().unwrap_or_default();
    match applied
        .iter()
        .find(|version| !known.contains(*version) && **version > latest)
    {
        Some(applied) => Err(MigrationError::SchemaTooNew {
            applied: applied.clone(),
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
