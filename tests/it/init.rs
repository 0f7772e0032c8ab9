//! `roachbank init --admin-url URL`, end to end on the suite's server: it creates the user and
//! the database DATABASE_URL names, grants what the user needs, creates the tables as the user,
//! changes nothing when run again, and refuses clearly — changing nothing — when the admin may
//! not do it. Every check reads the server's catalogs through psql, not through roachbank.

use crate::support::bin::{
    assert_not_leaked, assert_one_line_error, assert_success, describe, dir_entries, run,
    stderr_of, stdout_of, temp_dir,
};
use crate::support::{
    ensure_password_checked_group, not_run_on_cockroachdb, not_run_on_postgresql, server,
    PASSWORD_CHECKED_GROUP, TUTORIAL_TABLES,
};
use diesel::connection::{Instrumentation, InstrumentationEvent, SimpleConnection};
use diesel::prelude::*;
use roachbank::db::config::{DatabaseConfig, UrlSource};
use roachbank::db::{ConnectOptions, Flavor};
use roachbank::init::{InitPlan, StepOutcome};
use roachbank::migrate::MIGRATION_LOCK_TABLE;
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};

/// A user and a database for one test, dropped (database first) when the value is.
struct Fresh {
    user: String,
    database: String,
    /// Further roles the test made (admins with few rights), dropped too.
    extra_roles: Vec<String>,
}

impl Fresh {
    fn new(stem: &str) -> Fresh {
        let tag = format!("{:010x}", rand::random::<u64>() & 0xff_ffff_ffff);
        Fresh {
            user: format!("rb_{stem}_user_{tag}"),
            database: format!("rb_{stem}_db_{tag}"),
            extra_roles: Vec::new(),
        }
    }

    /// The user's URL for the database (no password).
    fn url(&self) -> String {
        self.url_with_password(None)
    }

    fn url_with_password(&self, password: Option<&str>) -> String {
        let password = password.map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "postgresql://{}{password}@{}:{}/{}",
            self.user,
            server().host(),
            server().port(),
            self.database
        )
    }

    /// A login role with `attributes` (e.g. `CREATEROLE`), and its URL as an admin URL.
    fn admin_with(&mut self, attributes: &str) -> String {
        let name = format!("{}_admin{}", self.user, self.extra_roles.len());
        server().psql(
            "postgres",
            &format!("CREATE ROLE \"{name}\" LOGIN {attributes}"),
        );
        self.extra_roles.push(name.clone());
        format!(
            "postgresql://{name}@{}:{}/postgres",
            server().host(),
            server().port()
        )
    }

    /// Runs `sql` in this test's database.
    fn psql(&self, sql: &str) -> String {
        server().psql(&self.database, sql)
    }

    fn role_exists(&self) -> bool {
        server().psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_roles WHERE rolname = '{}'",
                self.user
            ),
        ) == "1"
    }

    fn database_exists(&self) -> bool {
        server().psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_database WHERE datname = '{}'",
                self.database
            ),
        ) == "1"
    }

    /// Everything init may touch, as the catalogs record it: the role (with its password
    /// hash), the database's ACL, the public schema's owner and ACL, each table's owner and
    /// ACL, and the migrations applied.
    fn snapshot(&self) -> String {
        let role = server().psql(
            "postgres",
            &format!(
                "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolpassword \
                 FROM pg_authid WHERE rolname = '{}'",
                self.user
            ),
        );
        let database = server().psql(
            "postgres",
            &format!(
                "SELECT datname, pg_get_userbyid(datdba), datacl FROM pg_database \
                 WHERE datname = '{}'",
                self.database
            ),
        );
        let inside = self.psql(
            "SELECT (SELECT pg_get_userbyid(nspowner) || ' ' || coalesce(nspacl::text, '') \
                     FROM pg_namespace WHERE nspname = 'public') || ' | ' || \
                    (SELECT string_agg(relname || ':' || pg_get_userbyid(relowner) || ':' || \
                                       coalesce(relacl::text, ''), ',' ORDER BY relname) \
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = 'public' AND relkind IN ('r', 'S')) || ' | ' || \
                    (SELECT string_agg(version, ',' ORDER BY version) \
                     FROM __diesel_schema_migrations)",
        );
        format!("{role}\n{database}\n{inside}")
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        // CockroachDB has no WITH (FORCE); its CASCADE drops the tables, sessions or not.
        let drop = if server().is_cockroachdb() {
            "CASCADE"
        } else {
            "WITH (FORCE)"
        };
        let _ = server().try_psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{}\" {drop}", self.database),
        );
        for role in std::iter::once(&self.user).chain(&self.extra_roles) {
            let _ = server().try_psql("postgres", &format!("DROP ROLE IF EXISTS \"{role}\""));
        }
    }
}

