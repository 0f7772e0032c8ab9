//! The `roachbank` command: parse the command line, find the database, run the command, and
//! turn any failure into one line on stderr and a non-zero exit code.

mod cli;
mod commands;

use clap::Parser;
use cli::Cli;
use roachbank::config::{DatabaseConfig, UrlSource};
use roachbank::db::{one_line, ConnectOptions, Database};
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
    if let Err(err) = commands::check_backend_support(&cli.command, &config) {
        eprintln!("roachbank: error: {err}");
        return ExitCode::from(EXIT_USAGE);
    }
    match run(&cli, &config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "roachbank: error: {}",
                config.scrub(&one_line(&format!("{err:#}")))
            );
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run(cli: &Cli, config: &DatabaseConfig) -> anyhow::Result<()> {
    if config.source() == UrlSource::Default {
        eprintln!(
            "roachbank: DATABASE_URL is not set; using the embedded SQLite file {}",
            config.redacted()
        );
    }
    let options = ConnectOptions {
        pool_size: commands::pool_size(&cli.command),
        echo: cli.echo,
        ..ConnectOptions::default()
    };
    let db = Database::open(config.clone(), &options)?;
    let policy = RetryPolicy {
        max_retries: cli.max_retries,
        ..RetryPolicy::default()
    };
    commands::run(&cli.command, &db, &policy)
}
