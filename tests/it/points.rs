//! `PointsRun` against real databases (a SQLite file and the harness's PostgreSQL): row and
//! chunk counts, coordinates, ids, the progress callback, and chunks larger than one
//! statement's bind-parameter limit.
//!
//! Each check runs on both backends through `on_sqlite_and_postgresql!`, which turns each
//! `fn check(target: Target)` into `check::sqlite` and `check::postgresql` tests. Figures are
//! read by SQL outside the library: psql on PostgreSQL, a plain diesel `SqliteConnection` on
//! SQLite.

use crate::support::target::Target;
use crate::support::{grouped, not_run_on_cockroachdb};
use diesel_retry::{RetryPolicy, TransactionError};
use roachbank::bank::points::{LoadMethod, COORDINATE_SPACE};
use roachbank::db::Database;
use roachbank::workload::points::{PointsFailure, PointsReport, PointsRun};
use std::sync::atomic::{AtomicBool, Ordering};

on_sqlite_and_postgresql!(
    add_points_lands_exactly_n_rows_in_ceil_n_over_chunk_chunks,
    on_chunk_sees_strictly_increasing_totals_ending_at_n,
    a_chunk_beyond_the_bind_parameter_limit_is_split_not_refused,
    two_runs_add_up_in_distinct_id_slots,
    a_run_on_postgresql_or_sqlite_is_one_contiguous_range_of_ids,
    a_chunk_size_above_100000_rows_is_clamped_to_100000,
    a_cancelled_run_starts_no_chunk_after_it_and_reports_what_committed,
    a_failed_chunk_stops_the_run_and_the_error_tells_what_committed,
);

/// Adds `n` points in chunks of `chunk`; returns the report and the totals `on_chunk` saw.
fn points(db: &Database, n: u64, chunk: u64) -> (PointsReport, Vec<u64>) {
    let mut seen = Vec::new();
    let report = PointsRun::new(n, chunk)
        .run(db, &RetryPolicy::default(), &mut |done| seen.push(done))
        .unwrap_or_else(|err| panic!("PointsRun::new({n}, {chunk}) failed: {err} ({err:?})"));
    (report, seen)
}

/// The table holds exactly `n` rows, with unique ids and every coordinate in [0, 1024).
fn assert_points_table(target: &Target, n: u64) {
    let n = n as i64;
    assert_eq!(target.count("SELECT COUNT(*) FROM points"), n, "rows");
    assert_eq!(
        target.count("SELECT COUNT(DISTINCT id) FROM points"),
        n,
        "distinct ids"
    );
    for column in ["x", "y", "z"] {
        let min = target.float(&format!("SELECT MIN({column}) FROM points"));
        let max = target.float(&format!("SELECT MAX({column}) FROM points"));
        if n == 0 {
            assert_eq!((min, max), (None, None));
            continue;
        }
        let (min, max) = (min.unwrap(), max.unwrap());
        assert!(
            (0.0..COORDINATE_SPACE).contains(&min) && (0.0..COORDINATE_SPACE).contains(&max),
            "{column} must lie in [0, {COORDINATE_SPACE}): min {min}, max {max}"
        );
    }
}

fn add_points_lands_exactly_n_rows_in_ceil_n_over_chunk_chunks(target: Target) {
    let db = target.open(1);
    for (n, chunk) in [(2500, 1000), (1, 1000), (1000, 1000), (7, 3), (0, 1000)] {
        target.execute("DELETE FROM points");
        let (report, _) = points(&db, n, chunk);
        assert_eq!(report.rows, n, "report.rows for ({n}, {chunk})");
        assert_eq!(
            report.chunks,
            n.div_ceil(chunk),
            "report.chunks for ({n}, {chunk})"
        );
        assert_points_table(&target, n);
    }
}