/// `roachbank --database-url URL init --admin-url ADMIN [more…]` in `dir`.
fn init(dir: &Path, url: &str, admin: &str, more: &[&str]) -> Output {
    let mut args = vec!["--database-url", url, "init", "--admin-url", admin];
    args.extend_from_slice(more);
    run(dir, &args, &[])
}

#[test]
fn init_creates_the_user_and_the_database_and_the_tables_belong_to_the_user() {
    let fresh = Fresh::new("create");
    let dir = temp_dir();
    let output = init(dir.path(), &fresh.url(), server().admin_url(), &[]);
    assert_success(&output);
    let stdout = stdout_of(&output);
    for expected in [
        format!("user \"{}\": created", fresh.user),
        format!("database \"{}\": created", fresh.database),
        format!("applied as \"{}\"", fresh.user),
    ] {
        assert!(
            stdout.contains(&expected),
            "no {expected:?}: {}",
            describe(&output)
        );
    }
    assert!(fresh.role_exists() && fresh.database_exists());
    assert_eq!(
        fresh.psql(
            "SELECT string_agg(tablename || ':' || tableowner, ',' ORDER BY tablename) \
             FROM pg_tables WHERE schemaname = 'public'"
        ),
        format!(
            "__diesel_schema_migrations:{u},{MIGRATION_LOCK_TABLE}:{u},accounts:{u},points:{u},\
             transfers:{u}",
            u = fresh.user
        ),
        "the tables must be created by (and belong to) the user"
    );

    // The user can now use the bank on its own.
    let seed = run(
        dir.path(),
        &["--database-url", &fresh.url(), "seed", "--accounts", "5"],
        &[],
    );
    assert_success(&seed);
    assert_eq!(fresh.psql("SELECT count(*) FROM accounts"), "5");
    assert_eq!(dir_entries(dir.path()), Vec::<String>::new());
}

#[test]
fn second_init_succeeds_and_changes_nothing() {
    if not_run_on_cockroachdb(
        "second_init_succeeds_and_changes_nothing",
        "it compares snapshots of PostgreSQL's catalogs (pg_authid's password hash, the ACLs \
         in datacl, nspacl and relacl) before and after",
    ) {
        return;
    }
    let fresh = Fresh::new("twice");
    let dir = temp_dir();
    let first = init(dir.path(), &fresh.url(), server().admin_url(), &[]);
    assert_success(&first);
    let before = fresh.snapshot();

    let second = init(dir.path(), &fresh.url(), server().admin_url(), &[]);
    assert_success(&second);
    let stdout = stdout_of(&second);
    assert!(
        stdout.contains("nothing changed")
            && !stdout.contains("created")
            && !stdout.contains(": granted"),
        "{}",
        describe(&second)
    );
    assert!(
        stdout.contains("migrations: up to date"),
        "{}",
        describe(&second)
    );
    assert_eq!(
        fresh.snapshot(),
        before,
        "the second run changed the catalogs"
    );
}

