//! The tutorial's secure-cluster path against a real TLS server: a second throwaway PostgreSQL
//! with `ssl = on` and certificate authentication for `maxroach` (tests/it/support/tls.rs), the
//! client's files laid out as `cockroach cert` makes them (`certs/ca.crt`,
//! `certs/client.maxroach.crt`, `certs/client.maxroach.key`), and the binary run in a fresh
//! directory holding them, with `sslmode=verify-full` and relative paths — as a new user would.

use crate::support::bin::{
    assert_one_line_error, assert_success, describe, run, stderr_of, stdout_of, temp_dir,
};
use crate::support::tls::{set_mode, tls_server, CLIENT_USER};
use diesel::prelude::*;
use diesel::sql_types::{Bool, Nullable, Text};
use diesel_retry::{run_transaction, RetryPolicy};
use roachbank::db::config::{DatabaseConfig, UrlSource};
use roachbank::db::{ConnectOptions, Database, DbConnection};
use std::path::Path;
use std::process::Output;

/// The client's TLS parameters, relative to the directory the binary runs in.
const CLIENT_TLS: &str = "sslmode=verify-full&sslrootcert=certs/ca.crt\
                          &sslcert=certs/client.maxroach.crt&sslkey=certs/client.maxroach.key";

/// A database name no other test uses.
fn fresh_name(stem: &str) -> String {
    format!("{stem}_{:010x}", rand::random::<u64>() & 0xff_ffff_ffff)
}

/// `maxroach`'s URL for `database` on the TLS server, with `tls` as its query string.
fn maxroach_url(database: &str, tls: &str) -> String {
    format!(
        "postgresql://{CLIENT_USER}@localhost:{}/{database}?{tls}",
        tls_server().server.port()
    )
}

/// The admin's URL: `postgres`, verifying the server against the CA, no client certificate.
fn admin_url() -> String {
    format!(
        "postgresql://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert=certs/ca.crt",
        tls_server().server.port()
    )
}

/// A fresh directory holding `certs/` as `cockroach cert` lays it out.
fn client_dir() -> tempfile::TempDir {
    let dir = temp_dir();
    tls_server().certs.install_client_certs(dir.path());
    dir
}

/// Runs `args` against `url` in `dir`.
fn run_with(dir: &Path, url: &str, args: &[&str]) -> Output {
    let mut all = vec!["--database-url", url];
    all.extend_from_slice(args);
    run(dir, &all, &[])
}

/// Panics unless the command failed with exit code 1 and one line on stderr; returns the
/// driver's reason: the part after "cannot connect to URL: ", so that a file name found in it
/// was named by the reason, not merely by the URL.
fn connect_failure(output: &Output) -> String {
    let line = assert_one_line_error(output);
    assert_eq!(output.status.code(), Some(1), "{}", describe(output));
    // The URL shown holds no ": " (scheme://user@host:port/database).
    let (_, reason) = line
        .split_once("cannot connect to ")
        .and_then(|(_, rest)| rest.split_once(": "))
        .unwrap_or_else(|| panic!("not a connection error: {}", describe(output)));
    reason.to_string()
}

/// Lines of the TLS server's log that record an authorised connection of `user` to `database`.
fn authorized_connections(user: &str, database: &str) -> Vec<String> {
    let log = tls_server()
        .server
        .log_path()
        .expect("the TLS server is a throwaway with a log");
    let text = std::fs::read_to_string(log).expect("read the TLS server's log");
    let needle = format!("connection authorized: user={user} database={database} ");
    text.lines()
        .filter(|line| line.contains(&needle))
        .map(str::to_string)
        .collect()
}

#[derive(QueryableByName)]
struct SslSession {
    #[diesel(sql_type = Bool)]
    ssl: bool,
    #[diesel(sql_type = Nullable<Text>)]
    client_dn: Option<String>,
    #[diesel(sql_type = Text)]
    user: String,
}

