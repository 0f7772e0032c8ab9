//! `transfer`'s workload output, end to end through the binary: the ticks and the total in the
//! columns of `cockroach workload run`, the latency histograms in HdrHistogram's interval log
//! format (`--histograms`), the SVG plot (`--plot`), and the one-line refusal of a file that
//! cannot be written, before anything touches the database. Runs on PostgreSQL (or whatever
//! `TEST_DATABASE_URL` names), and on SQLite where the database does not matter.

use crate::support::bin::{
    assert_one_line_error, assert_success, describe, dir_entries, run, stderr_of, stdout_of,
    temp_dir,
};
use crate::support::{grouped, TestDb};
use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// CockroachDB's tick header, as its text formatter prints it (pkg/workload/cli/format.go in
/// cockroachdb/cockroach) — written out here, not taken from the library, so that the output
/// is checked against CockroachDB's and not against itself.
const TICK_HEADER: &str =
    "_elapsed___errors__ops/sec(inst)___ops/sec(cum)__p50(ms)__p95(ms)__p99(ms)_pMax(ms)";
/// CockroachDB's total header (same file, `totalHeader` + "__total").
const TOTAL_HEADER: &str = "_elapsed___errors_____ops(total)___ops/sec(cum)__avg(ms)__p50(ms)\
                            __p95(ms)__p99(ms)_pMax(ms)__total";
/// Accounts the tests seed.
const ACCOUNTS: i64 = 30;

/// A fresh PostgreSQL database holding [`ACCOUNTS`] accounts, and a working directory.
fn seeded(test_name: &str) -> (TestDb, tempfile::TempDir) {
    let db = TestDb::new(test_name);
    let dir = temp_dir();
    let seed = roachbank(
        &db,
        dir.path(),
        &["seed", "--accounts", &ACCOUNTS.to_string()],
    );
    assert_success(&seed);
    (db, dir)
}

/// The binary run on `db` with `args`, in `cwd`.
fn roachbank(db: &TestDb, cwd: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--database-url", db.url.as_str()];
    all.extend_from_slice(args);
    run(cwd, &all, &[])
}

/// Ledger rows in `db`: the deposits plus one per committed transfer.
fn ledger_rows(db: &TestDb) -> i64 {
    db.psql("SELECT count(*) FROM transfers")
        .parse()
        .expect("a count")
}

/// The number of transfers done that the `transfers:` line reports (its count may be grouped).
fn transfers_done(output: &Output) -> u64 {
    let stdout = stdout_of(output);
    let line = stdout
        .lines()
        .find(|line| line.starts_with("transfers: "))
        .unwrap_or_else(|| panic!("no transfers: line: {}", describe(output)));
    line["transfers: ".len()..]
        .split(" done")
        .next()
        .and_then(|count| count.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"))
}

/// The retries that the `transfers:` line reports.
fn transfers_retries(output: &Output) -> u64 {
    let stdout = stdout_of(output);
    let line = stdout
        .lines()
        .find(|line| line.starts_with("transfers: "))
        .unwrap_or_else(|| panic!("no transfers: line: {}", describe(output)));
    line.split(", ")
        .find_map(|part| {
            part.strip_suffix(" retries")
                .or_else(|| part.strip_suffix(" retry"))
        })
        .and_then(|count| count.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("no retries in {line:?}"))
}

/// Checks that each value of `line` ends exactly where its column's name ends in `header`
/// (CockroachDB right-aligns values under names that end with their last character), and
/// returns the values.
fn columns<'a>(header: &str, line: &'a str) -> Vec<&'a str> {
    // The total's header ends with the row's name, not a column's.
    let names = header.strip_suffix("__total").unwrap_or(header);
    let bytes = names.as_bytes();
    let mut ends: Vec<usize> = (1..bytes.len())
        .filter(|&i| bytes[i] == b'_' && bytes[i - 1] != b'_')
        .collect();
    ends.push(names.len());
    for &end in &ends {
        let (before, after) = line.split_at(end);
        assert!(
            !before.ends_with(' ') && (after.is_empty() || after.starts_with(' ')),
            "value not ending at column {end} under {header:?}:\n{header}\n{line}"
        );
    }
    line.split_whitespace().collect()
}

