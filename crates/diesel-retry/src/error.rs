//! What a retried transaction returns — [`Committed`], or the typed [`TransactionError`] — and
//! the trait that lets a caller's own error type carry a database error.

use diesel::result::Error as DieselError;

/// Why no connection could be had: r2d2's error (`diesel::r2d2::PoolError`) with the `r2d2`
/// feature; without it no source fails to give one.
#[cfg(feature = "r2d2")]
pub type PoolError = diesel::r2d2::PoolError;
/// Why no connection could be had: r2d2's error (`diesel::r2d2::PoolError`) with the `r2d2`
/// feature; without it no source fails to give one.
#[cfg(not(feature = "r2d2"))]
pub type PoolError = std::convert::Infallible;

/// A transaction that did not commit (or whose commit cannot be confirmed). Every variant
/// says how many attempts were made.
///
/// `P` is the error of the source that gives connections: r2d2's by default.
#[derive(Debug, thiserror::Error)]
pub enum TransactionError<E, P = PoolError> {
    /// The work (or the database) failed with an error that retrying cannot fix, possibly
    /// after retries of earlier conflicts. The transaction was rolled back; the error is
    /// returned unchanged.
    #[error("{cause}")]
    Failed {
        /// Attempts made, the failed one included.
        attempts: u32,
        /// The error, unchanged.
        cause: E,
    },
    /// Every allowed attempt failed with a retryable error; the last one is kept.
    #[error("gave up after {attempts} attempts; last error: {last}")]
    RetriesExhausted {
        /// Attempts made (the first run plus every retry).
        attempts: u32,
        /// The error of the last attempt.
        last: E,
    },
    /// The commit was sent but its outcome is unknown: the connection was lost during
    /// `RELEASE SAVEPOINT`/`COMMIT`, or CockroachDB answered 40003 "result is ambiguous" or
    /// 57014 (a cancel or timeout, which it puts in place of a commit that went through too) —
    /// and, with a probe, the probe could not settle it, or found nothing after a timeout,
    /// which is not retried. The work may or may not have been applied — once at most; it is
    /// never retried blindly.
    #[error("commit outcome unknown after {attempts} attempts (the transaction may or may not have been applied): {cause}")]
    AmbiguousCommit {
        /// Attempts made, the ambiguous one included.
        attempts: u32,
        /// What the commit failed with.
        cause: E,
    },
    /// No connection could be had from the pool (before any attempt, or for a retry).
    #[error("no database connection: {error}")]
    Connection {
        /// Attempts made before (0 if none could start).
        attempts: u32,
        /// The pool's error.
        #[source]
        error: P,
    },
}

impl<E, P> TransactionError<E, P> {
    /// The number of attempts made.
    pub fn attempts(&self) -> u32 {
        match self {
            TransactionError::Failed { attempts, .. }
            | TransactionError::RetriesExhausted { attempts, .. }
            | TransactionError::AmbiguousCommit { attempts, .. }
            | TransactionError::Connection { attempts, .. } => *attempts,
        }
    }

    /// The same outcome with the source's error `error` in place of `P` (which is `()` in
    /// what the protocol decides).
    pub(crate) fn with_source_error<Q>(self, error: impl FnOnce() -> Q) -> TransactionError<E, Q> {
        match self {
            TransactionError::Failed { attempts, cause } => {
                TransactionError::Failed { attempts, cause }
            }
            TransactionError::RetriesExhausted { attempts, last } => {
                TransactionError::RetriesExhausted { attempts, last }
            }
            TransactionError::AmbiguousCommit { attempts, cause } => {
                TransactionError::AmbiguousCommit { attempts, cause }
            }
            TransactionError::Connection { attempts, .. } => TransactionError::Connection {
                attempts,
                error: error(),
            },
        }
    }
}

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

/// An error type a transaction's work may return: it can hold a database error, and it tells
/// [`run_transaction`](crate::run_transaction) which database error (if any) it holds, so
/// that retryable ones are retried whatever the caller wrapped them in.
pub trait DatabaseErrorSource: From<DieselError> {
    /// The database error inside, if this error is one.
    fn database_error(&self) -> Option<&DieselError>;
}

impl DatabaseErrorSource for DieselError {
    fn database_error(&self) -> Option<&DieselError> {
        Some(self)
    }
}
