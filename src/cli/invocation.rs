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
use roachbank::migrate::OpenError;

/// One run of a command: the command line, the database URL, and the redactor.
pub struct Invocation<'a> {
    /// The command line.
    pub cli: &'a Cli,
    /// The database URL, resolved.
    pub config: &'a DatabaseConfig,
    /// Knows every URL in play before anything is printed: a command that uses another URL
    /// (init's admin URL) adds it before calling [`Invocation::connect_options`].
    pub redactor: &'a mut Redactor,
    /// Whether the database is the embedded SQLite default and its file is not there yet (when
    /// the command began): a command that creates it says so, once it has.
    default_file_missing: bool,
}

impl<'a> Invocation<'a> {
    /// The run of `cli`'s command on `config`'s database, scrubbing with `redactor`.
    pub fn new(cli: &'a Cli, config: &'a DatabaseConfig, redactor: &'a mut Redactor) -> Self {
        let default_file_missing = config.source() == UrlSource::Default
            && config.sqlite_path().is_some_and(|path| !path.exists());
        Invocation {
            cli,
            config,
            redactor,
            default_file_missing,
        }
    }
}

impl Invocation<'_> {
    /// Says that the embedded SQLite default was created, if this command created it (call
    /// once the database is open). That is when a user needs to know where the bank went and
    /// how to put it elsewhere; a command on a bank.db that is already there says nothing
    /// unless asked (-v).
    pub fn announce_created_default(&self) {
        if self.default_file_missing && self.config.sqlite_path().is_some_and(|path| path.exists())
        {
            note!(
                "roachbank: DATABASE_URL is not set; created the embedded SQLite file {}",
                self.config.redacted()
            );
        }
    }

    /// Called once, when the command has checked what it was given and is about to connect:
    /// sets up --echo and -v (their output scrubbed by the redactor as it is now), refuses
    /// what SQLite cannot do before the file is created, says with -v that the embedded SQLite
    /// default is used (if it is there already), and returns the options to connect with.
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
        // Otherwise said when the file is created (`announce_created_default`).
        if config.source() == UrlSource::Default && cli.verbose > 0 && !self.default_file_missing {
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
            // Transfers find rows by key: no sequential scan and its table-wide predicate lock.
            avoid_sequential_scans: matches!(cli.command, Command::Transfer(_)),
            redactor: self.redactor.clone(),
            ..ConnectOptions::default()
        })
    }

    /// Opens the database — refusing what its flavour cannot do before any migration runs;
    /// for a command that needs a bank already there, refusing where there is none, having
    /// written nothing — and runs `work` on it; then, if the command wrote something, warns if
    /// the server does not make commits durable.
    pub fn on_database(
        &self,
        work: impl FnOnce(&Database, &RetryPolicy) -> Result<()>,
    ) -> Result<(), CliError> {
        let options = self.connect_options()?;
        let accept = |flavor| refuse_unsupported(&self.cli.command, flavor);
        let config = self.config.clone();
        let opened = if needs_a_bank(&self.cli.command) {
            Database::open_existing(config, &options, accept)
        } else {
            Database::open_checked(config, &options, accept)
        };
        let db = opened.map_err(|err| {
            let hint = match err {
                OpenError::NoBank { .. } => Some(hint::SEED_FIRST.to_string()),
                _ => hint::after_failed_open(&err.to_string(), self.config),
            };
            CliError::from_open(err).with_hint(hint)
        })?;
        self.announce_created_default();
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

/// Whether `command` only makes sense on a bank that is already there (`balance`, `check`,
/// `transfer`): then it never creates one — no SQLite file, no tables — and says there is none.
/// The others (`seed`, `points`, `init`) create what is missing.
fn needs_a_bank(command: &Command) -> bool {
    match command {
        Command::Balance | Command::Check | Command::Transfer(_) => true,
        Command::Seed { .. } | Command::Points(_) | Command::Init { .. } => false,
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
