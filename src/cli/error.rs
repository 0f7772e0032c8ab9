//! The command line's one error type, and the one place that turns how a run ended into its
//! exit code and its one line on stderr (`roachbank: error: …`, whoever found the error, clap
//! included): 0 on success, 2 for bad usage, 1 for a failure, and 130/143 for a run a signal
//! cut short. `anyhow` stops here: the library's
//! errors are typed.

use super::interrupt::Signal;
use roachbank::db::config::ConfigError;
use roachbank::db::one_line;
use roachbank::db::redact::Redactor;
use roachbank::init::InitError;
use roachbank::migrate::OpenError;
use std::io::ErrorKind;
use std::process::ExitCode;

/// Exit code for a failed command.
const EXIT_FAILURE: u8 = 1;
/// Exit code for bad usage (clap's convention).
const EXIT_USAGE: u8 = 2;

/// A failed write to standard output: a closed pipe (`roachbank balance | head -0`), a full disk
/// (`>/dev/full`) … Commands return it instead of panicking as `println!` would; [`conclude`]
/// ends quietly on a closed pipe and prints this, one line, on anything else.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to standard output: {0}")]
pub struct StdoutError(pub std::io::Error);

/// Why a run of `roachbank` did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// clap refused the command line (exit 2), or was asked for `--help` or `--version`, which
    /// clap reports the same way (printed on stdout, exit 0).
    #[error(transparent)]
    Args(#[from] clap::Error),
    /// Bad usage, found before anything was written: a URL that cannot be used, an unreadable
    /// `.env`, `init` without what it needs, work the database cannot do. Exit 2.
    #[error("{0}")]
    Usage(String),
    /// The command failed. Exit 1; or, if all that failed was writing its output into a pipe
    /// whose reader has gone, the exit code of a run that succeeded.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl From<ConfigError> for CliError {
    fn from(err: ConfigError) -> Self {
        CliError::Usage(err.to_string())
    }
}

impl From<StdoutError> for CliError {
    fn from(err: StdoutError) -> Self {
        CliError::Failed(anyhow::Error::new(err))
    }
}

impl CliError {
    /// An error of `init`: bad usage if [`InitError::is_usage`] says so, else a failure.
    pub fn from_init(err: InitError) -> Self {
        if err.is_usage() {
            CliError::Usage(err.to_string())
        } else {
            CliError::Failed(anyhow::Error::new(err))
        }
    }

    /// An error opening the database: asking it for what it cannot do
    /// ([`OpenError::Unsupported`]) is bad usage; anything else is a failure.
    pub fn from_open(err: OpenError) -> Self {
        match err {
            OpenError::Unsupported(reason) => CliError::Usage(one_line(&reason)),
            err => CliError::Failed(anyhow::Error::new(err)),
        }
    }

    /// The same error, its line ending with `; ` and `hint` (the next step it makes obvious), if
    /// there is one. A failure keeps its line, not its chain of causes.
    pub fn with_hint(self, hint: Option<String>) -> Self {
        let Some(hint) = hint else {
            return self;
        };
        match self {
            CliError::Usage(message) => CliError::Usage(format!("{message}; {hint}")),
            CliError::Failed(err) => {
                CliError::Failed(anyhow::anyhow!("{}; {hint}", error_line(&err)))
            }
            args @ CliError::Args(_) => args,
        }
    }

    /// The same error, its line starting with `context: `.
    pub fn context(self, context: &str) -> Self {
        match self {
            CliError::Usage(message) => CliError::Usage(format!("{context}: {message}")),
            CliError::Failed(err) => CliError::Failed(err.context(context.to_string())),
            args @ CliError::Args(_) => args,
        }
    }
}

