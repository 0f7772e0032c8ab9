//! The protocol, with no I/O: what to do after each outcome of an attempt — retry in the same
//! transaction, begin again, take a new connection, settle an unknown commit, give up — is
//! [`decide`]d here, and a [`Machine`] turns every answer of the database into the next
//! [`Action`] for a driver to carry out: a driver (the sync one is [`crate::run`]) only runs
//! statements, takes connections and sleeps, as told.

use crate::classify::{classify, cockroach_retry_reason, sqlstate, ErrorClass};
use crate::connection::{Access, Flavor, SERIALIZABLE};
use crate::error::{Committed, DatabaseErrorSource, TransactionError};
use crate::policy::RetryPolicy;
use crate::RETRY_TARGET as TARGET;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tracing::field::display;

/// Where in an attempt its error was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Before the work: asking the session's isolation, `BEGIN`, `SAVEPOINT`.
    Begin,
    /// In the work, inside the transaction.
    Work,
    /// `RELEASE SAVEPOINT` / `COMMIT`: the commit was sent.
    Commit,
    /// Work that is one statement, its own implicit transaction: it was the commit.
    Statement,
}

/// Where the next attempt runs, as the `next` field of the retry event says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// CockroachDB: `ROLLBACK TO SAVEPOINT cockroach_restart` and go again at once.
    SameTransaction,
    /// Roll back, wait, begin again on this connection.
    NewTransaction,
    /// The connection is gone: wait, take a fresh one, begin again.
    NewConnection,
}

impl Next {
    /// The name in tracing events.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Next::SameTransaction => "same_transaction",
            Next::NewTransaction => "new_transaction",
            Next::NewConnection => "new_connection",
        }
    }
}

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Run the work again, where `Next` says.
    Retry(Next),
    /// The commit's outcome is unknown: set the connection aside (discard it if `discard`,
    /// else roll back) and ask the probe.
    Settle {
        /// Whether the connection is done for (lost, or canceled by a draining node).
        discard: bool,
    },
    /// Retryable, but the policy allows no more attempts: roll back, give up.
    Exhausted,
    /// Not retryable: roll back, return the error.
    Fail,
    /// The outcome stays unknown: report [`TransactionError::AmbiguousCommit`](crate::TransactionError::AmbiguousCommit).
    Unknown,
}

/// What happened to attempt number `attempts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It failed at `stage` with an error of `class` (`None`: the work's own error, holding no
    /// database error); `open`: a transaction is still open on the connection after it.
    Failed {
        /// Where.
        stage: Stage,
        /// What the error means.
        class: Option<ErrorClass>,
        /// Whether Diesel still has a transaction open (after a failed `RELEASE`).
        open: bool,
    },
    /// Its commit's outcome was unknown because of an error of `class`, and the probe found
    /// that it had not (yet) committed.
    NotFound {
        /// What the commit failed with.
        class: Option<ErrorClass>,
    },
}

