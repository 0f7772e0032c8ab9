//! The sync driver: attempts on connections from a [`ConnectionSource`], each step decided by
//! [`protocol::decide`], every step a `tracing` event on [`RETRY_TARGET`](crate::RETRY_TARGET).

use crate::classify::{classify, cockroach_retry_reason, sqlstate, ErrorClass};
use crate::connection::{Access, Flavor, RetryConnection, SERIALIZABLE};
use crate::error::{DatabaseErrorSource, TransactionError};
use crate::policy::RetryPolicy;
use crate::protocol::{self, decide, Next, Outcome, Stage, Step};
use crate::source::ConnectionSource;
use crate::RETRY_TARGET as TARGET;
use std::time::{Duration, Instant};
use tracing::field::display;

/// A committed transaction's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed<T> {
    /// What the work returned on the attempt that committed.
    pub value: T,
    /// How many times the work ran (1 = no retry).
    pub attempts: u32,
}

impl<T> Committed<T> {
    /// Retries needed before the commit (`attempts - 1`).
    pub fn retries(&self) -> u32 {
        self.attempts - 1
    }
}

/// How the work is wrapped in a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// An explicit transaction that may write: BEGIN, the work, COMMIT.
    ReadWrite,
    /// An explicit `READ ONLY` transaction (a deferred `BEGIN` on SQLite).
    ReadOnly,
    /// One statement, its own implicit transaction: it commits when it succeeds.
    SingleStatement,
}

impl Shape {
    /// The access of its explicit transaction; `None` for a single statement.
    fn access(self) -> Option<Access> {
        match self {
            Shape::ReadWrite => Some(Access::ReadWrite),
            Shape::ReadOnly => Some(Access::ReadOnly),
            Shape::SingleStatement => None,
        }
    }
}

/// A "did it commit?" check: the committed value if the work's effect is there.
pub(crate) type Probe<'p, C, T, E> = Option<&'p mut dyn FnMut(&mut C) -> Result<Option<T>, E>>;

/// How often a probe is tried before giving up, if the settle budget has not run out first.
const PROBE_TRIES: u32 = 10;

