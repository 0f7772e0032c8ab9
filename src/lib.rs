#![warn(missing_docs)]

//! roachbank: CockroachDB's "bank" tutorial (Python + SQLAlchemy) in Rust with Diesel.
//!
//! **Looking for `run_transaction`?** It is not here: it is the helper crate
//! [`diesel_retry`] (`crates/diesel-retry` in this workspace), which depends on nothing of
//! roachbank's and works on your own Diesel connection or r2d2 pool. It implements
//! CockroachDB's client-side retry protocol (and PostgreSQL's and SQLite's equivalents):
//! bounded, typed, never retrying a commit whose outcome is unknown. On a plain pool:
//!
//! ```no_run
//! use diesel::prelude::*;
//! use diesel::r2d2::{ConnectionManager, Pool};
//! use diesel_retry::{run_transaction, Flavored, RetryPolicy};
//!
//! diesel::table! { accounts (id) { id -> BigInt, balance -> BigInt, } }
//!
//! let url = std::env::var("DATABASE_URL")?;
//! let pool = Pool::builder().build(ConnectionManager::<PgConnection>::new(url))?;
//! let bank = Flavored::detect(&pool)?; // one SELECT version(): CockroachDB or PostgreSQL
//! let moved = run_transaction(&bank, &RetryPolicy::default(), |conn| {
//!     diesel::update(accounts::table.find(1))
//!         .set(accounts::balance.eq(accounts::balance - 100))
//!         .execute(conn)?;
//!     diesel::update(accounts::table.find(2))
//!         .set(accounts::balance.eq(accounts::balance + 100))
//!         .execute(conn)
//! })?;
//! println!("committed after {} attempt(s)", moved.attempts);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! This crate is the tutorial's app built on it: the same commands on CockroachDB, PostgreSQL
//! and an embedded SQLite file, every transaction going through the helper. Layers, top to
//! bottom; each imports only from the ones below it:
//!
//! * [`workload`] — many transactions at once: workers, progress, rates, latency histograms;
//! * [`bank`] and [`init`] — the tutorial's domain (accounts and transfers, the ledger audit,
//!   points) and setting a server up for it;
//! * [`migrate`] — the embedded migrations that [`db::Database::open`] applies;
//! * [`db`] — connections (`diesel_retry`'s traits implemented for them), the connection URL,
//!   redaction;
//! * [`schema`] and [`models`] — the tables, as Diesel sees them.
//!
//! The app's own [`db::Database`] is a source for the helper too:
//!
//! ```no_run
//! use roachbank::db::config::DatabaseConfig;
//! use roachbank::db::{ConnectOptions, Database};
//! use diesel_retry::{run_transaction, RetryPolicy};
//!
//! let config = DatabaseConfig::resolve(None)?;
//! let db = Database::open(config, &ConnectOptions::default())?;
//! let committed = run_transaction(&db, &RetryPolicy::default(), |conn| {
//!     roachbank::bank::pick_random_account(conn, None)
//! })?;
//! println!("picked {:?} after {} attempt(s)", committed.value, committed.attempts);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bank;
pub mod db;
pub mod init;
pub mod migrate;
pub mod models;
/// Diesel's table definitions, exactly as `diesel print-schema` (and `diesel migration run`)
/// writes them from the CockroachDB/PostgreSQL migration set; the SQLite set has the same
/// shape. Generated, never edited by hand: the doc comments come from the migrations'
/// `COMMENT ON`, and `tests/it/schema.rs` fails if the file and the migrations disagree.
pub mod schema;
mod sync;

/// README.md's Rust snippets, compiled as doc tests so that they never miss a `use`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeSnippets;
pub mod workload;
