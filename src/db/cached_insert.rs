//! Multi-row INSERTs of BIGINT rows on SQLite that are prepared once per connection.
//!
//! Diesel marks its multi-row INSERT "unsafe to cache" (`unsafe_to_cache_prepared` in
//! `query_builder/insert_statement/batch_insert.rs`: each row count would be a statement of its
//! own), so SQLite parses and compiles each one again: for a seed's 8,000-row statements, a
//! profile put 7% of the time in SQLite's parser and code generator. Here statements of exactly
//! [`CACHED_ROWS`] rows — the same text every time — stay in Diesel's statement cache, keyed
//! by their SQL; the last, shorter one of a run is prepared for its one use. A million-account
//! seed on SQLite took 3.72–4.04 s instead of 4.53 s (best of 5; the sqlite3 shell's `.import`
//! 4.60 s). (`INSERT OR FAIL`, which spares SQLite a statement journal, made no measurable
//! difference.)

use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Nullable};
use diesel::sqlite::Sqlite;
use diesel::{QueryResult, RunQueryDsl, SqliteConnection};

/// Statements of exactly this many rows stay prepared on their connection (the same text every
/// time); others are prepared for one use, so that the cache holds one statement per target.
pub const CACHED_ROWS: usize = 8_000;

/// `INSERT INTO <target> VALUES (?, …), …`: rows of `COLUMNS` BIGINTs, NULL for `None`.
#[derive(Debug, Clone, Copy)]
pub struct CachedInsert<'a, const COLUMNS: usize> {
    /// The table and its columns, as SQL: ``` `accounts` (`id`, `balance`) ```.
    target: &'static str,
    /// The rows.
    rows: &'a [[Option<i64>; COLUMNS]],
}

impl<'a, const COLUMNS: usize> CachedInsert<'a, COLUMNS> {
    /// The statement inserting `rows` into `target` (the table and its columns, as SQL, e.g.
    /// ``` `accounts` (`id`, `balance`) ```: written into the statement as it is).
    pub fn new(target: &'static str, rows: &'a [[Option<i64>; COLUMNS]]) -> Self {
        CachedInsert { target, rows }
    }

    /// Runs it; returns the rows inserted.
    pub fn execute(self, conn: &mut SqliteConnection) -> QueryResult<usize> {
        RunQueryDsl::execute(self, conn)
    }
}

/// Inserts `rows` into `target` (as for [`CachedInsert::new`]) in statements of
/// [`CACHED_ROWS`] rows — each the one statement kept prepared — and a shorter last one;
/// returns the rows inserted.
pub fn insert_all<const COLUMNS: usize>(
    conn: &mut SqliteConnection,
    target: &'static str,
    rows: impl IntoIterator<Item = [Option<i64>; COLUMNS]>,
) -> QueryResult<usize> {
    let mut rows = rows.into_iter().peekable();
    let mut statement = Vec::with_capacity(CACHED_ROWS);
    let mut inserted = 0;
    while rows.peek().is_some() {
        statement.clear();
        statement.extend(rows.by_ref().take(CACHED_ROWS));
        inserted += CachedInsert::new(target, &statement).execute(conn)?;
    }
    Ok(inserted)
}

impl<const COLUMNS: usize> QueryFragment<Sqlite> for CachedInsert<'_, COLUMNS> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        if self.rows.len() != CACHED_ROWS {
            out.unsafe_to_cache_prepared();
        }
        out.push_sql("INSERT INTO ");
        out.push_sql(self.target);
        out.push_sql(" VALUES ");
        for (index, row) in self.rows.iter().enumerate() {
            out.push_sql(if index == 0 { "(" } else { ", (" });
            for (column, value) in row.iter().enumerate() {
                if column > 0 {
                    out.push_sql(", ");
                }
                out.push_bind_param::<Nullable<BigInt>, _>(value)?;
            }
            out.push_sql(")");
        }
        Ok(())
    }
}

