//! `points` on the [`runner`](super::runner): N random points in chunks, each chunk its own
//! exactly-once transaction ([`crate::bank::points::load_chunk`]), up to
//! [`SERVER_LOADERS`] chunks in flight at once, memory bounded by one chunk per loader whatever
//! N is.

use super::runner::{FirstError, Flow, RunLength, Runner, Tally, WorkerPanicked};
use super::stats::{self, grouped};
use crate::bank::ids::PointIds;
use crate::bank::points::{
    effective_chunk_size, id_block_rows, load_chunk, LoadMethod, SERVER_LOADERS,
};
use crate::db::{Database, Flavor};
use crate::sync::lock;
use diesel::result::Error as DieselError;
use diesel_retry::{RetryPolicy, TransactionError};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a `points` run did.
#[derive(Debug, Clone, PartialEq)]
pub struct PointsReport {
    /// Rows inserted.
    pub rows: u64,
    /// Chunks committed.
    pub chunks: u64,
    /// Retries over all chunks.
    pub retries: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl PointsReport {
    /// Rows per second of wall time.
    pub fn rows_per_second(&self) -> f64 {
        stats::per_second(self.rows, self.elapsed)
    }
}

/// Why a `points` run stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum PointsFailure {
    /// A chunk did not commit (or its commit outcome stayed unknown).
    #[error(transparent)]
    Chunk(#[from] TransactionError<DieselError>),
    /// A loader panicked (a bug); reported rather than any chunk's failure.
    #[error(transparent)]
    Panicked(#[from] WorkerPanicked),
}

/// A `points` run that stopped on a failed chunk: why, and what had committed by then. Chunks
/// are transactions, so every committed row is in the table exactly once and stays there; the
/// failed chunk left nothing (unless its commit outcome is unknown: see `in_doubt`).
#[derive(Debug, thiserror::Error)]
#[error("{cause} ({})", committed_so_far(.committed, *.in_doubt))]
pub struct PointsError {
    /// What committed before the run stopped (`elapsed` included): counted once each, whichever
    /// loader committed them, including chunks that were in flight when the first failed.
    pub committed: PointsReport,
    /// Rows of chunks whose commit outcome stayed unknown ([`TransactionError::AmbiguousCommit`]):
    /// each such chunk is in the table whole or not at all. Not counted in `committed`.
    pub in_doubt: u64,
    /// The first failure.
    pub cause: PointsFailure,
}

/// "2,000 rows in 2 chunks committed before the run stopped, …": what a [`PointsError`] adds to
/// its cause.
fn committed_so_far(committed: &PointsReport, in_doubt: u64) -> String {
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    let mut text = format!(
        "{} row{} in {} chunk{} committed before the run stopped, each exactly once; they stay",
        grouped(committed.rows),
        plural(committed.rows),
        grouped(committed.chunks),
        plural(committed.chunks),
    );
    if in_doubt > 0 {
        text.push_str(&format!(
            "; {} more row{} in chunks whose commit outcome is unknown",
            grouped(in_doubt),
            plural(in_doubt)
        ));
    }
    text
}

/// One loader's figures.
#[derive(Debug, Default)]
struct LoaderTally {
    rows: u64,
    chunks: u64,
    retries: u64,
    /// Rows of chunks whose commit outcome is unknown.
    in_doubt: u64,
}

impl Tally for LoaderTally {
    fn merge(&mut self, other: Self) {
        self.rows += other.rows;
        self.chunks += other.chunks;
        self.retries += other.retries;
        self.in_doubt += other.in_doubt;
    }
}

/// A `points` run: how many rows, in chunks of how many, written how, and what else may stop it.
#[derive(Debug, Clone, Copy)]
pub struct PointsRun<'c> {
    count: u64,
    chunk_size: u64,
    method: Option<LoadMethod>,
    cancel: Option<&'c AtomicBool>,
}

impl<'c> PointsRun<'c> {
    /// `count` random points in chunks of `chunk_size` rows (at most
    /// [`MAX_CHUNK_ROWS`](crate::bank::points::MAX_CHUNK_ROWS), and fewer on CockroachDB: see
    /// [`effective_chunk_size`]), written by the fastest method for the database's flavour.
    pub fn new(count: u64, chunk_size: u64) -> Self {
        PointsRun {
            count,
            chunk_size,
            method: None,
            cancel: None,
        }
    }

    /// Writes the chunks by `method` instead (refused before the first chunk where the database
    /// cannot do it: see [`LoadMethod::supported_on`]).
    pub fn method(self, method: LoadMethod) -> Self {
        PointsRun {
            method: Some(method),
            ..self
        }
    }

