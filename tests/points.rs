//! `add_points` against real databases (a SQLite file and the harness's PostgreSQL): row and
//! chunk counts, coordinates, ids, the progress callback, and chunks larger than one
//! statement's bind-parameter limit.
//!
//! Each check runs on both backends through `on_sqlite_and_postgresql!`, which turns each
//! `fn check(target: Target)` into `check::sqlite` and `check::postgresql` tests. Figures are
//! read by SQL outside the library: psql on PostgreSQL, a plain diesel `SqliteConnection` on
//! SQLite.

#[macro_use]
mod support;

use roachbank::db::Database;
use roachbank::points::{add_points, PointsReport, COORDINATE_SPACE};
use roachbank::retry::RetryPolicy;
use support::target::Target;

on_sqlite_and_postgresql!(
    add_points_lands_exactly_n_rows_in_ceil_n_over_chunk_chunks,
    on_chunk_sees_strictly_increasing_totals_ending_at_n,
    a_chunk_beyond_the_bind_parameter_limit_is_split_not_refused,
    two_runs_add_up_in_distinct_id_slots,
    a_chunk_size_above_100000_rows_is_clamped_to_100000,
);

/// Adds `n` points in chunks of `chunk`; returns the report and the totals `on_chunk` saw.
fn points(db: &Database, n: u64, chunk: u64) -> (PointsReport, Vec<u64>) {
    let mut seen = Vec::new();
    let report = add_points(db, &RetryPolicy::default(), n, chunk, &mut |done| {
        seen.push(done)
    })
    .unwrap_or_else(|err| panic!("add_points({n}, {chunk}) failed: {err} ({err:?})"));
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

/// Ids are `slot << 32 | row index`: two runs of 100 must use two slots, rows 0..=99 in each.
/// The slot is read with `>> 32`, an integer on every backend (CockroachDB's `/` on integers
/// gives a DECIMAL), and the same as `/ 2^32` for these non-negative ids.
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
