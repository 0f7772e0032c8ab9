//! roachbank's integration tests: one test binary (`cargo test --test it`), one module per
//! area, all sharing [`support`] — compiled once, and one throwaway PostgreSQL server for the
//! whole run (see `docs/testing.md`).
//!
//! Run one module with `cargo test --test it faults::`, one test with
//! `cargo test --test it faults::transfers_ride_out_a_server_restart_and_the_books_balance`.
//!
//! The tests of every module run side by side in this one process. A test that would disturb
//! others on the shared server (a restart) uses a server of its own; the fault scenarios that
//! must not share the CPU with one another still run one at a time (`faults::one_at_a_time`).

// First: its `on_sqlite_and_postgresql!` macro is used by the modules below.
#[macro_use]
mod support;

mod adopt;
mod async_example;
mod asynchronous;
mod bank;
mod cli;
mod cockroach;
mod connection_options;
mod docs;
mod faults;
mod init;
mod ledger;
mod library_use;
mod migration_failures;
mod points;
mod retry_protocol;
mod schema;
mod secrets;
mod sqlite_writers;
mod tls;
mod workload_output;
