//! Many random transfers at once: worker threads sharing one pool, a run length in transfers
//! or in time, and the figures of the run (done, failed, retries, throughput, latency).

use crate::bank::{self, BankError, Transfer};
use crate::db::Database;
use crate::retry::{RetryPolicy, TransactionError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a run goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunLength {
    /// This many transfers (committed or failed).
    Count(u64),
    /// Start transfers until this much time has passed.
    Duration(Duration),
}

impl From<u64> for RunLength {
    fn from(count: u64) -> Self {
        RunLength::Count(count)
    }
}

/// One committed transfer as the run saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferOutcome {
    /// What moved.
    pub transfer: Transfer,
    /// Attempts it took.
    pub attempts: u32,
    /// Wall time from first attempt to commit.
    pub latency: Duration,
}

/// Figures of a transfer run.
#[derive(Debug, Clone, Default)]
pub struct TransferSummary {
    /// Transfers committed (each exactly once).
    pub done: u64,
    /// Transfers that did not commit (none of their effect was applied).
    pub failed: u64,
    /// Transfers whose commit outcome stayed unknown because the server could not be asked
    /// (see `TransactionError::AmbiguousCommit`); `check` tells whether the books balance.
    pub unknown: u64,
    /// Retries over all committed transfers.
    pub retries: u64,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Latency of every committed transfer, sorted.
    pub latencies: Vec<Duration>,
}

impl TransferSummary {
    /// Committed transfers per second of wall time.
    pub fn per_second(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// The latency below which `quantile` (0..=1) of the transfers fall.
    pub fn latency_quantile(&self, quantile: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let rank = (quantile * self.latencies.len() as f64).ceil() as usize;
        Some(self.latencies[rank.clamp(1, self.latencies.len()) - 1])
    }
}

/// How a transfer run ended.
#[derive(Debug)]
pub struct TransferReport {
    /// What was done.
    pub summary: TransferSummary,
    /// The first failure, if any. A transient one (retries exhausted, an outcome that could not
    /// be resolved, no connection) is counted and the run goes on; any other stops the run.
    pub error: Option<TransactionError<BankError>>,
}

/// How long after the end of a timed run its transfers may still start a retry.
pub const RETRY_GRACE: Duration = Duration::from_secs(2);

/// Runs random transfers on `workers` threads sharing `db`'s pool for `length`, calling
/// `on_transfer` after each commit. [`run_transfers_cancellable`] can also be stopped early.
pub fn run_transfers(
    db: &Database,
    policy: &RetryPolicy,
    length: impl Into<RunLength>,
    workers: u32,
    on_transfer: &(dyn Fn(&TransferOutcome) + Sync),
) -> TransferReport {
    let never = AtomicBool::new(false);
    run_transfers_cancellable(db, policy, length, workers, &never, on_transfer)
}

/// [`run_transfers`] that also ends early once `cancel` is set (by a signal handler, another
/// thread, …): no transfer starts after that, while those in flight run to their end — commit,
/// rollback or retries exhausted, each statement bounded by the connection's stall timeout — and
/// are counted. The report is then that of the shorter run; a caller that needs to know whether
/// it was cut short reads `cancel`.
pub fn run_transfers_cancellable(
    db: &Database,
    policy: &RetryPolicy,
    length: impl Into<RunLength>,
    workers: u32,
    cancel: &AtomicBool,
    on_transfer: &(dyn Fn(&TransferOutcome) + Sync),
) -> TransferReport {
    let length = length.into();
    let started = Instant::now();
    // A timed run ends on time: no transfer starts a retry later than RETRY_GRACE after it (a
    // conflict met at the very end is still retried; a transfer stuck in retries is not).
    let policy = &match length {
        RunLength::Duration(duration) => {
            let end = started + duration + RETRY_GRACE;
            RetryPolicy {
                deadline: Some(policy.deadline.map_or(end, |own| own.min(end))),
                ..*policy
            }
        }
        RunLength::Count(_) => *policy,
    };
    let next = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let unknown = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let first_error = Mutex::new(None);
    let another = || {
        !stop.load(Ordering::Relaxed)
            && !cancel.load(Ordering::SeqCst)
            && match length {
                RunLength::Count(count) => next.fetch_add(1, Ordering::Relaxed) < count,
                RunLength::Duration(duration) => started.elapsed() < duration,
            }
    };
    let per_worker: Vec<(u64, Vec<Duration>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut retries = 0;
                    let mut latencies = Vec::new();
                    while another() {
                        let begun = Instant::now();
                        match bank::transfer(db, policy) {
                            Ok(committed) => {
                                let outcome = TransferOutcome {
                                    transfer: committed.value,
                                    attempts: committed.attempts,
                                    latency: begun.elapsed(),
                                };
                                retries += u64::from(outcome.attempts - 1);
                                latencies.push(outcome.latency);
                                on_transfer(&outcome);
                            }
                            Err(error) => {
                                let tally = match error {
                                    TransactionError::AmbiguousCommit { .. } => &unknown,
                                    _ => &failed,
                                };
                                tally.fetch_add(1, Ordering::Relaxed);
                                if matches!(error, TransactionError::Failed(_)) {
                                    stop.store(true, Ordering::Relaxed);
                                }
                                first_error
                                    .lock()
                                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                                    .get_or_insert(error);
                            }
                        }
                    }
                    (retries, latencies)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_default())
            .collect()
    });
    let mut summary = TransferSummary {
        elapsed: started.elapsed(),
        failed: failed.into_inner(),
        unknown: unknown.into_inner(),
        ..TransferSummary::default()
    };
    for (retries, latencies) in per_worker {
        summary.retries += retries;
        summary.latencies.extend(latencies);
    }
    summary.done = summary.latencies.len() as u64;
    summary.latencies.sort_unstable();
    TransferReport {
        summary,
        error: first_error
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    }
}
