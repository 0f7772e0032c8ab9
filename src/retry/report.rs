//! What `run_transaction` tells the application as it goes: `tracing` events on the target
//! [`RETRY_TARGET`] (whose documentation lists them), in a span per call.

use super::error::DatabaseErrorSource;
use crate::db::{cockroach_retry_reason, one_line, sqlstate, Flavor};
use diesel::result::SqlState;
use std::time::Duration;
use tracing::field::{display, DisplayValue};

/// The `tracing` target of `run_transaction`'s events: an application sees its retries, their
/// causes, the waits and any unknown outcome in its own subscriber (roachbank's `-v` prints the
/// same events).
///
/// | event | level | fields |
/// |---|---|---|
/// | an attempt starts | TRACE | `attempt` |
/// | a retry (conflict, lost connection) | INFO | `attempt` (the one that failed), `sqlstate`, `reason`, `next`, `backoff_ms`, `flavor`, `error` |
/// | the commit's outcome is unknown | WARN | `attempt`, `sqlstate`, `flavor`, `error`, `probe` |
/// | the probe settled it | INFO | `attempt`, `outcome` (`committed`, `not_committed`), `backoff_ms` |
/// | it could not be settled | WARN | `attempt` |
/// | the probe failed, tries again | DEBUG | `round`, `sqlstate`, `backoff_ms`, `error` |
/// | the settle budget ran out | WARN | `rounds` (probes tried), `settle_timeout_ms` |
/// | retries exhausted | WARN | `attempts`, `sqlstate`, `reason`, `flavor`, `error` |
/// | not retryable, rolled back | DEBUG | `attempt`, `sqlstate`, `flavor`, `error` |
/// | committed | DEBUG | `attempts`, `flavor` |
/// | one statement sent in a SERIALIZABLE transaction (the session's default is not) | DEBUG | `isolation` |
/// | no connection from the pool | WARN | `error` |
///
/// `sqlstate` is the code the server reported ([`sqlstate`](crate::db::sqlstate())), absent
/// when there is none (SQLite, or a connection libpq lost); `reason` is CockroachDB's retry reason
/// ([`crate::db::cockroach_retry_reason`]: `RETRY_SERIALIZABLE`,
/// `ReadWithinUncertaintyIntervalError` …), absent elsewhere; `next` is where the next
/// attempt runs: `same_transaction` (CockroachDB, after `ROLLBACK TO SAVEPOINT
/// cockroach_restart`, no wait), `new_transaction` or `new_connection`; `backoff_ms` the wait
/// before it. `error` is the database error's message on one line (absent when the work's own
/// error holds none). Every call runs in a DEBUG span `run_transaction` with `mode`
/// (`read_write`, `read_only`, `single_statement`) and `flavor`.
pub const RETRY_TARGET: &str = "roachbank::retry";

/// Where the next attempt runs, as the `next` field says it.
#[derive(Debug, Clone, Copy)]
pub(super) enum NextIn {
    SameTransaction,
    NewTransaction,
    NewConnection,
}

impl NextIn {
    fn name(self) -> &'static str {
        match self {
            NextIn::SameTransaction => "same_transaction",
            NextIn::NewTransaction => "new_transaction",
            NextIn::NewConnection => "new_connection",
        }
    }
}

/// The span of one `run_transaction` call in `mode` (the shape's name); `flavor` is recorded
/// once a connection tells it.
pub(super) fn span(mode: &'static str) -> tracing::Span {
    tracing::debug_span!(
        target: RETRY_TARGET,
        "run_transaction",
        mode,
        flavor = tracing::field::Empty
    )
}

/// The database error's message on one line, if `cause` holds one.
fn error_text<E: DatabaseErrorSource>(cause: &E) -> Option<DisplayValue<String>> {
    cause
        .database_error()
        .map(|error| display(one_line(&error.to_string())))
}

/// The SQLSTATE of the database error in `cause`, where the server reported one.
pub(super) fn sqlstate_of<E: DatabaseErrorSource>(cause: &E) -> Option<SqlState> {
    cause.database_error().and_then(sqlstate)
}

fn reason_of<E: DatabaseErrorSource>(cause: &E) -> Option<&str> {
    cause.database_error().and_then(cockroach_retry_reason)
}

/// Milliseconds, to the microsecond.
fn millis(wait: Duration) -> f64 {
    (wait.as_secs_f64() * 1e6).round() / 1e3
}

/// Attempt number `attempt` starts.
pub(super) fn attempt_starts(attempt: u32) {
    tracing::trace!(target: RETRY_TARGET, attempt, "attempt");
}

