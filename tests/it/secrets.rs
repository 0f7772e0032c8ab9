//! No password is ever printed: every command, with `--echo` (which prints every connection
//! attempt — diesel's connection events carry the URL with its password — and every
//! statement) and `-vv` (run_transaction's events, database errors included), with passwords
//! in the database URL and in init's admin URL (as `user:pw@`, as `?password=`,
//! percent-encoded), against a reachable server (right and wrong password, one and several
//! hosts) and an unreachable one. Everything the binary writes is searched for
//! every form of every password.

use crate::support;
use crate::support::bin::{assert_success, describe, run, stderr_of, stdout_of, temp_dir};
use crate::support::{
    ensure_password_checked_group, not_run_on_cockroachdb, server, PASSWORD_CHECKED_GROUP,
};
use std::process::Output;

/// The user's password as it is (`%40` is `@`, `%21` is `!` once decoded).
const USER_PASSWORD_ENCODED: &str = "Usr-pw%40x91q";
const USER_PASSWORD: &str = "Usr-pw@x91q";
/// The admin's password (not checked: the suite's server trusts `postgres` on loopback — but
/// it is in the URL, and must never be shown).
const ADMIN_PASSWORD_ENCODED: &str = "Adm-pw%21z47k";
const ADMIN_PASSWORD: &str = "Adm-pw!z47k";
/// A wrong password for the user.
const WRONG_PASSWORD: &str = "Wrong-pw-58tz";

/// Every form a password could be printed in.
const SECRETS: &[&str] = &[
    USER_PASSWORD_ENCODED,
    USER_PASSWORD,
    ADMIN_PASSWORD_ENCODED,
    ADMIN_PASSWORD,
    WRONG_PASSWORD,
    // Distinctive fragments, in case a password is printed re-encoded or cut.
    "x91q",
    "z47k",
    "58tz",
];

/// Every command, with its arguments (init's admin URL is added by the caller).
const COMMANDS: &[&[&str]] = &[
    &["seed", "--accounts", "3"],
    &["transfer", "--count", "2"],
    &["points", "10"],
    &["balance"],
    &["check"],
    &["init"],
];

/// A command that succeeds on a database roachbank has not touched yet (it makes the bank;
/// `balance` would say there is none).
const SEED_ONE: &[&str] = &["seed", "--accounts", "1"];

/// A role whose password the server checks (member of the password-checked group) and a
/// database it owns; dropped afterwards.
struct PasswordUser {
    user: String,
    database: String,
    /// Roles the test made besides `user` (dropped after the database).
    extra_roles: Vec<String>,
}

impl PasswordUser {
    fn new() -> PasswordUser {
        PasswordUser::with_password(USER_PASSWORD)
    }

    /// A role whose password is `password` (no `'` in it), and a database it owns.
    fn with_password(password: &str) -> PasswordUser {
        ensure_password_checked_group();
        let tag = format!("{:010x}", rand::random::<u64>() & 0xff_ffff_ffff);
        let user = format!("rb_secret_{tag}");
        let database = format!("rb_secret_db_{tag}");
        server().psql(
            "postgres",
            &format!(
                "CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}' IN ROLE {PASSWORD_CHECKED_GROUP}"
            ),
        );
        server().psql(
            "postgres",
            &format!("CREATE DATABASE \"{database}\" OWNER \"{user}\""),
        );
        server().psql(
            &database,
            &format!("ALTER SCHEMA public OWNER TO \"{user}\""),
        );
        PasswordUser {
            user,
            database,
            extra_roles: Vec::new(),
        }
    }
}

impl Drop for PasswordUser {
    fn drop(&mut self) {
        let _ = server().try_psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database),
        );
        for role in self.extra_roles.iter().chain(std::iter::once(&self.user)) {
            let _ = server().try_psql("postgres", &format!("DROP ROLE IF EXISTS \"{role}\""));
        }
    }
}

