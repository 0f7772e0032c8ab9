//! Where the bank lives: `--database-url`, `DATABASE_URL` (environment or `.env`), or the
//! embedded SQLite default, turned into a backend and a connection string. Server URLs are
//! read and edited through [`ConnectionUrl`]; what is shown of them is redacted by
//! [`super::redact`].

use super::conninfo::ConnInfo;
use super::redact::{redact_url, Redactor};
use super::url::ConnectionUrl;
use std::fmt;
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

/// PostgreSQL's (and CockroachDB's) longest identifier, in bytes; longer names are truncated
/// by the server, so `init` refuses them.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Which kind of database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A CockroachDB or PostgreSQL server, reached through libpq (same wire protocol; the
    /// flavour is detected after connecting).
    Server,
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

/// A database URL that was understood, ready to connect with.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    backend: Backend,
    connection_string: String,
    source: UrlSource,
}

/// A database URL that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The URL's scheme is not one roachbank speaks.
    #[error("unsupported database URL {url}: use postgresql://, postgres://, cockroachdb://, sqlite://PATH or a *.db file path")]
    UnsupportedScheme {
        /// The offending URL, password redacted.
        url: String,
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
}

impl DatabaseConfig {
    /// Resolves `init`'s admin URL: `flag` (from `--admin-url`), else [`ADMIN_URL_ENV`] in the
    /// environment (load `.env` before calling), else `None`.
    pub fn resolve_admin(flag: Option<&str>) -> Result<Option<Self>, ConfigError> {
        if let Some(url) = flag {
            return Self::parse(url, UrlSource::Flag).map(Some);
        }
        match std::env::var(ADMIN_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => {
                Self::parse(&url, UrlSource::Environment).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Resolves the database in the documented order: `flag` (from `--database-url`), then
    /// `DATABASE_URL` in the environment (load `.env` before calling), then the embedded
    /// SQLite file [`DEFAULT_SQLITE_FILE`].
    pub fn resolve(flag: Option<&str>) -> Result<Self, ConfigError> {
        if let Some(url) = flag {
            return Self::parse(url, UrlSource::Flag);
        }
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => Self::parse(&url, UrlSource::Environment),
            _ => Ok(Self::default_sqlite()),
        }
    }

    /// The embedded SQLite default: `bank.db` in the current directory.
    pub fn default_sqlite() -> Self {
        DatabaseConfig {
            backend: Backend::Sqlite,
            connection_string: DEFAULT_SQLITE_FILE.to_string(),
            source: UrlSource::Default,
        }
    }

    /// Understands one URL: `postgresql://` / `postgres://` (and the tutorial's `cockroachdb://`,
    /// rewritten to `postgresql://`) name a server; `sqlite://PATH` or a path ending in `.db`
    /// names a SQLite file. Server URLs get libpq parameters they do not set themselves:
    /// `connect_timeout` ([`DEFAULT_CONNECT_TIMEOUT_SECS`]) and `fallback_application_name`
    /// ([`APPLICATION_NAME`]; libpq's own "use this unless the URL's `application_name` or
    /// `PGAPPNAME` says otherwise"). Multi-host URLs (`postgresql://h1:p1,h2:p2/db`) are passed
    /// to libpq as they are; it tries the hosts in order.
    pub fn parse(url: &str, source: UrlSource) -> Result<Self, ConfigError> {
        let url = url.trim();
        if url.is_empty() {
            return Err(ConfigError::Empty);
        }
        let lower = url.to_ascii_lowercase();
        if let Some(rest) = strip_prefix_ci(url, &lower, "cockroachdb://") {
            return Ok(Self::server(format!("postgresql://{rest}"), source));
        }
        if lower.starts_with("postgresql://") || lower.starts_with("postgres://") {
            // libpq knows the scheme in lower case only.
            let scheme_end = lower.find("://").unwrap_or(0);
            return Ok(Self::server(
                format!("{}{}", &lower[..scheme_end], &url[scheme_end..]),
                source,
            ));
        }
        if let Some(path) = strip_prefix_ci(url, &lower, "sqlite://") {
            if path.is_empty() {
                return Err(ConfigError::MissingSqlitePath);
            }
            let path_lower = path.to_ascii_lowercase();
            if path_lower.contains(":memory:") || path_lower.contains("mode=memory") {
                return Err(ConfigError::InMemorySqlite {
                    path: path.to_string(),
                });
            }
            return Ok(DatabaseConfig {
                backend: Backend::Sqlite,
                connection_string: path.to_string(),
                source,
            });
        }
        if !url.contains("://") && lower.ends_with(".db") {
            return Ok(DatabaseConfig {
                backend: Backend::Sqlite,
                connection_string: url.to_string(),
                source,
            });
        }
        Err(ConfigError::UnsupportedScheme {
            url: redact_url(url),
        })
    }

    /// A server configuration for `url`, with roachbank's default libpq parameters added to
    /// its query where libpq finds them (after the host list and the database name, never into
    /// a password holding `?`) unless the URL sets them itself.
    fn server(url: String, source: UrlSource) -> Self {
        let connect_timeout = DEFAULT_CONNECT_TIMEOUT_SECS.to_string();
        // (parameter to add, its value, parameters that make it unnecessary)
        let defaults: [(&str, &str, &[&str]); 2] = [
            ("connect_timeout", &connect_timeout, &["connect_timeout"]),
            (
                "fallback_application_name",
                APPLICATION_NAME,
                &["application_name", "fallback_application_name"],
            ),
        ];
        let connection_string = match ConnectionUrl::parse(&url) {
            Ok(mut parsed) => {
                for (name, value, unless) in defaults {
                    if !unless.iter().any(|given| parsed.param(given).is_some()) {
                        parsed = parsed.with_param(name, value);
                    }
                }
                parsed.into_string()
            }
            // libpq will refuse the URL and say why; pass it on as it is.
            Err(_) => url,
        };
        DatabaseConfig {
            backend: Backend::Server,
            connection_string,
            source,
        }
    }

    /// How long making one connection may take: libpq's `connect_timeout` (the URL's own, or
    /// the [`DEFAULT_CONNECT_TIMEOUT_SECS`] that [`DatabaseConfig::parse`] adds), which libpq
    /// applies to each host the URL lists, times the number of hosts. A URL that sets no limit
    /// (`connect_timeout=0`) counts the default here, so that the waits built on this one (the
    /// pool's) still end. SQLite: the default too. (libpq applies the timeout to each address
    /// of a host name, so a name with several unanswering addresses takes longer.)
    pub fn connect_bound(&self) -> Duration {
        let default = Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS.into());
        let info = match self.backend {
            Backend::Server => ConnInfo::parse(&self.connection_string),
            Backend::Sqlite => None,
        };
        let Some(info) = info else {
            return default;
        };
        let per_host = info
            .get("connect_timeout")
            .and_then(|seconds| seconds.trim().parse::<u64>().ok())
            .filter(|seconds| *seconds > 0)
            .map_or(default, Duration::from_secs);
        per_host.saturating_mul(u32::try_from(info.host_count()).unwrap_or(u32::MAX))
    }

    /// Server or SQLite.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where the URL came from.
    pub fn source(&self) -> UrlSource {
        self.source
    }

    /// The string handed to the driver: a libpq URL, or a SQLite file path. It may hold a
    /// password: never print it; print [`DatabaseConfig::redacted`] instead.
    pub fn connection_string(&self) -> &str {
        &self.connection_string
    }

    /// The server URL taken apart; `None` for SQLite, or for a URL whose host list libpq's
    /// grammar cannot read (connecting with it fails and says why).
    pub fn url(&self) -> Option<ConnectionUrl> {
        if self.backend != Backend::Server {
            return None;
        }
        ConnectionUrl::parse(&self.connection_string).ok()
    }

    /// The SQLite file this configuration names, if it names one.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        (self.backend == Backend::Sqlite).then(|| PathBuf::from(&self.connection_string))
    }

