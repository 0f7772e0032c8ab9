//! An open database: its pool, its flavour and its configuration.

use super::config::DatabaseConfig;
use super::sqlite_session::SqliteWriters;
use super::{ConnectOptions, DbConnectionManager, Flavor, Pool};
use std::sync::Arc;
use std::time::Duration;

/// An open database: its pool and its flavour. Opened by [`Database::open`] (or
/// [`Database::open_existing`], which creates nothing), which the migrations layer defines
/// ([`crate::migrate`], `src/migrate/open.rs`) because opening migrates.
pub struct Database {
    pool: Pool,
    flavor: Flavor,
    config: DatabaseConfig,
    migrations_applied: usize,
    sqlite_writers: Arc<SqliteWriters>,
}

impl Database {
    /// A database reached through `manager`, whose engine is `flavor`: builds the pool that
    /// every transaction draws from, sized by `options`. Connections are made as they are
    /// needed; [`Database::open`] connects once first, to fail fast, and
    /// migrates, and hands that connection to the pool
    /// ([`DbConnectionManager::keep_for_pool`]) as its first.
    pub fn with_pool(
        manager: DbConnectionManager,
        flavor: Flavor,
        options: &ConnectOptions,
        migrations_applied: usize,
    ) -> Database {
        let config = manager.config().clone();
        let sqlite_writers = Arc::clone(manager.sqlite_writers());
        let wait = options
            .pool_timeout
            .unwrap_or_else(|| config.connect_bound())
            // r2d2 refuses a zero wait.
            .max(Duration::from_millis(1));
        let pool = r2d2::Pool::builder()
            .max_size(options.pool_size.max(1))
            .min_idle(Some(0))
            .connection_timeout(wait)
            // No `SELECT 1` before every checkout: run_transaction already retries work whose
            // connection turns out dead before COMMIT, on a fresh one.
            .test_on_check_out(false)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(manager);
        Database {
            pool,
            flavor,
            config,
            migrations_applied,
            sqlite_writers,
        }
    }

    /// How many migrations [`Database::open`] applied (0: the schema was up to date).
    pub fn migrations_applied(&self) -> usize {
        self.migrations_applied
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The engine on the other end.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// SQLite: how the pool's connections take turns for the write lock (unused on a server).
    pub fn sqlite_writers(&self) -> &SqliteWriters {
        &self.sqlite_writers
    }

    /// The configuration this database was opened with.
    pub fn config(&self) -> &DatabaseConfig {
        &self.config
    }
}