/// Runs `command` with `--echo` and `-vv` against `url` (and `admin` for init); returns the
/// output.
fn run_echo(url: &str, admin: &str, command: &[&str]) -> Output {
    let dir = temp_dir();
    let mut args = vec!["--database-url", url, "--echo", "-vv"];
    args.extend_from_slice(command);
    if command == ["init"] {
        args.extend_from_slice(&["--admin-url", admin]);
    }
    run(dir.path(), &args, &[])
}

/// Panics if the output holds any form of any password.
fn assert_no_secret(what: &str, output: &Output) {
    let all = format!("{}{}", stdout_of(output), stderr_of(output));
    for secret in SECRETS {
        assert!(
            !all.contains(secret),
            "{what}: the output shows {secret:?}: {}",
            describe(output)
        );
    }
}

#[test]
fn no_command_prints_a_password_against_reachable_or_unreachable_servers() {
    if not_run_on_cockroachdb(
        "no_command_prints_a_password_against_reachable_or_unreachable_servers",
        "it needs a role whose password the server checks (made in PL/pgSQL, checked by the \
         throwaway server's pg_hba.conf), and init creating a user with a password; the \
         insecure CockroachDB the suite runs against refuses passwords (28P01)",
    ) {
        return;
    }
    let mut account = PasswordUser::new();
    let live = format!("{}:{}", server().host(), server().port());
    let admin = format!("postgresql://postgres:{ADMIN_PASSWORD_ENCODED}@{live}/postgres");
    let admin_in_query =
        format!("postgresql://postgres@{live}/postgres?password={ADMIN_PASSWORD_ENCODED}");
    let reachable = [
        format!(
            "postgresql://{}:{USER_PASSWORD_ENCODED}@{live}/{}",
            account.user, account.database
        ),
        format!(
            "postgresql://{}@{live}/{}?password={USER_PASSWORD_ENCODED}&sslmode=disable",
            account.user, account.database
        ),
        format!(
            "postgresql://{}:{USER_PASSWORD_ENCODED}@127.0.0.1:1,{live}/{}",
            account.user, account.database
        ),
    ];

    // Reachable, right password: every command works, and --echo shows the URLs redacted.
    for (i, url) in reachable.iter().enumerate() {
        let admin = if i == 1 { &admin_in_query } else { &admin };
        for command in COMMANDS {
            let output = run_echo(url, admin, command);
            let what = format!("{command:?} on reachable URL #{i}");
            assert_success(&output);
            assert_no_secret(&what, &output);
            assert!(
                stderr_of(&output)
                    .contains(&format!("connecting to postgresql://{}", account.user)),
                "{what}: --echo did not show the connection: {}",
                describe(&output)
            );
        }
    }

    // Reachable, wrong password; and nothing listening at all.
    let failing = [
        format!(
            "postgresql://{}:{WRONG_PASSWORD}@{live}/{}",
            account.user, account.database
        ),
        format!("postgresql://u:{USER_PASSWORD_ENCODED}@127.0.0.1:1/bank"),
        format!("postgresql://u@127.0.0.1:1,127.0.0.1:2/bank?password={USER_PASSWORD_ENCODED}"),
    ];
    let unreachable_admin =
        format!("postgresql://root:{ADMIN_PASSWORD_ENCODED}@127.0.0.1:1/postgres");
    for (i, url) in failing.iter().enumerate() {
        for command in COMMANDS {
            let admin = if i == 0 { &admin } else { &unreachable_admin };
            let output = run_echo(url, admin, command);
            let what = format!("{command:?} on failing URL #{i}");
            assert!(!output.status.success(), "{what}: {}", describe(&output));
            assert_no_secret(&what, &output);
            let stderr = stderr_of(&output);
            assert!(
                stderr.contains("connecting to postgresql://") && stderr.contains("failed:"),
                "{what}: --echo did not show the failed connection attempt: {}",
                describe(&output)
            );
            assert!(
                stderr
                    .lines()
                    .last()
                    .is_some_and(|line| line.starts_with("roachbank: error: ")),
                "{what}: {}",
                describe(&output)
            );
        }
    }

    // init creating a new user with a password from the URL: the CREATE ROLE is echoed, the
    // password is not.
    let new_user = format!("{}_new", account.user);
    let url = format!(
        "postgresql://{new_user}:{USER_PASSWORD_ENCODED}@{live}/{}",
        account.database
    );
    let output = run_echo(&url, &admin, &["init"]);
    assert_success(&output);
    assert_no_secret("init creating a user", &output);
    assert!(
        stderr_of(&output).contains(&format!("CREATE ROLE \"{new_user}\" LOGIN PASSWORD ***")),
        "{}",
        describe(&output)
    );
    account.extra_roles.push(new_user);
}

