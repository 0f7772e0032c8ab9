//! Where the bank lives: `--database-url`, `DATABASE_URL` (environment or `.env`), or the
//! embedded SQLite default, turned into a backend and a connection string; and redaction of
//! passwords for anything that is displayed.

use std::fmt;
use std::path::PathBuf;

/// The SQLite file used when no database URL is given at all.
pub const DEFAULT_SQLITE_FILE: &str = "bank.db";

/// Seconds libpq waits for a server before giving up, unless the URL sets `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u32 = 10;

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
    /// names a SQLite file. Server URLs get `connect_timeout` unless they set one.
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
        let connection_string = if has_query_param(&url, "connect_timeout") {
            url
        } else {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}connect_timeout={DEFAULT_CONNECT_TIMEOUT_SECS}")
        };
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
        let mut scrubbed = text.replace(&self.connection_string, &self.redacted());
        for secret in url_passwords(&self.connection_string) {
            if !secret.is_empty() {
                scrubbed = scrubbed.replace(&secret, "***");
                let decoded = percent_decode(&secret);
                if !decoded.is_empty() {
                    scrubbed = scrubbed.replace(&decoded, "***");
                }
            }
        }
        scrubbed
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

fn query_params(url: &str) -> impl Iterator<Item = (&str, &str)> {
    url.split_once('?')
        .map(|(_, query)| query)
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Byte range of the password in `scheme://user:password@host...`, if there is one.
fn userinfo_password_range(url: &str) -> Option<std::ops::Range<usize>> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let at = authority.rfind('@')?;
    let colon = authority[..at].find(':')?;
    Some(start + colon + 1..start + at)
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

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
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
            "postgresql://maxroach@localhost:26257/bank?sslmode=disable&connect_timeout=10"
        );
    }

    #[test]
    fn explicit_connect_timeout_is_kept() {
        let config =
            DatabaseConfig::parse("postgres://h/db?connect_timeout=3", UrlSource::Flag).unwrap();
        assert_eq!(
            config.connection_string(),
            "postgres://h/db?connect_timeout=3"
        );
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
