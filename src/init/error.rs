//! [`InitError`]: why `init` cannot run or did not finish, and the advice a failed set-up
//! statement comes with.

use crate::db::DbError;
use crate::migrate::OpenError;

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

/// Advice for a failed set-up statement whose server message is `message` (empty if none).
pub(super) fn hint_for(message: &str) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