// Passwords holding the characters a URL gives a meaning to (issue 9, item 4). libpq's URI
// parser (PostgreSQL `fe-connect.c`, `conninfo_uri_parse_options`) ends the userinfo at the
// first `@` before any `/`, and the password at that `@`: `#`, `?` and `:` may stand in it
// unencoded, `@` and `/` may not (they are spelled `%40` and `%2F`; written as they are, the
// rest of the password becomes a host, a port or the database name). In the query, libpq
// percent-decodes the key as well as the value: `pass%77ord=` sets the password.

/// The role's password: every character a URL gives a meaning to.
const SPECIAL_PASSWORD: &str = "Hq4#Jv6?Kw8:Lx3@Mz5/Nr7";
/// [`SPECIAL_PASSWORD`] as a userinfo holds it: `#?:` as they are, `@` and `/` encoded.
const SPECIAL_PASSWORD_IN_USERINFO: &str = "Hq4#Jv6?Kw8:Lx3%40Mz5%2FNr7";
/// [`SPECIAL_PASSWORD`] with every special character percent-encoded.
const SPECIAL_PASSWORD_ENCODED: &str = "Hq4%23Jv6%3FKw8%3ALx3%40Mz5%2FNr7";
/// A wrong password of the same shape.
const SPECIAL_WRONG_PASSWORD: &str = "Wq1#Ex2?Ry3:Tz4";
/// [`SPECIAL_WRONG_PASSWORD`] percent-encoded.
const SPECIAL_WRONG_PASSWORD_ENCODED: &str = "Wq1%23Ex2%3FRy3%3ATz4";
/// The admin's password (trusted by the suite's server, so never checked — never shown).
const SPECIAL_ADMIN_PASSWORD: &str = "Ad1#Bd2?Cd3:Dd4";
/// Passwords with `@` or `/` unencoded in the userinfo: libpq reads a piece of each as the
/// password and the rest as a host, a port or the database name; the second is the issue's
/// `p@ss:w/rd%zz`, which libpq refuses to parse at all.
const MISREAD_PASSWORDS: &[&str] = &[
    "Pa1@Qb2:Rc3/Sd4",
    "Gb3@Hc4:Jd5/Kf6%zz",
    "Xa1/Yb2",
    "Va1@Wb2",
];

/// Every piece of the passwords above between the characters that split them, and the
/// passwords whole, raw and encoded: none may be printed, in any output.
fn special_secrets() -> Vec<String> {
    let mut secrets: Vec<String> = [
        SPECIAL_PASSWORD,
        SPECIAL_PASSWORD_IN_USERINFO,
        SPECIAL_PASSWORD_ENCODED,
        SPECIAL_WRONG_PASSWORD,
        SPECIAL_WRONG_PASSWORD_ENCODED,
        SPECIAL_ADMIN_PASSWORD,
    ]
    .iter()
    .chain(MISREAD_PASSWORDS)
    .map(|secret| secret.to_string())
    .collect();
    let whole = secrets.clone();
    for password in whole {
        secrets.extend(
            password
                .split(['#', '?', ':', '@', '/', '%'])
                .filter(|piece| piece.len() >= 3)
                .map(str::to_string),
        );
    }
    secrets
}

