//! The `roachbank` command: parse the command line, handle signals, read `.env`, resolve the
//! database URL, run the command, and turn how it ended into at most one line on stderr (a
//! command line clap refuses included) and an exit code (see `cli::error`).

/// `eprintln!` that never panics: a line on stderr that cannot be written (stderr a full disk)
/// is dropped, as there is nowhere left to report it.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod cli;

use anyhow::Context;
use clap::Parser;
use cli::args::Cli;
use cli::error::{conclude, CliError};
use cli::interrupt::Interrupt;
use roachbank::db::config::DatabaseConfig;
use roachbank::db::redact::Redactor;
use std::process::ExitCode;

fn main() -> ExitCode {
    let interrupt = Interrupt::default();
    // Every URL in play, as soon as it is known, so that no password of any of them is ever
    // printed: the database URL below, init's admin URL when init plans.
    let mut redactor = Redactor::new();
    let result = run(&interrupt, &mut redactor);
    conclude(result, interrupt.received(), &redactor)
}

/// Parses, handles signals, loads `.env`, resolves the database URL and runs the command.
fn run(interrupt: &Interrupt, redactor: &mut Redactor) -> Result<(), CliError> {
    let cli = Cli::try_parse().inspect_err(|_| {
        // clap quotes the argument it refuses, and a misplaced URL may hold a password.
        for arg in std::env::args_os().skip(1) {
            let arg = arg.to_string_lossy();
            redactor.add_url(&arg);
            if let Some((_, value)) = arg.split_once('=') {
                redactor.add_url(value);
            }
        }
    })?;
    // From here on, before anything is read or written, Ctrl-C and SIGTERM stop the command
    // between transactions instead of killing the process: see `interrupt`.
    interrupt.install().context("cannot handle signals")?;
    cli::dotenv::load()?;
    let config = DatabaseConfig::resolve(cli.database_url.as_deref())?;
    *redactor = Redactor::for_config(&config);
    cli::run(&cli, &config, redactor, interrupt)
}
