//! Where the bank lives: `--database-url`, `DATABASE_URL` (environment or `.env`), or the
//! embedded SQLite default, turned into a backend and a connection string; and redaction of
//! passwords for anything that is displayed.

use crate::conninfo::{escape_value, ConnInfo};
use std::fmt;
use std::path::PathBuf;

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
            return Ok(Self::server(url.to_string(), source));
        }
        if let Some(path) = strip_prefix_ci(url, &lower, "sqlite://") {
            if path.is_empty() {
                return Err(ConfigError::MissingSqlitePath);
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
        let mut connection_string = url;
        for (name, value, unless) in defaults {
            if !unless
                .iter()
                .any(|given| has_query_param(&connection_string, given))
            {
                let separator = if connection_string.contains('?') {
                    '&'
                } else {
                    '?'
                };
                connection_string = format!("{connection_string}{separator}{name}={value}");
            }
        }
        DatabaseConfig {
            backend: Backend::Server,
            connection_string,
            source,
        }
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

    /// The user a server URL names (`user@` or `?user=`), percent-decoded; `None` for SQLite
    /// or when the URL leaves it to libpq's defaults.
    pub fn user(&self) -> Option<String> {
        if self.backend != Backend::Server {
            return None;
        }
        let from_query = query_param(&self.connection_string, "user");
        from_query
            .or_else(|| {
                let userinfo = &self.connection_string[userinfo_range(&self.connection_string)?];
                let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                Some(percent_decode(user))
            })
            .filter(|user| !user.is_empty())
    }

    /// The database a server URL names (its path or `?dbname=`), percent-decoded; `None` for
    /// SQLite or when the URL leaves it to libpq's defaults.
    pub fn database_name(&self) -> Option<String> {
        if self.backend != Backend::Server {
            return None;
        }
        let url = &self.connection_string;
        let from_query = query_param(url, "dbname");
        from_query
            .or_else(|| {
                let (start, end) = url_path_range(url);
                Some(percent_decode(url[start..end].trim_start_matches('/')))
            })
            .filter(|name| !name.is_empty())
    }

    /// The password a server URL carries (`user:password@` or `?password=`), percent-decoded.
    /// Crate-private: only `init` needs it, to give a new user that password.
    pub(crate) fn password(&self) -> Option<String> {
        if self.backend != Backend::Server {
            return None;
        }
        let url = &self.connection_string;
        let from_query = query_param(url, "password");
        from_query.or_else(|| userinfo_password_range(url).map(|range| percent_decode(&url[range])))
    }

    /// The same server with another database: the URL's path replaced by `/database`
    /// (percent-encoded) and any `dbname=` parameter dropped; user, hosts and every other
    /// parameter kept. SQLite configurations come back unchanged.
    pub fn with_database(&self, database: &str) -> DatabaseConfig {
        if self.backend != Backend::Server {
            return self.clone();
        }
        let url = &self.connection_string;
        let (start, end) = url_path_range(url);
        let (head, tail) = (&url[..start], &url[end..]);
        let tail = match tail.split_once('?') {
            Some((before, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        !pair
                            .split_once('=')
                            .map_or(*pair, |(key, _)| key)
                            .eq_ignore_ascii_case("dbname")
                    })
                    .collect();
                format!("{before}?{}", kept.join("&"))
            }
            None => tail.to_string(),
        };
        DatabaseConfig {
            backend: self.backend,
            connection_string: format!("{head}/{}{tail}", percent_encode(database)),
            source: self.source,
        }
    }
}

/// Scrubs secrets — the passwords of one or more database URLs, and any other strings it is
/// given — from text before it is shown. Cheap to clone; its `Debug` shows no secret.
#[derive(Clone, Default)]
pub struct Redactor {
    /// (connection string, its redacted form)
    urls: Vec<(String, String)>,
    /// Secrets replaced by `***` wherever they appear, longest first.
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor that scrubs nothing yet.
    pub fn new() -> Redactor {
        Redactor::default()
    }

    /// A redactor for one configuration's URL and password.
    pub fn for_config(config: &DatabaseConfig) -> Redactor {
        let mut redactor = Redactor::new();
        redactor.add_config(config);
        redactor
    }

    /// Also scrubs `config`'s URL (shown redacted) and its password, raw and percent-decoded.
    pub fn add_config(&mut self, config: &DatabaseConfig) {
        let url = config.connection_string();
        if config.backend() == Backend::Server {
            self.urls.push((url.to_string(), config.redacted()));
            for secret in url_passwords(url) {
                self.add_secret(&secret);
                self.add_secret(&percent_decode(&secret));
            }
            // The password as libpq itself reads it, and as a rotated `key='value'` string
            // carries it (crate::conninfo).
            if let Some(info) = ConnInfo::parse(url) {
                if let Some(password) = info.get("password") {
                    self.add_secret(password);
                    self.add_secret(&escape_value(password));
                }
            }
        }
    }

    /// Also scrubs every configuration of `other`.
    pub fn extend(&mut self, other: &Redactor) {
        self.urls.extend(other.urls.iter().cloned());
        for secret in &other.secrets {
            self.add_secret(secret);
        }
    }