/// Panics if the output holds any of [`special_secrets`].
fn assert_no_special_secret(what: &str, output: &Output) {
    for secret in special_secrets() {
        assert_not_leaked_as(what, output, &secret);
    }
}

fn assert_not_leaked_as(what: &str, output: &Output, secret: &str) {
    let all = format!("{}{}", stdout_of(output), stderr_of(output));
    assert!(
        !all.contains(secret),
        "{what}: the output shows {secret:?}: {}",
        describe(output)
    );
}

/// Panics unless the command failed with roachbank's error line last.
fn assert_failed_with_error_line(what: &str, output: &Output) {
    assert!(!output.status.success(), "{what}: {}", describe(output));
    assert!(
        stderr_of(output)
            .lines()
            .last()
            .is_some_and(|line| line.starts_with("roachbank: error: ")),
        "{what}: {}",
        describe(output)
    );
}

#[test]
fn a_password_with_hash_question_mark_and_colon_connects_and_is_never_printed() {
    if not_run_on_cockroachdb(
        "a_password_with_hash_question_mark_and_colon_connects_and_is_never_printed",
        "it needs a role whose password the server checks; the insecure CockroachDB the suite \
         runs against refuses passwords (28P01)",
    ) {
        return;
    }
    let mut account = PasswordUser::with_password(SPECIAL_PASSWORD);
    let (user, database) = (account.user.clone(), account.database.clone());
    let live = format!("{}:{}", server().host(), server().port());
    let url = format!("postgresql://{user}:{SPECIAL_PASSWORD_IN_USERINFO}@{live}/{database}");
    let admin = format!("postgresql://postgres:{SPECIAL_ADMIN_PASSWORD}@{live}/postgres");

    // It connects: roachbank's own settings go to libpq, not into the password (after its `?`)
    // or the database name; --echo shows the URL as libpq read it, without the password.
    for command in [&["seed", "--accounts", "2"][..], &["balance"], &["init"]] {
        let output = run_echo(&url, &admin, command);
        let what = format!("{command:?} with #?: in the password");
        assert_success(&output);
        assert_no_special_secret(&what, &output);
        let shown = format!("connecting to postgresql://{user}@{live}/{database}\n");
        assert!(
            stderr_of(&output).contains(&shown),
            "{what}: --echo did not show {shown:?}: {}",
            describe(&output)
        );
    }

    // init giving a new user this password: the CREATE ROLE is echoed, the password is not.
    let new_user = format!("{user}_new");
    let new_url =
        format!("postgresql://{new_user}:{SPECIAL_PASSWORD_IN_USERINFO}@{live}/{database}");
    let output = run_echo(&new_url, &admin, &["init"]);
    account.extra_roles.push(new_user.clone());
    assert_success(&output);
    assert_no_special_secret("init creating a user", &output);
    assert!(
        stderr_of(&output).contains(&format!("CREATE ROLE \"{new_user}\" LOGIN PASSWORD ***")),
        "{}",
        describe(&output)
    );

    // A wrong password of the same shape, and nothing listening.
    let wrong = format!("postgresql://{user}:{SPECIAL_WRONG_PASSWORD}@{live}/{database}");
    let output = run_echo(&wrong, &admin, &["balance"]);
    assert_failed_with_error_line("wrong password", &output);
    assert_no_special_secret("wrong password", &output);
    assert!(
        stderr_of(&output).contains("password authentication failed"),
        "{}",
        describe(&output)
    );
    let unreachable =
        format!("postgresql://{user}:{SPECIAL_PASSWORD_IN_USERINFO}@127.0.0.1:1/{database}");
    let unreachable_admin =
        format!("postgresql://postgres:{SPECIAL_ADMIN_PASSWORD}@127.0.0.1:1/postgres");
    for command in [&["balance"][..], &["init"]] {
        let output = run_echo(&unreachable, &unreachable_admin, command);
        let what = format!("{command:?} against nothing listening");
        assert_failed_with_error_line(&what, &output);
        assert_no_special_secret(&what, &output);
    }
}

