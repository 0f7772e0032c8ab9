//! `init`: the tutorial's Step 2 ("Create the maxroach user and bank database") as a command.
//!
//! Connected with an admin URL, it creates the user and the database that `DATABASE_URL` names,
//! grants that user what it needs to create and use its tables, and then applies the embedded
//! migrations *as that user* (so the tables are the user's). It is idempotent: every object is
//! looked up first, only what is missing is created or granted, and a second run reports
//! nothing changed.
//!
//! * **PostgreSQL** — `CREATE ROLE "user" LOGIN [PASSWORD '…']` unless `pg_roles` has it;
//!   `CREATE DATABASE "db"` unless `pg_database` has it (its own statement: it cannot run in
//!   a transaction block); `GRANT ALL ON DATABASE "db" TO "user"` unless the user already has
//!   CREATE, CONNECT and TEMPORARY there; then, connected to the new database as the admin,
//!   `GRANT ALL ON SCHEMA public TO "user"` unless the user may already create and use objects
//!   there (PostgreSQL 15 no longer lets every user create in `public`), and `GRANT ALL ON ALL
//!   TABLES/SEQUENCES IN SCHEMA public` if tables someone else created there are not fully
//!   usable by the user. Before creating anything the admin's rights are checked
//!   (superuser, or CREATEROLE / CREATEDB as needed), so an admin without them changes nothing.
//! * **CockroachDB** — the tutorial's own statements: `CREATE USER IF NOT EXISTS "user" [WITH
//!   PASSWORD '…']`, `CREATE DATABASE IF NOT EXISTS "db"`, `GRANT ALL ON DATABASE "db" TO
//!   "user"` (CockroachDB's `public` schema lets every user create tables). Written from
//!   CockroachDB's documentation; no CockroachDB binary was available to test them.
//! * **SQLite** — there are no users or grants: `init` only creates the file and the tables.
//!
//! The new user's password, when the URL has one, is sent in a `CREATE ROLE` statement; every
//! form of it is scrubbed from `--echo` output and errors.

use crate::db::config::{Backend, DatabaseConfig, Redactor, MAX_IDENTIFIER_BYTES};
use crate::db::{
    one_line, ConnectOptions, Database, DbConnection, DbConnectionManager, DbError, Flavor,
};
use crate::migrate::OpenError;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};

/// What `init` will set up, checked before anything is touched (see [`InitPlan::new`]).
#[derive(Debug, Clone)]
pub struct InitPlan {
    target: DatabaseConfig,
    server: Option<ServerPlan>,
}

/// The server part of a plan: who creates whom.
#[derive(Debug, Clone)]
struct ServerPlan {
    admin: DatabaseConfig,
    user: String,
    database: String,
}

/// Why `init` cannot run or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A server database needs an admin URL to create its user and database with.
    #[error("init needs an admin URL for a server database: pass --admin-url URL or set ADMIN_DATABASE_URL (a user allowed to create users and databases: root on CockroachDB, postgres on PostgreSQL)")]
    MissingAdminUrl,
    /// An admin URL was given, but the target is a SQLite file (which has no users).
    #[error("--admin-url is for server databases, but the database is the SQLite file {path}, which has no users or grants: run init without --admin-url")]
    AdminUrlForSqlite {
        /// The SQLite file.
        path: String,
    },
    /// The admin URL names a SQLite file.
    #[error("the admin URL must name a CockroachDB or PostgreSQL server (postgresql://, postgres:// or cockroachdb://), not a SQLite file")]
    AdminUrlNotServer,
    /// The database URL does not say which user to create.
    #[error("the database URL {url} names no user: init creates the user and database it names, e.g. postgresql://maxroach@localhost:26257/bank")]
    NoUser {
        /// The database URL, password redacted.
        url: String,
    },
    /// The database URL does not say which database to create.
    #[error("the database URL {url} names no database: init creates the user and database it names, e.g. postgresql://maxroach@localhost:26257/bank")]
    NoDatabase {
        /// The database URL, password redacted.
        url: String,
    },
    /// A user or database name the server would truncate or refuse.
    #[error("the {what} name {name:?} cannot be used: names must be 1 to 63 bytes without NUL characters")]
    BadName {
        /// "user" or "database".
        what: &'static str,
        /// The name.
        name: String,
    },
    /// The admin user may not do what is needed; checked before anything was changed.
    #[error("the admin user {admin} may not {action} (it needs {needs}); nothing was changed")]
    AdminLacksRights {
        /// The admin URL's user (as the server calls it).
        admin: String,
        /// What it would have had to do.
        action: String,
        /// The right it lacks.
        needs: &'static str,
    },
    /// A GRANT the server accepted without granting anything (PostgreSQL only warns when the
    /// grantor lacks the grant option), so the privileges are still missing.
    #[error("granting {subject} had no effect: the admin URL's user may not grant them (it must own the object or be a superuser)")]
    GrantIneffective {
        /// The privileges, e.g. `privileges of "maxroach" on database "bank"`.
        subject: String,
    },
    /// A statement of the set-up failed.
    #[error("{step} failed: {message}{hint}")]
    Step {
        /// What was being done.
        step: String,
        /// The server's reason, on one line, secrets scrubbed.
        message: String,
        /// Advice when the reason is missing rights (empty otherwise).
        hint: &'static str,
    },
    /// Connecting (as the admin or as the user) failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Opening the database as the user, which migrates it, failed.
    #[error(transparent)]
    Open(#[from] OpenError),
}

