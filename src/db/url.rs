//! [`ConnectionUrl`]: a server's connection string read once, by libpq's own parser
//! (`PQconninfoParse`, PostgreSQL `src/interfaces/libpq/fe-connect.c`), and kept as libpq's
//! keywords with their values: edited by setting a keyword, handed to libpq as a `key='value'`
//! string, and shown as `scheme://user@host:port,…/database` built from what libpq read —
//! never the password, nor any other setting.
//!
//! libpq ends a URL's user information at its first `@` unless a `/` comes first
//! (`conninfo_uri_parse_options`): a password with an unencoded `@` or `/` is read partly as a
//! host, a port or the database name, and a query written before the `@` as part of the
//! password. Such a URL cannot connect as meant, and what libpq read of it would show a piece
//! of the password: it is refused, saying how to write it.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::ffi::{c_char, CStr, CString};
use std::fmt;

/// What the URL percent-encodes: all but letters, digits, `-`, `.` and `_`.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');

/// A server connection string as libpq reads it: a `postgresql://` (`postgres://`,
/// `cockroachdb://`) URL or a `key=value` string. It holds the password: show it with `{:?}`
/// or [`ConnectionUrl::redacted`], never with [`ConnectionUrl::to_conninfo`] or
/// [`ConnectionUrl::to_url`].
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionUrl {
    /// The scheme, lower case (`postgresql` for a `key=value` string).
    scheme: String,
    /// Every keyword libpq knows, in libpq's order, with the value read for it.
    options: Vec<(String, Option<String>)>,
}

/// Why a string is not a server URL roachbank connects with. It shows the scheme and the
/// user at most, and of what libpq quotes only query keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shown}: {reason}")]
pub struct UrlError {
    /// `scheme://user@…`, or `scheme://…`.
    pub shown: String,
    /// Not a server URL; libpq's reason for refusing it; or a password libpq would read
    /// partly as something else.
    pub reason: String,
}

impl ConnectionUrl {
    /// Reads `text` with libpq: a URL (`postgresql://`, `postgres://`, `cockroachdb://`, any
    /// case) or a `key=value` string. Refuses a URL whose password libpq would read partly as
    /// something else (see the module documentation).
    pub fn parse(text: &str) -> Result<ConnectionUrl, UrlError> {
        let Some((scheme, rest)) = split_scheme(text) else {
            let options = libpq_read(text).map_err(refusal("the connection string", text))?;
            let scheme = "postgresql".into();
            return Ok(ConnectionUrl { scheme, options });
        };
        let refuse = |shown, reason: String| Err(UrlError { shown, reason });
        let anonymous = format!("{scheme}://…");
        if !["postgresql", "postgres", "cockroachdb"].contains(&scheme.as_str()) {
            return refuse(anonymous, "not a postgresql:// URL".into());
        }
        // libpq's user information: up to the first `@`, unless a `/` comes first. A refused
        // URL shows its user as libpq reads it (up to a `:`), if that is a plain name.
        let userinfo = rest.split_once('@').filter(|(info, _)| !info.contains('/'));
        let (userinfo, after) = userinfo.unwrap_or(("", rest));
        let (user, _) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let shown = match user {
            _ if user.is_empty() || user.contains(['?', '&', '=']) => anonymous.clone(),
            user => format!("{scheme}://{user}@…"),
        };
        let libpq_text = format!("postgresql://{rest}");
        let options = libpq_read(&libpq_text).map_err(refusal(&shown, &libpq_text))?;
        let (hosts, _) = after.split_once('?').unwrap_or((after, ""));
        if hosts.contains('@') {
            let reason = "an '@' after the user name and password is read by libpq as part of a \
                          host, a port or the database name: write '@' and '/' in a password as \
                          %40 and %2F";
            return refuse(shown, reason.into());
        }
        let pieces = userinfo.split(['?', '&']).skip(1);
        for (key, _) in pieces.filter_map(|piece| piece.split_once('=')) {
            let key = percent_decode_str(key).decode_utf8_lossy();
            if options.iter().any(|(known, _)| *known == key) {
                let reason = format!(
                    "'?{key}=' before the URL's first '@' is read by libpq as part of the user \
                     name or password: put the query after the host and database, or write '?' \
                     in a password as %3F"
                );
                return refuse(anonymous, reason);
            }
        }
        Ok(ConnectionUrl { scheme, options })
    }