#[test]
fn a_password_in_the_url_becomes_the_new_users_password_and_echo_never_shows_it() {
    if not_run_on_cockroachdb(
        "a_password_in_the_url_becomes_the_new_users_password_and_echo_never_shows_it",
        "the insecure CockroachDB the suite runs against refuses passwords (28P01 \"setting or \
         updating a password is not supported in insecure mode\") and checks none",
    ) {
        return;
    }
    ensure_password_checked_group();
    let fresh = Fresh::new("pw");
    // A quote and a backslash, so the SQL literal differs from the raw password.
    let password = "It's\\a-S3cret";
    let encoded = "It%27s%5Ca-S3cret";
    let dir = temp_dir();
    let url = fresh.url_with_password(Some(encoded));
    let output = init(dir.path(), &url, server().admin_url(), &["--echo"]);
    assert_success(&output);
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains(&format!(
            "CREATE ROLE \"{}\" LOGIN PASSWORD ***",
            fresh.user
        )),
        "--echo should show the CREATE ROLE with the password hidden: {}",
        describe(&output)
    );
    for secret in [password, encoded, "It''s", "S3cret"] {
        assert_not_leaked(&output, secret);
    }
    assert!(
        server()
            .psql(
                "postgres",
                &format!(
                    "SELECT rolpassword FROM pg_authid WHERE rolname = '{}'",
                    fresh.user
                ),
            )
            .starts_with("SCRAM-SHA-256$"),
        "the new user has no (SCRAM) password"
    );

    // Make the server check this user's password, then try a wrong one and the right one.
    server().psql(
        "postgres",
        &format!("GRANT {PASSWORD_CHECKED_GROUP} TO \"{}\"", fresh.user),
    );
    let wrong = run(
        dir.path(),
        &[
            "--database-url",
            &fresh.url_with_password(Some("wrong")),
            "balance",
        ],
        &[],
    );
    let line = assert_one_line_error(&wrong);
    assert!(line.contains("password authentication failed"), "{line}");
    let right = run(dir.path(), &["--database-url", &url, "balance"], &[]);
    assert_success(&right);
    assert_not_leaked(&right, "S3cret");
}

#[test]
fn admin_without_createrole_fails_with_one_line_and_creates_nothing() {
    if not_run_on_cockroachdb(
        "admin_without_createrole_fails_with_one_line_and_creates_nothing",
        "init checks the admin's CREATEROLE in PostgreSQL's pg_roles before acting; on \
         CockroachDB it reports the server's own refusal",
    ) {
        return;
    }
    let mut fresh = Fresh::new("weak");
    let admin = fresh.admin_with("");
    let dir = temp_dir();
    let output = init(dir.path(), &fresh.url(), &admin, &[]);
    let line = assert_one_line_error(&output);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        line.contains("may not create user") && line.contains("CREATEROLE"),
        "{}",
        describe(&output)
    );
    assert!(line.contains("nothing was changed"), "{line}");
    assert!(!fresh.role_exists(), "the user was created anyway");
    assert!(!fresh.database_exists(), "the database was created anyway");
}

#[test]
fn admin_without_createdb_fails_before_creating_the_user() {
    if not_run_on_cockroachdb(
        "admin_without_createdb_fails_before_creating_the_user",
        "init checks the admin's CREATEDB in PostgreSQL's pg_roles before acting; on \
         CockroachDB it reports the server's own refusal",
    ) {
        return;
    }
    let mut fresh = Fresh::new("nodb");
    let admin = fresh.admin_with("CREATEROLE");
    let dir = temp_dir();
    let output = init(dir.path(), &fresh.url(), &admin, &[]);
    let line = assert_one_line_error(&output);
    assert!(
        line.contains("may not create database") && line.contains("CREATEDB"),
        "{}",
        describe(&output)
    );
    assert!(
        !fresh.role_exists(),
        "the user was created before the check failed"
    );
    assert!(!fresh.database_exists());
}

