//! One attempt: begin (unless a CockroachDB transaction is still open from the last one), run
//! the work, commit — and what its outcome means for the next. Work that is one statement runs
//! as its own implicit transaction instead, with no BEGIN or COMMIT.

use super::connection::{Access, CommitError, RetryConnection, SERIALIZABLE};
use super::error::DatabaseErrorSource;
use super::report;
use crate::db::{classify, ErrorClass, Flavor};

/// How one attempt ended.
pub(super) enum Attempt<T, E> {
    /// Committed; the work's value.
    Committed(T),
    /// Not committed, and worth another try, where `next` says.
    Retry { cause: E, next: Next },
    /// The commit was sent and its outcome is unknown.
    Ambiguous(E),
    /// Not committed, and retrying cannot help.
    Failed(E),
}

/// Where the next attempt runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// CockroachDB: roll back to `cockroach_restart` and go again at once (for the first
    /// `immediate_retries`; later ones begin anew, see `run::next_for_retry`).
    SameTransaction,
    /// Roll back, wait, begin again on this connection.
    NewTransaction,
    /// The connection is gone: wait, take a fresh one, begin again.
    NewConnection,
}

/// How the work is wrapped in a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// In an explicit transaction: BEGIN (with this access), the work, COMMIT.
    Explicit(Access),
    /// The work is one statement, which is its own implicit transaction: sent alone, it
    /// commits when it succeeds — one round trip, and on CockroachDB retried by the server
    /// itself when it meets a conflict.
    SingleStatement,
}

impl Shape {
    /// Its name in `run_transaction`'s tracing span: `read_write`, `read_only` or
    /// `single_statement`.
    pub(super) fn name(self) -> &'static str {
        match self {
            Shape::Explicit(Access::ReadWrite) => "read_write",
            Shape::Explicit(Access::ReadOnly) => "read_only",
            Shape::SingleStatement => "single_statement",
        }
    }
}

/// The shape work asked to run in as `shape` runs in on `conn`: the same, except that work that
/// is one statement runs in an explicit SERIALIZABLE transaction when a statement sent on its
/// own would not be SERIALIZABLE — an implicit transaction takes the session's
/// `default_transaction_isolation`, READ COMMITTED on PostgreSQL unless set otherwise, and
/// usable on CockroachDB from 24.1 (cockroachdb/docs `releases/v24.1/v24.1.0.md`:
/// `sql.txn.read_committed_isolation.enabled` is now true by default). The session is asked
/// (one round trip) unless `vouched`: the source's sessions are known to be SERIALIZABLE
/// (roachbank's own), so the one-statement fast path costs them nothing. An error asking is the
/// attempt's outcome, as if it had failed before its commit.
pub(super) fn shape_on<C, T, E>(
    conn: &mut C,
    shape: Shape,
    vouched: bool,
) -> Result<Shape, Attempt<T, E>>
where
    C: RetryConnection,
    E: DatabaseErrorSource,
{
    if shape != Shape::SingleStatement || vouched {
        return Ok(shape);
    }
    match conn.default_isolation() {
        Ok(isolation) if isolation == SERIALIZABLE => Ok(shape),
        Ok(isolation) => {
            report::single_statement_in_transaction(&isolation);
            Ok(Shape::Explicit(Access::ReadWrite))
        }
        Err(error) => Err(before_commit(Some(classify(&error)), E::from(error))),
    }
}

