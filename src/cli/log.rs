//! `--echo` and `-v`: one `tracing` subscriber that prints the library's events on stderr the
//! way SQLAlchemy's `echo=True` prints its engine's log — `%(asctime)s %(levelname)s %(name)s
//! %(message)s`, the name being the event's target:
//!
//! ```text
//! 2026-12-04 19:50:01,123 INFO roachbank::engine SELECT … WHERE id = $1
//! 2026-12-04 19:50:01,123 INFO roachbank::engine [generated in 0.00012s] (1,)
//! 2026-12-04 19:50:01,131 INFO diesel_retry retrying transaction attempt=1 sqlstate=40001 …
//! ```
//!
//! `--echo` enables [`ECHO_TARGET`] (statements with their binds on the next line, connection
//! attempts); `-v` enables [`RETRY_TARGET`] at INFO (retries with their SQLSTATE, CockroachDB's
//! reason and the wait; unknown commit outcomes and give-ups, which are WARN) and the rest of
//! roachbank at WARN; `-vv` everything at DEBUG (waits of the commit probe, commits, failures);
//! `-vvv` at TRACE (every attempt). Every line is scrubbed of every secret the redactor knows
//! before it is written, and is written above the progress bar, if one is drawn.

use chrono::Local;
use diesel_retry::RETRY_TARGET;
use roachbank::db::redact::Redactor;
use roachbank::db::ECHO_TARGET;
use roachbank::workload::progress;
use std::fmt::{self, Write as _};
use std::io;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Installs the process's subscriber for `-v` (`verbose` times) and `--echo`, scrubbing with
/// `redactor` (which must know every URL in play). Nothing is installed when neither is asked
/// for: the events then cost nothing.
pub fn install(verbose: u8, echo: bool, redactor: Redactor) -> anyhow::Result<()> {
    let Some(targets) = targets(verbose, echo) else {
        return Ok(());
    };
    let layer = tracing_subscriber::fmt::layer()
        .event_format(EchoFormat { redactor })
        .with_writer(|| AboveProgress)
        // A stderr that cannot be written to (a full disk) drops the line, as `note!` does.
        .log_internal_errors(false)
        .with_filter(targets);
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .map_err(|err| anyhow::anyhow!("cannot set up -v/--echo output: {err}"))
}

/// What `-v` (`verbose` times) and `--echo` show; `None`: nothing.
fn targets(verbose: u8, echo: bool) -> Option<Targets> {
    let (roachbank, retry) = match verbose {
        0 => (None, None),
        1 => (Some(Level::WARN), Some(Level::INFO)),
        2 => (Some(Level::DEBUG), Some(Level::DEBUG)),
        _ => (Some(Level::TRACE), Some(Level::TRACE)),
    };
    let engine = if echo {
        Some(roachbank.map_or(Level::INFO, |level| level.max(Level::INFO)))
    } else {
        roachbank
    };
    if roachbank.is_none() && engine.is_none() {
        return None;
    }
    let mut targets = Targets::new();
    for (target, level) in [
        ("roachbank", roachbank),
        (RETRY_TARGET, retry),
        (ECHO_TARGET, engine),
    ] {
        if let Some(level) = level {
            targets = targets.with_target(target, level);
        }
    }
    Some(targets)
}

/// SQLAlchemy's echo format, adapted: `<local time with milliseconds> <LEVEL> <target>
/// <message> <field=value …>`; a statement's binds (its `parameters` and `cache` fields, see
/// `roachbank::db::echo`) on the next line with the same prefix, as SQLAlchemy prints them.
struct EchoFormat {
    redactor: Redactor,
}

impl<S, N> FormatEvent<S, N> for EchoFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        let prefix = format!(
            "{} {} {}",
            Local::now().format("%Y-%m-%d %H:%M:%S,%3f"),
            metadata.level(),
            metadata.target()
        );
        let mut text = format!("{prefix} {}", fields.message);
        for (name, value) in &fields.rest {
            write!(text, " {name}={}", quoted(value))?;
        }
        text.push('\n');
        if let Some(parameters) = &fields.parameters {
            let cache = fields.cache.as_deref().unwrap_or("raw sql");
            writeln!(text, "{prefix} [{cache}] {parameters}")?;
        }
        writer.write_str(&self.redactor.scrub(&text))
    }
}

/// An event's fields: the message, a statement's binds, and the rest in order.
#[derive(Default)]
struct Fields {
    message: String,
    cache: Option<String>,
    parameters: Option<String>,
    rest: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%value` fields and the message arrive here: their Debug is their Display.
        self.put(field, format!("{value:?}"));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            "cache" => self.cache = Some(value),
            "parameters" => self.parameters = Some(value),
            name => self.rest.push((name, value)),
        }
    }
}

/// `value` as it is, or quoted if it holds a space, a quote or `=` (or nothing).
fn quoted(value: &str) -> String {
    if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '"' || c == '=') {
        format!("{value:?}")
    } else {
        value.to_string()
    }
}

/// Stderr, written above the progress bar when one is drawn (see
/// [`progress::above`]); one event is one `write_all`, so lines of concurrent workers never mix.
struct AboveProgress;

impl io::Write for AboveProgress {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        progress::above(|| io::stderr().lock().write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        progress::above(|| io::stderr().lock().write_all(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_installed_without_v_or_echo() {
        assert!(targets(0, false).is_none());
        let echo = targets(0, true).expect("--echo shows statements");
        assert!(echo.would_enable(ECHO_TARGET, &Level::INFO));
        assert!(!echo.would_enable(RETRY_TARGET, &Level::INFO));
    }

    #[test]
    fn each_v_shows_more() {
        let v = targets(1, false).expect("-v");
        assert!(v.would_enable(RETRY_TARGET, &Level::INFO));
        assert!(v.would_enable(RETRY_TARGET, &Level::WARN));
        assert!(!v.would_enable(RETRY_TARGET, &Level::DEBUG));
        assert!(!v.would_enable(ECHO_TARGET, &Level::INFO));
        let vv = targets(2, true).expect("-vv --echo");
        assert!(vv.would_enable(RETRY_TARGET, &Level::DEBUG));
        assert!(vv.would_enable(ECHO_TARGET, &Level::INFO));
        assert!(!vv.would_enable(RETRY_TARGET, &Level::TRACE));
        let vvv = targets(3, false).expect("-vvv");
        assert!(vvv.would_enable(RETRY_TARGET, &Level::TRACE));
    }

    #[test]
    fn values_with_spaces_are_quoted() {
        assert_eq!(quoted("40001"), "40001");
        assert_eq!(quoted("could not serialize"), "\"could not serialize\"");
        assert_eq!(quoted(""), "\"\"");
    }
}
