//! `roachbank points`: the tutorial's "large transactions" example — N random points in
//! chunks, one transaction per chunk, each chunk exactly once — with a progress bar.

use super::args::PointsArgs;
use super::interrupt::Interrupt;
use super::output::{plural, retries, say};
use anyhow::{Context, Result};
use diesel_retry::RetryPolicy;
use roachbank::bank::points::{self, LoadMethod};
use roachbank::db::Database;
use roachbank::workload::points::PointsRun;
use roachbank::workload::progress::Progress;
use roachbank::workload::stats::{grouped, grouped_rate};

/// Inserts `args.count` points, chunk by chunk in the method asked for (else the fastest on the
/// database), stopping between chunks once `interrupt` has a signal; says what was written.
pub fn run(
    db: &Database,
    policy: &RetryPolicy,
    args: &PointsArgs,
    interrupt: &Interrupt,
) -> Result<()> {
    let (count, chunk_size) = (args.count, args.chunk_size);
    let method = args
        .method
        .map_or_else(|| LoadMethod::fastest_for(db.flavor()), Into::into);
    let effective = points::effective_chunk_size(db.flavor(), chunk_size);
    if effective != chunk_size {
        note!(
            "roachbank: chunks of {} rows instead of {}: {} advises keeping transactions small",
            grouped(effective),
            grouped(chunk_size),
            db.flavor()
        );
    }
    let progress = Progress::bar(count, "points");
    let result = PointsRun::new(count, chunk_size)
        .method(method)
        .cancel(interrupt.flag())
        .run(db, policy, &mut |done| progress.set_position(done));
    progress.finish();
    let report = result.context("points failed")?;
    if let Some(signal) = interrupt.received() {
        if report.rows < count {
            note!(
                "roachbank: {}: stopped after {} of {} row{} ({} chunk{}) committed, each exactly once; no chunk started after it",
                signal.name(),
                grouped(report.rows),
                grouped(count),
                plural(count),
                grouped(report.chunks),
                plural(report.chunks),
            );
        }
    }
    say!(
        "points: {} row{} in {} chunk{}, {}, {:.2} s, {} rows/s",
        grouped(report.rows),
        plural(report.rows),
        grouped(report.chunks),
        plural(report.chunks),
        retries(report.retries),
        report.elapsed.as_secs_f64(),
        grouped_rate(report.rows_per_second()),
    )?;
    Ok(())
}
