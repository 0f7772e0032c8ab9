//! The command line, the top layer: its definition (clap), one function per command, the
//! handling of Ctrl-C and SIGTERM, `.env`, the one error type whose kind decides the exit
//! code, and the hints that end an error line when the next step is obvious. `main` parses,
//! resolves the database, runs, and maps the outcome to an exit code.

pub mod args;
pub mod commands;
pub mod dotenv;
pub mod error;
pub mod follow;
pub mod hint;
pub mod interrupt;
pub mod log;
