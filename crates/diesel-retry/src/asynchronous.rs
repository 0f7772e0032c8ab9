//! `run_transaction` for async Rust (feature `async`): diesel-async's `AsyncPgConnection` on a
//! `&mut` connection, a bb8 pool (feature `bb8`) or a deadpool pool (feature `deadpool`), with
//! the guarantees of the sync functions — the same protocol, decided by the same machine; only
//! the statements are awaited and the waits are tokio's timer.
//!
//! # Dropping the future
//!
//! A future that is dropped (a timeout, a `select!`, a client gone) never leaves a connection
//! inside a transaction for anyone else: a connection dropped while a statement was in flight
//! or a transaction open is marked broken, so a pool closes it instead of handing it out again
//! (the server then rolls back what was open and frees its locks), and a `&mut` connection
//! refuses further transactions (diesel's `BrokenTransactionManager`) — where diesel-async
//! alone would hand the next caller a connection whose writes go into a transaction nobody
//! commits. bb8 closes such a connection as it is given back; deadpool would keep it until its
//! next checkout, so the driver takes it out of a deadpool pool itself and closes it at once.
//! A `&mut` connection stays open, and so does its transaction on the server, until you drop
//! it: `run_transaction` on it then answers [`TransactionError::Connection`] with
//! `BrokenTransactionManager` at once, as does diesel-async's own `transaction`, but a
//! statement you send on it outside a transaction still goes into the abandoned one.
//!
//! Dropped during the commit (`COMMIT`, CockroachDB's `RELEASE SAVEPOINT cockroach_restart`,
//! or a single statement), the transaction may or may not have committed, and nobody is left
//! to find out. Work that must end exactly once whatever the caller does runs in a task of its
//! own, which a dropped caller does not stop:
//!
//! ```no_run
//! # async fn f(pool: diesel_async::pooled_connection::bb8::Pool<diesel_async::AsyncPgConnection>) {
//! use diesel_retry::{asynchronous::run_transaction, RetryPolicy};
//! let task = tokio::spawn(async move {
//!     run_transaction(&pool, &RetryPolicy::default(), async |conn| {
//!         diesel::sql_query("UPDATE accounts SET balance = balance - 1 WHERE id = 1")
//!             .execute(conn)
//!             .await
//!     })
//!     .await
//! });
//! # use diesel_async::RunQueryDsl;
//! // Dropping `task` here does not stop it: it commits, or fails, on its own.
//! let outcome = task.await;
//! # }
//! ```

use crate::connection::{begin_statement, server_flavor, Access, Flavor};
use crate::connection::{DEFAULT_ISOLATION, VERSION};
use crate::error::{Committed, DatabaseErrorSource, TransactionError};
use crate::policy::RetryPolicy;
use crate::protocol::{one_line, Action, Event, Machine, Shape};
use crate::source::{DetectError, Flavored};
use diesel::result::{Error as DieselError, QueryResult};
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, SimpleAsyncConnection};
use diesel_async::{RunQueryDsl, TransactionManager};
use std::future::{ready, Future, Ready};
use std::ops::DerefMut;
use std::pin::Pin;
use std::time::Duration;
use tracing::Instrument;

/// A diesel-async connection the async driver can run: diesel-async's `AsyncPgConnection`, or
/// your own type delegating to it. The async twin of [`RetryConnection`](crate::RetryConnection).
pub trait AsyncRetryConnection: Send {
    /// The protocol to use when nobody said which engine this is: PostgreSQL's (correct on
    /// CockroachDB too).
    fn default_flavor(&self) -> Flavor;

    /// Which engine is on the other end: `SELECT version()`.
    fn detect_flavor(&mut self) -> impl Future<Output = QueryResult<Flavor>> + Send;

    /// The session's `default_transaction_isolation`, lower case.
    fn default_isolation(&mut self) -> impl Future<Output = QueryResult<String>> + Send;

    /// Begins a transaction as [`RetryConnection::begin`](crate::RetryConnection::begin) does.
    fn begin(
        &mut self,
        flavor: Flavor,
        access: Access,
    ) -> impl Future<Output = QueryResult<()>> + Send;

    /// Commits as [`RetryConnection::commit`](crate::RetryConnection::commit) does.
    fn commit(&mut self, flavor: Flavor) -> impl Future<Output = QueryResult<()>> + Send;

