//! The classification's table, case by case: by SQLSTATE whatever the language, without one
//! by kind or SQLite's and libpq's few words, and CockroachDB's 57014 told from PostgreSQL's.

use super::test_errors::{from_server, without_code};
use super::*;

#[test]
fn errors_without_their_own_kind_are_recognised_by_their_sqlstate() {
    assert_eq!(
        classify(&from_server("40P01", "deadlock detected")),
        ErrorClass::Retryable
    );
    assert_eq!(
        classify(&from_server(
            "40003",
            "result is ambiguous (error=rpc error)"
        )),
        ErrorClass::Ambiguous
    );
    assert_eq!(
        classify(&without_code(
            DatabaseErrorKind::Unknown,
            "database is locked"
        )),
        ErrorClass::Retryable
    );
    assert_eq!(
        classify(&from_server(
            "57P01",
            "terminating connection due to administrator command"
        )),
        ErrorClass::ConnectionLost
    );
    assert_eq!(
        classify(&from_server(
            "23505",
            "duplicate key value violates unique constraint"
        )),
        ErrorClass::Permanent
    );
    assert_eq!(classify(&DieselError::NotFound), ErrorClass::Permanent);
}

#[test]
fn errors_are_classified_by_their_sqlstate_whatever_their_language() {
    // PostgreSQL translates its messages when lc_messages is not English; the code stays.
    let cases = [
        (
            "40001",
            "konnte Zugriff nicht serialisieren",
            ErrorClass::Retryable,
        ),
        (
            "40P01",
            "Verklemmung (Deadlock) entdeckt",
            ErrorClass::Retryable,
        ),
        ("40003", "Ergebnis ist mehrdeutig", ErrorClass::Ambiguous),
        ("08000", "Verbindungsfehler", ErrorClass::ConnectionLost),
        (
            "08003",
            "Verbindung existiert nicht",
            ErrorClass::ConnectionLost,
        ),
        (
            "08006",
            "Verbindung fehlgeschlagen",
            ErrorClass::ConnectionLost,
        ),
        (
            "57P01",
            "Verbindung wird abgebrochen",
            ErrorClass::ConnectionLost,
        ),
        (
            "57P02",
            "Verbindung wird abgebrochen (Absturz)",
            ErrorClass::ConnectionLost,
        ),
        (
            "57P03",
            "das Datenbanksystem fährt hoch",
            ErrorClass::ConnectionLost,
        ),
        (
            "25P03",
            "Verbindung wird abgebrochen wegen Leerlauf",
            ErrorClass::ConnectionLost,
        ),
        (
            "57P05",
            "Verbindung wird abgebrochen wegen Leerlauf",
            ErrorClass::ConnectionLost,
        ),
        (
            "57014",
            "storniere Anfrage wegen Statement-Timeout",
            ErrorClass::Permanent,
        ),
        (
            "42501",
            "keine Berechtigung für Schema public",
            ErrorClass::Permanent,
        ),
        (
            "23505",
            "doppelter Schlüsselwert verletzt Unique-Constraint",
            ErrorClass::Permanent,
        ),
        // A malformed request, which PostgreSQL may answer without closing the session
        // ("bind message supplies 1 parameters, but prepared statement requires 2"):
        // sending it again cannot help. When it does close the session, libpq reports the
        // connection bad, and that is a lost connection (see the next test).
        ("08P01", "Protokollverletzung", ErrorClass::Permanent),
    ];
    for (code, message, class) in cases {
        assert_eq!(
            classify(&from_server(code, message)),
            class,
            "{code} {message}"
        );
    }
}