#[test]
fn grant_the_admin_may_not_give_fails_with_one_line_instead_of_a_later_migration_error() {
    if not_run_on_cockroachdb(
        "grant_the_admin_may_not_give_fails_with_one_line_instead_of_a_later_migration_error",
        "a GRANT that grants nothing with only a warning is PostgreSQL's behaviour, and so is \
         init's check that the privileges took effect",
    ) {
        return;
    }
    // The user and the database exist (made by postgres); the admin may create roles and
    // databases but does not own this one, so its GRANT grants nothing (PostgreSQL only warns).
    let mut fresh = Fresh::new("notowner");
    server().psql("postgres", &format!("CREATE ROLE \"{}\" LOGIN", fresh.user));
    server().psql(
        "postgres",
        &format!("CREATE DATABASE \"{}\"", fresh.database),
    );
    let admin = fresh.admin_with("CREATEROLE CREATEDB");
    let dir = temp_dir();
    let output = init(dir.path(), &fresh.url(), &admin, &[]);
    let line = assert_one_line_error(&output);
    assert!(
        line.contains(&format!("privileges of \"{}\" on database", fresh.user))
            && line.contains("had no effect")
            && line.contains("must own"),
        "{}",
        describe(&output)
    );
}

#[test]
fn an_existing_database_with_another_owners_tables_is_granted_to_the_user() {
    if not_run_on_cockroachdb(
        "an_existing_database_with_another_owners_tables_is_granted_to_the_user",
        "the grants on existing tables and sequences (checked with has_sequence_privilege on a \
         bigserial's sequence) are init's PostgreSQL path",
    ) {
        return;
    }
    let fresh = Fresh::new("existing");
    server().psql("postgres", &format!("CREATE ROLE \"{}\" LOGIN", fresh.user));
    server().psql(
        "postgres",
        &format!("CREATE DATABASE \"{}\"", fresh.database),
    );
    fresh.psql("CREATE TABLE legacy (id bigserial PRIMARY KEY, note text)");
    let dir = temp_dir();
    let output = init(dir.path(), &fresh.url(), server().admin_url(), &[]);
    assert_success(&output);
    let stdout = stdout_of(&output);
    for expected in [
        format!("user \"{}\": already there", fresh.user),
        format!("database \"{}\": already there", fresh.database),
        format!(
            "privileges of \"{}\" on database \"{}\": granted",
            fresh.user, fresh.database
        ),
        format!("privileges of \"{}\" on schema public: granted", fresh.user),
        format!(
            "privileges of \"{}\" on existing tables in schema public: granted",
            fresh.user
        ),
    ] {
        assert!(
            stdout.contains(&expected),
            "no {expected:?}: {}",
            describe(&output)
        );
    }
    assert_eq!(
        fresh.psql(&format!(
            "SELECT has_table_privilege('{u}', 'legacy', 'INSERT') \
                AND has_sequence_privilege('{u}', 'legacy_id_seq', 'USAGE')",
            u = fresh.user
        )),
        "t"
    );
    let seed = run(
        dir.path(),
        &["--database-url", &fresh.url(), "seed", "--accounts", "3"],
        &[],
    );
    assert_success(&seed);
}

/// Every statement `init`'s connections send, in order.
#[derive(Clone, Default)]
struct SentStatements(Arc<Mutex<Vec<String>>>);

impl Instrumentation for SentStatements {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            self.0.lock().unwrap().push(query.to_string());
        }
    }
}

/// Runs `init` through the library as on CockroachDB (the suite's flavour override: a no-op on
/// a real CockroachDB), for `fresh`'s user and database with the suite's admin URL. Returns
/// what init reported and the statements it sent.
fn init_as_cockroachdb(fresh: &Fresh) -> (roachbank::init::InitReport, Vec<String>) {
    let parse = |url: &str| DatabaseConfig::parse(url, UrlSource::Flag).unwrap();
    let plan = InitPlan::new(&parse(&fresh.url()), Some(&parse(server().admin_url())))
        .expect("a plan for the test's user and database");
    let sent = SentStatements::default();
    let recorder = sent.clone();
    let options = ConnectOptions {
        flavor_override: Some(Flavor::CockroachDb),
        instrumentation: Some(Arc::new(move || {
            Box::new(recorder.clone()) as Box<dyn Instrumentation>
        })),
        ..ConnectOptions::default()
    };
    let (report, db) = roachbank::init::init(&plan, &options)
        .unwrap_or_else(|err| panic!("init as CockroachDB failed: {err}"));
    drop(db);
    let statements = sent.0.lock().unwrap().clone();
    (report, statements)
}

