//! What every command does around its own work: set up --echo and -v, refuse what the
//! database cannot do before anything is written, connect (migrating if need be) with the
//! options the command line gave, and, after a command that wrote something, warn if the
//! server does not make commits durable.

use super::args::{Cli, Command};
use super::error::CliError;
use super::hint;
use anyhow::Result;
use diesel_retry::RetryPolicy;
use roachbank::bank::points::{self, LoadMethod};
use roachbank::bank::TransferStyle;
use roachbank::db::config::{Backend, DatabaseConfig, UrlSource};
use roachbank::db::durability::durability_warning;
use roachbank::db::redact::Redactor;
use roachbank::db::{echo_connection_events, one_line, ConnectOptions, Database, Flavor};

/// One run of a command: the command line, the database URL, and the redactor.
pub struct Invocation<'a> {
    /// The command line.
    pub cli: &'a Cli,
    /// The database URL, resolved.
    pub config: &'a DatabaseConfig,
    /// Knows every URL in play before anything is printed: a command that uses another URL
    /// (init's admin URL) adds it before calling [`Invocation::connect_options`].
    pub redactor: &'a mut Redactor,
}

impl Invocation<'_> {
    /// Called once, when the command has checked what it was given and is about to connect:
    /// sets up --echo and -v (their output scrubbed by the redactor as it is now), refuses
    /// what SQLite cannot do before the file is created, says so when the embedded SQLite
    /// default is used, and returns the options to connect with.
    pub fn connect_options(&self) -> Result<ConnectOptions, CliError> {
        let Invocation { cli, config, .. } = *self;
        if cli.echo {
            echo_connection_events(self.redactor.clone())
                .map_err(|err| anyhow::anyhow!(one_line(&err.to_string())))?;
        }
        super::log::install(cli.verbose, cli.echo, self.redactor.clone())?;
        if config.backend() == Backend::Sqlite {
            refuse_unsupported(&cli.command, Flavor::Sqlite).map_err(CliError::Usage)?;
        }
        if config.source() == UrlSource::Default {
            note!(
                "roachbank: DATABASE_URL is not set; using the embedded SQLite file {}",
                config.redacted()
            );
        }
        Ok(ConnectOptions {
            pool_size: pool_size(&cli.command),
            echo: cli.echo,
            statement_timeout: cli.statement_timeout,
            stall_timeout: Some(cli.stall_timeout),
            idle_in_transaction_timeout: cli.idle_in_transaction_timeout,
            redactor: self.redactor.clone(),
            ..ConnectOptions::default()
        })
    }

    /// Opens the database — refusing what its flavour cannot do before any migration runs —
    /// and runs `work` on it; then, if the command wrote something, warns if the server does
    /// not make commits durable.
    pub fn on_database(
        &self,
        work: impl FnOnce(&Database, &RetryPolicy) -> Result<()>,
    ) -> Result<(), CliError> {
        let options = self.connect_options()?;
        let db = Database::open_checked(self.config.clone(), &options, |flavor| {
            refuse_unsupported(&self.cli.command, flavor)
        })
        .map_err(|err| {
            let hint = hint::after_failed_open(&err.to_string(), self.config);
            CliError::from_open(err).with_hint(hint)
        })?;
        let policy = RetryPolicy {
            max_retries: self.cli.max_retries,
            settle_timeout: self.cli.settle_timeout,
            ..RetryPolicy::default()
        };
        work(&db, &policy)?;
        if reports_work_done(&self.cli.command) {
            warn_if_not_durable(durability_warning(&db));
        }
        Ok(())
    }
}

/// Prints the warning that the server does not make commits durable, if there is one: once,
/// after a command that wrote something has succeeded and said what it did (a failed command
/// prints its one error line and nothing else).
pub fn warn_if_not_durable(warning: Option<String>) {
    if let Some(warning) = warning {
        note!("roachbank: {warning}");
    }
}

/// Refuses what `flavor` cannot do, before anything is written: asked with [`Flavor::Sqlite`]
/// before the file is created, and with the detected flavour of a server before any migration
/// runs.
fn refuse_unsupported(command: &Command, flavor: Flavor) -> Result<(), String> {
    match command {
        Command::Points(args) => match args.method {
            Some(method) => LoadMethod::from(method).supported_on(flavor),
            None => Ok(()),
        },
        Command::Transfer(args) => match args.style {
            Some(style) => TransferStyle::from(style).supported_on(flavor),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Whether `command` writes to the database and reports work done (`seed`, `transfer`,
/// `points`, `init`): after such a command succeeds, it warns if the server does not make
/// commits durable.
fn reports_work_done(command: &Command) -> bool {
    match command {
        Command::Seed { .. } | Command::Transfer(_) | Command::Points(_) | Command::Init { .. } => {
            true
        }
        Command::Balance | Command::Check => false,
    }
}

/// The pool size a command wants.
fn pool_size(command: &Command) -> u32 {
    match command {
        Command::Transfer(args) => args.workers,
        Command::Points(_) => points::SERVER_LOADERS,
        _ => 1,
    }
}
