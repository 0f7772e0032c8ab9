//! roachbank: CockroachDB's "bank" tutorial (Python + SQLAlchemy) in Rust with Diesel.
//!
//! The same commands run on CockroachDB, PostgreSQL and an embedded SQLite file, every
//! transaction going through [`retry::run_transaction`], which implements CockroachDB's
//! client-side retry protocol (and PostgreSQL's and SQLite's equivalents): bounded, typed,
//! never retrying a commit whose outcome is unknown.
//!
//! ```no_run
//! use roachbank::config::DatabaseConfig;
//! use roachbank::db::{ConnectOptions, Database};
//! use roachbank::retry::{run_transaction, RetryPolicy};
//!
//! let config = DatabaseConfig::resolve(None)?;
//! let db = Database::open(config, &ConnectOptions::default())?;
//! let committed = run_transaction(&db, &RetryPolicy::default(), |conn| {
//!     roachbank::bank::pick_random_account(conn, None)
//! })?;
//! println!("picked {:?} after {} attempt(s)", committed.value, committed.attempts);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod audit;
pub mod bank;
pub mod config;
pub mod conninfo;
pub mod db;
pub mod durability;
pub mod init;
pub mod migrate;
pub mod models;
pub mod points;
pub mod retry;
pub mod schema;
pub mod stall;
pub mod transfer_run;
