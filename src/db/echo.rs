//! `--echo`, like SQLAlchemy's `echo=True`: every statement with its binds, and every
//! connection attempt, as `tracing` events on the target [`ECHO_TARGET`] at level INFO, secrets
//! scrubbed. Whatever subscriber the application installs prints them; the CLI's prints them as
//! SQLAlchemy does (`src/cli/log.rs`):
//!
//! ```text
//! 2026-12-04 19:50:01,123 INFO roachbank::engine SELECT … WHERE id = $1
//! 2026-12-04 19:50:01,123 INFO roachbank::engine [generated in 0.00012s] (1,)
//! ```
//!
//! One event per statement: its message is the SQL, its field `parameters` the binds as a
//! Python tuple ([`super::binds`]) and its field `cache` what SQLAlchemy shows in brackets —
//! adapted to Diesel's prepared-statement cache: `generated in Ns` (Diesel built the SQL text
//! for this execution; N is how long building it and its binds takes), `cached since Ns ago`
//! (Diesel reuses the statement it prepared and cached on this connection N seconds ago), or
//! `raw sql` (text sent as it is, `batch_execute`: no binds, never prepared). Sent as one event,
//! the statement and its binds stay together when several connections echo at once.

use super::binds::python_tuple;
use super::redact::Redactor;
use super::stall::StallWatch;
use super::{one_line, DbError};
use crate::sync::{read, write};
use diesel::connection::{DebugQuery, Instrumentation, InstrumentationEvent};
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Instant;

/// The `tracing` target of `--echo`'s events (statements with their binds, connection
/// attempts), as SQLAlchemy logs to `sqlalchemy.engine.Engine`.
pub const ECHO_TARGET: &str = "roachbank::engine";

/// What every connection reports its statements to: `--echo`, the stall watchdog, and any
/// extra instrumentation.
pub(super) struct ConnectionHooks {
    pub(super) echo: Option<Echo>,
    pub(super) extra: Option<Box<dyn Instrumentation>>,
    pub(super) stall: Option<StallWatch>,
}

impl Instrumentation for ConnectionHooks {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let Some(watch) = &self.stall {
            match event {
                InstrumentationEvent::StartQuery { .. } => watch.statement_started(),
                InstrumentationEvent::FinishQuery { .. } => watch.statement_finished(),
                _ => {}
            }
        }
        if let Some(echo) = &mut self.echo {
            echo.event(&event);
        }
        if let Some(extra) = &mut self.extra {
            extra.on_connection_event(event);
        }
    }
}

/// `--echo` on one connection: the redactor, and when Diesel cached each statement it
/// prepared on this connection.
pub(super) struct Echo {
    redactor: Redactor,
    /// SQL text → when Diesel reported preparing and caching it (`CacheQuery`).
    prepared: HashMap<String, Instant>,
}

impl Echo {
    /// Echo scrubbed by `redactor`.
    pub(super) fn new(redactor: Redactor) -> Echo {
        Echo {
            redactor,
            prepared: HashMap::new(),
        }
    }

    fn event(&mut self, event: &InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartQuery { query, .. } => self.statement(*query),
            InstrumentationEvent::CacheQuery { sql, .. } => {
                self.prepared.insert(sql.to_string(), Instant::now());
            }
            InstrumentationEvent::FinishQuery {
                error: Some(error), ..
            } => {
                tracing::info!(
                    target: ECHO_TARGET,
                    "SQL error: {}",
                    one_line(&self.redactor.scrub(&error.to_string()))
                );
            }
            other => connection_event(&self.redactor, other),
        }
    }

    /// One statement, its binds and how Diesel came by it (see the module documentation).
    fn statement(&self, query: &dyn DebugQuery) {
        if !tracing::enabled!(target: ECHO_TARGET, tracing::Level::INFO) {
            return;
        }
        let started = Instant::now();
        // Diesel's display of a built query: `SQL -- binds: [..]`; raw text has no binds part.
        let shown = query.to_string();
        let generated = started.elapsed();
        let (sql, parameters, cache) = match shown.rsplit_once(" -- binds: [") {
            Some((sql, binds)) if binds.ends_with(']') => {
                let cache = match self.prepared.get(sql) {
                    Some(since) => format!(
                        "cached since {}s ago",
                        python_g4(since.elapsed().as_secs_f64())
                    ),
                    None => format!("generated in {:.5}s", generated.as_secs_f64()),
                };
                (sql, python_tuple(&format!("[{binds}")), cache)
            }
            _ => (shown.as_str(), "()".to_string(), "raw sql".to_string()),
        };
        tracing::info!(
            target: ECHO_TARGET,
            cache = %cache,
            parameters = %self.redactor.scrub(&parameters),
            "{}",
            self.redactor.scrub(sql)
        );
    }
}