    /// CockroachDB: `ROLLBACK TO SAVEPOINT cockroach_restart`; an error where no transaction is
    /// open.
    fn rollback_to_restart(&mut self) -> impl Future<Output = QueryResult<()>> + Send;

    /// Rolls back whatever transaction is open (a failed rollback leaves the connection marked
    /// broken by diesel-async).
    fn rollback(&mut self) -> impl Future<Output = ()> + Send;

    /// Whether diesel-async's transaction manager has a transaction open.
    fn in_transaction(&mut self) -> bool;

    /// Marks the connection broken, so that a pool closes it instead of handing it out again
    /// and no further transaction runs on it. Not async: it runs when a future is dropped.
    fn mark_broken(&mut self);

    /// Whether the connection is marked broken ([`mark_broken`](Self::mark_broken), or by
    /// diesel-async after a failed rollback): no transaction can run on it again.
    fn is_broken(&mut self) -> bool;
}

impl AsyncRetryConnection for AsyncPgConnection {
    fn default_flavor(&self) -> Flavor {
        Flavor::PostgreSql
    }

    async fn detect_flavor(&mut self) -> QueryResult<Flavor> {
        Ok(server_flavor(&select_text(self, VERSION).await?))
    }

    async fn default_isolation(&mut self) -> QueryResult<String> {
        Ok(select_text(self, DEFAULT_ISOLATION).await?.to_lowercase())
    }

    async fn begin(&mut self, flavor: Flavor, access: Access) -> QueryResult<()> {
        AnsiTransactionManager::begin_transaction_sql(self, begin_statement(flavor, access))
            .await?;
        if flavor == Flavor::CockroachDb {
            if let Err(error) = self.batch_execute("SAVEPOINT cockroach_restart").await {
                self.rollback().await;
                return Err(error);
            }
        }
        Ok(())
    }

    async fn commit(&mut self, flavor: Flavor) -> QueryResult<()> {
        if flavor == Flavor::CockroachDb {
            self.batch_execute("RELEASE SAVEPOINT cockroach_restart")
                .await?;
            let _ = AnsiTransactionManager::commit_transaction(self).await;
            return Ok(());
        }
        AnsiTransactionManager::commit_transaction(self).await
    }

    async fn rollback_to_restart(&mut self) -> QueryResult<()> {
        if !self.in_transaction() {
            return Err(DieselError::NotInTransaction);
        }
        self.batch_execute("ROLLBACK TO SAVEPOINT cockroach_restart")
            .await
    }

    async fn rollback(&mut self) {
        if self.in_transaction() {
            let _ = AnsiTransactionManager::rollback_transaction(self).await;
        }
    }

    fn in_transaction(&mut self) -> bool {
        let status = AnsiTransactionManager::transaction_manager_status_mut(self);
        matches!(status.transaction_depth(), Ok(Some(_)))
    }

    fn mark_broken(&mut self) {
        AnsiTransactionManager::transaction_manager_status_mut(self).set_in_error();
    }

    fn is_broken(&mut self) -> bool {
        let status = AnsiTransactionManager::transaction_manager_status_mut(self);
        status.transaction_depth().is_err()
    }
}

/// `SELECT <expression>`, one text value the server computes.
async fn select_text(conn: &mut AsyncPgConnection, expression: &str) -> QueryResult<String> {
    let query = diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(expression));
    query.get_result(conn).await
}

/// A supply of connections for the async driver: implemented for `&mut C`, `&` a bb8 or
/// deadpool pool of `AsyncPgConnection`, and [`Flavored`]. The async twin of
/// [`ConnectionSource`](crate::ConnectionSource).
pub trait AsyncConnectionSource: Send {
    /// The connection the work runs on.
    type Connection: AsyncRetryConnection;
    /// Why no connection could be had (for a single connection: it is broken).
    type Error: std::fmt::Display;

    /// The engine behind the connections, if the source knows it.
    fn flavor(&self) -> Option<Flavor> {
        None
    }

    /// Whether every session runs a statement sent on its own at SERIALIZABLE (see
    /// [`ConnectionSource::sessions_are_serializable`](crate::ConnectionSource::sessions_are_serializable)).
    fn sessions_are_serializable(&self) -> bool {
        false
    }

    /// A connection for the next attempt, waiting at most `wait` if given (and never longer
    /// than the pool's own timeout).
    fn checkout(&mut self, wait: Option<Duration>) -> Checkout<'_, Self>;
}

