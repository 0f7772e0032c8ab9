//! What to do after each outcome of an attempt — retry in the same transaction, begin again,
//! take a new connection, settle an unknown commit, give up — decided here, with no I/O, for
//! any driver (the sync one in [`crate::run`]; an async one would call the same functions).

use crate::classify::ErrorClass;
use crate::connection::Flavor;
use crate::policy::RetryPolicy;

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
