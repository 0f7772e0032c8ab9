//! The tutorial's "break up large transactions" example, one chunk at a time: a chunk of random
//! points is its own retried transaction, exactly once under its client-chosen ids, memory
//! bounded by one chunk. The run of many chunks at once is [`crate::workload::points`].

pub use super::ids::MAX_POINTS_PER_RUN;
use super::ids::{PointIds, MAX_SLOT_REDRAWS};
use crate::db::connection::on_concrete_connection;
use crate::db::{Database, DbConnection, Flavor};
use crate::models::Point;
use crate::schema::points;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_retry::{
    run_single_statement_exactly_once, run_transaction_exactly_once, Committed, RetryPolicy,
    TransactionError,
};
use rand::Rng;

/// The tutorial's chunk size.
pub const DEFAULT_CHUNK_SIZE: u64 = 1000;
/// Coordinates are drawn from `[0, COORDINATE_SPACE)`.
pub const COORDINATE_SPACE: f64 = 1024.0;
/// Bind parameters per statement on PostgreSQL/CockroachDB (the protocol's 16-bit count).
const PG_MAX_BIND_PARAMS: usize = 65_535;
/// Bind parameters per statement on SQLite (`SQLITE_MAX_VARIABLE_NUMBER` since 3.32).
const SQLITE_MAX_BIND_PARAMS: usize = 32_766;
/// Columns bound per point row.
const COLUMNS_PER_POINT: usize = 4;
/// Largest chunk sent to CockroachDB in one transaction: about 100 bytes of intents per row keeps
/// a chunk near 0.25 MiB, far inside `kv.transaction.max_intents_bytes` (4 MiB,
/// cockroachdb/cockroach `pkg/kv/kvclient/kvcoord/txn_interceptor_pipeliner.go`), and a 40001
/// replays one chunk. CockroachDB's docs advise batch sizes found by experiment and no bulk
/// INSERT in one explicit transaction (`performance-best-practices-overview`).
pub const COCKROACH_MAX_CHUNK_ROWS: u64 = 2_500;

/// Largest chunk, in rows, on any database: what `--chunk-size` accepts and what a `points`
/// run clamps to, so memory stays bounded whatever the caller asks. A chunk is held as `Point`s
/// (32 bytes a row: 3.2 MB) plus the statements or COPY data being sent, and up to
/// [`SERVER_LOADERS`] chunks are in flight: `points 800000 --chunk-size 100000` on PostgreSQL
/// peaked at 38 MiB RSS with COPY and 62 MiB with INSERT (14–16 MiB at 1,000 rows). Ten times the
/// largest benchmarked chunk (10,000 rows, where COPY is already 1.9× faster than at 1,000;
/// docs/performance.md), and a retry replays at most this many rows.
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

/// Rows of a `points` run's block of ids on `flavor` ([`PointIds`]), its chunks being
/// `chunk_size` rows: on CockroachDB one chunk, so that consecutive chunks — those the loaders
/// send at once — write to different parts of the key space; elsewhere the whole run, whose ids
/// then only grow and keep the B-tree growing at its right edge (see [`crate::bank::ids`]).
pub fn id_block_rows(flavor: Flavor, chunk_size: u64) -> u64 {
    match flavor {
        Flavor::CockroachDb => chunk_size.max(1),
        Flavor::PostgreSql | Flavor::Sqlite => MAX_POINTS_PER_RUN,
    }
}

/// Chunks a server is sent at once: while one chunk's COMMIT waits for the disk, the others
/// stream. Measured here, 4 beat 2 by about 15% at 1,000-row chunks (see docs/performance.md).
pub const SERVER_LOADERS: u32 = 4;

/// Loads rows `first..first + rows` of a run exactly once, in one transaction written by
/// `method` (on CockroachDB one INSERT statement, its own implicit transaction), with ids from `ids`: a chunk whose commit outcome is unknown is looked up by its ids
/// and retried only if it is absent. If another run holds the current slot (a unique
/// violation), a new slot is drawn and the chunk runs again, at most [`MAX_SLOT_REDRAWS`] times.
/// Returns the rows written.
pub fn load_chunk(
    db: &Database,
    policy: &RetryPolicy,
    method: LoadMethod,
    ids: &PointIds,
    first: u64,
    rows: u64,
) -> Result<Committed<usize>, TransactionError<DieselError>> {
    let mut redraws = 0;
    // On CockroachDB a chunk is one multi-row INSERT, sent as its own implicit transaction: its
    // "Bulk-insert best practices" say to batch rows in multi-row INSERTs and "Do not include
    // bulk INSERT statements within an explicit transaction" (cockroachdb/docs
    // `performance-best-practices-overview`). One round trip instead of five (BEGIN,
    // SAVEPOINT, INSERT, RELEASE, COMMIT), retried by the server itself on a conflict, and
    // still exactly once: an unknown outcome is settled by the same probe.
    let one_statement = db.flavor() == Flavor::CockroachDb
        && method == LoadMethod::Insert
        && rows <= (PG_MAX_BIND_PARAMS / COLUMNS_PER_POINT) as u64;
    loop {
        let chunk = random_points(ids, first, rows);
        let write = |conn: &mut DbConnection| write_points(conn, &chunk, method);
        let probe = |conn: &mut DbConnection| find_chunk(conn, &chunk);
        let inserted = if one_statement {
            run_single_statement_exactly_once(db, policy, write, probe)
        } else {
            run_transaction_exactly_once(db, policy, write, probe)
        };
        match inserted {
            Err(TransactionError::Failed {
                cause: DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _),
                ..
            }) if redraws < MAX_SLOT_REDRAWS => {
                redraws += 1;
                ids.redraw();
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
        inserted += on_concrete_connection!(&mut *conn, c => insert.execute(c))?;
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

/// A chunk of `rows` random points, rows `first..first + rows` of the run, under `ids`' current
/// slot and the shard of the chunk: one contiguous range of ids, which [`find_chunk`] counts.
fn random_points(ids: &PointIds, first: u64, rows: u64) -> Vec<Point> {
    let mut rng = rand::rng();
    ids.ids(first, rows)
        .map(|id| Point {
            id,
            x: rng.random_range(0.0..COORDINATE_SPACE),
            y: rng.random_range(0.0..COORDINATE_SPACE),
            z: rng.random_range(0.0..COORDINATE_SPACE),
        })
        .collect()
}