#[test]
fn query_passwords_in_every_spelling_libpq_reads_are_never_printed() {
    if not_run_on_cockroachdb(
        "query_passwords_in_every_spelling_libpq_reads_are_never_printed",
        "it needs a role whose password the server checks; the insecure CockroachDB the suite \
         runs against refuses passwords (28P01)",
    ) {
        return;
    }
    let account = PasswordUser::with_password(SPECIAL_PASSWORD);
    let (user, database) = (&account.user, &account.database);
    let live = format!("{}:{}", server().host(), server().port());
    // libpq decodes the key as well as the value; the value may hold `#?:@/` as they are, or
    // percent-encoded.
    let values = [
        (SPECIAL_PASSWORD, SPECIAL_WRONG_PASSWORD),
        (SPECIAL_PASSWORD_ENCODED, SPECIAL_WRONG_PASSWORD_ENCODED),
    ];
    for key in ["password", "pass%77ord", "%70assword"] {
        for (value, wrong_value) in values {
            let url =
                format!("postgresql://{user}@{live}/{database}?{key}={value}&sslmode=disable");
            let output = run_echo(&url, &url, SEED_ONE);
            let what = format!("?{key}={value}");
            assert_success(&output);
            assert_no_special_secret(&what, &output);
            let shown = format!("connecting to postgresql://{user}@{live}/{database}\n");
            assert!(
                stderr_of(&output).contains(&shown),
                "{what}: --echo did not show {shown:?}: {}",
                describe(&output)
            );

            let wrong = format!("postgresql://{user}@{live}/{database}?{key}={wrong_value}");
            let output = run_echo(&wrong, &wrong, &["balance"]);
            let what = format!("?{key}={wrong_value} (wrong)");
            assert_failed_with_error_line(&what, &output);
            assert_no_special_secret(&what, &output);
            assert!(
                stderr_of(&output).contains("password authentication failed"),
                "{what}: {}",
                describe(&output)
            );

            let unreachable = format!("postgresql://u@127.0.0.1:1/bank?{key}={value}");
            let output = run_echo(&unreachable, &unreachable, &["balance"]);
            let what = format!("?{key}={value} against nothing listening");
            assert_failed_with_error_line(&what, &output);
            assert_no_special_secret(&what, &output);
        }
    }
}

#[test]
fn unencoded_at_and_slash_in_a_password_are_never_printed() {
    // libpq cannot connect with these as meant (it reads part of the password as a host, a port
    // or the database name, or refuses the URL): the attempt fails, quickly, and shows nothing
    // of the password — not even the pieces libpq took for something else.
    let live = format!("{}:{}", server().host(), server().port());
    for password in MISREAD_PASSWORDS {
        for host in [live.as_str(), "127.0.0.1:1"] {
            let url = format!("postgresql://u:{password}@{host}/bank");
            for args in [&["--echo", "balance"][..], &["check"]] {
                let dir = temp_dir();
                let mut all = vec!["--database-url", url.as_str()];
                all.extend_from_slice(args);
                let output = run(dir.path(), &all, &[]);
                let what = format!("{args:?} with {password:?} unencoded against {host}");
                assert_failed_with_error_line(&what, &output);
                assert_no_special_secret(&what, &output);
            }
        }
    }
}

/// clap quotes the argument it refuses; a URL put where a command was expected, or given to a
/// flag that does not exist, must still not show its password.
#[test]
fn a_password_in_a_refused_argument_is_never_printed() {
    let dir = temp_dir();
    let secret = "pw-Cl4pQuoted";
    let url = format!("postgresql://u:{secret}@127.0.0.1:1/bank");
    let flag = format!("--databse-url={url}");
    for args in [
        vec![url.as_str(), "balance"],
        vec!["balance", flag.as_str()],
        vec!["balance", url.as_str()],
    ] {
        let output = run(dir.path(), &args, &[]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            describe(&output)
        );
        // roachbank's one usage line (exit 2).
        support::bin::assert_usage_line(&output);
        support::bin::assert_not_leaked(&output, secret);
    }
}

