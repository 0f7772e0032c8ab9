//! `--echo`: every statement with its binds, and every connection attempt, on stderr, secrets
//! scrubbed.

use super::redact::{redact_url, Redactor};
use super::stall::StallWatch;
use super::{one_line, DbError};
use diesel::connection::{Instrumentation, InstrumentationEvent};
use std::sync::RwLock;

/// What every connection reports its statements to: `--echo` (every statement with its binds
/// on stderr, like SQLAlchemy's `echo=True`, secrets scrubbed) and any extra instrumentation.
pub(super) struct ConnectionHooks {
    pub(super) echo: Option<Redactor>,
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
        if let Some(redactor) = &self.echo {
            echo_event(redactor, &event);
        }
        if let Some(extra) = &mut self.extra {
            extra.on_connection_event(event);
        }
    }
}

/// Prints one instrumentation event for `--echo`, scrubbed: connection attempts (diesel's
/// `StartEstablishConnection`/`FinishEstablishConnection`, which carry the full URL, password
/// included — redacted where libpq would take a password from it even if `redactor` does not
/// know it, then scrubbed), statements with their binds, and statement errors.
fn echo_event(redactor: &Redactor, event: &InstrumentationEvent<'_>) {
    match event {
        InstrumentationEvent::StartEstablishConnection { url, .. } => {
            eprintln!(
                "roachbank: connecting to {}",
                redactor.scrub(&redact_url(url))
            );
        }
        InstrumentationEvent::FinishEstablishConnection {
            url,
            error: Some(error),
            ..
        } => {
            eprintln!(
                "roachbank: connecting to {} failed: {}",
                redactor.scrub(&redact_url(url)),
                one_line(&redactor.scrub(&error.to_string()))
            );
        }
        InstrumentationEvent::StartQuery { query, .. } => {
            eprintln!("roachbank: SQL: {}", redactor.scrub(&query.to_string()));
        }
        InstrumentationEvent::FinishQuery {
            error: Some(error), ..
        } => {
            eprintln!(
                "roachbank: SQL error: {}",
                one_line(&redactor.scrub(&error.to_string()))
            );
        }
        _ => {}
    }
}

/// The secrets [`echo_connection_events`] scrubs; `None` until it is called.
static CONNECTION_ECHO: RwLock<Option<Redactor>> = RwLock::new(None);

/// Makes diesel's own connection events — every connection attempt, with the URL libpq is
/// given, and its failure if it fails — print on stderr for `--echo`, scrubbed by `redactor`
/// (which should know every URL in play). Process-wide: it installs diesel's default
/// instrumentation, which each new connection starts with until
/// [`DbConnectionManager`](super::DbConnectionManager) puts its own in place (so statements
/// are printed once).
pub fn echo_connection_events(redactor: Redactor) -> Result<(), DbError> {
    *CONNECTION_ECHO
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(redactor);
    diesel::connection::set_default_instrumentation(|| {
        let redactor = CONNECTION_ECHO
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()?;
        Some(Box::new(ConnectionEcho(redactor)))
    })?;
    Ok(())
}

/// Diesel's default instrumentation while [`echo_connection_events`] is on.
struct ConnectionEcho(Redactor);

impl Instrumentation for ConnectionEcho {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        echo_event(&self.0, &event);
    }
}
