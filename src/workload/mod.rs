//! Many transactions at once, on one [`runner`]: worker threads sharing one pool, a run length
//! in jobs or in time or a cancellation flag, per-worker figures merged at the end, and a
//! panicked worker reported, never dropped. Its two uses are [`transfers`] (random transfers)
//! and [`points`] (the "large transactions" example, chunk by chunk); [`progress`] draws
//! either on a terminal, and [`stats`] holds the rates and latency histograms. A transfer run
//! can also be followed second by second ([`interval`]): in `cockroach workload run`'s
//! [`columns`], as an HdrHistogram [`histogram_log`], and as a [`plot`].

pub mod columns;
pub mod histogram_log;
pub mod interval;
pub mod plot;
pub mod points;
pub mod progress;
pub mod runner;
pub mod stats;
pub mod transfers;

pub use runner::{RunLength, WorkerPanicked};
pub use transfers::{
    TransferOutcome, TransferReport, TransferRun, TransferSummary, TransferTick, RETRY_GRACE,
};
