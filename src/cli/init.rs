//! `roachbank init`: first-run setup. Resolve the admin URL and check the plan (a usage error
//! touches nothing), set up the user, the database and the tables, and say what was done.

use super::error::{CliError, StdoutError};
use super::invocation::{warn_if_not_durable, Invocation};
use super::output::{plural, say};
use roachbank::db::config::DatabaseConfig;
use roachbank::db::durability::durability_warning;
use roachbank::init::{self, InitPlan, InitReport};

/// Runs `init` with the admin URL `--admin-url` gave, if it gave one, and warns if the server
/// does not make commits durable.
pub fn run(invocation: &mut Invocation<'_>, admin_url: Option<&str>) -> Result<(), CliError> {
    let admin = DatabaseConfig::resolve_admin(admin_url)?;
    if let Some(admin) = &admin {
        // Before anything can print: --echo's connection events and the error line scrub it.
        invocation.redactor.add_config(admin);
    }
    let plan = InitPlan::new(invocation.config, admin.as_ref()).map_err(CliError::from_init)?;
    let options = invocation.connect_options()?;
    let (report, db) = init::init(&plan, &options).map_err(|err| {
        let hint = super::hint::after_no_password(&err.to_string());
        CliError::from_init(err)
            .context("init failed")
            .with_hint(hint)
    })?;
    invocation.announce_created_default();
    print(&report)?;
    // Asked on the session of the user init set up (the one that migrated), as the other
    // commands ask.
    warn_if_not_durable(durability_warning(&db));
    Ok(())
}

/// One line per step, then the migrations, then what changed.
fn print(report: &InitReport) -> Result<(), StdoutError> {
    for step in &report.steps {
        say!("{}: {}", step.subject, step.outcome)?;
    }
    let who = report
        .user
        .as_deref()
        .map(|user| format!(" as {}", init::quote_ident(user)))
        .unwrap_or_default();
    if report.migrations_applied > 0 {
        say!("migrations: {} applied{who}", report.migrations_applied)?;
    } else {
        say!("migrations: up to date{who}")?;
    }
    match report.changes() {
        0 => say!("init: {} database ready; nothing changed", report.flavor)?,
        n => say!(
            "init: {} database ready; {n} change{}",
            report.flavor,
            plural(n as u64)
        )?,
    }
    Ok(())
}