/// What [`AsyncConnectionSource::checkout`] returns: a future of a connection handed out for
/// one or more attempts (dropping it gives it back), both boxed — two allocations per
/// connection taken — so that the driver's future holds no type of the source's own and stays
/// `Send` inside `tokio::spawn` for a borrowed source too (`&mut C`, `&Pool`), where rustc's
/// auto-trait check of a generic associated type fails ("implementation of … is not general
/// enough", rust-lang/rust#100013).
pub type Checkout<'s, S> = Pin<
    Box<
        dyn Future<
                Output = Result<
                    Box<
                        dyn DerefMut<Target = <S as AsyncConnectionSource>::Connection> + Send + 's,
                    >,
                    <S as AsyncConnectionSource>::Error,
                >,
            > + Send
            + 's,
    >,
>;

/// The connection itself, for every attempt — unless it is broken (a run on it was dropped
/// mid-transaction, or it was lost): then no attempt can run on it, and none is made
/// (`BrokenTransactionManager`; where a pool would give a fresh connection, retrying on this
/// one could only fail again).
impl<C: AsyncRetryConnection> AsyncConnectionSource for &mut C {
    type Connection = C;
    type Error = DieselError;

    fn checkout(&mut self, _: Option<Duration>) -> Checkout<'_, Self> {
        let conn: &mut C = self;
        if conn.is_broken() {
            return Box::pin(ready(Err(DieselError::BrokenTransactionManager)));
        }
        Box::pin(ready(Ok(Box::new(conn) as _)))
    }
}

#[cfg(feature = "bb8")]
impl AsyncConnectionSource for &diesel_async::pooled_connection::bb8::Pool<AsyncPgConnection> {
    type Connection = AsyncPgConnection;
    type Error = diesel_async::pooled_connection::bb8::RunError;

    fn checkout(&mut self, wait: Option<Duration>) -> Checkout<'_, Self> {
        use diesel_async::pooled_connection::bb8::RunError;
        let pool: &_ = self;
        Box::pin(async move {
            match wait {
                Some(wait) => tokio::time::timeout(wait, pool.get())
                    .await
                    .unwrap_or(Err(RunError::TimedOut)),
                None => pool.get().await,
            }
            .map(|conn| Box::new(conn) as _)
        })
    }
}

#[cfg(feature = "deadpool")]
impl AsyncConnectionSource for &diesel_async::pooled_connection::deadpool::Pool<AsyncPgConnection> {
    type Connection = AsyncPgConnection;
    type Error = diesel_async::pooled_connection::deadpool::PoolError;

    fn checkout(&mut self, wait: Option<Duration>) -> Checkout<'_, Self> {
        use deadpool::managed::{PoolError, TimeoutType};
        let pool: &_ = self;
        Box::pin(async move {
            match wait {
                Some(wait) => tokio::time::timeout(wait, pool.get())
                    .await
                    .unwrap_or(Err(PoolError::Timeout(TimeoutType::Wait))),
                None => pool.get().await,
            }
            .map(|conn| Box::new(DeadpoolConnection(Some(conn))) as _)
        })
    }
}

/// A connection from a deadpool pool, as the driver holds it. deadpool takes a connection
/// given back into its pool unchecked (its `recycle` runs at the next checkout): one that a
/// dropped run left inside a transaction would sit there, its session holding the
/// transaction's locks, until the pool's next checkout — for ever, on a pool nobody asks. So a
/// broken one is taken out of the pool instead (`Object::take`) and closed at once: the server
/// ends its session, rolling back what was open.
#[cfg(feature = "deadpool")]
struct DeadpoolConnection(
    Option<diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>>,
);

#[cfg(feature = "deadpool")]
impl Drop for DeadpoolConnection {
    fn drop(&mut self) {
        use diesel_async::pooled_connection::PoolableConnection;
        if let Some(mut conn) = self.0.take() {
            if PoolableConnection::is_broken(&mut *conn) {
                drop(deadpool::managed::Object::take(conn));
            }
        }
    }
}

#[cfg(feature = "deadpool")]
impl std::ops::Deref for DeadpoolConnection {
    type Target = AsyncPgConnection;

    fn deref(&self) -> &AsyncPgConnection {
        self.0.as_ref().expect("held until dropped")
    }
}

#[cfg(feature = "deadpool")]
impl DerefMut for DeadpoolConnection {
    fn deref_mut(&mut self) -> &mut AsyncPgConnection {
        self.0.as_mut().expect("held until dropped")
    }
}