/// Says how the run ended — at most one line on stderr, every secret `redactor` knows scrubbed —
/// and returns its exit code. `interrupted` is the signal that asked the run to stop, if one
/// did: a run that did not fail then exits 128 + its number, as a shell reports a process the
/// signal killed (130 for SIGINT, 143 for SIGTERM); a failure outranks it (its line says what
/// went wrong, and exit 1 says it).
pub fn conclude(
    result: Result<(), CliError>,
    interrupted: Option<Signal>,
    redactor: &Redactor,
) -> ExitCode {
    let succeeded = || match interrupted {
        Some(signal) => ExitCode::from(signal.exit_code()),
        None => ExitCode::SUCCESS,
    };
    match result {
        Ok(()) => succeeded(),
        Err(CliError::Args(err)) if !err.use_stderr() => {
            // --help and --version go to stdout as usual.
            let _ = err.print();
            ExitCode::SUCCESS
        }
        Err(CliError::Args(err)) => {
            note!("{}", redactor.scrub(&clap_error_line(&err)));
            ExitCode::from(EXIT_USAGE)
        }
        Err(CliError::Usage(message)) => {
            note!("roachbank: error: {}", redactor.scrub(&message));
            ExitCode::from(EXIT_USAGE)
        }
        // The reader has gone (`| head -1`): end quietly, like other Unix tools. The work was
        // done before its output was written, so the exit status says it succeeded.
        Err(CliError::Failed(err)) if stdout_error_kind(&err) == Some(ErrorKind::BrokenPipe) => {
            succeeded()
        }
        Err(CliError::Failed(err)) => {
            note!("roachbank: error: {}", redactor.scrub(&error_line(&err)));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// clap's refusal as roachbank's one error line: `roachbank: error: `, what clap found wrong,
/// what clap suggests in brackets (its "did you mean", the possible values, the commands there
/// are), and where to read more:
///
/// ```text
/// roachbank: error: unrecognized subcommand 'trasnfer' (did you mean 'transfer'?); try `roachbank --help`
/// ```
///
/// clap's own rendering is a block of up to six lines (the error, a tip, the usage, a pointer to
/// `--help`); the usage adds nothing the pointer does not, and one line is what every other
/// failure prints.
fn clap_error_line(err: &clap::Error) -> String {
    // Plain text: `render` styles for a terminal only through `ansi()`.
    let rendered = err.render().to_string();
    let mut lines = rendered
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty());
    let first = lines.next().unwrap_or("invalid arguments");
    let mut message = first.strip_prefix("error: ").unwrap_or(first).to_string();
    if err.kind() == clap::error::ErrorKind::MissingSubcommand {
        message = "no command given".to_string();
    }
    // What the command line was for: `roachbank transfer` from `Usage: roachbank transfer …`.
    let mut command = "roachbank".to_string();
    let mut listed = Vec::new();
    let mut suggested = Vec::new();
    for line in lines {
        if let Some(usage) = line.strip_prefix("Usage: ") {
            let words = usage.split_whitespace().skip(1);
            for word in words.take_while(|word| !word.starts_with(['-', '[', '<'])) {
                command.push(' ');
                command.push_str(word);
            }
        } else if line.starts_with("For more information") {
        } else if let Some(tip) = line.strip_prefix("tip: ") {
            match tip.split_once(" exists: ") {
                Some((_, similar)) => suggested.push(format!("did you mean {similar}?")),
                None => suggested.push(tip.to_string()),
            }
        } else if let Some(list) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            // `[possible values: copy, insert]`; `[subcommands: seed, …, help]`.
            let list = list.replace("subcommands: ", "commands: ");
            listed.push(list.trim_end_matches(", help").to_string());
        } else {
            // What a message ending in `:` lists (required arguments that are missing).
            message.push(' ');
            message.push_str(line);
        }
    }
    if command == "roachbank" {
        // clap shows no usage for a refused value: the command is the first argument that
        // names one.
        if let Some(named) = named_command() {
            command = format!("roachbank {named}");
        }
    }
    listed.extend(suggested);
    if !listed.is_empty() {
        message = format!("{message} ({})", listed.join("; "));
    }
    format!("roachbank: error: {message}; try `{command} --help`")
}

/// The first command-line argument that names one of roachbank's commands, if one does.
fn named_command() -> Option<String> {
    use clap::CommandFactory;
    let cli = super::args::Cli::command();
    std::env::args().skip(1).find(|arg| {
        cli.get_subcommands()
            .any(|command| command.get_name() == arg && arg != "help")
    })
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
    use diesel_retry::TransactionError;
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
        let err = anyhow::Error::new(TransactionError::<DieselError>::Connection {
            attempts: 0,
            error: timeout,
        })
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

    /// What decides the exit code: usage errors (including an `Unsupported` refusal and an
    /// init usage error, whatever context they get) are 2, failures 1.
    #[test]
    fn usage_errors_and_failures_are_told_apart() {
        let refused = CliError::from_open(OpenError::Unsupported("no copy".into()));
        assert!(
            matches!(&refused, CliError::Usage(m) if m == "no copy"),
            "{refused:?}"
        );
        let missing = CliError::from_init(InitError::MissingAdminUrl).context("init failed");
        assert!(
            matches!(&missing, CliError::Usage(m) if m.starts_with("init failed: init needs an admin URL")),
            "{missing:?}"
        );
        let lacking = CliError::from_init(InitError::GrantIneffective {
            subject: "privileges".into(),
        })
        .context("init failed");
        match &lacking {
            CliError::Failed(err) => assert_eq!(
                error_line(err),
                "init failed: granting privileges had no effect: the admin URL's user may not \
                 grant them (it must own the object or be a superuser)"
            ),
            other => panic!("a failure, not {other:?}"),
        }
    }
}