/// The one decision: what follows `outcome` of attempt number `attempts` on `flavor`.
///
/// * A conflict (40001, 40P01, SQLite busy) goes again. On CockroachDB, one in the work or on
///   a `RELEASE` that left the transaction open goes again in the same transaction at once
///   (`ROLLBACK TO SAVEPOINT cockroach_restart`), which keeps its place in line — its record,
///   epoch incremented, its intents, its timestamp pushed (cockroachdb/cockroach
///   `pkg/roachpb/data.go`, `Transaction.Restart`); not a higher priority, since
///   `CanPushWithPriority` (`pkg/kv/kvserver/txnwait/queue.go`) counts normal priorities as
///   equal. Past `immediate_retries` it is rolled back whole and begun again after the
///   backoff, because waiting inside it would hold those intents (sqlalchemy-cockroachdb's
///   issue #188). Elsewhere it begins again.
/// * A lost connection, or CockroachDB's cancel (a draining node's, see
///   [`ErrorClass::CockroachCancel`]), before the commit goes again on a fresh connection.
/// * At the commit point (`RELEASE`/`COMMIT`, or the single statement), a lost connection,
///   40003 and CockroachDB's 57014 leave the outcome unknown: settle it.
/// * After a probe found nothing, the work goes again on a fresh connection — unless
///   CockroachDB's timeout stopped it, the caller's bound, never retried: then a late commit
///   cannot be ruled out, and the outcome stays unknown.
/// * Anything else fails. Every retry is bounded by [`RetryPolicy::may_retry`].
pub(crate) fn decide(
    flavor: Flavor,
    outcome: Outcome,
    attempts: u32,
    policy: &RetryPolicy,
) -> Step {
    use ErrorClass::*;
    let next = match outcome {
        Outcome::NotFound {
            class: Some(CockroachTimeout),
        } => return Step::Unknown,
        Outcome::NotFound { .. } => Next::NewConnection,
        Outcome::Failed { stage, class, open } => match (stage, class) {
            (
                Stage::Commit | Stage::Statement,
                Some(Ambiguous | ConnectionLost | CockroachTimeout | CockroachCancel),
            ) => {
                return Step::Settle {
                    discard: matches!(class, Some(ConnectionLost | CockroachCancel)),
                }
            }
            (Stage::Work, Some(Retryable)) if flavor == Flavor::CockroachDb => {
                Next::SameTransaction
            }
            (Stage::Commit, Some(Retryable)) if flavor == Flavor::CockroachDb && open => {
                Next::SameTransaction
            }
            (_, Some(Retryable)) => Next::NewTransaction,
            (Stage::Begin | Stage::Work, Some(ConnectionLost | CockroachCancel)) => {
                Next::NewConnection
            }
            _ => return Step::Fail,
        },
    };
    match next {
        _ if !policy.may_retry(attempts) => match outcome {
            Outcome::NotFound { .. } => Step::Unknown,
            Outcome::Failed { .. } => Step::Exhausted,
        },
        Next::SameTransaction if attempts > policy.immediate_retries => {
            Step::Retry(Next::NewTransaction)
        }
        next => Step::Retry(next),
    }
}

