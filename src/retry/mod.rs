//! `run_transaction`: run a piece of work in a transaction, retrying it the way each engine
//! needs, so that it commits exactly once or fails with a typed reason.
//!
//! The protocol, per [`Flavor`](crate::db::Flavor):
//!
//! * **CockroachDB** — `BEGIN ISOLATION LEVEL SERIALIZABLE; SAVEPOINT cockroach_restart` (the
//!   savepoint is the first statement). On a retryable error (40001) `ROLLBACK TO SAVEPOINT
//!   cockroach_restart` and run the work again at once in the same transaction, which keeps its
//!   place in line: the same transaction record, its epoch incremented, the intents of its
//!   earlier writes still in place (transactions meeting them wait for it) and its timestamp
//!   pushed forward. It does *not* gain priority: CockroachDB counts every normal priority as
//!   equal when one transaction pushes another (`pkg/kv/kvserver/txnwait/queue.go`,
//!   `CanPushWithPriority`). A transaction still losing after the policy's immediate retries is
//!   rolled back whole and begun again after the backoff, like PostgreSQL's, since waiting
//!   inside it would keep those intents blocking everyone queued behind them. On success
//!   `RELEASE SAVEPOINT cockroach_restart` — the real commit — then `COMMIT`. RELEASE failing
//!   with 40001 is retried like any conflict; failing any other way that leaves the outcome
//!   open (40003, lost connection, 57014: see [`ErrorClass`](crate::db::ErrorClass)) is an
//!   [`TransactionError::AmbiguousCommit`]. A 57014 "query execution canceled" before the
//!   commit, a draining node's, goes again on a fresh connection; a statement timeout is never
//!   retried.
//! * **PostgreSQL** — `BEGIN ISOLATION LEVEL SERIALIZABLE` (the tutorial's read-then-write
//!   transfer is only safe there). PostgreSQL keeps the snapshot across `ROLLBACK TO SAVEPOINT`,
//!   so a conflict (40001, or deadlock 40P01) rolls the whole transaction back, waits, and
//!   begins a new one.
//! * **SQLite** — `BEGIN IMMEDIATE` takes the write lock up front; busy/locked rolls back,
//!   waits and begins again.
//!
//! Everywhere: the number of attempts is bounded ([`RetryPolicy`]); waits use exponential
//! backoff with full jitter and happen only when no transaction is open (after ROLLBACK, or on a
//! lost connection), so a waiting client never holds locks; a connection lost before the commit
//! was sent is replaced by a fresh pooled one and the work retried; an error that is not
//! retryable is rolled back and returned unchanged after one attempt.
//!
//! Every retry (with its SQLSTATE and CockroachDB's retry reason), wait, unknown outcome and
//! give-up is a `tracing` event on the target [`RETRY_TARGET`], in a span per call: install any
//! subscriber (`tracing_subscriber::fmt().init()`, say) and the application sees its retries.
//!
//! The work is a closure that may run more than once and must not commit, roll back or open
//! transactions itself: `run_transaction` owns the transaction.
//!
//! The connections come from any [`ConnectionSource`]: roachbank's [`Database`](crate::db::Database), or your own
//! Diesel pool or connection, with the flavour detected ([`Flavored::detect`]) or given:
//!
//! ```no_run
//! use diesel::prelude::*;
//! use diesel::r2d2::{ConnectionManager, Pool};
//! use roachbank::retry::{run_transaction, Flavored, RetryPolicy};
//!
//! diesel::table! { accounts (id) { id -> BigInt, balance -> BigInt, } }
//!
//! let pool = Pool::builder().build(ConnectionManager::<PgConnection>::new(
//!     "postgresql://root@localhost:26257/bank?sslmode=disable",
//! ))?;
//! // One `SELECT version()`: CockroachDB gets its `cockroach_restart` protocol.
//! let bank = Flavored::detect(&pool)?;
//! let moved = run_transaction(&bank, &RetryPolicy::default(), |conn| {
//!     diesel::update(accounts::table.find(1))
//!         .set(accounts::balance.eq(accounts::balance - 100))
//!         .execute(conn)?;
//!     diesel::update(accounts::table.find(2))
//!         .set(accounts::balance.eq(accounts::balance + 100))
//!         .execute(conn)
//! })?;
//! println!("committed after {} attempt(s)", moved.attempts);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A plain `&pool` works as well; without a flavour it runs the PostgreSQL protocol, which is
//! correct on CockroachDB too (each retry is a new transaction).

mod attempt;
mod connection;
mod error;
mod policy;
mod report;
mod run;
mod settle;
mod source;

use attempt::Shape;
pub use connection::{Access, CommitError, RetryConnection, RESTART_SAVEPOINT};
pub use error::{DatabaseErrorSource, TransactionError};
pub use policy::{RetryPolicy, SETTLE_TIMEOUT};
pub use report::RETRY_TARGET;
pub use run::Committed;
pub use settle::CommitProbe;
pub use source::{ConnectionSource, DetectError, Flavored};

/// Runs `work` in a transaction on a connection from `source` and commits it, retrying as the
/// [module documentation](self) describes, at most `policy.max_retries` times.
///
/// Returns the work's value and the number of attempts, or a [`TransactionError`]:
/// `Failed` (not retryable; rolled back; the error unchanged), `RetriesExhausted`,
/// `AmbiguousCommit` (commit outcome unknown; never retried blindly) or `Connection`.
pub fn run_transaction<S, T, E, F>(
    source: S,
    policy: &RetryPolicy,
    work: F,
) -> Result<Committed<T>, TransactionError<E>>
where
    S: ConnectionSource,
    F: FnMut(&mut S::Connection) -> Result<T, E>,
    E: DatabaseErrorSource,
{
    run::run(
        source,
        policy,
        work,
        None,
        Shape::Explicit(Access::ReadWrite),
    )
}

