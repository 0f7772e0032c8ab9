//! How many times a transaction is retried, and how long to wait between tries.

use rand::Rng;
use std::time::{Duration, Instant};

/// Bounds and backoff for [`run_transaction`](crate::run_transaction).
///
/// The defaults follow cockroach-go: at most 50 retries (51 attempts). The first
/// `immediate_retries` retries (default 3) go at once; after that the waits are exponential
/// with full jitter: before retry `n` (1-based) the helper sleeps a uniformly random time in
/// `[0, min(max_backoff, initial_backoff * 2^(n - immediate_retries - 1))]` — and only when it
/// holds no locks: after a full ROLLBACK, or when the connection was lost. On CockroachDB the
/// immediate retries go through `ROLLBACK TO SAVEPOINT cockroach_restart`, keeping the
/// transaction (its record, its earlier writes' intents, not a higher priority) open; a retry
/// that waits rolls the transaction back whole first and begins it again after the wait.
///
/// Settling a commit whose outcome is unknown (the probe of
/// [`run_transaction_exactly_once`](crate::run_transaction_exactly_once)) has a time budget of
/// its own, `settle_timeout`: when it runs out, the outcome is reported unknown
/// ([`TransactionError::AmbiguousCommit`](crate::TransactionError::AmbiguousCommit)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; the work runs at most `max_retries + 1` times.
    pub max_retries: u32,
    /// Upper bound of the first wait.
    pub initial_backoff: Duration,
    /// Upper bound of any wait.
    pub max_backoff: Duration,
    /// Retries that go at once, before the first wait. A conflict usually means the
    /// transaction it lost to has just committed, so going again at once meets its result
    /// rather than it, as pgbench's retries do; a transaction that keeps losing is at a hot
    /// spot or behind a slow commit, and from then on the waits keep the retries from using up
    /// `max_retries` within one stall (measured on PostgreSQL: with no wait at all, some
    /// transfers gave up after 51 attempts during a second-long fsync).
    pub immediate_retries: u32,
    /// No retry starts after this instant (`None`: `max_retries` alone bounds them), for a
    /// caller with a deadline of its own. The attempt running at the deadline finishes; a wait
    /// for a connection from the pool ends at the deadline too.
    pub deadline: Option<Instant>,
    /// How long settling one unknown commit outcome may take: the probe is asked (on
    /// connections that wait no longer than what is left of it) until it answers or this has
    /// passed; then the outcome is reported unknown, never as a failure. A probe already
    /// running when it runs out finishes first. Default [`SETTLE_TIMEOUT`].
    pub settle_timeout: Duration,
}

/// Default of [`RetryPolicy::settle_timeout`]: longer than a typical
/// `idle_in_transaction_session_timeout` (roachbank's is 15 s), so that a probe which meets the
/// transaction of a commit lost in a partition still gets its answer once the server has ended
/// it — on CockroachDB a SERIALIZABLE read that meets another transaction's write intent waits
/// for that transaction to finish (cockroachdb/docs `v25.1/architecture/transaction-layer.md`,
/// "Transaction conflicts": write-read) — and short enough that a network that stays down is
/// reported within half a minute.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 50,
            initial_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_secs(1),
            immediate_retries: 3,
            deadline: None,
            settle_timeout: SETTLE_TIMEOUT,
        }
    }
}

impl RetryPolicy {
    /// Whether another attempt may follow `attempts` attempts: within `max_retries`, and
    /// before the deadline if there is one.
    pub fn may_retry(&self, attempts: u32) -> bool {
        attempts <= self.max_retries && self.deadline.is_none_or(|end| Instant::now() < end)
    }

    /// How long a wait for a connection may last now: what is left until the deadline, if
    /// there is one (zero once it has passed: only a connection at hand will do).
    pub fn until_deadline(&self) -> Option<Duration> {
        self.deadline
            .map(|end| end.saturating_duration_since(Instant::now()))
    }

    /// The wait before retry number `retry` (1-based), drawn with full jitter below
    /// [`backoff_ceiling`](Self::backoff_ceiling); none for the immediate retries.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.backoff_ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    /// The upper bound of the wait before retry number `retry` (1-based): zero for the
    /// immediate retries, then `initial_backoff`, doubling from there up to `max_backoff`.
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        if retry <= self.immediate_retries {
            return Duration::ZERO;
        }
        let doublings = (retry - self.immediate_retries - 1).min(30);
        self.initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_never_exceeds_it() {
        let policy = RetryPolicy {
            max_retries: 10,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            immediate_retries: 0,
            deadline: None,
            settle_timeout: SETTLE_TIMEOUT,
        };
        assert_eq!(policy.backoff_ceiling(1), Duration::from_millis(10));
        assert_eq!(policy.backoff_ceiling(2), Duration::from_millis(20));
        assert_eq!(policy.backoff_ceiling(3), Duration::from_millis(40));
        assert_eq!(policy.backoff_ceiling(4), Duration::from_millis(50));
        assert_eq!(policy.backoff_ceiling(1000), Duration::from_millis(50));
        for retry in 1..20 {
            assert!(policy.backoff(retry) <= policy.backoff_ceiling(retry));
        }
    }

    #[test]
    fn the_immediate_retries_go_at_once_and_the_next_one_waits() {
        let policy = RetryPolicy::default();
        for retry in 1..=policy.immediate_retries {
            assert_eq!(policy.backoff(retry), Duration::ZERO, "retry {retry}");
        }
        let first_waiting = policy.immediate_retries + 1;
        assert_eq!(
            policy.backoff_ceiling(first_waiting),
            policy.initial_backoff
        );
        assert_eq!(
            policy.backoff_ceiling(first_waiting + 1),
            policy.initial_backoff * 2
        );
        let waits: std::collections::BTreeSet<_> =
            (0..50).map(|_| policy.backoff(first_waiting)).collect();
        assert!(waits.iter().any(|wait| !wait.is_zero()), "{waits:?}");
    }

    #[test]
    fn no_retry_starts_after_the_deadline() {
        let unbounded = RetryPolicy::default();
        assert!(unbounded.may_retry(50));
        assert!(!unbounded.may_retry(51));
        let past = RetryPolicy {
            deadline: Some(Instant::now()),
            ..RetryPolicy::default()
        };
        assert!(!past.may_retry(1));
        assert_eq!(past.until_deadline(), Some(Duration::ZERO));
        assert_eq!(unbounded.until_deadline(), None);
    }

    #[test]
    fn jitter_spreads_waits() {
        let policy = RetryPolicy::default();
        let waits: std::collections::BTreeSet<_> = (0..50).map(|_| policy.backoff(8)).collect();
        assert!(
            waits.len() > 10,
            "full jitter should vary the waits: {waits:?}"
        );
    }
}
