//! Ctrl-C (SIGINT) and SIGTERM. The first one stops the command between transactions: no new
//! transfer or chunk starts, those in flight commit or roll back (each statement bounded by the
//! stall timeout), the summary so far is printed, and the process exits 130 (SIGINT) or 143
//! (SIGTERM). A single-transaction command (seed, balance, check, init) runs to its end and
//! prints its result before that exit. A second signal while the first is handled kills the
//! process at once, as if no handler were installed (the database rolls back whatever was not
//! committed).

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// A signal that asked the command to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Ctrl-C.
    Int,
    /// `kill`, a service manager, a container stop.
    Term,
}

impl Signal {
    fn number(self) -> i32 {
        match self {
            Signal::Int => SIGINT,
            Signal::Term => SIGTERM,
        }
    }

    /// 128 + the signal's number, as a shell reports a process the signal killed.
    pub fn exit_code(self) -> u8 {
        128 + self.number() as u8
    }

    /// "SIGINT", "SIGTERM".
    pub fn name(self) -> &'static str {
        match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
        }
    }
}

/// The handlers' flags: `stop`, set by the first signal, for the library to poll; and which
/// signal it was. No signal is handled until [`Interrupt::install`].
#[derive(Default)]
pub struct Interrupt {
    stop: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
}

impl Interrupt {
    /// Installs the handlers for SIGINT and SIGTERM (once per process).
    pub fn install(&self) -> std::io::Result<()> {
        let Interrupt { stop, signal } = self;
        for sig in [SIGINT, SIGTERM] {
            // Order matters (signal-hook runs a signal's actions in registration order): the
            // default action first, armed only once an earlier signal has set `stop`; then
            // which signal, before `stop`, so that whoever sees `stop` sees it.
            flag::register_conditional_default(sig, Arc::clone(stop))?;
            flag::register_usize(sig, Arc::clone(signal), sig as usize)?;
            flag::register(sig, Arc::clone(stop))?;
        }
        Ok(())
    }

    /// The flag the library's long runs poll between transactions.
    pub fn flag(&self) -> &AtomicBool {
        &self.stop
    }

    /// The signal received, if one was.
    pub fn received(&self) -> Option<Signal> {
        if !self.stop.load(Ordering::SeqCst) {
            return None;
        }
        match self.signal.load(Ordering::SeqCst) {
            n if n == SIGTERM as usize => Some(Signal::Term),
            _ => Some(Signal::Int),
        }
    }
}
