//! The tutorial's "break up large transactions" example: N random points loaded in chunks, each
//! chunk its own retried transaction, memory bounded by one chunk whatever N is.

use crate::db::{Database, DbConnection};
use crate::models::Point;
use crate::retry::{run_transaction_exactly_once, RetryPolicy, TransactionError};
use crate::schema::points;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use rand::Rng;
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

/// Adds `count` random points in chunks of `chunk_size` rows, each chunk in its own
/// transaction; `on_chunk` is told the rows done so far after every commit.
///
/// Ids are chosen by the client: a random 30-bit slot per run in the high bits, the row's index
/// in the low 32. That makes every chunk idempotent: a chunk whose commit outcome is unknown is
/// looked up by its ids and retried only if it is absent, so exactly `count` rows land even
/// when connections die mid-chunk. If another run holds the same slot (a unique violation), a
/// new slot is drawn and the chunk runs again, so a collision never fails the command.
pub fn add_points(
    db: &Database,
    policy: &RetryPolicy,
    count: u64,
    chunk_size: u64,
    on_chunk: &mut dyn FnMut(u64),
) -> Result<PointsReport, TransactionError<DieselError>> {
    let started = Instant::now();
    let mut slot = draw_slot();
    let mut report = PointsReport {
        rows: 0,
        chunks: 0,
        retries: 0,
        elapsed: Duration::ZERO,
    };
    let chunk_size = chunk_size.max(1);
    let mut first = 0;
    while first < count {
        let rows = chunk_size.min(count - first);
        let mut redraws = 0;
        let committed = loop {
            let chunk = random_points(slot, first, rows);
            let inserted = run_transaction_exactly_once(
                db,
                policy,
                |conn| insert_points(conn, &chunk),
                |conn| find_chunk(conn, &chunk),
            );
            match inserted {
                Err(TransactionError::Failed(DieselError::DatabaseError(
                    DatabaseErrorKind::UniqueViolation,
                    _,
                ))) if redraws < SLOT_REDRAWS => {
                    redraws += 1;
                    slot = draw_slot();
                }
                other => break other?,
            }
        };
        report.retries += u64::from(committed.retries());
        report.chunks += 1;
        report.rows += committed.value as u64;
        first += rows;
        on_chunk(report.rows);
    }
    report.elapsed = started.elapsed();
    Ok(report)
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
