mod support;

// No password is ever printed: every command, with `--echo` (which prints every connection
// attempt — diesel's connection events carry the URL with its password — and every
// statement), with passwords in the database URL and in init's admin URL (as `user:pw@`, as
// `?password=`, percent-encoded), against a reachable server (right and wrong password, one
// and several hosts) and an unreachable one. Everything the binary writes is searched for
// every form of every password.

use std::process::Output;
use support::bin::{assert_success, describe, run, stderr_of, stdout_of, temp_dir};
use support::{
    ensure_password_checked_group, not_run_on_cockroachdb, server, PASSWORD_CHECKED_GROUP,
};

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
        ensure_password_checked_group();
        let tag = format!("{:010x}", rand::random::<u64>() & 0xff_ffff_ffff);
        let user = format!("rb_secret_{tag}");
        let database = format!("rb_secret_db_{tag}");
        server().psql(
            "postgres",
            &format!(
                "CREATE ROLE \"{user}\" LOGIN PASSWORD '{USER_PASSWORD}' IN ROLE {PASSWORD_CHECKED_GROUP}"
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

/// Runs `command` with `--echo` against `url` (and `admin` for init); returns the output.
fn run_echo(url: &str, admin: &str, command: &[&str]) -> Output {
    let dir = temp_dir();
    let mut args = vec!["--database-url", url, "--echo"];
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
