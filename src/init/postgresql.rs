//! `init` on PostgreSQL: every object looked up first, only what is missing created or
//! granted, and the admin's rights checked before anything is changed.

use super::admin::AdminSession;
use super::error::InitError;
use super::plan::ServerPlan;
use super::quote::{quote_ident, quote_literal};
use super::report::{step, InitStep, StepOutcome};

/// Creates the user and the database and grants the user its rights on the database (the
/// session is connected to the admin URL's database): what is missing only, after checking
/// that the admin may do it.
pub(super) fn set_up(
    session: &mut AdminSession,
    plan: &ServerPlan,
    password: Option<&str>,
) -> Result<Vec<InitStep>, InitError> {
    let user = quote_ident(&plan.user);
    let database = quote_ident(&plan.database);
    let role_exists = session.role_exists(&plan.user)?;
    let database_exists = session.database_exists(&plan.database)?;

    // Check the admin's rights before changing anything.
    let rights = session.rights()?;
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
pub(super) fn set_up_schema(
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