#[test]
fn errors_without_a_sqlstate_are_known_by_kind_or_by_the_few_words_of_sqlite_and_libpq() {
    for message in [
        "database is locked",
        "database table is locked",
        "database schema is locked",
    ] {
        assert_eq!(
            classify(&without_code(DatabaseErrorKind::Unknown, message)),
            ErrorClass::Retryable,
            "{message}"
        );
    }
    for message in [
        "server closed the connection unexpectedly\n\tThis probably means …",
        "no connection to the server",
        "connection to server was lost",
        "could not receive data from server: Connection reset by peer",
        "could not send data to server: Broken pipe",
    ] {
        for kind in [
            DatabaseErrorKind::Unknown,
            DatabaseErrorKind::UnableToSendCommand,
        ] {
            assert_eq!(
                classify(&without_code(kind, message)),
                ErrorClass::ConnectionLost,
                "{kind:?} {message}"
            );
        }
    }
    // libpq reports the connection bad: lost, whatever the words (and any code).
    assert_eq!(
        classify(&without_code(
            DatabaseErrorKind::ClosedConnection,
            "Verbindung zum Server wurde unerwartet geschlossen"
        )),
        ErrorClass::ConnectionLost
    );
    assert_eq!(
        classify(&DieselError::BrokenTransactionManager),
        ErrorClass::ConnectionLost
    );
    // A server's words without its code decide nothing.
    assert_eq!(
        classify(&without_code(
            DatabaseErrorKind::Unknown,
            "deadlock detected"
        )),
        ErrorClass::Permanent
    );
}

#[test]
fn a_draining_cockroachdb_node_is_a_lost_connection() {
    // Both are 57P01 (cockroachdb/cockroach `pkg/sql/pgwire/server.go`,
    // `newAdminShutdownErr`).
    for message in [
        "server is shutting down",
        "server is not accepting clients, try another node",
    ] {
        assert_eq!(
            classify(&from_server("57P01", message)),
            ErrorClass::ConnectionLost,
            "{message}"
        );
    }
    // Refusing a new session, it reaches diesel's `establish` as libpq's text only.
    assert!(is_drain_refusal(&diesel::ConnectionError::BadConnection(
        "connection to server at \"127.0.0.1\", port 26257 failed: ERROR:  server is not \
         accepting clients, try another node"
            .to_string()
    )));
    assert!(!is_drain_refusal(&diesel::ConnectionError::BadConnection(
        "connection to server at \"127.0.0.1\", port 26257 failed: Connection refused".to_string()
    )));
}

#[test]
fn cockroachdb_57014_is_a_timeout_or_a_cancel() {
    for message in [
        "query execution canceled due to statement timeout",
        "query execution canceled due to transaction timeout",
    ] {
        assert_eq!(
            classify(&from_server("57014", message)),
            ErrorClass::CockroachTimeout,
            "{message}"
        );
    }
    assert_eq!(
        classify(&from_server("57014", "query execution canceled")),
        ErrorClass::CockroachCancel
    );
    // The words decide only between the two servers' 57014.
    assert_eq!(
        classify(&from_server("P0001", "query execution canceled")),
        ErrorClass::Permanent
    );
}

#[test]
fn postgresql_57014_is_permanent_it_rolled_back() {
    for message in [
        "canceling statement due to statement timeout",
        "canceling statement due to user request",
        "storniere Anfrage wegen Aufforderung durch den Benutzer",
    ] {
        assert_eq!(
            classify(&from_server("57014", message)),
            ErrorClass::Permanent,
            "{message}"
        );
    }
}

#[test]
fn a_57014_on_commit_is_classified_from_the_commit_error() {
    let on_commit = DieselError::RollbackErrorOnCommit {
        rollback_error: Box::new(DieselError::BrokenTransactionManager),
        commit_error: Box::new(from_server("57014", "query execution canceled")),
    };
    assert_eq!(classify(&on_commit), ErrorClass::CockroachCancel);
}

#[test]
fn errors_with_a_sqlstate_kind_are_classified_whatever_their_language() {
    let translated = |kind| without_code(kind, "konnte Zugriff nicht serialisieren");
    assert_eq!(
        classify(&translated(DatabaseErrorKind::SerializationFailure)),
        ErrorClass::Retryable
    );
    assert_eq!(
        classify(&translated(DatabaseErrorKind::ClosedConnection)),
        ErrorClass::ConnectionLost
    );
}
