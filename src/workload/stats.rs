//! The figures of a run: rates, latencies in an HDR histogram (the `hdrhistogram` crate):
//! constant memory whatever the run's length, one per worker with no lock on the way, merged
//! when the workers are done; and the one way counts and rates are written for people
//! ([`grouped`]).

use hdrhistogram::Histogram;
use std::time::Duration;

/// Significant digits the histogram keeps: values are exact up to 2,048 ns and within 0.1%
/// beyond, finer than the hundredths of a millisecond the CLI prints.
const SIGNIFICANT_DIGITS: u8 = 3;

/// `count` per second of `elapsed` (a zero `elapsed` counts as the smallest positive time).
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
}

/// Latencies, recorded in nanoseconds: the unit CockroachDB's `workload` records in, and the one
/// HdrHistogram's tools assume (their `HistogramLogProcessor` prints milliseconds by default),
/// so a [histogram log](super::histogram_log) reads right in them.
#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

impl Latencies {
    /// No latency yet. The histogram grows as larger values are recorded.
    pub fn new() -> Self {
        Latencies(
            Histogram::new(SIGNIFICANT_DIGITS)
                .expect("3 significant digits are within hdrhistogram's 0..=5"),
        )
    }

    /// Records one latency, in whole nanoseconds.
    pub fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        // The histogram grows to take the value; should it ever fail to, the value is clamped
        // to the largest it holds (`saturating_record` alone clamps instead of growing).
        if self.0.record(nanos).is_err() {
            self.0.saturating_record(nanos);
        }
    }

    /// Adds `other`'s latencies to these.
    pub fn merge(&mut self, other: &Latencies) {
        // Both histograms resize on demand, so adding never meets a value out of range.
        self.0
            .add(&other.0)
            .expect("an auto-resizing histogram takes any other");
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The latency at or below which `quantile` (0..=1) of the recorded ones fall (the
    /// nearest-rank value, within the histogram's precision); none without any.
    pub fn quantile(&self, quantile: f64) -> Option<Duration> {
        if self.0.is_empty() {
            return None;
        }
        Some(Duration::from_nanos(self.0.value_at_quantile(quantile)))
    }

    /// The mean latency (within the histogram's precision, to the nearest nanosecond); none
    /// without any.
    pub fn mean(&self) -> Option<Duration> {
        if self.0.is_empty() {
            return None;
        }
        Some(Duration::from_nanos(self.0.mean().round() as u64))
    }

    /// The histogram itself, its values in nanoseconds.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.0
    }
}

/// `n` with its digits grouped by threes with commas (`12,345,678`), as the progress bar and
/// every summary line write counts and rates. Money and ids are written plain: they are exact
/// values a reader compares with SQL output or pastes into a query.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut text = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

/// A rate as people read it: a whole number, its digits grouped (`12,345`).
pub fn grouped_rate(per_second: f64) -> String {
    // `as` saturates: a NaN is 0 and an infinite rate the largest count.
    grouped(per_second.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_the_nearest_rank_of_the_merged_latencies() {
        let mut first = Latencies::new();
        let mut second = Latencies::new();
        // Exact values (below 2,048 ns), so that the nearest rank is seen exactly.
        for nanos in 1..=50 {
            first.record(Duration::from_nanos(nanos));
        }
        for nanos in 51..=100 {
            second.record(Duration::from_nanos(nanos));
        }
        first.merge(&second);
        assert_eq!(first.count(), 100);
        assert_eq!(first.quantile(0.5), Some(Duration::from_nanos(50)));
        assert_eq!(first.quantile(0.99), Some(Duration::from_nanos(99)));
        assert_eq!(first.quantile(1.0), Some(Duration::from_nanos(100)));
        assert_eq!(
            first.mean(),
            Some(Duration::from_nanos(51)),
            "50.5 ns, rounded"
        );
        assert_eq!(Latencies::new().quantile(0.5), None);
        assert_eq!(Latencies::new().mean(), None);
    }

    #[test]
    fn long_latencies_keep_three_significant_digits() {
        let mut latencies = Latencies::default();
        latencies.record(Duration::from_millis(1234));
        let p50 = latencies.quantile(0.5).unwrap().as_secs_f64();
        assert!((p50 - 1.234).abs() / 1.234 < 0.001, "{p50}");
    }

    #[test]
    fn a_millisecond_is_recorded_in_nanoseconds() {
        let mut latencies = Latencies::new();
        latencies.record(Duration::from_millis(1));
        let histogram = latencies.histogram();
        assert!(
            histogram.equivalent(histogram.max(), 1_000_000),
            "{}",
            histogram.max()
        );
        assert!(
            !histogram.equivalent(histogram.max(), 1_000),
            "not microseconds"
        );
    }

    #[test]
    fn counts_and_rates_are_grouped_by_threes() {
        for (n, text) in [
            (0, "0"),
            (7, "7"),
            (999, "999"),
            (1_000, "1,000"),
            (12_345, "12,345"),
            (262_840, "262,840"),
            (1_000_000, "1,000,000"),
            (u64::MAX, "18,446,744,073,709,551,615"),
        ] {
            assert_eq!(grouped(n), text);
        }
        assert_eq!(grouped_rate(262_840.267_1), "262,840");
        assert_eq!(grouped_rate(0.4), "0");
        assert_eq!(grouped_rate(1_999.5), "2,000");
        assert_eq!(grouped_rate(f64::NAN), "0");
    }

    #[test]
    fn the_rate_of_no_time_is_finite() {
        assert_eq!(per_second(10, Duration::from_secs(2)), 5.0);
        assert!(per_second(1, Duration::ZERO).is_finite());
    }
}
