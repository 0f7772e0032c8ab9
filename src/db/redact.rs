//! Keeping passwords out of everything roachbank shows: a URL displayed with its passwords as
//! `***` ([`redact_url`], and [`ConnectionUrl`]'s `Display`), and a [`Redactor`] that scrubs
//! every form of every known password from text others produced (libpq's and the server's
//! messages, `--echo` output).
//!
//! The rule: no form of password a URL can hold appears in any output — not where libpq takes
//! a password from, not where a user may have meant one that libpq reads as something else,
//! not in a URL libpq refuses. `Redactor::for_config` and `Redactor::add_config` are written
//! in [`super::config`], which sits above this module.

use super::conninfo::{escape_value, ConnInfo};
use super::url::{percent_decode, percent_encode, ConnectionUrl};
use std::fmt;
use std::ops::Range;

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

    /// Also scrubs the server connection string `url` (shown redacted) and every password it
    /// holds, in every form libpq takes one from it or a user may have meant one (see
    /// [`redact_url`]): raw as written, percent-decoded, percent-encoded, as a rotated
    /// `key='value'` string carries it (super::conninfo), and whatever libpq reads out of a
    /// password's text as a host, port or database name or quotes of it in refusing the URL.
    pub fn add_url(&mut self, url: &str) {
        self.urls.push((url.to_string(), redact_url(url)));
        for secret in url_secrets(url).secrets {
            self.add_secret(&secret);
        }
    }

    /// Also scrubs every URL and secret of `other`.
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

impl ConnectionUrl {
    /// The URL with every password replaced by `***` (see [`redact_url`]), safe to show.
    pub fn redacted(&self) -> String {
        redact_url(self.as_str())
    }
}

/// Shows the URL redacted ([`ConnectionUrl::redacted`]).
impl fmt::Display for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Shows the URL redacted ([`ConnectionUrl::redacted`]).
impl fmt::Debug for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ConnectionUrl")
            .field(&self.redacted())
            .finish()
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
    let layout = ConnectionUrl::parse(url);
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut secrets: Vec<String> = Vec::new();
    let mut libpq_values = Vec::new();
    let refusal = match (&parsed, &layout) {
        (Ok(info), Ok(layout)) => {
            let limit = layout.query_start();
            if let Some(at) = url[start..limit].rfind('@').map(|i| start + i) {
                if let Some(colon) = url[start..at].find(':').map(|i| start + i) {
                    if colon + 1 < at {
                        ranges.push(colon + 1..at);
                    }
                }
            }
            libpq_values = layout.value_ranges();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::config::{DatabaseConfig, UrlSource};

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
    fn passwords_are_redacted_in_userinfo_and_query() {
        assert_eq!(
            redact_url("postgresql://u:s3cr%40t@h1:5432,h2:5433/db?password=other&sslmode=require"),
            "postgresql://u:***@h1:5432,h2:5433/db?password=***&sslmode=require"
        );
        assert_eq!(redact_url("postgresql://u@h/db"), "postgresql://u@h/db");
        assert_eq!(redact_url("bank.db"), "bank.db");
    }

    #[test]
    fn a_connection_url_displays_and_debugs_redacted() {
        let url = ConnectionUrl::parse("postgresql://u:Ab1%23@h/db?pass%77ord=Cd2").unwrap();
        let shown = [url.to_string(), format!("{url:?}"), url.redacted()];
        for text in &shown {
            assert!(!text.contains("Ab1") && !text.contains("Cd2"), "{text}");
        }
        assert_eq!(shown[0], "postgresql://u:***@h/db?pass%77ord=***");
        assert_eq!(
            shown[1],
            "ConnectionUrl(\"postgresql://u:***@h/db?pass%77ord=***\")"
        );
    }

    #[test]
    fn scrub_removes_raw_and_decoded_passwords() {
        let config =
            DatabaseConfig::parse("postgresql://u:s3cr%40t@h/db", UrlSource::Flag).unwrap();
        let scrubbed = config.scrub("failed for s3cr@t and s3cr%40t");
        assert_eq!(scrubbed, "failed for *** and ***");
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