// Issue 19: what is shown of a URL is built from what libpq read of it — scheme, user, hosts,
// ports, database — never from the text with the password cut out of it. A password that is
// also the user's name (`postgres:postgres`), or a word of something else shown (`bank` in
// `roachbank`), or that libpq reads partly as a host (`p@ss` unencoded), used to be scrubbed
// out of everything, user names and the log's own target included:
// `cannot connect to ***ql://***:***@localhost:54329/***?…: password authentication failed for
// user "***"`.

/// The last line of stderr, which must be roachbank's error line.
fn error_line(what: &str, output: &Output) -> String {
    assert_failed_with_error_line(what, output);
    stderr_of(output)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// Panics unless `text` holds `expected`.
fn assert_shows(what: &str, output: &Output, expected: &str) {
    assert!(
        stderr_of(output).contains(expected),
        "{what}: expected {expected:?} in: {}",
        describe(output)
    );
}

#[test]
fn a_password_equal_to_the_user_name_leaves_the_scheme_and_the_user_shown() {
    if not_run_on_cockroachdb(
        "a_password_equal_to_the_user_name_leaves_the_scheme_and_the_user_shown",
        "it needs a role whose password the server checks and the superuser `postgres` trusted \
         on loopback; the insecure CockroachDB the suite runs against refuses passwords (28P01)",
    ) {
        return;
    }
    let live = format!("{}:{}", server().host(), server().port());
    // The issue's own URL shape, nothing listening: the error names the URL and the user.
    let url = "postgresql://postgres:postgres@127.0.0.1:1/postgres";
    let output = run_echo(url, url, &["balance"]);
    let line = error_line("postgres:postgres, nothing listening", &output);
    assert!(
        line.starts_with(
            "roachbank: error: cannot connect to postgresql://postgres@127.0.0.1:1/postgres: "
        ),
        "{line}"
    );
    assert_shows(
        "postgres:postgres, nothing listening",
        &output,
        "INFO roachbank::engine connecting to postgresql://postgres@127.0.0.1:1/postgres\n",
    );

    // The suite's server trusts `postgres`: it connects, and --echo shows who connected where.
    let db = support::TestDb::new("secrets_same_as_user");
    let url = format!("postgresql://postgres:postgres@{live}/{}", db.name);
    let output = run_echo(&url, &url, SEED_ONE);
    assert_success(&output);
    assert_shows(
        "postgres:postgres, trusted",
        &output,
        &format!("connecting to postgresql://postgres@{live}/{}\n", db.name),
    );

    // A server refusing the password: the error says for which user.
    let account = PasswordUser::new();
    let (user, database) = (&account.user, &account.database);
    let url = format!("postgresql://{user}:{user}@{live}/{database}");
    let output = run_echo(&url, &url, &["balance"]);
    let line = error_line("user:user, refused", &output);
    assert!(
        line.starts_with(&format!(
            "roachbank: error: cannot connect to postgresql://{user}@{live}/{database}: "
        )),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "password authentication failed for user \"{user}\""
        )),
        "{line}"
    );
    assert_no_secret("user:user, refused", &output);
}

