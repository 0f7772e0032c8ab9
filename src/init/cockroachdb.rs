//! `init` on CockroachDB: the tutorial's own statements, every one safe to repeat (`IF NOT
//! EXISTS`, GRANT). Written from CockroachDB's documentation; no CockroachDB binary was
//! available to test them.

use super::admin::AdminSession;
use super::error::InitError;
use super::plan::ServerPlan;
use super::quote::{quote_ident, quote_literal};
use super::report::{step, InitStep, StepOutcome};

/// Creates the user and the database unless they exist, with the tutorial's own idempotent
/// statements, and grants the user all on the database (the session is connected to the admin
/// URL's database).
pub(super) fn set_up(
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
    // What exists already (asked above) is left alone, as on PostgreSQL; what is missing is
    // created with IF NOT EXISTS, which keeps the statement safe against another init racing
    // this one. The GRANT is idempotent and always sent.
    let mut steps = Vec::new();
    for (subject, exists, sql) in [
        (
            format!("user {user}"),
            role_exists,
            format!("CREATE USER IF NOT EXISTS {user}{password}"),
        ),
        (
            format!("database {database}"),
            database_exists,
            format!("CREATE DATABASE IF NOT EXISTS {database}"),
        ),
    ] {
        if exists {
            steps.push(step(subject, StepOutcome::AlreadyThere));
        } else {
            session.execute(&format!("creating {subject}"), &sql)?;
            steps.push(step(subject, StepOutcome::Created));
        }
    }
    let subject = format!("privileges of {user} on database {database}");
    session.execute(
        &format!("granting {subject}"),
        &format!("GRANT ALL ON DATABASE {database} TO {user}"),
    )?;
    steps.push(step(subject, StepOutcome::Ensured));
    Ok(steps)
}

/// Connected to the new database: lets the user create tables in its `public` schema, and use
/// the tables already there.
///
/// * From CockroachDB 23.2 the cluster setting `sql.auth.public_schema_create_privilege.enabled`
///   may be off, and then new databases no longer let every user create there
///   (cockroachdb/docs `cluster-settings`); granting it always is harmless where it is on.
/// * `GRANT ALL ON DATABASE` gives no privileges on the tables in it: "The user does *not*
///   automatically get privileges to new or existing tables in the database" (cockroachdb/docs
///   `src/current/v25.1/grant.md`, "Granting privileges"). A table someone else made before
///   `init` — root running the tutorial's own `create_all`, say — would stay out of the user's
///   sight (`information_schema` lists only what a user holds privileges on), so adoption
///   would not see it and the ledger migration's read of it fail with 42501. `GRANT ALL ON ALL
///   TABLES IN SCHEMA public` grants "on all tables and sequences in a schema" (same page,
///   "Parameters"; since v21.2): the tables there now, not later ones — which the user creates
///   itself, and so owns. PostgreSQL accepts the same statement (tables only; its sequences need
///   `ALL SEQUENCES`, which CockroachDB's form covers already). Idempotent, so always sent.
pub(super) fn set_up_schema(
    session: &mut AdminSession,
    plan: &ServerPlan,
) -> Result<Vec<InitStep>, InitError> {
    let user = quote_ident(&plan.user);
    let mut steps = Vec::new();
    for (subject, sql) in [
        (
            format!("privileges of {user} on schema public"),
            format!("GRANT CREATE, USAGE ON SCHEMA public TO {user}"),
        ),
        (
            format!("privileges of {user} on existing tables in schema public"),
            format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {user}"),
        ),
    ] {
        session.execute(&format!("granting {subject}"), &sql)?;
        steps.push(step(subject, StepOutcome::Ensured));
    }
    Ok(steps)
}
