//! The command line, the top layer. [`run`] dispatches to one file per command — [`seed`],
//! [`transfer`], [`points`], [`balance`], [`check`], [`init`] — each checking what it was given,
//! connecting through [`invocation`] and printing through [`output`]. Beside them: the clap
//! definitions ([`args`]), Ctrl-C and SIGTERM ([`interrupt`]), `.env` ([`dotenv`]), -v and
//! --echo ([`log`]), a transfer run followed second by second ([`follow`]), the one error type
//! whose kind decides the exit code ([`error`]), and the hints that end an error line when the
//! next step is obvious ([`hint`]). `main` parses, resolves the database, runs, and maps the
//! outcome to an exit code.

pub mod args;
pub mod balance;
pub mod check;
pub mod dotenv;
pub mod error;
pub mod follow;
pub mod hint;
pub mod init;
pub mod interrupt;
pub mod invocation;
pub mod log;
pub mod output;
pub mod points;
pub mod seed;
pub mod transfer;

use args::{Cli, Command};
use error::CliError;
use interrupt::Interrupt;
use invocation::Invocation;
use roachbank::db::config::DatabaseConfig;
use roachbank::db::redact::Redactor;

/// Runs the command `cli` asks for on the database `config` names. Every command goes the same
/// way: first what it was given is checked (a usage error touches nothing), and every other URL
/// it uses is added to `redactor`; then --echo is set up, with a redactor that knows every URL in
/// play, and the command connects, does its work and says what it did. Transfer and points runs
/// stop early once `interrupt` has a signal, and say so; the other commands are one transaction
/// each and run to their end (`main` then exits with the signal's code).
pub fn run(
    cli: &Cli,
    config: &DatabaseConfig,
    redactor: &mut Redactor,
    interrupt: &Interrupt,
) -> Result<(), CliError> {
    let mut invocation = Invocation::new(cli, config, redactor);
    match &cli.command {
        Command::Init { admin_url } => init::run(&mut invocation, admin_url.as_deref()),
        Command::Seed { accounts } => {
            invocation.on_database(|db, policy| seed::run(db, policy, *accounts))
        }
        Command::Transfer(args) => transfer::run(&invocation, args, interrupt),
        Command::Points(args) => {
            invocation.on_database(|db, policy| points::run(db, policy, args, interrupt))
        }
        Command::Balance => invocation.on_database(balance::run),
        Command::Check => invocation.on_database(check::run),
    }
}
