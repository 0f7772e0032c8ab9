#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

#[cfg(feature = "async")]
pub mod asynchronous;
mod classify;
mod connection;
mod error;
mod policy;
mod protocol;
mod run;
mod source;
#[cfg(test)]
mod tests;
#[cfg(all(test, feature = "async"))]
mod tests_async;

pub use classify::{classify, cockroach_retry_reason, sqlstate, ErrorClass};
pub use connection::{Access, Flavor, RetryConnection};
pub use error::{Committed, DatabaseErrorSource, PoolError, TransactionError};
pub use policy::{RetryPolicy, SETTLE_TIMEOUT};
pub use source::{ConnectionSource, DetectError, Flavored};

use protocol::Shape;
use run::run;

/// The `tracing` target of every event: an application sees the retries, their causes, the
/// waits and any unknown outcome in its own subscriber.
///
/// | event (message) | level | fields |
/// |---|---|---|
/// | `attempt` | TRACE | `attempt` |
/// | `retrying transaction` | INFO | `attempt` (the one that failed), `sqlstate`, `reason`, `next`, `backoff_ms`, `flavor`, `error` |
/// | `commit outcome unknown` | WARN | `attempt`, `sqlstate`, `flavor`, `error`, `probe` |
/// | `commit outcome settled by the probe` | INFO | `attempt`, `outcome` (`committed`, `not_committed`), `backoff_ms` |
/// | `commit outcome could not be settled` | WARN | `attempt` |
/// | `commit probe failed; trying again` | DEBUG | `round`, `sqlstate`, `backoff_ms`, `error` |
/// | `settle budget spent; the commit probe got no answer` | WARN | `rounds`, `settle_timeout_ms` |
/// | `retries exhausted; giving up` | WARN | `attempts`, `sqlstate`, `reason`, `flavor`, `error` |
/// | `transaction failed; not retryable` | DEBUG | `attempt`, `sqlstate`, `flavor`, `error` |
/// | `transaction committed` | DEBUG | `attempts`, `flavor` |
/// | `single statement sent in a SERIALIZABLE transaction` | DEBUG | `isolation` |
/// | `no database connection` | WARN | `error` |
///
/// `sqlstate` is the code the server reported ([`sqlstate()`]), absent when there is none
/// (SQLite, or a connection libpq lost); `reason` is CockroachDB's retry reason
/// ([`cockroach_retry_reason`]); `next` is where the next attempt runs: `same_transaction`
/// (CockroachDB, after `ROLLBACK TO SAVEPOINT cockroach_restart`, no wait), `new_transaction`
/// or `new_connection`; `backoff_ms` the wait before it; `error` the database error's message
/// on one line. Every call runs in a DEBUG span `run_transaction` with `mode` (`read_write`,
/// `read_only`, `single_statement`) and `flavor`.
pub const RETRY_TARGET: &str = "diesel_retry";

/// Runs `work` in a transaction on a connection from `source` and commits it, retrying as the
/// [crate documentation](crate) describes, at most `policy.max_retries` times.
///
/// Returns the work's value and the number of attempts, or a [`TransactionError`]: `Failed`
/// (not retryable; rolled back; the error unchanged), `RetriesExhausted`, `AmbiguousCommit`
/// (commit outcome unknown; never retried blindly) or `Connection`. The work may run more than
/// once and must not commit, roll back or open transactions itself.
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
    run(source, policy, work, None, Shape::ReadWrite)
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
    run(source, policy, work, None, Shape::ReadOnly)
}

/// [`run_transaction`] that resolves an unknown commit outcome instead of reporting it.
///
/// When the commit's outcome is unknown (connection lost during `RELEASE`/`COMMIT`, 40003,
/// CockroachDB's 57014), `probe` runs on a fresh connection: if it finds the work's effect, the
/// transaction committed and its value is returned; if not, the work is retried as a new
/// attempt. The work must write something `probe` can find under a key chosen *before* the
/// transaction (a client-chosen id), so that a retry racing a late commit of the lost attempt
/// fails on that key instead of applying the work twice; any failure after an unknown outcome
/// is checked with `probe` again before it is returned. Only if the probe cannot get an answer
/// within [`RetryPolicy::settle_timeout`] — or found nothing after CockroachDB's timeout, which
/// is never retried — is the result [`TransactionError::AmbiguousCommit`].
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
    run(source, policy, work, Some(&mut probe), Shape::ReadWrite)
}

/// [`run_transaction`] for work that is exactly one statement, sent as its own implicit
/// transaction: no `BEGIN`, no `SAVEPOINT`, no `COMMIT` — one round trip where an explicit
/// transaction needs at least three.
///
/// CockroachDB retries such a statement on the server when it meets a conflict (as long as its
/// results fit the results buffer, 16 KiB by default): the "automatic retries" of
/// <https://www.cockroachlabs.com/docs/stable/transactions#automatic-retries>. A 40001 that
/// still reaches the client, or PostgreSQL's, is retried here like any other.
///
/// The statement always runs at SERIALIZABLE. Sent on its own it would run at the session's
/// `default_transaction_isolation` (READ COMMITTED on PostgreSQL unless set), so unless the
/// source vouches for its sessions ([`ConnectionSource::sessions_are_serializable`]) each
/// connection taken is asked its default once, and where it is weaker the statement is sent
/// inside an explicit `BEGIN ISOLATION LEVEL SERIALIZABLE … COMMIT` instead. The work must send
/// exactly one statement. A lost connection while it ran, or CockroachDB's 57014, leaves its
/// outcome unknown: [`TransactionError::AmbiguousCommit`], never a blind retry.
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
    run(source, policy, statement, None, Shape::SingleStatement)
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
    run(
        source,
        policy,
        statement,
        Some(&mut probe),
        Shape::SingleStatement,
    )
}
