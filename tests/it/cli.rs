//! End-to-end tests of the `roachbank` binary: every test runs the real executable as a child
//! process, in a fresh temporary directory as its working directory and with `DATABASE_URL`
//! removed from its environment (unless the test is about exactly that), and checks what it
//! prints, its exit status and what it left in the database.

use crate::support;
use crate::support::bin::{
    assert_no_panic, assert_not_leaked, assert_one_line_error, assert_success, assert_usage_line,
    command, describe, dir_entries, run, run_timed, send_signal, stderr_of, stdout_of, temp_dir,
    Started, DEFAULT_DEADLINE,
};
use crate::support::pty::{screen, OnTerminal};
use crate::support::target::Target;
use crate::support::{echo, grouped, not_run_on_cockroachdb, TestDb, TestSqlite};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// The announcement the binary makes when it creates the embedded SQLite file it falls back to.
const DEFAULT_ANNOUNCEMENT: &str =
    "roachbank: DATABASE_URL is not set; created the embedded SQLite file bank.db";

/// What `-v` says of the embedded SQLite file when it is there already.
const DEFAULT_IN_USE: &str =
    "roachbank: DATABASE_URL is not set; using the embedded SQLite file bank.db";

/// Password of the `pwuser` role (the only role the test server checks passwords for).
const RIGHT_PASSWORD: &str = "right-pw-123";

/// Why the password tests do not run on CockroachDB.
const NEEDS_PASSWORDS: &str = "pwuser is a role with a password (made in PL/pgSQL), checked by \
     the throwaway server's pg_hba.conf; the insecure CockroachDB the suite runs against refuses \
     passwords (28P01 \"setting or updating a password is not supported in insecure mode\")";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Runs `seed --accounts N` on the database at `url`, from `dir`, and checks it succeeded.
fn seed_on(dir: &Path, url: &str, accounts: u64) {
    let seed = run(
        dir,
        &[
            "--database-url",
            url,
            "seed",
            "--accounts",
            &accounts.to_string(),
        ],
        &[],
    );
    assert_success(&seed);
}

/// Whether `text` is a whole number written as the binary writes counts and rates: grouped by
/// threes with commas, no decimals (`7`, `12,345`).
fn is_grouped_integer(text: &str) -> bool {
    text.replace(',', "")
        .parse::<u64>()
        .is_ok_and(|n| grouped(n) == text)
}

/// The integer after `prefix` on the first stdout line starting with `prefix`: plain (`4736`)
/// or grouped (`4,736`), as long as the grouping is right.
fn number_after(output: &Output, prefix: &str) -> i64 {
    let stdout = stdout_of(output);
    let line = stdout
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?}: {}", describe(output)));
    let number: String = line[prefix.len()..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .collect();
    let number = number.trim_end_matches(',');
    let parsed: u64 = number
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("no integer after {prefix:?} in {line:?}"));
    assert!(
        number == parsed.to_string() || number == grouped(parsed),
        "{number:?} after {prefix:?} is grouped wrongly in {line:?}"
    );
    parsed as i64
}

/// The money `seed` reports: M in "seeded N accounts holding M in total" (N grouped, M plain:
/// money is written as the exact integer the database holds).
fn seeded_money(output: &Output, accounts: u64) -> i64 {
    let money = number_after(
        output,
        &format!("seeded {} accounts holding ", grouped(accounts)),
    );
    assert!(
        stdout_of(output).contains(&format!("holding {money} in total")),
        "seed summary malformed: {}",
        describe(output)
    );
    money
}

/// (accounts, total balance) as printed by `balance`.
fn balance_figures(output: &Output) -> (i64, i64) {
    assert_success(output);
    let total = number_after(output, "total balance: ");
    assert!(
        stdout_of(output).contains(&format!("total balance: {total}\n")),
        "the total balance is money, written plain: {}",
        describe(output)
    );
    (number_after(output, "accounts: "), total)
}

/// Checks the `transfer` summary line says `count` done and carries the figures it promises:
/// counts grouped, the rate a grouped whole number.
fn assert_transfer_summary(output: &Output, count: u64) {
    let stdout = stdout_of(output);
    let summary = stdout
        .lines()
        .find(|line| line.starts_with("transfers: "))
        .unwrap_or_else(|| panic!("no transfer summary: {}", describe(output)));
    assert!(
        summary.starts_with(&format!("transfers: {} done, ", grouped(count))),
        "summary does not say {count} done: {summary:?}"
    );
    assert!(
        summary.contains(" retries, ") || summary.contains(" 1 retry, "),
        "summary lacks the retries: {summary:?}"
    );
    for part in ["transfers/s", ", p50 ", ", p99 ", ", pMax "] {
        assert!(
            summary.contains(part),
            "summary lacks {part:?}: {summary:?}"
        );
    }
    let rate = summary
        .split(", ")
        .find_map(|part| part.strip_suffix(" transfers/s"))
        .unwrap_or_else(|| panic!("no rate in {summary:?}"));
    assert!(
        is_grouped_integer(rate),
        "the rate {rate:?} must be a whole number, grouped: {summary:?}"
    );
}

/// Rows in `table` of the SQLite file at `path`, counted with diesel (not through the binary).
fn sqlite_count(path: &Path, table: &str) -> i64 {
    let mut conn = SqliteConnection::establish(path.to_str().expect("UTF-8 path"))
        .expect("open the SQLite file");
    diesel::dsl::sql::<BigInt>(&format!("SELECT COUNT(*) FROM {table}"))
        .get_result(&mut conn)
        .expect("count rows")
}

/// Versions in the SQLite file's `__diesel_schema_migrations`, sorted.
fn sqlite_migration_versions(path: &Path) -> Vec<String> {
    let mut conn = SqliteConnection::establish(path.to_str().expect("UTF-8 path"))
        .expect("open the SQLite file");
    diesel::dsl::sql::<Text>("SELECT version FROM __diesel_schema_migrations ORDER BY version")
        .load(&mut conn)
        .expect("read the migration table")
}

/// `url` with its scheme (everything before `://`) replaced by `scheme`.
fn with_scheme(url: &str, scheme: &str) -> String {
    let (_, rest) = url.split_once("://").expect("a URL with a scheme");
    format!("{scheme}://{rest}")
}

/// Creates the `pwuser` role (password [`RIGHT_PASSWORD`]) once per test run.
fn ensure_pwuser() {
    static ROLE: Once = Once::new();
    ROLE.call_once(|| {
        support::server().psql(
            "postgres",
            &format!(
                "DO $$ BEGIN \
                   IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pwuser') THEN \
                     CREATE ROLE pwuser LOGIN PASSWORD '{RIGHT_PASSWORD}'; \
                   END IF; \
                 END $$"
            ),
        );
    });
}

/// A fresh database owned by `pwuser`, and the URL to reach it as `pwuser` with `password`.
fn pwuser_db(test_name: &str, password: &str) -> (TestDb, String) {
    ensure_pwuser();
    let db = TestDb::new(test_name);
    support::server().psql(
        "postgres",
        &format!("ALTER DATABASE \"{}\" OWNER TO pwuser", db.name),
    );
    db.psql("ALTER SCHEMA public OWNER TO pwuser");
    let server = support::server();
    let url = format!(
        "postgresql://pwuser:{password}@{}:{}/{}",
        server.host(),
        server.port(),
        db.name
    );
    (db, url)
}

// ---------------------------------------------------------------------------------------------
// 1. The embedded SQLite default
// ---------------------------------------------------------------------------------------------

#[test]
fn default_sqlite_seed_transfer_points_keep_totals_and_write_bank_db_in_cwd() {
    let dir = temp_dir();
    let cwd = dir.path();

    let seed = run(cwd, &["seed"], &[]);
    assert_success(&seed);
    assert!(
        cwd.join("bank.db").is_file(),
        "seed did not create bank.db in the cwd; entries: {:?}",
        dir_entries(cwd)
    );
    let money = seeded_money(&seed, 100);
    let announcements = stderr_of(&seed).matches(DEFAULT_ANNOUNCEMENT).count();
    assert_eq!(
        announcements,
        1,
        "the default must be announced exactly once: {}",
        describe(&seed)
    );

    let balance = run(cwd, &["balance"], &[]);
    assert_eq!(
        balance_figures(&balance),
        (100, money),
        "{}",
        describe(&balance)
    );

    let transfer = run(cwd, &["transfer", "--count", "3"], &[]);
    assert_success(&transfer);
    let transferred = stdout_of(&transfer)
        .lines()
        .filter(|line| line.starts_with("transferred "))
        .count();
    assert_eq!(transferred, 3, "{}", describe(&transfer));
    assert_transfer_summary(&transfer, 3);

    let balance = run(cwd, &["balance"], &[]);
    assert_eq!(
        balance_figures(&balance),
        (100, money),
        "transfers must move money, not create or destroy it: {}",
        describe(&balance)
    );

    let points = run(cwd, &["points", "2500", "--chunk-size", "1000"], &[]);
    assert_success(&points);
    assert!(
        stdout_of(&points).contains("points: 2,500 rows in 3 chunks"),
        "{}",
        describe(&points)
    );
    let stdout = stdout_of(&points);
    let rate = stdout
        .trim_end()
        .strip_suffix(" rows/s")
        .and_then(|line| line.rsplit(", ").next())
        .unwrap_or_else(|| panic!("no rows/s: {}", describe(&points)));
    assert!(
        is_grouped_integer(rate),
        "rows/s {rate:?} must be a whole number, grouped: {}",
        describe(&points)
    );
    assert_eq!(sqlite_count(&cwd.join("bank.db"), "points"), 2500);
    assert_eq!(sqlite_count(&cwd.join("bank.db"), "accounts"), 100);
}