/// Echoes a connection attempt (diesel's `StartEstablishConnection`/`FinishEstablishConnection`,
/// which carry the string handed to libpq, password included — shown as the URL it was made
/// from, [`Redactor::show_connection`]) and its failure.
fn connection_event(redactor: &Redactor, event: &InstrumentationEvent<'_>) {
    match event {
        InstrumentationEvent::StartEstablishConnection { url, .. } => {
            tracing::info!(
                target: ECHO_TARGET,
                "connecting to {}",
                redactor.show_connection(url)
            );
        }
        InstrumentationEvent::FinishEstablishConnection {
            url,
            error: Some(error),
            ..
        } => {
            tracing::info!(
                target: ECHO_TARGET,
                "connecting to {} failed: {}",
                redactor.show_connection(url),
                one_line(&redactor.scrub(&error.to_string()))
            );
        }
        _ => {}
    }
}

/// `seconds` as Python's `%.4g` writes it (SQLAlchemy's "cached since %.4gs ago"): four
/// significant digits, trailing zeros dropped, an exponent below 1e-4 and from 1e4.
fn python_g4(seconds: f64) -> String {
    if !seconds.is_finite() || seconds == 0.0 {
        return format!("{seconds}");
    }
    let scientific = format!("{seconds:.3e}"); // d.ddde±x, rounded to four digits
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let trim = |digits: String| {
        if digits.contains('.') {
            digits
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
        } else {
            digits
        }
    };
    if !(-4..4).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa.to_string()), exponent.abs())
    } else {
        let decimals = usize::try_from(3 - exponent).unwrap_or(0);
        trim(format!("{seconds:.decimals$}"))
    }
}

/// The secrets [`echo_connection_events`] scrubs; `None` until it is called.
static CONNECTION_ECHO: RwLock<Option<Redactor>> = RwLock::new(None);

/// Makes diesel's own connection events — every connection attempt, with the URL libpq is
/// given, and its failure if it fails, and the statements that set a new connection up —
/// `--echo` events ([`ECHO_TARGET`]), scrubbed by
/// `redactor` (which should know every URL in play). Process-wide: it installs diesel's default
/// instrumentation, which each new connection starts with until
/// [`DbConnectionManager`](super::DbConnectionManager) puts its own in place (so statements
/// are reported once).
pub fn echo_connection_events(redactor: Redactor) -> Result<(), DbError> {
    *write(&CONNECTION_ECHO) = Some(redactor);
    diesel::connection::set_default_instrumentation(|| {
        let redactor = read(&CONNECTION_ECHO).clone()?;
        Some(Box::new(ConnectionEcho(Echo::new(redactor))))
    })?;
    Ok(())
}

/// Diesel's default instrumentation while [`echo_connection_events`] is on: the connection
/// attempt, and the statements a connection sends while it is set up (SQLite's pragmas), before
/// its own [`ConnectionHooks`] replace it.
struct ConnectionEcho(Echo);

impl Instrumentation for ConnectionEcho {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        self.0.event(&event);
    }
}

#[cfg(test)]
mod tests {
    use super::python_g4;

    #[test]
    fn seconds_are_written_as_pythons_4g() {
        assert_eq!(python_g4(2.513_49), "2.513");
        assert_eq!(python_g4(0.5), "0.5");
        assert_eq!(python_g4(12.0), "12");
        assert_eq!(python_g4(0.000_123_44), "0.0001234");
        assert_eq!(python_g4(0.000_012_34), "1.234e-05");
        assert_eq!(python_g4(12_346.0), "1.235e+04");
        assert_eq!(python_g4(9.999_9), "10");
    }
}
