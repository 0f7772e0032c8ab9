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
//!   PASSWORD '…']` and `CREATE DATABASE IF NOT EXISTS "db"` unless they exist, `GRANT ALL ON
//!   DATABASE "db" TO "user"`; then, connected to the database, `GRANT CREATE, USAGE ON SCHEMA
//!   public` and `GRANT ALL ON ALL TABLES IN SCHEMA public` (a database-level grant gives no
//!   privileges on the tables already there: see `cockroachdb::set_up_schema`). Written from
//!   CockroachDB's documentation; no CockroachDB binary was available to test them.
//! * **SQLite** — there are no users or grants: `init` only creates the file and the tables.
//!
//! The new user's password, when the URL has one, is sent in a `CREATE ROLE` statement, which
//! `--echo` shows with `PASSWORD ***`.
//!
//! One module per job: [`InitPlan`] (`plan`), [`InitError`] (`error`), [`InitReport`]
//! (`report`), the admin's connection (`admin`), the PostgreSQL and CockroachDB set-ups
//! (`postgresql`, `cockroachdb`) and SQL quoting (`quote`); [`init`] runs them in order.

mod admin;
mod cockroachdb;
mod error;
mod plan;
mod postgresql;
mod quote;
mod report;

pub use error::InitError;
pub use plan::InitPlan;
pub use quote::{quote_ident, quote_literal};
pub use report::{InitReport, InitStep, StepOutcome};

use crate::db::{ConnectOptions, Database, Flavor};
use admin::AdminSession;

/// Runs the plan: creates and grants what is missing (connected with the admin URL), then
/// applies the migrations as the user. `options` are used for every connection (`--echo`,
/// statement timeout); the pool size is 1. Returns what was done, and the database opened as
/// the user (its pool holds the session that migrated, for whatever the caller asks next).
pub fn init(
    plan: &InitPlan,
    options: &ConnectOptions,
) -> Result<(InitReport, Database), InitError> {
    let mut options = ConnectOptions {
        pool_size: 1,
        ..options.clone()
    };
    let Some(server) = &plan.server else {
        let db = Database::open(plan.target.clone(), &options)?;
        let report = InitReport {
            flavor: db.flavor(),
            user: None,
            steps: Vec::new(),
            migrations_applied: db.migrations_applied(),
        };
        return Ok((report, db));
    };

    // The admin's connections must show both URLs redacted, and the user's password in
    // CREATE ROLE … PASSWORD '…' (CockroachDB: WITH PASSWORD '…') as `PASSWORD ***`.
    let mut redactor = options.redactor.clone();
    redactor.add_config(&plan.target);
    redactor.add_config(&server.admin);
    if let Some(password) = plan.target.password() {
        let literal = format!("PASSWORD {}", quote_literal(&password));
        redactor.add_replacement(&literal, "PASSWORD ***");
    }
    options.redactor = redactor.clone();

    let mut session = AdminSession::connect(&server.admin, &options, &redactor)?;
    let flavor = match options.forced_flavor() {
        Some(flavor) => flavor,
        None => session.detect()?,
    };
    let password = plan.target.password();
    let mut steps = match flavor {
        Flavor::CockroachDb => cockroachdb::set_up(&mut session, server, password.as_deref())?,
        _ => postgresql::set_up(&mut session, server, password.as_deref())?,
    };
    drop(session);
    // Rights on the new database's `public` schema are granted connected to that database.
    let in_db = server.admin.with_database(&server.database);
    let mut db_session = AdminSession::connect(&in_db, &options, &redactor)?;
    steps.extend(match flavor {
        Flavor::CockroachDb => cockroachdb::set_up_schema(&mut db_session, server)?,
        _ => postgresql::set_up_schema(&mut db_session, server)?,
    });

    let db = Database::open(plan.target.clone(), &options)?;
    let report = InitReport {
        flavor,
        user: Some(server.user.clone()),
        steps,
        migrations_applied: db.migrations_applied(),
    };
    Ok((report, db))
}
