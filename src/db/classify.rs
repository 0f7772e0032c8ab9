//! What roachbank's connections add to the helper's error classification
//! ([`diesel_retry::classify()`], re-exported as [`crate::db::classify()`]): a draining
//! CockroachDB node's refusal of a new session, which reaches diesel's `establish` as text.

use diesel::ConnectionError;

/// Whether a failed connection attempt was a draining CockroachDB node's refusal. It is 57P01
/// (cockroachdb/cockroach `pkg/sql/pgwire/server.go`, `ErrDrainingNewConn` through
/// `newAdminShutdownErr`), but a refused start-up reaches diesel's `establish` as libpq's text
/// only, so its words tell.
pub(crate) fn is_drain_refusal(error: &ConnectionError) -> bool {
    matches!(error, ConnectionError::BadConnection(message)
        if message.contains("server is not accepting clients"))
}

/// Errors as diesel gives them, for the tests of every module that reads them.
#[cfg(test)]
pub(crate) mod test_errors {
    use diesel::result::Error as DieselError;

    /// An error the server reported with SQLSTATE `code` and `message`, as diesel 2.4's
    /// `PgConnection` gives one (`DatabaseErrorInformation::sqlstate`).
    pub(crate) fn from_server(code: &str, message: &str) -> DieselError {
        let code = code.parse().expect("a SQLSTATE");
        crate::db::sqlstate::error_from_text(message.to_string(), Some(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draining_cockroachdb_nodes_refusal_of_a_new_session_is_told_by_its_words() {
        // Its 57P01 on an open session is the helper's to classify (diesel_retry's tests);
        // refusing a new session, it reaches diesel's `establish` as libpq's text only.
        assert!(is_drain_refusal(&diesel::ConnectionError::BadConnection(
            "connection to server at \"127.0.0.1\", port 26257 failed: ERROR:  server is not \
             accepting clients, try another node"
                .to_string()
        )));
        assert!(!is_drain_refusal(&diesel::ConnectionError::BadConnection(
            "connection to server at \"127.0.0.1\", port 26257 failed: Connection refused"
                .to_string()
        )));
    }
}
