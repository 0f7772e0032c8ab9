//! `run_transaction`: run a piece of work in a transaction, retrying it the way each engine
//! needs, so that it commits exactly once or fails with a typed reason.
//!
//! The protocol, per [`Flavor`]:
//!
//! * **CockroachDB** — `BEGIN ISOLATION LEVEL SERIALIZABLE; SAVEPOINT cockroach_restart` (the
//!   savepoint is the first statement). On a retryable error (40001) `ROLLBACK TO SAVEPOINT
//!   cockroach_restart` and run the work again in the same transaction, which keeps its priority
//!   and so makes progress under contention. On success `RELEASE SAVEPOINT cockroach_restart` —
//!   the real commit — then `COMMIT`. RELEASE failing with 40001 is retried like any conflict;
//!   failing any other way that leaves the outcome open (40003, lost connection) is an
//!   [`TransactionError::AmbiguousCommit`].
//! * **PostgreSQL** — `BEGIN ISOLATION LEVEL SERIALIZABLE` (the tutorial's read-then-write
//!   transfer is only safe there). PostgreSQL keeps the snapshot across `ROLLBACK TO SAVEPOINT`,
//!   so a conflict (40001, or deadlock 40P01) rolls the whole transaction back, waits, and
//!   begins a new one.
//! * **SQLite** — `BEGIN IMMEDIATE` takes the write lock up front; busy/locked rolls back,
//!   waits and begins again.
//!
//! Everywhere: the number of attempts is bounded ([`RetryPolicy`]); waits use exponential
//! backoff with full jitter and happen only when no transaction is open (after ROLLBACK, or on a
//! lost connection), so a waiting client never holds locks; a connection lost before the commit
//! was sent is replaced by a fresh pooled one and the work retried; an error that is not
//! retryable is rolled back and returned unchanged after one attempt.
//!
//! The work is a closure that may run more than once and must not commit, roll back or open
//! transactions itself: `run_transaction` owns the transaction.

mod error;
mod policy;

pub use error::{DatabaseErrorSource, TransactionError};
pub use policy::RetryPolicy;

use crate::db::{classify, Database, DbConnection, ErrorClass, Flavor, PooledConnection};
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::result::Error as DieselError;

/// The name of CockroachDB's client-side retry savepoint.
pub const RESTART_SAVEPOINT: &str = "cockroach_restart";

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

/// Runs `work` in a transaction on a connection from `db`'s pool and commits it, retrying as
/// the [module documentation](self) describes, at most `policy.max_retries` times.
///
/// Returns the work's value and the number of attempts, or a [`TransactionError`]:
/// `Failed` (not retryable; rolled back; the error unchanged), `RetriesExhausted`,
/// `AmbiguousCommit` (commit outcome unknown; never retried blindly) or `Connection`.
pub fn run_transaction<T, E, F>(
    db: &Database,
    policy: &RetryPolicy,
    work: F,
) -> Result<Committed<T>, TransactionError<E>>
where
    F: FnMut(&mut DbConnection) -> Result<T, E>,
    E: DatabaseErrorSource,
{
    run(db, policy, work, None, Access::ReadWrite)
}

/// [`run_transaction`] for work that only reads: the transaction is begun `READ ONLY` on
/// CockroachDB and PostgreSQL, and as a plain deferred `BEGIN` on SQLite, whose WAL readers
/// never wait for a writer (where `BEGIN IMMEDIATE` would queue behind every one).
pub fn run_read_only_transaction<T, E, F>(
    db: &Database,
    policy: &RetryPolicy,
    work: F,
) -> Result<Committed<T>, TransactionError<E>>
where
    F: FnMut(&mut DbConnection) -> Result<T, E>,
    E: DatabaseErrorSource,
{
    run(db, policy, work, None, Access::ReadOnly)
}

/// Whether a transaction may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    ReadWrite,
    ReadOnly,
}

/// A "did it commit?" check for [`run_transaction_exactly_once`]: looks, on a fresh connection
/// and outside any transaction the helper opened, for the effect of the work — usually a row
/// under an id the caller chose before the transaction — and returns the committed value if it
/// is there, `None` if it is not.
pub type CommitProbe<'p, T, E> = &'p mut dyn FnMut(&mut DbConnection) -> Result<Option<T>, E>;

