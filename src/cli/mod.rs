//! The command line, the top layer: its definition (clap), one function per command, and the
//! handling of Ctrl-C and SIGTERM. `main` parses, resolves the database, runs, and maps the
//! outcome to an exit code.

pub mod args;
pub mod commands;
pub mod interrupt;
