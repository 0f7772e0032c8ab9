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
//! * **Decided by the server.** Whether the adoption and the migrations run in one transaction
//!   of roachbank's is decided by what the server says it is (`SELECT version()`), never by a
//!   flavour forced with `ConnectOptions::flavor_override` (a test knob of the `test-support`
//!   feature, which picks the transaction protocol only): on PostgreSQL they do, its DDL being transactional; on CockroachDB they do
//!   not. There, from 25.1, `autocommit_before_ddl` is on by default (cockroachdb/docs
//!   `src/current/_includes/releases/v25.1/backward-incompatible.md`, cockroach #140156) and a
//!   DDL statement that is not the first of an explicit transaction commits it and runs on its
//!   own (cockroachdb/cockroach `pkg/sql/conn_executor_ddl.go`, `maybeAutoCommitBeforeDDL`): the
//!   session is idle afterwards, and diesel's COMMIT answers `NotInTransaction` although every
//!   migration was applied. Should that happen anyway, the migrations table, read again, tells.
//! * **A session of its own.** The migrations run on a connection of their own, with no
//!   statement timeout and the stall bound `ConnectOptions::migration_stall_timeout` (5 min):
//!   their statements wait by design (for locks; on CockroachDB for schema-change jobs and
//!   lease propagation; adopting a large table reads every row), which the user's
//!   `--statement-timeout` and the transfers' stall timeout must not cut short. A conflict is
//!   retried ([`MIGRATION_ATTEMPTS`]); any failure is named for what it was
//!   ([`MigrationError`]).
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
mod apply;
mod embedded;
mod error;
mod failure;
mod lock;
mod open;

pub use apply::{run_embedded_migrations, MIGRATION_ATTEMPTS};
pub use embedded::{POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
pub use error::MigrationError;
pub use lock::{MIGRATION_LOCK_TABLE, MIGRATION_LOCK_WAIT};
pub use open::OpenError;
