//! One attempt: begin (unless a CockroachDB transaction is still open from the last one), run
//! the work, commit — and what its outcome means for the next.

use super::connection::{Access, CommitError, RetryConnection};
use super::error::DatabaseErrorSource;
use crate::db::{classify, ErrorClass, Flavor};
use diesel::result::Error as DieselError;

/// How one attempt ended.
pub(super) enum Attempt<T, E> {
    /// Committed; the work's value.
    Committed(T),
    /// Not committed, and worth another try, where `next` says.
    Retry { cause: E, next: Next },
    /// The commit was sent and its outcome is unknown.
    Ambiguous(DieselError),
    /// Not committed, and retrying cannot help.
    Failed(E),
}

/// Where the next attempt runs.
pub(super) enum Next {
    /// CockroachDB: roll back to `cockroach_restart` and go again at once.
    SameTransaction,
    /// Roll back, wait, begin again on this connection.
    NewTransaction,
    /// The connection is gone: wait, take a fresh one, begin again.
    NewConnection,
}

/// Runs one attempt of `work` on `conn`. `open`: a CockroachDB transaction is still open from
/// the previous attempt (rolled back to its savepoint), so no BEGIN.
pub(super) fn attempt<C, T, E, F>(
    conn: &mut C,
    flavor: Flavor,
    access: Access,
    open: bool,
    work: &mut F,
) -> Attempt<T, E>
where
    C: RetryConnection,
    F: FnMut(&mut C) -> Result<T, E>,
    E: DatabaseErrorSource,
{
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
        Err(CommitError::Ambiguous(error)) => Attempt::Ambiguous(error),
        Err(CommitError::Failed(error)) => Attempt::Failed(E::from(error)),
    }
}

/// The outcome of an error met before the commit was sent; `class` is that of the database
/// error inside `cause`, if it holds one.
fn before_commit<T, E>(class: Option<ErrorClass>, cause: E) -> Attempt<T, E> {
    match class {
        Some(ErrorClass::Retryable) => Attempt::Retry {
            cause,
            next: Next::NewTransaction,
        },
        Some(ErrorClass::ConnectionLost) => Attempt::Retry {
            cause,
            next: Next::NewConnection,
        },
        _ => Attempt::Failed(cause),
    }
}
