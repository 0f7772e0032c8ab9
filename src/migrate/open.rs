//! Opening the database: connect once (failing fast with the driver's own reason), detect the
//! flavour, refuse work the flavour cannot do, apply the embedded migrations, build the pool.
//! It lives here, above `db`, because opening migrates. [`Database::open_existing`] opens only
//! a bank that is already there: where there is none it writes nothing, not even the SQLite
//! file.

use super::apply::run_embedded_migrations;
use super::error::MigrationError;
use crate::db::config::DatabaseConfig;
use crate::db::{
    ConnectOptions, Database, DbConnection, DbConnectionManager, DbError, Flavor, STALL_GRACE,
};
use diesel::sql_types::BigInt;
use diesel::{QueryableByName, RunQueryDsl};
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
    /// [`Database::open_existing`] found no bank: no SQLite file, or a database without
    /// roachbank's `accounts` table. Nothing was written.
    #[error("no bank at {at}")]
    NoBank {
        /// The database, as [`DatabaseConfig::redacted`] shows it.
        at: String,
    },
}

/// Whether opening may create the bank where there is none yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IfMissing {
    /// Create it: the SQLite file, the tables (by migrating).
    Create,
    /// Refuse with [`OpenError::NoBank`], writing nothing.
    Refuse,
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
        open(config, options, IfMissing::Create, accept)
    }

    /// [`Database::open_checked`] for work that only makes sense on a bank that is already
    /// there (reading it, or moving its money): where there is none — no SQLite file, or a
    /// SQLite file or server database without roachbank's `accounts` table (nor the tutorial's,
    /// which would be adopted) — returns [`OpenError::NoBank`] having written nothing: no file,
    /// no migration. A bank whose schema is older than this build is migrated as
    /// [`Database::open`] does.
    pub fn open_existing<A>(
        config: DatabaseConfig,
        options: &ConnectOptions,
        accept: A,
    ) -> Result<Database, OpenError>
    where
        A: FnOnce(Flavor) -> Result<(), String>,
    {
        open(config, options, IfMissing::Refuse, accept)
    }
}

/// Opens `config`'s database, as [`Database::open_checked`] says, creating the bank or not as
/// `if_missing` says.
fn open<A>(
    config: DatabaseConfig,
    options: &ConnectOptions,
    if_missing: IfMissing,
    accept: A,
) -> Result<Database, OpenError>
where
    A: FnOnce(Flavor) -> Result<(), String>,
{
    let no_bank = OpenError::NoBank {
        at: config.redacted(),
    };
    // A SQLite file that is not there is not made: the file must exist before connecting.
    if if_missing == IfMissing::Refuse && config.sqlite_path().is_some_and(|path| !path.is_file()) {
        return Err(no_bank);
    }
    let manager = DbConnectionManager::new(config, options);
    // Where there may be no bank, it is looked for before the connection is set up (SQLite's
    // pragmas write to the file).
    let mut first = match if_missing {
        IfMissing::Create => manager.establish()?,
        IfMissing::Refuse => manager.establish_if(has_accounts_table)?.ok_or(no_bank)?,
    };
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
    manager.server_is(server, &mut first)?;
    // The pool's first connection is this one: a command connects once, not twice.
    manager.keep_for_pool(first);
    Ok(Database::with_pool(
        manager,
        flavor,
        options,
        migrations_applied,
    ))
}

/// How many `accounts` tables the server's current schema has (0 or 1). CockroachDB has
/// `information_schema.tables` as PostgreSQL does (cockroachdb/docs, `information-schema.md`,
/// "tables"), and `current_schema()`, which the adoption's `information_schema.columns` query
/// uses too (`adopt.rs`).
const SERVER_ACCOUNTS_TABLE: &str = "SELECT count(*) AS count FROM information_schema.tables \
     WHERE table_schema = current_schema() AND table_name = 'accounts'";

/// How many `accounts` tables a SQLite file has (0 or 1).
const SQLITE_ACCOUNTS_TABLE: &str =
    "SELECT count(*) AS count FROM sqlite_master WHERE type = 'table' AND name = 'accounts'";

/// What [`SERVER_ACCOUNTS_TABLE`] and [`SQLITE_ACCOUNTS_TABLE`] read.
#[derive(QueryableByName)]
struct TableCount {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// Whether `conn`'s database has an `accounts` table (in the current schema, on a server):
/// roachbank's, or the tutorial's, which opening adopts.
fn has_accounts_table(conn: &mut DbConnection) -> diesel::QueryResult<bool> {
    let tables = match conn {
        DbConnection::Postgresql(pg) => {
            diesel::sql_query(SERVER_ACCOUNTS_TABLE).get_result::<TableCount>(pg)?
        }
        DbConnection::Sqlite(sqlite) => {
            diesel::sql_query(SQLITE_ACCOUNTS_TABLE).get_result::<TableCount>(sqlite)?
        }
    };
    Ok(tables.count > 0)
}
