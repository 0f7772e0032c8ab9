//! [`Target`]: a fresh, empty database on one backend (a SQLite file or a PostgreSQL
//! [`TestDb`]) with SQL access that bypasses the library, and `on_sqlite_and_postgresql!`,
//! which runs a check on both.
//!
//! Figures are read by SQL outside the library: psql on PostgreSQL, a plain diesel
//! `SqliteConnection` on SQLite.

use super::{server, TestDb, TestSqlite};
use diesel::connection::SimpleConnection;
use diesel::dsl::sql;
use diesel::migration::MigrationSource;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Nullable};
use roachbank::db::config::{DatabaseConfig, UrlSource};
use roachbank::db::{ConnectOptions, Database, Flavor};
use roachbank::migrate::OpenError;
use roachbank::migrate::{POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::str::FromStr;

/// Runs each listed `fn(Target)` once on a fresh SQLite file and once on a fresh PostgreSQL
/// database, as the tests `<name>::sqlite` and `<name>::postgresql`.
///
/// Reached through `#[macro_use] mod support;` in `main.rs`, declared before the test modules.
macro_rules! on_sqlite_and_postgresql {
    ($($check:ident),* $(,)?) => {
        $(
            mod $check {
                #[test]
                fn sqlite() {
                    super::$check($crate::support::target::Target::sqlite());
                }

                #[test]
                fn postgresql() {
                    super::$check($crate::support::target::Target::postgresql(stringify!(
                        $check
                    )));
                }
            }
        )*
    };
}

diesel::table! {
    /// Diesel's bookkeeping table, read to check what the migrations recorded.
    __diesel_schema_migrations (version) {
        version -> Text,
    }
}

/// One integer column named `value`, as [`Target::ints`] reads it on SQLite.
#[derive(QueryableByName)]
struct IntRow {
    #[diesel(sql_type = BigInt)]
    value: i64,
}

/// A fresh, empty database on one backend, with SQL access that bypasses the library.
pub enum Target {
    /// A fresh database on the suite's PostgreSQL server.
    Postgresql(TestDb),
    /// A fresh SQLite file in a temporary directory.
    Sqlite(TestSqlite),
}

/// Opens `url` the way the CLI does, with `pool_size` connections.
pub fn try_open(url: &str, pool_size: u32) -> Result<Database, OpenError> {
    Database::open(
        DatabaseConfig::parse(url, UrlSource::Flag).unwrap(),
        &ConnectOptions {
            pool_size,
            ..Default::default()
        },
    )
}

impl Target {
    /// A fresh PostgreSQL database named after `test_name`.
    pub fn postgresql(test_name: &str) -> Target {
        Target::Postgresql(TestDb::new(test_name))
    }

    /// A fresh SQLite file.
    pub fn sqlite() -> Target {
        Target::Sqlite(TestSqlite::new())
    }

    /// The database URL the library and the binary are given.
    pub fn url(&self) -> &str {
        match self {
            Target::Postgresql(db) => &db.url,
            Target::Sqlite(file) => &file.url,
        }
    }

    /// Opens the database through the library (which applies the migrations), with
    /// `pool_size` connections.
    pub fn open(&self, pool_size: u32) -> Database {
        match try_open(self.url(), pool_size) {
            Ok(db) => db,
            Err(err) => panic!("Database::open({}) failed: {err}", self.url()),
        }
    }

    /// A direct connection to the SQLite file, waiting up to 10 s for locks the library holds.
    fn sqlite_connection(file: &TestSqlite) -> SqliteConnection {
        let path = file.path.to_str().expect("UTF-8 temp path");
        let mut conn = SqliteConnection::establish(path).expect("open the SQLite file directly");
        diesel::sql_query("PRAGMA busy_timeout = 10000")
            .execute(&mut conn)
            .expect("set busy_timeout");
        conn
    }

    /// Runs statements outside the library.
    pub fn execute(&self, sql: &str) {
        match self {
            Target::Postgresql(db) => {
                db.psql(sql);
            }
            Target::Sqlite(file) => {
                Self::sqlite_connection(file)
                    .batch_execute(sql)
                    .unwrap_or_else(|err| panic!("SQLite {sql:?}: {err}"));
            }
        }
    }

    /// The value of a query returning one row of one column (or NULL): parsed from psql's
    /// output on PostgreSQL, read by `sqlite_read` (given the query as a scalar subquery) on
    /// SQLite.
    pub fn scalar<T>(
        &self,
        query: &str,
        sqlite_read: impl FnOnce(&mut SqliteConnection, &str) -> QueryResult<Option<T>>,
    ) -> Option<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self {
            Target::Postgresql(db) => {
                let out = db.psql(query);
                (!out.is_empty()).then(|| {
                    out.parse()
                        .unwrap_or_else(|err| panic!("{query:?} gave {out:?}: {err}"))
                })
            }
            Target::Sqlite(file) => {
                sqlite_read(&mut Self::sqlite_connection(file), &format!("({query})"))
                    .unwrap_or_else(|err| panic!("SQLite {query:?}: {err}"))
            }
        }
    }

    /// The value of a query returning one integer (or NULL) row.
    pub fn int(&self, query: &str) -> Option<i64> {
        self.scalar(query, |conn, subquery| {
            diesel::select(sql::<Nullable<BigInt>>(subquery)).get_result(conn)
        })
    }

    /// The value of a query returning one integer row that must not be NULL (a count).
    pub fn count(&self, query: &str) -> i64 {
        self.int(query)
            .unwrap_or_else(|| panic!("{query:?} returned NULL"))
    }

    /// The value of a query returning one floating-point (or NULL) row.
    pub fn float(&self, query: &str) -> Option<f64> {
        self.scalar(query, |conn, subquery| {
            diesel::select(sql::<Nullable<Double>>(subquery)).get_result(conn)
        })
    }

    /// `expression` of every row of `from` (a table, with a `WHERE` clause if wanted), an
    /// integer, in ascending order.
    pub fn ints(&self, expression: &str, from: &str) -> Vec<i64> {
        let query = format!("SELECT {expression} AS value FROM {from} ORDER BY 1");
        match self {
            Target::Postgresql(db) => db
                .psql(&query)
                .lines()
                .map(|line| {
                    line.parse()
                        .unwrap_or_else(|err| panic!("{query:?} gave {line:?}: {err}"))
                })
                .collect(),
            Target::Sqlite(file) => diesel::sql_query(&query)
                .load::<IntRow>(&mut Self::sqlite_connection(file))
                .unwrap_or_else(|err| panic!("SQLite {query:?}: {err}"))
                .into_iter()
                .map(|row| row.value)
                .collect(),
        }
    }

    /// Every account, id → balance.
    pub fn accounts(&self) -> BTreeMap<i64, i64> {
        match self {
            Target::Postgresql(db) => db
                .psql("SELECT id, balance FROM accounts")
                .lines()
                .map(|line| {
                    let (id, balance) = line.split_once('|').expect("id|balance");
                    (id.parse().unwrap(), balance.parse().unwrap())
                })
                .collect(),
            Target::Sqlite(file) => roachbank::schema::accounts::table
                .load::<(i64, i64)>(&mut Self::sqlite_connection(file))
                .expect("load accounts")
                .into_iter()
                .collect(),
        }
    }

    /// The versions recorded in `__diesel_schema_migrations`, sorted.
    pub fn applied_migrations(&self) -> Vec<String> {
        match self {
            Target::Postgresql(db) => db
                .psql("SELECT version FROM __diesel_schema_migrations ORDER BY version")
                .lines()
                .map(str::to_string)
                .collect(),
            Target::Sqlite(file) => __diesel_schema_migrations::table
                .select(__diesel_schema_migrations::version)
                .order(__diesel_schema_migrations::version)
                .load(&mut Self::sqlite_connection(file))
                .expect("read __diesel_schema_migrations"),
        }
    }

    /// The versions of the migration set the library embeds for this backend, sorted.
    pub fn embedded_migrations(&self) -> Vec<String> {
        let versions: BTreeSet<String> = match self {
            Target::Postgresql(_) => {
                MigrationSource::<diesel::pg::Pg>::migrations(&POSTGRES_MIGRATIONS)
                    .expect("embedded PostgreSQL migrations")
                    .iter()
                    .map(|m| m.name().version().to_string())
                    .collect()
            }
            Target::Sqlite(_) => {
                MigrationSource::<diesel::sqlite::Sqlite>::migrations(&SQLITE_MIGRATIONS)
                    .expect("embedded SQLite migrations")
                    .iter()
                    .map(|m| m.name().version().to_string())
                    .collect()
            }
        };
        assert!(!versions.is_empty(), "no embedded migrations");
        versions.into_iter().collect()
    }

    /// The flavour `Database::open` must detect for this target.
    pub fn expected_flavor(&self) -> Flavor {
        match self {
            Target::Postgresql(_) if server().is_cockroachdb() => Flavor::CockroachDb,
            Target::Postgresql(_) => Flavor::PostgreSql,
            Target::Sqlite(_) => Flavor::Sqlite,
        }
    }
}
