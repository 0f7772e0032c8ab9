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
        let split = text
            .split_once("://")
            .filter(|(scheme, _)| is_scheme(scheme));
        let Some((scheme, rest)) = split else {
            let unread = |reason| unreadable("the connection string".into(), text, reason);
            let options = libpq_read(text).map_err(unread)?;
            let scheme = "postgresql".into();
            return Ok(ConnectionUrl { scheme, options });
        };
        let scheme = scheme.to_ascii_lowercase();
        let refuse = |shown, reason: &str| Err(unreadable(shown, "", reason.into()));
        if !["postgresql", "postgres", "cockroachdb"].contains(&scheme.as_str()) {
            return refuse(format!("{scheme}://…"), "not a postgresql:// URL");
        }
        let libpq_text = format!("postgresql://{rest}");
        let options = libpq_read(&libpq_text)
            .map_err(|reason| unreadable(shown(&scheme, rest), &libpq_text, reason))?;
        // libpq's user information: up to the first `@`, unless a `/` comes first.
        let userinfo = rest
            .find(['@', '/'])
            .filter(|&at| rest.as_bytes()[at] == b'@');
        let after = userinfo.map_or(0, |at| at + 1);
        let query = rest[after..].find('?').map_or(rest.len(), |at| after + at);
        if rest[after..query].contains('@') {
            let reason = "an '@' after the user name and password is read by libpq as part of a \
                          host, a port or the database name: write '@' and '/' in a password as \
                          %40 and %2F";
            return refuse(shown(&scheme, rest), reason);
        }
        let userinfo = &rest[..userinfo.unwrap_or(0)];
        for (at, _) in userinfo.match_indices(['?', '&']) {
            let key = userinfo[at + 1..]
                .split_once('=')
                .map(|(key, _)| decode(key));
            if let Some(key) = key.filter(|key| options.iter().any(|(known, _)| known == key)) {
                let reason = format!(
                    "'?{key}=' before the URL's first '@' is read by libpq as part of the user \
                     name or password: put the query after the host and database, or write '?' \
                     in a password as %3F"
                );
                return refuse(format!("{scheme}://…"), &reason);
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
        let count = |keyword| self.get(keyword).map_or(1, |list| list.split(',').count());
        count("host").max(count("hostaddr"))
    }

    /// The same settings with the `host`, `hostaddr` and `port` lists rotated left by `by`:
    /// host `by` is tried first, the skipped ones last. (libpq moves to the next host after a
    /// refusal only on 57P03; a draining CockroachDB node refuses with 57P01,
    /// cockroachdb/cockroach `pkg/sql/pgwire/server.go`: the caller tries each next host.)
    pub fn with_hosts_rotated(&self, by: usize) -> ConnectionUrl {
        let hosts = self.host_count();
        let mut rotated = self.clone();
        for (keyword, value) in &mut rotated.options {
            let is_list = ["host", "hostaddr", "port"].contains(&keyword.as_str());
            if let Some(value) = value.as_mut().filter(|_| is_list) {
                let mut list: Vec<&str> = value.split(',').collect();
                if list.len() == hosts {
                    list.rotate_left(by % hosts);
                    *value = list.join(",");
                }
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

    /// Scheme, user, hosts with their ports and database; with `settings`, every other value
    /// in the query.
    fn url(&self, settings: bool) -> String {
        let list = |key| {
            self.get(key)
                .map_or(Vec::new(), |list| list.split(',').collect())
        };
        let hostaddr = if settings {
            Vec::new()
        } else {
            list("hostaddr")
        };
        let hosts = [list("host"), hostaddr].into_iter().find(|l| !l.is_empty());
        let (hosts, ports) = (hosts.unwrap_or(vec![""]), list("port"));
        let paired = ports.len() == hosts.len() || ports.len() == 1;
        let authority = hosts.iter().enumerate().map(|(i, host)| {
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                encode(host)
            };
            match ports.get(i.min(ports.len().saturating_sub(1))) {
                Some(port) if paired && !port.is_empty() => format!("{host}:{port}"),
                _ => host,
            }
        });
        let mut url = format!("{}://", self.scheme);
        url += &self
            .get("user")
            .map_or(String::new(), |user| encode(user) + "@");
        url += &authority.collect::<Vec<_>>().join(",");
        url += &self
            .get("dbname")
            .map_or(String::new(), |name| "/".to_string() + &encode(name));
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
}

/// Shows the URL redacted ([`ConnectionUrl::redacted`]).
impl fmt::Debug for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionUrl({:?})", self.redacted())
    }
}

/// Whether `text` can be a URL's scheme (letters, digits, `+`, `-`, `.`).
pub(super) fn is_scheme(text: &str) -> bool {
    let scheme_char = |c: char| c.is_ascii_alphanumeric() || "+-.".contains(c);
    !text.is_empty() && text.chars().all(scheme_char)
}

/// What is shown of a URL that is not read: `scheme://user@…`, the user being what libpq
/// reads before the first `:` of the user information (an `@` before any `/`), or
/// `scheme://…`.
fn shown(scheme: &str, rest: &str) -> String {
    let user = rest
        .find(['@', '/'])
        .filter(|&at| rest.as_bytes()[at] == b'@');
    let user = user.and_then(|at| rest[..at].split(':').next());
    match user.filter(|user| !user.is_empty() && !user.contains(['?', '&', '='])) {
        Some(user) => format!("{scheme}://{user}@…"),
        None => format!("{scheme}://…"),
    }
}

/// Why `text` is unreadable: `reason` with everything it quotes shown as `***`, but a query
/// key of `text` (`invalid URI query parameter: "sslmod"`) or a single character. libpq quotes
/// the token it cannot decode, or the whole URL: either may be, or hold, the password.
fn unreadable(shown: String, text: &str, reason: String) -> UrlError {
    let is_key = |piece: &str| {
        piece.chars().count() == 1
            || ["?", "&"]
                .iter()
                .any(|sep| text.contains(&format!("{sep}{piece}=")))
    };
    let pieces = reason.split('"').enumerate();
    let pieces = pieces.map(|(i, piece)| {
        if i % 2 == 1 && !is_key(piece) {
            "***"
        } else {
            piece
        }
    });
    let reason = pieces.collect::<Vec<_>>().join("\"");
    UrlError { shown, reason }
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
        let text = |ptr: *const c_char| CStr::from_ptr(ptr).to_string_lossy().into_owned();
        let parsed = pq_sys::PQconninfoParse(conninfo.as_ptr(), &mut error);
        if parsed.is_null() {
            let reason = (!error.is_null()).then(|| text(error).trim().to_string());
            pq_sys::PQfreemem(error.cast());
            return Err(reason.unwrap_or_else(|| "libpq cannot read it".into()));
        }
        let mut options = Vec::new();
        let mut entry = parsed;
        while !(*entry).keyword.is_null() {
            let value = (!(*entry).val.is_null()).then(|| text((*entry).val));
            options.push((text((*entry).keyword), value));
            entry = entry.add(1);
        }
        pq_sys::PQconninfoFree(parsed);
        Ok(options)
    }
}

/// `text` percent-encoded but for RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    utf8_percent_encode(text, NOT_UNRESERVED).to_string()
}

/// `text` percent-decoded (bytes that make no UTF-8 become U+FFFD).
fn decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests;
