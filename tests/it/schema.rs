//! `src/schema.rs` is exactly what Diesel writes: `diesel migration run` (diesel.toml's
//! `[print_schema]`) and `diesel print-schema` on a fresh clone leave `git status` clean.
//!
//! The proof runs the migrations on a fresh database and prints its schema the way
//! diesel_cli 2.3's `print-schema` does — the same catalog queries (information_schema's tables,
//! primary keys and columns, `obj_description` and `col_description` for the doc comments), the
//! same layout, after rustfmt — then compares the result with the committed file byte for byte.
//! [`print_schema`] models only what this schema uses (plain built-in types, no foreign keys,
//! names that are Rust identifiers already) and fails, saying what to do, on anything else
//! rather than print something Diesel would not. Where diesel_cli itself is installed,
//! [`diesel_print_schema_itself_agrees`] runs it too, which keeps the model honest.

use crate::support::target::Target;
use crate::support::{TestDb, TUTORIAL_TABLES};
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Nullable, Text};
use diesel_migrations::{FileBasedMigrations, MigrationHarness};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The committed file.
const SCHEMA_RS: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/schema.rs"));

/// diesel.toml: where `diesel migration run` takes its migrations from and writes the schema,
/// and how it documents it.
const DIESEL_TOML: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/diesel.toml"));

/// The first line of everything `diesel print-schema` writes.
const HEADER: &str = "// @generated automatically by Diesel CLI.\n";

/// rustfmt's default line width: a longer `allow_tables_to_appear_in_same_query!` line would be
/// wrapped, which [`print_schema`] does not model.
const MAX_WIDTH: usize = 100;

/// Built-in types as diesel_cli names them (the upper camel case of PostgreSQL's `udt_name`) that
/// need no `sql_types` module of their own: a subset of diesel_cli's `pg_diesel_types`.
const BUILT_IN_TYPES: &[&str] = &[
    "Bool",
    "Bytea",
    "Date",
    "Float4",
    "Float8",
    "Int2",
    "Int4",
    "Int8",
    "Jsonb",
    "Numeric",
    "Text",
    "Timestamp",
    "Timestamptz",
    "Uuid",
];

/// The migration directory diesel.toml names.
fn migrations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres")
}

/// What diesel.toml must say for the files and the doc comments to be the ones checked here.
#[test]
fn diesel_toml_writes_src_schema_rs_from_the_server_migrations_with_their_comments() {
    let settings: Vec<String> = DIESEL_TOML
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").replace(' ', ""))
        .filter(|line| !line.is_empty())
        .collect();
    for expected in [
        "[print_schema]",
        "file=\"src/schema.rs\"",
        "with_docs=\"only-database-comments\"",
        "[migrations_directory]",
        "dir=\"migrations/postgres\"",
    ] {
        assert!(
            settings.iter().any(|setting| setting == expected),
            "diesel.toml lacks {expected}: {settings:?}"
        );
    }
    assert!(
        SCHEMA_RS.starts_with(HEADER),
        "src/schema.rs is not diesel's output (no {HEADER:?} on its first line)"
    );
}

/// The migrations as `diesel migration run` applies them (from the directory, through diesel's
/// own harness), then the schema as `diesel print-schema` prints it.
#[test]
fn schema_rs_is_what_diesel_prints_after_diesel_migration_run() {
    let db = TestDb::new("schema_diesel_migration_run");
    let mut conn = PgConnection::establish(&db.url).expect("connect");
    run_migrations_as_diesel_cli_does(&mut conn);
    assert_matches_committed(&print_schema(&mut conn), "after diesel migration run");
}

/// roachbank's own first run (embedded migrations, the lock, one transaction) leaves the same
/// schema.
#[test]
fn schema_rs_is_what_diesel_prints_after_roachbank_migrates() {
    let target = Target::postgresql("schema_roachbank_migrates");
    drop(target.open(1));
    let mut conn = PgConnection::establish(target.url()).expect("connect");
    assert_matches_committed(&print_schema(&mut conn), "after roachbank's first run");
}

/// The tutorial's own tables, adopted (widened to BIGINT, made NOT NULL), print the same.
#[test]
fn schema_rs_is_what_diesel_prints_after_roachbank_adopts_the_tutorials_tables() {
    let target = Target::postgresql("schema_adopted");
    target.execute(TUTORIAL_TABLES);
    drop(target.open(1));
    let mut conn = PgConnection::establish(target.url()).expect("connect");
    assert_matches_committed(
        &print_schema(&mut conn),
        "after adopting the tutorial's tables",
    );
}