/// [`run_transaction`] that resolves an unknown commit outcome instead of reporting it.
///
/// When the commit's outcome is unknown (connection lost during `RELEASE`/`COMMIT`, or 40003),
/// `probe` runs on a fresh connection: if it finds the work's effect, the transaction committed
/// and its value is returned; if not, the work is retried as a new attempt. The work must write
/// something `probe` can find under a key chosen *before* the transaction (a client-chosen id),
/// so that a retry racing a late commit of the lost attempt fails on that key instead of
/// applying the work twice; any failure after an unknown outcome is checked with `probe` again
/// before it is returned. Only if the probe itself cannot get an answer is the result
/// [`TransactionError::AmbiguousCommit`].
pub fn run_transaction_exactly_once<T, E, F, P>(
    db: &Database,
    policy: &RetryPolicy,
    work: F,
    mut probe: P,
) -> Result<Committed<T>, TransactionError<E>>
where
    F: FnMut(&mut DbConnection) -> Result<T, E>,
    P: FnMut(&mut DbConnection) -> Result<Option<T>, E>,
    E: DatabaseErrorSource,
{
    run(db, policy, work, Some(&mut probe), Access::ReadWrite)
}

/// How often a commit probe is tried (on lost connections or conflicts) before giving up.
const PROBE_TRIES: u32 = 10;

fn run<T, E, F>(
    db: &Database,
    policy: &RetryPolicy,
    mut work: F,
    mut probe: Option<CommitProbe<'_, T, E>>,
    access: Access,
) -> Result<Committed<T>, TransactionError<E>>
where
    F: FnMut(&mut DbConnection) -> Result<T, E>,
    E: DatabaseErrorSource,
{
    let flavor = db.flavor();
    let mut conn: Option<PooledConnection> = None;
    let mut open = false; // a CockroachDB transaction kept open across retries
                          // Set once a commit's outcome was unknown and the probe did not find it: that commit may
                          // still land late, so from then on giving up means "unknown", never "failed".
    let mut unknown_outcome: Option<E> = None;
    let mut attempts = 0;
    loop {
        let mut current = match conn.take() {
            Some(current) => current,
            None => match db.pool().get() {
                Ok(fresh) => fresh,
                Err(error) => {
                    return match unknown_outcome {
                        Some(cause) => settle(db, policy, &mut probe, cause, attempts),
                        None => Err(TransactionError::Connection(error)),
                    }
                }
            },
        };
        attempts += 1;
        let outcome = if open {
            run_and_commit(&mut current, flavor, &mut work)
        } else {
            match begin(&mut current, flavor, access) {
                Ok(()) => run_and_commit(&mut current, flavor, &mut work),
                Err(error) => Attempt::before_commit(Some(classify(&error)), E::from(error)),
            }
        };
        let (cause, next) = match outcome {
            Attempt::Committed(value) => return Ok(Committed { value, attempts }),
            Attempt::Ambiguous(error) => {
                abandon(&mut current);
                // Give the connection back before probing: the probe needs one from the pool.
                drop(current);
                let cause = E::from(error);
                let Some(probe) = probe.as_deref_mut() else {
                    return Err(TransactionError::AmbiguousCommit { attempts, cause });
                };
                match resolve(db, policy, probe) {
                    Some(Some(value)) => return Ok(Committed { value, attempts }),
                    Some(None) if policy.may_retry(attempts) => {
                        // Not committed (yet): go again, on a fresh connection, after a wait.
                        unknown_outcome = Some(cause);
                        open = false;
                        std::thread::sleep(policy.backoff(attempts));
                        continue;
                    }
                    _ => return Err(TransactionError::AmbiguousCommit { attempts, cause }),
                }
            }
            Attempt::Failed(error) => {
                abandon(&mut current);
                drop(current);
                return match unknown_outcome {
                    Some(cause) => settle(db, policy, &mut probe, cause, attempts),
                    None => Err(TransactionError::Failed(error)),
                };
            }
            Attempt::Retry { cause, next } => (cause, next),
        };
        if !policy.may_retry(attempts) {
            abandon(&mut current);
            drop(current);
            return match unknown_outcome {
                Some(cause) => settle(db, policy, &mut probe, cause, attempts),
                None => Err(TransactionError::RetriesExhausted {
                    attempts,
                    last: cause,
                }),
            };
        }
        open = match next {
            Next::SameTransaction if rollback_to_restart_savepoint(&mut current).is_ok() => {
                conn = Some(current);
                true
            }
            Next::SameTransaction | Next::NewTransaction => {
                abandon(&mut current);
                conn = Some(current);
                std::thread::sleep(policy.backoff(attempts));
                false
            }
            Next::NewConnection => {
                // The old connection is broken; dropping it lets the pool discard it.
                drop(current);
                std::thread::sleep(policy.backoff(attempts));
                false
            }
        };
    }
}

