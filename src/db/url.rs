//! [`ConnectionUrl`]: a `postgresql://` connection URL taken apart where libpq takes it apart,
//! its user, password and database read as libpq reads them, and edited (another database,
//! one more query parameter) without disturbing the rest.
//!
//! libpq's URI grammar is not RFC 3986's (a password may hold `#`, `?` and `:` unencoded; the
//! authority may list several hosts), so a general-purpose URL parser would misread it; the
//! grammar is followed here to the letter and checked against libpq's own `PQconninfoParse`
//! ([`super::conninfo`]) in the tests below. Percent-encoding is the `percent-encoding`
//! crate's.
//!
//! The URL's redacted display ([`ConnectionUrl::redacted`], `Display`, `Debug`) is written
//! in [`super::redact`], beside every other rule about what is secret.

use super::conninfo::ConnInfo;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::ops::Range;

/// What [`percent_encode`] encodes: everything but RFC 3986's unreserved characters
/// (letters, digits, `-`, `.`, `_`, `~`).
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A connection URL (`scheme://[user[:password]@][host[:port][,…]][/database][?key=value&…]`),
/// laid out as libpq lays it out. It holds the password as written: show it with
/// [`ConnectionUrl::redacted`] (or `{}`), never with [`ConnectionUrl::as_str`].
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionUrl {
    text: String,
    layout: UriLayout,
}

/// Why a string cannot be taken apart as a connection URL. The messages never quote the
/// string, which may hold a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// There is no `scheme://` in it.
    #[error("not a URL: it has no scheme://")]
    NoScheme,
    /// A bracketed IPv6 host is empty, unclosed, or followed by something other than
    /// `:port`, `/`, `?` or `,` (libpq refuses it too).
    #[error("the URL's host list cannot be read: a [bracketed] IPv6 address is empty, unclosed or followed by something other than :port, /, ? or ,")]
    HostList,
}

/// One entry of a URL's host list, as written there (percent-decoded, without `[…]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The host name or address; empty when the URL leaves it to libpq's default.
    pub name: String,
    /// The port written after it, if any (libpq checks that it is a number, not this type).
    pub port: Option<String>,
}

impl ConnectionUrl {
    /// Takes `text` apart as libpq would. Any scheme is accepted (libpq itself knows only
    /// `postgresql://` and `postgres://`, and refuses others when connecting).
    pub fn parse(text: &str) -> Result<ConnectionUrl, UrlError> {
        Ok(ConnectionUrl {
            layout: UriLayout::of(text)?,
            text: text.to_string(),
        })
    }

    /// The URL as written, password included: for handing to libpq, never for showing.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The URL as written, password included (see [`ConnectionUrl::as_str`]).
    pub fn into_string(self) -> String {
        self.text
    }

    /// The user (`user@` or `?user=`), percent-decoded, as libpq reads it; `None` when the URL
    /// leaves it to libpq's defaults. Read by libpq when libpq accepts the URL; otherwise (the
    /// connection will fail and say why) from where libpq's grammar puts it.
    pub fn user(&self) -> Option<String> {
        self.libpq_value("user", || {
            self.param("user")
                .or_else(|| self.layout.user.as_ref().map(|user| self.decoded(user)))
        })
    }

    /// The database (the path or `?dbname=`), percent-decoded, as libpq reads it; `None` when
    /// the URL leaves it to libpq's defaults. Read as [`ConnectionUrl::user`] is.
    pub fn database(&self) -> Option<String> {
        self.libpq_value("dbname", || {
            self.param("dbname")
                .or_else(|| self.layout.dbname.as_ref().map(|name| self.decoded(name)))
        })
    }

    /// The password (`user:password@` or `?password=`, however spelled), as libpq reads it;
    /// `None` when the URL has none or libpq refuses the URL.
    pub fn password(&self) -> Option<String> {
        ConnInfo::parse(&self.text)?
            .get("password")
            .map(str::to_string)
    }

    /// The host list written between the userinfo and the path (hosts libpq is given in a
    /// `?host=` parameter are not in it); at least one entry, whose name may be empty.
    pub fn hosts(&self) -> Vec<Host> {
        self.layout
            .hosts
            .iter()
            .zip(&self.layout.ports)
            .map(|(host, port)| Host {
                name: self.decoded(host),
                port: port.as_ref().map(|port| self.decoded(port)),
            })
            .collect()
    }

    /// The value of query parameter `name`, percent-decoded; the last one when it is given
    /// more than once (libpq keeps the last). Keys are compared decoded, as libpq compares
    /// them (`connect%5Ftimeout` is `connect_timeout`).
    pub fn param(&self, name: &str) -> Option<String> {
        self.layout
            .params(&self.text)
            .into_iter()
            .rev()
            .find(|(key, _)| self.decoded(key) == name)
            .map(|(_, value)| self.decoded(&value))
    }

