//! The retry loop: attempts on a connection until one commits, a new connection when one is
//! lost, and the answer when giving up.

use super::attempt::{
    attempt, roll_back_or_discard, runs_again_if_not_found, shape_on, Attempt, Next, Shape,
};
use super::connection::RetryConnection;
use super::error::{DatabaseErrorSource, TransactionError};
use super::policy::RetryPolicy;
use super::report::{self, NextIn};
use super::settle::{self, CommitProbe, Outcome};
use super::source::ConnectionSource;
use std::time::Duration;
use tracing::field::display;

/// A committed transaction's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed<T> {
    /// What the work returned on the attempt that committed.
    pub value: T,
    /// How many times the work ran (1 = no retry).
    pub attempts: u32,
}

impl<T> Committed<T> {
    /// Retries needed before the commit (`attempts - 1`).
    pub fn retries(&self) -> u32 {
        self.attempts - 1
    }
}

/// Runs `work` until it commits or the policy says stop (see the [module documentation](super)),
/// reporting each step as a `tracing` event ([`super::report`]).
pub(super) fn run<S, T, E, F>(
    mut source: S,
    policy: &RetryPolicy,
    mut work: F,
    mut probe: Option<CommitProbe<'_, S::Connection, T, E>>,
    shape: Shape,
) -> Result<Committed<T>, TransactionError<E>>
where
    S: ConnectionSource,
    F: FnMut(&mut S::Connection) -> Result<T, E>,
    E: DatabaseErrorSource,
{
    let span = report::span(shape.name());
    let _in_span = span.enter();
    let known_flavor = source.flavor();
    let vouched_serializable = source.sessions_are_serializable();
    let mut attempts = 0;
    // Set once a commit's outcome was unknown and the probe did not find it: that commit may
    // still land late, so from then on giving up means "unknown", never "failed".
    let mut unknown: Option<E> = None;
    let error = 'connections: loop {
        let mut conn = match checkout(&mut source, policy) {
            Ok(conn) => conn,
            Err(error) => {
                report::no_connection(&error);
                break TransactionError::Connection(error);
            }
        };
        let flavor = known_flavor.unwrap_or_else(|| conn.default_flavor());
        span.record("flavor", display(flavor));
        let mut open = false; // a CockroachDB transaction kept open across retries
        let mut shape_here = None; // the shape on this connection, once decided
        loop {
            attempts += 1;
            report::attempt_starts(attempts);
            let outcome = match shape_here
                .map(Ok)
                .unwrap_or_else(|| shape_on(&mut *conn, shape, vouched_serializable))
            {
                Ok(shape) => {
                    shape_here = Some(shape);
                    attempt(&mut *conn, flavor, shape, open, &mut work)
                }
                Err(failed) => failed,
            };
            let (cause, next) = match outcome {
                Attempt::Committed(value) => {
                    report::committed(attempts, flavor);
                    return Ok(Committed { value, attempts });
                }
                Attempt::Retry { cause, next } if policy.may_retry(attempts) => (cause, next),
                Attempt::Retry { cause: last, .. } => {
                    conn.roll_back();
                    report::gave_up(attempts, flavor, &last);
                    break 'connections TransactionError::RetriesExhausted { attempts, last };
                }
                Attempt::Failed(cause) => {
                    conn.roll_back();
                    report::failed(attempts, flavor, &cause);
                    break 'connections TransactionError::Failed(cause);
                }
                Attempt::Ambiguous(cause) => {
                    report::unknown_outcome(attempts, flavor, &cause, probe.is_some());
                    roll_back_or_discard(&mut *conn, &cause);
                    drop(conn); // the probe needs a connection from the pool
                    match settle::probe(&mut source, policy, probe.as_deref_mut()) {
                        Outcome::Committed(value) => {
                            report::settled(attempts, true, None);
                            return Ok(Committed { value, attempts });
                        }
                        Outcome::NotFound if !runs_again_if_not_found(&cause) => {
                            // Stopped by the caller's timeout, which is never retried, and a
                            // late commit cannot be ruled out: unknown, never "failed".
                            report::settled(attempts, false, None);
                            return Err(TransactionError::AmbiguousCommit { attempts, cause });
                        }
                        Outcome::NotFound if policy.may_retry(attempts) => {
                            let wait = policy.backoff(attempts);
                            report::settled(attempts, false, Some(wait));
                            unknown = Some(cause);
                            std::thread::sleep(wait);
                            // Not committed (yet): again, on a fresh connection.
                            continue 'connections;
                        }
                        _ => {
                            report::unsettled(attempts);
                            return Err(TransactionError::AmbiguousCommit { attempts, cause });
                        }
                    }
                }
            };
            open = match next_for_retry(next, attempts, policy) {
                Next::SameTransaction if conn.roll_back_to_restart().is_ok() => {
                    report::retrying(
                        attempts,
                        flavor,
                        &cause,
                        NextIn::SameTransaction,
                        Duration::ZERO,
                    );
                    true
                }
                Next::SameTransaction | Next::NewTransaction => {
                    conn.roll_back();
                    let wait = policy.backoff(attempts);
                    report::retrying(attempts, flavor, &cause, NextIn::NewTransaction, wait);
                    std::thread::sleep(wait);
                    false
                }
                Next::NewConnection => {
                    conn.discard();
                    drop(conn);
                    let wait = policy.backoff(attempts);
                    report::retrying(attempts, flavor, &cause, NextIn::NewConnection, wait);
                    std::thread::sleep(wait);
                    continue 'connections;
                }
            };
        }
    };
    give_up(&mut source, policy, probe, unknown, attempts, error)
}