    /// The value libpq read for `keyword`, unless it is unset or empty (which libpq takes as
    /// unset for the user, the database, the application name…).
    pub fn get(&self, keyword: &str) -> Option<&str> {
        let (_, value) = self.options.iter().find(|(known, _)| known == keyword)?;
        value.as_deref().filter(|value| !value.is_empty())
    }

    /// The same settings with `keyword` set to `value` (one libpq does not know is kept too,
    /// and refused by libpq when connecting).
    pub fn with(mut self, keyword: &str, value: &str) -> ConnectionUrl {
        match self.options.iter_mut().find(|(known, _)| known == keyword) {
            Some((_, slot)) => *slot = Some(value.to_string()),
            None => self.options.push((keyword.into(), Some(value.into()))),
        }
        self
    }

    /// How many hosts libpq tries (1 when none is named: libpq's default host).
    pub fn host_count(&self) -> usize {
        let count = |keyword| self.list(keyword).map_or(1, |list| list.len());
        count("host").max(count("hostaddr"))
    }

    /// The same settings with the `host`, `hostaddr` and `port` lists rotated left by `by`:
    /// host `by` is tried first, the skipped ones last. (libpq moves to the next host after a
    /// refusal only on 57P03; a draining CockroachDB node refuses with 57P01,
    /// cockroachdb/cockroach `pkg/sql/pgwire/server.go`: the caller tries each next host.)
    pub fn with_hosts_rotated(&self, by: usize) -> ConnectionUrl {
        let (hosts, mut rotated) = (self.host_count(), self.clone());
        for keyword in ["host", "hostaddr", "port"] {
            if let Some(mut list) = self.list(keyword).filter(|list| list.len() == hosts) {
                list.rotate_left(by % hosts);
                rotated = rotated.with(keyword, &list.join(","));
            }
        }
        rotated
    }

    /// The `key='value' …` string handed to libpq.
    pub fn to_conninfo(&self) -> String {
        let pairs = self.options.iter().filter_map(|(keyword, value)| {
            let value = value.as_ref()?.replace('\\', "\\\\").replace('\'', "\\'");
            Some(format!("{keyword}='{value}'"))
        });
        pairs.collect::<Vec<_>>().join(" ")
    }

    /// A URL libpq reads as these same settings, password included: for handing to a program
    /// that takes a URL, never for showing.
    pub fn to_url(&self) -> String {
        self.url(true)
    }

    /// What is shown of the URL: `scheme://user@host:port,…/database`, percent-encoded. Never
    /// the password, nor any other setting (those roachbank adds included).
    pub fn redacted(&self) -> String {
        self.url(false)
    }