/// The answer when giving up after an earlier commit's outcome was unknown: that commit may
/// have landed late (and made this attempt fail on its key), so the probe is asked once more.
/// Found: it committed. Otherwise the outcome is reported unknown, never as a failure.
fn settle<T, E>(
    db: &Database,
    policy: &RetryPolicy,
    probe: &mut Option<CommitProbe<'_, T, E>>,
    cause: E,
    attempts: u32,
) -> Result<Committed<T>, TransactionError<E>>
where
    E: DatabaseErrorSource,
{
    match probe
        .as_deref_mut()
        .and_then(|probe| resolve(db, policy, probe))
    {
        Some(Some(value)) => Ok(Committed { value, attempts }),
        _ => Err(TransactionError::AmbiguousCommit { attempts, cause }),
    }
}

/// Runs `probe` on a fresh connection until it answers: `Some(answer)`, or `None` if it could
/// not find out (the server stayed away, or the probe failed for good).
fn resolve<T, E>(
    db: &Database,
    policy: &RetryPolicy,
    probe: &mut dyn FnMut(&mut DbConnection) -> Result<Option<T>, E>,
) -> Option<Option<T>>
where
    E: DatabaseErrorSource,
{
    for round in 1..=PROBE_TRIES {
        if let Ok(mut conn) = db.pool().get() {
            match probe(&mut conn) {
                Ok(answer) => return Some(answer),
                Err(error) => match error.database_error().map(classify) {
                    Some(ErrorClass::Retryable | ErrorClass::ConnectionLost) => {}
                    _ => return None,
                },
            }
        }
        std::thread::sleep(policy.backoff(round));
    }
    None
}

/// How one attempt ended.
enum Attempt<T, E> {
    Committed(T),
    Retry { cause: E, next: Next },
    Ambiguous(DieselError),
    Failed(E),
}

/// Where the next attempt runs.
enum Next {
    /// CockroachDB: roll back to `cockroach_restart` and go again at once.
    SameTransaction,
    /// Roll back, wait, begin again on this connection.
    NewTransaction,
    /// The connection is gone: wait, take a fresh one, begin again.
    NewConnection,
}

