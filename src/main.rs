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
mod commands;

use clap::Parser;
use cli::{Cli, Command};
use commands::StdoutError;
use roachbank::config::{Backend, DatabaseConfig, Redactor, UrlSource};
use roachbank::db::{echo_connection_events, one_line, ConnectOptions, Database, DbError, Flavor};
use roachbank::init::InitPlan;
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
    if let Err(err) = dotenvy::dotenv() {
        if !err.not_found() {
            note!(
                "roachbank: error: cannot read .env: {}",
                one_line(&err.to_string())
            );
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
    match run(&cli, &config, init_plan.as_ref(), &redactor) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader has gone (`| head -1`): end quietly, like other Unix tools. The work was
        // done before its output was written, so the exit status says it succeeded.
        Err(err) if stdout_error_kind(&err) == Some(ErrorKind::BrokenPipe) => ExitCode::SUCCESS,
        Err(err) => {
            note!("roachbank: error: {}", redactor.scrub(&error_line(&err)));
            // Asking a database for what it cannot do is bad usage, like SQLite's refusal above.
            match err.downcast_ref::<DbError>() {
                Some(DbError::Unsupported(_)) => ExitCode::from(EXIT_USAGE),
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
        return commands::init(plan, &options);
    }
    let db = Database::open_checked(config.clone(), &options, |flavor| {
        commands::refuse_unsupported(&cli.command, flavor)
    })?;
    let policy = RetryPolicy {
        max_retries: cli.max_retries,
        ..RetryPolicy::default()
    };
    commands::run(&cli.command, &db, &policy)
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