/// The embedded default is announced where it helps: by the command that creates `bank.db` (once,
/// after the file is there), and with -v; the commands after it print nothing about it.
#[test]
fn the_sqlite_default_is_announced_when_created_and_with_v_only() {
    let dir = temp_dir();
    let cwd = dir.path();
    let seed = run(cwd, &["seed", "--accounts", "5"], &[]);
    assert_success(&seed);
    assert_eq!(
        stderr_of(&seed),
        format!("{DEFAULT_ANNOUNCEMENT}\n"),
        "{}",
        describe(&seed)
    );

    for args in [
        &["balance"][..],
        &["check"],
        &["transfer", "--count", "2"],
        &["points", "10"],
        &["seed", "--accounts", "1"],
    ] {
        let output = run(cwd, args, &[]);
        assert_success(&output);
        assert!(
            output.stderr.is_empty(),
            "roachbank {args:?} on an existing bank.db: {}",
            describe(&output)
        );
    }
    let verbose = run(cwd, &["-v", "balance"], &[]);
    assert_success(&verbose);
    assert_eq!(
        stderr_of(&verbose),
        format!("{DEFAULT_IN_USE}\n"),
        "{}",
        describe(&verbose)
    );

    // init creates it too, and says so.
    let dir = temp_dir();
    let init = run(dir.path(), &["init"], &[]);
    assert_success(&init);
    assert_eq!(
        stderr_of(&init),
        format!("{DEFAULT_ANNOUNCEMENT}\n"),
        "{}",
        describe(&init)
    );
}

// ---------------------------------------------------------------------------------------------
// 2. .env, the environment and --database-url
// ---------------------------------------------------------------------------------------------

#[test]
fn dotenv_database_url_is_used_instead_of_bank_db_without_the_default_announcement() {
    let dir = temp_dir();
    let cwd = dir.path();
    std::fs::write(cwd.join(".env"), "DATABASE_URL=sqlite://other.db\n").expect("write .env");

    let seed = run(cwd, &["seed", "--accounts", "7"], &[]);
    assert_success(&seed);
    assert!(cwd.join("other.db").is_file(), "{:?}", dir_entries(cwd));
    assert!(!cwd.join("bank.db").exists(), "{:?}", dir_entries(cwd));
    assert!(
        !stderr_of(&seed).contains("embedded SQLite"),
        "a URL from .env must not be announced as the default: {}",
        describe(&seed)
    );
    assert_eq!(sqlite_count(&cwd.join("other.db"), "accounts"), 7);
}

#[test]
fn database_url_flag_beats_dotenv() {
    let dir = temp_dir();
    let cwd = dir.path();
    std::fs::write(cwd.join(".env"), "DATABASE_URL=sqlite://other.db\n").expect("write .env");

    let seed = run(
        cwd,
        &[
            "--database-url",
            "sqlite://flag.db",
            "seed",
            "--accounts",
            "4",
        ],
        &[],
    );
    assert_success(&seed);
    assert!(cwd.join("flag.db").is_file(), "{:?}", dir_entries(cwd));
    assert!(!cwd.join("other.db").exists(), "{:?}", dir_entries(cwd));
    assert!(!cwd.join("bank.db").exists(), "{:?}", dir_entries(cwd));
    assert_eq!(sqlite_count(&cwd.join("flag.db"), "accounts"), 4);
}

#[test]
fn database_url_environment_variable_beats_dotenv() {
    let dir = temp_dir();
    let cwd = dir.path();
    std::fs::write(cwd.join(".env"), "DATABASE_URL=sqlite://other.db\n").expect("write .env");

    let seed = run(
        cwd,
        &["seed", "--accounts", "2"],
        &[("DATABASE_URL", "sqlite://env.db")],
    );
    assert_success(&seed);
    assert!(cwd.join("env.db").is_file(), "{:?}", dir_entries(cwd));
    assert!(!cwd.join("other.db").exists(), "{:?}", dir_entries(cwd));
    assert!(!cwd.join("bank.db").exists(), "{:?}", dir_entries(cwd));
}

/// A `.env` that cannot be parsed is named with the line's number, never its content: the line
/// may hold a password.
#[test]
fn in_memory_sqlite_is_refused_in_one_line_and_nothing_is_written() {
    let dir = temp_dir();
    for url in ["sqlite://:memory:", "sqlite://file::memory:"] {
        let output = run(dir.path(), &["seed", "--database-url", url], &[]);
        let line = assert_one_line_error(&output);
        assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
        assert!(line.contains("in-memory SQLite"), "{line}");
        assert!(
            dir_entries(dir.path()).is_empty(),
            "{url}: wrote {:?}",
            dir_entries(dir.path())
        );
    }
}

#[test]
fn dotenv_parse_error_names_the_line_number_without_its_content() {
    const SECRET: &str = "Sup3r-S3cret-pw";
    let dir = temp_dir();
    let cwd = dir.path();
    std::fs::write(
        cwd.join(".env"),
        format!(
            "# bank settings\nPGAPPNAME=roachbank\nDATABASE_URL postgresql://bank:{SECRET}@db.example/bank\n"
        ),
    )
    .expect("write .env");

    let output = run(cwd, &["balance"], &[]);
    let line = assert_one_line_error(&output);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert_not_leaked(&output, SECRET);
    assert_eq!(
        line,
        "roachbank: error: cannot read .env: line 3 is not KEY=VALUE",
        "{}",
        describe(&output)
    );
    assert_eq!(dir_entries(cwd), [".env"], "nothing written");
}

// ---------------------------------------------------------------------------------------------
// 3. PostgreSQL
// ---------------------------------------------------------------------------------------------

/// How a test hands the database URL to the binary.
#[derive(Clone, Copy)]
enum UrlVia {
    Flag,
    Environment,
}

/// Runs `args` against `url`, passed the way `via` says.
fn run_against(dir: &Path, url: &str, via: UrlVia, args: &[&str]) -> Output {
    match via {
        UrlVia::Flag => {
            let mut all = vec!["--database-url", url];
            all.extend_from_slice(args);
            run(dir, &all, &[])
        }
        UrlVia::Environment => run(dir, args, &[("DATABASE_URL", url)]),
    }
}

/// seed 50, 20 transfers on 4 workers, balance, 3000 points, all on a fresh PostgreSQL database.
fn postgres_flow(test_name: &str, via: UrlVia) {
    let db = TestDb::new(test_name);
    let dir = temp_dir();
    let cwd = dir.path();

    let seed = run_against(cwd, &db.url, via, &["seed", "--accounts", "50"]);
    assert_success(&seed);
    assert!(
        !stderr_of(&seed).contains("embedded SQLite"),
        "{}",
        describe(&seed)
    );
    let money = seeded_money(&seed, 50);
    assert_eq!(db.psql("SELECT count(*) FROM accounts"), "50");
    // INT8 on both: sum(INT8) is NUMERIC on PostgreSQL, DECIMAL on CockroachDB.
    assert_eq!(
        db.psql("SELECT sum(balance)::INT8 FROM accounts"),
        money.to_string()
    );

    let transfer = run_against(
        cwd,
        &db.url,
        via,
        &["transfer", "--count", "20", "--workers", "4"],
    );
    assert_success(&transfer);
    assert_transfer_summary(&transfer, 20);
    assert!(
        !stdout_of(&transfer)
            .lines()
            .any(|line| line.starts_with("transferred ")),
        "more than 10 transfers must not print one line each: {}",
        describe(&transfer)
    );

    // The tutorial's own interactive transaction, beside the one-statement default.
    let tutorial = run_against(
        cwd,
        &db.url,
        via,
        &["transfer", "--count", "3", "--style", "tutorial", "--check"],
    );
    assert_success(&tutorial);
    assert_transfer_summary(&tutorial, 3);

    let balance = run_against(cwd, &db.url, via, &["balance"]);
    assert_eq!(
        balance_figures(&balance),
        (50, money),
        "{}",
        describe(&balance)
    );

    let points = run_against(
        cwd,
        &db.url,
        via,
        &["points", "3000", "--chunk-size", "1000"],
    );
    assert_success(&points);
    assert!(
        stdout_of(&points).contains("points: 3,000 rows in 3 chunks"),
        "{}",
        describe(&points)
    );
    assert_eq!(db.psql("SELECT count(*) FROM points"), "3000");
    assert_eq!(
        dir_entries(cwd),
        Vec::<String>::new(),
        "a server run must write nothing into the cwd"
    );
}

#[test]
fn postgres_via_flag_seed_transfer_balance_points_keep_totals() {
    postgres_flow("cli_pg_flag", UrlVia::Flag);
}

#[test]
fn postgres_via_env_var_seed_transfer_balance_points_keep_totals() {
    postgres_flow("cli_pg_env", UrlVia::Environment);
}

#[test]
fn cockroachdb_scheme_is_accepted_as_a_postgresql_synonym() {
    let db = TestDb::new("cli_cockroach_scheme");
    let dir = temp_dir();
    let url = with_scheme(&db.url, "cockroachdb");

    let seed = run(
        dir.path(),
        &["--database-url", &url, "seed", "--accounts", "5"],
        &[],
    );
    assert_success(&seed);
    let money = seeded_money(&seed, 5);
    let balance = run(dir.path(), &["--database-url", &url, "balance"], &[]);
    assert_eq!(
        balance_figures(&balance),
        (5, money),
        "{}",
        describe(&balance)
    );
    assert_eq!(db.psql("SELECT count(*) FROM accounts"), "5");
}

