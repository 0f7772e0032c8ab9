//! Many random transfers at once, on the [`runner`](super::runner): a run length in transfers
//! or in time, and the figures of the run (done, failed, retries, throughput, latency).

use super::runner::{FirstError, Flow, RunLength, Runner, Tally, WorkerPanicked};
use super::stats::{self, Latencies};
use crate::bank::{self, BankError, Transfer, TransferStyle};
use crate::db::Database;
use crate::retry::{RetryPolicy, TransactionError};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

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
    /// Latency of every committed transfer.
    pub latencies: Latencies,
}

impl TransferSummary {
    /// Committed transfers per second of wall time.
    pub fn per_second(&self) -> f64 {
        stats::per_second(self.done, self.elapsed)
    }

    /// The latency below which `quantile` (0..=1) of the transfers fall.
    pub fn latency_quantile(&self, quantile: f64) -> Option<Duration> {
        self.latencies.quantile(quantile)
    }
}

impl Tally for TransferSummary {
    fn merge(&mut self, other: Self) {
        self.done += other.done;
        self.failed += other.failed;
        self.unknown += other.unknown;
        self.retries += other.retries;
        self.latencies.merge(&other.latencies);
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
    /// Workers that panicked (a bug): the run stopped, and the transfer each was making may or
    /// may not have committed.
    pub panicked: Option<WorkerPanicked>,
}

/// How long after the end of a timed run its transfers may still start a retry.
pub const RETRY_GRACE: Duration = Duration::from_secs(2);

/// A run of random transfers: how long, on how many workers, and what else may stop it.
#[derive(Debug, Clone, Copy)]
pub struct TransferRun<'c> {
    length: RunLength,
    workers: u32,
    style: Option<TransferStyle>,
    cancel: Option<&'c AtomicBool>,
}

impl<'c> TransferRun<'c> {
    /// `length` (a count of transfers, or a time) on `workers` threads sharing the pool.
    pub fn new(length: impl Into<RunLength>, workers: u32) -> Self {
        TransferRun {
            length: length.into(),
            workers,
            style: None,
            cancel: None,
        }
    }

    /// Makes each transfer in `style` instead of the fastest one for the database
    /// ([`TransferStyle::fastest_for`]).
    pub fn style(self, style: TransferStyle) -> Self {
        TransferRun {
            style: Some(style),
            ..self
        }
    }

    /// How long the run goes on.
    pub fn length(&self) -> RunLength {
        self.length
    }

    /// How many workers it runs on.
    pub fn workers(&self) -> u32 {
        self.workers
    }

    /// Also ends the run early once `cancel` is set (by a signal handler, another thread, …):
    /// no transfer starts after that, while those in flight run to their end — commit, rollback
    /// or retries exhausted, each statement bounded by the connection's stall timeout — and are
    /// counted. The report is then that of the shorter run; a caller that needs to know whether
    /// it was cut short reads `cancel`.
    pub fn cancel(self, cancel: &'c AtomicBool) -> Self {
        TransferRun {
            cancel: Some(cancel),
            ..self
        }
    }

    /// Runs the transfers on `db`'s pool, calling `on_transfer` after each commit (on the
    /// worker that made it).
    pub fn run(
        &self,
        db: &Database,
        policy: &RetryPolicy,
        on_transfer: &(dyn Fn(&TransferOutcome) + Sync),
    ) -> TransferReport {
        // A timed run ends on time: no transfer starts a retry later than RETRY_GRACE after it
        // (a conflict met at the very end is still retried; a transfer stuck in retries is not).
        let policy = &match self.length {
            RunLength::Duration(duration) => {
                let end = Instant::now() + duration + RETRY_GRACE;
                RetryPolicy {
                    deadline: Some(policy.deadline.map_or(end, |own| own.min(end))),
                    ..*policy
                }
            }
            RunLength::Count(_) => *policy,
        };
        let mut runner = Runner::new(self.workers, self.length);
        if let Some(cancel) = self.cancel {
            runner = runner.cancel(cancel);
        }
        let style = self
            .style
            .unwrap_or_else(|| TransferStyle::fastest_for(db.flavor()));
        let first_error = FirstError::default();
        let finished = runner.run(|_, summary: &mut TransferSummary| {
            let begun = Instant::now();
            match bank::transfer_in_style(db, policy, style) {
                Ok(committed) => {
                    let outcome = TransferOutcome {
                        transfer: committed.value,
                        attempts: committed.attempts,
                        latency: begun.elapsed(),
                    };
                    summary.done += 1;
                    summary.retries += u64::from(outcome.attempts - 1);
                    summary.latencies.record(outcome.latency);
                    on_transfer(&outcome);
                    Flow::Continue
                }
                Err(error) => {
                    let flow = match error {
                        TransactionError::AmbiguousCommit { .. } => {
                            summary.unknown += 1;
                            Flow::Continue
                        }
                        TransactionError::Failed(_) => {
                            summary.failed += 1;
                            Flow::Stop
                        }
                        _ => {
                            summary.failed += 1;
                            Flow::Continue
                        }
                    };
                    first_error.record(error);
                    flow
                }
            }
        });
        TransferReport {
            summary: TransferSummary {
                elapsed: finished.elapsed,
                ..finished.tally
            },
            error: first_error.into_inner(),
            panicked: finished.panicked,
        }
    }
}