/// A number in a tick or total: `1.0s` (seconds), `12` or `1234.5`.
fn number(text: &str) -> f64 {
    text.trim_end_matches('s')
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {text:?}"))
}

#[test]
fn timed_transfer_prints_ticks_and_total_in_cockroach_workload_columns() {
    let (db, dir) = seeded("workload_ticks_total");
    let output = roachbank(
        &db,
        dir.path(),
        &["transfer", "--duration", "3s", "--workers", "4", "--ticks"],
    );
    assert_success(&output);
    let done = transfers_done(&output);
    assert!(done > 0, "{}", describe(&output));
    assert_eq!(ledger_rows(&db), ACCOUNTS + done as i64);

    // Ticks on stderr: the header, then a line per second, under the header's columns.
    let stderr = stderr_of(&output);
    // (The test server runs without fsync: roachbank's warning about it follows the ticks.)
    let mut lines = stderr
        .lines()
        .filter(|line| !line.starts_with("roachbank: "));
    assert_eq!(lines.next(), Some(TICK_HEADER), "{}", describe(&output));
    let ticks: Vec<Vec<f64>> = lines
        .map(|line| {
            let values = columns(TICK_HEADER, line);
            assert_eq!(values.len(), 9, "{line:?}");
            assert!(values[0].ends_with('s'), "{line:?}");
            assert_eq!(values[8], "transfer", "{line:?}");
            values[..8].iter().map(|value| number(value)).collect()
        })
        .collect();
    assert_eq!(
        ticks.len(),
        3,
        "a tick a second for 3 s, none for the tail (transfers in flight finishing): {}",
        describe(&output)
    );
    for (i, tick) in ticks.iter().enumerate() {
        let second = (i + 1) as f64;
        assert!(
            tick[0] >= second && tick[0] < second + 0.5,
            "tick {i} at {}s: {}",
            tick[0],
            describe(&output)
        );
    }
    for tick in &ticks {
        assert_eq!(tick[1], 0.0, "no errors: {}", describe(&output));
        assert!(tick[2] >= 0.0 && tick[3] > 0.0, "rates: {tick:?}");
        assert!(
            tick[4] <= tick[5] && tick[5] <= tick[6] && tick[6] <= tick[7],
            "p50 <= p95 <= p99 <= pMax: {tick:?}"
        );
    }

    // The total on stdout, after a blank line (ticks were printed), in CockroachDB's columns,
    // then the transfers: line.
    let stdout = stdout_of(&output);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", describe(&output));
    assert_eq!(
        lines[0], "",
        "a blank line after the ticks, as CockroachDB prints"
    );
    assert_eq!(lines[1], TOTAL_HEADER);
    let total = columns(TOTAL_HEADER, lines[2]);
    assert_eq!(total.len(), 10, "{:?}", lines[2]);
    assert_eq!(total[9], "transfer");
    let elapsed = number(total[0]);
    assert!((3.0..4.0).contains(&elapsed), "{:?}", lines[2]);
    assert_eq!(total[1], "0", "errors");
    assert_eq!(
        total[2],
        done.to_string(),
        "ops(total) are the transfers done"
    );
    let rate = number(total[3]);
    let expected = done as f64 / elapsed;
    assert!(
        (rate - expected).abs() <= expected * 0.05,
        "ops/sec(cum) {rate} is {done} over about {elapsed} s"
    );
    let latencies: Vec<f64> = total[4..9].iter().map(|value| number(value)).collect();
    assert!(
        latencies[1] <= latencies[2]
            && latencies[2] <= latencies[3]
            && latencies[3] <= latencies[4],
        "p50 <= p95 <= p99 <= pMax: {:?}",
        lines[2]
    );
    assert!(lines[3].starts_with("transfers: "), "{:?}", lines[3]);
}