/// Where diesel_cli is installed, its own `print-schema` (run in the project directory, so with
/// diesel.toml's settings) prints the committed file too. Without it this test says `NOT RUN`
/// and how to install it; the tests above are the proof that always runs.
#[test]
fn diesel_print_schema_itself_agrees() {
    let version = match Command::new("diesel").arg("--version").output() {
        Ok(output) if output.status.success() => {
            // "diesel\n Version: 2.3.14\n Supported Backends: postgres sqlite", on one line.
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            stdout.split_whitespace().collect::<Vec<_>>().join(" ")
        }
        _ => {
            eprintln!(
                "NOT RUN: diesel_print_schema_itself_agrees: diesel_cli is not installed \
                 (cargo install diesel_cli --no-default-features --features postgres,sqlite); \
                 schema_rs_is_what_diesel_prints_* ran its catalog queries instead"
            );
            return;
        }
    };
    let db = TestDb::new("schema_diesel_cli");
    let mut conn = PgConnection::establish(&db.url).expect("connect");
    run_migrations_as_diesel_cli_does(&mut conn);
    let output = Command::new("diesel")
        .args(["print-schema", "--database-url", &db.url])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("DATABASE_URL")
        .output()
        .expect("run diesel print-schema");
    assert!(
        output.status.success(),
        "{version} print-schema failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).expect("UTF-8 from diesel");
    assert_eq!(
        print_schema(&mut conn),
        printed,
        "this file's print_schema() (left) no longer prints what {version} prints (right)"
    );
    assert_matches_committed(&printed, &format!("by {version} print-schema"));
}

/// Applies `migrations/postgres` the way `diesel migration run` does: read from the directory
/// (each migration's metadata.toml included) and run by diesel's migration harness.
fn run_migrations_as_diesel_cli_does(conn: &mut PgConnection) {
    let migrations = FileBasedMigrations::from_path(migrations_dir()).expect("migrations/postgres");
    let count = MigrationSource::<Pg>::migrations(&migrations)
        .expect("read the migrations")
        .len();
    let applied = conn
        .run_pending_migrations(migrations)
        .unwrap_or_else(|err| panic!("diesel's harness on migrations/postgres: {err}"));
    assert_eq!(applied.len(), count, "every migration applied");
}

fn assert_matches_committed(printed: &str, how: &str) {
    if printed == SCHEMA_RS {
        return;
    }
    let first_difference = printed
        .lines()
        .zip(SCHEMA_RS.lines())
        .enumerate()
        .find(|(_, (printed, committed))| printed != committed)
        .map(|(n, (printed, committed))| {
            format!(
                "line {}: printed {printed:?}, committed {committed:?}",
                n + 1
            )
        })
        .unwrap_or_else(|| "one is a prefix of the other".to_string());
    panic!(
        "src/schema.rs is not what diesel prints {how} ({first_difference}). Document tables \
         and columns with COMMENT ON in a new migration (not by editing src/schema.rs), then \
         regenerate it: diesel migration run (or diesel print-schema > src/schema.rs).\n\
         --- printed ---\n{printed}--- committed ---\n{SCHEMA_RS}"
    );
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct Comment {
    #[diesel(sql_type = Nullable<Text>)]
    comment: Option<String>,
}

#[derive(QueryableByName)]
struct Column {
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    udt_name: String,
    #[diesel(sql_type = Nullable<Text>)]
    domain_name: Option<String>,
    #[diesel(sql_type = Text)]
    is_nullable: String,
    #[diesel(sql_type = Nullable<Integer>)]
    max_length: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    comment: Option<String>,
}

/// What `diesel print-schema` prints for the database's current schema with diesel.toml's
/// settings (`with_docs = "only-database-comments"`), after rustfmt: diesel_cli 2.3's
/// `print_schema.rs` and `infer_schema_internals` (`load_table_names`, `get_primary_keys`,
/// `get_table_data`, `get_table_comment`), for the subset this schema uses.
fn print_schema(conn: &mut PgConnection) -> String {
    let schema = diesel::sql_query("SELECT current_schema()::TEXT AS name")
        .get_result::<Name>(conn)
        .expect("current_schema()")
        .name;
    let names = |conn: &mut PgConnection, sql: &str, binds: &[&str]| -> Vec<String> {
        let mut query = diesel::sql_query(sql).into_boxed::<Pg>();
        for bind in binds {
            query = query.bind::<Text, _>(bind.to_string());
        }
        query
            .load::<Name>(conn)
            .unwrap_or_else(|err| panic!("{sql}: {err}"))
            .into_iter()
            .map(|row| row.name)
            .collect()
    };
    // Foreign keys would add joinable! lines; not modelled.
    let foreign_keys = names(
        conn,
        "SELECT constraint_name::TEXT AS name FROM information_schema.table_constraints \
         WHERE constraint_type = 'FOREIGN KEY' AND table_schema = $1",
        &[&schema],
    );
    assert!(
        foreign_keys.is_empty(),
        "{}",
        not_modelled(&format!("foreign keys {foreign_keys:?}"))
    );
    // Names starting with `__` (diesel's migrations table, roachbank's migration lock) are left
    // out, as by diesel; the rest sorted by their bytes.
    let mut tables = names(
        conn,
        "SELECT table_name::TEXT AS name FROM information_schema.tables \
         WHERE table_schema = $1 AND table_name NOT LIKE '\\_\\_%' \
           AND table_type LIKE 'BASE TABLE'",
        &[&schema],
    );
    tables.sort_unstable();

    let mut out = String::from(HEADER);
    for table in &tables {
        out.push('\n');
        let table_comment = diesel::sql_query(
            "SELECT obj_description(quote_ident($1)::regclass, 'pg_class') AS comment",
        )
        .bind::<Text, _>(table)
        .get_result::<Comment>(conn)
        .expect("obj_description")
        .comment;
        let primary_key = names(
            conn,
            "SELECT column_name::TEXT AS name FROM information_schema.key_column_usage \
             WHERE constraint_name IN (SELECT constraint_name FROM \
                 information_schema.table_constraints WHERE constraint_type = 'PRIMARY KEY') \
               AND table_name = $1 AND table_schema = $2 \
             ORDER BY ordinal_position",
            &[table, &schema],
        );
        let columns = diesel::sql_query(
            "SELECT column_name::TEXT AS column_name, udt_name::TEXT AS udt_name, \
                    domain_name::TEXT AS domain_name, is_nullable::TEXT AS is_nullable, \
                    character_maximum_length::INT4 AS max_length, \
                    col_description(quote_ident($1)::regclass, ordinal_position::INT4) AS comment \
             FROM information_schema.columns \
             WHERE table_name = $1 AND table_schema = $2 \
             ORDER BY ordinal_position",
        )
        .bind::<Text, _>(table)
        .bind::<Text, _>(&schema)
        .load::<Column>(conn)
        .expect("information_schema.columns");

        check_identifier(table, None);
        assert!(
            !primary_key.is_empty(),
            "{}",
            not_modelled(&format!("table {table} without a primary key"))
        );
        out.push_str("diesel::table! {\n");
        write_doc_comment(&mut out, "    ", table_comment.as_deref());
        out.push_str(&format!("    {table} ({}) {{\n", primary_key.join(", ")));
        for column in &columns {
            check_identifier(&column.column_name, Some(table));
            write_doc_comment(&mut out, "        ", column.comment.as_deref());
            out.push_str(&format!(
                "        {} -> {},\n",
                column.column_name,
                column_type(table, column)
            ));
        }
        out.push_str("    }\n}\n");
    }
    if tables.len() >= 2 {
        let line = format!(
            "diesel::allow_tables_to_appear_in_same_query!({},);",
            tables.join(", ")
        );
        assert!(
            line.len() <= MAX_WIDTH,
            "{}",
            not_modelled("an allow_tables_to_appear_in_same_query! line rustfmt wraps")
        );
        out.push('\n');
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The column's type as diesel_cli writes it: the upper camel case of `udt_name`, in
/// `Nullable<…>` if the column may be NULL.
fn column_type(table: &str, column: &Column) -> String {
    let what = format!("column {table}.{}", column.column_name);
    assert!(
        column.domain_name.is_none() && column.max_length.is_none(),
        "{}",
        not_modelled(&format!("{what}: a domain or a length limit"))
    );
    let mut name = String::new();
    for part in column.udt_name.split('_') {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            name.push(first.to_ascii_uppercase());
            name.extend(chars);
        }
    }
    assert!(
        !column.udt_name.starts_with('_') && BUILT_IN_TYPES.contains(&name.as_str()),
        "{}",
        not_modelled(&format!("{what} of type {}", column.udt_name))
    );
    match column.is_nullable.as_str() {
        "YES" => format!("Nullable<{name}>"),
        _ => name,
    }
}

/// diesel_cli writes each line of a comment trimmed, after `/// ` (a blank line as `///`); no
/// comment, no doc line (`only-database-comments`).
fn write_doc_comment(out: &mut String, indent: &str, comment: Option<&str>) {
    for line in comment.unwrap_or_default().lines() {
        let line = line.trim();
        out.push_str(indent);
        out.push_str("///");
        if !line.is_empty() {
            out.push(' ');
            out.push_str(line);
        }
        out.push('\n');
    }
}

/// Refuses a name diesel_cli would rename (a `#[sql_name]` attribute and a trailing `_`): one
/// that is not a plain identifier, is a keyword or one of diesel's reserved names, starts with
/// `__`, or is a column named like its table.
fn check_identifier(name: &str, table: Option<&str>) {
    const KEYWORDS: &[&str] = &[
        "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
        "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
        "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub",
        "ref", "return", "self", "static", "struct", "super", "trait", "true", "try", "type",
        "typeof", "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
    ];
    const RESERVED: &[&str] = &["table", "columns", "is_nullable"];
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    assert!(
        plain
            && !KEYWORDS.contains(&name)
            && !RESERVED.contains(&name)
            && !name.starts_with("__")
            && Some(name) != table,
        "{}",
        not_modelled(&format!("the name {name:?}, which diesel_cli renames"))
    );
}

fn not_modelled(what: &str) -> String {
    format!(
        "tests/it/schema.rs does not model how diesel print-schema writes {what}: run \
         `diesel print-schema` (cargo install diesel_cli --no-default-features --features \
         postgres,sqlite), compare, and extend print_schema() to match"
    )
}
