//! Many transactions at once, on one [`runner`]: worker threads sharing one pool, a run length
//! in jobs or in time or a cancellation flag, per-worker figures merged at the end, and a
//! panicked worker reported, never dropped. Its two uses are [`transfers`] (random transfers)
//! and [`points`] (the "large transactions" example, chunk by chunk); [`progress`] draws
//! either on a terminal, [`stats`] holds the rates and latency histograms, and [`sync`] the one
//! way a poisoned lock is taken over.

pub mod points;
pub mod progress;
pub mod runner;
pub mod stats;
pub mod sync;
pub mod transfers;

pub use runner::{RunLength, WorkerPanicked};
pub use transfers::{TransferOutcome, TransferReport, TransferRun, TransferSummary, RETRY_GRACE};
