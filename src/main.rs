//! The `roachbank` command: parse the command line, find the database, run the command, and
//! turn any failure into one line on stderr and a non-zero exit code.

mod cli;
mod commands;

use clap::Parser;
use cli::{Cli, Command};
use roachbank::config::{Backend, DatabaseConfig, Redactor, UrlSource};
use roachbank::db::{echo_connection_events, one_line, ConnectOptions, Database, DbError, Flavor};
use roachbank::init::InitPlan;
use roachbank::retry::RetryPolicy;
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
            eprintln!("roachbank: {}", first.trim_start_matches("error: ").trim());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(err) = dotenvy::dotenv() {
        if !err.not_found() {
            eprintln!(
                "roachbank: error: cannot read .env: {}",
                one_line(&err.to_string())
            );
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let config = match DatabaseConfig::resolve(cli.database_url.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("roachbank: error: {err}");
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
                    eprintln!("roachbank: error: {}", redactor.scrub(&err));
                    return ExitCode::from(EXIT_USAGE);
                }
            }
        }
        _ => None,
    };
    if cli.echo {
        if let Err(err) = echo_connection_events(redactor.clone()) {
            eprintln!(
                "roachbank: error: {}",
                redactor.scrub(&one_line(&err.to_string()))
            );
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    if config.backend() == Backend::Sqlite {
        if let Err(reason) = commands::refuse_unsupported(&cli.command, Flavor::Sqlite) {
            eprintln!("roachbank: error: {}", redactor.scrub(&reason));
            return ExitCode::from(EXIT_USAGE);
        }
    }
    match run(&cli, &config, init_plan.as_ref(), &redactor) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "roachbank: error: {}",
                redactor.scrub(&one_line(&format!("{err:#}")))
            );
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
        eprintln!(
            "roachbank: DATABASE_URL is not set; using the embedded SQLite file {}",
            config.redacted()
        );
    }
    let options = ConnectOptions {
        pool_size: commands::pool_size(&cli.command),
        echo: cli.echo,
        statement_timeout: cli.statement_timeout,
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