/// The database error's message on one line, for the `error` field.
fn one_line(error: &dyn std::fmt::Display) -> String {
    error
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Milliseconds, to the microsecond.
fn millis(wait: Duration) -> f64 {
    (wait.as_secs_f64() * 1e6).round() / 1e3
}

/// Runs `work` until it commits or the protocol says stop (see the [crate documentation](crate)).
pub(crate) fn run<S, T, E, F>(
    mut source: S,
    policy: &RetryPolicy,
    mut work: F,
    mut probe: Probe<'_, S::Connection, T, E>,
    shape: Shape,
) -> Result<Committed<T>, TransactionError<E>>
where
    S: ConnectionSource,
    F: FnMut(&mut S::Connection) -> Result<T, E>,
    E: DatabaseErrorSource,
{
    let mode = match shape {
        Shape::ReadWrite => "read_write",
        Shape::ReadOnly => "read_only",
        Shape::SingleStatement => "single_statement",
    };
    let span = tracing::debug_span!(
        target: TARGET,
        "run_transaction",
        mode,
        flavor = tracing::field::Empty
    );
    let _in_span = span.enter();
    let (known_flavor, vouched) = (source.flavor(), source.sessions_are_serializable());
    let mut attempts = 0;
    // Set once a commit's outcome was unknown and the probe did not find it: that commit may
    // still land late, so from then on giving up means "unknown", never "failed".
    let mut unknown: Option<E> = None;
    let error = 'connections: loop {
        let mut conn = match checkout(&mut source, policy) {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(target: TARGET, error = %one_line(&error), "no database connection");
                break TransactionError::Connection { attempts, error };
            }
        };
        let flavor = known_flavor.unwrap_or_else(|| conn.default_flavor());
        span.record("flavor", display(flavor));
        // A CockroachDB transaction kept open across retries (`cockroach_restart`).
        let mut kept_open = false;
        // The shape on this connection; a single statement's waits until its session's
        // isolation is known, unless the source vouches for it.
        let mut shape_here = (shape != Shape::SingleStatement || vouched).then_some(shape);
        loop {
            attempts += 1;
            tracing::trace!(target: TARGET, attempt = attempts, "attempt");
            let tried = attempt(&mut *conn, flavor, &mut shape_here, kept_open, &mut work);
            let (stage, cause) = match tried {
                Ok(value) => {
                    tracing::debug!(
                        target: TARGET, attempts, flavor = %flavor,
                        "transaction committed",
                    );
                    return Ok(Committed { value, attempts });
                }
                Err(failed) => failed,
            };
            let db_error = cause.database_error();
            let class = db_error.map(classify);
            let open = stage == Stage::Commit && conn.in_transaction(); // a failed RELEASE
            let outcome = Outcome::Failed { stage, class, open };
            let step = decide(flavor, outcome, attempts, policy);
            // The fields of the event that says what happens next.
            let code = db_error.and_then(sqlstate);
            let code = code.as_ref().map(|code| code.as_str());
            let text = db_error.map(|error| display(one_line(error)));
            let reason = db_error.and_then(cockroach_retry_reason);
            let next = match step {
                Step::Retry(Next::SameTransaction) if conn.rollback_to_restart().is_ok() => {
                    Next::SameTransaction
                }
                Step::Retry(Next::SameTransaction | Next::NewTransaction) => {
                    conn.rollback();
                    Next::NewTransaction
                }
                Step::Retry(Next::NewConnection) => {
                    conn.discard();
                    Next::NewConnection
                }
                Step::Exhausted => {
                    conn.rollback();
                    tracing::warn!(
                        target: TARGET, attempts, sqlstate = code, reason, flavor = %flavor,
                        error = text,
                        "retries exhausted; giving up",
                    );
                    break 'connections TransactionError::RetriesExhausted {
                        attempts,
                        last: cause,
                    };
                }
                Step::Fail | Step::Unknown => {
                    conn.rollback();
                    tracing::debug!(
                        target: TARGET, attempt = attempts, sqlstate = code, flavor = %flavor,
                        error = text,
                        "transaction failed; not retryable",
                    );
                    break 'connections TransactionError::Failed { attempts, cause };
                }
                Step::Settle { discard } => {
                    tracing::warn!(
                        target: TARGET, attempt = attempts, sqlstate = code, flavor = %flavor,
                        error = text, probe = probe.is_some(),
                        "commit outcome unknown",
                    );
                    if discard {
                        conn.discard();
                    } else {
                        conn.rollback();
                    }
                    drop(conn); // the probe needs a connection from the pool
                    let probe = probe.as_deref_mut();
                    match settle(&mut source, policy, probe, Some((flavor, class)), attempts) {
                        Settled::Committed(value) => return Ok(Committed { value, attempts }),
                        Settled::RunAgain => {
                            unknown = Some(cause);
                            continue 'connections; // not committed (yet): again, on a fresh one
                        }
                        Settled::Unknown => {
                            return Err(TransactionError::AmbiguousCommit { attempts, cause })
                        }
                    }
                }
            };
            let wait = if next == Next::SameTransaction {
                Duration::ZERO
            } else {
                policy.backoff(attempts)
            };
            tracing::info!(
                target: TARGET, attempt = attempts, sqlstate = code, reason, next = next.name(),
                backoff_ms = millis(wait), flavor = %flavor, error = text,
                "retrying transaction",
            );
            if next == Next::NewConnection {
                drop(conn); // back to the pool, which drops it: it is marked broken
                std::thread::sleep(wait);
                continue 'connections;
            }
            std::thread::sleep(wait);
            kept_open = next == Next::SameTransaction;
        }
    };
    // Giving up after an unknown outcome: that commit may have landed late (and made this
    // attempt fail on its key), so the probe is asked once more; never reported as `error`.
    let Some(cause) = unknown else {
        return Err(error);
    };
    match settle(&mut source, policy, probe, None, attempts) {
        Settled::Committed(value) => Ok(Committed { value, attempts }),
        _ => Err(TransactionError::AmbiguousCommit { attempts, cause }),
    }
}

/// A connection for the next attempt; a wait for it ends at the policy's deadline.
fn checkout<'s, S: ConnectionSource>(
    source: &'s mut S,
    policy: &RetryPolicy,
) -> Result<S::Checkout<'s>, crate::PoolError> {
    match policy.until_deadline() {
        Some(left) => source.checkout_within(left),
        None => source.checkout(),
    }
}

/// One attempt of `work` on `conn`: its value if it committed, or where and with what it failed.
/// `open`: a CockroachDB transaction is still open from the previous attempt, so no BEGIN.
/// Work that is one statement runs alone, unless the session would not run it at
/// SERIALIZABLE (an implicit transaction takes `default_transaction_isolation`, READ COMMITTED
/// on PostgreSQL unless set, usable on CockroachDB from 24.1: cockroachdb/docs
/// `releases/v24.1/v24.1.0.md`) and the source does not vouch for its sessions: then it runs
/// in an explicit SERIALIZABLE transaction, decided once per connection (`shape_here`, `None`
/// until then).
fn attempt<C, T, E, F>(
    conn: &mut C,
    flavor: Flavor,
    shape_here: &mut Option<Shape>,
    open: bool,
    work: &mut F,
) -> Result<T, (Stage, E)>
where
    C: RetryConnection,
    F: FnMut(&mut C) -> Result<T, E>,
    E: DatabaseErrorSource,
{
    let shape = match *shape_here {
        Some(decided) => decided,
        None => {
            let isolation = conn
                .default_isolation()
                .map_err(|e| (Stage::Begin, E::from(e)))?;
            if isolation == SERIALIZABLE {
                Shape::SingleStatement
            } else {
                tracing::debug!(
                    target: TARGET, isolation,
                    "single statement sent in a SERIALIZABLE transaction",
                );
                Shape::ReadWrite
            }
        }
    };
    *shape_here = Some(shape);
    let Some(access) = shape.access() else {
        return work(conn).map_err(|cause| (Stage::Statement, cause));
    };
    if !open {
        conn.begin(flavor, access)
            .map_err(|e| (Stage::Begin, E::from(e)))?;
    }
    let value = work(conn).map_err(|cause| (Stage::Work, cause))?;
    conn.commit(flavor)
        .map_err(|e| (Stage::Commit, E::from(e)))?;
    Ok(value)
}