impl<S: AsyncConnectionSource> AsyncConnectionSource for Flavored<S> {
    type Connection = S::Connection;
    type Error = S::Error;

    fn flavor(&self) -> Option<Flavor> {
        Some(self.flavor)
    }

    fn sessions_are_serializable(&self) -> bool {
        self.source.sessions_are_serializable()
    }

    fn checkout(&mut self, wait: Option<Duration>) -> Checkout<'_, Self> {
        self.source.checkout(wait)
    }
}

impl<S: AsyncConnectionSource> Flavored<S> {
    /// [`Flavored::detect`] for an async source: `SELECT version()` on a connection it hands
    /// out.
    pub async fn detect_async(mut source: S) -> Result<Flavored<S>, DetectError<S::Error>> {
        let mut conn = source
            .checkout(None)
            .await
            .map_err(DetectError::Connection)?;
        let flavor = conn.detect_flavor().await?;
        drop(conn);
        Ok(Flavored::new(source, flavor))
    }
}

/// The probe of the runs that have none.
type NoProbe<C, T, E> = fn(&mut C) -> Ready<Result<Option<T>, E>>;

/// [`run_transaction`](crate::run_transaction), async: `work` runs in a transaction on a
/// connection from `source` and is committed, retried as the [crate documentation](crate)
/// describes. What a dropped future leaves behind: see the [module documentation](self).
pub async fn run_transaction<S, T, E, F>(
    source: S,
    policy: &RetryPolicy,
    work: F,
) -> Result<Committed<T>, TransactionError<E, S::Error>>
where
    S: AsyncConnectionSource,
    F: AsyncFnMut(&mut S::Connection) -> Result<T, E>,
    E: DatabaseErrorSource,
{
    let probe = None::<NoProbe<S::Connection, T, E>>;
    run(source, policy, work, probe, Shape::ReadWrite).await
}

/// [`run_read_only_transaction`](crate::run_read_only_transaction), async.
pub async fn run_read_only_transaction<S, T, E, F>(
    source: S,
    policy: &RetryPolicy,
    work: F,
) -> Result<Committed<T>, TransactionError<E, S::Error>>
where
    S: AsyncConnectionSource,
    F: AsyncFnMut(&mut S::Connection) -> Result<T, E>,
    E: DatabaseErrorSource,
{
    let probe = None::<NoProbe<S::Connection, T, E>>;
    run(source, policy, work, probe, Shape::ReadOnly).await
}

/// [`run_transaction_exactly_once`](crate::run_transaction_exactly_once), async: an unknown
/// commit outcome is settled by `probe` on a fresh connection.
pub async fn run_transaction_exactly_once<S, T, E, F, P>(
    source: S,
    policy: &RetryPolicy,
    work: F,
    probe: P,
) -> Result<Committed<T>, TransactionError<E, S::Error>>
where
    S: AsyncConnectionSource,
    F: AsyncFnMut(&mut S::Connection) -> Result<T, E>,
    P: AsyncFnMut(&mut S::Connection) -> Result<Option<T>, E>,
    E: DatabaseErrorSource,
{
    run(source, policy, work, Some(probe), Shape::ReadWrite).await
}

/// [`run_single_statement`](crate::run_single_statement), async: one statement, its own
/// implicit transaction, at SERIALIZABLE.
pub async fn run_single_statement<S, T, E, F>(
    source: S,
    policy: &RetryPolicy,
    statement: F,
) -> Result<Committed<T>, TransactionError<E, S::Error>>
where
    S: AsyncConnectionSource,
    F: AsyncFnMut(&mut S::Connection) -> Result<T, E>,
    E: DatabaseErrorSource,
{
    let probe = None::<NoProbe<S::Connection, T, E>>;
    run(source, policy, statement, probe, Shape::SingleStatement).await
}

/// [`run_single_statement_exactly_once`](crate::run_single_statement_exactly_once), async.
pub async fn run_single_statement_exactly_once<S, T, E, F, P>(
    source: S,
    policy: &RetryPolicy,
    statement: F,
    probe: P,
) -> Result<Committed<T>, TransactionError<E, S::Error>>
where
    S: AsyncConnectionSource,
    F: AsyncFnMut(&mut S::Connection) -> Result<T, E>,
    P: AsyncFnMut(&mut S::Connection) -> Result<Option<T>, E>,
    E: DatabaseErrorSource,
{
    run(
        source,
        policy,
        statement,
        Some(probe),
        Shape::SingleStatement,
    )
    .await
}

