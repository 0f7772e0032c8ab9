//! Where [`run_transaction`](crate::run_transaction) gets its connections — an r2d2 pool of
//! Diesel connections, a single connection, or your own source — and which engine is behind
//! them, which picks the protocol.

use crate::connection::{Flavor, RetryConnection};
use crate::error::PoolError;
use std::ops::DerefMut;
use std::time::Duration;

/// A supply of connections for [`run_transaction`](crate::run_transaction).
///
/// Implemented for `&mut C` and (feature `r2d2`) `&r2d2::Pool<ConnectionManager<C>>` where `C`
/// is a [`RetryConnection`], and for [`Flavored`], which wraps any of these with a flavour
/// detected or given.
pub trait ConnectionSource {
    /// The connection the work runs on.
    type Connection: RetryConnection;
    /// A connection handed out for one or more attempts; dropping it gives it back.
    type Checkout<'s>: DerefMut<Target = Self::Connection>
    where
        Self: 's;

    /// The engine behind the connections, if the source knows it. If not, each connection's
    /// [`RetryConnection::default_flavor`] decides.
    fn flavor(&self) -> Option<Flavor> {
        None
    }

    /// Whether every connection it hands out runs a statement sent on its own at SERIALIZABLE
    /// (its sessions' `default_transaction_isolation`), so that
    /// [`run_single_statement`](crate::run_single_statement) need not ask the server. If not
    /// (the default), the session is asked once per connection taken for a call.
    fn sessions_are_serializable(&self) -> bool {
        false
    }

    /// A connection for the next attempt. A pool hands out a fresh one (after a lost connection
    /// the old one is dropped, and the pool discards it); a single connection is itself, so a
    /// lost one is not replaced and the transaction ends when its retries run out.
    fn checkout(&mut self) -> Result<Self::Checkout<'_>, PoolError>;

    /// [`checkout`](ConnectionSource::checkout) that waits at most `wait` for a connection
    /// (never longer than `checkout` would): how settling an unknown commit keeps to its
    /// budget, and a run to its deadline. A source that cannot bound its wait (the default)
    /// waits as `checkout` does; a single connection never waits.
    fn checkout_within(&mut self, wait: Duration) -> Result<Self::Checkout<'_>, PoolError> {
        let _ = wait;
        self.checkout()
    }
}

impl<C: RetryConnection> ConnectionSource for &mut C {
    type Connection = C;
    type Checkout<'s>
        = &'s mut C
    where
        Self: 's;

    fn checkout(&mut self) -> Result<&mut C, PoolError> {
        Ok(&mut **self)
    }
}

#[cfg(feature = "r2d2")]
mod pool {
    use super::*;
    use diesel::r2d2::{ConnectionManager, Pool, PooledConnection, R2D2Connection};

    impl<C: RetryConnection + R2D2Connection + 'static> ConnectionSource
        for &Pool<ConnectionManager<C>>
    {
        type Connection = C;
        type Checkout<'s>
            = PooledConnection<ConnectionManager<C>>
        where
            Self: 's;

        fn checkout(&mut self) -> Result<Self::Checkout<'_>, PoolError> {
            self.get()
        }

        /// Waits at most `wait`, and never longer than the pool's own connection timeout.
        fn checkout_within(&mut self, wait: Duration) -> Result<Self::Checkout<'_>, PoolError> {
            self.get_timeout(wait.min(self.connection_timeout()))
        }
    }

    /// A flavoured pool shared by reference, `run_transaction(&bank, …)`: the pool's
    /// connections, with the flavour.
    impl<C: RetryConnection + R2D2Connection + 'static> ConnectionSource
        for &Flavored<&Pool<ConnectionManager<C>>>
    {
        type Connection = C;
        type Checkout<'s>
            = PooledConnection<ConnectionManager<C>>
        where
            Self: 's;

        fn flavor(&self) -> Option<Flavor> {
            Some(self.flavor)
        }

        fn checkout(&mut self) -> Result<Self::Checkout<'_>, PoolError> {
            { self.source }.checkout()
        }

        fn checkout_within(&mut self, wait: Duration) -> Result<Self::Checkout<'_>, PoolError> {
            { self.source }.checkout_within(wait)
        }
    }
}

/// A source of connections with the flavour of the engine behind them, given or detected once:
/// what lets a plain `PgConnection` pool use CockroachDB's `cockroach_restart` protocol.
#[derive(Debug, Clone, Copy)]
pub struct Flavored<S> {
    pub(crate) source: S,
    pub(crate) flavor: Flavor,
}

impl<S> Flavored<S> {
    /// `source`, whose engine is known to be `flavor`.
    pub fn new(source: S, flavor: Flavor) -> Flavored<S> {
        Flavored { source, flavor }
    }
}

impl<S: ConnectionSource> Flavored<S> {
    /// `source`, with its engine's flavour asked of the server once (`SELECT version()` on a
    /// connection it hands out).
    pub fn detect(mut source: S) -> Result<Flavored<S>, DetectError> {
        let mut conn = source.checkout().map_err(DetectError::Connection)?;
        let flavor = conn.detect_flavor()?;
        drop(conn);
        Ok(Flavored { source, flavor })
    }
}

/// Why [`Flavored::detect`] could not tell the flavour; `P` is the source's error.
#[derive(Debug, thiserror::Error)]
pub enum DetectError<P = PoolError> {
    /// No connection could be had.
    #[error("no database connection: {0}")]
    Connection(P),
    /// `SELECT version()` failed.
    #[error("cannot tell the database's flavour: {0}")]
    Query(#[from] diesel::result::Error),
}

impl<S: ConnectionSource> ConnectionSource for Flavored<S> {
    type Connection = S::Connection;
    type Checkout<'s>
        = S::Checkout<'s>
    where
        Self: 's;

    fn flavor(&self) -> Option<Flavor> {
        Some(self.flavor)
    }

    fn sessions_are_serializable(&self) -> bool {
        self.source.sessions_are_serializable()
    }

    fn checkout(&mut self) -> Result<Self::Checkout<'_>, PoolError> {
        self.source.checkout()
    }

    fn checkout_within(&mut self, wait: Duration) -> Result<Self::Checkout<'_>, PoolError> {
        self.source.checkout_within(wait)
    }
}
