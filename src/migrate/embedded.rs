//! The migrations compiled into the binary, one set per backend.

use diesel::backend::Backend;
use diesel::migration::MigrationSource;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};

/// The CockroachDB/PostgreSQL migration set.
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
/// The SQLite migration set.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// `EmbeddedMigrations` is neither `Clone` nor a source by reference; this lends it out.
pub(super) struct EmbeddedMigrationsRef(pub(super) &'static EmbeddedMigrations);

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