// ---------------------------------------------------------------------------------------------
// 4. Bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_arguments_fail_with_one_line_and_write_nothing() {
    let cases: &[&[&str]] = &[
        &["points", "0"],
        &["points", "-5"],
        &["points", "abc"],
        &["points", "10", "--chunk-size", "0"],
        &["seed", "--accounts", "0"],
        &["seed", "--accounts", "x"],
        &["transfer", "--count", "0"],
        // SQLite has no data-modifying WITH: refused before bank.db is created.
        &["transfer", "--style", "one-statement"],
        &["--database-url", "mysql://u:pw@h/db", "balance"],
    ];
    for args in cases {
        let dir = temp_dir();
        let output = run(dir.path(), args, &[]);
        let line = assert_one_line_error(&output);
        assert!(
            dir_entries(dir.path()).is_empty(),
            "roachbank {args:?} wrote {:?} (error: {line})",
            dir_entries(dir.path())
        );
    }
}

/// `roachbank` alone: one line saying there is no command, the commands there are, and where
/// to read more; exit 2.
#[test]
fn no_command_says_so_in_one_line_with_the_commands() {
    for args in [&[][..], &["--echo"][..]] {
        let dir = temp_dir();
        let output = run(dir.path(), args, &[]);
        let line = assert_usage_line(&output);
        assert_eq!(
            line,
            "roachbank: error: no command given (commands: seed, transfer, points, balance, \
             check, init); try `roachbank --help`",
            "roachbank {args:?}"
        );
        assert!(dir_entries(dir.path()).is_empty());
    }
}

/// A misspelt command, flag or value: one line with clap's "did you mean" and where to read
/// more (the command's own `--help` when there is a command), exit 2 — as README promises of
/// every failure.
#[test]
fn misspelt_command_or_flag_gets_a_did_you_mean_in_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["trasnfer"],
            "roachbank: error: unrecognized subcommand 'trasnfer' (did you mean 'transfer'?); \
             try `roachbank --help`",
        ),
        (
            &["transfer", "--cuont", "3"],
            "roachbank: error: unexpected argument '--cuont' found (did you mean '--count'?); \
             try `roachbank transfer --help`",
        ),
        (
            &["points", "5", "--method", "cpy"],
            "roachbank: error: invalid value 'cpy' for '--method <METHOD>' (possible values: \
             copy, insert; did you mean 'copy'?); try `roachbank points --help`",
        ),
        (
            &["transfer", "--style", "tutorail"],
            "roachbank: error: invalid value 'tutorail' for '--style <STYLE>' (possible values: \
             one-statement, tutorial; did you mean 'tutorial'?); try `roachbank transfer --help`",
        ),
        (
            &["points"],
            "roachbank: error: the following required arguments were not provided: <N>; \
             try `roachbank points --help`",
        ),
    ];
    for (args, expected) in cases {
        let dir = temp_dir();
        let output = run(dir.path(), args, &[]);
        let line = assert_usage_line(&output);
        assert_eq!(line, *expected, "roachbank {args:?}");
        assert!(dir_entries(dir.path()).is_empty());
    }
}

/// Numbers out of range or not numbers at all are refused as a person would say it, naming the
/// flag (or `N`) and repeating what was given — not `0 is not in 1..18446744073709551615`.
#[test]
fn numbers_out_of_range_are_refused_in_words_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["transfer", "--count", "0"],
            "--count must be at least 1, not 0",
        ),
        (
            &["transfer", "--count", "-3"],
            "--count must be a positive whole number, not '-3'",
        ),
        (
            &["transfer", "--workers", "300"],
            "--workers must be at most 256, not 300",
        ),
        (&["points", "0"], "N must be at least 1, not 0"),
        (
            &["points", "-5"],
            "N must be a positive whole number, not '-5'",
        ),
        (
            &["points", "abc"],
            "N must be a positive whole number, not 'abc'",
        ),
        (
            &["points", "4294967297"],
            "N must be at most 4,294,967,296, not 4294967297",
        ),
        (
            &["points", "10", "--chunk-size", "100001"],
            "--chunk-size must be at most 100,000, not 100001",
        ),
        (
            &["seed", "--accounts", "0"],
            "--accounts must be at least 1, not 0",
        ),
        (
            &["--max-retries", "-1", "seed"],
            "--max-retries must be a whole number, not '-1'",
        ),
    ];
    for (args, said) in cases {
        let dir = temp_dir();
        let output = run(dir.path(), args, &[]);
        let line = assert_usage_line(&output);
        let command = args
            .iter()
            .find(|arg| !arg.starts_with('-') && arg.parse::<i64>().is_err());
        let command = command.expect("a command");
        assert_eq!(
            line,
            format!("roachbank: error: {said}; try `roachbank {command} --help`"),
            "roachbank {args:?}"
        );
        assert!(dir_entries(dir.path()).is_empty());
    }
}

/// One error style: whoever found the error — clap, roachbank's checks, the database — its
/// line starts `roachbank: error: `.
#[test]
fn every_error_line_starts_the_same_whoever_found_it() {
    let sqlite = TestSqlite::new();
    let url = sqlite.url.as_str();
    let cases: &[&[&str]] = &[
        &["transfer", "--count", "0"],
        &["points", "abc"],
        &["transfer", "--count", "3", "--duration", "5s"],
        &["--database-url", "mysql://u@h/db", "balance"],
        &["--database-url", url, "transfer"],
        &[
            "--database-url",
            "postgresql://u@127.0.0.1:1/bank",
            "balance",
        ],
    ];
    for args in cases {
        let output = run(sqlite.dir.path(), args, &[]);
        assert!(!output.status.success(), "{}", describe(&output));
        let stderr = stderr_of(&output);
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("roachbank: error: "),
            "roachbank {args:?}: {}",
            describe(&output)
        );
    }
}