#[test]
fn a_timed_run_without_a_terminal_prints_the_total_and_no_ticks() {
    let (db, dir) = seeded("workload_no_ticks");
    let timed = roachbank(&db, dir.path(), &["transfer", "--duration", "1s"]);
    assert_success(&timed);
    assert!(
        !stderr_of(&timed).contains(TICK_HEADER),
        "stderr is a pipe here: no ticks unless asked: {}",
        describe(&timed)
    );
    let stdout = stdout_of(&timed);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", describe(&timed));
    assert_eq!(lines[0], TOTAL_HEADER, "no blank line without ticks");
    assert_eq!(
        columns(TOTAL_HEADER, lines[1])[2],
        transfers_done(&timed).to_string()
    );

    // A counted run keeps its one summary line.
    let counted = roachbank(&db, dir.path(), &["transfer", "--count", "20"]);
    assert_success(&counted);
    assert!(
        !stdout_of(&counted).contains(TOTAL_HEADER),
        "{}",
        describe(&counted)
    );
    assert_eq!(transfers_done(&counted), 20);
}

#[test]
fn histograms_file_holds_every_transfer_in_an_hdr_interval_log() {
    let (db, dir) = seeded("workload_histograms");
    let file = dir.path().join("transfer.hlog");
    let output = roachbank(
        &db,
        dir.path(),
        &[
            "transfer",
            "--duration",
            "2s",
            "--workers",
            "2",
            "--histograms",
            file.to_str().expect("a UTF-8 path"),
        ],
    );
    assert_success(&output);
    let done = transfers_done(&output);
    assert!(done > 0, "{}", describe(&output));

    let log = std::fs::read(&file).expect("the histogram file");
    let mut deserializer = Deserializer::new();
    let mut merged = Histogram::<u64>::new(3).expect("a histogram");
    let (mut start_time, mut base_time, mut intervals) = (None, None, Vec::new());
    for entry in IntervalLogIterator::new(&log) {
        match entry.expect("a well-formed interval log") {
            LogEntry::StartTime(time) => start_time = Some(time),
            LogEntry::BaseTime(time) => base_time = Some(time),
            LogEntry::Interval(interval) => {
                let encoded = base64::engine::general_purpose::STANDARD
                    .decode(interval.encoded_histogram())
                    .expect("base64");
                let histogram: Histogram<u64> = deserializer
                    .deserialize(&mut encoded.as_slice())
                    .expect("a V2 (deflated) histogram");
                merged.add(&histogram).expect("merge");
                intervals.push((interval.start_timestamp(), interval.duration()));
            }
        }
    }
    assert!(
        start_time.is_some() && base_time.is_some(),
        "StartTime and BaseTime headers"
    );
    assert_eq!(
        merged.len(),
        done,
        "every committed transfer in the log, once"
    );
    // One interval a second, end to end from the start, then the tail.
    assert!((2..=3).contains(&intervals.len()), "{intervals:?}");
    assert_eq!(intervals[0].0, Duration::ZERO);
    for pair in intervals.windows(2) {
        let end = pair[0].0 + pair[0].1;
        assert!(
            end.abs_diff(pair[1].0) <= Duration::from_millis(2),
            "contiguous intervals: {intervals:?}"
        );
    }
    // Values in nanoseconds: the median agrees with the p50 the summary prints in ms.
    let stdout = stdout_of(&output);
    let p50_ms: f64 = stdout
        .split("p50 ")
        .nth(1)
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no p50: {}", describe(&output)));
    let logged_ms = merged.value_at_quantile(0.5) as f64 / 1e6;
    assert!(
        (logged_ms - p50_ms).abs() <= 0.01 + p50_ms * 0.002,
        "logged median {logged_ms} ms vs printed p50 {p50_ms} ms"
    );
}