#[test]
fn a_password_that_is_a_word_of_what_is_shown_leaves_it_shown() {
    if not_run_on_cockroachdb(
        "a_password_that_is_a_word_of_what_is_shown_leaves_it_shown",
        "it needs a role whose password the server checks; the insecure CockroachDB the suite \
         runs against refuses passwords (28P01)",
    ) {
        return;
    }
    // `bank` is in `roachbank` (the log's target, the application name) and is the database.
    let url = "postgresql://bank:bank@127.0.0.1:1/bank";
    let output = run_echo(url, url, &["balance"]);
    let line = error_line("bank:bank, nothing listening", &output);
    assert!(
        line.starts_with(
            "roachbank: error: cannot connect to postgresql://bank@127.0.0.1:1/bank: "
        ),
        "{line}"
    );
    assert_shows(
        "bank:bank, nothing listening",
        &output,
        "INFO roachbank::engine connecting to postgresql://bank@127.0.0.1:1/bank\n",
    );

    // A server refusing `bank` as the password.
    let account = PasswordUser::new();
    let (user, database) = (&account.user, &account.database);
    let live = format!("{}:{}", server().host(), server().port());
    let url = format!("postgresql://{user}:bank@{live}/{database}");
    let output = run_echo(&url, &url, &["balance"]);
    let line = error_line("user:bank, refused", &output);
    assert!(
        line.starts_with(&format!(
            "roachbank: error: cannot connect to postgresql://{user}@{live}/{database}: "
        )) && line.contains(&format!(
            "password authentication failed for user \"{user}\""
        )),
        "{line}"
    );
    assert_shows(
        "user:bank, refused",
        &output,
        &format!("INFO roachbank::engine connecting to postgresql://{user}@{live}/{database}"),
    );
}

#[test]
fn an_at_sign_in_a_password_shows_the_scheme_and_the_user_and_never_the_password() {
    if not_run_on_cockroachdb(
        "an_at_sign_in_a_password_shows_the_scheme_and_the_user_and_never_the_password",
        "it needs a role whose password the server checks; the insecure CockroachDB the suite \
         runs against refuses passwords (28P01)",
    ) {
        return;
    }
    // Unencoded, libpq reads `p` as the password and `ss@127.0.0.1` as the host: roachbank
    // refuses the URL before connecting, says why, and shows whose URL it is.
    let url = "postgresql://maxroach:p@ss@127.0.0.1:1/bank";
    let output = run_echo(url, url, &["balance"]);
    let line = error_line("p@ss unencoded", &output);
    assert!(line.contains("postgresql://maxroach@"), "{line}");
    assert!(
        line.contains("%40"),
        "the line should say how to write it: {line}"
    );
    for secret in ["p@ss", "ss@127", ":p@"] {
        assert_not_leaked_as("p@ss unencoded", &output, secret);
    }

    // Encoded, it is the password: it connects, and --echo shows who connected where.
    let account = PasswordUser::with_password("p@ss");
    let (user, database) = (&account.user, &account.database);
    let live = format!("{}:{}", server().host(), server().port());
    let url = format!("postgresql://{user}:p%40ss@{live}/{database}");
    let output = run_echo(&url, &url, SEED_ONE);
    assert_success(&output);
    assert_shows(
        "p%40ss",
        &output,
        &format!("INFO roachbank::engine connecting to postgresql://{user}@{live}/{database}\n"),
    );
    for secret in ["p@ss", "p%40ss"] {
        assert_not_leaked_as("p%40ss", &output, secret);
    }
}

/// Two ways of passing a password the URL scrubbing did not know: a libpq `key=value` string
/// (which roachbank does not take, and named in full in refusing it) and `sslpassword=` (the
/// client key's passphrase, shown with the rest of the query).
#[test]
fn a_password_in_a_key_value_string_or_in_sslpassword_is_never_printed() {
    let dir = temp_dir();
    for url in [
        "host=127.0.0.1 port=1 user=u password=Kv-pw-93fh dbname=bank",
        "postgresql://u@127.0.0.1:1/bank?sslpassword=Kv-pw-93fh&sslmode=disable",
    ] {
        let output = run(
            dir.path(),
            &["--database-url", url, "--echo", "-vv", "balance"],
            &[],
        );
        assert_failed_with_error_line(url, &output);
        assert_not_leaked_as(url, &output, "Kv-pw-93fh");
        assert_not_leaked_as(url, &output, "93fh");
    }
}
