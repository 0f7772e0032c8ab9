//! Tables that exist before roachbank's first migration. The tutorial's Python app makes
//! `accounts(id INTEGER PRIMARY KEY, balance INTEGER)` and `points(id INTEGER PRIMARY KEY, x, y,
//! z FLOAT)` — 32-bit and nullable on PostgreSQL, no CHECK — and roachbank's migrations, which
//! only create what is missing, would leave them so. Such tables are *adopted*: widened to
//! 64 bits, made NOT NULL, given the balance CHECK, every row kept (the ledger migration then
//! gives each account its opening deposit), and the Python app still runs on them. A table
//! roachbank cannot adopt — a column of another kind (a REAL balance would lose money on every
//! transfer), a missing column, rows that break a rule — is refused in one line before anything
//! is written.

use super::error::MigrationError;
use super::failure::StepError;
use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Integer, Text};
use diesel::{PgConnection, QueryableByName, RunQueryDsl, SqliteConnection};

/// What kind of value a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A 64-bit integer.
    Integer,
    /// A double-precision float.
    Float,
    /// A timestamp.
    Timestamp,
}

impl Kind {
    /// The server type roachbank's schema uses.
    fn server_type(self) -> &'static str {
        match self {
            Kind::Integer => "bigint",
            Kind::Float => "double precision",
            Kind::Timestamp => "timestamp without time zone",
        }
    }
}

/// One column roachbank needs.
struct Needed {
    table: &'static str,
    column: &'static str,
    kind: Kind,
    not_null: bool,
}

const fn needed(table: &'static str, column: &'static str, kind: Kind, not_null: bool) -> Needed {
    Needed {
        table,
        column,
        kind,
        not_null,
    }
}

/// Every column of roachbank's schema.
const NEEDED: &[Needed] = &[
    needed("accounts", "id", Kind::Integer, true),
    needed("accounts", "balance", Kind::Integer, true),
    needed("points", "id", Kind::Integer, true),
    needed("points", "x", Kind::Float, true),
    needed("points", "y", Kind::Float, true),
    needed("points", "z", Kind::Float, true),
    needed("transfers", "id", Kind::Integer, true),
    needed("transfers", "source_id", Kind::Integer, false),
    needed("transfers", "sink_id", Kind::Integer, true),
    needed("transfers", "amount", Kind::Integer, true),
    needed("transfers", "created_at", Kind::Timestamp, true),
];

/// The tables roachbank's schema has.
const TABLES: &[&str] = &["accounts", "points", "transfers"];

/// A column as the database has it.
#[derive(QueryableByName, Debug)]
struct Found {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    /// The type, lower case (`information_schema` spelling on a server, the declared type on
    /// SQLite).
    #[diesel(sql_type = Text)]
    data_type: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    nullable: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    has_default: bool,
}

/// How a found column's type relates to the one needed.
enum Fit {
    /// The same kind and width.
    Same,
    /// The same kind, narrower: widened on adoption.
    Narrower,
    /// Another kind.
    Foreign,
}

