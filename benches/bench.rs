//! `cargo bench`: roachbank's throughput beside the server's own limits, measured in one run on
//! one server — `points` against psql's `\copy` of the same rows, `transfer` against pgbench
//! running the same transaction — each roachbank figure printed as a ratio to its limit.
//!
//! The server is a throwaway PostgreSQL started like the tests' (initdb + pg_ctl), but with
//! PostgreSQL's default durability (fsync on); `TEST_DATABASE_URL` points it at an existing
//! server instead. Knobs: `BENCH_POINTS` (rows per points run, default 200000) and
//! `BENCH_SECONDS` (seconds per transfer run, default 8).

// The integration tests' support, for its throwaway server; the bench uses only that part.
#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code, unused_imports, unused_macros)]
mod support;

use diesel_retry::RetryPolicy;
use roachbank::bank::points::{self, LoadMethod};
use roachbank::bank::{self, TransferStyle};
use roachbank::db::config::{DatabaseConfig, UrlSource};
use roachbank::db::{ConnectOptions, Database};
use roachbank::workload::points::PointsRun;
use roachbank::workload::stats::Latencies;
use roachbank::workload::{RunLength, TransferRun};
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};
use support::TestServer;

/// Accounts the transfer workload moves money between (as the numbers to beat were measured).
const ACCOUNTS: u64 = 100;
/// Chunk sizes the points workload is measured at.
const CHUNK_SIZES: [u64; 3] = [100, 1_000, 10_000];
/// Runs per points figure; the best is kept (the machine is shared, noise only slows).
const RUNS: usize = 3;
/// Worker counts the transfer workload is measured at.
const WORKERS: [u32; 3] = [1, 4, 8];

fn main() {
    let rows: u64 = env_number("BENCH_POINTS", 200_000);
    let seconds: u64 = env_number("BENCH_SECONDS", 8);
    let owned;
    let server: &TestServer = if std::env::var("TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        support::server()
    } else {
        owned = support::start_durable_server();
        &owned
    };
    println!("# roachbank benchmark");
    println!();
    println!(
        "server: {}",
        server
            .psql("postgres", "SELECT version()")
            .lines()
            .next()
            .unwrap_or("?")
    );
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_total()
    );
    println!();
    points_table(server, rows);
    println!();
    peak_memory(server, env_number("BENCH_RSS_POINTS", 10_000_000));
    println!();
    transfers_table(server, Duration::from_secs(seconds));
}

/// A fresh database on `server`, opened through the library.
fn fresh_database(server: &TestServer, name: &str, pool_size: u32) -> (String, Database) {
    server.psql("postgres", &format!("DROP DATABASE IF EXISTS {name}"));
    server.psql("postgres", &format!("CREATE DATABASE {name}"));
    let url = server.url_for(name);
    let config = DatabaseConfig::parse(&url, UrlSource::Flag).expect("bench URL");
    let options = ConnectOptions {
        pool_size,
        ..ConnectOptions::default()
    };
    let db = Database::open(config, &options).expect("open the bench database");
    (name.to_string(), db)
}

fn points_table(server: &TestServer, rows: u64) {
    let (name, db) = fresh_database(server, "bench_points", points::SERVER_LOADERS);
    let policy = RetryPolicy::default();
    let truncate = || server.psql(&name, "TRUNCATE points");

    // The server's own limit: psql \copy of the same kind of rows, one transaction.
    let file = std::env::temp_dir().join("roachbank-bench-points.txt");
    write_points_file(&file, rows);
    let psql_rate = best_of(|| {
        truncate();
        let started = Instant::now();
        server.psql(
            &name,
            &format!("\\copy points (id, x, y, z) FROM '{}'", file.display()),
        );
        rows as f64 / started.elapsed().as_secs_f64()
    });
    let _ = std::fs::remove_file(&file);

    println!("## points ({rows} rows per run, best of {RUNS})");
    println!();
    println!("| method | chunk size | rows/s | × psql \\copy |");
    println!("|---|---:|---:|---:|");
    println!("| psql `\\copy` (one transaction) | {rows} | {psql_rate:.0} | 1.00 |");
    for method in [LoadMethod::Copy, LoadMethod::Insert] {
        for chunk in CHUNK_SIZES {
            let rate = best_of(|| {
                truncate();
                PointsRun::new(rows, chunk)
                    .method(method)
                    .run(&db, &policy, &mut |_| {})
                    .expect("points run")
                    .rows_per_second()
            });
            println!(
                "| roachbank {} | {chunk} | {rate:.0} | {:.2} |",
                match method {
                    LoadMethod::Copy => "copy",
                    LoadMethod::Insert => "insert",
                },
                rate / psql_rate
            );
        }
    }
}