impl InitError {
    /// Whether this is a usage error (the command line or URL is wrong; nothing was tried).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            InitError::MissingAdminUrl
                | InitError::AdminUrlForSqlite { .. }
                | InitError::AdminUrlNotServer
                | InitError::NoUser { .. }
                | InitError::NoDatabase { .. }
                | InitError::BadName { .. }
        )
    }
}

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// It did not exist and was created.
    Created,
    /// It existed already; left alone.
    AlreadyThere,
    /// The privileges were missing and were granted.
    Granted,
    /// The privileges were held already; nothing granted.
    AlreadyHeld,
    /// An idempotent statement was issued without checking first (CockroachDB's GRANT).
    Ensured,
}

impl StepOutcome {
    /// Whether this outcome changed the database.
    pub fn is_change(self) -> bool {
        matches!(self, StepOutcome::Created | StepOutcome::Granted)
    }
}

impl std::fmt::Display for StepOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StepOutcome::Created => "created",
            StepOutcome::AlreadyThere => "already there",
            StepOutcome::Granted => "granted",
            StepOutcome::AlreadyHeld => "already held",
            StepOutcome::Ensured => "ensured (GRANT is idempotent)",
        })
    }
}

/// One object `init` looked after, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitStep {
    /// The object, e.g. `user "maxroach"`.
    pub subject: String,
    /// What happened to it.
    pub outcome: StepOutcome,
}

/// What `init` did.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// The engine set up.
    pub flavor: Flavor,
    /// The user the migrations ran as (`None` on SQLite).
    pub user: Option<String>,
    /// Each object looked after, in order.
    pub steps: Vec<InitStep>,
    /// Migrations applied by this run, as the user.
    pub migrations_applied: usize,
}

impl InitReport {
    /// How many changes this run made (objects created, privileges granted, migrations
    /// applied); 0 on a second run.
    pub fn changes(&self) -> usize {
        self.steps
            .iter()
            .filter(|step| step.outcome.is_change())
            .count()
            + self.migrations_applied
    }
}

impl InitPlan {
    /// Checks that `target` (the resolved database URL) and `admin` (the admin URL, if any)
    /// make sense together, without connecting: a server target needs an admin URL and must
    /// name its user and database; a SQLite target takes no admin URL.
    pub fn new(target: &DatabaseConfig, admin: Option<&DatabaseConfig>) -> Result<Self, InitError> {
        match (target.backend(), admin) {
            (Backend::Sqlite, None) => Ok(InitPlan {
                target: target.clone(),
                server: None,
            }),
            (Backend::Sqlite, Some(_)) => Err(InitError::AdminUrlForSqlite {
                path: target.redacted(),
            }),
            (Backend::Server, None) => Err(InitError::MissingAdminUrl),
            (Backend::Server, Some(admin)) => {
                if admin.backend() != Backend::Server {
                    return Err(InitError::AdminUrlNotServer);
                }
                let user = target.user().ok_or_else(|| InitError::NoUser {
                    url: target.redacted(),
                })?;
                let database = target
                    .database_name()
                    .ok_or_else(|| InitError::NoDatabase {
                        url: target.redacted(),
                    })?;
                check_name("user", &user)?;
                check_name("database", &database)?;
                Ok(InitPlan {
                    target: target.clone(),
                    server: Some(ServerPlan {
                        admin: admin.clone(),
                        user,
                        database,
                    }),
                })
            }
        }
    }

