//! The `roachbank` command: parse the command line, find the database, run the command, and
//! turn any failure into one line on stderr and a non-zero exit code.

/// `eprintln!` that never panics: a line on stderr that cannot be written (stderr a full disk)
/// is dropped, as there is nowhere left to report it.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod cli;

use clap::Parser;
use cli::args::{Cli, Command};
use cli::commands::{self, StdoutError};
use cli::interrupt::Interrupt;
use roachbank::db::config::{Backend, DatabaseConfig, UrlSource};
use roachbank::db::durability::{durability_warning, durability_warning_on};
use roachbank::db::redact::Redactor;
use roachbank::db::{
    echo_connection_events, one_line, ConnectOptions, Database, DbConnectionManager, Flavor,
};
use roachbank::init::InitPlan;
use roachbank::migrate::OpenError;
use roachbank::retry::RetryPolicy;
use std::io::ErrorKind;
use std::process::ExitCode;

/// Exit code for a failed command.
const EXIT_FAILURE: u8 = 1;
/// Exit code for bad usage (clap's convention).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version go to stdout as usual.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            let rendered = err.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            note!("roachbank: {}", first.trim_start_matches("error: ").trim());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // From here on, before anything is read or written, Ctrl-C and SIGTERM stop the command
    // between transactions instead of killing the process: see `interrupt`.
    let interrupt = match Interrupt::install() {
        Ok(interrupt) => interrupt,
        Err(err) => {
            note!("roachbank: error: cannot handle signals: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if let Err(err) = dotenvy::dotenv() {
        if !err.not_found() {
            note!("roachbank: error: cannot read .env: {}", dotenv_error(&err));
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let config = match DatabaseConfig::resolve(cli.database_url.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            note!("roachbank: error: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Every URL in play, so that no password of any of them is ever printed.
    let mut redactor = Redactor::for_config(&config);
    let init_plan = match &cli.command {
        Command::Init { admin_url } => {
            let plan = DatabaseConfig::resolve_admin(admin_url.as_deref())
                .map_err(|err| err.to_string())
                .and_then(|admin| {
                    if let Some(admin) = &admin {
                        redactor.add_config(admin);
                    }
                    InitPlan::new(&config, admin.as_ref()).map_err(|err| err.to_string())
                });
            match plan {
                Ok(plan) => Some(plan),
                Err(err) => {
                    note!("roachbank: error: {}", redactor.scrub(&err));
                    return ExitCode::from(EXIT_USAGE);
                }
            }
        }
        _ => None,
    };
    if cli.echo {
        if let Err(err) = echo_connection_events(redactor.clone()) {
            note!(
                "roachbank: error: {}",
                redactor.scrub(&one_line(&err.to_string()))
            );
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    if config.backend() == Backend::Sqlite {
        if let Err(reason) = commands::refuse_unsupported(&cli.command, Flavor::Sqlite) {
            note!("roachbank: error: {}", redactor.scrub(&reason));
            return ExitCode::from(EXIT_USAGE);
        }
    }
    // A failure outranks an interruption (its line says what went wrong, and exit 1 says it);
    // otherwise a command cut short by a signal exits 128 + its number, as a shell reports a
    // process the signal killed: 130 for SIGINT, 143 for SIGTERM.
    let interrupted = || match interrupt.received() {
        Some(signal) => ExitCode::from(signal.exit_code()),
        None => ExitCode::SUCCESS,
    };
    match run(&cli, &config, init_plan.as_ref(), &redactor, &interrupt) {
        Ok(()) => interrupted(),
        // The reader has gone (`| head -1`): end quietly, like other Unix tools. The work was
        // done before its output was written, so the exit status says it succeeded.
        Err(err) if stdout_error_kind(&err) == Some(ErrorKind::BrokenPipe) => interrupted(),
        Err(err) => {
            note!("roachbank: error: {}", redactor.scrub(&error_line(&err)));
            // Asking a database for what it cannot do is bad usage, like SQLite's refusal above.
            match err.downcast_ref::<OpenError>() {
                Some(OpenError::Unsupported(_)) => ExitCode::from(EXIT_USAGE),
                _ => ExitCode::from(EXIT_FAILURE),
            }
        }
    }
}

fn run(
    cli: &Cli,
    config: &DatabaseConfig,
    init_plan: Option<&InitPlan>,
    redactor: &Redactor,
    interrupt: &Interrupt,
) -> anyhow::Result<()> {
    if config.source() == UrlSource::Default {
        note!(
            "roachbank: DATABASE_URL is not set; using the embedded SQLite file {}",
            config.redacted()
        );
    }
    let options = ConnectOptions {
        pool_size: commands::pool_size(&cli.command),
        echo: cli.echo,
        statement_timeout: cli.statement_timeout,
        stall_timeout: Some(cli.stall_timeout),
        idle_in_transaction_timeout: cli.idle_in_transaction_timeout,
        redactor: redactor.clone(),
        ..ConnectOptions::default()
    };
    if let Some(plan) = init_plan {
        let flavor = commands::init(plan, &options)?;
        // Asked on a session of the user init set up, as the other commands would ask.
        if flavor != Flavor::Sqlite {
            if let Ok(mut conn) = DbConnectionManager::new(config.clone(), &options).establish() {
                warn_if_not_durable(durability_warning_on(&mut conn, flavor));
            }
        }
        return Ok(());
    }
    let db = Database::open_checked(config.clone(), &options, |flavor| {
        commands::refuse_unsupported(&cli.command, flavor)
    })?;
    let policy = RetryPolicy {
        max_retries: cli.max_retries,
        ..RetryPolicy::default()
    };
    commands::run(&cli.command, &db, &policy, interrupt)?;
    if commands::reports_work_done(&cli.command) {
        warn_if_not_durable(durability_warning(&db));
    }
    Ok(())
}

/// Prints the warning that the server does not make commits durable, if there is one: once,
/// after a command that wrote something has succeeded and said what it did (a failed command
/// prints its one error line and nothing else).
fn warn_if_not_durable(warning: Option<String>) {
    if let Some(warning) = warning {
        note!("roachbank: {warning}");
    }
}

/// A `.env` that cannot be read, without the offending line: dotenvy's message quotes it, and it
/// may hold a password (`DATABASE_URL=postgresql://u:secret@…` with a stray quote). Only the
/// file's line number is kept; an I/O error (no content in it) is printed as it is.
fn dotenv_error(err: &dotenvy::Error) -> String {
    match err {
        dotenvy::Error::LineParse(content, index) => {
            // dotenvy gives the line itself (a multi-line value starts at its first line) and the
            // byte offset of the error in it; find its line number in the file.
            match line_number_of(content) {
                Some(line) => format!("line {line} is not KEY=VALUE"),
                None => format!("a line is not KEY=VALUE (error at byte {index} of it)"),
            }
        }
        dotenvy::Error::Io(io) => one_line(&io.to_string()),
        // Its text may quote the variable's value.
        dotenvy::Error::EnvVar(_) => "a variable it uses is not valid Unicode".to_string(),
        _ => "it is not a valid .env file".to_string(),
    }
}

/// The 1-based number of the line of `.env` (the one dotenvy reads: in this directory or the
/// nearest parent) where `content` starts, if the file can be read again and holds it.
fn line_number_of(content: &str) -> Option<usize> {
    let first = content.lines().next().filter(|first| !first.is_empty())?;
    let mut dir = std::env::current_dir().ok()?;
    loop {
        let candidate = dir.join(".env");
        if candidate.is_file() {
            let text = std::fs::read_to_string(candidate).ok()?;
            // dotenvy drops a trailing comment; the whole line first, then the line it began.
            let lines: Vec<&str> = text.lines().collect();
            return lines
                .iter()
                .position(|line| *line == first)
                .or_else(|| lines.iter().position(|line| line.starts_with(first)))
                .map(|index| index + 1);
        }
        if !dir.pop() {
            return None;
        }
    }
}

/// The kind of the failed write to stdout that `err` is, if it is one.
fn stdout_error_kind(err: &anyhow::Error) -> Option<ErrorKind> {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<StdoutError>())
        .map(|StdoutError(io)| io.kind())
}

/// `err` and its causes on one line, like anyhow's `{:#}` ("context: error: cause"), without a
/// cause whose text the line already holds: an error that prints its source in its own message
/// (`no database connection: {0}` around r2d2's "timed out waiting for connection: …") would
/// otherwise say everything twice.
fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = one_line(&cause.to_string());
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::Error as DieselError;
    use roachbank::retry::TransactionError;
    use std::time::Duration;

    /// A pool whose every connection attempt fails with `reason`.
    struct Unreachable(&'static str);

    impl r2d2::ManageConnection for Unreachable {
        type Connection = ();
        type Error = std::io::Error;

        fn connect(&self) -> Result<(), std::io::Error> {
            Err(std::io::Error::other(self.0))
        }

        fn is_valid(&self, _: &mut ()) -> Result<(), std::io::Error> {
            Ok(())
        }

        fn has_broken(&self, _: &mut ()) -> bool {
            false
        }
    }

    /// No `.env` error quotes what the file holds: not the offending line, not a variable's
    /// value.
    #[test]
    fn dotenv_errors_never_quote_the_file() {
        let secret = "pw-S3cret";
        let not_unicode = std::ffi::OsString::from(secret);
        for err in [
            dotenvy::Error::EnvVar(std::env::VarError::NotUnicode(not_unicode)),
            dotenvy::Error::LineParse(format!("DATABASE_URL postgresql://u:{secret}@h/db"), 12),
        ] {
            let text = dotenv_error(&err);
            assert!(!text.contains(secret), "{text}");
            assert!(!text.contains('\n'), "{text}");
        }
    }

    /// Each cause once: a pool that timed out after an outage reads "balance failed: no
    /// database connection: timed out waiting for connection: cannot connect …" (r2d2's text
    /// once, not again as the source), while causes that add text are all kept, in order.
    #[test]
    fn error_line_says_each_cause_once() {
        let reason = "cannot connect to postgresql://u@db/bank: Connection refused";
        let pool = r2d2::Pool::builder()
            .connection_timeout(Duration::from_millis(50))
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(Unreachable(reason));
        let timeout = pool.get().expect_err("the pool cannot connect");
        let err = anyhow::Error::new(TransactionError::<DieselError>::Connection(timeout))
            .context("balance failed");
        assert_eq!(
            error_line(&err),
            format!(
                "balance failed: no database connection: timed out waiting for connection: {reason}"
            )
        );

        let err = anyhow::anyhow!("Connection refused")
            .context("cannot connect")
            .context("seed failed");
        assert_eq!(
            error_line(&err),
            "seed failed: cannot connect: Connection refused"
        );
    }
}