#[test]
fn init_seed_transfer_over_verify_full_with_a_client_certificate_and_the_server_saw_tls() {
    let dir = client_dir();
    let cwd = dir.path();
    let database = fresh_name("bank");
    let url = maxroach_url(&database, CLIENT_TLS);

    let init = run_with(cwd, &url, &["init", "--admin-url", &admin_url()]);
    assert_success(&init);
    let stdout = stdout_of(&init);
    assert!(
        stdout.contains(&format!("database \"{database}\": created")),
        "{}",
        describe(&init)
    );
    assert!(
        stdout.contains(&format!("applied as \"{CLIENT_USER}\"")),
        "{}",
        describe(&init)
    );

    let seed = run_with(cwd, &url, &["seed", "--accounts", "20"]);
    assert_success(&seed);
    let transfer = run_with(cwd, &url, &["transfer", "--count", "3"]);
    assert_success(&transfer);
    assert!(
        stdout_of(&transfer).starts_with("transferred "),
        "{}",
        describe(&transfer)
    );
    let balance = run_with(cwd, &url, &["balance"]);
    assert_success(&balance);
    assert!(
        stdout_of(&balance).contains("accounts: 20"),
        "{}",
        describe(&balance)
    );

    // The server's own record of every session the binary opened as maxroach: TLS, and the
    // application name roachbank set.
    let sessions = authorized_connections(CLIENT_USER, &database);
    assert!(
        sessions.len() >= 4,
        "expected a logged session per command (init, seed, transfer, balance): {sessions:#?}"
    );
    for session in &sessions {
        assert!(
            session.contains("application_name=roachbank") && session.contains("SSL enabled"),
            "a session without TLS or without roachbank's application_name: {session}"
        );
    }
    let admin_sessions = authorized_connections("postgres", &database);
    assert!(
        admin_sessions
            .iter()
            .all(|session| session.contains("SSL enabled")),
        "{admin_sessions:#?}"
    );

    // And from inside a session the library opens: TLS, authenticated by the certificate.
    let certs = dir.path().join("certs");
    let absolute = format!(
        "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
        certs.join("ca.crt").display(),
        certs.join("client.maxroach.crt").display(),
        certs.join("client.maxroach.key").display(),
    );
    let db = Database::open(
        DatabaseConfig::parse(&maxroach_url(&database, &absolute), UrlSource::Flag).unwrap(),
        &ConnectOptions::default(),
    )
    .expect("open the database over TLS through the library");
    let session = run_transaction(&db, &RetryPolicy::default(), |conn| match conn {
        DbConnection::Postgresql(pg) => diesel::sql_query(
            "SELECT ssl, client_dn, current_user::text AS user \
             FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .get_result::<SslSession>(pg),
        DbConnection::Sqlite(_) => unreachable!("a server URL"),
    })
    .expect("read pg_stat_ssl")
    .value;
    assert!(session.ssl, "pg_stat_ssl says the session is not TLS");
    assert_eq!(session.client_dn.as_deref(), Some("/CN=maxroach"));
    assert_eq!(session.user, CLIENT_USER);
}

#[test]
fn wrong_ca_fails_with_one_line_saying_certificate_verify_failed() {
    let dir = client_dir();
    std::fs::copy(
        &tls_server().certs.other_ca_crt,
        dir.path().join("certs/other-ca.crt"),
    )
    .expect("copy the other CA");
    let tls = CLIENT_TLS.replace("certs/ca.crt", "certs/other-ca.crt");
    let output = run_with(dir.path(), &maxroach_url("bank", &tls), &["balance"]);
    let reason = connect_failure(&output);
    assert!(
        reason.contains("certificate verify failed"),
        "{}",
        describe(&output)
    );
}

#[test]
fn missing_key_file_fails_with_one_line_naming_the_file() {
    let dir = client_dir();
    let tls = CLIENT_TLS.replace("certs/client.maxroach.key", "certs/missing.key");
    let output = run_with(dir.path(), &maxroach_url("bank", &tls), &["balance"]);
    let reason = connect_failure(&output);
    assert!(
        reason.contains("\"certs/missing.key\""),
        "{}",
        describe(&output)
    );
}

#[test]
fn key_with_loose_permissions_fails_with_one_line_naming_the_file_and_the_reason() {
    let dir = client_dir();
    set_mode(&dir.path().join("certs/client.maxroach.key"), 0o644);
    let output = run_with(dir.path(), &maxroach_url("bank", CLIENT_TLS), &["balance"]);
    let reason = connect_failure(&output);
    assert!(
        reason.contains("\"certs/client.maxroach.key\"")
            && reason.contains("group or world access"),
        "{}",
        describe(&output)
    );
}

#[test]
fn missing_root_certificate_fails_with_one_line_naming_the_file() {
    let dir = client_dir();
    let tls = CLIENT_TLS.replace("certs/ca.crt", "certs/no-such-ca.crt");
    let output = run_with(dir.path(), &maxroach_url("bank", &tls), &["balance"]);
    let reason = connect_failure(&output);
    assert!(
        reason.contains("\"certs/no-such-ca.crt\"") && reason.contains("does not exist"),
        "{}",
        describe(&output)
    );
}

#[test]
fn without_a_client_certificate_the_server_refuses_maxroach() {
    let dir = client_dir();
    let output = run_with(
        dir.path(),
        &maxroach_url("bank", "sslmode=verify-full&sslrootcert=certs/ca.crt"),
        &["balance"],
    );
    let reason = connect_failure(&output);
    assert!(
        reason.contains("certificate"),
        "the refusal should say a client certificate is required: {}",
        describe(&output)
    );
}

#[test]
fn without_tls_the_server_refuses_maxroach() {
    let dir = client_dir();
    let output = run_with(
        dir.path(),
        &maxroach_url("bank", "sslmode=disable"),
        &["balance"],
    );
    let reason = connect_failure(&output);
    assert!(
        reason.contains("no encryption"),
        "the refusal should say the connection was not encrypted: {}",
        describe(&output)
    );
    assert!(!stderr_of(&output).contains("SSL enabled"));
}
