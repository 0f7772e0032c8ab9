//! [`AdminSession`]: a connection made with the admin URL, the questions `init` asks through
//! it, and the statements it runs, each failure one line with its secrets scrubbed.

use super::error::{hint_for, InitError};
use super::quote::quote_ident;
use super::report::{step, InitStep, StepOutcome};
use crate::db::config::DatabaseConfig;
use crate::db::redact::Redactor;
use crate::db::{one_line, ConnectOptions, DbConnection, DbConnectionManager, Flavor};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};
use diesel_retry::RetryConnection;

/// A connection made with the admin URL, and the secrets to scrub from its errors.
pub(super) struct AdminSession {
    conn: DbConnection,
    redactor: Redactor,
}

/// The answer to a yes/no question (a query selecting one boolean `yes`).
#[derive(QueryableByName)]
struct Yes {
    #[diesel(sql_type = Bool)]
    yes: bool,
}

/// What the admin user may do (PostgreSQL's `pg_roles` attributes).
#[derive(QueryableByName)]
pub(super) struct AdminRights {
    /// The admin user, as the server calls it.
    #[diesel(sql_type = Text)]
    pub(super) name: String,
    /// Whether it is a superuser.
    #[diesel(sql_type = Bool)]
    pub(super) superuser: bool,
    /// Whether it may create roles.
    #[diesel(sql_type = Bool)]
    pub(super) createrole: bool,
    /// Whether it may create databases.
    #[diesel(sql_type = Bool)]
    pub(super) createdb: bool,
}

impl AdminSession {
    /// Connects with `config` (the admin URL, or it with another database), scrubbing
    /// `redactor`'s secrets from every error.
    pub(super) fn connect(
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

    /// Which server this is (CockroachDB or PostgreSQL).
    pub(super) fn detect(&mut self) -> Result<Flavor, InitError> {
        self.conn
            .detect_flavor()
            .map_err(|err| self.step_error("detecting the server", &err))
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
    pub(super) fn execute(&mut self, step: &str, sql: &str) -> Result<(), InitError> {
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
    pub(super) fn grant_unless_held(
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

    /// Whether the user `user` exists.
    pub(super) fn role_exists(&mut self, user: &str) -> Result<bool, InitError> {
        self.ask(
            &format!("looking up user {}", quote_ident(user)),
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1) AS yes",
            &[user],
        )
    }

    /// Whether the database `database` exists.
    pub(super) fn database_exists(&mut self, database: &str) -> Result<bool, InitError> {
        self.ask(
            &format!("looking up database {}", quote_ident(database)),
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1) AS yes",
            &[database],
        )
    }

    /// What the admin user may do (asked on PostgreSQL, before anything is changed).
    pub(super) fn rights(&mut self) -> Result<AdminRights, InitError> {
        diesel::sql_query(
            "SELECT current_user::text AS name, rolsuper AS superuser, \
             rolcreaterole AS createrole, rolcreatedb AS createdb \
             FROM pg_catalog.pg_roles WHERE rolname = current_user",
        )
        .get_result(self.pg())
        .map_err(|err| self.step_error("checking the admin's rights", &err))
    }
}
