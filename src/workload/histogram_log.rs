//! A run's latencies, interval by interval, in HdrHistogram's interval log format — the format
//! of the Java reference implementation's `HistogramLogWriter`, read by its
//! `HistogramLogProcessor` and `HistogramLogReader` and by the other HdrHistogram ports (the
//! `hdrhistogram` crate's `IntervalLogIterator` and `Deserializer` among them). Written with the
//! `hdrhistogram` crate's interval log writer: a few header lines, then one line per interval —
//! its start (seconds since the run began, see `#[BaseTime]`), its length, its largest latency
//! in milliseconds, and its histogram, V2-encoded, deflated and in base64 (what the Java
//! implementation writes and reads). Values are in nanoseconds, as HdrHistogram's tools assume.
//!
//! CockroachDB's own `workload run --histograms` writes JSON snapshots of its histograms instead
//! (pkg/workload/histogram/histogram.go in cockroachdb/cockroach, `SnapshotTick`), a format only
//! its own tools read; this is the standard one.

use super::stats::Latencies;
use hdrhistogram::serialization::interval_log::{IntervalLogWriter, IntervalLogWriterBuilder};
use hdrhistogram::serialization::V2DeflateSerializer;
use std::io::{self, Write};
use std::time::{Duration, SystemTime};

/// Nanoseconds per millisecond: each interval's largest value is written in milliseconds, as the
/// Java implementation does by default.
const MAX_VALUE_DIVISOR: f64 = 1_000_000.0;

/// The output of an interval log: where it goes and the encoder, to [`begin`](Self::begin) the
/// log when the run starts.
pub struct HistogramLog<W: Write> {
    out: W,
    serializer: V2DeflateSerializer,
}

impl<W: Write> std::fmt::Debug for HistogramLog<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistogramLog").finish_non_exhaustive()
    }
}

impl<W: Write> HistogramLog<W> {
    /// A log to be written to `out` (buffer it: the log writes a line at a time).
    pub fn new(out: W) -> Self {
        HistogramLog {
            out,
            serializer: V2DeflateSerializer::new(),
        }
    }

    /// Writes the log's header for a run that started at `started` — `comment` (what ran) on a
    /// comment line, the format version, StartTime and BaseTime — and returns the writer of its
    /// intervals.
    pub fn begin(&mut self, started: SystemTime, comment: &str) -> io::Result<IntervalLog<'_, W>> {
        let writer = IntervalLogWriterBuilder::new()
            .add_comment(comment)
            .add_comment("[Histogram log format version 1.3]")
            .add_comment("[Latencies in nanoseconds; Interval_Max in milliseconds]")
            .with_start_time(started)
            .with_base_time(started)
            .with_max_value_divisor(MAX_VALUE_DIVISOR)
            .begin_log_with(&mut self.out, &mut self.serializer)?;
        Ok(IntervalLog { writer })
    }

    /// Flushes what was written and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes the intervals of a log [`begun`](HistogramLog::begin).
pub struct IntervalLog<'a, W: Write> {
    writer: IntervalLogWriter<'a, 'a, W, V2DeflateSerializer>,
}

impl<W: Write> std::fmt::Debug for IntervalLog<'_, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntervalLog").finish_non_exhaustive()
    }
}

impl<W: Write> IntervalLog<'_, W> {
    /// Writes the latencies of the interval of `length` that began `start` after the run did.
    pub fn write(
        &mut self,
        start: Duration,
        length: Duration,
        latencies: &Latencies,
    ) -> io::Result<()> {
        self.writer
            .write_histogram(latencies.histogram(), start, length, None)
            .map_err(|err| match err {
                hdrhistogram::serialization::interval_log::IntervalLogWriterError::IoError(err) => {
                    err
                }
                other => io::Error::other(other.to_string()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::Histogram;

    #[test]
    fn what_is_written_reads_back_interval_by_interval() {
        let started = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut log = HistogramLog::new(Vec::new());
        let mut intervals = log.begin(started, "roachbank transfer").unwrap();
        let mut first = Latencies::new();
        first.record(Duration::from_millis(2));
        first.record(Duration::from_millis(4));
        intervals
            .write(Duration::ZERO, Duration::from_secs(1), &first)
            .unwrap();
        let mut second = Latencies::new();
        second.record(Duration::from_micros(1500));
        intervals
            .write(Duration::from_secs(1), Duration::from_millis(500), &second)
            .unwrap();
        drop(intervals);
        let bytes = log.finish().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("#roachbank transfer\n"), "{text}");
        assert!(text.contains("#[BaseTime: 1700000000.000"), "{text}");
        // Start, length and largest value (ms) of the second interval, as the Java writer has them.
        assert!(text.contains("\n1.000,0.500,1.500,"), "{text}");

        let mut deserializer = Deserializer::new();
        let mut read = Vec::new();
        for entry in IntervalLogIterator::new(&bytes) {
            if let LogEntry::Interval(interval) = entry.unwrap() {
                let encoded = base64::engine::general_purpose::STANDARD
                    .decode(interval.encoded_histogram())
                    .unwrap();
                let histogram: Histogram<u64> =
                    deserializer.deserialize(&mut encoded.as_slice()).unwrap();
                read.push((interval.start_timestamp(), histogram));
            }
        }
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].0, Duration::ZERO);
        assert_eq!(read[0].1.len(), 2);
        assert_eq!(read[0].1.max(), first.histogram().max());
        assert_eq!(read[1].0, Duration::from_secs(1));
        assert_eq!(read[1].1.len(), 1);
    }
}