    /// Scheme, user, hosts (else, when shown, the `hostaddr`s) with their ports and database;
    /// with `settings`, every other value in the query.
    fn url(&self, settings: bool) -> String {
        let encode = |text: &str| utf8_percent_encode(text, NOT_UNRESERVED).to_string();
        let hostaddr = self.list("hostaddr").filter(|_| !settings);
        let hosts = self.list("host").or(hostaddr).unwrap_or(vec![""]);
        let ports = self.list("port").unwrap_or_default();
        let paired = ports.len() == hosts.len() || ports.len() == 1;
        let authority = hosts.iter().enumerate().map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).filter(|_| paired);
            let port = port.filter(|port| !port.is_empty());
            let v6 = host.contains(':');
            let host = if v6 {
                format!("[{host}]")
            } else {
                encode(host)
            };
            host + &port.map_or(String::new(), |port| format!(":{port}"))
        });
        let authority = authority.collect::<Vec<_>>().join(",");
        let user = self.get("user").map(|user| encode(user) + "@");
        let database = self.get("dbname").map(|name| format!("/{}", encode(name)));
        let (user, database) = (user.unwrap_or_default(), database.unwrap_or_default());
        let mut url = format!("{}://{user}{authority}{database}", self.scheme);
        let shown =
            |key: &str| ["user", "host", "dbname"].contains(&key) || key == "port" && paired;
        let query: Vec<String> = (self.options.iter())
            .filter(|(key, _)| settings && !shown(key))
            .filter_map(|(key, value)| Some(format!("{key}={}", encode(value.as_ref()?))))
            .collect();
        if !query.is_empty() {
            url += &format!("?{}", query.join("&"));
        }
        url
    }

    /// The comma-separated list set for `keyword`, unless it is unset.
    fn list(&self, keyword: &str) -> Option<Vec<&str>> {
        self.get(keyword).map(|list| list.split(',').collect())
    }
}

/// Shows the URL redacted ([`ConnectionUrl::redacted`]).
impl fmt::Debug for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionUrl({:?})", self.redacted())
    }
}

/// `text`'s scheme, lower case, and what follows its `://`, if it starts with a URL's scheme
/// (letters, digits, `+`, `-`, `.`).
pub(super) fn split_scheme(text: &str) -> Option<(String, &str)> {
    let (scheme, rest) = text.split_once("://")?;
    let valid = |c: char| c.is_ascii_alphanumeric() || "+-.".contains(c);
    (!scheme.is_empty() && scheme.chars().all(valid)).then(|| (scheme.to_ascii_lowercase(), rest))
}

/// How libpq's refusal of `text` is told, after `shown`: its reason with everything it quotes
/// shown as `***`, but a query key of `text` (`invalid URI query parameter: "sslmod"`) or a
/// single character. libpq quotes the token it cannot decode, or the whole URL: either may be,
/// or hold, the password.
fn refusal<'a>(shown: &'a str, text: &'a str) -> impl FnOnce(String) -> UrlError + 'a {
    move |reason| {
        let pieces = reason.split('"').enumerate().map(|(i, piece)| {
            let key = text.contains(&format!("?{piece}=")) || text.contains(&format!("&{piece}="));
            let kept = i % 2 == 0 || key || piece.chars().count() == 1;
            Some(piece).filter(|_| kept).unwrap_or("***")
        });
        let (shown, reason) = (shown.to_string(), pieces.collect::<Vec<_>>().join("\""));
        UrlError { shown, reason }
    }
}

/// libpq's reading of `conninfo` (`PQconninfoParse`): every keyword it knows with the value
/// set for it; or libpq's reason for refusing the string, which may quote it.
fn libpq_read(conninfo: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let conninfo = CString::new(conninfo).map_err(|_| "it holds a NUL byte".to_string())?;
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: `conninfo` is NUL-terminated. libpq returns NULL and maybe a message we free, or
    // an array ending in an entry whose keyword is NULL, whose strings we copy before freeing
    // it with PQconninfoFree.
    unsafe {
        let owned = |ptr: *const c_char| CStr::from_ptr(ptr).to_string_lossy().into_owned();
        let text = |ptr: *const c_char| (!ptr.is_null()).then(|| owned(ptr));
        let parsed = pq_sys::PQconninfoParse(conninfo.as_ptr(), &mut error);
        if parsed.is_null() {
            let reason = text(error).map(|reason| reason.trim().to_string());
            pq_sys::PQfreemem(error.cast());
            return Err(reason.unwrap_or_else(|| "libpq cannot read it".into()));
        }
        let entries = (0..).map(|i| &*parsed.add(i));
        let options = entries.map_while(|entry| Some((text(entry.keyword)?, text(entry.val))));
        let options = options.collect();
        pq_sys::PQconninfoFree(parsed);
        Ok(options)
    }
}

#[cfg(test)]
mod tests;
