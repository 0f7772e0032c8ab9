#![warn(missing_docs)]

//! roachbank: CockroachDB's "bank" tutorial (Python + SQLAlchemy) in Rust with Diesel.
//!
//! The same commands run on CockroachDB, PostgreSQL and an embedded SQLite file, every
//! transaction going through [`diesel_retry::run_transaction`] (the `crates/diesel-retry`
//! crate of this workspace), which implements CockroachDB's
//! client-side retry protocol (and PostgreSQL's and SQLite's equivalents): bounded, typed,
//! never retrying a commit whose outcome is unknown.
//!
//! Layers, top to bottom; each imports only from the ones below it:
//!
//! * [`workload`] — many transactions at once: workers, progress, rates, latency histograms;
//! * [`bank`] and [`init`] — the tutorial's domain (accounts and transfers, the ledger audit,
//!   points) and setting a server up for it;
//! * [`migrate`] — the embedded migrations that
//!   [`db::Database::open`](crate::db::Database::open) applies;
//! * [`db`] — connections (`diesel_retry`'s traits implemented for them), the connection URL,
//!   redaction;
//! * [`schema`] and [`models`] — the tables, as Diesel sees them.
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