/// The user's own connection to its database (what the app will use).
fn connect_as_user(fresh: &Fresh) -> PgConnection {
    PgConnection::establish(&fresh.url()).expect("connect as the user")
}

// CockroachDB: `GRANT ALL ON DATABASE` gives no privileges on the tables already in it
// (cockroachdb/docs src/current/v25.1/grant.md, "Granting privileges": "The user does not
// automatically get privileges to new or existing tables in the database"), so init grants
// on them too, as on PostgreSQL.
#[test]
fn init_as_cockroachdb_lets_the_user_use_tables_the_admin_created_before() {
    // As in the tutorial, the admin made the user and the database, then a table in it.
    let fresh = Fresh::new("crdb_before");
    server().psql("postgres", &format!("CREATE USER \"{}\"", fresh.user));
    server().psql(
        "postgres",
        &format!("CREATE DATABASE \"{}\"", fresh.database),
    );
    fresh.psql(
        "CREATE TABLE legacy (id BIGINT PRIMARY KEY, note TEXT); \
         INSERT INTO legacy (id, note) VALUES (1, 'made by the admin before init')",
    );
    let (report, sent) = init_as_cockroachdb(&fresh);

    // The user can use the admin's table as its own: read, write, change and delete.
    let mut conn = connect_as_user(&fresh);
    conn.batch_execute(
        "SELECT note FROM legacy WHERE id = 1; \
         INSERT INTO legacy (id, note) VALUES (2, 'written by the user'); \
         UPDATE legacy SET note = 'changed by the user' WHERE id = 1; \
         DELETE FROM legacy WHERE id = 2",
    )
    .unwrap_or_else(|err| panic!("the user cannot use the admin's table: {err}"));
    assert_eq!(
        fresh.psql("SELECT note FROM legacy ORDER BY id"),
        "changed by the user"
    );

    let grant = format!(
        "GRANT ALL ON ALL TABLES IN SCHEMA public TO \"{}\"",
        fresh.user
    );
    assert!(
        sent.iter().any(|sql| sql.trim() == grant),
        "init sent no {grant:?}: {sent:#?}"
    );
    let subject = format!(
        "privileges of \"{}\" on existing tables in schema public",
        fresh.user
    );
    assert!(
        report
            .steps
            .iter()
            .any(|step| step.subject == subject && step.outcome == StepOutcome::Ensured),
        "no step {subject:?}: {:?}",
        report.steps
    );
}

// The issue's own case: root made the tutorial's tables in `bank` before `init`. On
// CockroachDB the user adopts them (ALTER TABLE and COMMENT ON need the CREATE privilege on the
// table there: cockroachdb/docs src/current/v25.1/alter-table.md and comment-on.md, "Required
// privileges"), which the grant on existing tables gives. PostgreSQL lets only a table's owner
// do either, so there the admin's tables cannot be adopted by another user.
#[test]
fn init_on_cockroachdb_adopts_the_tutorial_tables_root_created_before() {
    if not_run_on_postgresql(
        "init_on_cockroachdb_adopts_the_tutorial_tables_root_created_before",
        "rule that the CREATE privilege on a table (not ownership, as on PostgreSQL) allows \
         ALTER TABLE and COMMENT ON",
    ) {
        return;
    }
    let fresh = Fresh::new("crdb_tutorial");
    server().psql("postgres", &format!("CREATE USER \"{}\"", fresh.user));
    server().psql(
        "postgres",
        &format!("CREATE DATABASE \"{}\"", fresh.database),
    );
    fresh.psql(TUTORIAL_TABLES);
    let (report, _) = init_as_cockroachdb(&fresh);
    assert_eq!(report.flavor, Flavor::CockroachDb);
    assert!(report.migrations_applied > 0, "{report:?}");
    // Each tutorial account got its opening deposit (migration 3 read root's accounts).
    assert_eq!(
        fresh.psql("SELECT count(*) FROM transfers WHERE source_id IS NULL"),
        "3"
    );
}

