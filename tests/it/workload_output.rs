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

/// The latencies the `transfers:` line reports, in milliseconds: `[p50, p99, pMax]`.
fn summary_latencies(output: &Output) -> [f64; 3] {
    let stdout = stdout_of(output);
    let line = stdout
        .lines()
        .find(|line| line.starts_with("transfers: "))
        .unwrap_or_else(|| panic!("no transfers: line: {}", describe(output)));
    ["p50 ", "p99 ", "pMax "].map(|label| {
        line.split(", ")
            .find_map(|part| part.strip_prefix(label))
            .and_then(|value| value.split(" ms").next())
            .and_then(|millis| millis.parse().ok())
            .unwrap_or_else(|| panic!("no {label:?}in {line:?}"))
    })
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
    // A tick a second for 3 s, none for the tail (transfers in flight finishing). A tick that
    // falls late is not made up for (`workload::interval`), so on a machine stalled for a
    // moment one of the three may be missing: the ticks printed follow one another, each
    // at or after its second and none after the run.
    assert!(
        (2..=3).contains(&ticks.len()),
        "a tick a second for 3 s: {}",
        describe(&output)
    );
    for (i, tick) in ticks.iter().enumerate() {
        let second = (i + 1) as f64;
        assert!(
            tick[0] >= second && tick[0] < 3.5,
            "tick {i} at {}s: {}",
            tick[0],
            describe(&output)
        );
    }
    assert!(
        ticks.windows(2).all(|pair| pair[0][0] < pair[1][0]),
        "ticks in order: {}",
        describe(&output)
    );
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
fn the_transfers_line_shows_pmax_beside_p50_and_p99_the_same_as_the_total() {
    let (db, dir) = seeded("workload_summary_pmax");
    let output = roachbank(
        &db,
        dir.path(),
        &["transfer", "--duration", "1s", "--workers", "2"],
    );
    assert_success(&output);
    let [p50, p99, p_max] = summary_latencies(&output);
    assert!(
        p50 <= p99 && p99 <= p_max,
        "p50 <= p99 <= pMax: {}",
        describe(&output)
    );
    // The total's pMax (one decimal) is the same longest transfer (two decimals here).
    let stdout = stdout_of(&output);
    let total = stdout
        .lines()
        .skip_while(|line| *line != TOTAL_HEADER)
        .nth(1)
        .unwrap_or_else(|| panic!("no total: {}", describe(&output)));
    let total_max = number(columns(TOTAL_HEADER, total)[8]);
    assert!(
        (total_max - p_max).abs() <= 0.05 + 1e-9,
        "pMax {p_max} ms on the transfers: line, {total_max} ms in the total: {}",
        describe(&output)
    );
    // A counted run (no total) shows it too.
    let counted = roachbank(&db, dir.path(), &["transfer", "--count", "5"]);
    assert_success(&counted);
    let [p50, p99, p_max] = summary_latencies(&counted);
    assert!(p50 <= p99 && p99 <= p_max, "{}", describe(&counted));
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
    let missing = dir.path().join("no-such-dir").join("out.svg");
    let missing = missing.to_str().expect("a UTF-8 path");
    // A directory whose name is a plot's (--plot takes *.svg only).
    let directory = dir.path().join("plots.svg");
    std::fs::create_dir(&directory).expect("make a directory");
    let directory = directory.to_str().expect("a UTF-8 path");
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
    let same = dir.path().join("both.svg");
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

/// The points of each `<polyline>` drawn in `colour` (`#RRGGBB`), as (x, y) pairs.
fn polylines(svg: &str, colour: &str) -> Vec<Vec<(f64, f64)>> {
    let document = roxmltree::Document::parse(svg).expect("well-formed XML");
    document
        .descendants()
        .filter(|node| node.has_tag_name("polyline") && node.attribute("stroke") == Some(colour))
        .map(|node| {
            node.attribute("points")
                .unwrap_or("")
                .split_whitespace()
                .map(|pair| {
                    let (x, y) = pair.split_once(',').expect("x,y");
                    (x.parse().expect("x"), y.parse().expect("y"))
                })
                .collect()
        })
        .collect()
}

/// The longest of `lines` (a series; its legend's sample is two points).
fn series(lines: Vec<Vec<(f64, f64)>>) -> Vec<(f64, f64)> {
    lines.into_iter().max_by_key(Vec::len).unwrap_or_default()
}

/// The interval log's intervals: (start, length).
fn log_intervals(log: &[u8]) -> Vec<(Duration, Duration)> {
    IntervalLogIterator::new(log)
        .filter_map(|entry| match entry.expect("a well-formed interval log") {
            LogEntry::Interval(interval) => Some((interval.start_timestamp(), interval.duration())),
            _ => None,
        })
        .collect()
}

/// `--plot` draws SVG only: any other file name (`x.png`, which used to get SVG inside) is
/// refused in one line before anything runs, exit 2, no file and no transfer; `.SVG` is SVG.
#[test]
fn plot_refuses_a_file_name_not_ending_in_svg_before_running() {
    let (db, dir) = seeded("workload_plot_png");
    for name in ["transfer.png", "transfer", "transfer.svg.txt"] {
        let path = dir.path().join(name);
        let path = path.to_str().expect("a UTF-8 path");
        let output = roachbank(
            &db,
            dir.path(),
            &["transfer", "--count", "5", "--plot", path],
        );
        let line = assert_one_line_error(&output);
        assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
        assert_eq!(
            line,
            format!(
                "roachbank: error: --plot {path}: the plot is drawn as SVG only; give a file \
                 name ending in .svg"
            )
        );
        assert!(!Path::new(path).exists(), "{path} written");
        assert_eq!(ledger_rows(&db), ACCOUNTS, "no transfer was made");
    }
    let upper = dir.path().join("TRANSFER.SVG");
    let output = roachbank(
        &db,
        dir.path(),
        &[
            "transfer",
            "--duration",
            "2s",
            "--plot",
            upper.to_str().expect("UTF-8"),
        ],
    );
    assert_success(&output);
    assert!(std::fs::read_to_string(&upper)
        .expect("the plot")
        .starts_with("<svg"));
}

/// A run too short to plot (under a second: one point) says so after its summary and draws no
/// empty axes: the file it named is not made, and one that was there is left as it was. The
/// histogram log is written, and the command says where.
#[test]
fn a_run_too_short_to_plot_says_so_and_draws_nothing() {
    let (db, dir) = seeded("workload_plot_short");
    let plot = dir.path().join("short.svg");
    let log = dir.path().join("short.hlog");
    let (plot_path, log_path) = (plot.to_str().expect("UTF-8"), log.to_str().expect("UTF-8"));
    let args = [
        "transfer",
        "--count",
        "3",
        "--plot",
        plot_path,
        "--histograms",
        log_path,
    ];
    let output = roachbank(&db, dir.path(), &args);
    assert_success(&output);
    assert!(!plot.exists(), "empty axes drawn: {}", describe(&output));
    let notes: Vec<String> = stderr_of(&output).lines().map(str::to_string).collect();
    assert!(
        notes.contains(&format!(
            "roachbank: wrote the latency histogram log to {log_path}"
        )),
        "{}",
        describe(&output)
    );
    let short = notes
        .iter()
        .find(|line| line.starts_with(&format!("roachbank: --plot {plot_path}: not drawn, ")))
        .unwrap_or_else(|| panic!("not said: {}", describe(&output)));
    assert!(short.contains("too short to plot"), "{short}");
    assert!(!log_intervals(&std::fs::read(&log).expect("the log")).is_empty());

    std::fs::write(&plot, "kept").expect("write a file");
    let output = roachbank(&db, dir.path(), &args);
    assert_success(&output);
    assert_eq!(std::fs::read_to_string(&plot).expect("the file"), "kept");
}

/// Every interval of a run is drawn, the last partial second included (a run stopped 2 s in
/// has three: two full seconds and the moments after), as the histogram log has them; the
/// worst latency of each second (pMax) is drawn, never below the p99; the command says where
/// it wrote the plot and the log.
#[test]
fn plot_draws_every_interval_the_last_partial_one_included_and_the_worst_latency() {
    use std::io::BufRead;
    let (db, dir) = seeded("workload_plot_partial");
    let plot = dir.path().join("run.svg");
    let log = dir.path().join("run.hlog");
    let mut child = crate::support::bin::command(
        dir.path(),
        &[
            "--database-url",
            &db.url,
            "transfer",
            "--duration",
            "30s",
            "--ticks",
            "--plot",
            plot.to_str().expect("UTF-8"),
            "--histograms",
            log.to_str().expect("UTF-8"),
        ],
        &[],
    )
    .spawn()
    .expect("start roachbank");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut said = Vec::new();
    // The second tick (`2.0s …`) is printed as the second second ends: stop the run then, so
    // that its last interval is a sliver of a second.
    loop {
        let mut line = String::new();
        let read = stderr.read_line(&mut line).expect("read stderr");
        assert!(read > 0, "ended before its second tick: {said:?}");
        let second_tick = line.trim_start().starts_with("2.0s");
        said.push(line);
        if second_tick {
            break;
        }
    }
    crate::support::bin::send_signal("INT", child.id());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).expect("read stderr");
    let status = child.wait().expect("wait for roachbank");
    assert_eq!(status.code(), Some(130), "{said:?}{rest}");
    assert!(
        rest.lines()
            .any(|line| line == format!("roachbank: wrote the plot to {}", plot.display()))
            && rest.lines().any(|line| {
                line == format!(
                    "roachbank: wrote the latency histogram log to {}",
                    log.display()
                )
            }),
        "{rest}"
    );

    let intervals = log_intervals(&std::fs::read(&log).expect("the log"));
    assert_eq!(
        intervals.len(),
        3,
        "two seconds and the sliver after: {intervals:?}"
    );
    assert!(intervals[2].1 < Duration::from_millis(500), "{intervals:?}");
    let svg = std::fs::read_to_string(&plot).expect("the plot");
    let throughput = series(polylines(&svg, "#1F77B4"));
    assert_eq!(
        throughput.len(),
        intervals.len(),
        "a point for each interval: {throughput:?}"
    );
    let p99 = series(polylines(&svg, "#9467BD"));
    let p_max = series(polylines(&svg, "#FF7F0E"));
    assert_eq!(
        p_max.len(),
        intervals.len(),
        "pMax for each interval: {p_max:?}"
    );
    for (worst, p99) in p_max.iter().zip(&p99) {
        // Higher on the picture: a smaller y.
        assert!(
            worst.1 <= p99.1 + 0.5,
            "pMax below p99: {p_max:?} vs {p99:?}"
        );
    }
    let document = roxmltree::Document::parse(&svg).expect("well-formed XML");
    assert!(
        document
            .descendants()
            .any(|node| node.has_tag_name("text") && node.text().map(str::trim) == Some("pMax")),
        "pMax in the legend"
    );
}