/// What a failed probe means: `Some(discard)` — ask again (on a fresh connection if
/// `discard`: lost outside a transaction, Diesel does not mark it broken, and a draining
/// CockroachDB node cancels, then closes); `None` — no answer to be had.
pub(crate) fn probe_again(class: Option<ErrorClass>) -> Option<bool> {
    match class? {
        ErrorClass::Retryable => Some(false),
        ErrorClass::ConnectionLost | ErrorClass::CockroachCancel => Some(true),
        _ => None,
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

/// What a driver does next, told by [`Machine::next`]; each is answered with the [`Event`]
/// named beside it.
pub(crate) enum Action<T, E> {
    /// Take a connection, waiting at most `wait` (`None`: as long as the source waits) →
    /// [`Event::Connected`] with its default flavour, or [`Event::NoConnection`].
    Connect {
        /// The longest wait.
        wait: Option<Duration>,
    },
    /// Ask the session's default isolation → [`Event::Isolation`].
    AskIsolation,
    /// Begin the transaction → [`Event::Begun`].
    Begin(Flavor, Access),
    /// Run the work → [`Event::Worked`].
    Work,
    /// Commit → [`Event::Committed`], with whether a transaction is still open if it failed.
    Commit(Flavor),
    /// `ROLLBACK TO SAVEPOINT cockroach_restart` → [`Event::RestartedInPlace`].
    RollbackToRestart,
    /// Roll back whatever is open → [`Event::Done`].
    Rollback,
    /// Roll back and mark the connection broken → [`Event::Done`].
    Discard,
    /// Give the connection back, if one is held → [`Event::Done`].
    Release,
    /// Sleep this long (holding no transaction) → [`Event::Done`].
    Sleep(Duration),
    /// Run the probe → [`Event::Probed`].
    Probe,
    /// The end: the value, or why not (the driver puts its pool's error in `Connection`).
    Finish(Result<Committed<T>, TransactionError<E, ()>>),
}

/// What the database answered to the last [`Action`].
pub(crate) enum Event<T, E> {
    /// The action has no answer (rollback, discard, release, sleep).
    Done,
    /// A connection was taken; this is its [`RetryConnection::default_flavor`](crate::RetryConnection::default_flavor).
    Connected(Flavor),
    /// No connection could be had: the source's error, on one line.
    NoConnection(String),
    /// The session's default isolation, lower case.
    Isolation(Result<String, E>),
    /// The transaction began.
    Begun(Result<(), E>),
    /// What the work returned.
    Worked(Result<T, E>),
    /// The commit, and if it failed, whether a transaction is still open (a failed `RELEASE`).
    Committed(Result<(), (E, bool)>),
    /// Whether `ROLLBACK TO SAVEPOINT cockroach_restart` worked.
    RestartedInPlace(bool),
    /// What the probe found.
    Probed(Result<Option<T>, E>),
}

/// A step the machine takes itself, in order with the actions it queued.
enum Todo<T, E> {
    /// Hand this action to the driver.
    Do(Action<T, E>),
    /// Count and begin a new attempt.
    StartAttempt,
    /// Take a connection, waiting at most what the deadline or the settle budget leaves.
    Connect,
    /// Ask the probe (another round of settling).
    ProbeRound,
}

/// An unknown commit outcome being settled by the probe.
struct Settling<E> {
    /// The error that left it unknown.
    cause: E,
    /// Its class, to decide whether the work may run again if the probe does not find it;
    /// `None` when giving up after an earlier unknown outcome: only finding it changes the answer.
    class: Option<Option<ErrorClass>>,
    /// When the settle budget runs out.
    budget_ends: Instant,
    /// Probe rounds begun.
    round: u32,
}

/// One call of `run_transaction`, as a state machine: fed each [`Event`], it queues the next
/// [`Action`]s and says every step in a `tracing` event on [`RETRY_TARGET`](crate::RETRY_TARGET).
pub(crate) struct Machine<'p, T, E> {
    policy: &'p RetryPolicy,
    shape: Shape,
    /// The source's flavour, if it knows; else each connection's default.
    source_flavor: Option<Flavor>,
    /// Whether the source vouches that its sessions run lone statements at SERIALIZABLE.
    vouched: bool,
    has_probe: bool,
    span: tracing::Span,
    flavor: Flavor,
    attempts: u32,
    /// The shape on this connection; a single statement's waits until its session's isolation
    /// is known, unless the source vouches for it.
    shape_here: Option<Shape>,
    /// A CockroachDB transaction kept open across retries (`cockroach_restart`).
    kept_open: bool,
    stage: Stage,
    /// The work's value, while its commit runs.
    value: Option<T>,
    /// The error of an attempt going again in the same transaction, while it is rolled back.
    restarting: Option<E>,
    /// Set once a commit's outcome was unknown and the probe did not find it: that commit may
    /// still land late, so from then on giving up means "unknown", never "failed".
    unknown: Option<E>,
    settling: Option<Settling<E>>,
    todo: VecDeque<Todo<T, E>>,
}

impl<'p, T, E: DatabaseErrorSource> Machine<'p, T, E> {
    /// A run of `shape` under `policy`; `source_flavor` and `vouched` as the source says.
    pub(crate) fn new(
        policy: &'p RetryPolicy,
        shape: Shape,
        source_flavor: Option<Flavor>,
        vouched: bool,
        has_probe: bool,
    ) -> Self {
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
        Machine {
            policy,
            shape,
            source_flavor,
            vouched,
            has_probe,
            span,
            flavor: source_flavor.unwrap_or(Flavor::PostgreSql),
            attempts: 0,
            shape_here: None,
            kept_open: false,
            stage: Stage::Begin,
            value: None,
            restarting: None,
            unknown: None,
            settling: None,
            todo: VecDeque::from([Todo::Connect]),
        }
    }

    /// The span every event of the run belongs in: a driver runs in it.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The next action: `Connect` first, `Finish` last.
    pub(crate) fn next(&mut self) -> Action<T, E> {
        loop {
            match self
                .todo
                .pop_front()
                .expect("a run always ends with Finish")
            {
                Todo::Do(action) => return action,
                Todo::Connect => {
                    let wait = match &self.settling {
                        Some(settling) => Some(left(settling.budget_ends)),
                        None => self.policy.until_deadline(),
                    };
                    return Action::Connect { wait };
                }
                Todo::StartAttempt => self.start_attempt(),
                Todo::ProbeRound => self.probe_round(),
            }
        }
    }

    /// Takes in the answer to the last action.
    pub(crate) fn answer(&mut self, event: Event<T, E>) {
        match event {
            Event::Done => {}
            Event::Connected(default) if self.settling.is_some() => {
                let _ = default;
                self.then(Action::Probe);
            }
            Event::Connected(default) => {
                self.flavor = self.source_flavor.unwrap_or(default);
                self.span.record("flavor", display(self.flavor));
                self.kept_open = false;
                self.shape_here =
                    (self.shape != Shape::SingleStatement || self.vouched).then_some(self.shape);
                self.todo.push_back(Todo::StartAttempt);
            }
            Event::NoConnection(error) if self.settling.is_some() => {
                self.probe_failed(None, &error);
            }
            Event::NoConnection(error) => {
                tracing::warn!(target: TARGET, error = %error, "no database connection");
                let attempts = self.attempts;
                self.give_up(TransactionError::Connection {
                    attempts,
                    error: (),
                });
            }
            Event::Isolation(Ok(isolation)) => {
                let shape = if isolation == SERIALIZABLE {
                    Shape::SingleStatement
                } else {
                    tracing::debug!(
                        target: TARGET, isolation,
                        "single statement sent in a SERIALIZABLE transaction",
                    );
                    Shape::ReadWrite
                };
                self.shape_here = Some(shape);
                self.run_work(shape);
            }
            Event::Isolation(Err(cause)) | Event::Begun(Err(cause)) => {
                self.failed(Stage::Begin, cause, false)
            }
            Event::Begun(Ok(())) => {
                self.stage = Stage::Work;
                self.then(Action::Work);
            }
            Event::Worked(Ok(value)) if self.stage == Stage::Statement => self.committed(value),
            Event::Worked(Ok(value)) => {
                self.value = Some(value);
                self.stage = Stage::Commit;
                self.then(Action::Commit(self.flavor));
            }
            Event::Worked(Err(cause)) => self.failed(self.stage, cause, false),
            Event::Committed(Ok(())) => {
                let value = self
                    .value
                    .take()
                    .expect("the work's value is kept for its commit");
                self.committed(value);
            }
            Event::Committed(Err((cause, open))) => {
                self.value = None;
                self.failed(Stage::Commit, cause, open);
            }
            Event::RestartedInPlace(restarted) => {
                let cause = self.restarting.take().expect("a restart has its cause");
                if restarted {
                    self.retry(cause, Next::SameTransaction);
                } else {
                    self.then(Action::Rollback);
                    self.retry(cause, Next::NewTransaction);
                }
            }
            Event::Probed(Ok(found)) => {
                self.then(Action::Release);
                self.settled(Some(found));
            }
            Event::Probed(Err(error)) => {
                let db_error = error.database_error();
                match db_error.and_then(|db_error| probe_again(Some(classify(db_error)))) {
                    Some(discard) => {
                        if discard {
                            self.then(Action::Discard);
                        }
                        self.then(Action::Release);
                        let text = one_line(db_error.expect("classified"));
                        self.probe_failed(db_error.and_then(sqlstate), &text);
                    }
                    None => {
                        self.then(Action::Release);
                        self.settled(None);
                    }
                }
            }
        }
    }

    fn then(&mut self, action: Action<T, E>) {
        self.todo.push_back(Todo::Do(action));
    }

    fn finish(&mut self, result: Result<Committed<T>, TransactionError<E, ()>>) {
        self.then(Action::Finish(result));
    }

    fn start_attempt(&mut self) {
        self.attempts += 1;
        tracing::trace!(target: TARGET, attempt = self.attempts, "attempt");
        match self.shape_here {
            // Work that is one statement runs alone, unless the session would not run it at
            // SERIALIZABLE (an implicit transaction takes `default_transaction_isolation`,
            // READ COMMITTED on PostgreSQL unless set, usable on CockroachDB from 24.1:
            // cockroachdb/docs `releases/v24.1/v24.1.0.md`) and the source does not vouch for
            // its sessions: then it runs in an explicit SERIALIZABLE transaction, decided once
            // per connection.
            None => {
                self.stage = Stage::Begin;
                self.then(Action::AskIsolation);
            }
            Some(shape) => self.run_work(shape),
        }
    }

    /// The work in `shape`: alone, or after a BEGIN unless a transaction is kept open.
    fn run_work(&mut self, shape: Shape) {
        match shape.access() {
            None => {
                self.stage = Stage::Statement;
                self.then(Action::Work);
            }
            Some(_) if self.kept_open => {
                self.stage = Stage::Work;
                self.then(Action::Work);
            }
            Some(access) => {
                self.stage = Stage::Begin;
                self.then(Action::Begin(self.flavor, access));
            }
        }
    }

    fn committed(&mut self, value: T) {
        let (attempts, flavor) = (self.attempts, self.flavor);
        tracing::debug!(target: TARGET, attempts, flavor = %flavor, "transaction committed");
        self.finish(Ok(Committed { value, attempts }));
    }

    /// Attempt `self.attempts` failed at `stage` with `cause`; `open`: a transaction is still
    /// open after it (a failed `RELEASE`).
    fn failed(&mut self, stage: Stage, cause: E, open: bool) {
        let db_error = cause.database_error();
        let class = db_error.map(classify);
        let step = decide(
            self.flavor,
            Outcome::Failed { stage, class, open },
            self.attempts,
            self.policy,
        );
        let (attempts, flavor, probe) = (self.attempts, self.flavor, self.has_probe);
        let code = db_error.and_then(sqlstate);
        let code = code.as_ref().map(|code| code.as_str());
        let text = db_error.map(|error| display(one_line(error)));
        let reason = db_error.and_then(cockroach_retry_reason);
        match step {
            Step::Retry(Next::SameTransaction) => {
                self.restarting = Some(cause);
                self.then(Action::RollbackToRestart);
            }
            Step::Retry(Next::NewTransaction) => {
                self.then(Action::Rollback);
                self.retry(cause, Next::NewTransaction);
            }
            Step::Retry(Next::NewConnection) => {
                self.then(Action::Discard);
                self.retry(cause, Next::NewConnection);
            }
            Step::Exhausted => {
                self.then(Action::Rollback);
                tracing::warn!(
                    target: TARGET, attempts, sqlstate = code, reason, flavor = %flavor,
                    error = text,
                    "retries exhausted; giving up",
                );
                self.give_up(TransactionError::RetriesExhausted {
                    attempts,
                    last: cause,
                });
            }
            Step::Fail | Step::Unknown => {
                self.then(Action::Rollback);
                tracing::debug!(
                    target: TARGET, attempt = attempts, sqlstate = code, flavor = %flavor,
                    error = text,
                    "transaction failed; not retryable",
                );
                self.give_up(TransactionError::Failed { attempts, cause });
            }
            Step::Settle { discard } => {
                tracing::warn!(
                    target: TARGET, attempt = attempts, sqlstate = code, flavor = %flavor,
                    error = text, probe,
                    "commit outcome unknown",
                );
                self.then(if discard {
                    Action::Discard
                } else {
                    Action::Rollback
                });
                self.then(Action::Release); // the probe needs a connection from the pool
                self.settle(cause, Some(class));
            }
        }
    }

    /// Goes again after `cause`, where `next` says, after the backoff unless in place.
    fn retry(&mut self, cause: E, next: Next) {
        let wait = if next == Next::SameTransaction {
            Duration::ZERO
        } else {
            self.policy.backoff(self.attempts)
        };
        let db_error = cause.database_error();
        let code = db_error.and_then(sqlstate);
        tracing::info!(
            target: TARGET, attempt = self.attempts,
            sqlstate = code.as_ref().map(|code| code.as_str()),
            reason = db_error.and_then(cockroach_retry_reason), next = next.name(),
            backoff_ms = millis(wait), flavor = %self.flavor,
            error = db_error.map(|error| display(one_line(error))),
            "retrying transaction",
        );
        if next == Next::NewConnection {
            self.then(Action::Release); // the pool drops it: it is marked broken
            self.then(Action::Sleep(wait));
            self.todo.push_back(Todo::Connect);
            return;
        }
        if !wait.is_zero() {
            self.then(Action::Sleep(wait));
        }
        self.kept_open = next == Next::SameTransaction;
        self.todo.push_back(Todo::StartAttempt);
    }

    /// Ends with `error` — unless an earlier commit's outcome was unknown: that commit may have
    /// landed late (and made this attempt fail on its key), so the probe is asked once more,
    /// and the answer is the commit or "unknown", never `error`.
    fn give_up(&mut self, error: TransactionError<E, ()>) {
        match self.unknown.take() {
            Some(cause) => {
                self.then(Action::Release);
                self.settle(cause, None);
            }
            None => self.finish(Err(error)),
        }
    }

    /// Settles the unknown outcome `cause` left with the probe, if there is one.
    fn settle(&mut self, cause: E, class: Option<Option<ErrorClass>>) {
        let budget_ends = Instant::now() + self.policy.settle_timeout;
        let round = 0;
        self.settling = Some(Settling {
            cause,
            class,
            budget_ends,
            round,
        });
        if self.has_probe {
            self.todo.push_back(Todo::ProbeRound);
        } else {
            self.settled(None);
        }
    }

    /// Asks the probe again, on a fresh connection, for as long as the settle budget lasts (a
    /// server that stays reachable but keeps losing connections still gets asked: the budget
    /// alone ends settling, as the policy documents): no wait for a connection, and no pause
    /// between tries, goes past it.
    fn probe_round(&mut self) {
        let settling = self.settling.as_mut().expect("settling");
        settling.round += 1;
        let rounds = settling.round - 1;
        if left(settling.budget_ends).is_zero() {
            tracing::warn!(
                target: TARGET, rounds,
                settle_timeout_ms = millis(self.policy.settle_timeout),
                "settle budget spent; the commit probe got no answer",
            );
            self.settled(None);
        } else {
            self.todo.push_back(Todo::Connect);
        }
    }

    /// A probe round got no answer: `code` and `error` say why.
    fn probe_failed(&mut self, code: Option<diesel::result::SqlState>, error: &str) {
        let settling = self.settling.as_ref().expect("settling");
        let (round, left) = (settling.round, left(settling.budget_ends));
        let wait = self.policy.backoff(round);
        tracing::debug!(
            target: TARGET, round, sqlstate = code.as_ref().map(|code| code.as_str()),
            backoff_ms = millis(wait), error = %error,
            "commit probe failed; trying again",
        );
        self.then(Action::Sleep(wait.min(left)));
        self.todo.push_back(Todo::ProbeRound);
    }

    /// What settling found: `Some(found)`, or `None`: no answer.
    fn settled(&mut self, found: Option<Option<T>>) {
        let Settling { cause, class, .. } = self.settling.take().expect("settling");
        let (attempts, settled) = (self.attempts, "commit outcome settled by the probe");
        match (found, class) {
            (Some(Some(value)), _) => {
                tracing::info!(target: TARGET, attempt = attempts, outcome = "committed", "{settled}");
                return self.finish(Ok(Committed { value, attempts }));
            }
            (Some(None), Some(class)) => {
                let again = decide(
                    self.flavor,
                    Outcome::NotFound { class },
                    attempts,
                    self.policy,
                );
                if matches!(again, Step::Retry(_)) {
                    let wait = self.policy.backoff(attempts);
                    tracing::info!(
                        target: TARGET, attempt = attempts, outcome = "not_committed",
                        backoff_ms = millis(wait), "{settled}"
                    );
                    // Not committed (yet): again, on a fresh connection.
                    self.unknown = Some(cause);
                    self.then(Action::Sleep(wait));
                    self.todo.push_back(Todo::Connect);
                    return;
                }
                // CockroachDB's timeout stopped it: not retried, and a late commit may still land.
                if class == Some(ErrorClass::CockroachTimeout) {
                    tracing::info!(target: TARGET, attempt = attempts, outcome = "not_committed", "{settled}");
                    return self.finish(Err(TransactionError::AmbiguousCommit { attempts, cause }));
                }
            }
            _ => {}
        }
        tracing::warn!(target: TARGET, attempt = attempts, "commit outcome could not be settled");
        self.finish(Err(TransactionError::AmbiguousCommit { attempts, cause }));
    }
}

/// What is left until `end`.
fn left(end: Instant) -> Duration {
    end.saturating_duration_since(Instant::now())
}

/// The database error's message on one line, for the `error` field.
pub(crate) fn one_line(error: &dyn std::fmt::Display) -> String {
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
