//! Keeping passwords out of what roachbank prints. What is shown of a server URL is built from
//! what libpq read of it, without the password ([`ConnectionUrl::redacted`]). A [`Redactor`]
//! replaces, in text others produce, only what may quote a password: the connection strings
//! handed to libpq (diesel's connection events carry them), a URL clap quotes in refusing a
//! command line, `init`'s `PASSWORD '…'`. It does not hunt for the password's text everywhere:
//! a password that is also a user name or a word (`postgres:postgres`, `bank:bank`) would take
//! them with it, and no libpq or server message we know of quotes a password it was given
//! (libpq's refusal of a URL may: [`ConnectionUrl::parse`] shows it without what it quotes).

use super::config::DatabaseConfig;
use super::url::ConnectionUrl;

/// Replaces what may quote a password, in text before it is shown. Cheap to clone; it has no
/// `Debug`, which would show what it replaces.
#[derive(Clone, Default)]
pub struct Redactor {
    /// (text, what is shown instead), longest text first.
    replacements: Vec<(String, String)>,
}

impl Redactor {
    /// A redactor that replaces nothing yet.
    pub fn new() -> Redactor {
        Redactor::default()
    }

    /// A redactor for one configuration ([`Redactor::add_config`]).
    pub fn for_config(config: &DatabaseConfig) -> Redactor {
        let mut redactor = Redactor::new();
        redactor.add_config(config);
        redactor
    }

    /// Also shows `config`'s connection string as what is shown of it
    /// ([`DatabaseConfig::redacted`]).
    pub fn add_config(&mut self, config: &DatabaseConfig) {
        self.add_replacement(&config.connection_string(), &config.redacted());
    }

    /// Also replaces `text` — an argument that may be a database URL — wherever it appears: by
    /// its display if it is a server URL libpq reads, else by `***` if it may hold a password
    /// (it has a `://` or mentions a password).
    pub fn add_url(&mut self, text: &str) {
        let is_url = text.contains("://");
        let url = ConnectionUrl::parse(text).ok().filter(|_| is_url);
        if is_url || text.to_ascii_lowercase().contains("password") {
            self.add_replacement(text, &url.map_or("***".into(), |url| url.redacted()));
        }
    }

    /// Also replaces `text` by `shown` wherever it appears (an empty `text` is ignored).
    pub fn add_replacement(&mut self, text: &str, shown: &str) {
        if !text.is_empty() && !self.replacements.iter().any(|(known, _)| known == text) {
            self.replacements.push((text.into(), shown.into()));
            // Longest first, so a text containing another is replaced whole.
            self.replacements
                .sort_by_key(|(known, _)| std::cmp::Reverse(known.len()));
        }
    }

    /// Also replaces everything `other` replaces.
    pub fn extend(&mut self, other: &Redactor) {
        for (text, shown) in &other.replacements {
            self.add_replacement(text, shown);
        }
    }

    /// `text` with every replacement made.
    pub fn scrub(&self, text: &str) -> String {
        let replace = |text: String, (known, shown): &(String, String)| text.replace(known, shown);
        self.replacements.iter().fold(text.to_string(), replace)
    }

    /// How a connection attempt with `conninfo` (the connection string diesel's connection
    /// events carry) is shown: as the configuration's display when this redactor knows the
    /// string, else as what libpq reads of it ([`ConnectionUrl::redacted`]), else scrubbed.
    pub fn show_connection(&self, conninfo: &str) -> String {
        let known = self.replacements.iter().find(|(text, _)| text == conninfo);
        match (known, ConnectionUrl::parse(conninfo)) {
            (Some((_, shown)), _) => shown.clone(),
            (None, Ok(url)) => url.redacted(),
            (None, Err(_)) => self.scrub(conninfo),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::config::UrlSource;

    fn config(url: &str) -> DatabaseConfig {
        DatabaseConfig::parse(url, UrlSource::Flag).unwrap()
    }

    #[test]
    fn connection_strings_are_shown_as_their_urls_and_nothing_else_is_touched() {
        let target = config("postgresql://postgres:postgres@h/postgres");
        let admin = config("postgres://bank@h/bank?password=bank");
        let mut redactor = Redactor::for_config(&target);
        redactor.add_config(&admin);
        redactor.add_replacement("PASSWORD 'bank'", "PASSWORD ***");
        let text = format!(
            "connecting to {} and {}: user \"postgres\" of roachbank; CREATE ROLE bank PASSWORD 'bank'",
            target.connection_string(),
            admin.connection_string()
        );
        assert_eq!(
            redactor.scrub(&text),
            "connecting to postgresql://postgres@h/postgres and postgres://bank@h/bank: user \
             \"postgres\" of roachbank; CREATE ROLE bank PASSWORD ***"
        );
        let rotated = target
            .url()
            .unwrap()
            .clone()
            .with("host", "h2")
            .to_conninfo();
        assert_eq!(
            redactor.show_connection(&rotated),
            "postgresql://postgres@h2/postgres"
        );
        assert_eq!(
            redactor.show_connection(&admin.connection_string()),
            "postgres://bank@h/bank"
        );
        assert_eq!(redactor.show_connection("bank.db"), "bank.db");
    }

    #[test]
    fn arguments_that_may_be_urls_are_replaced_where_they_may_hold_a_password() {
        let mut redactor = Redactor::new();
        for argument in [
            "postgresql://u:Ab1@h/db",
            "postgresql://u:Cd2@Ef3@h/db",
            "host=h password=Gh4",
            "balance",
        ] {
            redactor.add_url(argument);
        }
        let scrubbed = redactor.scrub(
            "'postgresql://u:Ab1@h/db' 'postgresql://u:Cd2@Ef3@h/db' 'host=h password=Gh4' balance",
        );
        assert_eq!(scrubbed, "'postgresql://u@h/db' '***' '***' balance");
    }
}