    /// Also replaces `secret` by `***` wherever it appears (empty strings are ignored).
    pub fn add_secret(&mut self, secret: &str) {
        if !secret.is_empty() && !self.secrets.iter().any(|known| known == secret) {
            self.secrets.push(secret.to_string());
            // Longest first, so a secret containing another is replaced whole.
            self.secrets
                .sort_by_key(|known| std::cmp::Reverse(known.len()));
        }
    }

    /// `text` with every known URL shown redacted and every known secret replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut scrubbed = text.to_string();
        for (url, redacted) in &self.urls {
            scrubbed = scrubbed.replace(url, redacted);
        }
        for secret in &self.secrets {
            scrubbed = scrubbed.replace(secret, "***");
        }
        scrubbed
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field(
                "urls",
                &self.urls.iter().map(|(_, r)| r).collect::<Vec<_>>(),
            )
            .field("secrets", &self.secrets.len())
            .finish()
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

fn strip_prefix_ci<'a>(url: &'a str, lower: &str, prefix: &str) -> Option<&'a str> {
    lower.starts_with(prefix).then(|| &url[prefix.len()..])
}

fn has_query_param(url: &str, name: &str) -> bool {
    query_params(url).any(|(key, _)| key.eq_ignore_ascii_case(name))
}

/// The last value of query parameter `name` (libpq takes the last), percent-decoded.
fn query_param(url: &str, name: &str) -> Option<String> {
    query_params(url)
        .filter(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| percent_decode(value))
        .last()
}

fn query_params(url: &str) -> impl Iterator<Item = (&str, &str)> {
    url.split_once('?')
        .map(|(_, query)| query)
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Byte range of the user information (`user` or `user:password`, before the last `@` of
/// the authority) in `scheme://user:password@host...`, if there is any.
fn userinfo_range(url: &str) -> Option<std::ops::Range<usize>> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some(start..start + at)
}

/// Byte range of the password in `scheme://user:password@host...`, if there is one.
fn userinfo_password_range(url: &str) -> Option<std::ops::Range<usize>> {
    let range = userinfo_range(url)?;
    let colon = url[range.clone()].find(':')?;
    Some(range.start + colon + 1..range.end)
}

/// Byte range of the path (`/db`, possibly empty) of a URL: after the authority, before `?`
/// or `#`. (Multi-host authorities such as `h1:p1,h2:p2` contain no `/`, so they are skipped
/// whole.)
pub fn url_path_range(url: &str) -> (usize, usize) {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_start..];
    let path_start = authority_start + rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let tail = &url[path_start..];
    let path_end = path_start + tail.find(['?', '#']).unwrap_or(tail.len());
    (path_start, path_end)
}

fn url_passwords(url: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    if let Some(range) = userinfo_password_range(url) {
        secrets.push(url[range].to_string());
    }
    for (key, value) in query_params(url) {
        if key.eq_ignore_ascii_case("password") {
            secrets.push(value.to_string());
        }
    }
    secrets
}

/// Replaces the password of a URL (`user:PASSWORD@` and any `password=` query parameter) with
/// `***`. Anything that is not a URL comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let mut redacted = match userinfo_password_range(url) {
        Some(range) if !range.is_empty() => {
            format!("{}***{}", &url[..range.start], &url[range.end..])
        }
        _ => url.to_string(),
    };
    if let Some((base, query)) = redacted.clone().split_once('?') {
        let query = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&");
        redacted = format!("{base}?{query}");
    }
    redacted
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(byte) = u8::from_str_radix(hex, 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn redactor_scrubs_several_urls_and_extra_secrets() {
        let target = DatabaseConfig::parse("postgresql://u:tpw@h/db", UrlSource::Flag).unwrap();
        let admin =
            DatabaseConfig::parse("postgresql://a@h/db?password=apw", UrlSource::Flag).unwrap();
        let mut redactor = Redactor::for_config(&target);
        redactor.add_config(&admin);
        redactor.add_secret("'t''pw'");
        let text = format!(
            "{} {} tpw apw PASSWORD 't''pw'",
            target.connection_string(),
            admin.connection_string()
        );
        let scrubbed = redactor.scrub(&text);
        assert!(
            !scrubbed.contains("tpw") && !scrubbed.contains("apw"),
            "{scrubbed}"
        );
        assert!(scrubbed.contains("postgresql://u:***@h/db"), "{scrubbed}");
        assert!(!format!("{redactor:?}").contains("pw"));
    }

    #[test]
    fn percent_decoding_never_splits_a_character() {
        assert_eq!(percent_decode("%é%4"), "%é%4");
        assert_eq!(percent_decode("a%40b"), "a@b");
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
        assert!(message.contains("mysql://u:***@h/db"), "{message}");
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
    fn passwords_are_redacted_in_userinfo_and_query() {
        assert_eq!(
            redact_url("postgresql://u:s3cr%40t@h1:5432,h2:5433/db?password=other&sslmode=require"),
            "postgresql://u:***@h1:5432,h2:5433/db?password=***&sslmode=require"
        );
        assert_eq!(redact_url("postgresql://u@h/db"), "postgresql://u@h/db");
        assert_eq!(redact_url("bank.db"), "bank.db");
    }

    #[test]
    fn scrub_removes_raw_and_decoded_passwords() {
        let config =
            DatabaseConfig::parse("postgresql://u:s3cr%40t@h/db", UrlSource::Flag).unwrap();
        let scrubbed = config.scrub("failed for s3cr@t and s3cr%40t");
        assert_eq!(scrubbed, "failed for *** and ***");
    }
}
