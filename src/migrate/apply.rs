//! Bringing the schema up to date: what is pending, the lock and adoption around the run on a
//! server, the re-check on SQLite, and the refusal of a schema newer than this build.

use super::adopt;
use super::embedded::{EmbeddedMigrationsRef, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
use super::error::{failed, MigrationError};
use super::failure::StepError;
use super::lock::MigrationLock;
use crate::db::{DbConnection, DedicatedConnection, Flavor};
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

/// How many times, at most, the migrations are tried on a server when they conflict with
/// another session (40001, 40P01) before [`MigrationError::Conflict`]. The server retries most
/// conflicts itself, but not all: CockroachDB 25.1.0 and 25.1.1 do not retry a conflict on a
/// schema change run as an implicit transaction when `autocommit_before_ddl` is on
/// (cockroachdb/docs `src/current/_includes/releases/v25.1/v25.1.2.md`, cockroach #141393).
/// A retry is safe: on PostgreSQL the failed run was rolled back whole; on CockroachDB every
/// statement of a migration can run again.
pub const MIGRATION_ATTEMPTS: u32 = 5;

/// The pause before the first retry of a conflicting migration run; it doubles for each next
/// one (100, 200, 400, 800 ms: 1.5 s in all).
const MIGRATION_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Brings the schema up to date, refusing a schema newer than this build; returns how many
/// migrations this call applied (0 when the schema was up to date, or another process brought
/// it up to date meanwhile).
///
/// On a server `conn` (a session of the pool) only reads which migrations are applied. When one
/// is pending, `connect(waits)` opens a session of its own (no statement timeout; see
/// [`DbConnectionManager::establish_dedicated`](crate::db::DbConnectionManager::establish_dedicated))
/// whose statements may wait `waits` by design: once with zero, for the migrations, once with
/// `lock_wait`, for the session holding the migration lock, which waits at most `lock_wait`
/// for another process's lock. `server` is what the server is — from its `SELECT version()`,
/// never a flavour forced by the caller — and decides whether the migrations run in one
/// transaction: on PostgreSQL they do; CockroachDB 25.1+ would commit that transaction at its
/// first DDL statement.
pub fn run_embedded_migrations<C>(
    conn: &mut DbConnection,
    server: Flavor,
    lock_wait: Duration,
    connect: C,
) -> Result<usize, MigrationError>
where
    C: FnMut(Duration) -> Result<DedicatedConnection, String>,
{
    match conn {
        DbConnection::Postgresql(pg) => {
            let pending = pending_migrations(pg, &POSTGRES_MIGRATIONS)?;
            if pending == 0 {
                return Ok(0);
            }
            migrate_server(pg, server, pending, lock_wait, connect)
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

/// The server connection inside `conn`.
fn server_connection(conn: &mut DbConnection) -> Result<&mut PgConnection, MigrationError> {
    match conn {
        DbConnection::Postgresql(pg) => Ok(pg),
        DbConnection::Sqlite(_) => Err(MigrationError::Failed(
            "migrating a server needs a server connection".into(),
        )),
    }
}

/// Applies `pending` migrations on a session of its own, under the migration lock, trying
/// again after a conflict; names a failure for what it was. `user` is the pool's session.
fn migrate_server<C>(
    user: &mut PgConnection,
    server: Flavor,
    pending: usize,
    lock_wait: Duration,
    mut connect: C,
) -> Result<usize, MigrationError>
where
    C: FnMut(Duration) -> Result<DedicatedConnection, String>,
{
    let mut session = connect(Duration::ZERO).map_err(MigrationError::Failed)?;
    // Refuse tables roachbank cannot adopt before writing anything, the lock included.
    let checked = adopt::adopt_server_tables(
        server_connection(&mut session.conn)?,
        adopt::Apply::CheckOnly,
    );
    checked.map_err(|error| error.name(pending, 1, Some(&session)))?;
    let mut lock_session = connect(lock_wait).map_err(MigrationError::Failed)?;
    let _lock = MigrationLock::acquire(server_connection(&mut lock_session.conn)?, lock_wait)
        .map_err(|error| error.name(pending, 1, None))?;
    let mut to_apply = pending;
    let mut attempts = 0;
    let failure = loop {
        attempts += 1;
        let pg = server_connection(&mut session.conn)?;
        match migrate_once(pg, server, &mut to_apply) {
            Ok(applied) => return Ok(applied),
            Err(error) if error.is_conflict() && attempts < MIGRATION_ATTEMPTS => {
                std::thread::sleep(MIGRATION_RETRY_BACKOFF * 2u32.pow(attempts - 1));
            }
            Err(error) => break error,
        }
    };
    if let StepError::Named(error) = failure {
        return Err(error);
    }
    // The run failed, but perhaps only after everything was applied: a COMMIT whose answer was
    // lost, or a transaction the server committed on its own (CockroachDB's
    // autocommit_before_ddl commits an open transaction at its first DDL statement, and diesel's
    // COMMIT then finds none: NotInTransaction). The migrations table, read on the pool's
    // session, tells; this process still holds the lock, so nobody else applied them.
    if matches!(pending_migrations(user, &POSTGRES_MIGRATIONS), Ok(0)) {
        return Ok(to_apply);
    }
    Err(failure.name(to_apply, attempts, Some(&session)))
}

/// One run of the pending migrations (and the adoption of the tutorial's tables) on `pg`: in
/// one transaction if `server` is PostgreSQL. `to_apply` is set to how many are pending.
fn migrate_once(
    pg: &mut PgConnection,
    server: Flavor,
    to_apply: &mut usize,
) -> Result<usize, StepError> {
    // Another process may have migrated (further) while this one waited for the lock.
    *to_apply = pending_migrations(pg, &POSTGRES_MIGRATIONS)?;
    if *to_apply == 0 {
        return Ok(0);
    }
    let adopt_and_migrate = |pg: &mut PgConnection| -> Result<usize, StepError> {
        adopt::adopt_server_tables(pg, adopt::Apply::Change)?;
        pg.run_pending_migrations(EmbeddedMigrationsRef(&POSTGRES_MIGRATIONS))
            .map(|applied| applied.len())
            .map_err(StepError::from_harness)
    };
    if server == Flavor::PostgreSql {
        // PostgreSQL's DDL is transactional: a run that fails leaves the database as it found
        // it. (CockroachDB 25.1+ commits at each DDL statement; there every statement can run
        // again instead.)
        pg.transaction(adopt_and_migrate)
    } else {
        adopt_and_migrate(pg)
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