impl<T, E> Attempt<T, E> {
    /// The outcome of an error met before the commit was sent; `class` is that of the database
    /// error inside `cause`, if it holds one.
    fn before_commit(class: Option<ErrorClass>, cause: E) -> Self {
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
}

fn begin(conn: &mut DbConnection, flavor: Flavor, access: Access) -> Result<(), DieselError> {
    match conn {
        DbConnection::Postgresql(pg) => {
            AnsiTransactionManager::begin_transaction_sql(
                pg,
                match access {
                    Access::ReadWrite => "BEGIN ISOLATION LEVEL SERIALIZABLE",
                    Access::ReadOnly => "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY",
                },
            )?;
            if flavor == Flavor::CockroachDb {
                if let Err(error) = pg.batch_execute("SAVEPOINT cockroach_restart") {
                    let _ = AnsiTransactionManager::rollback_transaction(pg);
                    return Err(error);
                }
            }
            Ok(())
        }
        DbConnection::Sqlite(sqlite) => AnsiTransactionManager::begin_transaction_sql(
            sqlite,
            match access {
                Access::ReadWrite => "BEGIN IMMEDIATE",
                Access::ReadOnly => "BEGIN",
            },
        ),
    }
}

fn run_and_commit<T, E, F>(conn: &mut DbConnection, flavor: Flavor, work: &mut F) -> Attempt<T, E>
where
    F: FnMut(&mut DbConnection) -> Result<T, E>,
    E: DatabaseErrorSource,
{
    let value = match work(conn) {
        Ok(value) => value,
        Err(cause) => {
            let class = cause.database_error().map(classify);
            let outcome = Attempt::before_commit(class, cause);
            return match (flavor, outcome) {
                (
                    Flavor::CockroachDb,
                    Attempt::Retry {
                        cause,
                        next: Next::NewTransaction,
                    },
                ) => Attempt::Retry {
                    cause,
                    next: Next::SameTransaction,
                },
                (_, outcome) => outcome,
            };
        }
    };
    match commit(conn, flavor) {
        Ok(()) => Attempt::Committed(value),
        Err(CommitError::Conflict(error)) => Attempt::Retry {
            cause: E::from(error),
            next: if flavor == Flavor::CockroachDb && in_transaction(conn) {
                Next::SameTransaction
            } else {
                Next::NewTransaction
            },
        },
        Err(CommitError::Ambiguous(error)) => Attempt::Ambiguous(error),
        Err(CommitError::Failed(error)) => Attempt::Failed(E::from(error)),
    }
}

/// Why a commit did not go through.
enum CommitError {
    /// A conflict that rolled the transaction back (or, on CockroachDB, back to the savepoint).
    Conflict(DieselError),
    /// The outcome is unknown.
    Ambiguous(DieselError),
    /// Anything else; the transaction was not committed.
    Failed(DieselError),
}

fn commit(conn: &mut DbConnection, flavor: Flavor) -> Result<(), CommitError> {
    match conn {
        DbConnection::Postgresql(pg) if flavor == Flavor::CockroachDb => {
            if let Err(error) = pg.batch_execute("RELEASE SAVEPOINT cockroach_restart") {
                return Err(match classify(&error) {
                    ErrorClass::Retryable => CommitError::Conflict(error),
                    ErrorClass::Ambiguous | ErrorClass::ConnectionLost => {
                        CommitError::Ambiguous(error)
                    }
                    ErrorClass::Permanent => CommitError::Failed(error),
                });
            }
            // RELEASE was the commit. COMMIT only closes the transaction; if it fails the data
            // is committed all the same and diesel marks the connection for the pool to drop.
            let _ = AnsiTransactionManager::commit_transaction(pg);
            Ok(())
        }
        DbConnection::Postgresql(pg) => {
            AnsiTransactionManager::commit_transaction(pg).map_err(classify_commit_error)
        }
        DbConnection::Sqlite(sqlite) => {
            AnsiTransactionManager::commit_transaction(sqlite).map_err(classify_commit_error)
        }
    }
}

/// A failed COMMIT: a conflict means the server rolled back (PostgreSQL ends the transaction on
/// a failed COMMIT; diesel rolls SQLite back), a lost connection or 40003 leaves it unknown.
fn classify_commit_error(error: DieselError) -> CommitError {
    match classify(&error) {
        ErrorClass::Retryable => CommitError::Conflict(error),
        ErrorClass::Ambiguous | ErrorClass::ConnectionLost => CommitError::Ambiguous(error),
        ErrorClass::Permanent => CommitError::Failed(error),
    }
}

/// Whether diesel's transaction manager has a transaction open on `conn`.
fn in_transaction(conn: &mut DbConnection) -> bool {
    let depth = match conn {
        DbConnection::Postgresql(pg) => {
            AnsiTransactionManager::transaction_manager_status_mut(pg).transaction_depth()
        }
        DbConnection::Sqlite(sqlite) => {
            AnsiTransactionManager::transaction_manager_status_mut(sqlite).transaction_depth()
        }
    };
    matches!(depth, Ok(Some(_)))
}

fn rollback_to_restart_savepoint(conn: &mut DbConnection) -> Result<(), DieselError> {
    match conn {
        DbConnection::Postgresql(pg) => pg.batch_execute("ROLLBACK TO SAVEPOINT cockroach_restart"),
        DbConnection::Sqlite(_) => Err(DieselError::NotInTransaction),
    }
}

/// Rolls back whatever transaction is open on `conn`. A connection whose rollback fails is left
/// marked broken by diesel, so the pool discards it instead of handing out an open transaction.
fn abandon(conn: &mut DbConnection) {
    if in_transaction(conn) {
        let _ = match conn {
            DbConnection::Postgresql(pg) => AnsiTransactionManager::rollback_transaction(pg),
            DbConnection::Sqlite(sqlite) => AnsiTransactionManager::rollback_transaction(sqlite),
        };
    }
}
