//! Where the bank lives: `--database-url`, `DATABASE_URL` (environment or `.env`), or the
//! embedded SQLite default, turned into a backend and the string its driver is handed. A server
//! URL is read once, by libpq ([`ConnectionUrl`]), and given roachbank's own settings.

use super::url::{split_scheme, ConnectionUrl, UrlError};
use std::path::PathBuf;
use std::time::Duration;

/// The SQLite file used when no database URL is given at all.
pub const DEFAULT_SQLITE_FILE: &str = "bank.db";

/// Seconds libpq waits for a server before giving up, unless the URL sets `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u32 = 10;

/// The `application_name` a server sees (in `pg_stat_activity`, CockroachDB's
/// `SHOW SESSIONS`, logs) unless the URL or `PGAPPNAME` names another.
pub const APPLICATION_NAME: &str = "roachbank";

/// Environment variable `init` reads the admin URL from when `--admin-url` is not given.
pub const ADMIN_URL_ENV: &str = "ADMIN_DATABASE_URL";

/// Which kind of database a URL names: the variant of [`DbConnection`](super::DbConnection) it
/// is opened as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A CockroachDB or PostgreSQL server, reached through libpq (same wire protocol; the
    /// flavour is detected after connecting).
    Postgresql,
    /// An embedded SQLite file.
    Sqlite,
}

/// Where the database URL came from (decides whether the default is announced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlSource {
    /// `--database-url` on the command line.
    Flag,
    /// `DATABASE_URL` from the environment or a `.env` file.
    Environment,
    /// Nothing was given: the embedded SQLite default.
    Default,
}

/// A database URL that was understood, ready to connect with. Its `Debug` shows no password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    target: Target,
    source: UrlSource,
}

/// What a [`DatabaseConfig`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A CockroachDB or PostgreSQL server, its URL as libpq read it with roachbank's settings.
    Postgresql(ConnectionUrl),
    /// A SQLite file, by its path.
    Sqlite(String),
}

/// A database URL that cannot be used. No message shows a password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The URL's scheme is not one roachbank speaks.
    #[error("unsupported database URL {shown}: use postgresql://, postgres://, cockroachdb://, sqlite://PATH or a *.db file path")]
    UnsupportedScheme {
        /// Its scheme (`mysql://…`), or that it has none.
        shown: String,
    },
    /// The URL is empty.
    #[error("the database URL is empty")]
    Empty,
    /// `sqlite://` with no path after it.
    #[error("sqlite:// needs a file path, e.g. sqlite://bank.db")]
    MissingSqlitePath,
    /// An in-memory SQLite database (`:memory:`, `mode=memory`): every pooled connection would
    /// get its own empty one, and all of it is gone when the command ends.
    #[error("{path} is an in-memory SQLite database: each connection gets its own empty one and nothing outlives the command; use a file, e.g. sqlite://bank.db")]
    InMemorySqlite {
        /// The path given.
        path: String,
    },
    /// libpq cannot read the server URL, or would read a piece of its password as something
    /// else ([`ConnectionUrl::parse`]).
    #[error("cannot use the database URL {0}")]
    Url(#[from] UrlError),
}

impl DatabaseConfig {
    /// Resolves `init`'s admin URL: `flag` (from `--admin-url`), else [`ADMIN_URL_ENV`] in the
    /// environment (load `.env` before calling), else `None`.
    pub fn resolve_admin(flag: Option<&str>) -> Result<Option<Self>, ConfigError> {
        given(flag, ADMIN_URL_ENV).transpose()
    }

    /// Resolves the database in the documented order: `flag` (from `--database-url`), then
    /// `DATABASE_URL` in the environment (load `.env` before calling), then the embedded
    /// SQLite file [`DEFAULT_SQLITE_FILE`].
    pub fn resolve(flag: Option<&str>) -> Result<Self, ConfigError> {
        given(flag, "DATABASE_URL").unwrap_or_else(|| Ok(Self::default_sqlite()))
    }

    /// The embedded SQLite default: `bank.db` in the current directory.
    pub fn default_sqlite() -> Self {
        let target = Target::Sqlite(DEFAULT_SQLITE_FILE.into());
        let source = UrlSource::Default;
        DatabaseConfig { target, source }
    }

    /// Understands one URL: `postgresql://` / `postgres://` (and the tutorial's
    /// `cockroachdb://`) name a server, read by libpq ([`ConnectionUrl::parse`]); `sqlite://PATH`
    /// or a path ending in `.db` names a SQLite file. A server gets the libpq settings its URL
    /// does not make itself: `connect_timeout` ([`DEFAULT_CONNECT_TIMEOUT_SECS`]) and
    /// `fallback_application_name` ([`APPLICATION_NAME`]; libpq's own "use this unless
    /// `application_name` or `PGAPPNAME` says otherwise"). Several hosts
    /// (`postgresql://h1:p1,h2:p2/db`) are tried by libpq in order.
    pub fn parse(url: &str, source: UrlSource) -> Result<Self, ConfigError> {
        let url = url.trim();
        let (scheme, path) = split_scheme(url).unzip();
        let (path, lower) = (path.unwrap_or_default(), url.to_ascii_lowercase());
        let in_memory = lower.contains(":memory:") || lower.contains("mode=memory");
        let unsupported = |shown| Err(ConfigError::UnsupportedScheme { shown });
        let target = match scheme.as_deref() {
            _ if url.is_empty() => return Err(ConfigError::Empty),
            Some("sqlite") if path.is_empty() => return Err(ConfigError::MissingSqlitePath),
            Some("sqlite") if in_memory => {
                return Err(ConfigError::InMemorySqlite { path: path.into() })
            }
            Some("sqlite") => Target::Sqlite(path.into()),
            None if !url.contains("://") && lower.ends_with(".db") => Target::Sqlite(url.into()),
            Some("postgresql" | "postgres" | "cockroachdb") => {
                let mut url = ConnectionUrl::parse(url)?;
                if url.get("connect_timeout").is_none() {
                    url = url.with("connect_timeout", &DEFAULT_CONNECT_TIMEOUT_SECS.to_string());
                }
                let named = url.get("application_name");
                if named.or(url.get("fallback_application_name")).is_none() {
                    url = url.with("fallback_application_name", APPLICATION_NAME);
                }
                Target::Postgresql(url)
            }
            Some(scheme) => return unsupported(format!("{scheme}://…")),
            None => return unsupported("(not scheme://…)".into()),
        };
        Ok(DatabaseConfig { target, source })
    }

