//! Settling a commit whose outcome is unknown: ask the caller's probe, on a fresh connection,
//! whether the work's effect is there.

use super::connection::RetryConnection;
use super::error::DatabaseErrorSource;
use super::policy::RetryPolicy;
use super::report;
use super::source::ConnectionSource;
use crate::db::{classify, ErrorClass};
use std::time::Instant;

/// A "did it commit?" check for
/// [`run_transaction_exactly_once`](super::run_transaction_exactly_once): looks, on a fresh
/// connection and outside any transaction the helper opened, for the effect of the work —
/// usually a row under an id the caller chose before the transaction — and returns the
/// committed value if it is there, `None` if it is not.
pub type CommitProbe<'p, C, T, E> = &'p mut dyn FnMut(&mut C) -> Result<Option<T>, E>;

/// How often a commit probe is tried (on lost connections or conflicts) before giving up, if
/// the settle budget ([`RetryPolicy::settle_timeout`]) has not run out first.
const PROBE_TRIES: u32 = 10;

/// What the probe found out about an unknown commit.
pub(super) enum Outcome<T> {
    /// It committed; the value the probe read back.
    Committed(T),
    /// It did not commit (yet: a late commit of it may still land).
    NotFound,
    /// No answer: no probe, the server stayed away for the whole settle budget, or the probe
    /// failed for good.
    Unknown,
}

/// Runs `probe`, if there is one, on a fresh connection from `source` until it answers, at
/// most [`PROBE_TRIES`] times and within `policy.settle_timeout`: no wait for a connection,
/// and no pause between tries, goes past it (a probe already running when it runs out
/// finishes first).
pub(super) fn probe<S, T, E, P>(
    source: &mut S,
    policy: &RetryPolicy,
    probe: Option<&mut P>,
) -> Outcome<T>
where
    S: ConnectionSource,
    E: DatabaseErrorSource,
    P: FnMut(&mut S::Connection) -> Result<Option<T>, E> + ?Sized,
{
    let Some(probe) = probe else {
        return Outcome::Unknown;
    };
    let budget_ends = Instant::now() + policy.settle_timeout;
    let left = || budget_ends.saturating_duration_since(Instant::now());
    for round in 1..=PROBE_TRIES {
        if left().is_zero() {
            report::settle_budget_spent(round - 1, policy.settle_timeout);
            return Outcome::Unknown;
        }
        let wait = policy.backoff(round);
        match source.checkout_within(left()) {
            Ok(mut conn) => match probe(&mut conn) {
                Ok(Some(value)) => return Outcome::Committed(value),
                Ok(None) => return Outcome::NotFound,
                Err(error) => match error.database_error() {
                    Some(db_error)
                        if matches!(
                            classify(db_error),
                            ErrorClass::Retryable
                                | ErrorClass::ConnectionLost
                                | ErrorClass::CockroachCancel
                        ) =>
                    {
                        report::probe_failed(round, report::sqlstate_of(&error), db_error, wait);
                        // Lost outside a transaction (in Diesel's prepare, say), the
                        // connection is not marked broken: without this the pool would hand
                        // the same dead one back to every round. A draining CockroachDB node
                        // cancels, then closes: the next round goes to a fresh connection too.
                        if matches!(
                            classify(db_error),
                            ErrorClass::ConnectionLost | ErrorClass::CockroachCancel
                        ) {
                            conn.discard();
                        }
                    }
                    _ => return Outcome::Unknown,
                },
            },
            Err(error) => report::probe_failed(round, None, &error, wait),
        }
        std::thread::sleep(wait.min(left()));
    }
    Outcome::Unknown
}