    /// The same URL with `name=value` (both percent-encoded) added to its query, where libpq
    /// finds it: after the host list and the database name, never inside a password holding
    /// `?`. Parameters already there are kept, even one of the same name (libpq takes the
    /// last).
    pub fn with_param(&self, name: &str, value: &str) -> ConnectionUrl {
        let separator = match &self.layout.query {
            None => "?",
            Some(query) if query.is_empty() || self.text.ends_with('&') => "",
            Some(_) => "&",
        };
        self.edited(format!(
            "{}{separator}{}={}",
            self.text,
            percent_encode(name),
            percent_encode(value)
        ))
    }

    /// The same server with another database: the path replaced by `/database`
    /// (percent-encoded) and any `dbname=` query parameter dropped; userinfo, hosts and every
    /// other parameter kept.
    pub fn with_database(&self, database: &str) -> ConnectionUrl {
        let head = &self.text[..self.layout.path_start];
        let tail = match &self.layout.query {
            Some(query) => {
                let kept: Vec<&str> = self.text[query.clone()]
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
        self.edited(format!("{head}/{}{tail}", percent_encode(database)))
    }

    /// Where libpq's query starts (its `?`), or the end of the URL.
    pub(super) fn query_start(&self) -> usize {
        self.layout
            .query
            .as_ref()
            .map_or(self.text.len(), |query| query.start - 1)
    }

    /// The byte ranges of every value libpq reads from the URL outside its query: user,
    /// password, hosts, ports and database name.
    pub(super) fn value_ranges(&self) -> Vec<Range<usize>> {
        let layout = &self.layout;
        layout
            .user
            .iter()
            .chain(&layout.password)
            .chain(&layout.hosts)
            .chain(layout.ports.iter().flatten())
            .chain(&layout.dbname)
            .cloned()
            .collect()
    }

    /// libpq's value for `keyword` (non-empty); for a URL libpq refuses, `fallback`'s reading
    /// of the same place.
    fn libpq_value(
        &self,
        keyword: &str,
        fallback: impl FnOnce() -> Option<String>,
    ) -> Option<String> {
        match ConnInfo::parse(&self.text) {
            Some(info) => info.get(keyword).map(str::to_string),
            None => fallback(),
        }
        .filter(|value| !value.is_empty())
    }

    /// The text at `range`, percent-decoded.
    fn decoded(&self, range: &Range<usize>) -> String {
        percent_decode(&self.text[range.clone()])
    }

    /// A URL made from this one by changing its path or adding to its query.
    fn edited(&self, text: String) -> ConnectionUrl {
        ConnectionUrl::parse(&text)
            .expect("an edit keeps the scheme and the host list, which were read already")
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters (hex digits upper case).
pub(super) fn percent_encode(text: &str) -> String {
    utf8_percent_encode(text, NOT_UNRESERVED).to_string()
}

/// Decodes every `%` followed by two hex digits; anything else, `%` included, is kept as it
/// is. Bytes that do not make UTF-8 become U+FFFD.
pub(super) fn percent_decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
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
    /// Where libpq finds each part of `url`.
    fn of(url: &str) -> Result<UriLayout, UrlError> {
        let bytes = url.as_bytes();
        let end = bytes.len();
        let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
        let start = url.find("://").ok_or(UrlError::NoScheme)? + 3;
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
                let close = host_start + url[host_start..].find(']').ok_or(UrlError::HostList)?;
                if close == host_start {
                    return Err(UrlError::HostList);
                }
                layout.hosts.push(host_start..close);
                p = close + 1;
                if p < end && !matches!(bytes[p], b':' | b'/' | b'?' | b',') {
                    return Err(UrlError::HostList);
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
        Ok(layout)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> ConnectionUrl {
        ConnectionUrl::parse(text).unwrap_or_else(|err| panic!("{text}: {err}"))
    }

    #[test]
    fn percent_decoding_never_splits_a_character() {
        assert_eq!(percent_decode("%é%4"), "%é%4");
        assert_eq!(percent_decode("a%40b"), "a@b");
        // Only two hex digits make an escape, as in libpq.
        assert_eq!(percent_decode("%+4"), "%+4");
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("new bank"), "new%20bank");
        assert_eq!(percent_encode("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(
            percent_encode("p@ss/w:rd#?é"),
            "p%40ss%2Fw%3Ard%23%3F%C3%A9"
        );
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
        assert_eq!(url("postgresql://u:a?b@h/d?x=1").query_start(), 22);
        assert_eq!(
            ConnectionUrl::parse("postgresql://[::1/db"),
            Err(UrlError::HostList)
        );
        assert_eq!(
            ConnectionUrl::parse("postgresql://[]/db"),
            Err(UrlError::HostList)
        );
        assert_eq!(
            ConnectionUrl::parse("postgresql://[::1]x/db"),
            Err(UrlError::HostList)
        );
        assert_eq!(ConnectionUrl::parse("bank.db"), Err(UrlError::NoScheme));
        // What the grammar cannot read, libpq refuses too (so nothing libpq would read is
        // lost by reading a URL only once it is taken apart).
        for refused in [
            "postgresql://[::1/db",
            "postgresql://[]/db",
            "postgresql://[::1]x/db",
        ] {
            assert_eq!(ConnInfo::parse(refused), None, "{refused}");
        }
    }

    #[test]
    fn user_password_and_database_are_what_libpq_reads() {
        let tricky = url("postgresql://u:p#a?s:s@h/my%20db");
        assert_eq!(tricky.user().as_deref(), Some("u"));
        assert_eq!(tricky.password().as_deref(), Some("p#a?s:s"));
        assert_eq!(tricky.database().as_deref(), Some("my db"));
        let query = url("postgresql://h/?user=max%40roach&dbn%61me=bank&pass%77ord=s%27q");
        assert_eq!(query.user().as_deref(), Some("max@roach"));
        assert_eq!(query.database().as_deref(), Some("bank"));
        assert_eq!(query.password().as_deref(), Some("s'q"));
        let bare = url("postgresql://h");
        assert_eq!(
            (bare.user(), bare.database(), bare.password()),
            (None, None, None)
        );
        // libpq refuses `%zz`: user and database are read where libpq's grammar puts them,
        // the password is not read at all.
        let refused = url("postgresql://u:p%zz@h/db?dbname=other");
        assert_eq!(refused.user().as_deref(), Some("u"));
        assert_eq!(refused.database().as_deref(), Some("other"));
        assert_eq!(refused.password(), None);
    }

    #[test]
    fn hosts_are_listed_with_their_ports() {
        let hosts = url("postgresql://u:pw@h1:26257,[::1]:26258,h%33/db").hosts();
        let listed: Vec<(&str, Option<&str>)> = hosts
            .iter()
            .map(|host| (host.name.as_str(), host.port.as_deref()))
            .collect();
        assert_eq!(
            listed,
            [("h1", Some("26257")), ("::1", Some("26258")), ("h3", None)]
        );
        assert_eq!(
            url("postgresql:///db").hosts(),
            [Host {
                name: String::new(),
                port: None
            }]
        );
    }

    #[test]
    fn with_param_adds_to_the_query_where_libpq_reads_it() {
        for (given, expected) in [
            (
                "postgresql://u:pa?ss@h/db",
                "postgresql://u:pa?ss@h/db?k=a%20b%3Dc",
            ),
            (
                "postgresql://u:pa?ss@h",
                "postgresql://u:pa?ss@h?k=a%20b%3Dc",
            ),
            ("postgresql://h/db?x=1", "postgresql://h/db?x=1&k=a%20b%3Dc"),
            (
                "postgresql://h/db?x=1&",
                "postgresql://h/db?x=1&k=a%20b%3Dc",
            ),
            ("postgresql://h/db?", "postgresql://h/db?k=a%20b%3Dc"),
        ] {
            let added = url(given).with_param("k", "a b=c");
            assert_eq!(added.as_str(), expected, "{given}");
            assert_eq!(added.param("k").as_deref(), Some("a b=c"), "{given}");
        }
        assert_eq!(
            url("postgresql://h/db?x=1&x=2").param("x").as_deref(),
            Some("2")
        );
        assert_eq!(
            url("postgresql://h/db?%78=1").param("x").as_deref(),
            Some("1")
        );
        assert_eq!(url("postgresql://h/db").param("x"), None);
    }

    #[test]
    fn with_database_replaces_the_path_and_dbname_only() {
        let config = url("postgresql://root:p#w@h1:26257,h2/defaultdb?dbname=x&sslmode=require");
        let other = config.with_database("new bank");
        assert_eq!(
            other.as_str(),
            "postgresql://root:p#w@h1:26257,h2/new%20bank?sslmode=require"
        );
        assert_eq!(other.database().as_deref(), Some("new bank"));
        assert_eq!(other.password().as_deref(), Some("p#w"));
        assert_eq!(
            url("postgresql://h:1").with_database("bank").as_str(),
            "postgresql://h:1/bank"
        );
        assert_eq!(
            url("postgresql://h/db?dbn%61me=x")
                .with_database("b")
                .as_str(),
            "postgresql://h/b?"
        );
    }
}
