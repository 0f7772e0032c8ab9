//! Many random transfers at once, on the [`runner`](super::runner): a run length in transfers
//! or in time, the figures of the run (done, failed, retries, throughput, latency), and, if
//! asked, the same figures for each second of it ([`TransferTick`]).

use super::interval::{self, Slots, TickTime};
use super::runner::{FirstError, Flow, Job, RunLength, Runner, Tally, WorkerPanicked};
use super::stats::{self, Latencies};
use crate::bank::transfer::{transfer_in_style, Transfer, TransferStyle};
use crate::bank::BankError;
use crate::db::{Database, Flavor};
use diesel_retry::{RetryPolicy, TransactionError};
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

/// The figures of one interval of a transfer run (a tick), as [`TransferRun::run_ticking`]
/// reports them while the run goes on.
#[derive(Debug, Clone, Default)]
pub struct TransferTick {
    /// Time since the run started, at the end of the interval.
    pub elapsed: Duration,
    /// The interval's length.
    pub interval: Duration,
    /// Latencies of the transfers that committed in the interval.
    pub latencies: Latencies,
    /// Retries of the transfers that committed in the interval.
    pub retries: u64,
    /// Transfers that did not commit, or whose outcome stayed unknown, in the interval.
    pub errors: u64,
    /// Transfers committed since the run started, this interval's included.
    pub done_so_far: u64,
    /// Transfers that did not commit or whose outcome stayed unknown since the run started,
    /// this interval's included.
    pub errors_so_far: u64,
    /// Whether this is the last tick, closing the run's last (usually partial) interval.
    pub last: bool,
}

impl TransferTick {
    /// Transfers committed in the interval.
    pub fn done(&self) -> u64 {
        self.latencies.count()
    }

    /// Committed transfers per second of the interval.
    pub fn per_second(&self) -> f64 {
        stats::per_second(self.done(), self.interval)
    }

    /// Committed transfers per second since the run started.
    pub fn per_second_so_far(&self) -> f64 {
        stats::per_second(self.done_so_far, self.elapsed)
    }

    /// Retries per second of the interval.
    pub fn retries_per_second(&self) -> f64 {
        stats::per_second(self.retries, self.interval)
    }

    /// Whether the tick is shown to people (printed, plotted): any but a last one too short to
    /// have a meaningful rate ([`SHORTEST_SHOWN_LAST`](super::interval::SHORTEST_SHOWN_LAST)).
    pub fn shown(&self) -> bool {
        TickTime {
            elapsed: self.elapsed,
            interval: self.interval,
            last: self.last,
        }
        .shown()
    }
}

/// What one worker recorded in the current interval.
#[derive(Debug, Default)]
struct IntervalFigures {
    latencies: Latencies,
    retries: u64,
    errors: u64,
}

impl Tally for IntervalFigures {
    fn merge(&mut self, other: Self) {
        self.latencies.merge(&other.latencies);
        self.retries += other.retries;
        self.errors += other.errors;
    }
}

/// How a transfer run ended.
#[derive(Debug)]
pub struct TransferReport {
    /// What was done.
    pub summary: TransferSummary,
    /// The first failure, if any. A transient one (retries exhausted, an outcome that could not
    /// be resolved) is counted and the run goes on; any other stops the run — no connection
    /// within the pool's wait included, which means the server has been unreachable for a whole
    /// connect timeout.
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

    /// The style its transfers are made in on a database of `flavor`.
    pub fn style_on(&self, flavor: Flavor) -> TransferStyle {
        self.style
            .unwrap_or_else(|| TransferStyle::fastest_for(flavor))
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
        self.run_recording(db, policy, on_transfer, None)
    }

    /// [`run`](Self::run), and `on_tick` called with the figures of each `every` of it (on a
    /// thread of its own), then once more with the run's last interval as soon as the workers
    /// are done ([`TransferTick::last`]): every committed transfer is in exactly one tick, so
    /// the ticks' counts add up to the report's `done`. Each worker records into its own slot,
    /// which the ticker empties once per tick: the workers never wait on each other.
    pub fn run_ticking(
        &self,
        db: &Database,
        policy: &RetryPolicy,
        on_transfer: &(dyn Fn(&TransferOutcome) + Sync),
        every: Duration,
        on_tick: &mut (dyn FnMut(&TransferTick) + Send),
    ) -> TransferReport {
        let slots = Slots::<IntervalFigures>::new(self.workers);
        let (mut done_so_far, mut errors_so_far) = (0, 0);
        let tick = |time: TickTime| {
            let figures = slots.take();
            done_so_far += figures.latencies.count();
            errors_so_far += figures.errors;
            on_tick(&TransferTick {
                elapsed: time.elapsed,
                interval: time.interval,
                latencies: figures.latencies,
                retries: figures.retries,
                errors: figures.errors,
                done_so_far,
                errors_so_far,
                last: time.last,
            });
        };
        interval::ticking(every, Instant::now(), tick, || {
            self.run_recording(db, policy, on_transfer, Some(&slots))
        })
    }

    /// Runs the transfers, recording each into its worker's slot in `slots` too, if given.
    fn run_recording(
        &self,
        db: &Database,
        policy: &RetryPolicy,
        on_transfer: &(dyn Fn(&TransferOutcome) + Sync),
        slots: Option<&Slots<IntervalFigures>>,
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
        let style = self.style_on(db.flavor());
        let first_error = FirstError::default();
        let in_slot = |job: Job, record: &dyn Fn(&mut IntervalFigures)| {
            if let Some(slots) = slots {
                slots.record(job.worker, record);
            }
        };
        let finished = runner.run(|job, summary: &mut TransferSummary| {
            let begun = Instant::now();
            match transfer_in_style(db, policy, style) {
                Ok(committed) => {
                    let outcome = TransferOutcome {
                        transfer: committed.value,
                        attempts: committed.attempts,
                        latency: begun.elapsed(),
                    };
                    let retries = u64::from(outcome.attempts - 1);
                    summary.done += 1;
                    summary.retries += retries;
                    summary.latencies.record(outcome.latency);
                    in_slot(job, &|figures| {
                        figures.latencies.record(outcome.latency);
                        figures.retries += retries;
                    });
                    on_transfer(&outcome);
                    Flow::Continue
                }
                Err(error) => {
                    in_slot(job, &|figures| figures.errors += 1);
                    let flow = match error {
                        TransactionError::AmbiguousCommit { .. } => {
                            summary.unknown += 1;
                            Flow::Continue
                        }
                        // No connection within the pool's wait (the connect timeout, or
                        // what was left of a timed run): the server has been unreachable for
                        // a whole connect timeout — a restart of a few seconds is ridden out
                        // within it — and every next transfer would wait as long again.
                        TransactionError::Failed { .. } | TransactionError::Connection { .. } => {
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
