//! Where the bank lives: `--database-url`, `DATABASE_URL` (environment or `.env`), or the
//! embedded SQLite default, turned into a backend and a connection string; and redaction of
//! passwords for anything that is displayed.

use super::conninfo::{escape_value, ConnInfo};
use std::fmt;
use std::ops::Range;
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
        // Added to the query string where libpq finds it: after the host list and the
        // database name, never into a password holding `?` (see UriLayout).
        let mut connection_string = url;
        for (name, value, unless) in defaults {
            let Some(layout) = UriLayout::of(&connection_string) else {
                // libpq will refuse the URL and say why; pass it on as it is.
                break;
            };
            if unless
                .iter()
                .any(|given| layout.param(&connection_string, given).is_some())
            {
                continue;
            }
            let separator = match &layout.query {
                None => "?",
                Some(query) if query.is_empty() || connection_string.ends_with('&') => "",
                Some(_) => "&",
            };
            connection_string = format!("{connection_string}{separator}{name}={value}");
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

    /// The user a server URL names (`user@` or `?user=`), percent-decoded, as libpq reads it;
    /// `None` for SQLite or when the URL leaves it to libpq's defaults.
    pub fn user(&self) -> Option<String> {
        self.libpq_value("user", |url, layout| {
            layout.param(url, "user").or_else(|| {
                layout
                    .user
                    .as_ref()
                    .map(|user| percent_decode(&url[user.clone()]))
            })
        })
    }

    /// The database a server URL names (its path or `?dbname=`), percent-decoded, as libpq
    /// reads it; `None` for SQLite or when the URL leaves it to libpq's defaults.
    pub fn database_name(&self) -> Option<String> {
        self.libpq_value("dbname", |url, layout| {
            layout.param(url, "dbname").or_else(|| {
                layout
                    .dbname
                    .as_ref()
                    .map(|name| percent_decode(&url[name.clone()]))
            })
        })
    }

    /// The password a server URL carries (`user:password@` or `?password=`, however spelled),
    /// as libpq reads it. Crate-private: only `init` needs it, to give a new user that
    /// password.
    pub(crate) fn password(&self) -> Option<String> {
        if self.backend != Backend::Server {
            return None;
        }
        ConnInfo::parse(&self.connection_string)?
            .get("password")
            .map(str::to_string)
    }

    /// libpq's value for `keyword` (non-empty); for a URL libpq refuses (the connection will
    /// fail and say why), `fallback`'s reading of the same place.
    fn libpq_value(
        &self,
        keyword: &str,
        fallback: impl FnOnce(&str, &UriLayout) -> Option<String>,
    ) -> Option<String> {
        if self.backend != Backend::Server {
            return None;
        }
        let url = &self.connection_string;
        match ConnInfo::parse(url) {
            Some(info) => info.get(keyword).map(str::to_string),
            None => fallback(url, &UriLayout::of(url)?),
        }
        .filter(|value| !value.is_empty())
    }

    /// The same server with another database: the URL's path replaced by `/database`
    /// (percent-encoded) and any `dbname=` parameter dropped; user, hosts and every other
    /// parameter kept. SQLite configurations come back unchanged.
    pub fn with_database(&self, database: &str) -> DatabaseConfig {
        if self.backend != Backend::Server {
            return self.clone();
        }
        let url = &self.connection_string;
        let Some(layout) = UriLayout::of(url) else {
            // libpq refuses this URL; connecting with it says why.
            return self.clone();
        };
        let head = &url[..layout.path_start];
        let tail = match &layout.query {
            Some(query) => {
                let kept: Vec<&str> = url[query.clone()]
                    .split('&')
                    .filter(|pair| {
                        percent_decode(pair.split_once('=').map_or(*pair, |(key, _)| key))
                            != "dbname"
                    })
                    .collect();
                format!("?{}", kept.join("&"))
            }
            None => String::new(),
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

    /// Also scrubs `config`'s URL (shown redacted) and every password it holds, in every form
    /// libpq takes one from it or a user may have meant one (see [`redact_url`]): raw as
    /// written, percent-decoded, percent-encoded, as a rotated `key='value'` string carries
    /// it (super::conninfo), and whatever libpq reads out of a password's text as a host, port
    /// or database name or quotes of it in refusing the URL.
    pub fn add_config(&mut self, config: &DatabaseConfig) {
        let url = config.connection_string();
        if config.backend() == Backend::Server {
            self.urls.push((url.to_string(), config.redacted()));
            for secret in url_secrets(url).secrets {
                self.add_secret(&secret);
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

/// A `scheme://…` URL taken apart where libpq's URI parser takes it apart (PostgreSQL
/// `src/interfaces/libpq/fe-connect.c`, `conninfo_uri_parse_options` and
/// `conninfo_uri_parse_params`): byte ranges into the URL, not decoded. libpq is followed to
/// the letter, checked against libpq itself in the tests below:
///
/// * the userinfo ends at the FIRST `@` before any `/` (a `/` first: there is no userinfo);
///   the user ends at its first `:`, the password runs from there to that `@` — so `#`, `?`
///   and `:` may stand unencoded in a password, `@` and `/` may not;
/// * hosts (`[v6]` bracketed) end at `:`, `/`, `?` or `,`; ports at `/`, `?` or `,`;
/// * a `/` after the hosts starts the database name, which runs to the first `?`;
/// * the query is everything after that `?`: `key=value` pairs split at `&`, key and value
///   percent-decoded (so `pass%77ord=` sets the password). `#` means nothing to libpq.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct UriLayout {
    /// `user` of `user[:password]@`.
    user: Option<Range<usize>>,
    /// `password` of `user:password@`.
    password: Option<Range<usize>>,
    /// Each host of the host list.
    hosts: Vec<Range<usize>>,
    /// Each host's port, if it has one.
    ports: Vec<Option<Range<usize>>>,
    /// Where the host list ends: at a `/`, a `?` or the end of the URL.
    path_start: usize,
    /// The database name after the `/` (`None` without a `/`).
    dbname: Option<Range<usize>>,
    /// The query after the `?` (`None` without one); it runs to the end of the URL.
    query: Option<Range<usize>>,
}

impl UriLayout {
    /// Where libpq finds each part of `url`; `None` if `url` has no `scheme://` or a host list
    /// libpq refuses (an unclosed or empty `[…]`).
    fn of(url: &str) -> Option<UriLayout> {
        let bytes = url.as_bytes();
        let end = bytes.len();
        let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
        let start = url.find("://")? + 3;
        let mut layout = UriLayout::default();
        // The userinfo: only if an `@` comes before any `/`; it ends at that first `@`.
        let mut p = start;
        while p < end && !matches!(bytes[p], b'@' | b'/') {
            p += 1;
        }
        if at(p) == b'@' {
            let user_end = url[start..p].find(':').map_or(p, |i| start + i);
            layout.user = Some(start..user_end);
            if user_end < p {
                layout.password = Some(user_end + 1..p);
            }
            p += 1;
        } else {
            p = start;
        }
        // host[:port] pairs, separated by commas.
        loop {
            if at(p) == b'[' {
                let host_start = p + 1;
                let close = host_start + url[host_start..].find(']')?;
                if close == host_start {
                    return None;
                }
                layout.hosts.push(host_start..close);
                p = close + 1;
                if p < end && !matches!(bytes[p], b':' | b'/' | b'?' | b',') {
                    return None;
                }
            } else {
                let host_start = p;
                while p < end && !matches!(bytes[p], b':' | b'/' | b'?' | b',') {
                    p += 1;
                }
                layout.hosts.push(host_start..p);
            }
            if at(p) == b':' {
                let port_start = p + 1;
                p = port_start;
                while p < end && !matches!(bytes[p], b'/' | b'?' | b',') {
                    p += 1;
                }
                layout.ports.push(Some(port_start..p));
            } else {
                layout.ports.push(None);
            }
            if at(p) != b',' {
                break;
            }
            p += 1;
        }
        layout.path_start = p;
        if at(p) == b'/' {
            let name_start = p + 1;
            p = url[name_start..].find('?').map_or(end, |i| name_start + i);
            layout.dbname = Some(name_start..p);
        }
        if at(p) == b'?' {
            layout.query = Some(p + 1..end);
        }
        Some(layout)
    }

    /// Where libpq's query starts (the `?`), or the end of the URL.
    fn query_start(&self, url: &str) -> usize {
        self.query
            .as_ref()
            .map_or(url.len(), |query| query.start - 1)
    }

    /// The query's `key=value` pieces as (key, value) ranges; pieces without `=` (which libpq
    /// refuses) are left out.
    fn params(&self, url: &str) -> Vec<(Range<usize>, Range<usize>)> {
        let Some(query) = self.query.clone() else {
            return Vec::new();
        };
        let mut params = Vec::new();
        let mut piece_start = query.start;
        for piece in url[query].split('&') {
            if let Some(eq) = piece.find('=') {
                params.push((
                    piece_start..piece_start + eq,
                    piece_start + eq + 1..piece_start + piece.len(),
                ));
            }
            piece_start += piece.len() + 1;
        }
        params
    }

    /// The last value (libpq keeps the last) of query parameter `name`, percent-decoded;
    /// keys are compared decoded, as libpq compares them.
    fn param(&self, url: &str, name: &str) -> Option<String> {
        self.params(url)
            .into_iter()
            .rev()
            .find(|(key, _)| percent_decode(&url[key.clone()]) == name)
            .map(|(_, value)| percent_decode(&url[value]))
    }

    /// Every value libpq reads from the URL outside its query: user, password, hosts, ports
    /// and database name.
    fn values(&self) -> Vec<Range<usize>> {
        self.user
            .iter()
            .chain(&self.password)
            .chain(&self.hosts)
            .chain(self.ports.iter().flatten())
            .chain(&self.dbname)
            .cloned()
            .collect()
    }
}

/// What of a URL is secret: the byte ranges shown as `***` (sorted, disjoint), and every form
/// of them to scrub from other text.
#[derive(Debug, Default)]
struct UrlSecrets {
    ranges: Vec<Range<usize>>,
    secrets: Vec<String>,
}

/// Finds every password `url` holds, in every way libpq could take one from it, and in the
/// ways a user may have meant one that libpq reads otherwise:
///
/// * when libpq parses the URL: the userinfo's password as the user meant it — from the first
///   `:` after `scheme://` to the LAST `@` before libpq's query (libpq itself stops at the
///   first `@`, and finds no userinfo when a `/` comes first; what it then reads as a host, a
///   port or the database name out of that text is secret too, since its errors quote them);
///   and libpq's own reading of the password, raw, `key='value'`-escaped and percent-encoded;
/// * when libpq refuses the URL: everything between `scheme://` and the last `@`, and any
///   piece of the URL libpq's refusal quotes that overlaps a secret;
/// * always: the value of every `password=` query parameter, its key decoded (`pass%77ord=`
///   is libpq's `password=`) and compared regardless of case.
fn url_secrets(url: &str) -> UrlSecrets {
    let Some(scheme_end) = url.find("://") else {
        return UrlSecrets::default();
    };
    let start = scheme_end + 3;
    let parsed = ConnInfo::try_parse(url);
    let layout = UriLayout::of(url);
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut secrets: Vec<String> = Vec::new();
    let mut libpq_values = Vec::new();
    let refusal = match (&parsed, &layout) {
        (Ok(info), Some(layout)) => {
            let limit = layout.query_start(url);
            if let Some(at) = url[start..limit].rfind('@').map(|i| start + i) {
                if let Some(colon) = url[start..at].find(':').map(|i| start + i) {
                    if colon + 1 < at {
                        ranges.push(colon + 1..at);
                    }
                }
            }
            libpq_values = layout.values();
            if let Some(password) = info.get("password") {
                secrets.extend(password_forms(password));
            }
            None
        }
        (parsed, _) => {
            if let Some(at) = url[start..].rfind('@').map(|i| start + i) {
                if start < at {
                    ranges.push(start..at);
                    if let Some(colon) = url[start..at].find(':').map(|i| start + i) {
                        if colon + 1 < at {
                            let password = &url[colon + 1..at];
                            secrets.push(password.to_string());
                            secrets.extend(password_forms(&percent_decode(password)));
                        }
                    }
                }
            }
            parsed.as_ref().err().cloned()
        }
    };
    // `password=` in the query, however spelled (outside a userinfo password, which may hold
    // `?password=` itself).
    let userinfo = ranges.first().cloned();
    let bytes = url.as_bytes();
    for (i, _) in url.match_indices(['?', '&']) {
        if userinfo.as_ref().is_some_and(|range| range.contains(&i)) {
            continue;
        }
        let key_start = i + 1;
        let key_end = url[key_start..]
            .find(['=', '&', '?'])
            .map_or(url.len(), |j| key_start + j);
        if bytes.get(key_end) != Some(&b'=')
            || !percent_decode(&url[key_start..key_end]).eq_ignore_ascii_case("password")
        {
            continue;
        }
        let value_start = key_end + 1;
        let value_end = url[value_start..]
            .find('&')
            .map_or(url.len(), |j| value_start + j);
        if value_start < value_end {
            ranges.push(value_start..value_end);
            // Where libpq did not take this for its query (an `@` in it with no path before
            // made it a userinfo), our own `?…` may follow it: the value before that too.
            if let Some(j) = url[value_start..value_end].find('?') {
                let value = &url[value_start..value_start + j];
                secrets.push(value.to_string());
                secrets.extend(password_forms(&percent_decode(value)));
            }
        }
    }
    let overlaps = |piece: &Range<usize>| {
        ranges
            .iter()
            .any(|range| piece.start < range.end && range.start < piece.end)
    };
    // What libpq read out of a password's text as something else, and what it quotes of the
    // URL in refusing it.
    let mut pieces: Vec<Range<usize>> = libpq_values.into_iter().filter(overlaps).collect();
    if let Some(refusal) = refusal {
        for quoted in refusal.split('"').skip(1).step_by(2) {
            if quoted.is_empty() {
                continue;
            }
            for (i, _) in url.match_indices(quoted) {
                let piece = i..i + quoted.len();
                if overlaps(&piece) {
                    pieces.push(piece);
                }
            }
        }
    }
    for range in ranges.iter().chain(&pieces) {
        let text = &url[range.clone()];
        secrets.push(text.to_string());
        secrets.extend(password_forms(&percent_decode(text)));
    }
    UrlSecrets {
        ranges: merge(ranges),
        secrets,
    }
}

/// A password as it is, as a `key='value'` string holds it, and percent-encoded (hex digits
/// in upper and in lower case).
fn password_forms(password: &str) -> Vec<String> {
    let encoded = percent_encode(password);
    let lower = encoded
        .split('%')
        .enumerate()
        .map(|(i, part)| {
            if i == 0 || part.len() < 2 {
                part.to_string()
            } else {
                format!("{}{}", part[..2].to_ascii_lowercase(), &part[2..])
            }
        })
        .collect::<Vec<_>>()
        .join("%");
    vec![password.to_string(), escape_value(password), encoded, lower]
}

/// `ranges` sorted, overlapping and touching ones joined.
fn merge(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.sort_by_key(|range| range.start);
    let mut merged: Vec<Range<usize>> = Vec::new();
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

/// Byte range of the path (`/db`, possibly empty) of a URL, where libpq finds it: from the end
/// of the host list to the `?` of the query or the end (see `UriLayout`: a password's `?`
/// or `#`, a multi-host list's `:` and `,` are not taken for it). `(len, len)` for a string
/// that is not such a URL.
pub fn url_path_range(url: &str) -> (usize, usize) {
    match UriLayout::of(url) {
        Some(layout) => (
            layout.path_start,
            layout.dbname.map_or(layout.path_start, |name| name.end),
        ),
        None => (url.len(), url.len()),
    }
}

/// The URL with every password replaced by `***`, wherever libpq would take one from (the
/// userinfo — up to its last `@` — and any `password=` query parameter, however spelled);
/// a URL libpq refuses shows `***` for everything between `scheme://` and its last `@`.
/// Anything that is not a URL comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let mut redacted = String::with_capacity(url.len());
    let mut shown = 0;
    for range in url_secrets(url).ranges {
        redacted.push_str(&url[shown..range.start]);
        redacted.push_str("***");
        shown = range.end;
    }
    redacted.push_str(&url[shown..]);
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

    /// URLs with every character libpq gives a meaning to, in passwords, hosts and queries.
    const TRICKY_URLS: &[&str] = &[
        "postgresql://u:pa#ss@h/db",
        "postgresql://u:pa?ss@h/db",
        "postgresql://u:pa:ss@h:5/db?sslmode=disable",
        "postgresql://u:pa@ss@h/db",
        "postgresql://u:pa/ss@h/db",
        "postgresql://u:p@ss:w/rd@h/db",
        "postgresql://u:pa?ss@h",
        "postgresql://u:pa?ss@h?sslmode=disable",
        "postgresql://u:pa?ss#x@h1:5,h2,[::1]:7/d%20b?dbname=z&sslmode=require&",
        "postgresql://h/db?pass%77ord=x&user=max%40roach",
        "postgresql://h/db?password=a#b?c:d@e/f&password=g",
        "postgresql://h?password=a@b",
        "postgresql://localhost:5432/db@x",
        "postgresql://u@x:pw@h/db",
        "postgres://%75:%70w@h,/",
        "postgresql://",
        "postgresql:///db?host=/tmp",
    ];

    /// What libpq reads for the URL's user, password, host, port and database, and each
    /// query parameter, as UriLayout finds them.
    fn layout_reading(url: &str) -> Vec<(String, String)> {
        let layout = UriLayout::of(url).unwrap();
        let text = |range: &Range<usize>| percent_decode(&url[range.clone()]);
        let mut reading = Vec::new();
        let mut push = |key: &str, value: String| {
            if !value.is_empty() {
                reading.retain(|(known, _): &(String, String)| known != key);
                reading.push((key.to_string(), value));
            }
        };
        push("user", layout.user.as_ref().map(text).unwrap_or_default());
        push(
            "password",
            layout.password.as_ref().map(text).unwrap_or_default(),
        );
        let hosts: Vec<String> = layout.hosts.iter().map(text).collect();
        push("host", hosts.join(","));
        let ports: Vec<String> = layout
            .ports
            .iter()
            .map(|port| port.as_ref().map(text).unwrap_or_default())
            .collect();
        push("port", ports.join(","));
        push(
            "dbname",
            layout.dbname.as_ref().map(text).unwrap_or_default(),
        );
        for (key, value) in layout.params(url) {
            push(&text(&key), text(&value));
        }
        reading.sort();
        reading
    }

    #[test]
    fn the_url_layout_is_where_libpq_finds_each_part() {
        for url in TRICKY_URLS {
            let info = ConnInfo::parse(url).unwrap_or_else(|| panic!("libpq refuses {url}"));
            let mut libpq: Vec<(String, String)> =
                ["user", "password", "host", "port", "dbname", "sslmode"]
                    .iter()
                    .filter_map(|key| Some((key.to_string(), info.get(key)?.to_string())))
                    .filter(|(_, value)| !value.is_empty())
                    .collect();
            libpq.sort();
            let mut ours = layout_reading(url);
            ours.retain(|(key, _)| {
                ["user", "password", "host", "port", "dbname", "sslmode"].contains(&key.as_str())
            });
            assert_eq!(ours, libpq, "{url}");
        }
        // Where the query starts, for roachbank's own parameters.
        let layout = UriLayout::of("postgresql://u:a?b@h/d?x=1").unwrap();
        assert_eq!(layout.query_start("postgresql://u:a?b@h/d?x=1"), 22);
        assert_eq!(UriLayout::of("postgresql://[::1/db"), None);
        assert_eq!(UriLayout::of("bank.db"), None);
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

    /// `url`'s redacted form, and `text` scrubbed by a redactor that knows `url`.
    fn redacted_and_scrubbed(url: &str, text: &str) -> (String, String) {
        let config = DatabaseConfig::parse(url, UrlSource::Flag).unwrap();
        (config.redacted(), config.scrub(text))
    }

    #[test]
    fn passwords_with_url_characters_are_redacted_wherever_libpq_takes_them() {
        let tail = "?connect_timeout=10&fallback_application_name=roachbank";
        // (URL, its redacted form without roachbank's parameters, what libpq or the server
        // might print, the pieces of the password that must not survive in either)
        let cases: &[(&str, &str, &str, &[&str])] = &[
            // Unencoded `#`, `?`, `:`: libpq's password, as written.
            ("postgresql://u:Ab1#Cd2@h/db", "postgresql://u:***@h/db", "Ab1#Cd2", &["Ab1", "Cd2"]),
            ("postgresql://u:Ab1?Cd2@h/db", "postgresql://u:***@h/db", "Ab1?Cd2", &["Ab1", "Cd2"]),
            ("postgresql://u:Ab1:Cd2@h/db", "postgresql://u:***@h/db", "Ab1:Cd2", &["Ab1", "Cd2"]),
            // Encoded, shown decoded or re-encoded.
            (
                "postgresql://u:Ab1%23Cd2%2fEf3@h/db",
                "postgresql://u:***@h/db",
                "Ab1#Cd2/Ef3 Ab1%23Cd2%2FEf3 'Ab1#Cd2/Ef3'",
                &["Ab1", "Cd2", "Ef3"],
            ),
            // Unencoded `@`: libpq's password ends at the first `@`, the rest is its host.
            (
                "postgresql://u:Ab1@Cd2@h/db",
                "postgresql://u:***@h/db",
                "could not translate host name \"Cd2@h\" to address",
                &["Ab1", "Cd2"],
            ),
            // Unencoded `/`: no userinfo for libpq; the user is its host, the password its port.
            (
                "postgresql://u:Ab1/Cd2@h/db",
                "postgresql://u:***@h/db",
                "invalid integer value \"Ab1\" for connection option \"port\"; database \"Cd2@h/db\"",
                &["Ab1", "Cd2"],
            ),
            (
                "postgresql://u:Ab1@Cd2:Ef3/Gh4@h/db",
                "postgresql://u:***@h/db",
                "invalid integer value \"Ef3\" for connection option \"port\"",
                &["Ab1", "Cd2", "Ef3", "Gh4"],
            ),
            // The p@ss:w/rd%zz, which libpq refuses: all up to the last `@` hidden,
            // and the piece libpq quotes in refusing it.
            (
                "postgresql://u:Ab1@Cd2:Ef3/Gh4%zz@h/db",
                "postgresql://***@h/db",
                "invalid percent-encoded token: \"Gh4%zz@h/db\"",
                &["Ab1", "Cd2", "Ef3", "Gh4"],
            ),
        ];
        for (url, shown, printed, pieces) in cases {
            let (redacted, scrubbed) = redacted_and_scrubbed(url, printed);
            assert_eq!(redacted, format!("{shown}{tail}"), "{url}");
            for piece in *pieces {
                assert!(!redacted.contains(piece), "{url}: {redacted}");
                assert!(!scrubbed.contains(piece), "{url}: {scrubbed}");
            }
        }

        // In the query, however the key is spelled, every occurrence.
        let query_cases: &[(&str, &str, &str, &[&str])] = &[
            (
                "postgresql://h/db?pass%77ord=Ab1%23&sslmode=disable",
                "postgresql://h/db?pass%77ord=***&sslmode=disable",
                "Ab1# Ab1%23 Ab1%23 'Ab1#'",
                &["Ab1"],
            ),
            (
                "postgresql://h/db?password=Ab1#Cd2?Ef3:Gh4@Ij5/Kl6&password=Mn7",
                "postgresql://h/db?password=***&password=***",
                "Ab1#Cd2?Ef3:Gh4@Ij5/Kl6 Mn7",
                &["Ab1", "Kl6", "Mn7"],
            ),
            (
                "postgresql://h/db?%70assword=Ab1&PASSWORD=Cd2",
                "postgresql://h/db?%70assword=***&PASSWORD=***",
                "invalid URI query parameter: \"PASSWORD\" Ab1 Cd2",
                &["Ab1", "Cd2"],
            ),
            // `@` in a query password with no path: libpq takes all before it as a user.
            (
                "postgresql://h?password=Ab1@Cd2",
                "postgresql://h?password=***",
                "Ab1@Cd2",
                &["Ab1", "Cd2"],
            ),
        ];
        for (url, shown, printed, pieces) in query_cases {
            let (redacted, scrubbed) = redacted_and_scrubbed(url, printed);
            assert!(redacted.starts_with(shown), "{url}: {redacted}");
            for piece in *pieces {
                assert!(!redacted.contains(piece), "{url}: {redacted}");
                assert!(!scrubbed.contains(piece), "{url}: {scrubbed}");
            }
        }

        // A URL without a password is shown as it is; a userinfo password and a query one.
        assert_eq!(
            redact_url("postgresql://u@h/db?user=a@b"),
            "postgresql://u@h/db?user=a@b"
        );
        assert_eq!(
            redact_url("postgresql://u:Ab1?password=x@h/db?password=Cd2"),
            "postgresql://u:***@h/db?password=***"
        );
    }
}