    /// The URL with any password replaced by `***`, safe to show.
    pub fn redacted(&self) -> String {
        redact_url(&self.connection_string)
    }

    /// Removes every password this configuration carries from `text` (for messages produced
    /// by libraries, which may quote the URL).
    pub fn scrub(&self, text: &str) -> String {
        Redactor::for_config(self).scrub(text)
    }

    /// The user a server URL names (`user@` or `?user=`), percent-decoded, as libpq reads it;
    /// `None` for SQLite or when the URL leaves it to libpq's defaults
    /// ([`ConnectionUrl::user`]).
    pub fn user(&self) -> Option<String> {
        self.url()?.user()
    }

    /// The database a server URL names (its path or `?dbname=`), percent-decoded, as libpq
    /// reads it; `None` for SQLite or when the URL leaves it to libpq's defaults
    /// ([`ConnectionUrl::database`]).
    pub fn database_name(&self) -> Option<String> {
        self.url()?.database()
    }

    /// The password a server URL carries (`user:password@` or `?password=`, however spelled),
    /// as libpq reads it. Crate-private: only `init` needs it, to give a new user that
    /// password.
    pub(crate) fn password(&self) -> Option<String> {
        self.url()?.password()
    }

    /// The same server with another database ([`ConnectionUrl::with_database`]: the path
    /// replaced, any `dbname=` parameter dropped, everything else kept). SQLite configurations,
    /// and URLs whose host list libpq's grammar cannot read, come back unchanged.
    pub fn with_database(&self, database: &str) -> DatabaseConfig {
        match self.url() {
            Some(url) => DatabaseConfig {
                connection_string: url.with_database(database).into_string(),
                ..self.clone()
            },
            None => self.clone(),
        }
    }
}