    /// The user to create (`None` for SQLite).
    pub fn user(&self) -> Option<&str> {
        self.server.as_ref().map(|plan| plan.user.as_str())
    }

    /// The database to create (`None` for SQLite).
    pub fn database(&self) -> Option<&str> {
        self.server.as_ref().map(|plan| plan.database.as_str())
    }

    /// The admin URL's configuration (`None` for SQLite).
    pub fn admin(&self) -> Option<&DatabaseConfig> {
        self.server.as_ref().map(|plan| &plan.admin)
    }
}

fn check_name(what: &'static str, name: &str) -> Result<(), InitError> {
    if name.is_empty() || name.len() > MAX_IDENTIFIER_BYTES || name.contains('\0') {
        return Err(InitError::BadName {
            what,
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Runs the plan: creates and grants what is missing (connected with the admin URL), then
/// applies the migrations as the user. `options` are used for every connection (`--echo`,
/// statement timeout); the pool size is 1.
pub fn init(plan: &InitPlan, options: &ConnectOptions) -> Result<InitReport, InitError> {
    let mut options = ConnectOptions {
        pool_size: 1,
        ..options.clone()
    };
    let Some(server) = &plan.server else {
        let db = Database::open(plan.target.clone(), &options)?;
        return Ok(InitReport {
            flavor: db.flavor(),
            user: None,
            steps: Vec::new(),
            migrations_applied: db.migrations_applied(),
        });
    };

    // The admin's connections must scrub the user's password too, in every form it takes,
    // including the quoted literal of CREATE ROLE … PASSWORD.
    let mut redactor = options.redactor.clone();
    redactor.add_config(&plan.target);
    redactor.add_config(&server.admin);
    if let Some(password) = plan.target.password() {
        redactor.add_secret(&quote_literal(&password));
    }
    options.redactor = redactor.clone();

    let mut session = AdminSession::connect(&server.admin, &options, &redactor)?;
    let flavor = match options.flavor_override {
        Some(flavor) => flavor,
        None => session.detect()?,
    };
    let password = plan.target.password();
    let mut steps = match flavor {
        Flavor::CockroachDb => set_up_cockroachdb(&mut session, server, password.as_deref())?,
        _ => set_up_postgresql(&mut session, server, password.as_deref())?,
    };
    drop(session);
    // Rights on the new database's `public` schema are granted connected to that database.
    let in_db = server.admin.with_database(&server.database);
    let mut db_session = AdminSession::connect(&in_db, &options, &redactor)?;
    steps.extend(match flavor {
        Flavor::CockroachDb => vec![set_up_cockroachdb_schema(&mut db_session, server)?],
        _ => set_up_postgresql_schema(&mut db_session, server)?,
    });

    let db = Database::open(plan.target.clone(), &options)?;
    Ok(InitReport {
        flavor,
        user: Some(server.user.clone()),
        steps,
        migrations_applied: db.migrations_applied(),
    })
}

/// Advice for a failed set-up statement whose server message is `message` (empty if none).
fn hint_for(message: &str) -> &'static str {
    let lower = message.to_ascii_lowercase();
    // CockroachDB's insecure mode refuses passwords with 28P01 "setting or updating a password
    // is not supported in insecure mode" (cockroachdb/cockroach `pkg/sql/create_role.go`); its
    // messages are never translated. CREATE USER is init's first statement, so nothing exists yet.
    if lower.contains("not supported in insecure mode") {
        " (the CockroachDB cluster runs --insecure, where users cannot have passwords and none is \
         checked: remove the password from the database URL, or use a secure cluster; nothing \
         was created)"
    } else if ["permission denied", "privilege", "must be", "must have"]
        .iter()
        .any(|needle| lower.contains(needle))
    {
        " (the admin URL's user must be allowed to do this: a superuser, or on PostgreSQL a \
         user with CREATEROLE and CREATEDB that owns the database, on CockroachDB a member of \
         the admin role)"
    } else {
        ""
    }
}

/// A connection made with the admin URL, and the secrets to scrub from its errors.
struct AdminSession {
    conn: DbConnection,
    redactor: Redactor,
}

#[derive(QueryableByName)]
struct Yes {
    #[diesel(sql_type = Bool)]
    yes: bool,
}

#[derive(QueryableByName)]
struct AdminRights {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    superuser: bool,
    #[diesel(sql_type = Bool)]
    createrole: bool,
    #[diesel(sql_type = Bool)]
    createdb: bool,
}

impl AdminSession {
    fn connect(
        config: &DatabaseConfig,
        options: &ConnectOptions,
        redactor: &Redactor,
    ) -> Result<AdminSession, InitError> {
        let conn = DbConnectionManager::new(config.clone(), options).establish()?;
        Ok(AdminSession {
            conn,
            redactor: redactor.clone(),
        })
    }

    fn pg(&mut self) -> &mut PgConnection {
        match &mut self.conn {
            DbConnection::Postgresql(pg) => pg,
            // InitPlan::new only lets server URLs through.
            DbConnection::Sqlite(_) => unreachable!("the admin URL is always a server URL"),
        }
    }

    fn detect(&mut self) -> Result<Flavor, InitError> {
        Flavor::detect(&mut self.conn).map_err(|err| self.step_error("detecting the server", &err))
    }

    fn step_error(&self, step: &str, err: &diesel::result::Error) -> InitError {
        let message = one_line(&self.redactor.scrub(&err.to_string()));
        let hint = hint_for(&message);
        InitError::Step {
            step: step.to_string(),
            message,
            hint,
        }
    }

    /// Runs one statement (never several: CREATE DATABASE refuses a multi-statement batch).
    fn execute(&mut self, step: &str, sql: &str) -> Result<(), InitError> {
        self.pg()
            .batch_execute(sql)
            .map_err(|err| self.step_error(step, &err))
    }

    /// A yes/no question; `binds` fill `$1`, `$2`, … as text.
    fn ask(&mut self, step: &str, sql: &str, binds: &[&str]) -> Result<bool, InitError> {
        let result = match binds {
            [] => diesel::sql_query(sql).get_result::<Yes>(self.pg()),
            [a] => diesel::sql_query(sql)
                .bind::<Text, _>(*a)
                .get_result::<Yes>(self.pg()),
            [a, b] => diesel::sql_query(sql)
                .bind::<Text, _>(*a)
                .bind::<Text, _>(*b)
                .get_result::<Yes>(self.pg()),
            _ => unreachable!("at most two binds"),
        };
        result
            .map(|row| row.yes)
            .map_err(|err| self.step_error(step, &err))
    }

    /// Grants `subject` with `grants` unless `check` (a yes/no query over `binds`) says it is
    /// held already; then checks again, because PostgreSQL only warns when a GRANT grants
    /// nothing.
    fn grant_unless_held(
        &mut self,
        subject: String,
        check: &str,
        binds: &[&str],
        grants: &[String],
    ) -> Result<InitStep, InitError> {
        if self.ask(&format!("checking {subject}"), check, binds)? {
            return Ok(step(subject, StepOutcome::AlreadyHeld));
        }
        for grant in grants {
            self.execute(&format!("granting {subject}"), grant)?;
        }
        if !self.ask(&format!("checking {subject}"), check, binds)? {
            return Err(InitError::GrantIneffective { subject });
        }
        Ok(step(subject, StepOutcome::Granted))
    }

    fn role_exists(&mut self, user: &str) -> Result<bool, InitError> {
        self.ask(
            &format!("looking up user {}", quote_ident(user)),
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1) AS yes",
            &[user],
        )
    }

    fn database_exists(&mut self, database: &str) -> Result<bool, InitError> {
        self.ask(
            &format!("looking up database {}", quote_ident(database)),
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1) AS yes",
            &[database],
        )
    }
}

fn set_up_postgresql(
    session: &mut AdminSession,
    plan: &ServerPlan,
    password: Option<&str>,
) -> Result<Vec<InitStep>, InitError> {
    let user = quote_ident(&plan.user);
    let database = quote_ident(&plan.database);
    let role_exists = session.role_exists(&plan.user)?;
    let database_exists = session.database_exists(&plan.database)?;

    // Check the admin's rights before changing anything.
    let rights: AdminRights = diesel::sql_query(
        "SELECT current_user::text AS name, rolsuper AS superuser, \
         rolcreaterole AS createrole, rolcreatedb AS createdb \
         FROM pg_catalog.pg_roles WHERE rolname = current_user",
    )
    .get_result(session.pg())
    .map_err(|err| session.step_error("checking the admin's rights", &err))?;
    let may_create_role = rights.superuser || rights.createrole;
    let may_create_database = rights.superuser || rights.createdb;
    if !role_exists && !may_create_role {
        return Err(InitError::AdminLacksRights {
            admin: rights.name,
            action: format!("create user {user}"),
            needs: "CREATEROLE, or superuser",
        });
    }
    if !database_exists && !may_create_database {
        return Err(InitError::AdminLacksRights {
            admin: rights.name,
            action: format!("create database {database}"),
            needs: "CREATEDB, or superuser",
        });
    }

    let mut steps = Vec::new();
    let subject = format!("user {user}");
    if role_exists {
        steps.push(step(subject, StepOutcome::AlreadyThere));
    } else {
        let password = password
            .map(|password| format!(" PASSWORD {}", quote_literal(password)))
            .unwrap_or_default();
        session.execute(
            &format!("creating {subject}"),
            &format!("CREATE ROLE {user} LOGIN{password}"),
        )?;
        steps.push(step(subject, StepOutcome::Created));
    }

    let subject = format!("database {database}");
    if database_exists {
        steps.push(step(subject, StepOutcome::AlreadyThere));
    } else {
        session.execute(
            &format!("creating {subject}"),
            &format!("CREATE DATABASE {database}"),
        )?;
        steps.push(step(subject, StepOutcome::Created));
    }

    steps.push(session.grant_unless_held(
        format!("privileges of {user} on database {database}"),
        "SELECT has_database_privilege($1, $2, 'CREATE') \
         AND has_database_privilege($1, $2, 'CONNECT') \
         AND has_database_privilege($1, $2, 'TEMPORARY') AS yes",
        &[&plan.user, &plan.database],
        &[format!("GRANT ALL ON DATABASE {database} TO {user}")],
    )?);
    Ok(steps)
}

/// The grants made inside the new database (the session is connected to it).
fn set_up_postgresql_schema(
    session: &mut AdminSession,
    plan: &ServerPlan,
) -> Result<Vec<InitStep>, InitError> {
    let user = quote_ident(&plan.user);
    let schema = session.grant_unless_held(
        format!("privileges of {user} on schema public"),
        "SELECT has_schema_privilege($1, 'public', 'CREATE') \
         AND has_schema_privilege($1, 'public', 'USAGE') AS yes",
        &[&plan.user],
        &[format!("GRANT ALL ON SCHEMA public TO {user}")],
    )?;
    let tables = session.grant_unless_held(
        format!("privileges of {user} on existing tables in schema public"),
        "SELECT NOT EXISTS ( \
           SELECT 1 FROM pg_catalog.pg_class c \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S') AND NOT ( \
             CASE WHEN c.relkind = 'S' \
               THEN has_sequence_privilege($1, c.oid, 'USAGE') \
                AND has_sequence_privilege($1, c.oid, 'SELECT') \
                AND has_sequence_privilege($1, c.oid, 'UPDATE') \
               ELSE has_table_privilege($1, c.oid, 'SELECT') \
                AND has_table_privilege($1, c.oid, 'INSERT') \
                AND has_table_privilege($1, c.oid, 'UPDATE') \
                AND has_table_privilege($1, c.oid, 'DELETE') \
             END)) AS yes",
        &[&plan.user],
        &[
            format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {user}"),
            format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {user}"),
        ],
    )?;
    Ok(vec![schema, tables])
}

fn set_up_cockroachdb(
    session: &mut AdminSession,
    plan: &ServerPlan,
    password: Option<&str>,
) -> Result<Vec<InitStep>, InitError> {
    let user = quote_ident(&plan.user);
    let database = quote_ident(&plan.database);
    let role_exists = session.role_exists(&plan.user)?;
    let database_exists = session.database_exists(&plan.database)?;
    let password = password
        .map(|password| format!(" WITH PASSWORD {}", quote_literal(password)))
        .unwrap_or_default();
    // CockroachDB's IF NOT EXISTS makes every statement safe to repeat; what existed before
    // (asked above) tells whether it created anything.
    let statements = [
        (
            format!("user {user}"),
            "creating",
            format!("CREATE USER IF NOT EXISTS {user}{password}"),
            created_unless(role_exists),
        ),
        (
            format!("database {database}"),
            "creating",
            format!("CREATE DATABASE IF NOT EXISTS {database}"),
            created_unless(database_exists),
        ),
        (
            format!("privileges of {user} on database {database}"),
            "granting",
            format!("GRANT ALL ON DATABASE {database} TO {user}"),
            StepOutcome::Ensured,
        ),
    ];
    let mut steps = Vec::new();
    for (subject, doing, sql, outcome) in statements {
        session.execute(&format!("{doing} {subject}"), &sql)?;
        steps.push(step(subject, outcome));
    }
    Ok(steps)
}

/// Connected to the new database: lets the user create tables in its `public` schema. From
/// CockroachDB 23.2 the cluster setting `sql.auth.public_schema_create_privilege.enabled` may be
/// off, and then new databases no longer let every user create there (cockroachdb/docs
/// `cluster-settings`); granting it always is harmless where the setting is on.
fn set_up_cockroachdb_schema(
    session: &mut AdminSession,
    plan: &ServerPlan,
) -> Result<InitStep, InitError> {
    let user = quote_ident(&plan.user);
    let subject = format!("privileges of {user} on schema public");
    session.execute(
        &format!("granting {subject}"),
        &format!("GRANT CREATE, USAGE ON SCHEMA public TO {user}"),
    )?;
    Ok(step(subject, StepOutcome::Ensured))
}

fn step(subject: String, outcome: StepOutcome) -> InitStep {
    InitStep { subject, outcome }
}

fn created_unless(existed: bool) -> StepOutcome {
    if existed {
        StepOutcome::AlreadyThere
    } else {
        StepOutcome::Created
    }
}

/// `name` as a quoted SQL identifier: `"…"` with `"` doubled (PostgreSQL and CockroachDB).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a SQL string literal: `'…'` with `'` doubled; written `E'…'` with `\` doubled when
/// it holds a backslash, so it means the same whatever `standard_conforming_strings` says (as
/// libpq's `PQescapeLiteral` does).
pub fn quote_literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::config::UrlSource;

    fn config(url: &str) -> DatabaseConfig {
        DatabaseConfig::parse(url, UrlSource::Flag).unwrap()
    }

    #[test]
    fn an_insecure_cockroachdb_refusing_a_password_gets_a_hint_saying_what_to_do() {
        // The message of CockroachDB's pgerror for CREATE USER … WITH PASSWORD on --insecure.
        let hint = hint_for("setting or updating a password is not supported in insecure mode");
        assert!(
            hint.contains("remove the password from the database URL"),
            "{hint}"
        );
        assert!(hint.contains("nothing was created"), "{hint}");
        assert!(hint_for("relation \"x\" does not exist").is_empty());
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("max\"roach"), "\"max\"\"roach\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'c"), "E'a\\\\b''c'");
    }

    #[test]
    fn plans_check_urls_without_connecting() {
        let target = config("postgresql://maxroach@localhost:26257/bank");
        let admin = config("postgresql://root@localhost:26257/defaultdb");
        let plan = InitPlan::new(&target, Some(&admin)).unwrap();
        assert_eq!(
            (plan.user(), plan.database()),
            (Some("maxroach"), Some("bank"))
        );

        let usage = |result: Result<InitPlan, InitError>| {
            let err = result.unwrap_err();
            assert!(err.is_usage(), "{err}");
            err.to_string()
        };
        assert!(usage(InitPlan::new(&target, None)).contains("--admin-url"));
        assert!(usage(InitPlan::new(&config("bank.db"), Some(&admin))).contains("SQLite"));
        assert!(usage(InitPlan::new(&target, Some(&config("x.db")))).contains("admin URL"));
        assert!(
            usage(InitPlan::new(&config("postgresql://h/bank"), Some(&admin))).contains("no user")
        );
        assert!(usage(InitPlan::new(
            &config("postgresql://u:secret@h"),
            Some(&admin)
        ))
        .contains("postgresql://u:***@h"));
        let long = format!("postgresql://u@h/{}", "b".repeat(64));
        assert!(usage(InitPlan::new(&config(&long), Some(&admin))).contains("63 bytes"));
        assert!(InitPlan::new(&config("bank.db"), None)
            .unwrap()
            .user()
            .is_none());
    }
}
