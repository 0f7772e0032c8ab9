//! `add_points` against real databases (a SQLite file and the harness's PostgreSQL): row and
//! chunk counts, coordinates, ids, the progress callback, and chunks larger than one
//! statement's bind-parameter limit.
//!
//! Each check runs on both backends through `on_sqlite_and_postgresql!`, which turns each
//! `fn check(target: Target)` into `check::sqlite` and `check::postgresql` tests. Figures are
//! read by SQL outside the library: psql on PostgreSQL, a plain diesel `SqliteConnection` on
//! SQLite.

mod support;

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Nullable};
use roachbank::config::{DatabaseConfig, UrlSource};
use roachbank::db::{ConnectOptions, Database};
use roachbank::points::{add_points, PointsReport, COORDINATE_SPACE};
use roachbank::retry::RetryPolicy;
use std::str::FromStr;

/// A fresh, empty database on one backend, with SQL access that bypasses the library.
enum Target {
    Postgresql(support::TestDb),
    Sqlite(support::TestSqlite),
}

impl Target {
    fn url(&self) -> &str {
        match self {
            Target::Postgresql(db) => &db.url,
            Target::Sqlite(file) => &file.url,
        }
    }

    /// Opens the database through the library (which applies the migrations).
    fn open(&self) -> Database {
        Database::open(
            DatabaseConfig::parse(self.url(), UrlSource::Flag).unwrap(),
            &ConnectOptions {
                pool_size: 1,
                ..Default::default()
            },
        )
        .unwrap_or_else(|err| panic!("Database::open({}) failed: {err}", self.url()))
    }

    fn sqlite_connection(file: &support::TestSqlite) -> SqliteConnection {
        let path = file.path.to_str().expect("UTF-8 temp path");
        SqliteConnection::establish(path).expect("open the SQLite file directly")
    }

    /// Runs a statement outside the library.
    fn execute(&self, sql: &str) {
        match self {
            Target::Postgresql(db) => {
                db.psql(sql);
            }
            Target::Sqlite(file) => {
                diesel::sql_query(sql)
                    .execute(&mut Self::sqlite_connection(file))
                    .unwrap_or_else(|err| panic!("SQLite {sql:?}: {err}"));
            }
        }
    }

    /// The value of a query returning one row of one column (or NULL): parsed from psql's
    /// output on PostgreSQL, read by `sqlite_read` (given the query as a scalar subquery) on
    /// SQLite.
    fn scalar<T>(
        &self,
        query: &str,
        sqlite_read: impl FnOnce(&mut SqliteConnection, &str) -> QueryResult<Option<T>>,
    ) -> Option<T>
    where
        T: FromStr,
        T::Err: std::fmt::Debug,
    {
        match self {
            Target::Postgresql(db) => {
                let out = db.psql(query);
                (!out.is_empty()).then(|| {
                    out.parse()
                        .unwrap_or_else(|err| panic!("{query:?} gave {out:?}: {err:?}"))
                })
            }
            Target::Sqlite(file) => {
                sqlite_read(&mut Self::sqlite_connection(file), &format!("({query})"))
                    .unwrap_or_else(|err| panic!("SQLite {query:?}: {err}"))
            }
        }
    }

    fn count(&self, query: &str) -> i64 {
        self.scalar(query, |conn, subquery| {
            diesel::select(sql::<Nullable<BigInt>>(subquery)).get_result(conn)
        })
        .unwrap_or_else(|| panic!("{query:?} returned NULL"))
    }

    fn float(&self, query: &str) -> Option<f64> {
        self.scalar(query, |conn, subquery| {
            diesel::select(sql::<Nullable<Double>>(subquery)).get_result(conn)
        })
    }
}

/// Runs each listed `fn(Target)` once on a fresh SQLite file and once on a fresh PostgreSQL
/// database, as the tests `<name>::sqlite` and `<name>::postgresql`.
macro_rules! on_sqlite_and_postgresql {
    ($($check:ident),* $(,)?) => {
        $(
            mod $check {
                #[test]
                fn sqlite() {
                    super::$check(super::Target::Sqlite(super::support::TestSqlite::new()));
                }

                #[test]
                fn postgresql() {
                    super::$check(super::Target::Postgresql(super::support::TestDb::new(
                        stringify!($check),
                    )));
                }
            }
        )*
    };
}

on_sqlite_and_postgresql!(
    add_points_lands_exactly_n_rows_in_ceil_n_over_chunk_chunks,
    on_chunk_sees_strictly_increasing_totals_ending_at_n,
    a_chunk_beyond_the_bind_parameter_limit_is_split_not_refused,
    two_runs_add_up_in_distinct_id_slots,
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
    let db = target.open();
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
    let db = target.open();
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
    let db = target.open();
    let (report, seen) = points(&db, 40_000, 40_000);
    assert_eq!(report.rows, 40_000);
    assert_eq!(report.chunks, 1);
    assert_eq!(seen, vec![40_000]);
    assert_points_table(&target, 40_000);
}

/// Ids are `slot << 32 | row index`: two runs of 100 must use two slots, rows 0..=99 in each.
fn two_runs_add_up_in_distinct_id_slots(target: Target) {
    let db = target.open();
    points(&db, 100, 1000);
    points(&db, 100, 1000);
    assert_points_table(&target, 200);
    let slot = "id / 4294967296";
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
