//! Bringing the schema up to date: what is pending, the lock and adoption around the run on a
//! server, the re-check on SQLite, and the refusal of a schema newer than this build.

use super::adopt;
use super::embedded::{EmbeddedMigrationsRef, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
use super::error::{failed, MigrationError};
use super::lock::MigrationLock;
use crate::db::{DbConnection, Flavor};
use diesel::backend::Backend;
use diesel::migration::MigrationSource;
use diesel::query_builder::SqlQuery;
use diesel::query_dsl::LoadQuery;
use diesel::sql_types::Text;
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};
use std::collections::BTreeSet;
use std::time::Duration;

/// How often a failed SQLite migration run is re-checked before giving up.
const SQLITE_MIGRATION_ATTEMPTS: u32 = 5;

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
            let pending = pending_migrations(pg, &POSTGRES_MIGRATIONS)?;
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
            let _lock = MigrationLock::acquire(lock_pg, lock_wait).map_err(needs_migrating)?;
            // Another process may have migrated (further) while this one waited for the lock.
            pending_migrations(pg, &POSTGRES_MIGRATIONS)?;
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
            // The same one read as on a server: an up-to-date file is checked once, with no DDL.
            if pending_migrations(sqlite, &SQLITE_MIGRATIONS)? == 0 {
                return Ok(0);
            }
            adopt::check_sqlite_tables(sqlite)?;
            migrate_with_recheck(sqlite, &SQLITE_MIGRATIONS)
        }
    }
}

/// A version recorded in `__diesel_schema_migrations`.
#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Text)]
    version: String,
}

/// How many of `migrations` are not applied yet, read with one plain `SELECT` — no DDL and no
/// lock — so that on an up-to-date database (every command after the first) the check is one
/// statement and a user with read rights only gets through. A schema newer than this build is
/// refused here; if the migrations table cannot be read (none yet, say), all of them are
/// pending.
fn pending_migrations<C, DB>(
    conn: &mut C,
    migrations: &EmbeddedMigrations,
) -> Result<usize, MigrationError>
where
    DB: Backend,
    C: Connection<Backend = DB>,
    EmbeddedMigrations: MigrationSource<DB>,
    SqlQuery: for<'a> LoadQuery<'a, C, Version>,
{
    let known = known_versions::<DB>(migrations)?;
    let Ok(applied) =
        diesel::sql_query("SELECT version FROM __diesel_schema_migrations").load::<Version>(conn)
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
