//! `init` on CockroachDB: the tutorial's own statements, every one safe to repeat (`IF NOT
//! EXISTS`, GRANT). Written from CockroachDB's documentation; no CockroachDB binary was
//! available to test them.

use super::admin::AdminSession;
use super::error::InitError;
use super::plan::ServerPlan;
use super::quote::{quote_ident, quote_literal};
use super::report::{step, InitStep, StepOutcome};

/// Creates the user and the database and grants the user all on the database (the session is
/// connected to the admin URL's database), with the tutorial's own idempotent statements.
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
pub(super) fn set_up_schema(
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

/// `Created`, unless the object `existed` before the statement.
fn created_unless(existed: bool) -> StepOutcome {
    if existed {
        StepOutcome::AlreadyThere
    } else {
        StepOutcome::Created
    }
}