fn refuse(table: &str, problem: String) -> MigrationError {
    MigrationError::CannotAdopt {
        table: table.to_string(),
        problem,
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

fn count_rows(pg: &mut PgConnection, sql: &str) -> diesel::QueryResult<i64> {
    diesel::sql_query(sql)
        .get_result::<Count>(pg)
        .map(|row| row.count)
}

fn count_rows_sqlite(sqlite: &mut SqliteConnection, sql: &str) -> diesel::QueryResult<i64> {
    diesel::sql_query(sql)
        .get_result::<Count>(sqlite)
        .map(|row| row.count)
}

/// Whether [`adopt_server_tables`] changes the tables or only checks that it could.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Apply {
    /// Refuse what cannot be adopted; write nothing.
    CheckOnly,
    /// Refuse what cannot be adopted, else adopt it.
    Change,
}

/// Checks the server's existing roachbank-named tables and (with [`Apply::Change`]) adopts
/// them: returns once they have roachbank's shape, or refuses before changing anything.
pub(crate) fn adopt_server_tables(pg: &mut PgConnection, apply: Apply) -> Result<(), StepError> {
    let found: Vec<Found> = diesel::sql_query(
        "SELECT table_name::TEXT AS table_name, column_name::TEXT AS column_name, \
                lower(data_type::TEXT) AS data_type, is_nullable = 'YES' AS nullable, \
                column_default IS NOT NULL AS has_default \
         FROM information_schema.columns \
         WHERE table_schema = current_schema() \
           AND table_name IN ('accounts', 'points', 'transfers')",
    )
    .load(pg)?;
    let fit = |data_type: &str, kind: Kind| match (kind, data_type) {
        (Kind::Integer, "bigint") | (Kind::Float, "double precision") => Fit::Same,
        (Kind::Integer, "integer" | "smallint") | (Kind::Float, "real") => Fit::Narrower,
        (Kind::Timestamp, t) if t.starts_with("timestamp") => Fit::Same,
        _ => Fit::Foreign,
    };
    let mut changes = Vec::new();
    for table in existing_tables(&found) {
        refuse_unfillable_columns(&found, table)?;
        for need in NEEDED.iter().filter(|need| need.table == table) {
            let column = find(&found, need)?;
            match fit(&column.data_type, need.kind) {
                Fit::Same => {}
                Fit::Narrower => changes.push(format!(
                    "ALTER TABLE {table} ALTER COLUMN {} TYPE {}",
                    need.column,
                    need.kind.server_type()
                )),
                Fit::Foreign => return Err(foreign_type(need, &column.data_type).into()),
            }
            if need.not_null && column.nullable {
                refuse_rows::<StepError>(
                    &mut |sql| count_rows(&mut *pg, sql),
                    need,
                    "IS NULL",
                    "a NULL",
                    "every value set",
                )?;
                changes.push(format!(
                    "ALTER TABLE {table} ALTER COLUMN {} SET NOT NULL",
                    need.column
                ));
            }
        }
        if table == "accounts" && !server_has_balance_check(pg)? {
            let balance = &NEEDED[1];
            refuse_rows::<StepError>(
                &mut |sql| count_rows(&mut *pg, sql),
                balance,
                "< 0",
                "a negative",
                "no value below 0",
            )?;
            changes.push(
                "ALTER TABLE accounts ADD CONSTRAINT accounts_balance_check CHECK (balance >= 0)"
                    .to_string(),
            );
        }
    }
    if apply == Apply::Change {
        for change in changes {
            pg.batch_execute(&change)?;
        }
    }
    Ok(())
}

/// Checks the SQLite file's existing roachbank-named tables. SQLite integers are 64-bit already
/// and its columns cannot be altered, so a table is adopted as it is when its rows fit, and
/// refused otherwise.
pub(crate) fn check_sqlite_tables(sqlite: &mut SqliteConnection) -> Result<(), MigrationError> {
    let mut found = Vec::new();
    for table in TABLES {
        found.extend(
            diesel::sql_query(format!(
                "SELECT '{table}' AS table_name, name AS column_name, lower(type) AS data_type, \
                        \"notnull\" = 0 AND pk = 0 AS nullable, dflt_value IS NOT NULL AS has_default \
                 FROM pragma_table_info('{table}')"
            ))
            .load::<Found>(sqlite)
            ?,
        );
    }
    // SQLite's type affinity rules (https://www.sqlite.org/datatype3.html, 3.1).
    let fit = |data_type: &str, kind: Kind| {
        let integer = data_type.contains("int");
        let real = ["real", "floa", "doub"]
            .iter()
            .any(|t| data_type.contains(t));
        match kind {
            Kind::Integer if integer => Fit::Same,
            Kind::Float if real || integer => Fit::Same,
            Kind::Timestamp if !integer && !real => Fit::Same,
            _ => Fit::Foreign,
        }
    };
    for table in existing_tables(&found) {
        refuse_unfillable_columns(&found, table)?;
        for need in NEEDED.iter().filter(|need| need.table == table) {
            let column = find(&found, need)?;
            if let Fit::Foreign | Fit::Narrower = fit(&column.data_type, need.kind) {
                return Err(foreign_type(need, &column.data_type));
            }
            if need.not_null && column.nullable {
                refuse_rows::<MigrationError>(
                    &mut |sql| count_rows_sqlite(&mut *sqlite, sql),
                    need,
                    "IS NULL",
                    "a NULL",
                    "every value set",
                )?;
            }
        }
        // roachbank's own table has the CHECK; only a foreign one needs its rows counted.
        if table == "accounts" && !sqlite_has_balance_check(sqlite)? {
            refuse_rows::<MigrationError>(
                &mut |sql| count_rows_sqlite(&mut *sqlite, sql),
                &NEEDED[1],
                "< 0",
                "a negative",
                "no value below 0",
            )?;
        }
    }
    Ok(())
}

fn existing_tables(found: &[Found]) -> Vec<&'static str> {
    TABLES
        .iter()
        .copied()
        .filter(|table| found.iter().any(|column| column.table_name == *table))
        .collect()
}