/// Work that is one statement runs in an explicit SERIALIZABLE transaction: the session's
/// default isolation is `isolation`, which a statement sent on its own would run at.
pub(super) fn single_statement_in_transaction(isolation: &str) {
    tracing::debug!(
        target: RETRY_TARGET,
        isolation,
        "single statement sent in a SERIALIZABLE transaction"
    );
}

/// Attempt `attempt` failed with `cause` and the work runs again in `next` after `backoff`.
pub(super) fn retrying<E: DatabaseErrorSource>(
    attempt: u32,
    flavor: Flavor,
    cause: &E,
    next: NextIn,
    backoff: Duration,
) {
    tracing::info!(
        target: RETRY_TARGET,
        attempt,
        sqlstate = sqlstate_of(cause).as_ref().map(SqlState::as_str),
        reason = reason_of(cause),
        next = next.name(),
        backoff_ms = millis(backoff),
        flavor = %flavor,
        error = error_text(cause),
        "retrying transaction"
    );
}

/// Attempt `attempt` sent its commit and cannot tell whether it happened; `probe`: a commit
/// probe will look.
pub(super) fn unknown_outcome<E: DatabaseErrorSource>(
    attempt: u32,
    flavor: Flavor,
    cause: &E,
    probe: bool,
) {
    tracing::warn!(
        target: RETRY_TARGET,
        attempt,
        sqlstate = sqlstate_of(cause).as_ref().map(SqlState::as_str),
        flavor = %flavor,
        error = error_text(cause),
        probe,
        "commit outcome unknown"
    );
}

/// The probe found attempt `attempt`'s commit (`committed`), or found it had not happened and
/// the work runs again after `backoff` (`None`: it does not run again — a timeout stopped it —
/// and its outcome stays unknown).
pub(super) fn settled(attempt: u32, committed: bool, backoff: Option<Duration>) {
    tracing::info!(
        target: RETRY_TARGET,
        attempt,
        outcome = if committed { "committed" } else { "not_committed" },
        backoff_ms = backoff.map(millis),
        "commit outcome settled by the probe"
    );
}

/// The probe could not tell whether attempt `attempt`'s commit happened (or there is none):
/// the outcome stays unknown.
pub(super) fn unsettled(attempt: u32) {
    tracing::warn!(
        target: RETRY_TARGET,
        attempt,
        "commit outcome could not be settled"
    );
}

/// The commit probe failed in round `round` (with `sqlstate`, `error`: a retryable error or a
/// lost connection, or no connection at all); it runs again after `backoff`.
pub(super) fn probe_failed(
    round: u32,
    sqlstate: Option<SqlState>,
    error: &dyn std::fmt::Display,
    backoff: Duration,
) {
    tracing::debug!(
        target: RETRY_TARGET,
        round,
        sqlstate = sqlstate.as_ref().map(SqlState::as_str),
        backoff_ms = millis(backoff),
        error = %one_line(&error.to_string()),
        "commit probe failed; trying again"
    );
}

/// Settling ran out of its budget (`budget`, [`RetryPolicy::settle_timeout`]) after `rounds`
/// tries of the probe.
///
/// [`RetryPolicy::settle_timeout`]: super::RetryPolicy::settle_timeout
pub(super) fn settle_budget_spent(rounds: u32, budget: Duration) {
    tracing::warn!(
        target: RETRY_TARGET,
        rounds,
        settle_timeout_ms = millis(budget),
        "settle budget spent; the commit probe got no answer"
    );
}

/// Every allowed attempt failed; the last with `cause`.
pub(super) fn gave_up<E: DatabaseErrorSource>(attempts: u32, flavor: Flavor, cause: &E) {
    tracing::warn!(
        target: RETRY_TARGET,
        attempts,
        sqlstate = sqlstate_of(cause).as_ref().map(SqlState::as_str),
        reason = reason_of(cause),
        flavor = %flavor,
        error = error_text(cause),
        "retries exhausted; giving up"
    );
}

/// Attempt `attempt` failed with `cause`, which retrying cannot fix.
pub(super) fn failed<E: DatabaseErrorSource>(attempt: u32, flavor: Flavor, cause: &E) {
    tracing::debug!(
        target: RETRY_TARGET,
        attempt,
        sqlstate = sqlstate_of(cause).as_ref().map(SqlState::as_str),
        flavor = %flavor,
        error = error_text(cause),
        "transaction failed; not retryable"
    );
}

/// The transaction committed after `attempts` attempts.
pub(super) fn committed(attempts: u32, flavor: Flavor) {
    tracing::debug!(
        target: RETRY_TARGET,
        attempts,
        flavor = %flavor,
        "transaction committed"
    );
}

/// The pool gave no connection.
pub(super) fn no_connection(error: &r2d2::Error) {
    tracing::warn!(
        target: RETRY_TARGET,
        error = %one_line(&error.to_string()),
        "no database connection"
    );
}