/// [`run_transaction`] for work that only reads: the transaction is begun `READ ONLY` on
/// CockroachDB and PostgreSQL, and as a plain deferred `BEGIN` on SQLite, whose WAL readers
/// never wait for a writer (where `BEGIN IMMEDIATE` would queue behind every one).
pub fn run_read_only_transaction<S, T, E, F>(
    source: S,
    policy: &RetryPolicy,
    work: F,
) -> Result<Committed<T>, TransactionError<E>>
where
    S: ConnectionSource,
    F: FnMut(&mut S::Connection) -> Result<T, E>,
    E: DatabaseErrorSource,
{
    run::run(
        source,
        policy,
        work,
        None,
        Shape::Explicit(Access::ReadOnly),
    )
}

/// [`run_transaction`] that resolves an unknown commit outcome instead of reporting it.
///
/// When the commit's outcome is unknown (connection lost during `RELEASE`/`COMMIT`, or 40003),
/// `probe` runs on a fresh connection: if it finds the work's effect, the transaction committed
/// and its value is returned; if not, the work is retried as a new attempt. The work must write
/// something `probe` can find under a key chosen *before* the transaction (a client-chosen id),
/// so that a retry racing a late commit of the lost attempt fails on that key instead of
/// applying the work twice; any failure after an unknown outcome is checked with `probe` again
/// before it is returned. Only if the probe itself cannot get an answer within
/// [`RetryPolicy::settle_timeout`] is the result [`TransactionError::AmbiguousCommit`].
pub fn run_transaction_exactly_once<S, T, E, F, P>(
    source: S,
    policy: &RetryPolicy,
    work: F,
    mut probe: P,
) -> Result<Committed<T>, TransactionError<E>>
where
    S: ConnectionSource,
    F: FnMut(&mut S::Connection) -> Result<T, E>,
    P: FnMut(&mut S::Connection) -> Result<Option<T>, E>,
    E: DatabaseErrorSource,
{
    run::run(
        source,
        policy,
        work,
        Some(&mut probe),
        Shape::Explicit(Access::ReadWrite),
    )
}

/// [`run_transaction`] for work that is exactly one statement, sent as its own implicit
/// transaction: no `BEGIN`, no `SAVEPOINT`, no `COMMIT` — one round trip where an explicit
/// transaction needs at least three.
///
/// CockroachDB retries such a statement on the server when it meets a conflict (as long as its
/// results fit the results buffer, 16 KiB by default), so the client sees far fewer 40001s —
/// the "automatic retries" of <https://www.cockroachlabs.com/docs/stable/transactions#automatic-retries>.
/// A 40001 that still reaches the client, or PostgreSQL's, is retried here like any other:
/// the first few times at once, then after the policy's backoff (see
/// [`RetryPolicy::immediate_retries`]).
///
/// The statement always runs at SERIALIZABLE, where a statement that writes what it read is
/// safe. Sent on its own it would run at the session's `default_transaction_isolation`, which
/// is READ COMMITTED on PostgreSQL unless set, and may be on CockroachDB too from 24.1 (where
/// READ COMMITTED became usable by default). So, unless the source vouches for its sessions
/// ([`ConnectionSource::sessions_are_serializable`]: roachbank's [`Database`](crate::db::Database),
/// whose connections are set up SERIALIZABLE), each connection taken is asked its default once
/// (one round trip), and where it is weaker the statement is sent inside an explicit `BEGIN
/// ISOLATION LEVEL SERIALIZABLE … COMMIT` (on CockroachDB with the `cockroach_restart`
/// protocol) instead — correct, if no longer one round trip. To keep the fast path on a pool of
/// yours, make its sessions SERIALIZABLE (for instance `options=-c
/// default_transaction_isolation=serializable` in the URL). The work must send exactly one
/// statement: a second one would run, and commit, as a transaction of its own. A lost
/// connection while the statement ran, or CockroachDB's 57014, leaves its outcome unknown:
/// [`TransactionError::AmbiguousCommit`], never a blind retry.
pub fn run_single_statement<S, T, E, F>(
    source: S,
    policy: &RetryPolicy,
    statement: F,
) -> Result<Committed<T>, TransactionError<E>>
where
    S: ConnectionSource,
    F: FnMut(&mut S::Connection) -> Result<T, E>,
    E: DatabaseErrorSource,
{
    run::run(source, policy, statement, None, Shape::SingleStatement)
}

/// [`run_single_statement`] that resolves an unknown outcome with `probe`, as
/// [`run_transaction_exactly_once`] does: the statement must write something the probe can find
/// under a key chosen before it was sent.
pub fn run_single_statement_exactly_once<S, T, E, F, P>(
    source: S,
    policy: &RetryPolicy,
    statement: F,
    mut probe: P,
) -> Result<Committed<T>, TransactionError<E>>
where
    S: ConnectionSource,
    F: FnMut(&mut S::Connection) -> Result<T, E>,
    P: FnMut(&mut S::Connection) -> Result<Option<T>, E>,
    E: DatabaseErrorSource,
{
    run::run(
        source,
        policy,
        statement,
        Some(&mut probe),
        Shape::SingleStatement,
    )
}