fn columns_of<'f>(found: &'f [Found], table: &'f str) -> impl Iterator<Item = &'f Found> {
    found
        .iter()
        .filter(move |column| column.table_name == table)
}

fn is_needed(table: &str, column: &str) -> bool {
    NEEDED
        .iter()
        .any(|need| need.table == table && need.column == column)
}

fn find<'f>(found: &'f [Found], need: &Needed) -> Result<&'f Found, MigrationError> {
    columns_of(found, need.table)
        .find(|column| column.column_name == need.column)
        .ok_or_else(|| {
            refuse(
                need.table,
                format!(
                    "it has no column {} (roachbank needs {} {})",
                    need.column,
                    need.column,
                    need.kind.server_type()
                ),
            )
        })
}

fn foreign_type(need: &Needed, found: &str) -> MigrationError {
    refuse(
        need.table,
        format!(
            "column {} is {found}, roachbank needs {}",
            need.column,
            need.kind.server_type()
        ),
    )
}

/// A column roachbank does not know, NOT NULL and without a default, would fail every row
/// roachbank inserts.
fn refuse_unfillable_columns(found: &[Found], table: &str) -> Result<(), MigrationError> {
    match columns_of(found, table).find(|column| {
        !column.nullable && !column.has_default && !is_needed(table, &column.column_name)
    }) {
        Some(column) => Err(refuse(
            table,
            format!(
                "column {} is NOT NULL without a default, which roachbank's rows would leave empty",
                column.column_name
            ),
        )),
        None => Ok(()),
    }
}

/// Counts the rows a `SELECT COUNT(*) AS count …` finds, on whichever connection.
type RowCounter<'c> = &'c mut dyn FnMut(&str) -> diesel::QueryResult<i64>;

/// Refuses the table if any row's `need.column` matches `condition` (`IS NULL`, `< 0`).
/// `what` names the offending value (`a NULL`), `rule` what roachbank needs instead. A failed
/// count is returned as it is, for the caller to name.
fn refuse_rows<E>(
    count_rows: RowCounter<'_>,
    need: &Needed,
    condition: &str,
    what: &str,
    rule: &str,
) -> Result<(), E>
where
    E: From<diesel::result::Error> + From<MigrationError>,
{
    let count = count_rows(&format!(
        "SELECT COUNT(*) AS count FROM {} WHERE {} {condition}",
        need.table, need.column
    ))?;
    if count == 0 {
        return Ok(());
    }
    Err(E::from(refuse(
        need.table,
        format!(
            "{count} row{} {} {what} {} (roachbank needs {}): fix or remove {}",
            if count == 1 { "" } else { "s" },
            if count == 1 { "has" } else { "have" },
            need.column,
            rule,
            if count == 1 { "it" } else { "them" }
        ),
    )))
}

/// Whether a CHECK constraint already covers `accounts.balance`.
fn server_has_balance_check(pg: &mut PgConnection) -> Result<bool, StepError> {
    #[derive(QueryableByName)]
    struct Checks {
        #[diesel(sql_type = Integer)]
        checks: i32,
    }
    let Checks { checks } = diesel::sql_query(
        "SELECT COUNT(*)::INT4 AS checks \
         FROM information_schema.table_constraints c \
         JOIN information_schema.constraint_column_usage u \
           ON u.constraint_schema = c.constraint_schema AND u.constraint_name = c.constraint_name \
         WHERE c.constraint_type = 'CHECK' AND c.table_schema = current_schema() \
           AND c.table_name = 'accounts' AND u.column_name = 'balance'",
    )
    .get_result(pg)?;
    Ok(checks > 0)
}

/// Whether SQLite's `accounts` was created with a CHECK on `balance`.
fn sqlite_has_balance_check(sqlite: &mut SqliteConnection) -> Result<bool, MigrationError> {
    count_rows_sqlite(
        sqlite,
        "SELECT COUNT(*) AS count FROM sqlite_master \
         WHERE type = 'table' AND name = 'accounts' AND sql LIKE '%CHECK (balance >= 0)%'",
    )
    .map(|count| count > 0)
    .map_err(MigrationError::from)
}