#[test]
fn admin_url_and_database_url_from_dotenv_are_used() {
    let fresh = Fresh::new("dotenv");
    let dir = temp_dir();
    std::fs::write(
        dir.path().join(".env"),
        format!(
            "DATABASE_URL={}\nADMIN_DATABASE_URL={}\n",
            fresh.url(),
            server().admin_url()
        ),
    )
    .expect("write .env");
    let output = run(dir.path(), &["init"], &[]);
    assert_success(&output);
    assert!(
        fresh.role_exists() && fresh.database_exists(),
        "{}",
        describe(&output)
    );
}

#[test]
fn init_for_a_server_without_an_admin_url_is_a_usage_error_and_writes_nothing() {
    let fresh = Fresh::new("noadmin");
    let dir = temp_dir();
    let output = run(dir.path(), &["--database-url", &fresh.url(), "init"], &[]);
    let line = assert_one_line_error(&output);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        line.contains("--admin-url") && line.contains("ADMIN_DATABASE_URL"),
        "{line}"
    );
    assert!(!fresh.role_exists() && !fresh.database_exists());
    assert!(dir_entries(dir.path()).is_empty());
}

#[test]
fn init_with_bad_urls_is_a_usage_error_and_writes_nothing() {
    let admin = server().admin_url().to_string();
    let host = format!("{}:{}", server().host(), server().port());
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--database-url".into(),
                "sqlite://x.db".into(),
                "init".into(),
                "--admin-url".into(),
                admin.clone(),
            ],
            "SQLite",
        ),
        (
            vec![
                "--database-url".into(),
                format!("postgresql://{host}/bank"),
                "init".into(),
                "--admin-url".into(),
                admin.clone(),
            ],
            "names no user",
        ),
        (
            vec![
                "--database-url".into(),
                format!("postgresql://u:pw-in-url@{host}"),
                "init".into(),
                "--admin-url".into(),
                admin.clone(),
            ],
            "names no database",
        ),
        (
            vec![
                "--database-url".into(),
                format!("postgresql://u@{host}/bank"),
                "init".into(),
                "--admin-url".into(),
                "admin.db".into(),
            ],
            "admin URL must name",
        ),
        (
            vec![
                "--database-url".into(),
                format!("postgresql://u@{host}/bank"),
                "init".into(),
                "--admin-url".into(),
                "mysql://root:adminpw@h/x".into(),
            ],
            "unsupported database URL",
        ),
    ];
    for (args, expected) in cases {
        let dir = temp_dir();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = run(dir.path(), &args, &[]);
        let line = assert_one_line_error(&output);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            describe(&output)
        );
        assert!(line.contains(expected), "{args:?}: {line}");
        assert_not_leaked(&output, "pw-in-url");
        assert_not_leaked(&output, "adminpw");
        assert!(
            dir_entries(dir.path()).is_empty(),
            "{args:?} wrote {:?}",
            dir_entries(dir.path())
        );
    }
}

#[test]
fn init_on_sqlite_creates_the_file_and_its_tables_and_needs_no_admin() {
    let dir = temp_dir();
    let first = run(
        dir.path(),
        &["--database-url", "sqlite://bank.db", "init"],
        &[],
    );
    assert_success(&first);
    assert!(dir.path().join("bank.db").is_file());
    assert!(
        stdout_of(&first).contains("applied"),
        "{}",
        describe(&first)
    );
    let second = run(
        dir.path(),
        &["--database-url", "sqlite://bank.db", "init"],
        &[],
    );
    assert_success(&second);
    assert!(
        stdout_of(&second).contains("nothing changed"),
        "{}",
        describe(&second)
    );
}
