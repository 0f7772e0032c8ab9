//! A server connection string as libpq itself reads it, and the same string with its host list
//! rotated — for failing over from a draining CockroachDB node.
//!
//! libpq tries the hosts of a multi-host URL in order, but moves to the next one after a refusal
//! only when the refusal is 57P03 "cannot connect now" (PostgreSQL `src/interfaces/libpq/
//! fe-connect.c`, `CONNECTION_AWAITING_RESPONSE`). A draining CockroachDB node refuses new
//! sessions with 57P01 "server is not accepting clients, try another node"
//! (cockroachdb/cockroach `pkg/sql/pgwire/server.go`), so libpq stops at it. Trying the hosts
//! again starting from the next one does what the message asks.
//!
//! The string is taken apart by libpq's own `PQconninfoParse` (URLs and `key=value` strings
//! alike, percent-decoding included), never by hand.

use std::ffi::{CStr, CString};

/// A parsed connection string: libpq's keywords with the values it set, in libpq's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    options: Vec<(String, String)>,
}

impl ConnInfo {
    /// Parses `conninfo` with libpq; `None` if libpq refuses it (the connection attempt will
    /// then report why).
    pub fn parse(conninfo: &str) -> Option<ConnInfo> {
        ConnInfo::try_parse(conninfo).ok()
    }

    /// Parses `conninfo` with libpq, or gives libpq's reason for refusing it — the very
    /// message a connection attempt with it would fail with. That message may quote the
    /// string, or the piece of it libpq could not read, password included: scrub it before
    /// showing it.
    pub fn try_parse(conninfo: &str) -> Result<ConnInfo, String> {
        let conninfo = CString::new(conninfo)
            .map_err(|_| "the connection string contains a NUL byte".to_string())?;
        let mut error: *mut std::os::raw::c_char = std::ptr::null_mut();
        // SAFETY: `conninfo` is a valid NUL-terminated string; libpq returns either NULL (and
        // maybe an error message we must free) or an array ending in an entry whose keyword is
        // NULL, which we read and then free with PQconninfoFree.
        unsafe {
            let parsed = pq_sys::PQconninfoParse(conninfo.as_ptr(), &mut error);
            let message = (!error.is_null()).then(|| {
                let message = CStr::from_ptr(error).to_string_lossy().trim().to_string();
                pq_sys::PQfreemem(error.cast());
                message
            });
            if parsed.is_null() {
                return Err(message.unwrap_or_else(|| "libpq cannot parse it".to_string()));
            }
            let mut options = Vec::new();
            let mut entry = parsed;
            while !(*entry).keyword.is_null() {
                if !(*entry).val.is_null() {
                    options.push((
                        CStr::from_ptr((*entry).keyword)
                            .to_string_lossy()
                            .into_owned(),
                        CStr::from_ptr((*entry).val).to_string_lossy().into_owned(),
                    ));
                }
                entry = entry.add(1);
            }
            pq_sys::PQconninfoFree(parsed);
            Ok(ConnInfo { options })
        }
    }

    /// The value libpq read for `keyword`, if any.
    pub fn get(&self, keyword: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(key, _)| key == keyword)
            .map(|(_, value)| value.as_str())
    }

    /// How many hosts the string lists (1 when it lists none: libpq's default host).
    pub fn host_count(&self) -> usize {
        ["host", "hostaddr"]
            .iter()
            .filter_map(|keyword| self.get(keyword))
            .map(|list| list.split(',').count())
            .max()
            .unwrap_or(1)
    }

    /// The same settings with the host list (and the `hostaddr` and `port` lists that go with
    /// it) rotated left by `by`: host `by` is tried first, the skipped ones last.
    pub fn with_hosts_rotated(&self, by: usize) -> ConnInfo {
        let hosts = self.host_count();
        let options = self
            .options
            .iter()
            .map(|(key, value)| {
                let list: Vec<&str> = value.split(',').collect();
                let rotates = matches!(key.as_str(), "host" | "hostaddr" | "port")
                    && list.len() == hosts
                    && hosts > 1;
                let value = if rotates {
                    let mut list = list;
                    list.rotate_left(by % hosts);
                    list.join(",")
                } else {
                    value.clone()
                };
                (key.clone(), value)
            })
            .collect();
        ConnInfo { options }
    }

    /// A `key='value' …` string libpq reads back as these settings.
    pub fn to_conninfo_string(&self) -> String {
        self.options
            .iter()
            .map(|(key, value)| format!("{key}='{}'", escape_value(value)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `value` as it is written between the single quotes of a `key='value'` string: `\` and `'`
/// escaped by a backslash. (The form a password takes in [`ConnInfo::to_conninfo_string`], so
/// that it can be scrubbed in that form too.)
pub fn escape_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "\\'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_reads_hosts_ports_and_encoded_values() {
        let info = ConnInfo::parse(
            "postgresql://max%40roach:p%27w@h1:26257,h2:26258,h3:26259/bank?sslmode=disable",
        )
        .unwrap();
        assert_eq!(info.host_count(), 3);
        assert_eq!(info.get("user"), Some("max@roach"));
        assert_eq!(info.get("password"), Some("p'w"));
        let rotated = info.with_hosts_rotated(1);
        assert_eq!(rotated.get("host"), Some("h2,h3,h1"));
        assert_eq!(rotated.get("port"), Some("26258,26259,26257"));
        assert_eq!(rotated.get("dbname"), Some("bank"));
        // The string it writes reads back the same.
        let again = ConnInfo::parse(&rotated.to_conninfo_string()).unwrap();
        assert_eq!(again, rotated);
    }

    #[test]
    fn libpq_says_why_it_refuses_a_string() {
        let error = ConnInfo::try_parse("postgresql://u:p%zz@h/db").unwrap_err();
        assert!(error.contains("invalid percent-encoded token"), "{error}");
        assert!(ConnInfo::try_parse("postgresql://h/db?nonsense=1").is_err());
        assert!(ConnInfo::try_parse("a\0b").is_err());
        assert!(ConnInfo::parse("postgresql://u:p%zz@h/db").is_none());
    }

    #[test]
    fn one_port_for_every_host_stays_as_it_is() {
        let info = ConnInfo::parse("host=a,b port=26257 dbname=bank").unwrap();
        let rotated = info.with_hosts_rotated(1);
        assert_eq!(rotated.get("host"), Some("b,a"));
        assert_eq!(rotated.get("port"), Some("26257"));
    }
}