/// Redactors for configurations. Written here rather than in [`super::redact`] so that
/// module need not know about configurations (it sits below this one).
impl Redactor {
    /// A redactor for one configuration's URL and password.
    pub fn for_config(config: &DatabaseConfig) -> Redactor {
        let mut redactor = Redactor::new();
        redactor.add_config(config);
        redactor
    }

    /// Also scrubs `config`'s URL (shown redacted) and every password it holds
    /// ([`Redactor::add_url`]); a SQLite configuration holds none.
    pub fn add_config(&mut self, config: &DatabaseConfig) {
        if config.backend() == Backend::Server {
            self.add_url(config.connection_string());
        }
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("backend", &self.backend)
            .field("url", &self.redacted())
            .field("source", &self.source)
            .finish()
    }
}

/// `url` after `prefix`, which `lower` (`url` in lower case) starts with.
fn strip_prefix_ci<'a>(url: &'a str, lower: &str, prefix: &str) -> Option<&'a str> {
    lower.starts_with(prefix).then(|| &url[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::conninfo::ConnInfo;

    #[test]
    fn cockroachdb_scheme_is_a_server_synonym() {
        let config = DatabaseConfig::parse(
            "cockroachdb://maxroach@localhost:26257/bank?sslmode=disable",
            UrlSource::Flag,
        )
        .unwrap();
        assert_eq!(config.backend(), Backend::Server);
        assert_eq!(
            config.connection_string(),
            "postgresql://maxroach@localhost:26257/bank?sslmode=disable&connect_timeout=10\
             &fallback_application_name=roachbank"
        );
    }

    #[test]
    fn explicit_connect_timeout_and_application_name_are_kept() {
        let config = DatabaseConfig::parse(
            "postgres://h/db?connect_timeout=3&application_name=mine",
            UrlSource::Flag,
        )
        .unwrap();
        assert_eq!(
            config.connection_string(),
            "postgres://h/db?connect_timeout=3&application_name=mine"
        );
        let fallback = DatabaseConfig::parse(
            "postgres://h/db?fallback_application_name=x",
            UrlSource::Flag,
        )
        .unwrap();
        assert_eq!(
            fallback.connection_string(),
            "postgres://h/db?fallback_application_name=x&connect_timeout=10"
        );
    }

    #[test]
    fn the_connect_bound_is_the_urls_connect_timeout_for_each_host() {
        let bound = |url: &str| {
            DatabaseConfig::parse(url, UrlSource::Flag)
                .unwrap()
                .connect_bound()
        };
        assert_eq!(bound("postgresql://h/db"), Duration::from_secs(10));
        assert_eq!(
            bound("postgresql://h/db?connect_timeout=3"),
            Duration::from_secs(3)
        );
        assert_eq!(
            bound("postgresql://h1:1,h2:2,h3:3/db?connect_timeout=2"),
            Duration::from_secs(6)
        );
        // No limit asked for: the waits built on the bound must still end.
        assert_eq!(
            bound("postgresql://h/db?connect_timeout=0"),
            Duration::from_secs(10)
        );
        assert_eq!(bound("bank.db"), Duration::from_secs(10));
    }

    #[test]
    fn multi_host_urls_survive_parsing_and_redaction() {
        let config = DatabaseConfig::parse(
            "postgresql://u:pw%2Fx@h1:5432,h2:5433/bank?sslmode=verify-full",
            UrlSource::Flag,
        )
        .unwrap();
        assert_eq!(
            config.connection_string(),
            "postgresql://u:pw%2Fx@h1:5432,h2:5433/bank?sslmode=verify-full&connect_timeout=10\
             &fallback_application_name=roachbank"
        );
        assert_eq!(
            config.redacted(),
            "postgresql://u:***@h1:5432,h2:5433/bank?sslmode=verify-full&connect_timeout=10\
             &fallback_application_name=roachbank"
        );
        assert_eq!(config.user().as_deref(), Some("u"));
        assert_eq!(config.password().as_deref(), Some("pw/x"));
        assert_eq!(config.database_name().as_deref(), Some("bank"));
    }

    #[test]
    fn user_database_and_password_come_from_userinfo_path_or_query() {
        let plain =
            DatabaseConfig::parse("postgresql://max%40roach@h/my%20bank", UrlSource::Flag).unwrap();
        assert_eq!(plain.user().as_deref(), Some("max@roach"));
        assert_eq!(plain.database_name().as_deref(), Some("my bank"));
        assert_eq!(plain.password(), None);
        let query = DatabaseConfig::parse(
            "postgresql://h/?user=maxroach&dbname=bank&password=s%27q",
            UrlSource::Flag,
        )
        .unwrap();
        assert_eq!(query.user().as_deref(), Some("maxroach"));
        assert_eq!(query.database_name().as_deref(), Some("bank"));
        assert_eq!(query.password().as_deref(), Some("s'q"));
        let bare = DatabaseConfig::parse("postgresql://h", UrlSource::Flag).unwrap();
        assert_eq!((bare.user(), bare.database_name()), (None, None));
        let sqlite = DatabaseConfig::parse("bank.db", UrlSource::Flag).unwrap();
        assert_eq!((sqlite.user(), sqlite.database_name()), (None, None));
    }

    #[test]
    fn with_database_replaces_path_and_dbname_and_keeps_the_rest() {
        let config = DatabaseConfig::parse(
            "postgresql://root:pw@h1:26257,h2:26258/defaultdb?dbname=x&sslmode=require",
            UrlSource::Flag,
        )
        .unwrap();
        let other = config.with_database("new bank");
        assert_eq!(
            other.connection_string(),
            "postgresql://root:pw@h1:26257,h2:26258/new%20bank?sslmode=require&connect_timeout=10\
             &fallback_application_name=roachbank"
        );
        assert_eq!(other.database_name().as_deref(), Some("new bank"));
        let no_path = DatabaseConfig::parse("postgresql://h:1", UrlSource::Flag).unwrap();
        assert!(no_path
            .with_database("bank")
            .connection_string()
            .starts_with("postgresql://h:1/bank?"));
    }

    #[test]
    fn in_memory_sqlite_is_refused_with_what_to_use_instead() {
        for url in [
            "sqlite://:memory:",
            "sqlite://file::memory:",
            "sqlite://file:bank?mode=memory&cache=shared",
        ] {
            let err = DatabaseConfig::parse(url, UrlSource::Flag).unwrap_err();
            assert!(
                matches!(err, ConfigError::InMemorySqlite { .. }),
                "{url}: {err}"
            );
            assert!(err.to_string().contains("use a file"), "{err}");
        }
    }

    #[test]
    fn sqlite_urls_and_db_paths_name_files() {
        let url = DatabaseConfig::parse("sqlite://data/x.sqlite", UrlSource::Flag).unwrap();
        assert_eq!(url.sqlite_path(), Some(PathBuf::from("data/x.sqlite")));
        let abs = DatabaseConfig::parse("sqlite:///tmp/a.db", UrlSource::Flag).unwrap();
        assert_eq!(abs.sqlite_path(), Some(PathBuf::from("/tmp/a.db")));
        let path = DatabaseConfig::parse("my.db", UrlSource::Flag).unwrap();
        assert_eq!(path.backend(), Backend::Sqlite);
    }

    #[test]
    fn unknown_schemes_are_refused_without_their_password() {
        let err = DatabaseConfig::parse("mysql://u:hunter2@h/db", UrlSource::Flag).unwrap_err();
        let message = err.to_string();
        // libpq refuses it, so everything up to the last `@` is hidden.
        assert!(message.contains("mysql://***@h/db"), "{message}");
        assert!(!message.contains("hunter2"));
        assert_eq!(
            DatabaseConfig::parse("  ", UrlSource::Flag),
            Err(ConfigError::Empty)
        );
        assert_eq!(
            DatabaseConfig::parse("sqlite://", UrlSource::Flag),
            Err(ConfigError::MissingSqlitePath)
        );
    }

    #[test]
    fn roachbank_parameters_land_in_the_query_even_after_a_question_mark_in_the_password() {
        for (given, expected) in [
            (
                "postgresql://u:pa?ss@h/db",
                "postgresql://u:pa?ss@h/db?connect_timeout=10&fallback_application_name=roachbank",
            ),
            (
                "postgresql://u:pa?ss#x@h/db?sslmode=disable",
                "postgresql://u:pa?ss#x@h/db?sslmode=disable&connect_timeout=10\
                 &fallback_application_name=roachbank",
            ),
            (
                "postgresql://u:pa?ss@h",
                "postgresql://u:pa?ss@h?connect_timeout=10&fallback_application_name=roachbank",
            ),
            (
                "postgresql://h/db?sslmode=disable&",
                "postgresql://h/db?sslmode=disable&connect_timeout=10\
                 &fallback_application_name=roachbank",
            ),
            (
                "postgresql://h/db?connect%5Ftimeout=3&application_name=x",
                "postgresql://h/db?connect%5Ftimeout=3&application_name=x",
            ),
            (
                "POSTGRES://u:pw@h/db",
                "postgres://u:pw@h/db?connect_timeout=10&fallback_application_name=roachbank",
            ),
        ] {
            let config = DatabaseConfig::parse(given, UrlSource::Flag).unwrap();
            assert_eq!(config.connection_string(), expected, "{given}");
            let info = ConnInfo::parse(config.connection_string()).unwrap();
            assert!(info.get("connect_timeout").is_some(), "{given}");
            assert_ne!(info.get("dbname"), Some("db&connect_timeout=10"), "{given}");
        }
        let config =
            DatabaseConfig::parse("postgresql://u:p#a?s:s@h/my%20db", UrlSource::Flag).unwrap();
        assert_eq!(config.password().as_deref(), Some("p#a?s:s"));
        assert_eq!(config.user().as_deref(), Some("u"));
        assert_eq!(config.database_name().as_deref(), Some("my db"));
        assert_eq!(
            config.with_database("other").connection_string(),
            "postgresql://u:p#a?s:s@h/other?connect_timeout=10&fallback_application_name=roachbank"
        );
        let query = DatabaseConfig::parse(
            "postgresql://h/db?pass%77ord=s%27q&dbn%61me=bank&sslmode=disable",
            UrlSource::Flag,
        )
        .unwrap();
        assert_eq!(query.password().as_deref(), Some("s'q"));
        assert_eq!(query.database_name().as_deref(), Some("bank"));
        assert_eq!(
            query.with_database("b2").connection_string(),
            "postgresql://h/b2?pass%77ord=s%27q&sslmode=disable&connect_timeout=10\
             &fallback_application_name=roachbank"
        );
    }
}