    /// Also ends the run early once `cancel` is set (by a signal handler, another thread, …):
    /// no chunk starts after that, while those in flight run to their end (commit or rollback,
    /// each statement bounded by the connection's stall timeout). The report then counts the
    /// chunks that committed, fewer than `count` rows; a caller that needs to know whether the
    /// run was cut short compares `rows` with `count` or reads `cancel`.
    pub fn cancel(self, cancel: &'c AtomicBool) -> Self {
        PointsRun {
            cancel: Some(cancel),
            ..self
        }
    }

    /// Adds the points to `db`, each chunk in its own transaction; `on_chunk` is told the rows
    /// done so far after every commit.
    ///
    /// On a server, up to [`SERVER_LOADERS`] chunks are in flight at once (as many as the pool
    /// has connections), so chunks may commit out of order; the totals `on_chunk` sees still
    /// only grow. Memory holds at most one chunk per loader, whatever `count` is.
    ///
    /// Ids are chosen by the client ([`PointIds`]): that makes every chunk idempotent, so
    /// exactly `count` rows land even when connections die mid-chunk, and a run whose id slot
    /// another run holds moves to a new one rather than failing. Each chunk's ids are one
    /// contiguous range under a shard prefix that turns every [`id_block_rows`]: on
    /// CockroachDB from chunk to chunk, so that the loaders' chunks write to different parts
    /// of the key space (different ranges once the table has split).
    ///
    /// A failed chunk stops the run: no chunk starts after it, those in flight finish, and the
    /// [`PointsError`] tells what committed.
    pub fn run(
        &self,
        db: &Database,
        policy: &RetryPolicy,
        on_chunk: &mut (dyn FnMut(u64) + Send),
    ) -> Result<PointsReport, PointsError> {
        let started = Instant::now();
        let method = self
            .method
            .unwrap_or_else(|| LoadMethod::fastest_for(db.flavor()));
        method
            .supported_on(db.flavor())
            .map_err(|reason| PointsError {
                committed: PointsReport {
                    rows: 0,
                    chunks: 0,
                    retries: 0,
                    elapsed: started.elapsed(),
                },
                in_doubt: 0,
                cause: TransactionError::Failed {
                    attempts: 0,
                    cause: DieselError::QueryBuilderError(reason.into()),
                }
                .into(),
            })?;
        let count = self.count;
        let chunk_size = effective_chunk_size(db.flavor(), self.chunk_size);
        let loaders = match db.flavor() {
            Flavor::Sqlite => 1, // one writer at a time anyway
            Flavor::PostgreSql | Flavor::CockroachDb => SERVER_LOADERS.min(db.pool().max_size()),
        };
        let mut runner = Runner::new(loaders, RunLength::Count(count.div_ceil(chunk_size)));
        if let Some(cancel) = self.cancel {
            runner = runner.cancel(cancel);
        }
        // On CockroachDB each chunk under a shard of its own, turning chunk by chunk: the
        // loaders' chunks in flight write to different parts of the key space (see
        // `crate::bank::ids`).
        let ids = PointIds::for_run(id_block_rows(db.flavor(), chunk_size));
        // The rows committed so far, as `on_chunk` is told them: one lock per chunk, so that
        // the totals it sees only grow.
        let done = Mutex::new((0u64, on_chunk));
        let first_error = FirstError::default();
        let finished = runner.run(|job, tally: &mut LoaderTally| {
            let first = job.index * chunk_size;
            let rows = chunk_size.min(count - first);
            match load_chunk(db, policy, method, &ids, first, rows) {
                Ok(committed) => {
                    tally.retries += u64::from(committed.retries());
                    tally.chunks += 1;
                    tally.rows += committed.value as u64;
                    let mut done = lock(&done);
                    let (rows_done, on_chunk) = &mut *done;
                    *rows_done += committed.value as u64;
                    on_chunk(*rows_done);
                    Flow::Continue
                }
                Err(error) => {
                    if matches!(error, TransactionError::AmbiguousCommit { .. }) {
                        tally.in_doubt += rows;
                    }
                    first_error.record(error);
                    Flow::Stop
                }
            }
        });
        let report = PointsReport {
            rows: finished.tally.rows,
            chunks: finished.tally.chunks,
            retries: finished.tally.retries,
            elapsed: started.elapsed(),
        };
        let cause = match (finished.panicked, first_error.into_inner()) {
            (Some(panicked), _) => PointsFailure::from(panicked),
            (None, Some(error)) => PointsFailure::from(error),
            (None, None) => return Ok(report),
        };
        Err(PointsError {
            committed: report,
            in_doubt: finished.tally.in_doubt,
            cause,
        })
    }
}
