//! How [`Database::open`](super::Database::open) connects: [`ConnectOptions`], and the
//! defaults of its bounds.

use super::redact::Redactor;
use super::stall;
use super::Flavor;
use diesel::connection::Instrumentation;
use std::sync::Arc;
use std::time::Duration;

/// Builds a fresh [`Instrumentation`] for each new connection (tests use it to record the
/// statements a connection sends).
pub type InstrumentationFactory = Arc<dyn Fn() -> Box<dyn Instrumentation> + Send + Sync>;

/// How [`Database::open`](super::Database::open) connects.
#[derive(Clone)]
pub struct ConnectOptions {
    /// Most connections the pool holds (size it to the number of workers).
    pub pool_size: u32,
    /// Report every SQL statement with its binds, and every connection attempt, as `tracing`
    /// events on [`ECHO_TARGET`](super::ECHO_TARGET) (`--echo`; see [`super::echo`]). Off by
    /// default: binds can hold data an application's log should not.
    pub echo: bool,
    /// Extra instrumentation installed on every connection.
    pub instrumentation: Option<InstrumentationFactory>,
    /// Use this flavour instead of detecting it, for the transaction protocol only (migrations
    /// go by what the server is). A test knob, not part of the API: it exists only with the
    /// `test-support` feature, which roachbank's own tests turn on to drive the CockroachDB
    /// protocol against PostgreSQL, which accepts the same statements.
    #[cfg(feature = "test-support")]
    pub flavor_override: Option<Flavor>,
    /// How long a SQLite connection waits for another writer's lock before reporting busy.
    pub sqlite_busy_timeout: Duration,
    /// How long `pool.get()` waits for a connection; `None` (the default): the URL's connect
    /// timeout ([`DatabaseConfig::connect_bound`](super::config::DatabaseConfig::connect_bound): `connect_timeout`, 10 s unless the URL sets
    /// it, for each host), so that waiting for a connection never takes longer than making one
    /// may. Pools are sized to their workers, so the wait is for a new connection, not for a
    /// busy one.
    pub pool_timeout: Option<Duration>,
    /// Cancel any statement running longer than this (`SET statement_timeout` on every
    /// CockroachDB/PostgreSQL connection). SQLite has no such setting: ignored there.
    pub statement_timeout: Option<Duration>,
    /// How long a transaction of ours may sit idle on the server before the server ends it
    /// (`SET idle_in_transaction_session_timeout` on every CockroachDB/PostgreSQL connection;
    /// default [`IDLE_IN_TRANSACTION_TIMEOUT`]). This bounds how long a transaction whose
    /// client lost it — a COMMIT swallowed by a network partition — can hold its locks, and so
    /// how long the retry that settles it waits. SQLite: ignored.
    pub idle_in_transaction_timeout: Duration,
    /// How long a statement may go without an answer before its connection counts as stalled
    /// and is closed from this side (a frozen server, a proxy that stops forwarding): the
    /// transaction then fails as on a lost connection — retried on a fresh one before its
    /// commit, settled by the probe during it. Default [`stall::STALL_TIMEOUT`]; `None` waits
    /// for ever, as libpq does. Never shorter than the statement timeout plus
    /// [`STALL_GRACE`]. SQLite: ignored.
    pub stall_timeout: Option<Duration>,
    /// How long [`Database::open`](super::Database::open) waits for another process's
    /// migrations (see [`MIGRATION_LOCK_WAIT`]).
    pub migration_lock_wait: Duration,
    /// How long a migration statement may go without an answer before its connection counts
    /// as stalled and is closed (default [`MIGRATION_STALL_TIMEOUT`]; `None` waits for ever).
    /// Migrations run on a session of their own with no statement timeout:
    /// [`statement_timeout`](Self::statement_timeout) and
    /// [`stall_timeout`](Self::stall_timeout) are meant for transfers, and do not apply to it.
    pub migration_stall_timeout: Option<Duration>,
    /// PostgreSQL: `SET enable_seqscan = off` on every session of the pool, so that rows are
    /// found through an index even in a table small enough for the planner to prefer reading
    /// it whole. Under SERIALIZABLE isolation "a sequential scan will always necessitate a
    /// relation-level predicate lock" (PostgreSQL documentation, "Transaction Isolation",
    /// Serializable Isolation Level), which every concurrent write to the table then conflicts
    /// with: on a freshly analyzed 100-account bank the transfer's UPDATE was planned as a scan
    /// of `accounts`, and 80% of concurrent transfers failed with 40001. For work made of point
    /// lookups (transfers); not for reads of whole tables (`check`, `balance`). Off by default;
    /// `roachbank transfer` turns it on. CockroachDB and SQLite: ignored.
    pub avoid_sequential_scans: bool,
    /// Secrets to scrub from `--echo` output and connection errors besides the database URL's
    /// own password (say, another URL's, when a command uses two).
    pub redactor: Redactor,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            pool_size: 4,
            echo: false,
            instrumentation: None,
            #[cfg(feature = "test-support")]
            flavor_override: None,
            sqlite_busy_timeout: Duration::from_secs(5),
            pool_timeout: None,
            statement_timeout: None,
            idle_in_transaction_timeout: IDLE_IN_TRANSACTION_TIMEOUT,
            stall_timeout: Some(stall::STALL_TIMEOUT),
            migration_lock_wait: MIGRATION_LOCK_WAIT,
            migration_stall_timeout: Some(MIGRATION_STALL_TIMEOUT),
            avoid_sequential_scans: false,
            redactor: Redactor::new(),
        }
    }
}

/// Default of [`ConnectOptions::migration_lock_wait`]: how long `Database::open` waits for
/// another process's migrations before giving up.
pub const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(60);

/// Default of [`ConnectOptions::migration_stall_timeout`]. A migration statement waits by
/// design: for locks other sessions hold, on CockroachDB for its schema-change job and for the
/// new descriptor's lease to reach every node, and when adopting a large table it reads every
/// row. Five minutes lets all that finish, and still ends a frozen server or network.
pub const MIGRATION_STALL_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// How much longer than its statement timeout a statement may go unanswered before its
/// connection counts as stalled: the server's own cancellation needs a moment to arrive.
pub const STALL_GRACE: Duration = Duration::from_secs(5);

/// Default of [`ConnectOptions::idle_in_transaction_timeout`]: far above the longest pause
/// roachbank's own work makes between two statements of a transaction (drawing the ids of a
/// 10,000,000-account seed), and low enough that an unknown commit settles well within 30 s.
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(15);

impl ConnectOptions {
    /// The flavour transactions run with instead of the detected one: `flavor_override` with
    /// the `test-support` feature, never without it.
    pub(crate) fn forced_flavor(&self) -> Option<Flavor> {
        #[cfg(feature = "test-support")]
        return self.flavor_override;
        #[cfg(not(feature = "test-support"))]
        None
    }
}
