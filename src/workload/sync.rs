//! Mutexes whose holder panicked. A panic in a worker (or in a caller's callback run under a
//! lock) poisons the mutex; the data behind it is still the last consistent state the run
//! wrote, and the run goes on reporting it, so a poisoned lock is taken as it is. The one place
//! roachbank's workloads do that (the connection layer's stall watchdog has its own).

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, taking it over even if a panicking holder poisoned it.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The value inside `mutex`, even if a panicking holder poisoned it.
pub fn into_inner<T>(mutex: Mutex<T>) -> T {
    mutex
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