/// Where retry number `retry` (1-based) runs, given where the failed attempt said (`next`).
///
/// CockroachDB's in-place retries (`ROLLBACK TO SAVEPOINT cockroach_restart`) keep the
/// transaction: the same transaction record, its epoch incremented, its earlier writes' intents
/// still in place — locks that transactions meeting them wait on — and its timestamp pushed
/// forward (cockroachdb/cockroach `pkg/roachpb/data.go`, `Transaction.Restart` and
/// `PrepareTransactionForRetry`): its "place in line" (cockroachdb/docs
/// `v25.1/advanced-client-side-transaction-retries.md`). Not a higher priority: `Restart` raises
/// the number, but `CanPushWithPriority` (`pkg/kv/kvserver/txnwait/queue.go`) counts every
/// normal priority as equal when one transaction pushes another. So the first
/// `immediate_retries` go again in place at once. A transaction still losing after them waits
/// the backoff, as CockroachDB's own retry guidance says for best performance
/// (`v25.1/transaction-retry-error-example.md`: roll back, then sleep, exponentially) — but a
/// wait inside the transaction would hold those intents and stall everyone queued on them
/// (sqlalchemy-cockroachdb's issue #188), so it is rolled back whole and begun again after the
/// wait, as on PostgreSQL.
fn next_for_retry(next: Next, retry: u32, policy: &RetryPolicy) -> Next {
    match next {
        Next::SameTransaction if retry > policy.immediate_retries => Next::NewTransaction,
        next => next,
    }
}

/// A connection for the next attempt; a timed caller's wait for it ends at its deadline.
fn checkout<'s, S: ConnectionSource>(
    source: &'s mut S,
    policy: &RetryPolicy,
) -> Result<S::Checkout<'s>, r2d2::Error> {
    match policy.until_deadline() {
        Some(left) => source.checkout_within(left),
        None => source.checkout(),
    }
}

/// The answer when giving up with `error`. If an earlier commit's outcome was unknown, that
/// commit may have landed late (and made this attempt fail on its key), so the probe is asked
/// once more: found, it committed; otherwise the outcome is reported unknown, never as `error`.
fn give_up<S, T, E, P>(
    source: &mut S,
    policy: &RetryPolicy,
    probe: Option<&mut P>,
    unknown: Option<E>,
    attempts: u32,
    error: TransactionError<E>,
) -> Result<Committed<T>, TransactionError<E>>
where
    S: ConnectionSource,
    E: DatabaseErrorSource,
    P: FnMut(&mut S::Connection) -> Result<Option<T>, E> + ?Sized,
{
    let Some(cause) = unknown else {
        return Err(error);
    };
    match settle::probe(source, policy, probe) {
        Outcome::Committed(value) => {
            report::settled(attempts, true, None);
            Ok(Committed { value, attempts })
        }
        _ => {
            report::unsettled(attempts);
            Err(TransactionError::AmbiguousCommit { attempts, cause })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_place_retries_go_at_once_up_to_the_immediate_ones_then_begin_anew() {
        let policy = RetryPolicy {
            immediate_retries: 2,
            ..RetryPolicy::default()
        };
        for retry in 1..=2 {
            assert_eq!(
                next_for_retry(Next::SameTransaction, retry, &policy),
                Next::SameTransaction,
                "retry {retry}"
            );
        }
        for retry in 3..=10 {
            assert_eq!(
                next_for_retry(Next::SameTransaction, retry, &policy),
                Next::NewTransaction,
                "retry {retry}: past the immediate retries it waits, outside the transaction"
            );
            // The wait it gets is the policy's, drawn below the ceiling for that retry.
            assert!(policy.backoff(retry) <= policy.backoff_ceiling(retry));
            assert!(!policy.backoff_ceiling(retry).is_zero());
        }
        // Where the attempt said otherwise, that stands.
        for next in [Next::NewTransaction, Next::NewConnection] {
            assert_eq!(next_for_retry(next, 1, &policy), next);
            assert_eq!(next_for_retry(next, 9, &policy), next);
        }
    }
}