    /// How long making one connection may take: libpq's `connect_timeout`
    /// ([`DatabaseConfig::connect_timeout`], the URL's own or the [`DEFAULT_CONNECT_TIMEOUT_SECS`]
    /// that [`DatabaseConfig::parse`] adds), which libpq applies to each host the URL lists,
    /// times the number of hosts. A URL that sets no limit (`connect_timeout=0`) counts the
    /// default here, so that the waits built on this one (the pool's) still end. SQLite: the
    /// default too. (libpq applies the timeout to each address of a host name, so a name with
    /// several unanswering addresses takes longer.)
    pub fn connect_bound(&self) -> Duration {
        let default = Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS.into());
        let per_host = self.connect_timeout().unwrap_or(default);
        let hosts = self.url().map_or(1, ConnectionUrl::host_count);
        per_host.saturating_mul(u32::try_from(hosts).unwrap_or(u32::MAX))
    }

    /// A server (CockroachDB or PostgreSQL) or SQLite.
    pub fn backend(&self) -> Backend {
        match self.target {
            Target::Postgresql(_) => Backend::Postgresql,
            Target::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Where the URL came from.
    pub fn source(&self) -> UrlSource {
        self.source
    }

    /// The string handed to the driver: libpq's `key='value'` string
    /// ([`ConnectionUrl::to_conninfo`]), or a SQLite file path. It may hold a password: never
    /// print it; print [`DatabaseConfig::redacted`] instead.
    pub fn connection_string(&self) -> String {
        match &self.target {
            Target::Postgresql(url) => url.to_conninfo(),
            Target::Sqlite(path) => path.clone(),
        }
    }

    /// The server URL as libpq read it, roachbank's settings included; `None` for SQLite.
    pub fn url(&self) -> Option<&ConnectionUrl> {
        match &self.target {
            Target::Postgresql(url) => Some(url),
            Target::Sqlite(_) => None,
        }
    }

    /// The SQLite file this configuration names, if it names one.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match &self.target {
            Target::Postgresql(_) => None,
            Target::Sqlite(path) => Some(PathBuf::from(path)),
        }
    }

    /// What is shown of it: `scheme://user@host:port/database` ([`ConnectionUrl::redacted`]),
    /// or the SQLite file's path.
    pub fn redacted(&self) -> String {
        match &self.target {
            Target::Postgresql(url) => url.redacted(),
            Target::Sqlite(path) => path.clone(),
        }
    }

    /// The user a server URL names (`user@` or `?user=`); `None` for SQLite or when the URL
    /// leaves it to libpq's defaults.
    pub fn user(&self) -> Option<String> {
        self.url()?.get("user").map(str::to_string)
    }

    /// The database a server URL names (its path or `?dbname=`); `None` for SQLite or when the
    /// URL leaves it to libpq's defaults.
    pub fn database_name(&self) -> Option<String> {
        self.url()?.get("dbname").map(str::to_string)
    }

    /// The password a server URL carries (`user:password@` or `?password=`). Crate-private:
    /// only `init` needs it, to give a new user that password.
    pub(crate) fn password(&self) -> Option<String> {
        self.url()?.get("password").map(str::to_string)
    }

    /// How long libpq waits for each host (each address of it) before trying the next: the
    /// URL's `connect_timeout` seconds, else [`DEFAULT_CONNECT_TIMEOUT_SECS`]. `None` for
    /// SQLite, and when libpq waits as long as the operating system does (0 or less) or
    /// refuses to connect (not a number).
    pub fn connect_timeout(&self) -> Option<Duration> {
        let seconds: u64 = self.url()?.get("connect_timeout")?.trim().parse().ok()?;
        (seconds > 0).then(|| Duration::from_secs(seconds))
    }

    /// The same server with another database, everything else kept. SQLite configurations
    /// come back unchanged.
    pub fn with_database(&self, database: &str) -> DatabaseConfig {
        let target = match &self.target {
            Target::Postgresql(url) => Target::Postgresql(url.clone().with("dbname", database)),
            sqlite => sqlite.clone(),
        };
        DatabaseConfig { target, ..*self }
    }
}

/// The configuration `flag` names, else the environment variable `env`'s (if set, not blank).
fn given(flag: Option<&str>, env: &str) -> Option<Result<DatabaseConfig, ConfigError>> {
    let from_env = || std::env::var(env).ok().filter(|url| !url.trim().is_empty());
    let Some(url) = flag else {
        return Some(DatabaseConfig::parse(&from_env()?, UrlSource::Environment));
    };
    Some(DatabaseConfig::parse(url, UrlSource::Flag))
}

#[cfg(test)]
mod tests;
