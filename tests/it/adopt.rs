//! Tables that exist before roachbank's first run: the tutorial's own are adopted (every row
//! kept, the Python app still working on them), anything else is refused in one line before a
//! single write; and a migration run that fails on PostgreSQL leaves the database as it was.

use crate::support::target::{try_open, Target};
use crate::support::{not_run_on_cockroachdb, server, TUTORIAL_TABLES};
use diesel_retry::RetryPolicy;
use roachbank::bank;
use roachbank::migrate::MigrationError;
use roachbank::migrate::OpenError;

fn expect_refusal(result: Result<roachbank::db::Database, OpenError>) -> (String, String) {
    match result {
        Err(OpenError::Migration(MigrationError::CannotAdopt { table, problem })) => {
            let line = format!("cannot adopt {table}: {problem}");
            assert_eq!(line.lines().count(), 1, "{line}");
            (table, problem)
        }
        Err(other) => panic!("expected CannotAdopt, got {other}"),
        Ok(_) => panic!("the table was adopted"),
    }
}

/// The tables in the public schema (SQLite: in the file), sorted.
fn tables(target: &Target) -> String {
    match target {
        Target::Postgresql(db) => db.psql(
            "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables \
             WHERE table_schema = 'public'",
        ),
        Target::Sqlite(_) => {
            let names = target.count(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name <> 'accounts'",
            );
            format!("accounts + {names} other")
        }
    }
}

#[test]
fn the_tutorials_tables_are_adopted_keeping_every_row_and_its_statements_still_work() {
    let target = Target::postgresql("adopt_tutorial");
    target.execute(TUTORIAL_TABLES);
    let db = try_open(target.url(), 1).unwrap_or_else(|err| panic!("adopting: {err}"));
    let policy = RetryPolicy::default();

    // Every row kept, each account given its opening deposit, the books consistent.
    let summary = bank::balance(&db, &policy).expect("balance").value;
    assert_eq!((summary.accounts, summary.total), (3, 350));
    assert_eq!(target.count("SELECT COUNT(*) FROM points"), 2);
    assert_eq!(
        target.count("SELECT COUNT(*) FROM transfers WHERE source_id IS NULL"),
        3,
        "one opening deposit per account"
    );
    let audit = roachbank::bank::audit::audit(&db, &policy)
        .expect("audit")
        .value;
    assert!(audit.is_consistent(), "{audit:?}");

    // roachbank's shape: 64-bit, NOT NULL, balance never negative.
    if !server().is_cockroachdb() {
        assert_eq!(
            target.count(
                "SELECT COUNT(*) FROM information_schema.columns WHERE table_name = 'accounts' \
                 AND data_type = 'bigint' AND is_nullable = 'NO'"
            ),
            2,
            "accounts.id and accounts.balance are BIGINT NOT NULL"
        );
    }
    let Target::Postgresql(test_db) = &target else {
        unreachable!()
    };
    assert!(
        server()
            .try_psql(
                &test_db.name,
                "UPDATE accounts SET balance = -1 WHERE id = 3"
            )
            .is_err(),
        "a negative balance is refused by the CHECK"
    );

    // The tutorial's own statements (as SQLAlchemy sends them) still work on the tables.
    target.execute(
        "INSERT INTO accounts (id, balance) VALUES (4, 500); \
         UPDATE accounts SET balance = 50 WHERE accounts.id = 1; \
         INSERT INTO points (x, y, z) VALUES (7.0, 8.0, 9.0)",
    );
    assert_eq!(target.count("SELECT COUNT(*) FROM points"), 3);
    // And roachbank's.
    bank::transfer(&db, &policy).expect("a transfer on the adopted tables");
}

#[test]
fn null_or_negative_balances_are_refused_in_one_line_and_nothing_changes() {
    for (rows, problem) in [
        (
            "(1, 100), (2, NULL), (3, NULL)",
            "2 rows have a NULL balance",
        ),
        ("(1, -5), (2, 10)", "1 row has a negative balance"),
    ] {
        let target = Target::postgresql("adopt_bad_rows");
        target.execute(&format!(
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER); \
             INSERT INTO accounts (id, balance) VALUES {rows}"
        ));
        let before = tables(&target);
        let (table, said) = expect_refusal(try_open(target.url(), 1));
        assert_eq!(table, "accounts");
        assert!(said.starts_with(problem), "{said}");
        assert_eq!(tables(&target), before, "nothing was created");
        if !server().is_cockroachdb() {
            assert_eq!(
                target.count(
                    "SELECT COUNT(*) FROM information_schema.columns \
                     WHERE table_name = 'accounts' AND data_type = 'integer'"
                ),
                2,
                "nothing was altered"
            );
        }
    }
}

fn tables_of_another_shape_are_refused_before_anything_is_written(
    target: Target,
    create: &str,
    problem: &str,
) {
    target.execute(create);
    let before = tables(&target);
    let (table, said) = expect_refusal(try_open(target.url(), 1));
    assert_eq!(table, "accounts");
    assert!(said.contains(problem), "{said}");
    assert_eq!(tables(&target), before, "nothing was written");
}

#[test]
fn a_sqlite_accounts_table_of_text_ids_and_real_balances_is_refused() {
    tables_of_another_shape_are_refused_before_anything_is_written(
        Target::sqlite(),
        "CREATE TABLE accounts (id TEXT PRIMARY KEY, balance REAL); \
         INSERT INTO accounts VALUES ('a', 10.75)",
        "column id is text, roachbank needs bigint",
    );
}

#[test]
fn a_sqlite_accounts_table_with_real_balances_is_refused() {
    tables_of_another_shape_are_refused_before_anything_is_written(
        Target::sqlite(),
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance REAL); \
         INSERT INTO accounts VALUES (1, 10.75)",
        "column balance is real, roachbank needs bigint",
    );
}

#[test]
fn a_server_accounts_table_with_decimal_balances_is_refused() {
    tables_of_another_shape_are_refused_before_anything_is_written(
        Target::postgresql("adopt_numeric"),
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance NUMERIC(12, 2)); \
         INSERT INTO accounts VALUES (1, 10.75)",
        "column balance is numeric, roachbank needs bigint",
    );
}

#[test]
fn a_migration_run_that_fails_on_postgresql_leaves_the_database_as_it_found_it() {
    if not_run_on_cockroachdb(
        "a_migration_run_that_fails_on_postgresql_leaves_the_database_as_it_found_it",
        "CockroachDB 25.1+ commits at every DDL statement, so a run is not atomic there; its \
         migrations are safe to run again instead",
    ) {
        return;
    }
    // An event trigger fails the first CREATE INDEX: the run fails in its second migration,
    // after the first one and the ledger table were made.
    let target = Target::postgresql("atomic_migrations");
    target.execute(
        "CREATE FUNCTION refuse_index() RETURNS event_trigger LANGUAGE plpgsql AS \
           $$ BEGIN RAISE EXCEPTION 'no index today'; END $$; \
         CREATE EVENT TRIGGER refuse_index ON ddl_command_end WHEN TAG IN ('CREATE INDEX') \
           EXECUTE FUNCTION refuse_index()",
    );
    let before = tables(&target);
    let result = try_open(target.url(), 1);
    assert!(result.is_err(), "the run cannot succeed");
    // Only the migration lock's own table stays (it is taken before the run).
    let after = tables(&target).replace("__roachbank_migration_lock", "");
    assert_eq!(
        after.trim_matches(','),
        before,
        "no table made, no migration recorded"
    );
}
