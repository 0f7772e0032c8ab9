//! Failures to reach or prepare the database, and the one-line form of a driver's message.

/// Failures to reach or prepare the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be made (unreachable server, wrong password, bad TLS files …).
    #[error("cannot connect to {url}: {message}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The driver's reason, on one line, password scrubbed.
        message: String,
    },
    /// A query failed while preparing the database.
    #[error("{0}")]
    Query(#[from] diesel::result::Error),
}

/// Folds a multi-line driver message (libpq's end in newlines and tabs) onto one line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