/// Peak resident memory of the `roachbank points` command for a large N (it must stay flat).
fn peak_memory(server: &TestServer, rows: u64) {
    let (name, db) = fresh_database(server, "bench_memory", 1);
    drop(db);
    let output = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_roachbank"))
        .args([
            "--database-url",
            &server.url_for(&name),
            "points",
            &rows.to_string(),
        ])
        .output()
        .expect("run /usr/bin/time (Debian: apt-get install time)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "points failed: {stderr}");
    let peak_kib: u64 = stderr
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    println!("## memory");
    println!();
    println!(
        "`roachbank points {rows}` (default method and chunk size): peak RSS {:.1} MiB; {}",
        peak_kib as f64 / 1024.0,
        String::from_utf8_lossy(&output.stdout).trim()
    );
}

/// Rows like `points` writes, in COPY's text format.
fn write_points_file(path: &std::path::Path, rows: u64) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("points file"));
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        // xorshift: cheap numbers in [0, 1024)
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 * 1024.0
    };
    for id in 0..rows {
        writeln!(
            out,
            "{}\t{}\t{}\t{}",
            (1i64 << 40) + id as i64,
            next(),
            next(),
            next()
        )
        .expect("write points file");
    }
    out.flush().expect("flush points file");
    // psql runs as the invoking user, so the file only needs to be readable by us.
}

/// One row of the transfer table: throughput and tail latency of one run.
struct Throughput {
    tps: f64,
    p99: Duration,
}

impl Throughput {
    fn cell(&self) -> String {
        format!("{:.0} | {:.2}", self.tps, self.p99.as_secs_f64() * 1000.0)
    }
}