impl<const COLUMNS: usize> QueryId for CachedInsert<'_, COLUMNS> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<const COLUMNS: usize> RunQueryDsl<SqliteConnection> for CachedInsert<'_, COLUMNS> {}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::connection::SimpleConnection;
    use diesel::Connection;

    fn connection() -> SqliteConnection {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        conn.batch_execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY NOT NULL, source BIGINT NULL, amount BIGINT NOT NULL)",
        )
        .unwrap();
        conn
    }

    fn rows_of(conn: &mut SqliteConnection) -> Vec<(i64, Option<i64>, i64)> {
        diesel::sql_query("SELECT id, source, amount FROM t ORDER BY id")
            .load::<Row>(conn)
            .unwrap()
            .into_iter()
            .map(|row| (row.id, row.source, row.amount))
            .collect()
    }

    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(sql_type = Nullable<BigInt>)]
        source: Option<i64>,
        #[diesel(sql_type = BigInt)]
        amount: i64,
    }

    #[test]
    fn a_statement_of_cached_rows_is_prepared_once_and_reused_and_a_shorter_one_never_kept() {
        use diesel::connection::InstrumentationEvent;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let mut conn = connection();
        let (cached, run) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (cached_seen, run_seen) = (Arc::clone(&cached), Arc::clone(&run));
        conn.set_instrumentation(move |event: InstrumentationEvent<'_>| match event {
            InstrumentationEvent::CacheQuery { .. } => {
                cached_seen.fetch_add(1, Ordering::SeqCst);
            }
            InstrumentationEvent::StartQuery { .. } => {
                run_seen.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        });
        let target = "\"t\" (\"id\", \"source\", \"amount\")";
        let rows = |first: i64, count: usize| -> Vec<[Option<i64>; 3]> {
            (first..first + count as i64)
                .map(|id| [Some(id), None, Some(id)])
                .collect()
        };
        for batch in 0..3 {
            let batch = rows(batch * CACHED_ROWS as i64, CACHED_ROWS);
            CachedInsert::new(target, &batch)
                .execute(&mut conn)
                .unwrap();
        }
        CachedInsert::new(target, &rows(3 * CACHED_ROWS as i64, 10))
            .execute(&mut conn)
            .unwrap();
        assert_eq!(run.load(Ordering::SeqCst), 4);
        assert_eq!(
            cached.load(Ordering::SeqCst),
            1,
            "one statement cached, once"
        );
        assert_eq!(rows_of(&mut conn).len(), 3 * CACHED_ROWS + 10);
    }

    #[test]
    fn insert_all_writes_every_row_in_statements_of_the_cached_size_and_one_shorter() {
        use diesel::connection::InstrumentationEvent;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let mut conn = connection();
        let run = Arc::new(AtomicUsize::new(0));
        let run_seen = Arc::clone(&run);
        conn.set_instrumentation(move |event: InstrumentationEvent<'_>| {
            if let InstrumentationEvent::StartQuery { .. } = event {
                run_seen.fetch_add(1, Ordering::SeqCst);
            }
        });
        let count = 2 * CACHED_ROWS + 7;
        let inserted = insert_all(
            &mut conn,
            "\"t\" (\"id\", \"source\", \"amount\")",
            (0..count as i64).map(|id| [Some(id), None, Some(2 * id)]),
        )
        .unwrap();
        assert_eq!(inserted, count);
        assert_eq!(
            run.load(Ordering::SeqCst),
            3,
            "two full statements and one of 7 rows"
        );
        let rows = rows_of(&mut conn);
        assert_eq!(rows.len(), count);
        assert!(rows
            .iter()
            .enumerate()
            .all(|(i, row)| *row == (i as i64, None, 2 * i as i64)));
        assert_eq!(
            insert_all::<3>(&mut conn, "\"t\" (\"id\", \"source\", \"amount\")", []).unwrap(),
            0
        );
    }

    #[test]
    fn inserts_every_row_with_its_nulls() {
        let mut conn = connection();
        let rows = [[Some(1), None, Some(10)], [Some(2), Some(7), Some(20)]];
        let inserted = CachedInsert::new("\"t\" (\"id\", \"source\", \"amount\")", &rows)
            .execute(&mut conn)
            .unwrap();
        assert_eq!(inserted, 2);
        assert_eq!(rows_of(&mut conn), vec![(1, None, 10), (2, Some(7), 20)]);
    }

    #[test]
    fn a_taken_key_fails_the_statement_and_inserts_none_of_its_rows() {
        let mut conn = connection();
        let target = "\"t\" (\"id\", \"source\", \"amount\")";
        CachedInsert::new(target, &[[Some(2), None, Some(0)]])
            .execute(&mut conn)
            .unwrap();
        let error = CachedInsert::new(
            target,
            &[
                [Some(1), None, Some(1)],
                [Some(2), None, Some(2)],
                [Some(3), None, Some(3)],
            ],
        )
        .execute(&mut conn)
        .unwrap_err();
        assert!(
            matches!(
                error,
                diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _
                )
            ),
            "{error:?}"
        );
        assert_eq!(rows_of(&mut conn), vec![(2, None, 0)]);
    }
}
