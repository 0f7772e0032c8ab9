//! The tutorial's "break up large transactions" example: N random points loaded in chunks, each
//! chunk its own retried transaction, memory bounded by one chunk whatever N is.

use crate::db::{Database, DbConnection, Flavor};
use crate::models::Point;
use crate::retry::{run_transaction_exactly_once, Committed, RetryPolicy, TransactionError};
use crate::schema::points;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use rand::Rng;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tutorial's chunk size.
pub const DEFAULT_CHUNK_SIZE: u64 = 1000;
/// Coordinates are drawn from `[0, COORDINATE_SPACE)`.
pub const COORDINATE_SPACE: f64 = 1024.0;
/// Most points one run may add: the row index lives in the low 32 bits of each id.
pub const MAX_POINTS_PER_RUN: u64 = 1 << 32;
/// Bind parameters per statement on PostgreSQL/CockroachDB (the protocol's 16-bit count).
const PG_MAX_BIND_PARAMS: usize = 65_535;
/// Bind parameters per statement on SQLite (`SQLITE_MAX_VARIABLE_NUMBER` since 3.32).
const SQLITE_MAX_BIND_PARAMS: usize = 32_766;
/// Columns bound per point row.
const COLUMNS_PER_POINT: usize = 4;
/// A run whose id slot collides with another run's draws a new slot at most this often.
const SLOT_REDRAWS: u32 = 8;
/// Largest chunk sent to CockroachDB in one transaction: about 100 bytes of intents per row keeps
/// a chunk near 0.25 MiB, far inside `kv.transaction.max_intents_bytes` (4 MiB,
/// cockroachdb/cockroach `pkg/kv/kvclient/kvcoord/txn_interceptor_pipeliner.go`), and a 40001
/// replays one chunk. CockroachDB's docs advise batch sizes found by experiment and no bulk
/// INSERT in one explicit transaction (`performance-best-practices-overview`).
pub const COCKROACH_MAX_CHUNK_ROWS: u64 = 2_500;

/// Largest chunk, in rows, on any database: what `--chunk-size` accepts and what
/// [`add_points_with`] clamps to, so memory stays bounded whatever the caller asks. A chunk is
/// held as `Point`s (32 bytes a row: 3.2 MB) plus the statements or COPY data being sent, and up
/// to [`SERVER_LOADERS`] chunks are in flight: `points 800000 --chunk-size 100000` on PostgreSQL
/// peaked at 38 MiB RSS with COPY and 62 MiB with INSERT (14–16 MiB at 1,000 rows). Ten times the
/// largest benchmarked chunk (10,000 rows, where COPY is already 1.9× faster than at 1,000;
/// README, Performance), and a retry replays at most this many rows.
pub const MAX_CHUNK_ROWS: u64 = 100_000;

/// How a chunk is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMethod {
    /// Binary `COPY points FROM STDIN` (PostgreSQL/CockroachDB).
    Copy,
    /// Multi-row INSERTs sized to the bind-parameter limit (one prepared INSERT per row on
    /// SQLite, where diesel cannot batch).
    Insert,
}

impl LoadMethod {
    /// The fastest method that keeps chunks exactly-once on `flavor`: COPY on PostgreSQL;
    /// INSERT on SQLite and CockroachDB (see [`LoadMethod::supported_on`]).
    pub fn fastest_for(flavor: Flavor) -> LoadMethod {
        match flavor {
            Flavor::PostgreSql => LoadMethod::Copy,
            Flavor::CockroachDb | Flavor::Sqlite => LoadMethod::Insert,
        }
    }
}

impl LoadMethod {
    /// Whether this method can load points on `flavor`; if not, why and what to use instead.
    ///
    /// COPY is refused on SQLite (it has none) and on CockroachDB: diesel sends
    /// `COPY … FROM STDIN` through the extended query protocol, and CockroachDB takes COPY only
    /// through the simple protocol ("CopyFrom not supported in extended protocol mode",
    /// cockroachdb/cockroach `pkg/sql/pgwire/conn.go`).
    pub fn supported_on(self, flavor: Flavor) -> Result<(), String> {
        match (self, flavor) {
            (LoadMethod::Copy, Flavor::Sqlite) => Err(
                "points --method copy needs PostgreSQL; SQLite has no COPY (use --method insert, the default there)".into(),
            ),
            (LoadMethod::Copy, Flavor::CockroachDb) => Err(
                "points --method copy does not work on CockroachDB: it takes COPY only through the simple query protocol and diesel sends it through the extended one (use --method insert, the default there)".into(),
            ),
            _ => Ok(()),
        }
    }
}

