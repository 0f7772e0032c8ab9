//! `cargo bench`: roachbank's throughput beside the server's own limits, measured in one run on
//! one server — `points` against psql's `\copy` of the same rows, `transfer` against pgbench
//! running the same transaction — each roachbank figure printed as a ratio to its limit.
//!
//! The server is a throwaway PostgreSQL started like the tests' (initdb + pg_ctl), but with
//! PostgreSQL's default durability (fsync on); `TEST_DATABASE_URL` points it at an existing
//! server instead. Knobs: `BENCH_POINTS` (rows per points run, default 200000) and
//! `BENCH_SECONDS` (seconds per transfer run, default 8).

#[path = "../tests/support/mod.rs"]
#[allow(unused_macros)]
mod support;

use roachbank::bank;
use roachbank::bank::points::{self, LoadMethod};
use roachbank::db::config::{DatabaseConfig, UrlSource};
use roachbank::db::{ConnectOptions, Database};
use roachbank::retry::RetryPolicy;
use roachbank::workload::points::PointsRun;
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

fn transfers_table(server: &TestServer, duration: Duration) {
    println!(
        "## transfers ({ACCOUNTS} accounts, SERIALIZABLE, {} s per run)",
        duration.as_secs()
    );
    println!();
    println!(
        "| workers | roachbank transfers/s | retries per transfer | failed | pgbench tps | pgbench retried | × pgbench |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let script = std::env::temp_dir().join("roachbank-bench-transfer.sql");
    std::fs::write(&script, PGBENCH_TRANSFER).expect("write the pgbench script");
    for workers in WORKERS {
        let (name, db) = fresh_database(server, "bench_transfers", workers);
        let policy = RetryPolicy::default();
        bank::seed(&db, &policy, ACCOUNTS).expect("seed");
        let report =
            TransferRun::new(RunLength::Duration(duration), workers).run(&db, &policy, &|_| {});
        let summary = report.summary;
        let ours = summary.per_second();
        drop(db);
        let (tps, retried) = pgbench(server, &name, &script, workers, duration);
        println!(
            "| {workers} | {ours:.0} | {:.3} | {} | {tps:.0} | {retried} | {:.2} |",
            summary.retries as f64 / summary.done.max(1) as f64,
            summary.failed + summary.unknown,
            ours / tps
        );
    }
    let _ = std::fs::remove_file(&script);
}

/// The transfer as roachbank runs it (pick two accounts at random in the database, move half
/// of the source's balance with the two rows written in id order, write the ledger row), for
/// pgbench.
const PGBENCH_TRANSFER: &str = "\
\\set r1 random(0, 999999999)
\\set r2 random(0, 999999999)
\\set ledger_id random(4611686018427387904, 9223372036854775806)
BEGIN ISOLATION LEVEL SERIALIZABLE;
(SELECT id AS src, balance AS bal FROM accounts WHERE id >= :r1 ORDER BY id LIMIT 1) UNION ALL (SELECT id, balance FROM accounts ORDER BY id LIMIT 1) LIMIT 1 \\gset
(SELECT id AS dst FROM accounts WHERE id >= :r2 AND id <> :src ORDER BY id LIMIT 1) UNION ALL (SELECT id FROM accounts WHERE id <> :src ORDER BY id LIMIT 1) LIMIT 1 \\gset
\\if :src < :dst
UPDATE accounts SET balance = :bal - :bal / 2 WHERE id = :src;
UPDATE accounts SET balance = balance + :bal / 2 WHERE id = :dst;
\\else
UPDATE accounts SET balance = balance + :bal / 2 WHERE id = :dst;
UPDATE accounts SET balance = :bal - :bal / 2 WHERE id = :src;
\\endif
INSERT INTO transfers (id, source_id, sink_id, amount) VALUES (:ledger_id, :src, :dst, :bal / 2);
COMMIT;
";

/// Runs pgbench with `script` on `clients` clients for `duration`; (tps, transactions retried).
fn pgbench(
    server: &TestServer,
    database: &str,
    script: &std::path::Path,
    clients: u32,
    duration: Duration,
) -> (f64, u64) {
    let output = Command::new("pgbench")
        .args(["-n", "-f"])
        .arg(script)
        .args(["-c", &clients.to_string(), "-j", &clients.to_string()])
        .args(["-T", &duration.as_secs().to_string(), "--max-tries=1000"])
        .arg(server.url_for(database))
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
    let retried = text
        .lines()
        .find(|line| line.starts_with("number of transactions retried"))
        .and_then(|line| line.split(':').nth(1))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    (tps, retried)
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