fn on_chunk_sees_strictly_increasing_totals_ending_at_n(target: Target) {
    let db = target.open(1);
    for (n, chunk, expected) in [
        (2500, 1000, vec![1000, 2000, 2500]),
        (7, 3, vec![3, 6, 7]),
        (5, 5, vec![5]),
    ] {
        let (_, seen) = points(&db, n, chunk);
        assert!(
            seen.windows(2).all(|pair| pair[0] < pair[1]),
            "totals must strictly increase: {seen:?}"
        );
        assert_eq!(seen.last(), Some(&n), "the last total is n: {seen:?}");
        assert_eq!(seen, expected, "({n}, {chunk})");
    }
}

/// 40,000 rows × 4 columns = 160,000 bind parameters: more than PostgreSQL's 65,535 and
/// SQLite's 32,766 per statement.
fn a_chunk_beyond_the_bind_parameter_limit_is_split_not_refused(target: Target) {
    let db = target.open(1);
    let (report, seen) = points(&db, 40_000, 40_000);
    assert_eq!(report.rows, 40_000);
    assert_eq!(report.chunks, 1);
    assert_eq!(seen, vec![40_000]);
    assert_points_table(&target, 40_000);
}

/// Ids are `shard << 58 | slot << 32 | row index` (`roachbank::bank::ids`): two runs of 100
/// (one chunk each) must use two slots, rows 0..=99 in each. The high bits are read with
/// `>> 32`, an integer on every backend (CockroachDB's `/` on integers gives a DECIMAL), and
/// the same as `/ 2^32` for these non-negative ids.
fn two_runs_add_up_in_distinct_id_slots(target: Target) {
    let db = target.open(1);
    points(&db, 100, 1000);
    points(&db, 100, 1000);
    assert_points_table(&target, 200);
    let slot = "id >> 32";
    let index = "id % 4294967296";
    assert_eq!(
        target.count(&format!("SELECT COUNT(DISTINCT {slot}) FROM points")),
        2
    );
    assert_eq!(
        target.count(&format!("SELECT COUNT(DISTINCT {index}) FROM points")),
        100
    );
    assert_eq!(
        target.count(&format!("SELECT MAX({index}) FROM points")),
        99
    );
}

/// On PostgreSQL and SQLite a run's ids only grow (`roachbank::bank::ids`: the whole run under
/// one shard), so that the B-tree grows at its right edge: 25 chunks of 40 rows, written by
/// four loaders at once on PostgreSQL, are one contiguous range of ids. (On CockroachDB each
/// chunk takes the next shard: `cockroach::points_chunks_as_on_cockroachdb_…`.)
fn a_run_on_postgresql_or_sqlite_is_one_contiguous_range_of_ids(target: Target) {
    if matches!(target, Target::Postgresql(_))
        && not_run_on_cockroachdb(
            "a_run_on_postgresql_or_sqlite_is_one_contiguous_range_of_ids",
            "there each chunk takes a shard of its own \
             (cockroach::points_chunks_as_on_cockroachdb_each_take_the_next_id_shard)",
        )
    {
        return;
    }
    let db = target.open(4);
    points(&db, 1_000, 40);
    let ids = target.ints("id", "points");
    assert_eq!(ids.len(), 1_000);
    assert_eq!(
        ids.last().unwrap() - ids.first().unwrap(),
        999,
        "one contiguous range: {:#x}..={:#x}",
        ids.first().unwrap(),
        ids.last().unwrap()
    );
}

/// The library bounds memory whatever its caller asks: a chunk size of `u64::MAX` loads 100,001
/// rows in two chunks of at most 100,000 rows (the CLI refuses more; see `MAX_CHUNK_ROWS`).
fn a_chunk_size_above_100000_rows_is_clamped_to_100000(target: Target) {
    let db = target.open(1);
    let (report, seen) = points(&db, 100_001, u64::MAX);
    assert_eq!(report.rows, 100_001);
    assert_eq!(report.chunks, 2, "chunks of at most 100,000 rows");
    assert_eq!(seen.first(), Some(&100_000), "the first chunk: {seen:?}");
    assert_points_table(&target, 100_001);
}