#[test]
fn unknown_url_scheme_error_names_the_schemes_and_hides_the_password() {
    let dir = temp_dir();
    let output = run(
        dir.path(),
        &["--database-url", "mysql://u:hunter2pw@h/db", "balance"],
        &[],
    );
    let line = assert_one_line_error(&output);
    assert!(line.contains("postgresql://"), "{line}");
    assert_not_leaked(&output, "hunter2pw");
    assert!(dir_entries(dir.path()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// 5. Transfer without accounts
// ---------------------------------------------------------------------------------------------

#[test]
fn transfer_with_one_account_fails_with_one_line_mentioning_seed() {
    let sqlite = TestSqlite::new();
    let cwd = sqlite.dir.path();
    seed_on(cwd, &sqlite.url, 1);

    let transfer = run(cwd, &["--database-url", &sqlite.url, "transfer"], &[]);
    let line = assert_one_line_error(&transfer);
    assert!(line.contains("seed"), "{}", describe(&transfer));
}

#[test]
fn transfer_on_an_empty_database_fails_with_one_line_mentioning_seed() {
    let sqlite = TestSqlite::new();
    let cwd = sqlite.dir.path();
    let transfer = run(
        cwd,
        &["--database-url", &sqlite.url, "transfer", "--count", "2"],
        &[],
    );
    let line = assert_one_line_error(&transfer);
    assert!(line.contains("seed"), "{}", describe(&transfer));
}

/// With fewer than two accounts a transfer run never starts: no summary of "0 done, 1 failed" on
/// stdout, only one line on stderr whose beginning says there is nothing to transfer between
/// and to run `seed`; exit 1. Whatever the run length, and on a server as on SQLite.
#[test]
fn transfer_with_fewer_than_two_accounts_says_so_first_and_prints_no_summary() {
    for target in [Target::postgresql("transfer_too_few"), Target::sqlite()] {
        drop(target.open(1));
        let dir = temp_dir();
        for (accounts, said) in [(0, "no accounts"), (1, "only 1 account")] {
            if accounts == 1 {
                seed_on(dir.path(), target.url(), 1);
            }
            for length in [
                &["--count", "100"][..],
                &[],
                &["--duration", "1s", "--ticks"],
            ] {
                let mut args = vec!["--database-url", target.url(), "transfer"];
                args.extend_from_slice(length);
                let output = run(dir.path(), &args, &[]);
                let line = assert_one_line_error(&output);
                assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
                assert_eq!(
                    line,
                    format!(
                        "roachbank: error: the bank has {said}: nothing to transfer between; \
                         run `roachbank seed` first"
                    ),
                    "{length:?}: {}",
                    describe(&output)
                );
                assert!(
                    output.stdout.is_empty(),
                    "{length:?}: a summary of a run that never started: {}",
                    describe(&output)
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Unreachable and unresponsive servers
// ---------------------------------------------------------------------------------------------

/// A connection error shows the URL as the user wrote it, redacted: scheme, user, host, port and
/// database — not the `connect_timeout` and `fallback_application_name` roachbank adds, nor the
/// user's own query settings, nor the password. (Fixed by issue 19; kept here for issue 22.)
#[test]
fn connection_errors_show_the_url_as_written_without_roachbanks_settings() {
    let url = "postgresql://bank:s3cret-pw@127.0.0.1:1/bank?sslmode=disable";
    let output = run(temp_dir().path(), &["--database-url", url, "seed"], &[]);
    let line = assert_one_line_error(&output);
    assert!(
        line.starts_with(
            "roachbank: error: cannot connect to postgresql://bank@127.0.0.1:1/bank: "
        ),
        "{}",
        describe(&output)
    );
    for added in ["connect_timeout", "fallback_application_name", "sslmode"] {
        assert!(!line.contains(added), "{}", describe(&output));
    }
    assert_not_leaked(&output, "s3cret-pw");
}

#[test]
fn refused_connection_fails_fast_with_one_line_and_no_password() {
    let dir = temp_dir();
    let (output, elapsed) = run_timed(
        dir.path(),
        &[
            "--database-url",
            "postgresql://u:s3cretpw@127.0.0.1:1/bank",
            "balance",
        ],
        &[],
        Duration::from_secs(30),
    );
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    let line = assert_one_line_error(&output);
    assert!(
        line.to_lowercase().contains("refused"),
        "{}",
        describe(&output)
    );
    assert_not_leaked(&output, "s3cretpw");
    assert!(dir_entries(dir.path()).is_empty());
}

/// Runs `balance` against a listener that accepts TCP connections and never answers.
fn run_against_silent_server(query: &str) -> (Output, Duration) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a silent listener");
    let port = listener.local_addr().expect("listener address").port();
    let dir = temp_dir();
    let url = format!("postgresql://u:s3cretpw@127.0.0.1:{port}/bank{query}");
    let result = run_timed(
        dir.path(),
        &["--database-url", &url, "balance"],
        &[],
        Duration::from_secs(40),
    );
    drop(listener);
    result
}

#[test]
fn silent_server_with_connect_timeout_2_fails_within_8_seconds() {
    let (output, elapsed) = run_against_silent_server("?connect_timeout=2");
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
    let line = assert_one_line_error(&output);
    assert!(line.contains("timeout"), "{}", describe(&output));
    assert_not_leaked(&output, "s3cretpw");
}

#[test]
fn silent_server_without_connect_timeout_fails_within_15_seconds_by_default() {
    let (output, elapsed) = run_against_silent_server("");
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    let line = assert_one_line_error(&output);
    assert!(line.contains("timeout"), "{}", describe(&output));
    assert_not_leaked(&output, "s3cretpw");
}

// ---------------------------------------------------------------------------------------------
// 7. Password authentication
// ---------------------------------------------------------------------------------------------

#[test]
fn wrong_password_fails_with_one_line_saying_password_authentication_failed_without_secrets() {
    if not_run_on_cockroachdb(
        "wrong_password_fails_with_one_line_saying_password_authentication_failed_without_secrets",
        NEEDS_PASSWORDS,
    ) {
        return;
    }
    let (db, _) = pwuser_db("cli_wrong_pw", RIGHT_PASSWORD);
    let dir = temp_dir();
    let wrong_url = format!(
        "postgresql://pwuser:wrong-pw-456@{}:{}/{}",
        support::server().host(),
        support::server().port(),
        db.name
    );
    let output = run(dir.path(), &["--database-url", &wrong_url, "balance"], &[]);
    let line = assert_one_line_error(&output);
    assert!(
        line.contains("password authentication failed"),
        "{}",
        describe(&output)
    );
    assert_not_leaked(&output, "wrong-pw-456");
    assert_not_leaked(&output, RIGHT_PASSWORD);
    assert!(dir_entries(dir.path()).is_empty());
}

/// A refused password for the database URL's own user: the line says to check it, or to run
/// `init` to create the user with it (PostgreSQL refuses a user that does not exist yet in the
/// same words).
#[test]
fn a_refused_password_for_the_urls_user_hints_at_init() {
    if not_run_on_cockroachdb(
        "a_refused_password_for_the_urls_user_hints_at_init",
        NEEDS_PASSWORDS,
    ) {
        return;
    }
    let (db, _) = pwuser_db("cli_refused_pw_hint", RIGHT_PASSWORD);
    let server = support::server();
    let wrong_url = format!(
        "postgresql://pwuser:wrong-pw-789@{}:{}/{}",
        server.host(),
        server.port(),
        db.name
    );
    let output = run(
        temp_dir().path(),
        &["--database-url", &wrong_url, "seed"],
        &[],
    );
    let line = assert_one_line_error(&output);
    assert!(
        line.contains("password authentication failed for user \"pwuser\"")
            && line.ends_with(
                "; check the URL's password; if the user does not exist yet, run `roachbank \
                 init` to create it with that password (with an admin URL: --admin-url or \
                 ADMIN_DATABASE_URL)"
            ),
        "{}",
        describe(&output)
    );
    assert_not_leaked(&output, "wrong-pw-789");
}

/// README's PostgreSQL `init`, its admin URL without the password the server asks for: the
/// line says libpq's reason and where the password goes; given in `PGPASSWORD`, as the line
/// says, the admin connects (and gets as far as its rights allow).
#[test]
fn init_with_an_admin_url_lacking_the_password_the_server_asks_for_says_where_it_goes() {
    if not_run_on_cockroachdb(
        "init_with_an_admin_url_lacking_the_password_the_server_asks_for_says_where_it_goes",
        NEEDS_PASSWORDS,
    ) {
        return;
    }
    ensure_pwuser();
    let server = support::server();
    let (host, port) = (server.host(), server.port());
    let admin = format!("postgresql://pwuser@{host}:{port}/postgres");
    let url = format!("postgresql://rb_never_made:pw-never-used@{host}:{port}/rb_never_made");
    let args = ["--database-url", &url, "init", "--admin-url", &admin];
    let output = run(temp_dir().path(), &args, &[]);
    let line = assert_one_line_error(&output);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        line.starts_with(&format!(
            "roachbank: error: init failed: cannot connect to {admin}: "
        )) && line.contains("no password supplied")
            && line.ends_with(
                "; the server asks for a password: give it in the URL \
                 (postgresql://USER:PASSWORD@HOST/DATABASE), in PGPASSWORD or in ~/.pgpass"
            ),
        "{}",
        describe(&output)
    );
    assert_not_leaked(&output, "pw-never-used");

    let output = run(temp_dir().path(), &args, &[("PGPASSWORD", RIGHT_PASSWORD)]);
    let line = assert_one_line_error(&output);
    assert!(
        !line.contains("no password supplied") && !line.contains("cannot connect"),
        "{}",
        describe(&output)
    );
    assert_not_leaked(&output, RIGHT_PASSWORD);
}

#[test]
fn right_password_seeds_and_echo_shows_sql_but_never_the_password() {
    if not_run_on_cockroachdb(
        "right_password_seeds_and_echo_shows_sql_but_never_the_password",
        NEEDS_PASSWORDS,
    ) {
        return;
    }
    let (db, url) = pwuser_db("cli_right_pw", RIGHT_PASSWORD);
    let dir = temp_dir();

    let seed = run(
        dir.path(),
        &["--database-url", &url, "seed", "--accounts", "5"],
        &[],
    );
    assert_success(&seed);
    seeded_money(&seed, 5);
    assert_not_leaked(&seed, RIGHT_PASSWORD);

    let echo = run(
        dir.path(),
        &["--database-url", &url, "--echo", "seed", "--accounts", "5"],
        &[],
    );
    assert_success(&echo);
    let stderr = stderr_of(&echo);
    assert!(
        echo::records(&stderr)
            .iter()
            .any(|record| record.target == echo::ENGINE
                && record
                    .message
                    .starts_with("connecting to postgresql://pwuser@")),
        "--echo did not show the connection, password left out: {}",
        describe(&echo)
    );
    let statements = echo::statements(&stderr);
    let begin = find_statement(&statements, "BEGIN", &echo);
    assert_eq!(
        (begin.cache.as_str(), begin.parameters.as_str()),
        ("raw sql", "()")
    );
    // The seed's look-up of the ids taken in its part of the id space, its bounds and limit on
    // the line after it; then the accounts, sent by COPY (binary data, no binds).
    let taken = find_statement(
        &statements,
        "SELECT \"accounts\".\"id\" FROM \"accounts\"",
        &echo,
    );
    assert_eq!(values(&taken.parameters).len(), 3, "{taken:?}");
    find_statement(&statements, "COPY \"accounts\"", &echo);
    assert_not_leaked(&echo, RIGHT_PASSWORD);
    assert_eq!(db.psql("SELECT count(*) FROM accounts"), "10");
}

// ---------------------------------------------------------------------------------------------
// 8. A schema newer than this build
// ---------------------------------------------------------------------------------------------

const FUTURE_VERSION: &str = "99991231235959";

#[test]
fn sqlite_schema_newer_than_build_fails_with_upgrade_hint_and_writes_nothing() {
    let sqlite = TestSqlite::new();
    let cwd = sqlite.dir.path();
    seed_on(cwd, &sqlite.url, 3);
    {
        let mut conn = SqliteConnection::establish(sqlite.path.to_str().expect("UTF-8 path"))
            .expect("open the SQLite file");
        diesel::sql_query(format!(
            "INSERT INTO __diesel_schema_migrations (version) VALUES ('{FUTURE_VERSION}')"
        ))
        .execute(&mut conn)
        .expect("record a future migration");
    }
    let before = sqlite_migration_versions(&sqlite.path);
    assert!(before.contains(&FUTURE_VERSION.to_string()));

    let balance = run(cwd, &["--database-url", &sqlite.url, "balance"], &[]);
    let line = assert_one_line_error(&balance);
    assert!(
        line.contains("newer") && line.contains("upgrade"),
        "{}",
        describe(&balance)
    );
    assert_eq!(sqlite_migration_versions(&sqlite.path), before);
    assert_eq!(sqlite_count(&sqlite.path, "accounts"), 3);
}

#[test]
fn postgres_schema_newer_than_build_fails_with_upgrade_hint_and_writes_nothing() {
    let db = TestDb::new("cli_pg_newer_schema");
    let dir = temp_dir();
    seed_on(dir.path(), &db.url, 3);
    db.psql(&format!(
        "INSERT INTO __diesel_schema_migrations (version) VALUES ('{FUTURE_VERSION}')"
    ));
    let versions =
        "SELECT string_agg(version, ',' ORDER BY version) FROM __diesel_schema_migrations";
    let before = db.psql(versions);
    assert!(before.contains(FUTURE_VERSION), "{before}");

    let balance = run(dir.path(), &["--database-url", &db.url, "balance"], &[]);
    let line = assert_one_line_error(&balance);
    assert!(
        line.contains("newer") && line.contains("upgrade"),
        "{}",
        describe(&balance)
    );
    assert_eq!(db.psql(versions), before);
    assert_eq!(db.psql("SELECT count(*) FROM accounts"), "3");
}

// ---------------------------------------------------------------------------------------------
// 9. --echo on SQLite
// ---------------------------------------------------------------------------------------------

#[test]
fn sqlite_echo_shows_begin_immediate_insert_and_commit() {
    let sqlite = TestSqlite::new();
    let output = run(
        sqlite.dir.path(),
        &[
            "--database-url",
            &sqlite.url,
            "--echo",
            "seed",
            "--accounts",
            "3",
        ],
        &[],
    );
    assert_success(&output);
    let statements = echo::statements(&stderr_of(&output));
    for control in ["BEGIN IMMEDIATE", "COMMIT"] {
        let statement = find_statement(&statements, control, &output);
        assert_eq!(statement.parameters, "()", "{statement:?}");
    }
    // Three accounts, an id and a balance each.
    let insert = find_statement(&statements, "INSERT INTO `accounts`", &output);
    assert_eq!(values(&insert.parameters).len(), 6, "{insert:?}");
    assert_eq!(sqlite_count(&sqlite.path, "accounts"), 3);
}

/// The first echoed statement starting with `start`.
fn find_statement<'s>(
    statements: &'s [echo::Statement],
    start: &str,
    output: &Output,
) -> &'s echo::Statement {
    statements
        .iter()
        .find(|statement| statement.sql.starts_with(start))
        .unwrap_or_else(|| panic!("--echo shows no {start:?} statement: {}", describe(output)))
}

/// The values of a Python tuple of integers and `None`s, as `--echo` shows binds.
fn values(tuple: &str) -> Vec<String> {
    tuple
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_string)
        .collect()
}

/// What every `--echo` run shows: each record timestamped (now), each statement once with its
/// binds on the next line (`echo::statements` checks that), one connection, and the migration
/// check once.
fn assert_echo_of_one_command(output: &Output) -> Vec<echo::Statement> {
    assert_success(output);
    let stderr = stderr_of(output);
    let records = echo::records(&stderr);
    assert!(!records.is_empty(), "nothing echoed: {}", describe(output));
    for record in &records {
        echo::assert_recent(record.time, Duration::from_secs(120));
    }
    let connecting = records
        .iter()
        .filter(|record| record.message.starts_with("connecting to "))
        .count();
    assert_eq!(
        connecting,
        1,
        "connected more than once: {}",
        describe(output)
    );
    let statements = echo::statements(&stderr);
    let migration_checks = statements
        .iter()
        .filter(|statement| statement.sql.contains("__diesel_schema_migrations"))
        .count();
    assert_eq!(
        migration_checks,
        1,
        "the migration check is not one statement: {}",
        describe(output)
    );
    statements
}

#[test]
fn echo_shows_each_statement_once_timestamped_with_its_binds_on_the_next_line() {
    let db = TestDb::new("cli_echo_format");
    let dir = temp_dir();
    seed_on(dir.path(), &db.url, 10);

    let output = run(
        dir.path(),
        &["--database-url", &db.url, "--echo", "transfer"],
        &[],
    );
    let statements = assert_echo_of_one_command(&output);
    // The session set-up is text sent as it is; everything after it is built by Diesel.
    let setup = &statements[0];
    assert!(setup.sql.starts_with("SET "), "{setup:?}");
    assert_eq!(
        (setup.cache.as_str(), setup.parameters.as_str()),
        ("raw sql", "()")
    );
    let detect = find_statement(&statements, "SELECT version()", &output);
    assert!(detect.cache.starts_with("generated in "), "{detect:?}");
    // The one-statement transfer, once: its SQL over several lines, then its three binds (two
    // random starting points and the ledger id) on the line after it.
    let transfers: Vec<_> = statements
        .iter()
        .filter(|statement| statement.sql.contains("INSERT INTO transfers"))
        .collect();
    assert_eq!(transfers.len(), 1, "{}", describe(&output));
    assert!(transfers[0].sql.contains('\n'), "{:?}", transfers[0]);
    let binds = values(&transfers[0].parameters);
    assert_eq!(binds.len(), 3, "{:?}", transfers[0]);
    assert!(
        binds.iter().all(|value| value.parse::<i64>().is_ok()),
        "{:?}",
        transfers[0]
    );
    assert_eq!(
        statements
            .iter()
            .filter(|statement| statement.sql == "SELECT version()")
            .count(),
        1,
        "{}",
        describe(&output)
    );
}

#[test]
fn sqlite_echo_of_an_up_to_date_file_connects_once_and_checks_migrations_once() {
    let sqlite = TestSqlite::new();
    let cwd = sqlite.dir.path();
    seed_on(cwd, &sqlite.url, 3);
    let output = run(
        cwd,
        &["--database-url", &sqlite.url, "--echo", "balance"],
        &[],
    );
    let statements = assert_echo_of_one_command(&output);
    assert!(
        statements
            .iter()
            .all(|statement| !statement.sql.starts_with("CREATE")),
        "an up-to-date file gets no DDL: {}",
        describe(&output)
    );
    // The busy timeout is a busy handler of roachbank's own (src/db/sqlite_session.rs), set
    // through SQLite's C interface rather than a statement.
    let pragma = find_statement(&statements, "PRAGMA foreign_keys", &output);
    assert_eq!(pragma.cache, "raw sql");
    let total = find_statement(&statements, "SELECT COUNT(*)", &output);
    assert_eq!(total.parameters, "(1,)", "{total:?}");
}

/// A PL/pgSQL trigger on `transfers` that makes the first `k` inserts raise 40001, through the
/// suite's `fail_first` injector.
fn conflict_on_first_transfers(db: &TestDb, k: u32) {
    db.psql(support::CONFLICT_INJECTOR);
    db.psql(&format!(
        "CREATE FUNCTION conflict_on_transfer() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM fail_first({k}); RETURN NEW; END $$; \
         CREATE TRIGGER conflict BEFORE INSERT ON transfers \
         FOR EACH ROW EXECUTE FUNCTION conflict_on_transfer();"
    ));
}

#[test]
fn verbose_shows_each_retry_with_its_sqlstate_and_wait() {
    if not_run_on_cockroachdb(
        "verbose_shows_each_retry_with_its_sqlstate_and_wait",
        "conflicts are injected by a test-only PL/pgSQL trigger raising 40001",
    ) {
        return;
    }
    let db = TestDb::new("cli_verbose_retries");
    let dir = temp_dir();
    seed_on(dir.path(), &db.url, 5);
    conflict_on_first_transfers(&db, 2);

    let output = run(
        dir.path(),
        &["--database-url", &db.url, "-v", "transfer"],
        &[],
    );
    assert_success(&output);
    assert!(
        stdout_of(&output).contains("(3 attempts)"),
        "{}",
        describe(&output)
    );
    let stderr = stderr_of(&output);
    let retries: Vec<_> = echo::records(&stderr)
        .into_iter()
        .filter(|record| record.target == echo::RETRY)
        .collect();
    assert_eq!(retries.len(), 2, "{}", describe(&output));
    for (attempt, retry) in (1..).zip(&retries) {
        echo::assert_recent(retry.time, Duration::from_secs(120));
        assert_eq!(retry.level, "INFO", "{retry:?}");
        for expected in [
            "retrying transaction ".to_string(),
            format!(" attempt={attempt} "),
            " sqlstate=40001 ".to_string(),
            " next=new_transaction ".to_string(),
            " backoff_ms=".to_string(),
            " flavor=PostgreSQL ".to_string(),
            "injected conflict".to_string(),
        ] {
            assert!(
                retry.message.contains(&expected),
                "{expected:?} in {retry:?}"
            );
        }
    }
    // No statements without --echo.
    assert!(
        echo::statements(&stderr).is_empty(),
        "{}",
        describe(&output)
    );

    // Without -v the retries happen all the same, silently.
    db.psql("SELECT setval('injected_conflicts', 1, false)");
    let quiet = run(dir.path(), &["--database-url", &db.url, "transfer"], &[]);
    assert_success(&quiet);
    assert!(
        stdout_of(&quiet).contains("(3 attempts)"),
        "{}",
        describe(&quiet)
    );
    assert!(
        echo::records(&stderr_of(&quiet)).is_empty(),
        "{}",
        describe(&quiet)
    );
}

// ---------------------------------------------------------------------------------------------
// 10. --help
// ---------------------------------------------------------------------------------------------

#[test]
fn help_exits_zero_and_lists_every_command() {
    let dir = temp_dir();
    let output = run(dir.path(), &["--help"], &[]);
    assert_success(&output);
    let stdout = stdout_of(&output);
    for command in ["seed", "transfer", "points", "balance"] {
        assert!(
            stdout
                .lines()
                .any(|line| line.split_whitespace().next() == Some(command)),
            "--help does not list {command}: {}",
            describe(&output)
        );
    }
    assert!(dir_entries(dir.path()).is_empty());
}

/// The global flags, as `--help` lists them.
const GLOBAL_FLAGS: [&str; 8] = [
    "--database-url",
    "--echo",
    "--verbose",
    "--max-retries",
    "--statement-timeout",
    "--stall-timeout",
    "--settle-timeout",
    "--idle-in-transaction-timeout",
];

/// A command's `--help` (and `-h`) lists the command's own flags first, under "Options:", and
/// the global flags after them under a heading of their own, "Global options:".
#[test]
fn command_help_lists_its_own_flags_first_and_the_global_ones_under_their_own_heading() {
    let own: &[(&str, &[&str])] = &[
        (
            "transfer",
            &[
                "--count",
                "--duration",
                "--workers",
                "--check",
                "--style",
                "--ticks",
                "--histograms",
                "--plot",
            ],
        ),
        ("points", &["--chunk-size", "--method"]),
        ("seed", &["--accounts"]),
        ("init", &["--admin-url"]),
    ];
    for (command, flags) in own {
        for help in ["--help", "-h"] {
            let output = run(temp_dir().path(), &[command, help], &[]);
            assert_success(&output);
            let stdout = stdout_of(&output);
            let lines: Vec<&str> = stdout.lines().collect();
            let heading = |name: &str| {
                lines
                    .iter()
                    .position(|line| *line == name)
                    .unwrap_or_else(|| panic!("{command} {help}: no {name:?}: {stdout}"))
            };
            let (options, global) = (heading("Options:"), heading("Global options:"));
            assert!(options < global, "{command} {help}: {stdout}");
            // The line that lists `flag` (its first word, after an optional `-x, `).
            let listed_at = |flag: &str| {
                lines
                    .iter()
                    .position(|line| {
                        let line = line.trim_start();
                        let line = line.split_once(", ").map_or(line, |(short, rest)| {
                            if short.len() == 2 {
                                rest
                            } else {
                                line
                            }
                        });
                        line.split([' ', '.']).next() == Some(flag)
                    })
                    .unwrap_or_else(|| panic!("{command} {help}: {flag} not listed: {stdout}"))
            };
            for flag in *flags {
                let at = listed_at(flag);
                assert!(
                    options < at && at < global,
                    "{command} {help}: {flag} is not among the command's own: {stdout}"
                );
            }
            for flag in GLOBAL_FLAGS {
                assert!(
                    listed_at(flag) > global,
                    "{command} {help}: {flag} is not under Global options: {stdout}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 11. Standard output closed or full
// ---------------------------------------------------------------------------------------------

/// Runs the binary like `run` (cleaned environment, killed after [`DEFAULT_DEADLINE`]) but with
/// its stdout set up by `stdout`; `after_spawn` gets the spawned child (to close its pipe, say).
/// The returned output's stdout is empty unless it stayed piped.
fn run_with_stdout(
    dir: &Path,
    args: &[&str],
    stdout: Stdio,
    after_spawn: impl FnOnce(&mut std::process::Child),
) -> Output {
    let mut command = command(dir, args, &[]);
    command.stdout(stdout);
    Started::start(command, after_spawn).wait(DEFAULT_DEADLINE)
}

/// `roachbank transfer --count 10 | head -0`: the reader is gone before the first line. Like
/// other Unix tools the command ends quietly; the transfers it was asked for are all made, and
/// its exit status (0) says so, as it would have with the output read.
#[test]
fn transfer_into_a_closed_pipe_ends_quietly_with_exit_0_and_every_transfer_made() {
    let sqlite = TestSqlite::new();
    let cwd = sqlite.dir.path();
    let seed = run(cwd, &["--database-url", &sqlite.url, "seed"], &[]);
    assert_success(&seed);
    let ledger_before = sqlite_count(&sqlite.path, "transfers");

    let args = ["--database-url", &sqlite.url, "transfer", "--count", "10"];
    // The pipe is closed right after the start, long before the first transfer commits.
    let output = run_with_stdout(cwd, &args, Stdio::piped(), |child| {
        drop(child.stdout.take());
    });
    assert_no_panic(&output);
    assert_ne!(output.status.code(), Some(101), "{}", describe(&output));
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(stderr_of(&output), "", "{}", describe(&output));
    assert_eq!(
        sqlite_count(&sqlite.path, "transfers") - ledger_before,
        10,
        "all ten transfers must be made and recorded"
    );
}

/// `roachbank balance >/dev/full`: one line on stderr naming standard output, exit 1.
#[test]
fn balance_to_a_full_disk_fails_with_one_line_about_standard_output() {
    let sqlite = TestSqlite::new();
    let cwd = sqlite.dir.path();
    assert_success(&run(cwd, &["--database-url", &sqlite.url, "seed"], &[]));
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full");
    let output = run_with_stdout(
        cwd,
        &["--database-url", &sqlite.url, "balance"],
        Stdio::from(full),
        |_| {},
    );
    let line = assert_one_line_error(&output);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        line.starts_with("roachbank: error: cannot write to standard output: "),
        "{}",
        describe(&output)
    );
}

// ---------------------------------------------------------------------------------------------
// 12. Limits and wording
// ---------------------------------------------------------------------------------------------

/// `--chunk-size` is at most 100,000 rows (memory stays bounded whatever the flags): one more is
/// a usage error that writes nothing, the maximum itself loads, and `--help` states it.
#[test]
fn points_chunk_size_is_at_most_100000_a_usage_error_beyond_and_help_says_so() {
    let dir = temp_dir();
    let output = run(dir.path(), &["points", "10", "--chunk-size", "100001"], &[]);
    let line = assert_one_line_error(&output);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(line.contains("100001"), "{line}");
    assert!(
        dir_entries(dir.path()).is_empty(),
        "wrote {:?} (error: {line})",
        dir_entries(dir.path())
    );

    let sqlite = TestSqlite::new();
    let at_max = run(
        sqlite.dir.path(),
        &[
            "--database-url",
            &sqlite.url,
            "points",
            "1000",
            "--chunk-size",
            "100000",
        ],
        &[],
    );
    assert_success(&at_max);
    assert!(
        stdout_of(&at_max).contains("points: 1,000 rows in 1 chunk,"),
        "{}",
        describe(&at_max)
    );
    assert_eq!(sqlite_count(&sqlite.path, "points"), 1000);

    let help = run(dir.path(), &["points", "--help"], &[]);
    assert_success(&help);
    assert!(
        stdout_of(&help).contains("at most 100,000"),
        "points --help must state the maximum chunk size: {}",
        describe(&help)
    );
}

/// One account, one row, one chunk, one ledger row: summaries say so in the singular.
#[test]
fn summaries_of_one_thing_use_the_singular() {
    let sqlite = TestSqlite::new();
    let cwd = sqlite.dir.path();
    let url = sqlite.url.as_str();
    let expectations: &[(&[&str], &str)] = &[
        (&["seed", "--accounts", "1"], "seeded 1 account holding "),
        (&["points", "1"], "points: 1 row in 1 chunk, 0 retries, "),
        (&["check"], "check: OK — 1 account, 1 ledger row, "),
    ];
    for (args, start) in expectations {
        let output = run(cwd, &[&["--database-url", url], *args].concat(), &[]);
        assert_success(&output);
        assert!(
            stdout_of(&output).starts_with(start),
            "expected {start:?}: {}",
            describe(&output)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 13. Interrupted and failed runs say what they did
// ---------------------------------------------------------------------------------------------

/// Starts the binary with `args` in `dir` (cleaned environment, like `run`), sends it `signal`
/// (`"INT"`, `"TERM"`) with `kill` after `after`, and waits for it, killing it if it has not
/// ended [`SIGNAL_DEADLINE`] after the signal. Returns its output and how long it took to end
/// after the signal.
fn run_and_signal(dir: &Path, args: &[&str], signal: &str, after: Duration) -> (Output, Duration) {
    let mut child = Started::start(command(dir, args, &[]), |_| {});
    std::thread::sleep(after);
    if child.has_ended() {
        let output = child.wait(Duration::ZERO);
        panic!(
            "roachbank {args:?} ended before the signal: {}",
            describe(&output)
        );
    }
    send_signal(signal, child.id());
    let signalled = Instant::now();
    let output = child.wait(SIGNAL_DEADLINE);
    (output, signalled.elapsed())
}

/// How long a signalled run may take to end: its in-flight transactions finish (milliseconds on
/// SQLite), then it prints its summary.
const SIGNAL_DEADLINE: Duration = Duration::from_secs(10);

/// `transfer --duration 30s` stopped by `signal` after a second: it ends within seconds with
/// `code`, prints the summary of what it did, and the bank is consistent with exactly that many
/// transfers in the ledger.
fn interrupted_transfer_prints_its_summary_and_exits(signal: &str, code: i32) {
    const ACCOUNTS: i64 = 20;
    let sqlite = TestSqlite::new();
    let cwd = sqlite.dir.path();
    let url = sqlite.url.as_str();
    let seed = run(
        cwd,
        &[
            "--database-url",
            url,
            "seed",
            "--accounts",
            &ACCOUNTS.to_string(),
        ],
        &[],
    );
    assert_success(&seed);

    let (output, took) = run_and_signal(
        cwd,
        &["--database-url", url, "transfer", "--duration", "30s"],
        signal,
        Duration::from_secs(1),
    );
    assert_no_panic(&output);
    assert_eq!(output.status.code(), Some(code), "{}", describe(&output));
    assert!(
        took < Duration::from_secs(5),
        "ended {took:?} after SIG{signal}"
    );
    let done = number_after(&output, "transfers: ");
    assert_transfer_summary(&output, done as u64);
    assert!(done > 0, "no transfer in a second: {}", describe(&output));
    assert!(
        stderr_of(&output).contains(&format!("SIG{signal}")),
        "stderr must say the run was stopped by SIG{signal}: {}",
        describe(&output)
    );
    // Every transfer the summary counts is in the ledger once, and no other.
    assert_eq!(
        sqlite_count(&sqlite.path, "transfers"),
        ACCOUNTS + done,
        "ledger rows: {ACCOUNTS} deposits plus the {done} transfers done"
    );
    let check = run(cwd, &["--database-url", url, "check"], &[]);
    assert_success(&check);
    assert!(
        stdout_of(&check).starts_with("check: OK"),
        "{}",
        describe(&check)
    );
}

/// Ctrl-C pressed on a terminal, where the progress bar is drawn (and the terminal echoes
/// `^C`): the bar is cleared before the summary — no frame of it is left on screen — whatever
/// the terminal's width, for `transfer` and `points` alike.
#[test]
fn ctrl_c_on_a_terminal_leaves_no_frame_of_the_progress_bar() {
    let sqlite = TestSqlite::new();
    let cwd = sqlite.dir.path();
    seed_on(cwd, &sqlite.url, 20);
    let runs: [(&[&str], &str); 2] = [
        (&["transfer", "--count", "100000000"], "transfers: "),
        (&["points", "100000000", "--chunk-size", "1000"], "points: "),
    ];
    for (run_args, summary) in runs {
        for columns in [80, 132] {
            let mut args = vec!["--database-url", sqlite.url.as_str()];
            args.extend_from_slice(run_args);
            let mut terminal = OnTerminal::start(command(cwd, &args, &[]), columns);
            // A frame drawn, with a rate: the bar is on screen.
            terminal.wait_for("/s, eta ", Duration::from_secs(30));
            terminal.type_keys(b"\x03");
            let (status, written) = terminal.wait(SIGNAL_DEADLINE);
            let shown = screen(&written, usize::from(columns));
            let what = format!(
                "{run_args:?} on {columns} columns; screen:\n{}",
                shown.join("\n")
            );
            assert_eq!(status.code(), Some(130), "{what}");
            assert!(
                String::from_utf8_lossy(&written).contains("^C"),
                "the terminal did not echo ^C: {what}"
            );
            assert!(
                shown
                    .iter()
                    .all(|row| !row.contains('░') && !row.contains(" eta ")),
                "a frame of the progress bar is left: {what}"
            );
            assert!(
                shown
                    .iter()
                    .any(|row| row.starts_with("roachbank: SIGINT: stopped"))
                    && shown.iter().any(|row| row.starts_with(summary)),
                "{what}"
            );
        }
    }
}

#[test]
fn transfer_stopped_by_sigint_prints_its_summary_and_exits_130() {
    interrupted_transfer_prints_its_summary_and_exits("INT", 130);
}

#[test]
fn transfer_stopped_by_sigterm_prints_its_summary_and_exits_143() {
    interrupted_transfer_prints_its_summary_and_exits("TERM", 143);
}

/// `points 100000000` stopped by Ctrl-C: exit 130, and the summary's row count, a whole number
/// of committed chunks, is exactly what the table holds.
#[test]
fn points_stopped_by_sigint_says_how_many_rows_committed_and_the_table_holds_them() {
    let sqlite = TestSqlite::new();
    let cwd = sqlite.dir.path();
    let (output, took) = run_and_signal(
        cwd,
        &[
            "--database-url",
            &sqlite.url,
            "points",
            "100000000",
            "--chunk-size",
            "1000",
        ],
        "INT",
        Duration::from_secs(1),
    );
    assert_no_panic(&output);
    assert_eq!(output.status.code(), Some(130), "{}", describe(&output));
    assert!(took < Duration::from_secs(5), "ended {took:?} after SIGINT");
    let rows = number_after(&output, "points: ");
    assert!(
        rows > 0 && rows % 1000 == 0,
        "{rows} rows: a whole number of 1000-row chunks, at least one: {}",
        describe(&output)
    );
    let chunks = rows / 1000;
    let summary = format!(
        "points: {} rows in {} chunk",
        grouped(rows as u64),
        grouped(chunks as u64)
    );
    assert!(
        stdout_of(&output).starts_with(&summary),
        "expected {summary:?}: {}",
        describe(&output)
    );
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("SIGINT")
            && stderr.contains(&format!("{} of 100,000,000 rows", grouped(rows as u64))),
        "stderr must say the run was stopped and what committed: {}",
        describe(&output)
    );
    assert_eq!(sqlite_count(&sqlite.path, "points"), rows);
}

/// A `points` run that fails midway (here a trigger refuses rows beyond 3,000) says in its one
/// error line how many rows and chunks committed, and the table holds exactly those.
#[test]
fn points_failing_midway_says_how_many_rows_and_chunks_committed() {
    let sqlite = TestSqlite::new();
    let cwd = sqlite.dir.path();
    let url = sqlite.url.as_str();
    // Creates the tables.
    assert_success(&run(
        cwd,
        &["--database-url", url, "seed", "--accounts", "2"],
        &[],
    ));
    let mut conn = SqliteConnection::establish(sqlite.path.to_str().expect("UTF-8 path"))
        .expect("open the SQLite file");
    diesel::sql_query(
        "CREATE TRIGGER points_full BEFORE INSERT ON points \
         WHEN (SELECT COUNT(*) FROM points) >= 3000 \
         BEGIN SELECT RAISE(ABORT, 'the points table is full'); END",
    )
    .execute(&mut conn)
    .expect("create the trigger");
    drop(conn);

    let output = run(
        cwd,
        &[
            "--database-url",
            url,
            "points",
            "10000",
            "--chunk-size",
            "1000",
        ],
        &[],
    );
    let line = assert_one_line_error(&output);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        line.contains("the points table is full"),
        "the cause: {}",
        describe(&output)
    );
    assert_eq!(
        line.matches("3,000 rows in 3 chunks committed").count(),
        1,
        "the line must say once what committed: {}",
        describe(&output)
    );
    assert_eq!(sqlite_count(&sqlite.path, "points"), 3000);
}

// ---------------------------------------------------------------------------------------------
// 14. A server that does not make commits durable
// ---------------------------------------------------------------------------------------------

/// How the warning starts (after `roachbank: `) when the server does not make commits durable.
const NOT_DURABLE: &str = "roachbank: warning: the server does not make commits durable";

/// Why the warning tests do not run on CockroachDB.
const NEEDS_FSYNC_OFF_POSTGRESQL: &str = "needs PostgreSQL with fsync = off and \
     synchronous_commit = off (the throwaway server); CockroachDB's equivalent, the cluster \
     setting kv.raft_log.disable_synchronization_unsafe, is off on the suite's cluster";

/// The lines of `output`'s stderr that are the durability warning.
fn durability_warnings(output: &Output) -> Vec<String> {
    stderr_of(output)
        .lines()
        .filter(|line| line.contains("commits durable"))
        .map(str::to_string)
        .collect()
}

/// On the suite's throwaway server (fsync = off, synchronous_commit = off), each command that
/// writes and reports work done — seed, transfer, points — succeeds and then warns, once, on
/// one line naming both settings; the read-only commands do not warn.
#[test]
fn commands_that_write_warn_once_when_the_server_does_not_make_commits_durable() {
    if not_run_on_cockroachdb(
        "commands_that_write_warn_once_when_the_server_does_not_make_commits_durable",
        NEEDS_FSYNC_OFF_POSTGRESQL,
    ) {
        return;
    }
    let db = TestDb::new("cli_not_durable");
    assert_eq!(
        db.psql("SELECT current_setting('fsync') || ' ' || current_setting('synchronous_commit')"),
        "off off",
        "the test needs the throwaway server's settings (tests/it/support/pg_server.rs)"
    );
    let dir = temp_dir();
    let writes: &[&[&str]] = &[
        &["seed", "--accounts", "5"],
        &["transfer", "--count", "2"],
        &["points", "10"],
    ];
    for args in writes {
        let mut all = vec!["--database-url", db.url.as_str()];
        all.extend_from_slice(args);
        let output = run(dir.path(), &all, &[]);
        assert_success(&output);
        let stderr = stderr_of(&output);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "roachbank {args:?}: exactly one line on stderr, the warning: {}",
            describe(&output)
        );
        assert!(
            lines[0].starts_with(NOT_DURABLE)
                && lines[0].contains("fsync = off")
                && lines[0].contains("synchronous_commit = off"),
            "roachbank {args:?}: the warning must name both settings: {}",
            describe(&output)
        );
    }
    for args in [["balance"], ["check"]] {
        let mut all = vec!["--database-url", db.url.as_str()];
        all.extend_from_slice(&args);
        let output = run(dir.path(), &all, &[]);
        assert_success(&output);
        assert_eq!(
            stderr_of(&output),
            "",
            "roachbank {args:?} wrote nothing: no warning: {}",
            describe(&output)
        );
    }
}

/// A user and a database `init` creates on the suite's server, dropped again.
struct InitTarget {
    user: String,
    database: String,
}

impl Drop for InitTarget {
    fn drop(&mut self) {
        let server = support::server();
        let _ = server.try_psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database),
        );
        let _ = server.try_psql(
            "postgres",
            &format!("DROP ROLE IF EXISTS \"{}\"", self.user),
        );
    }
}

/// `init` writes too (the user, the database, the tables): after it succeeds, the same one
/// warning, asked on the new user's session.
#[test]
fn init_warns_once_when_the_server_does_not_make_commits_durable() {
    if not_run_on_cockroachdb(
        "init_warns_once_when_the_server_does_not_make_commits_durable",
        NEEDS_FSYNC_OFF_POSTGRESQL,
    ) {
        return;
    }
    let server = support::server();
    let tag = format!("{:010x}", rand::random::<u64>() & 0xff_ffff_ffff);
    let target = InitTarget {
        user: format!("rb_durable_user_{tag}"),
        database: format!("rb_durable_db_{tag}"),
    };
    let url = format!(
        "postgresql://{}@{}:{}/{}",
        target.user,
        server.host(),
        server.port(),
        target.database
    );
    let dir = temp_dir();
    let output = run(
        dir.path(),
        &[
            "--database-url",
            &url,
            "init",
            "--admin-url",
            server.admin_url(),
        ],
        &[],
    );
    assert_success(&output);
    assert!(
        stdout_of(&output).contains("database ready"),
        "{}",
        describe(&output)
    );
    let stderr = stderr_of(&output);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with(NOT_DURABLE) && lines[0].contains("fsync = off"),
        "exactly one line on stderr, the warning: {}",
        describe(&output)
    );
}

/// A command that fails prints its one error line, and no warning, even on a server that does
/// not make commits durable.
#[test]
fn a_failing_command_prints_one_error_line_and_no_durability_warning() {
    if not_run_on_cockroachdb(
        "a_failing_command_prints_one_error_line_and_no_durability_warning",
        NEEDS_FSYNC_OFF_POSTGRESQL,
    ) {
        return;
    }
    let db = TestDb::new("cli_not_durable_fails");
    let dir = temp_dir();
    let output = run(
        dir.path(),
        &["--database-url", &db.url, "transfer", "--count", "2"],
        &[],
    );
    let line = assert_one_line_error(&output);
    assert!(line.contains("seed"), "{}", describe(&output));
    assert!(
        durability_warnings(&output).is_empty(),
        "{}",
        describe(&output)
    );
}

/// On a server with PostgreSQL's default durability (fsync and synchronous_commit on), the
/// same commands say nothing on stderr.
#[test]
fn a_server_that_makes_commits_durable_gets_no_warning() {
    if not_run_on_cockroachdb(
        "a_server_that_makes_commits_durable_gets_no_warning",
        "starts its own PostgreSQL server with fsync on (support::start_durable_server)",
    ) {
        return;
    }
    let durable = support::start_durable_server();
    durable.psql("postgres", "CREATE DATABASE bank");
    assert_eq!(
        durable.psql(
            "bank",
            "SELECT current_setting('fsync') || ' ' || current_setting('synchronous_commit')"
        ),
        "on on"
    );
    let url = durable.url_for("bank");
    let dir = temp_dir();
    let commands: &[&[&str]] = &[
        &["seed", "--accounts", "5"],
        &["transfer", "--count", "2"],
        &["points", "10"],
    ];
    for args in commands {
        let mut all = vec!["--database-url", url.as_str()];
        all.extend_from_slice(args);
        let output = run(dir.path(), &all, &[]);
        assert_success(&output);
        assert_eq!(
            stderr_of(&output),
            "",
            "roachbank {args:?} on a durable server: nothing on stderr: {}",
            describe(&output)
        );
    }
}

/// SQLite (WAL, synchronous = FULL) makes every commit durable: no warning.
#[test]
fn sqlite_gets_no_durability_warning() {
    let sqlite = TestSqlite::new();
    let cwd = sqlite.dir.path();
    let commands: &[&[&str]] = &[
        &["seed", "--accounts", "5"],
        &["transfer", "--count", "2"],
        &["points", "10"],
    ];
    for args in commands {
        let mut all = vec!["--database-url", sqlite.url.as_str()];
        all.extend_from_slice(args);
        let output = run(cwd, &all, &[]);
        assert_success(&output);
        assert_eq!(stderr_of(&output), "", "{}", describe(&output));
    }
}

// ---------------------------------------------------------------------------------------------
// 15. Errors that say the next step
// ---------------------------------------------------------------------------------------------

/// The hint roachbank gives when the database or the user does not exist yet.
const INIT_HINT: &str = "run `roachbank init` to create";

/// A database that does not exist yet is what `init` creates: the error line says so.
#[test]
fn a_missing_database_suggests_init() {
    if not_run_on_cockroachdb(
        "a_missing_database_suggests_init",
        "CockroachDB accepts a connection to a database that does not exist (its statements \
         fail later, with the same \"database … does not exist\"), and its init would create it",
    ) {
        return;
    }
    let name = format!(
        "rb_missing_{:012x}",
        rand::random::<u64>() & 0xffff_ffff_ffff
    );
    let url = support::server().url_for(&name);
    let dir = temp_dir();
    let output = run(dir.path(), &["--database-url", &url, "balance"], &[]);
    let line = assert_one_line_error(&output);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        line.contains(&format!("database \"{name}\" does not exist"))
            && line.contains(INIT_HINT)
            && line.contains("--admin-url"),
        "{}",
        describe(&output)
    );
    // init itself, given an admin URL whose database is missing, is not told to run init.
    let init = run(
        dir.path(),
        &["--database-url", &url, "init", "--admin-url", &url],
        &[],
    );
    let line = assert_one_line_error(&init);
    assert!(
        line.contains("does not exist") && !line.contains(INIT_HINT),
        "{}",
        describe(&init)
    );
}

/// So is a user that does not exist yet.
#[test]
fn a_missing_user_suggests_init() {
    if not_run_on_cockroachdb(
        "a_missing_user_suggests_init",
        "PostgreSQL's login refusal names the missing role (role \"…\" does not exist)",
    ) {
        return;
    }
    let server = support::server();
    let url = format!(
        "postgresql://rb_nobody@{}:{}/postgres?sslmode=disable",
        server.host(),
        server.port()
    );
    let dir = temp_dir();
    let output = run(dir.path(), &["--database-url", &url, "balance"], &[]);
    let line = assert_one_line_error(&output);
    assert!(
        line.contains("role \"rb_nobody\" does not exist") && line.contains(INIT_HINT),
        "{}",
        describe(&output)
    );
}

/// A SQLite file to be made in a directory that does not exist: the line names the directory.
#[test]
fn a_sqlite_file_in_a_missing_directory_names_the_directory() {
    let dir = temp_dir();
    let missing = dir.path().join("no-such-dir");
    let url = format!("sqlite://{}", missing.join("bank.db").display());
    let output = run(dir.path(), &["--database-url", &url, "seed"], &[]);
    let line = assert_one_line_error(&output);
    assert!(
        line.contains(&format!("directory {} does not exist", missing.display())),
        "{}",
        describe(&output)
    );
    assert!(
        dir_entries(dir.path()).is_empty(),
        "{:?}",
        dir_entries(dir.path())
    );
}

// ---------------------------------------------------------------------------------------------
// 16. Commands that read or move money need a bank; they never make one
// ---------------------------------------------------------------------------------------------

/// The commands that only make sense on a bank that is already there.
const NEED_A_BANK: [&str; 3] = ["check", "balance", "transfer"];

/// In an empty directory, with no URL at all, `check`, `balance` and `transfer` make no
/// `bank.db`: each says in one line that there is no bank and to run `seed`, and exits 1. An
/// existing file that holds no bank (empty, say) is left exactly as it was, no `-wal` beside it.
#[test]
fn check_balance_and_transfer_make_no_sqlite_file_and_say_there_is_no_bank() {
    for command in NEED_A_BANK {
        let dir = temp_dir();
        let output = run(dir.path(), &[command], &[]);
        let line = assert_one_line_error(&output);
        assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
        assert_eq!(
            line,
            "roachbank: error: no bank at bank.db; run `roachbank seed` first",
            "{command}: {}",
            describe(&output)
        );
        assert!(output.stdout.is_empty(), "{command}: {}", describe(&output));
        assert!(
            dir_entries(dir.path()).is_empty(),
            "{command} wrote {:?}",
            dir_entries(dir.path())
        );

        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").expect("create an empty file");
        let url = format!("sqlite://{}", empty.display());
        let output = run(dir.path(), &["--database-url", &url, command], &[]);
        let line = assert_one_line_error(&output);
        assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
        assert!(
            line.ends_with(&format!(
                "no bank at {}; run `roachbank seed` first",
                empty.display()
            )),
            "{command}: {}",
            describe(&output)
        );
        assert_eq!(dir_entries(dir.path()), ["empty.db"], "{command}");
        assert_eq!(
            std::fs::metadata(&empty).expect("stat").len(),
            0,
            "{command}"
        );
    }
    // Nor the files transfer was asked to write.
    let dir = temp_dir();
    let args = ["transfer", "--histograms", "h.log", "--plot", "p.svg"];
    let output = run(dir.path(), &args, &[]);
    let line = assert_one_line_error(&output);
    assert!(line.contains("no bank at bank.db"), "{}", describe(&output));
    assert!(
        dir_entries(dir.path()).is_empty(),
        "transfer wrote {:?}",
        dir_entries(dir.path())
    );
}

/// The tables in the current schema of `db`, counted through psql (not through the binary).
fn table_count(db: &TestDb) -> i64 {
    db.psql(
        "SELECT count(*) FROM information_schema.tables \
         WHERE table_schema = current_schema()",
    )
    .parse()
    .expect("a count")
}

/// On a server database that roachbank has never touched, `check`, `balance` and `transfer`
/// say there is no bank, exit 1, and create nothing: no table, no migration.
#[test]
fn check_balance_and_transfer_on_a_server_database_without_a_bank_migrate_nothing() {
    let db = TestDb::new("need_a_bank_server");
    for command in NEED_A_BANK {
        let dir = temp_dir();
        let output = run(dir.path(), &["--database-url", &db.url, command], &[]);
        let line = assert_one_line_error(&output);
        assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
        assert!(
            line.starts_with("roachbank: error: no bank at postgresql://")
                && line.ends_with("; run `roachbank seed` first"),
            "{command}: {}",
            describe(&output)
        );
        assert_eq!(table_count(&db), 0, "{command} created tables");
    }
}

/// A bank whose tables are there but hold nothing: `check` says it is empty (not a bare "OK"),
/// on a server and on SQLite.
#[test]
fn check_on_a_migrated_but_empty_bank_says_it_is_empty() {
    for target in [Target::postgresql("check_empty_bank"), Target::sqlite()] {
        drop(target.open(1));
        let dir = temp_dir();
        let output = run(dir.path(), &["--database-url", target.url(), "check"], &[]);
        assert_success(&output);
        let stdout = stdout_of(&output);
        assert!(
            stdout.starts_with(
                "check: the bank is empty — no accounts, no ledger rows; run `roachbank seed`"
            ) && stdout.lines().count() == 1,
            "{}",
            describe(&output)
        );
    }
}