fn transfers_table(server: &TestServer, duration: Duration) {
    println!(
        "## transfers ({ACCOUNTS} accounts, SERIALIZABLE, {} s per run, each on a fresh database)",
        duration.as_secs()
    );
    println!();
    println!(
        "roachbank's default is one statement per transfer (picks, both balances and the ledger \
         row; prepared once per connection); `tutorial` is the tutorial's interactive \
         transaction. pgbench runs the same work as an interactive transaction (BEGIN; SELECT; \
         UPDATE; UPDATE; INSERT ledger; COMMIT) and as one statement (`benches/pgbench/`). \
         Latencies in ms."
    );
    println!();
    println!(
        "| workers | roachbank tps | p99 | retries per transfer | failed | check | tutorial tps | p99 \
         | pgbench interactive tps | p99 | pgbench one statement tps | p99 \
         | × pgbench one statement | × pgbench interactive |"
    );
    println!("|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let scripts = std::env::temp_dir().join("roachbank-bench-pgbench");
    std::fs::create_dir_all(&scripts).expect("a directory for the pgbench scripts");
    let interactive = scripts.join("transfer_ledger.sql");
    let one_statement = scripts.join("transfer_one_statement.sql");
    std::fs::write(&interactive, PGBENCH_INTERACTIVE).expect("write a pgbench script");
    std::fs::write(&one_statement, PGBENCH_ONE_STATEMENT).expect("write a pgbench script");
    for workers in WORKERS {
        let policy = RetryPolicy::default();
        let run = |style| {
            let (_, db) = fresh_database(server, "bench_transfers", workers);
            bank::seed(&db, &policy, ACCOUNTS).expect("seed");
            let report = TransferRun::new(RunLength::Duration(duration), workers)
                .style(style)
                .run(&db, &policy, &|_| {});
            let audit = bank::audit::audit(&db, &policy).expect("audit").value;
            (report.summary, audit.is_consistent())
        };
        let (ours, consistent) = run(TransferStyle::OneStatement);
        let (tutorial, _) = run(TransferStyle::Tutorial);
        let pgbench_interactive = pgbench(server, &interactive, workers, duration, false);
        let pgbench_one = pgbench(server, &one_statement, workers, duration, true);
        let throughput = |summary: &roachbank::workload::TransferSummary| Throughput {
            tps: summary.per_second(),
            p99: summary.latency_quantile(0.99).unwrap_or_default(),
        };
        let (ours_figures, tutorial_figures) = (throughput(&ours), throughput(&tutorial));
        println!(
            "| {workers} | {} | {:.3} | {} | {} | {} | {} | {} | {:.2} | {:.2} |",
            ours_figures.cell(),
            ours.retries as f64 / ours.done.max(1) as f64,
            ours.failed + ours.unknown,
            if consistent { "OK" } else { "FAILED" },
            tutorial_figures.cell(),
            pgbench_interactive.cell(),
            pgbench_one.cell(),
            ours_figures.tps / pgbench_one.tps,
            ours_figures.tps / pgbench_interactive.tps,
        );
    }
    let _ = std::fs::remove_dir_all(&scripts);
}

/// pgbench's transfer as an interactive transaction, with the ledger INSERT (the reference
/// script beside DESIGN.md).
const PGBENCH_INTERACTIVE: &str = include_str!("pgbench/transfer_ledger.sql");
/// pgbench's transfer as one statement (a data-modifying WITH).
const PGBENCH_ONE_STATEMENT: &str = include_str!("pgbench/transfer_one_statement.sql");

/// Runs pgbench with `script` on `clients` clients for `duration`, on a fresh database with
/// roachbank's tables holding accounts 1..=ACCOUNTS (the ids the scripts draw); `serializable`
/// sets the session default for a script that sends no BEGIN. Its throughput, and the p99 of
/// its per-transaction latency log.
fn pgbench(
    server: &TestServer,
    script: &std::path::Path,
    clients: u32,
    duration: Duration,
    serializable: bool,
) -> Throughput {
    let (name, db) = fresh_database(server, "bench_pgbench", 1);
    drop(db);
    server.psql(
        &name,
        &format!(
            "INSERT INTO accounts (id, balance) \
             SELECT g, 1000000 FROM generate_series(1, {ACCOUNTS}) g"
        ),
    );
    let logs = tempfile::tempdir().expect("a directory for pgbench's logs");
    let mut command = Command::new("pgbench");
    if serializable {
        command.env("PGOPTIONS", "-c default_transaction_isolation=serializable");
    }
    let output = command
        .args(["-n", "-f"])
        .arg(script)
        .args(["-c", &clients.to_string(), "-j", &clients.to_string()])
        .args(["-T", &duration.as_secs().to_string(), "--max-tries=1000"])
        .arg("--log")
        .arg(format!(
            "--log-prefix={}",
            logs.path().join("pgbench").display()
        ))
        .arg(server.url_for(&name))
        .output()
        .expect("run pgbench (Debian: apt-get install postgresql-client)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pgbench failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tps = text
        .lines()
        .find(|line| line.starts_with("tps = "))
        .and_then(|line| line.split_whitespace().nth(2))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0);
    // Each log line: client, transaction number, latency in µs, script, epoch s, epoch µs.
    let mut latencies = Latencies::new();
    for entry in std::fs::read_dir(logs.path()).expect("pgbench's logs") {
        let log = std::fs::read_to_string(entry.expect("a log").path()).expect("a log");
        for micros in log
            .lines()
            .filter_map(|line| line.split_whitespace().nth(2)?.parse::<u64>().ok())
        {
            latencies.record(Duration::from_micros(micros));
        }
    }
    Throughput {
        tps,
        p99: latencies.quantile(0.99).unwrap_or_default(),
    }
}

/// The highest of [`RUNS`] measurements.
fn best_of(mut measure: impl FnMut() -> f64) -> f64 {
    (0..RUNS).map(|_| measure()).fold(0.0, f64::max)
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn memory_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("MemTotal:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or_else(
            || "memory unknown".to_string(),
            |kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0),
        )
}