/// Cancelled after its second chunk: no chunk starts after that (on a server the chunks already
/// in flight, at most one per loader, still commit), and the report counts exactly what the
/// table holds, in whole chunks.
fn a_cancelled_run_starts_no_chunk_after_it_and_reports_what_committed(target: Target) {
    const N: u64 = 100_000;
    const CHUNK: u64 = 100;
    let db = target.open(4);
    let cancel = AtomicBool::new(false);
    let method = LoadMethod::fastest_for(db.flavor());
    let report = PointsRun::new(N, CHUNK)
        .method(method)
        .cancel(&cancel)
        .run(&db, &RetryPolicy::default(), &mut |done| {
            if done >= 2 * CHUNK {
                cancel.store(true, Ordering::SeqCst);
            }
        })
        .unwrap_or_else(|err| panic!("a cancelled run is not a failure: {err}"));
    // At most one more chunk per loader (four on a server, one on SQLite) after the second.
    assert!(
        (2 * CHUNK..=6 * CHUNK).contains(&report.rows),
        "rows after cancelling at the second chunk: {report:?}"
    );
    assert_eq!(
        report.rows,
        report.chunks * CHUNK,
        "whole chunks: {report:?}"
    );
    assert_points_table(&target, report.rows);

    // Cancelled before it starts: nothing at all.
    target.execute("DELETE FROM points");
    let report = PointsRun::new(N, CHUNK)
        .method(method)
        .cancel(&AtomicBool::new(true))
        .run(&db, &RetryPolicy::default(), &mut |_| {})
        .expect("a cancelled run");
    assert_eq!((report.rows, report.chunks), (0, 0));
    assert_points_table(&target, 0);
}

/// Rows with an index of 3,000 or more are refused (a trigger on SQLite, a CHECK constraint on
/// a server): the run stops, and its error carries what committed — whole chunks, exactly what
/// the table holds (on SQLite exactly chunks 0–2; on a server, where four loaders race, the
/// first failure may come before some of them) — and says it in its text.
fn a_failed_chunk_stops_the_run_and_the_error_tells_what_committed(target: Target) {
    let db = target.open(4);
    match target {
        Target::Sqlite(_) => target.execute(
            "CREATE TRIGGER points_full BEFORE INSERT ON points \
             WHEN NEW.id % 4294967296 >= 3000 \
             BEGIN SELECT RAISE(ABORT, 'points_full'); END",
        ),
        Target::Postgresql(_) => target.execute(
            "ALTER TABLE points ADD CONSTRAINT points_full CHECK (id % 4294967296 < 3000)",
        ),
    }
    let method = LoadMethod::fastest_for(db.flavor());
    let err = PointsRun::new(10_000, 1000)
        .method(method)
        .run(&db, &RetryPolicy::default(), &mut |_| {})
        .expect_err("rows 3000 and above are refused");
    assert!(
        matches!(
            err.cause,
            PointsFailure::Chunk(TransactionError::Failed { .. })
        ),
        "a refused row is a permanent failure: {err:?}"
    );
    assert!(err.to_string().contains("points_full"), "{err}");
    assert_eq!(err.in_doubt, 0, "{err:?}");
    let committed = &err.committed;
    assert_eq!(committed.rows, committed.chunks * 1000, "{err:?}");
    if let Target::Sqlite(_) = target {
        assert_eq!(committed.chunks, 3, "{err:?}");
    }
    assert!(committed.rows <= 3000, "{err:?}");
    // Counts grouped by threes, as every summary writes them: "3,000 rows in 3 chunks".
    let said = format!(
        "{} row{} in {} chunk{} committed",
        grouped(committed.rows),
        if committed.rows == 1 { "" } else { "s" },
        grouped(committed.chunks),
        if committed.chunks == 1 { "" } else { "s" },
    );
    assert_eq!(err.to_string().matches(&said).count(), 1, "{err}");
    assert_points_table(&target, committed.rows);
}