/// The chunk size actually used for `requested` on `flavor`: at least 1 and at most
/// [`MAX_CHUNK_ROWS`], or [`COCKROACH_MAX_CHUNK_ROWS`] on CockroachDB.
pub fn effective_chunk_size(flavor: Flavor, requested: u64) -> u64 {
    match flavor {
        Flavor::CockroachDb => requested.clamp(1, COCKROACH_MAX_CHUNK_ROWS),
        Flavor::PostgreSql | Flavor::Sqlite => requested.clamp(1, MAX_CHUNK_ROWS),
    }
}

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
        self.rows as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
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
    pub cause: TransactionError<DieselError>,
}

/// [`add_points_with`] the fastest method for the database's flavour.
pub fn add_points(
    db: &Database,
    policy: &RetryPolicy,
    count: u64,
    chunk_size: u64,
    on_chunk: &mut (dyn FnMut(u64) + Send),
) -> Result<PointsReport, PointsError> {
    let method = LoadMethod::fastest_for(db.flavor());
    add_points_with(db, policy, count, chunk_size, method, on_chunk)
}

/// Adds `count` random points in chunks of `chunk_size` rows (at most [`MAX_CHUNK_ROWS`], and
/// fewer on CockroachDB: see [`effective_chunk_size`]), each chunk in its own transaction, written by `method`;
/// `on_chunk` is told the rows done so far after every commit.
///
/// On a server, up to [`SERVER_LOADERS`] chunks are in flight at once (as many as the pool has
/// connections), so chunks may commit out of order; the totals `on_chunk` sees still
/// only grow. Memory holds at most one chunk per loader, whatever `count` is.
///
/// Ids are chosen by the client: a random 30-bit slot per run in the high bits, the row's index
/// in the low 32. That makes every chunk idempotent: a chunk whose commit outcome is unknown is
/// looked up by its ids and retried only if it is absent, so exactly `count` rows land even
/// when connections die mid-chunk. If another run holds the same slot (a unique violation), a
/// new slot is drawn and the chunk runs again, so a collision never fails the command.
///
/// A failed chunk stops the run: no chunk starts after it, those in flight finish, and the
/// [`PointsError`] tells what committed. [`add_points_cancellable`] can also be stopped early.
pub fn add_points_with(
    db: &Database,
    policy: &RetryPolicy,
    count: u64,
    chunk_size: u64,
    method: LoadMethod,
    on_chunk: &mut (dyn FnMut(u64) + Send),
) -> Result<PointsReport, PointsError> {
    let never = AtomicBool::new(false);
    add_points_cancellable(db, policy, count, chunk_size, method, &never, on_chunk)
}

/// [`add_points_with`] that also ends early once `cancel` is set (by a signal handler, another
/// thread, …): no chunk starts after that, while those in flight run to their end (commit or
/// rollback, each statement bounded by the connection's stall timeout). The report then counts
/// the chunks that committed, fewer than `count` rows; a caller that needs to know whether the
/// run was cut short compares `rows` with `count` or reads `cancel`.
pub fn add_points_cancellable(
    db: &Database,
    policy: &RetryPolicy,
    count: u64,
    chunk_size: u64,
    method: LoadMethod,
    cancel: &AtomicBool,
    on_chunk: &mut (dyn FnMut(u64) + Send),
) -> Result<PointsReport, PointsError> {
    let started = Instant::now();
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
            cause: TransactionError::Failed(DieselError::QueryBuilderError(reason.into())),
        })?;
    let chunk_size = effective_chunk_size(db.flavor(), chunk_size);
    let loaders = match db.flavor() {
        Flavor::Sqlite => 1, // one writer at a time anyway
        Flavor::PostgreSql | Flavor::CockroachDb => SERVER_LOADERS.min(db.pool().max_size()),
    };
    let slot = AtomicI64::new(draw_slot());
    let next_chunk = AtomicU64::new(0);
    let progress = Mutex::new(Progress {
        report: PointsReport {
            rows: 0,
            chunks: 0,
            retries: 0,
            elapsed: Duration::ZERO,
        },
        on_chunk,
        error: None,
        in_doubt: 0,
    });
    std::thread::scope(|scope| {
        for _ in 0..loaders {
            scope.spawn(|| loop {
                let first = next_chunk
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_mul(chunk_size);
                if first >= count
                    || cancel.load(Ordering::SeqCst)
                    || lock(&progress).error.is_some()
                {
                    break;
                }
                let rows = chunk_size.min(count - first);
                let loaded = load_chunk(db, policy, method, &slot, first, rows);
                let mut progress = lock(&progress);
                match loaded {
                    Ok(committed) => {
                        let progress = &mut *progress;
                        progress.report.retries += u64::from(committed.retries());
                        progress.report.chunks += 1;
                        progress.report.rows += committed.value as u64;
                        (progress.on_chunk)(progress.report.rows);
                    }
                    Err(error) => {
                        if matches!(error, TransactionError::AmbiguousCommit { .. }) {
                            progress.in_doubt += rows;
                        }
                        progress.error.get_or_insert(error);
                        break;
                    }
                }
            });
        }
    });
    let progress = progress.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut report = progress.report;
    report.elapsed = started.elapsed();
    match progress.error {
        Some(cause) => Err(PointsError {
            committed: report,
            in_doubt: progress.in_doubt,
            cause,
        }),
        None => Ok(report),
    }
}

