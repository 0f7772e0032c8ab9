//! A transfer run in the columns of `cockroach workload run`, so that its output reads like the
//! one people already know: a line per tick, the header again every 20 ticks, and a total in
//! the same columns at the end. Formats copied from CockroachDB's text formatter
//! (pkg/workload/cli/format.go in cockroachdb/cockroach, `textFormatter.outputTick` and
//! `outputFinal`): elapsed seconds, errors so far, the interval's and the cumulative ops/s with
//! one decimal, latencies in milliseconds with one decimal (0.0 for an interval without any),
//! then the operation's name. The numbers are written exactly as CockroachDB writes them — no
//! digit grouping — so that what reads its output reads this too.

use super::stats::Latencies;
use super::transfers::{TransferSummary, TransferTick};
use std::time::Duration;

/// The header over the ticks.
pub const TICK_HEADER: &str =
    "_elapsed___errors__ops/sec(inst)___ops/sec(cum)__p50(ms)__p95(ms)__p99(ms)_pMax(ms)";

/// The header over the total (its last column names the row: `__total`).
pub const TOTAL_HEADER: &str = "_elapsed___errors_____ops(total)___ops/sec(cum)__avg(ms)__p50(ms)\
                                __p95(ms)__p99(ms)_pMax(ms)__total";

/// The header is written again after this many ticks, as CockroachDB does.
pub const HEADER_EVERY: u64 = 20;

/// The name in the last column.
pub const OPERATION: &str = "transfer";

/// Writes ticks under their header, the header again every [`HEADER_EVERY`] ticks.
#[derive(Debug, Default)]
pub struct TickTable {
    written: u64,
}

impl TickTable {
    /// A table with no tick written yet.
    pub fn new() -> Self {
        TickTable::default()
    }

    /// The lines for `tick`: the header if it is due, then the tick's line.
    pub fn lines(&mut self, tick: &TransferTick) -> Vec<String> {
        let mut lines = Vec::with_capacity(2);
        if self.written.is_multiple_of(HEADER_EVERY) {
            lines.push(TICK_HEADER.to_string());
        }
        self.written += 1;
        lines.push(tick_line(tick));
        lines
    }
}

/// One tick's line: `    1.0s        0         4211.9         4211.9      0.9      1.8      2.6      9.4 transfer`.
pub fn tick_line(tick: &TransferTick) -> String {
    let latencies = &tick.latencies;
    format!(
        "{:7.1}s {:8} {:14.1} {:14.1} {:8.1} {:8.1} {:8.1} {:8.1} {OPERATION}",
        tick.elapsed.as_secs_f64(),
        tick.errors_so_far,
        tick.per_second(),
        tick.per_second_so_far(),
        millis(latencies, 0.50),
        millis(latencies, 0.95),
        millis(latencies, 0.99),
        millis(latencies, 1.0),
    )
}

/// The total's line, under [`TOTAL_HEADER`]: errors are the transfers that failed or whose
/// outcome stayed unknown; ops the committed ones.
pub fn total_line(summary: &TransferSummary) -> String {
    let latencies = &summary.latencies;
    format!(
        "{:7.1}s {:8} {:14} {:14.1} {:8.1} {:8.1} {:8.1} {:8.1} {:8.1}  {OPERATION}",
        summary.elapsed.as_secs_f64(),
        summary.failed + summary.unknown,
        summary.done,
        summary.per_second(),
        as_millis(latencies.mean()),
        millis(latencies, 0.50),
        millis(latencies, 0.95),
        millis(latencies, 0.99),
        millis(latencies, 1.0),
    )
}

/// The `quantile` latency in milliseconds, 0 without any.
fn millis(latencies: &Latencies, quantile: f64) -> f64 {
    as_millis(latencies.quantile(quantile))
}

fn as_millis(latency: Option<Duration>) -> f64 {
    latency.map_or(0.0, |latency| latency.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latencies(millis: &[u64]) -> Latencies {
        let mut latencies = Latencies::new();
        for &ms in millis {
            latencies.record(Duration::from_millis(ms));
        }
        latencies
    }

    /// The same figures as CockroachDB's own example (format_test.go, `Example_text_formatter`:
    /// one read of 500 ms in the first half second, one of 333 ms in the next second), in the
    /// same layout. CockroachDB's histograms keep one significant digit where ours keep three,
    /// so its 503.3 ms is our 500.2 (both write the highest value the bucket of 500 ms holds).
    #[test]
    fn ticks_and_total_line_up_as_cockroachdbs() {
        let first = TransferTick {
            elapsed: Duration::from_millis(500),
            interval: Duration::from_millis(500),
            latencies: latencies(&[500]),
            done_so_far: 1,
            ..TransferTick::default()
        };
        let second = TransferTick {
            elapsed: Duration::from_millis(1500),
            interval: Duration::from_secs(1),
            latencies: latencies(&[333]),
            done_so_far: 2,
            ..TransferTick::default()
        };
        let mut table = TickTable::new();
        let mut lines = table.lines(&first);
        lines.extend(table.lines(&second));
        assert_eq!(
            lines,
            [
                "_elapsed___errors__ops/sec(inst)___ops/sec(cum)__p50(ms)__p95(ms)__p99(ms)_pMax(ms)",
                "    0.5s        0            2.0            2.0    500.2    500.2    500.2    500.2 transfer",
                "    1.5s        0            1.0            1.3    333.2    333.2    333.2    333.2 transfer",
            ]
        );
        let summary = TransferSummary {
            done: 2,
            elapsed: Duration::from_secs(2),
            latencies: latencies(&[500, 333]),
            ..TransferSummary::default()
        };
        assert_eq!(
            [TOTAL_HEADER.to_string(), total_line(&summary)],
            [
                "_elapsed___errors_____ops(total)___ops/sec(cum)__avg(ms)__p50(ms)__p95(ms)__p99(ms)_pMax(ms)__total",
                "    2.0s        0              2            1.0    416.5    333.2    500.2    500.2    500.2  transfer",
            ]
        );
    }

    #[test]
    fn the_header_comes_back_every_20_ticks_and_an_empty_tick_reads_zero() {
        let mut table = TickTable::new();
        let headers: Vec<usize> = (0..41)
            .flat_map(|_| table.lines(&TransferTick::default()))
            .enumerate()
            .filter(|(_, line)| line == TICK_HEADER)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(headers, [0, 21, 42]);
        assert!(tick_line(&TransferTick::default()).ends_with("0.0      0.0 transfer"));
    }
}
