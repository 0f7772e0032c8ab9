//! [`InitPlan`]: what `init` will set up, checked before anything is touched.

use super::error::InitError;
use crate::db::config::{Backend, DatabaseConfig};

/// PostgreSQL's (and CockroachDB's) longest identifier, in bytes; longer names are truncated
/// by the server, so `init` refuses them.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// What `init` will set up, checked before anything is touched (see [`InitPlan::new`]).
#[derive(Debug, Clone)]
pub struct InitPlan {
    /// The database URL: the user and database to create, and what the migrations run as.
    pub(super) target: DatabaseConfig,
    /// Who creates whom; `None` for SQLite, which has no users.
    pub(super) server: Option<ServerPlan>,
}

/// The server part of a plan: who creates whom.
#[derive(Debug, Clone)]
pub(super) struct ServerPlan {
    /// The admin URL's configuration.
    pub(super) admin: DatabaseConfig,
    /// The user to create, as the database URL names it.
    pub(super) user: String,
    /// The database to create, as the database URL names it.
    pub(super) database: String,
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
            (Backend::Postgresql, None) => Err(InitError::MissingAdminUrl),
            (Backend::Postgresql, Some(admin)) => {
                if admin.backend() != Backend::Postgresql {
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

/// Refuses a user or database name the server would truncate or refuse.
fn check_name(what: &'static str, name: &str) -> Result<(), InitError> {
    if name.is_empty() || name.len() > MAX_IDENTIFIER_BYTES || name.contains('\0') {
        return Err(InitError::BadName {
            what,
            name: name.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::config::UrlSource;

    fn config(url: &str) -> DatabaseConfig {
        DatabaseConfig::parse(url, UrlSource::Flag).unwrap()
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
        .contains("postgresql://u@h"));
        let long = format!("postgresql://u@h/{}", "b".repeat(64));
        assert!(usage(InitPlan::new(&config(&long), Some(&admin))).contains("63 bytes"));
        assert!(InitPlan::new(&config("bank.db"), None)
            .unwrap()
            .user()
            .is_none());
    }
}