/// "2000 rows in 2 chunks committed before the run stopped, …": what a [`PointsError`] adds to
/// its cause.
fn committed_so_far(committed: &PointsReport, in_doubt: u64) -> String {
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    let mut text = format!(
        "{} row{} in {} chunk{} committed before the run stopped, each exactly once; they stay",
        committed.rows,
        plural(committed.rows),
        committed.chunks,
        plural(committed.chunks),
    );
    if in_doubt > 0 {
        text.push_str(&format!(
            "; {in_doubt} more row{} in chunks whose commit outcome is unknown",
            plural(in_doubt)
        ));
    }
    text
}

/// Chunks a server is sent at once: while one chunk's COMMIT waits for the disk, the others
/// stream. Measured here, 4 beat 2 by about 15% at 1,000-row chunks (see README, Performance).
pub const SERVER_LOADERS: u32 = 4;

/// What the loaders share.
struct Progress<'a> {
    report: PointsReport,
    on_chunk: &'a mut (dyn FnMut(u64) + Send),
    /// The first failure.
    error: Option<TransactionError<DieselError>>,
    /// Rows of chunks whose commit outcome is unknown.
    in_doubt: u64,
}

fn lock<'m, T>(mutex: &'m Mutex<T>) -> std::sync::MutexGuard<'m, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Loads rows `first..first + rows` exactly once, drawing a new id slot if another run holds
/// the current one.
fn load_chunk(
    db: &Database,
    policy: &RetryPolicy,
    method: LoadMethod,
    slot: &AtomicI64,
    first: u64,
    rows: u64,
) -> Result<Committed<usize>, TransactionError<DieselError>> {
    let mut redraws = 0;
    loop {
        let chunk = random_points(slot.load(Ordering::Relaxed), first, rows);
        let inserted = run_transaction_exactly_once(
            db,
            policy,
            |conn| write_points(conn, &chunk, method),
            |conn| find_chunk(conn, &chunk),
        );
        match inserted {
            Err(TransactionError::Failed(DieselError::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                _,
            ))) if redraws < SLOT_REDRAWS => {
                redraws += 1;
                slot.store(draw_slot(), Ordering::Relaxed);
            }
            other => return other,
        }
    }
}

/// Writes `chunk` by `method` in the caller's transaction; returns the rows written.
pub fn write_points(
    conn: &mut DbConnection,
    chunk: &[Point],
    method: LoadMethod,
) -> Result<usize, DieselError> {
    match (method, &mut *conn) {
        (LoadMethod::Copy, DbConnection::Postgresql(pg)) => diesel::copy_from(points::table)
            .from_insertable(chunk)
            .execute(pg),
        (LoadMethod::Copy, DbConnection::Sqlite(_)) => Err(DieselError::QueryBuilderError(
            "COPY needs PostgreSQL or CockroachDB; use the INSERT method on SQLite".into(),
        )),
        (LoadMethod::Insert, _) => insert_points(conn, chunk),
    }
}

/// Inserts `chunk` with as few statements as the backend's bind-parameter limit allows: a chunk
/// larger than one statement can carry is split, not refused.
pub fn insert_points(conn: &mut DbConnection, chunk: &[Point]) -> Result<usize, DieselError> {
    let max_params = match conn {
        DbConnection::Postgresql(_) => PG_MAX_BIND_PARAMS,
        DbConnection::Sqlite(_) => SQLITE_MAX_BIND_PARAMS,
    };
    let mut inserted = 0;
    for rows in chunk.chunks(max_params / COLUMNS_PER_POINT) {
        let insert = diesel::insert_into(points::table).values(rows);
        inserted += crate::on_concrete_connection!(&mut *conn, c => insert.execute(c))?;
    }
    Ok(inserted)
}

/// The chunk probe: the number of rows of `chunk` that are in the table, if all of them are.
fn find_chunk(conn: &mut DbConnection, chunk: &[Point]) -> Result<Option<usize>, DieselError> {
    let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else {
        return Ok(Some(0));
    };
    let found: i64 = points::table
        .filter(points::id.between(first.id, last.id))
        .count()
        .get_result(conn)?;
    Ok((found == chunk.len() as i64).then_some(chunk.len()))
}

fn draw_slot() -> i64 {
    rand::rng().random_range(1..(1i64 << 30))
}

fn random_points(slot: i64, first: u64, rows: u64) -> Vec<Point> {
    let mut rng = rand::rng();
    (first..first + rows)
        .map(|index| Point {
            id: (slot << 32) | index as i64,
            x: rng.random_range(0.0..COORDINATE_SPACE),
            y: rng.random_range(0.0..COORDINATE_SPACE),
            z: rng.random_range(0.0..COORDINATE_SPACE),
        })
        .collect()
}
