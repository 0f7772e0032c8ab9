//! End-to-end tests of the `roachbank` binary: every test runs the real executable as a child
//! process, in a fresh temporary directory as its working directory and with `DATABASE_URL`
//! removed from its environment (unless the test is about exactly that), and checks what it
//! prints, its exit status and what it left in the database.

use crate::support;
use crate::support::bin::{
    assert_no_panic, assert_not_leaked, assert_one_line_error, assert_success, assert_usage_block,
    command, describe, dir_entries, run, run_timed, send_signal, stderr_of, stdout_of, temp_dir,
    Started, DEFAULT_DEADLINE,
};
use crate::support::{echo, grouped, not_run_on_cockroachdb, TestDb, TestSqlite};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// The announcement the binary makes when it falls back to the embedded SQLite file.
const DEFAULT_ANNOUNCEMENT: &str = "using the embedded SQLite file bank.db";

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
    for part in ["transfers/s", "p50", "p99"] {
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

/// `roachbank` alone: clap's usage and the list of commands, one short block, exit 2.
#[test]
fn no_command_shows_the_usage_and_the_commands_in_one_short_block() {
    for args in [&[][..], &["--echo"][..]] {
        let dir = temp_dir();
        let output = run(dir.path(), args, &[]);
        let lines = assert_usage_block(&output);
        let block = lines.join("\n");
        for command in ["seed", "transfer", "points", "balance", "check", "init"] {
            assert!(
                block.contains(command),
                "roachbank {args:?} does not list {command}: {block}"
            );
        }
        assert!(dir_entries(dir.path()).is_empty());
    }
}

/// A misspelt command or flag: clap's "a similar … exists" tip and the usage, exit 2.
#[test]
fn misspelt_command_or_flag_gets_a_did_you_mean_and_the_usage() {
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["trasnfer"],
            "roachbank: error: unrecognized subcommand 'trasnfer'",
            "tip: a similar subcommand exists: 'transfer'",
        ),
        (
            &["transfer", "--cuont", "3"],
            "roachbank: error: unexpected argument '--cuont' found",
            "tip: a similar argument exists: '--count'",
        ),
        (
            &["points", "5", "--method", "cpy"],
            "roachbank: error: invalid value 'cpy' for '--method <METHOD>'",
            "tip: a similar value exists: 'copy'",
        ),
        (
            &["transfer", "--style", "tutorail"],
            "roachbank: error: invalid value 'tutorail' for '--style <STYLE>'",
            "tip: a similar value exists: 'tutorial'",
        ),
    ];
    for (args, first, tip) in cases {
        let dir = temp_dir();
        let output = run(dir.path(), args, &[]);
        assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
        let stderr = stderr_of(&output);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.first(), Some(first), "{}", describe(&output));
        assert!(
            lines.iter().any(|line| line.trim() == *tip),
            "roachbank {args:?}: no {tip:?}: {}",
            describe(&output)
        );
        assert!(
            lines.len() <= support::bin::MAX_USAGE_BLOCK_LINES
                && lines.iter().all(|line| !line.trim().is_empty()),
            "not one short block: {}",
            describe(&output)
        );
        assert!(dir_entries(dir.path()).is_empty());
    }
    // An unknown command or argument shows the usage too.
    for args in [&["trasnfer"][..], &["transfer", "--cuont", "3"][..]] {
        assert_usage_block(&run(temp_dir().path(), args, &[]));
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

// ---------------------------------------------------------------------------------------------
// 6. Unreachable and unresponsive servers
// ---------------------------------------------------------------------------------------------

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
    // Five accounts, an id and a balance each, on the line after the INSERT.
    let insert = find_statement(&statements, "INSERT INTO \"accounts\"", &echo);
    assert_eq!(values(&insert.parameters).len(), 10, "{insert:?}");
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
    let pragma = find_statement(&statements, "PRAGMA busy_timeout", &output);
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

/// A SQLite file in a directory that does not exist: the line names the directory.
#[test]
fn a_sqlite_file_in_a_missing_directory_names_the_directory() {
    let dir = temp_dir();
    let missing = dir.path().join("no-such-dir");
    let url = format!("sqlite://{}", missing.join("bank.db").display());
    let output = run(dir.path(), &["--database-url", &url, "balance"], &[]);
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