/// Carries out the [`Machine`]'s actions until it finishes.
async fn run<S, T, E, F, P>(
    mut source: S,
    policy: &RetryPolicy,
    mut work: F,
    mut probe: Option<P>,
    shape: Shape,
) -> Result<Committed<T>, TransactionError<E, S::Error>>
where
    S: AsyncConnectionSource,
    F: AsyncFnMut(&mut S::Connection) -> Result<T, E>,
    P: AsyncFnMut(&mut S::Connection) -> Result<Option<T>, E>,
    E: DatabaseErrorSource,
{
    let (flavor, vouched) = (source.flavor(), source.sessions_are_serializable());
    let mut machine = Machine::new(policy, shape, flavor, vouched, probe.is_some());
    let span = machine.span().clone();
    async move {
        let mut source_error = None;
        let mut action = machine.next();
        loop {
            action = match action {
                Action::Connect { wait } => match source.checkout(wait).await {
                    Ok(conn) => {
                        let mut held = Held { conn, busy: false };
                        machine.answer(Event::Connected(held.conn.default_flavor()));
                        on_connection(&mut machine, &mut held, &mut work, &mut probe).await
                    }
                    Err(error) => {
                        machine.answer(Event::NoConnection(one_line(&error)));
                        source_error = Some(error);
                        machine.next()
                    }
                },
                Action::Finish(result) => {
                    return result.map_err(|error| {
                        error.with_source_error(|| source_error.expect("no connection: its error"))
                    })
                }
                Action::Sleep(wait) => {
                    tokio::time::sleep(wait).await;
                    machine.answer(Event::Done);
                    machine.next()
                }
                _ => {
                    machine.answer(Event::Done); // a `Release` with no connection held
                    machine.next()
                }
            };
        }
    }
    .instrument(span)
    .await
}

/// A connection the driver holds. Dropped while `busy` (a statement in flight) or inside a
/// transaction — the caller dropped the future — it is marked broken (see the
/// [module documentation](self)).
struct Held<'s, C: AsyncRetryConnection> {
    /// The checkout (see [`Checkout`]).
    conn: Box<dyn DerefMut<Target = C> + Send + 's>,
    busy: bool,
}

impl<C: AsyncRetryConnection> Drop for Held<'_, C> {
    fn drop(&mut self) {
        if self.busy || self.conn.in_transaction() {
            self.conn.mark_broken();
        }
    }
}

/// Carries out the machine's actions on `held` until it asks for another connection, lets this
/// one go, or finishes; returns that action.
async fn on_connection<C, T, E, F, P>(
    machine: &mut Machine<'_, T, E>,
    held: &mut Held<'_, C>,
    work: &mut F,
    probe: &mut Option<P>,
) -> Action<T, E>
where
    C: AsyncRetryConnection,
    F: AsyncFnMut(&mut C) -> Result<T, E>,
    P: AsyncFnMut(&mut C) -> Result<Option<T>, E>,
    E: DatabaseErrorSource,
{
    loop {
        let action = machine.next();
        held.busy = !matches!(action, Action::Sleep(_));
        let conn = &mut **held.conn;
        let event = match action {
            Action::AskIsolation => {
                Event::Isolation(conn.default_isolation().await.map_err(E::from))
            }
            Action::Begin(flavor, access) => {
                Event::Begun(conn.begin(flavor, access).await.map_err(E::from))
            }
            Action::Work => Event::Worked(work(conn).await),
            Action::Commit(flavor) => match conn.commit(flavor).await {
                Ok(()) => Event::Committed(Ok(())),
                Err(error) => Event::Committed(Err((E::from(error), conn.in_transaction()))),
            },
            Action::RollbackToRestart => {
                Event::RestartedInPlace(conn.rollback_to_restart().await.is_ok())
            }
            Action::Rollback => {
                conn.rollback().await;
                Event::Done
            }
            Action::Discard => {
                conn.rollback().await;
                conn.mark_broken();
                Event::Done
            }
            Action::Sleep(wait) => {
                tokio::time::sleep(wait).await;
                Event::Done
            }
            Action::Probe => {
                let probe = probe.as_mut().expect("settling has a probe");
                Event::Probed(probe(conn).await)
            }
            action @ (Action::Release | Action::Connect { .. } | Action::Finish(_)) => {
                held.busy = false;
                return action;
            }
        };
        held.busy = false;
        machine.answer(event);
    }
}