/// What settling an unknown commit outcome found.
enum Settled<T> {
    /// It committed; the value the probe read back.
    Committed(T),
    /// It did not commit (yet): the work runs again, on a fresh connection (after the wait).
    RunAgain,
    /// No answer, or none that allows running again: the outcome stays unknown.
    Unknown,
}

/// Settles attempt `attempts`'s unknown outcome with `probe`, and says so in an event. `cause`:
/// the flavour and the class of the error that left it unknown, to decide whether the work may
/// run again if the probe does not find it; `None` when giving up after an earlier unknown
/// outcome, when only finding the commit changes the answer.
fn settle<S, T, E, P>(
    source: &mut S,
    policy: &RetryPolicy,
    probe: Option<&mut P>,
    cause: Option<(Flavor, Option<ErrorClass>)>,
    attempts: u32,
) -> Settled<T>
where
    S: ConnectionSource,
    E: DatabaseErrorSource,
    P: FnMut(&mut S::Connection) -> Result<Option<T>, E> + ?Sized,
{
    let settled = "commit outcome settled by the probe";
    let found = ask_probe(source, policy, probe);
    if let Some(Some(value)) = found {
        tracing::info!(target: TARGET, attempt = attempts, outcome = "committed", "{settled}");
        return Settled::Committed(value);
    }
    if let (Some(None), Some((flavor, class))) = (found, cause) {
        let again = decide(flavor, Outcome::NotFound { class }, attempts, policy);
        if matches!(again, Step::Retry(_)) {
            let wait = policy.backoff(attempts);
            tracing::info!(
                target: TARGET, attempt = attempts, outcome = "not_committed",
                backoff_ms = millis(wait), "{settled}"
            );
            std::thread::sleep(wait);
            return Settled::RunAgain;
        }
        // CockroachDB's timeout stopped it: not retried, and a late commit may still land.
        if class == Some(ErrorClass::CockroachTimeout) {
            tracing::info!(
                target: TARGET, attempt = attempts, outcome = "not_committed", "{settled}"
            );
            return Settled::Unknown;
        }
    }
    tracing::warn!(target: TARGET, attempt = attempts, "commit outcome could not be settled");
    Settled::Unknown
}

/// Asks `probe`, if there is one, on a fresh connection whether the work committed, at most
/// [`PROBE_TRIES`] times within `policy.settle_timeout`: no wait for a connection, and no pause
/// between tries, goes past it. `Some(found)`, or `None`: no answer.
fn ask_probe<S, T, E, P>(
    source: &mut S,
    policy: &RetryPolicy,
    probe: Option<&mut P>,
) -> Option<Option<T>>
where
    S: ConnectionSource,
    E: DatabaseErrorSource,
    P: FnMut(&mut S::Connection) -> Result<Option<T>, E> + ?Sized,
{
    let probe = probe?;
    let budget_ends = Instant::now() + policy.settle_timeout;
    let left = || budget_ends.saturating_duration_since(Instant::now());
    for round in 1..=PROBE_TRIES {
        if left().is_zero() {
            tracing::warn!(
                target: TARGET, rounds = round - 1,
                settle_timeout_ms = millis(policy.settle_timeout),
                "settle budget spent; the commit probe got no answer",
            );
            return None;
        }
        let wait = policy.backoff(round);
        let (code, error) = match source.checkout_within(left()) {
            Ok(mut conn) => match probe(&mut conn) {
                Ok(found) => return Some(found),
                Err(error) => {
                    let db_error = error.database_error()?;
                    if protocol::probe_again(Some(classify(db_error)))? {
                        conn.discard();
                    }
                    (sqlstate(db_error), one_line(db_error))
                }
            },
            Err(error) => (None, one_line(&error)),
        };
        tracing::debug!(
            target: TARGET, round, sqlstate = code.as_ref().map(|code| code.as_str()),
            backoff_ms = millis(wait), error = %error,
            "commit probe failed; trying again",
        );
        std::thread::sleep(wait.min(left()));
    }
    None
}