#[test]
fn plot_is_an_svg_of_throughput_retries_and_latency() {
    let (db, dir) = seeded("workload_plot");
    let file = dir.path().join("transfer.svg");
    // The tutorial's interactive transactions on few accounts: retries, most likely.
    let output = roachbank(
        &db,
        dir.path(),
        &[
            "transfer",
            "--duration",
            "3s",
            "--workers",
            "4",
            "--style",
            "tutorial",
            "--plot",
            file.to_str().expect("a UTF-8 path"),
        ],
    );
    assert_success(&output);
    let svg = std::fs::read_to_string(&file).expect("the SVG file");
    let document = roxmltree::Document::parse(&svg).expect("well-formed XML");
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );

    let texts: Vec<&str> = document
        .descendants()
        .filter(|node| node.has_tag_name("text"))
        .filter_map(|node| node.text())
        .map(str::trim)
        .collect();
    for wanted in [
        "roachbank transfer: 4 workers, tutorial style",
        "committed transfers/s",
        "retries/s (right axis)",
        "retries/s",
        "latency (ms, log scale)",
        "elapsed (s)",
        "p50",
        "p99",
    ] {
        assert!(
            texts.iter().any(|text| text.starts_with(wanted)),
            "no text {wanted:?} in the plot: {texts:?}"
        );
    }
    let retries = transfers_retries(&output);
    let caption = format!(
        "Throughput — {} retr{} in all",
        grouped(retries),
        if retries == 1 { "y" } else { "ies" }
    );
    assert!(
        texts.contains(&caption.as_str()),
        "the caption counts the run's {retries} retries: {texts:?}"
    );

    // The series: a line per second for throughput, p50 and p99, each in its own colour, and a
    // red bar for each second with retries (the legend has one of each too).
    let lines_in = |colour: &str| {
        document
            .descendants()
            .filter(|node| {
                node.has_tag_name("polyline") && node.attribute("stroke") == Some(colour)
            })
            .map(|node| {
                node.attribute("points")
                    .unwrap_or("")
                    .split_whitespace()
                    .count()
            })
            .collect::<Vec<_>>()
    };
    for (series, colour) in [
        ("throughput", "#1F77B4"),
        ("p50", "#2CA02C"),
        ("p99", "#9467BD"),
    ] {
        let lines = lines_in(colour);
        assert_eq!(
            lines.len(),
            2,
            "{series}: its line and its legend's: {lines:?}"
        );
        assert!(
            lines.iter().any(|&points| points >= 3),
            "{series}: a point for each of 3 seconds: {lines:?}"
        );
    }
    let retry_bars = document
        .descendants()
        .filter(|node| node.has_tag_name("rect") && node.attribute("fill") == Some("#D62728"))
        .count();
    if retries > 0 {
        assert!(retry_bars >= 2, "retries are marked: {retry_bars} bars");
    }
}

#[test]
fn an_unwritable_histograms_or_plot_file_is_one_line_and_nothing_is_written() {
    let (db, dir) = seeded("workload_unwritable");
    let missing = dir.path().join("no-such-dir").join("out");
    let missing = missing.to_str().expect("a UTF-8 path");
    let directory = dir.path().to_str().expect("a UTF-8 path");
    for (option, path) in [
        ("--histograms", missing),
        ("--plot", missing),
        ("--histograms", directory),
        ("--plot", directory),
    ] {
        // On PostgreSQL: exit 2, one line naming the option and the path, no transfer made.
        let output = roachbank(
            &db,
            dir.path(),
            &["transfer", "--duration", "1s", option, path],
        );
        let line = assert_one_line_error(&output);
        assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
        assert!(
            line.starts_with(&format!("roachbank: error: cannot write {option} {path}: ")),
            "{line}"
        );
        assert_eq!(stdout_of(&output), "", "{}", describe(&output));
        assert_eq!(ledger_rows(&db), ACCOUNTS, "no transfer was made");

        // On the SQLite default: the same line, and not even bank.db is created.
        let fresh = temp_dir();
        let output = run(
            fresh.path(),
            &["transfer", "--count", "5", option, path],
            &[],
        );
        let line = assert_one_line_error(&output);
        assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
        assert!(
            line.contains(&format!("cannot write {option} {path}")),
            "{line}"
        );
        assert_eq!(dir_entries(fresh.path()), Vec::<String>::new());
    }

    // One file for both is refused too, before anything else.
    let same = dir.path().join("both");
    let same = same.to_str().expect("a UTF-8 path");
    let output = roachbank(
        &db,
        dir.path(),
        &[
            "transfer",
            "--duration",
            "1s",
            "--histograms",
            same,
            "--plot",
            same,
        ],
    );
    let line = assert_one_line_error(&output);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(line.contains("--histograms and --plot both name"), "{line}");
    assert_eq!(ledger_rows(&db), ACCOUNTS);
}