/// Runs one attempt of `work` on `conn`. `open`: a CockroachDB transaction is still open from
/// the previous attempt (rolled back to its savepoint), so no BEGIN.
pub(super) fn attempt<C, T, E, F>(
    conn: &mut C,
    flavor: Flavor,
    shape: Shape,
    open: bool,
    work: &mut F,
) -> Attempt<T, E>
where
    C: RetryConnection,
    F: FnMut(&mut C) -> Result<T, E>,
    E: DatabaseErrorSource,
{
    let access = match shape {
        Shape::Explicit(access) => access,
        Shape::SingleStatement => return single_statement(conn, work),
    };
    if !open {
        if let Err(error) = conn.begin(flavor, access) {
            return before_commit(Some(classify(&error)), E::from(error));
        }
    }
    let value = match work(conn) {
        Ok(value) => value,
        Err(cause) => {
            return match before_commit(cause.database_error().map(classify), cause) {
                Attempt::Retry {
                    cause,
                    next: Next::NewTransaction,
                } if flavor == Flavor::CockroachDb => Attempt::Retry {
                    cause,
                    next: Next::SameTransaction,
                },
                outcome => outcome,
            };
        }
    };
    match conn.commit(flavor) {
        Ok(()) => Attempt::Committed(value),
        Err(CommitError::Conflict(error)) => Attempt::Retry {
            cause: E::from(error),
            next: if flavor == Flavor::CockroachDb && conn.in_transaction() {
                Next::SameTransaction
            } else {
                Next::NewTransaction
            },
        },
        Err(CommitError::Ambiguous(error)) => Attempt::Ambiguous(E::from(error)),
        Err(CommitError::Failed(error)) => Attempt::Failed(E::from(error)),
    }
}

/// One attempt of work that is a single statement: the statement is the transaction, so an
/// error that leaves its outcome open (the connection lost while it ran, 40003, CockroachDB's
/// 57014, which it puts in place of whatever the statement met — its auto-commit included) is
/// an unknown commit, and a conflict has already rolled it back.
fn single_statement<C, T, E, F>(conn: &mut C, work: &mut F) -> Attempt<T, E>
where
    F: FnMut(&mut C) -> Result<T, E>,
    E: DatabaseErrorSource,
{
    match work(conn) {
        Ok(value) => Attempt::Committed(value),
        Err(cause) => match cause.database_error().map(classify) {
            Some(
                ErrorClass::Ambiguous
                | ErrorClass::ConnectionLost
                | ErrorClass::CockroachTimeout
                | ErrorClass::CockroachCancel,
            ) => Attempt::Ambiguous(cause),
            class => before_commit(class, cause),
        },
    }
}

/// The outcome of an error met before the commit was sent; `class` is that of the database
/// error inside `cause`, if it holds one. Nothing was committed: a conflict goes again, a lost
/// connection — or CockroachDB's cancel, a draining node's (see
/// [`ErrorClass::CockroachCancel`]) — goes again on a fresh one; a timeout, like any other
/// error, fails.
fn before_commit<T, E>(class: Option<ErrorClass>, cause: E) -> Attempt<T, E> {
    match class {
        Some(ErrorClass::Retryable) => Attempt::Retry {
            cause,
            next: Next::NewTransaction,
        },
        Some(ErrorClass::ConnectionLost | ErrorClass::CockroachCancel) => Attempt::Retry {
            cause,
            next: Next::NewConnection,
        },
        _ => Attempt::Failed(cause),
    }
}

/// Leaves `conn` after an attempt whose commit outcome is unknown because of `cause`: a lost
/// connection is discarded ([`RetryConnection::discard`]), so that a pool drops it (Diesel marks
/// one lost outside a transaction as nothing), and so is one CockroachDB canceled (a draining
/// node closes it next); one still alive (40003, a timeout) is only rolled back
/// ([`RetryConnection::roll_back`]).
pub(super) fn roll_back_or_discard<C, E>(conn: &mut C, cause: &E)
where
    C: RetryConnection,
    E: DatabaseErrorSource,
{
    match cause.database_error().map(classify) {
        Some(ErrorClass::ConnectionLost | ErrorClass::CockroachCancel) => conn.discard(),
        _ => conn.roll_back(),
    }
}

/// Whether the work may run again after its commit's outcome was unknown because of `cause`
/// and the probe did not find it: yes, but not when CockroachDB's statement (or transaction)
/// timeout stopped it — the caller's bound, never retried, before the commit point or on it.
/// Its outcome then stays unknown: a commit in flight when the timeout fired may still land.
pub(super) fn runs_again_if_not_found<E: DatabaseErrorSource>(cause: &E) -> bool {
    cause.database_error().map(classify) != Some(ErrorClass::CockroachTimeout)
}
