//! `cargo bench`: roachbank's throughput beside the server's own limits, measured in one run on
//! one server — `points` against psql's `\copy` of the same rows, `transfer` against pgbench
//! running the same transaction — each roachbank figure printed as a ratio to its limit.
//!
//! The server is a throwaway PostgreSQL started like the tests' (initdb + pg_ctl), but with
//! PostgreSQL's default durability (fsync on); `TEST_DATABASE_URL` points it at an existing
//! server instead. Knobs: `BENCH_POINTS` (rows per points run, default 200000),
//! `BENCH_SECONDS` (seconds per transfer run, default 8), `BENCH_ONLY` (one section, or several
//! separated by commas: `points`, `memory`, `seed`, `transfers`, `scale` — transfers on 100 and 1,000,000 accounts
//! and `check` on a 2M-row ledger (`BENCH_CHECK_LARGE=1` adds 10M) —, `async`, the
//! async-vs-sync table of diesel-retry's two drivers, or `sqlite`, SQLite's writers: throughput
//! and pMax in one process and in several, which needs no server), `BENCH_TOKIO_WORKERS` (the
//! async table's tokio worker threads; default one per core), `BENCH_SQLITE_DIR` (where the
//! SQLite files go; default the system's temporary directory), `BENCH_SEED` (accounts per seed
//! run, default 1000000), `BENCH_SEED_RUNS` (runs per seed figure, default 5) and
//! `BENCH_SEED_LARGE=1` (the seed table at 10,000,000 accounts too: about half an hour at 5
//! runs). Every section ends with the host's CPU steal during it ([`StealMeter`]).

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
/// Runs per seed figure by default (`BENCH_SEED_RUNS` sets another number), roachbank's and
/// its reference's taking turns: their ratio is close to one (both are bound by the same server
/// work) and a run moves by ±5% here, so more of them.
const SEED_RUNS: usize = 5;

/// Runs per seed figure: `BENCH_SEED_RUNS`, else [`SEED_RUNS`]; at least one.
fn seed_runs() -> usize {
    (env_number("BENCH_SEED_RUNS", SEED_RUNS as u64) as usize).max(1)
}
/// Worker counts the transfer workload is measured at.
const WORKERS: [u32; 3] = [1, 4, 8];

fn main() {
    let rows: u64 = env_number("BENCH_POINTS", 200_000);
    let seconds: u64 = env_number("BENCH_SECONDS", 8);
    let only = std::env::var("BENCH_ONLY")
        .ok()
        .filter(|only| !only.is_empty());
    let wanted = |section: &str| {
        only.as_deref()
            .is_none_or(|only| only.split(',').any(|one| one.trim() == section))
    };
    let owned;
    // The server sections' server; none for the SQLite section alone.
    let server: Option<&TestServer> =
        if !["points", "memory", "seed", "transfers", "scale", "async"]
            .into_iter()
            .any(wanted)
        {
            None
        } else if std::env::var("TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
            Some(support::server())
        } else {
            owned = support::start_durable_server();
            Some(&owned)
        };
    println!("# roachbank benchmark");
    println!();
    if let Some(server) = server {
        println!(
            "server: {}",
            server
                .psql("postgres", "SELECT version()")
                .lines()
                .next()
                .unwrap_or("?")
        );
    }
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_total()
    );
    let server = || server.expect("started for the server sections");
    if wanted("points") {
        println!();
        with_steal(|| points_table(server(), rows));
    }
    if wanted("memory") {
        println!();
        with_steal(|| peak_memory(server(), env_number("BENCH_RSS_POINTS", 10_000_000)));
    }
    if wanted("seed") {
        let mut sizes = vec![env_number("BENCH_SEED", 1_000_000)];
        if env_number("BENCH_SEED_LARGE", 0) == 1 {
            sizes.push(10_000_000);
        }
        println!();
        with_steal(|| seed_table(server(), &sizes));
    }
    if wanted("transfers") {
        println!();
        with_steal(|| transfers_table(server(), Duration::from_secs(seconds)));
    }
    if wanted("scale") {
        println!();
        with_steal(|| scale_table(server(), Duration::from_secs(seconds)));
    }
    if wanted("async") {
        println!();
        with_steal(|| async_vs_sync_table(server(), Duration::from_secs(seconds)));
    }
    if wanted("sqlite") {
        println!();
        with_steal(|| sqlite_writers::section(Duration::from_secs(seconds)));
    }
}

/// A fresh database on `server`, opened through the library.
fn fresh_database(server: &TestServer, name: &str, pool_size: u32) -> (String, Database) {
    server.psql("postgres", &format!("DROP DATABASE IF EXISTS {name}"));
    server.psql("postgres", &format!("CREATE DATABASE {name}"));
    let url = server.url_for(name);
    let config = DatabaseConfig::parse(&url, UrlSource::Flag).expect("bench URL");
    let options = ConnectOptions {
        pool_size,
        // As `roachbank transfer` sets its sessions: rows found by key, never by a scan.
        avoid_sequential_scans: true,
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
    let run = run_measured(&server.url_for(&name), &["points", &rows.to_string()]);
    println!("## memory");
    println!();
    println!(
        "`roachbank points {rows}` (default method and chunk size): peak RSS {:.1} MiB; {}",
        run.peak_mib, run.stdout
    );
}

/// A `roachbank` command's wall time, peak resident memory and output.
struct MeasuredRun {
    seconds: f64,
    peak_mib: f64,
    stdout: String,
}

/// Runs `roachbank --database-url <url> <args>` under `/usr/bin/time -v`; panics if it fails.
fn run_measured(url: &str, args: &[&str]) -> MeasuredRun {
    let started = Instant::now();
    let output = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_roachbank"))
        .args(["--database-url", url])
        .args(args)
        .output()
        .expect("run /usr/bin/time (Debian: apt-get install time)");
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "roachbank {args:?} failed: {stderr}"
    );
    let peak_kib: u64 = stderr
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    MeasuredRun {
        seconds,
        peak_mib: peak_kib as f64 / 1024.0,
        stdout: String::from_utf8_lossy(&output.stdout).trim().to_string(),
    }
}

/// Accounts of the large bank the scale rows run on (the ids spread over `[0, 10^9)` as `seed`
/// spreads them).
const LARGE_BANK: u64 = 1_000_000;

/// Fills a fresh, migrated database with `accounts` accounts as `seed` makes them (one id in
/// each of `accounts` equal slices of `[0, 10^9)`, a random balance in `[0, 10^6)`), their
/// opening deposits and, if `chain`, one transfer of 1 from each account to the next (round),
/// which leaves every balance as it was and the ledger at `2 · accounts` rows — a bank `check`
/// finds consistent. Set-based SQL: the bank
/// is the bench's input, not what it measures.
fn fill_bank(server: &TestServer, name: &str, accounts: u64, chain: bool) {
    let slice = 1_000_000_000 / accounts;
    server.psql(
        name,
        &format!(
            "INSERT INTO accounts (id, balance) \
             SELECT (g - 1) * {slice} + floor(random() * {slice})::int8, \
                    floor(random() * 1000000)::int8 \
             FROM generate_series(1, {accounts}) g; \
             INSERT INTO transfers (id, source_id, sink_id, amount) \
             SELECT -row_number() OVER (ORDER BY id), NULL, id, balance FROM accounts"
        ),
    );
    if chain {
        server.psql(
            name,
            "INSERT INTO transfers (id, source_id, sink_id, amount) \
             SELECT row_number() OVER (ORDER BY id), id, \
                    coalesce(lead(id) OVER (ORDER BY id), min(id) OVER ()), 1 \
             FROM accounts",
        );
    }
    server.psql(name, "ANALYZE");
}

/// Transfers on a small and a large bank, and `check` on large ledgers: seconds and peak RSS.
/// `BENCH_CHECK_LARGE=1` adds the 10M-row ledger (slow to build).
fn scale_table(server: &TestServer, duration: Duration) {
    println!("## at scale");
    println!();
    println!(
        "roachbank transfers (one statement, 8 workers, {} s) on a bank of {ACCOUNTS} and of \
         {LARGE_BANK} accounts; latencies in ms.",
        duration.as_secs()
    );
    println!();
    println!("| accounts | tps | p50 | p99 | pMax | retries per transfer | failed |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let policy = RetryPolicy::default();
    for accounts in [ACCOUNTS, LARGE_BANK] {
        let (name, db) = fresh_database(server, "bench_scale", 8);
        fill_bank(server, &name, accounts, false);
        let summary = TransferRun::new(RunLength::Duration(duration), 8)
            .run(&db, &policy, &|_| {})
            .summary;
        let ms = |q: f64| {
            summary
                .latency_quantile(q)
                .unwrap_or_default()
                .as_secs_f64()
                * 1e3
        };
        println!(
            "| {accounts} | {:.0} | {:.2} | {:.2} | {:.2} | {:.3} | {} |",
            summary.per_second(),
            ms(0.5),
            ms(0.99),
            ms(1.0),
            summary.retries as f64 / summary.done.max(1) as f64,
            summary.failed + summary.unknown,
        );
    }
    println!();
    println!(
        "`roachbank check` on a ledger of N rows (N/2 accounts, a deposit and a transfer each):"
    );
    println!();
    println!("| ledger rows | seconds | rows/s | peak RSS (MiB) | result |");
    println!("|---:|---:|---:|---:|---|");
    let mut ledgers = vec![2_000_000u64];
    if std::env::var("BENCH_CHECK_LARGE").is_ok_and(|v| v == "1") {
        ledgers.push(10_000_000);
    }
    for rows in ledgers {
        let (name, db) = fresh_database(server, "bench_check", 1);
        drop(db);
        fill_bank(server, &name, rows / 2, true);
        let run = run_measured(&server.url_for(&name), &["check"]);
        println!(
            "| {rows} | {:.2} | {:.0} | {:.1} | {} |",
            run.seconds,
            rows as f64 / run.seconds,
            run.peak_mib,
            run.stdout.lines().next().unwrap_or("")
        );
    }
}

/// One timed load: its wall-clock time and, for a `roachbank` run, its peak RSS.
struct Load {
    seconds: f64,
    peak_kib: Option<u64>,
}

/// `roachbank seed --accounts N` beside the databases' own bulk loaders taking the same rows
/// (N accounts and their N opening deposits) in one transaction: psql's `\copy` of both tables
/// on PostgreSQL, the `sqlite3` shell's `.import` on SQLite (deposits imported into a temporary
/// table and moved over with `INSERT … SELECT`: `.import` cannot write the NULL source). Each
/// run starts from empty tables (a CHECKPOINT first on PostgreSQL, a copy of a freshly
/// migrated file on SQLite); roachbank's and the reference's runs take turns, best of
/// [`seed_runs`].
fn seed_table(server: &TestServer, sizes: &[u64]) {
    let files = tempfile::tempdir().expect("a directory for the seed files");
    let sqlite3 = Command::new("sqlite3").arg("--version").output().is_ok();
    println!(
        "## seed (best of {}; rows are accounts + deposits)",
        seed_runs()
    );
    println!();
    println!("| database | accounts | loader | seconds | rows/s | × reference | peak RSS (MiB) |");
    println!("|---|---:|---|---:|---:|---:|---:|");
    for &accounts in sizes {
        let rows = write_seed_files(files.path(), accounts);
        let row = |database: &str, loader: &str, load: &Load, reference: &Load| {
            println!(
                "| {database} | {accounts} | {loader} | {:.2} | {:.0} | {:.2} | {} |",
                load.seconds,
                rows as f64 / load.seconds,
                reference.seconds / load.seconds,
                load.peak_kib.map_or("–".to_string(), |kib| format!(
                    "{:.1}",
                    kib as f64 / 1024.0
                ))
            );
        };

        let (name, db) = fresh_database(server, "bench_seed", 1);
        drop(db);
        let empty = || {
            server.psql(&name, "TRUNCATE accounts, transfers");
            server.psql(&name, "CHECKPOINT");
        };
        let url = server.url_for(&name);
        let script = files.path().join("copy.psql");
        std::fs::write(
            &script,
            format!(
                "\\copy accounts (id, balance) FROM '{}'\n\
                 \\copy transfers (id, source_id, sink_id, amount) FROM '{}'\n",
                files.path().join("accounts.txt").display(),
                files.path().join("deposits.txt").display()
            ),
        )
        .expect("write the psql script");
        let (psql, ours) = best_loads(
            || {
                empty();
                timed(
                    Command::new("psql")
                        .args(["-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", &url, "-f"])
                        .arg(&script),
                    None,
                )
            },
            || {
                empty();
                seed_run(&url, accounts)
            },
        );
        row("PostgreSQL", "psql `\\copy`, one transaction", &psql, &psql);
        row("PostgreSQL", "roachbank seed", &ours, &psql);

        if !sqlite3 {
            println!("| SQLite | {accounts} | sqlite3 shell not found: no SQLite rows | | | | |");
            continue;
        }
        let template = files.path().join("template.db");
        let file = files.path().join("bench.db");
        let _ = std::fs::remove_file(&template);
        // A freshly migrated file (WAL mode, as roachbank leaves it) to copy before each run:
        // `points 1` creates the bank (`balance` never does), its one point deleted below.
        let migrated = Command::new(env!("CARGO_BIN_EXE_roachbank"))
            .args(["--database-url", &sqlite_url(&template), "points", "1"])
            .output()
            .expect("run roachbank points");
        assert!(
            migrated.status.success(),
            "migrating the SQLite template failed"
        );
        // No rows; everything in the file itself, none of it left in a WAL file beside it.
        let checkpointed = Command::new("sqlite3")
            .arg(&template)
            .arg("DELETE FROM points; PRAGMA wal_checkpoint(TRUNCATE)")
            .output()
            .expect("run sqlite3");
        assert!(
            checkpointed.status.success(),
            "checkpointing the template failed"
        );
        let fresh = || {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
            std::fs::copy(&template, &file).expect("copy the SQLite template");
        };
        let import = format!(
            ".mode csv\nBEGIN;\n.import {} accounts\n\
             CREATE TEMP TABLE deposits (id INTEGER PRIMARY KEY, sink_id, amount);\n\
             .import {} deposits\n\
             INSERT INTO transfers (id, source_id, sink_id, amount) \
             SELECT id, NULL, sink_id, amount FROM temp.deposits;\nCOMMIT;\n",
            files.path().join("accounts.csv").display(),
            files.path().join("deposits.csv").display()
        );
        let (shell, ours) = best_loads(
            || {
                fresh();
                timed(Command::new("sqlite3").arg(&file), Some(&import))
            },
            || {
                fresh();
                seed_run(&sqlite_url(&file), accounts)
            },
        );
        row(
            "SQLite",
            "sqlite3 shell `.import`, one transaction",
            &shell,
            &shell,
        );
        row("SQLite", "roachbank seed", &ours, &shell);
    }
}

/// `sqlite://` URL of a file.
fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite://{}", path.display())
}

/// The best (fastest) of [`seed_runs`] loads by `reference` and by `ours`, taking turns.
fn best_loads(mut reference: impl FnMut() -> Load, mut ours: impl FnMut() -> Load) -> (Load, Load) {
    let mut best: (Option<Load>, Option<Load>) = (None, None);
    let keep = |best: &mut Option<Load>, load: Load| {
        if best.as_ref().is_none_or(|b| load.seconds < b.seconds) {
            *best = Some(load);
        }
    };
    for _ in 0..seed_runs() {
        keep(&mut best.0, reference());
        keep(&mut best.1, ours());
    }
    (
        best.0.expect("seed_runs() > 0"),
        best.1.expect("seed_runs() > 0"),
    )
}

/// `roachbank seed --accounts N` on `url` under `/usr/bin/time -v`: its time and peak RSS.
fn seed_run(url: &str, accounts: u64) -> Load {
    let started = Instant::now();
    let output = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_roachbank"))
        .args([
            "--database-url",
            url,
            "seed",
            "--accounts",
            &accounts.to_string(),
        ])
        .output()
        .expect("run /usr/bin/time (Debian: apt-get install time)");
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "seed failed: {stderr}");
    Load {
        seconds,
        peak_kib: max_rss_kib(&stderr),
    }
}

/// The peak RSS `/usr/bin/time -v` reports.
fn max_rss_kib(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|line| {
        line.trim()
            .strip_prefix("Maximum resident set size (kbytes): ")
            .and_then(|value| value.parse().ok())
    })
}

/// A reference loader's run, timed from its start to its exit, with `input` on its standard
/// input if there is one.
fn timed(command: &mut Command, input: Option<&str>) -> Load {
    let started = Instant::now();
    let mut child = command
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the reference loader");
    if let Some(input) = input {
        child
            .stdin
            .take()
            .expect("a piped stdin")
            .write_all(input.as_bytes())
            .expect("feed the reference loader");
    }
    let status = child.wait().expect("wait for the reference loader");
    assert!(status.success(), "the reference loader failed: {status}");
    Load {
        seconds: started.elapsed().as_secs_f64(),
        peak_kib: None,
    }
}

/// The rows `roachbank seed --accounts N` writes, in the order it writes them — one account in
/// each N-th of the id space with a random balance, then its deposit in a block of ledger ids —
/// as COPY text (`accounts.txt`, `deposits.txt`) and as CSV for the sqlite3 shell
/// (`accounts.csv`, `deposits.csv` without the NULL source). Returns the number of rows.
fn write_seed_files(dir: &std::path::Path, accounts: u64) -> u64 {
    use rand::Rng;
    let create = |name: &str| {
        std::io::BufWriter::new(std::fs::File::create(dir.join(name)).expect("a seed file"))
    };
    let (mut accounts_txt, mut deposits_txt) = (create("accounts.txt"), create("deposits.txt"));
    let (mut accounts_csv, mut deposits_csv) = (create("accounts.csv"), create("deposits.csv"));
    let slices = bank::AccountIdSlices::new(accounts);
    // Deposit ids as a seed on PostgreSQL or SQLite draws them: one transaction, one block.
    let deposits = bank::DepositIds::for_seed(bank::MAX_SEED_ACCOUNTS);
    let mut rng = rand::rng();
    for slice in 0..accounts {
        let id = slices.draw(slice, &mut rng);
        let balance = rng.random_range(0..bank::OPENING_BALANCE_SPACE);
        let deposit = deposits.id(slice);
        writeln!(accounts_txt, "{id}\t{balance}").expect("write a seed file");
        writeln!(deposits_txt, "{deposit}\t\\N\t{id}\t{balance}").expect("write a seed file");
        writeln!(accounts_csv, "{id},{balance}").expect("write a seed file");
        writeln!(deposits_csv, "{deposit},{id},{balance}").expect("write a seed file");
    }
    for mut file in [accounts_txt, deposits_txt, accounts_csv, deposits_csv] {
        file.flush().expect("flush a seed file");
    }
    2 * accounts
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

/// Transfers at 1, 4 and 8 workers: roachbank's one statement and the tutorial's transaction
/// beside pgbench running the same work as an interactive transaction and as one statement, in
/// both of its protocols (`-M simple`, which parses every statement, and `-M prepared`, the
/// server's limit for this work), and pgbench running roachbank's own statement prepared on a
/// bank seeded as roachbank's (the same picks in the database: what is left between the two is
/// the client's). Per worker count the seven runs take turns, [`RUNS`] rounds, and each keeps
/// its best run by throughput (a stall only slows).
fn transfers_table(server: &TestServer, duration: Duration) {
    println!(
        "## transfers ({ACCOUNTS} accounts, SERIALIZABLE, best of {RUNS} runs of {} s, the runs \
         taking turns, each on a fresh database)",
        duration.as_secs()
    );
    println!();
    println!(
        "roachbank's default is one statement per transfer (picks, both balances and the ledger \
         row; prepared once per connection); `tutorial` is the tutorial's interactive \
         transaction. pgbench runs the same work as an interactive transaction (BEGIN; SELECT; \
         UPDATE; UPDATE; INSERT ledger; COMMIT) and as one statement (`benches/pgbench/`), with \
         `-M simple` (a parse per statement) and `-M prepared`; the limit is pgbench's one \
         statement `-M prepared`, which is given its two accounts (ids 1..100), where \
         roachbank's statement finds two at random among whatever accounts the table holds. \
         `same statement` is pgbench `-M prepared` running roachbank's own statement (its text \
         from `TransferStatement`, its random points drawn as roachbank draws them) on a bank \
         seeded as roachbank's: × same statement is the client's share of the gap, the rest is \
         the statement's. Latencies in ms."
    );
    println!();
    println!(
        "| workers | roachbank tps | p99 | retries per transfer | failed | check | tutorial tps \
         | p99 | pgbench interactive simple tps | p99 | interactive prepared tps | p99 \
         | one statement simple tps | p99 | one statement prepared tps | p99 \
         | same statement prepared tps | p99 \
         | × limit (one statement prepared) | × one statement simple | × same statement \
         | tutorial × interactive prepared |"
    );
    println!(
        "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let scripts = std::env::temp_dir().join("roachbank-bench-pgbench");
    std::fs::create_dir_all(&scripts).expect("a directory for the pgbench scripts");
    let interactive = scripts.join("transfer_ledger.sql");
    let one_statement = scripts.join("transfer_one_statement.sql");
    let same_statement = scripts.join("transfer_roachbank_statement.sql");
    std::fs::write(&interactive, PGBENCH_INTERACTIVE).expect("write a pgbench script");
    std::fs::write(&one_statement, PGBENCH_ONE_STATEMENT).expect("write a pgbench script");
    std::fs::write(&same_statement, roachbank_statement_script()).expect("write a pgbench script");
    let policy = RetryPolicy::default();
    let keep_best = |best: &mut Option<Throughput>, figures: Throughput| {
        if best.as_ref().is_none_or(|best| figures.tps > best.tps) {
            *best = Some(figures);
        }
    };
    for workers in WORKERS {
        let run = |style| {
            let (_, db) = fresh_database(server, "bench_transfers", workers);
            bank::seed(&db, &policy, ACCOUNTS).expect("seed");
            let report = TransferRun::new(RunLength::Duration(duration), workers)
                .style(style)
                .run(&db, &policy, &|_| {});
            let audit = bank::audit::audit(&db, &policy).expect("audit").value;
            (report.summary, audit.is_consistent())
        };
        let throughput = |summary: &roachbank::workload::TransferSummary| Throughput {
            tps: summary.per_second(),
            p99: summary.latency_quantile(0.99).unwrap_or_default(),
        };
        // roachbank's best run with its retries, failures summed and audits over all runs.
        let mut ours: Option<(Throughput, f64)> = None;
        let (mut failed, mut consistent) = (0, true);
        let mut tutorial = None;
        let mut pgbench_runs: [Option<Throughput>; 5] = Default::default();
        let pgbench_cases = [
            (&interactive, "simple", PgbenchBank::Numbered, false),
            (&interactive, "prepared", PgbenchBank::Numbered, false),
            (&one_statement, "simple", PgbenchBank::Numbered, true),
            (&one_statement, "prepared", PgbenchBank::Numbered, true),
            (&same_statement, "prepared", PgbenchBank::Seeded, true),
        ];
        for _ in 0..RUNS {
            let (summary, audited) = run(TransferStyle::OneStatement);
            failed += summary.failed + summary.unknown;
            consistent &= audited;
            let figures = throughput(&summary);
            if ours.as_ref().is_none_or(|(best, _)| figures.tps > best.tps) {
                let retries = summary.retries as f64 / summary.done.max(1) as f64;
                ours = Some((figures, retries));
            }
            let (summary, audited) = run(TransferStyle::Tutorial);
            failed += summary.failed + summary.unknown;
            consistent &= audited;
            keep_best(&mut tutorial, throughput(&summary));
            for (best, (script, protocol, bank, serializable)) in
                pgbench_runs.iter_mut().zip(pgbench_cases)
            {
                let run = PgbenchRun {
                    protocol,
                    bank,
                    clients: workers,
                    duration,
                    serializable,
                };
                keep_best(best, pgbench(server, script, run));
            }
        }
        let (ours, retries) = ours.expect("RUNS > 0");
        let tutorial = tutorial.expect("RUNS > 0");
        let [interactive_simple, interactive_prepared, one_simple, one_prepared, same_prepared] =
            pgbench_runs.map(|best| best.expect("RUNS > 0"));
        println!(
            "| {workers} | {} | {retries:.3} | {failed} | {} | {} | {} | {} | {} | {} | {} \
             | {:.2} | {:.2} | {:.2} | {:.2} |",
            ours.cell(),
            if consistent { "OK" } else { "FAILED" },
            tutorial.cell(),
            interactive_simple.cell(),
            interactive_prepared.cell(),
            one_simple.cell(),
            one_prepared.cell(),
            same_prepared.cell(),
            ours.tps / one_prepared.tps,
            ours.tps / one_simple.tps,
            ours.tps / same_prepared.tps,
            tutorial.tps / interactive_prepared.tps,
        );
    }
    let _ = std::fs::remove_dir_all(&scripts);
}

/// Connections in each pool of the async-vs-sync table, and threads of its sync run.
const POOL: u32 = 8;
/// Concurrent tasks the async driver is measured at, on a pool of [`POOL`].
const ASYNC_TASKS: [u32; 3] = [8, 64, 256];
/// What each account of the async-vs-sync table holds at the start.
const OPENING_BALANCE: i64 = 1_000_000;

diesel::table! {
    /// The async-vs-sync table's accounts, in a database of their own.
    driver_accounts (id) {
        id -> BigInt,
        balance -> BigInt,
    }
}

/// How the async-vs-sync table's transfer is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DriverWork {
    /// Two UPDATEs from Diesel's query builder, which Diesel never keeps prepared: libpq sends
    /// each in one round trip (`PQsendQueryParams`, diesel's `pg/connection/stmt/mod.rs`), while
    /// diesel-async prepares it under a fresh name first (tokio-postgres `prepare_typed`: a
    /// round trip of its own), then executes it and closes it.
    Updates,
    /// One `SELECT move_money($1, $2, $3)` (a SQL function doing both UPDATEs), which both
    /// keep prepared per connection: one round trip on either, so the difference left is the
    /// drivers' and the pools'.
    Function,
}

impl DriverWork {
    /// The table's name for it.
    fn name(self) -> &'static str {
        match self {
            DriverWork::Updates => "two UPDATEs",
            DriverWork::Function => "one prepared SELECT",
        }
    }
}

/// The transfer both drivers run, `amount` from `from` to `to`, written as [`DriverWork`] says.
mod driver_transfer {
    use super::driver_accounts::dsl::{balance, driver_accounts as accounts};
    use super::DriverWork;
    use diesel::{ExpressionMethods, QueryDsl, QueryResult};

    diesel::define_sql_function! {
        /// The driver database's function that moves `amount` from `from` to `to`.
        fn move_money(
            from: diesel::sql_types::BigInt,
            to: diesel::sql_types::BigInt,
            amount: diesel::sql_types::BigInt,
        );
    }

    /// On a sync `PgConnection` (libpq).
    pub fn sync(
        conn: &mut diesel::PgConnection,
        work: DriverWork,
        (from, to, amount): (i64, i64, i64),
    ) -> QueryResult<()> {
        use diesel::RunQueryDsl;
        if work == DriverWork::Function {
            diesel::select(move_money(from, to, amount)).execute(conn)?;
            return Ok(());
        }
        for (id, change) in in_lock_order(from, to, amount) {
            diesel::update(accounts.find(id))
                .set(balance.eq(balance + change))
                .execute(conn)?;
        }
        Ok(())
    }

    /// On diesel-async's `AsyncPgConnection` (tokio-postgres).
    pub async fn asynchronous(
        conn: &mut diesel_async::AsyncPgConnection,
        work: DriverWork,
        (from, to, amount): (i64, i64, i64),
    ) -> QueryResult<()> {
        use diesel_async::RunQueryDsl;
        if work == DriverWork::Function {
            diesel::select(move_money(from, to, amount))
                .execute(conn)
                .await?;
            return Ok(());
        }
        for (id, change) in in_lock_order(from, to, amount) {
            diesel::update(accounts.find(id))
                .set(balance.eq(balance + change))
                .execute(conn)
                .await?;
        }
        Ok(())
    }

    /// The two accounts' changes, the lower id first: every transfer locks its two rows in the
    /// same order, so two transfers between the same accounts in opposite directions queue
    /// instead of deadlocking (PostgreSQL breaks a deadlock only after `deadlock_timeout`, a
    /// second, which made the rows' maxima 1 s and their throughput swing between runs).
    fn in_lock_order(from: i64, to: i64, amount: i64) -> [(i64, i64); 2] {
        let (source, sink) = ((from, -amount), (to, amount));
        if from < to {
            [source, sink]
        } else {
            [sink, source]
        }
    }

    /// Two different accounts among `1..=count` and an amount, as pgbench draws them.
    pub fn pick(count: i64) -> (i64, i64, i64) {
        let from = rand::random_range(1..=count);
        let to = 1 + (from + rand::random_range(0..count - 1)) % count;
        (from, to, rand::random_range(1..=100))
    }
}

/// What the workers of one async-vs-sync run did.
#[derive(Default)]
struct DriverTally {
    committed: u64,
    failed: u64,
    retries: u64,
    latencies: Latencies,
}

impl DriverTally {
    /// Counts one call that returned `result` after `latency`.
    fn count<T, E, P>(
        &mut self,
        result: &Result<diesel_retry::Committed<T>, diesel_retry::TransactionError<E, P>>,
        latency: Duration,
    ) {
        match result {
            Ok(done) => {
                self.committed += 1;
                self.retries += u64::from(done.retries());
                self.latencies.record(latency);
            }
            Err(error) => {
                self.failed += 1;
                self.retries += u64::from(error.attempts().saturating_sub(1));
            }
        }
    }

    fn merge(&mut self, other: DriverTally) {
        self.committed += other.committed;
        self.failed += other.failed;
        self.retries += other.retries;
        self.latencies.merge(&other.latencies);
    }
}

/// One run of a driver on the database at a URL for a time: what it did, and how long it took.
type DriverRun = Box<dyn Fn(&str, Duration) -> (DriverTally, Duration)>;

/// One row of the async-vs-sync table: a driver at one concurrency, measured by `run`.
struct DriverCase {
    driver: &'static str,
    work: DriverWork,
    concurrency: String,
    run: DriverRun,
}

/// diesel-retry's sync driver (r2d2, libpq) beside its async one (tokio-postgres) on the same
/// transfer, the same pool size and the same server: the sync one at one thread per
/// connection, the async one on bb8 at 8, 64 and 256 tasks and on deadpool at 256. Each row
/// runs [`RUNS`] times for `duration` (a second-long fsync stall weighs less in a longer run),
/// the rows taking turns (the machine is shared: its load drifts), and keeps its best run (a
/// stall, such as a long fsync, only slows).
fn async_vs_sync_table(server: &TestServer, duration: Duration) {
    let tokio_workers = env_number("BENCH_TOKIO_WORKERS", 0) as usize;
    let run_length = duration;
    // Per work: the sync driver, the async one on bb8 at each task count (for the prepared
    // SELECT only the fewest and the most), and on deadpool, whose waiters queue in order, at
    // the most tasks: how much of the tail is bb8's.
    let most_tasks = ASYNC_TASKS[ASYNC_TASKS.len() - 1];
    let mut cases = Vec::new();
    for work in [DriverWork::Updates, DriverWork::Function] {
        cases.push(DriverCase {
            driver: "sync, r2d2",
            work,
            concurrency: format!("{POOL} threads"),
            run: Box::new(move |url, length| sync_driver_run(url, work, length)),
        });
        for tasks in ASYNC_TASKS {
            if work == DriverWork::Function && tasks != ASYNC_TASKS[0] && tasks != most_tasks {
                continue;
            }
            cases.push(DriverCase {
                driver: "async, bb8",
                work,
                concurrency: format!("{tasks} tasks"),
                run: Box::new(move |url, length| {
                    async_driver_run(url, AsyncPool::Bb8, work, tasks, tokio_workers, length)
                }),
            });
        }
        cases.push(DriverCase {
            driver: "async, deadpool",
            work,
            concurrency: format!("{most_tasks} tasks"),
            run: Box::new(move |url, length| {
                async_driver_run(
                    url,
                    AsyncPool::Deadpool,
                    work,
                    most_tasks,
                    tokio_workers,
                    length,
                )
            }),
        });
    }

    println!(
        "## async vs sync transfers ({ACCOUNTS} accounts, pool of {POOL}, SERIALIZABLE, best \
         of {RUNS} runs of {:.1} s per row, each row on a fresh database)",
        run_length.as_secs_f64()
    );
    println!();
    println!(
        "The same transaction (between random accounts, the lower id updated first so that no \
         two deadlock: two UPDATEs from Diesel's query builder, or one prepared \
         `SELECT move_money(…)` doing both) through \
         `diesel_retry::run_transaction` on an r2d2 pool of {POOL} `PgConnection`s (libpq) from \
         {POOL} threads, and through `diesel_retry::asynchronous::run_transaction` on a bb8 or \
         deadpool pool of {POOL} `AsyncPgConnection`s (tokio-postgres) from N tasks on a \
         multi-threaded tokio runtime ({} worker threads); every pool opened and the flavour \
         detected before the clock starts, and none pinging a connection at check-out (r2d2's \
         `test_on_check_out(false)`, diesel-async's `RecyclingMethod::Fast`: a round trip per \
         transaction that `run_transaction` does not need, since a dead connection only costs \
         it a retry on a fresh one); every session with `enable_seqscan = off` (set on each \
         row's database), as `roachbank transfer`'s; the rows take turns. Latency: from the call to its \
         return, the wait for a connection included; in ms (a `max` of seconds beside a short \
         p99 is a stall of the whole machine or the server's disk). `failed` and `check` cover \
         all the runs; `× sync` is against the sync row of the same work. Diesel never keeps \
         an UPDATE prepared: libpq sends it in one round trip (`PQsendQueryParams`), \
         diesel-async prepares it under a fresh name in a round trip of its own, then runs it \
         — the prepared SELECT takes one round trip on both, leaving the drivers' and pools' \
         own costs.",
        if tokio_workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            tokio_workers
        }
    );
    println!();
    println!(
        "| work | driver | concurrency | tps | p99 | max | retries per transfer | failed \
         | check | × sync | host steal |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|");
    let databases: Vec<String> = (0..cases.len())
        .map(|row| {
            let name = format!("bench_drivers_{row}");
            server.psql("postgres", &format!("DROP DATABASE IF EXISTS {name}"));
            server.psql("postgres", &format!("CREATE DATABASE {name}"));
            // Both drivers' sessions find rows by key, as `roachbank transfer`'s do: once
            // autovacuum has analyzed the 100-row table (within the bench's minutes), a
            // sequential scan's table-wide predicate lock would make every transfer conflict.
            server.psql(
                "postgres",
                &format!("ALTER DATABASE {name} SET enable_seqscan = off"),
            );
            server.psql(
                &name,
                &format!(
                    "CREATE TABLE driver_accounts (id INT8 PRIMARY KEY, balance INT8 NOT NULL); \
                     INSERT INTO driver_accounts (id, balance) \
                     SELECT g, {OPENING_BALANCE} FROM generate_series(1, {ACCOUNTS}) g; \
                     CREATE FUNCTION move_money(source INT8, sink INT8, amount INT8) \
                     RETURNS VOID LANGUAGE SQL AS \
                     'UPDATE driver_accounts SET balance = balance + CASE WHEN id = source \
                      THEN -amount ELSE amount END WHERE id = LEAST(source, sink); \
                      UPDATE driver_accounts SET balance = balance + CASE WHEN id = source \
                      THEN -amount ELSE amount END WHERE id = GREATEST(source, sink)'"
                ),
            );
            name
        })
        .collect();
    let mut rows: Vec<Option<DriverRow>> = cases.iter().map(|_| None).collect();
    let mut failed = vec![0; cases.len()];
    for _ in 0..RUNS {
        for (row, case) in cases.iter().enumerate() {
            let steal = StealMeter::read();
            let (tally, elapsed) = (case.run)(&server.url_for(&databases[row]), run_length);
            let steal = StealMeter::share_since(steal);
            let tps = roachbank::workload::stats::per_second(tally.committed, elapsed);
            failed[row] += tally.failed;
            if rows[row].as_ref().is_none_or(|best| tps > best.tps) {
                rows[row] = Some(DriverRow { tps, tally, steal });
            }
        }
    }
    let rows: Vec<DriverRow> = rows.into_iter().map(|row| row.expect("RUNS > 0")).collect();
    // The sync row of each work, the first of its rows.
    let sync_tps = |work: DriverWork| {
        let row = cases.iter().position(|case| case.work == work);
        rows[row.expect("a sync row per work")].tps
    };
    for (row, (case, figures)) in cases.iter().zip(&rows).enumerate() {
        let total = server.psql(&databases[row], "SELECT sum(balance) FROM driver_accounts");
        let consistent = total == (OPENING_BALANCE * ACCOUNTS as i64).to_string();
        let tally = &figures.tally;
        let ms = |quantile| {
            tally
                .latencies
                .quantile(quantile)
                .unwrap_or_default()
                .as_secs_f64()
                * 1000.0
        };
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.0} | {:.3} | {} | {} | {:.2} | {} |",
            case.work.name(),
            case.driver,
            case.concurrency,
            figures.tps,
            ms(0.99),
            ms(1.0),
            tally.retries as f64 / tally.committed.max(1) as f64,
            failed[row],
            if consistent { "OK" } else { "FAILED" },
            figures.tps / sync_tps(case.work),
            steal_cell(figures.steal),
        );
    }
    println!();
    for work in [DriverWork::Updates, DriverWork::Function] {
        let most = |driver: &str| {
            let row = cases.iter().position(|case| {
                case.work == work
                    && case.driver == driver
                    && case.concurrency == format!("{most_tasks} tasks")
            });
            rows[row.expect("a row at the most tasks")].tps / sync_tps(work)
        };
        println!(
            "- {}: async at {most_tasks} tasks / sync at {POOL} threads: bb8 {:.2}, deadpool {:.2} \
             (goal ≥ 1.00)",
            work.name(),
            most("async, bb8"),
            most("async, deadpool"),
        );
    }
}

/// The best run of one row of the async-vs-sync table.
struct DriverRow {
    tps: f64,
    tally: DriverTally,
    /// The host's steal during the run ([`StealMeter`]).
    steal: Option<f64>,
}

/// [`POOL`] threads running `diesel_retry::run_transaction` on an r2d2 pool for `duration`.
fn sync_driver_run(url: &str, work: DriverWork, duration: Duration) -> (DriverTally, Duration) {
    use diesel::r2d2::{ConnectionManager, Pool};
    let pool = Pool::builder()
        .max_size(POOL)
        .test_on_check_out(false)
        .build(ConnectionManager::<diesel::PgConnection>::new(url))
        .expect("an r2d2 pool");
    let bank = diesel_retry::Flavored::detect(&pool).expect("the flavour");
    let policy = RetryPolicy::default();
    let started = Instant::now();
    let deadline = started + duration;
    let mut total = DriverTally::default();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..POOL)
            .map(|_| {
                scope.spawn(|| {
                    let mut tally = DriverTally::default();
                    while Instant::now() < deadline {
                        let transfer = driver_transfer::pick(ACCOUNTS as i64);
                        let call = Instant::now();
                        let result = diesel_retry::run_transaction(&bank, &policy, |conn| {
                            driver_transfer::sync(conn, work, transfer)
                        });
                        tally.count(&result, call.elapsed());
                    }
                    tally
                })
            })
            .collect();
        for worker in workers {
            total.merge(worker.join().expect("a sync worker"));
        }
    });
    (total, started.elapsed())
}

/// The pool the async driver takes its connections from.
#[derive(Clone, Copy)]
enum AsyncPool {
    /// bb8's: a waiter woken for a returned connection can lose it to a newcomer.
    Bb8,
    /// deadpool's: waiters are served in order (a tokio semaphore).
    Deadpool,
}

/// `tasks` tokio tasks running `diesel_retry::asynchronous::run_transaction` on a pool of
/// [`POOL`] for `duration`, on a runtime of `tokio_workers` threads (0: tokio's default).
fn async_driver_run(
    url: &str,
    kind: AsyncPool,
    work: DriverWork,
    tasks: u32,
    tokio_workers: usize,
    duration: Duration,
) -> (DriverTally, Duration) {
    use diesel_async::pooled_connection::{bb8, deadpool, AsyncDieselConnectionManager};
    use diesel_async::AsyncPgConnection;
    use diesel_retry::asynchronous::AsyncConnectionSource;
    use diesel_retry::Flavored;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if tokio_workers > 0 {
        runtime.worker_threads(tokio_workers);
    }
    let runtime = runtime.enable_all().build().expect("a tokio runtime");
    runtime.block_on(async {
        let mut config = diesel_async::pooled_connection::ManagerConfig::default();
        config.recycling_method = diesel_async::pooled_connection::RecyclingMethod::Fast;
        let manager =
            AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
        let mut workers = tokio::task::JoinSet::new();
        // Every connection opened before the clock starts, as r2d2 does.
        let (started, deadline);
        match kind {
            AsyncPool::Bb8 => {
                let pool = bb8::Pool::builder()
                    .max_size(POOL)
                    .min_idle(Some(POOL))
                    .build(manager)
                    .await
                    .expect("a bb8 pool");
                let flavor = Flavored::detect_async(&pool).await.expect("the flavour");
                let flavor = flavor.flavor().expect("a detected flavour");
                (started, deadline) = clock(duration);
                for _ in 0..tasks {
                    let pool = pool.clone();
                    workers.spawn(async move {
                        async_transfers(Flavored::new(&pool, flavor), work, deadline).await
                    });
                }
            }
            AsyncPool::Deadpool => {
                let pool = deadpool::Pool::builder(manager)
                    .max_size(POOL as usize)
                    .build()
                    .expect("a deadpool pool");
                let mut opened = Vec::new();
                for _ in 0..POOL {
                    opened.push(pool.get().await.expect("a connection"));
                }
                drop(opened);
                let flavor = Flavored::detect_async(&pool).await.expect("the flavour");
                let flavor = flavor.flavor().expect("a detected flavour");
                (started, deadline) = clock(duration);
                for _ in 0..tasks {
                    let pool = pool.clone();
                    workers.spawn(async move {
                        async_transfers(Flavored::new(&pool, flavor), work, deadline).await
                    });
                }
            }
        }
        let mut total = DriverTally::default();
        while let Some(tally) = workers.join_next().await {
            total.merge(tally.expect("an async worker"));
        }
        (total, started.elapsed())
    })
}

/// Now, and now + `duration`.
fn clock(duration: Duration) -> (Instant, Instant) {
    let started = Instant::now();
    (started, started + duration)
}

/// One task's transfers through the async driver on `bank` until `deadline`.
async fn async_transfers<S>(bank: S, work: DriverWork, deadline: Instant) -> DriverTally
where
    S: diesel_retry::asynchronous::AsyncConnectionSource<
            Connection = diesel_async::AsyncPgConnection,
        > + Copy,
{
    let policy = RetryPolicy::default();
    let mut tally = DriverTally::default();
    while Instant::now() < deadline {
        let transfer = driver_transfer::pick(ACCOUNTS as i64);
        let call = Instant::now();
        let result =
            diesel_retry::asynchronous::run_transaction(bank, &policy, async move |conn| {
                driver_transfer::asynchronous(conn, work, transfer).await
            })
            .await;
        tally.count(&result, call.elapsed());
    }
    tally
}

/// pgbench's transfer as an interactive transaction, with the ledger INSERT (the reference
/// script beside DESIGN.md).
const PGBENCH_INTERACTIVE: &str = include_str!("pgbench/transfer_ledger.sql");
/// pgbench's transfer as one statement (a data-modifying WITH).
const PGBENCH_ONE_STATEMENT: &str = include_str!("pgbench/transfer_one_statement.sql");

/// The accounts a pgbench run's fresh database holds.
#[derive(Clone, Copy)]
enum PgbenchBank {
    /// Accounts 1..=ACCOUNTS, the ids pgbench's own scripts draw.
    Numbered,
    /// ACCOUNTS accounts seeded as roachbank's runs are (ids spread over the id space).
    Seeded,
}

/// How pgbench is run: `-M protocol` (`simple` or `prepared`) on `clients` clients for
/// `duration`, on a fresh database with roachbank's tables holding `bank`; `serializable` sets
/// the session default for a script that sends no BEGIN.
struct PgbenchRun {
    protocol: &'static str,
    bank: PgbenchBank,
    clients: u32,
    duration: Duration,
    serializable: bool,
}

/// roachbank's one-statement transfer as a pgbench script: the statement's own text (from
/// [`bank::transfer::TransferStatement`], so it cannot drift), its two random points drawn from
/// the id space as roachbank draws them and a random ledger id.
fn roachbank_statement_script() -> String {
    let statement = bank::transfer::TransferStatement::new(0, 0, 0);
    let text = diesel::debug_query::<diesel::pg::Pg, _>(&statement).to_string();
    let sql = text
        .split(" -- binds:")
        .next()
        .expect("the statement's text")
        .replace("$1", ":source_from")
        .replace("$2", ":sink_from")
        .replace("$3", ":ledger_id");
    format!(
        "\\set source_from random(0, {last})\n\\set sink_from random(0, {last})\n\
         \\set ledger_id random(1, 4611686018427387903)\n{sql};\n",
        last = bank::ID_SPACE - 1
    )
}

/// Runs pgbench with `script` as `run` says. Its throughput, and the p99 of its
/// per-transaction latency log.
fn pgbench(server: &TestServer, script: &std::path::Path, run: PgbenchRun) -> Throughput {
    let PgbenchRun {
        protocol,
        bank: accounts,
        clients,
        duration,
        serializable,
    } = run;
    let (name, db) = fresh_database(server, "bench_pgbench", 1);
    match accounts {
        PgbenchBank::Numbered => {
            server.psql(
                &name,
                &format!(
                    "INSERT INTO accounts (id, balance) \
                     SELECT g, 1000000 FROM generate_series(1, {ACCOUNTS}) g"
                ),
            );
        }
        PgbenchBank::Seeded => {
            bank::seed(&db, &RetryPolicy::default(), ACCOUNTS).expect("seed");
        }
    }
    drop(db);
    let logs = tempfile::tempdir().expect("a directory for pgbench's logs");
    let mut command = Command::new("pgbench");
    if serializable {
        command.env("PGOPTIONS", "-c default_transaction_isolation=serializable");
    }
    let output = command
        .args(["-n", "-M", protocol, "-f"])
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

/// A reading of the hypervisor's steal: CPU time this virtual machine's processors were ready
/// to run while the host ran something else (the `steal` column of `/proc/stat`'s `cpu` line,
/// proc(5)). On a shared virtual machine it slows a run with nothing in the run changed, and
/// more so a run whose threads use both processors: a figure next to a high steal share is the
/// host's, not roachbank's.
#[derive(Debug, Clone, Copy)]
struct StealMeter {
    steal: u64,
    total: u64,
}

impl StealMeter {
    /// The reading now; `None` where `/proc/stat` cannot be read (not Linux).
    fn read() -> Option<StealMeter> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let times: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|field| field.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal: guest times are inside user's.
        Some(StealMeter {
            steal: *times.get(7)?,
            total: times.iter().take(8).sum(),
        })
    }

    /// The share of all processors' time since the reading `start` that the host stole.
    fn share_since(start: Option<StealMeter>) -> Option<f64> {
        let (start, now) = (start?, StealMeter::read()?);
        let total = now.total.saturating_sub(start.total);
        (total > 0).then(|| now.steal.saturating_sub(start.steal) as f64 / total as f64)
    }
}

/// A steal share as a table cell: a percentage, or `–` where it is unknown.
fn steal_cell(share: Option<f64>) -> String {
    share.map_or_else(|| "–".to_string(), |share| format!("{:.0}%", share * 100.0))
}

/// Runs `section` and says how much of the machine's processor time the host stole meanwhile.
fn with_steal(section: impl FnOnce()) {
    let start = StealMeter::read();
    section();
    println!();
    println!(
        "Host steal during this section: {} of the processors' time (`/proc/stat`; a run \
         slowed by it is the host's doing, not roachbank's).",
        steal_cell(StealMeter::share_since(start))
    );
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

/// SQLite's writers: throughput and the longest wait in one process at 1/4/8 workers, then
/// several processes (and several `points` loaders) on one file at once. Figures are printed,
/// never asserted.
mod sqlite_writers {
    use super::{
        bank, env_number, steal_cell, PointsRun, RunLength, StealMeter, TransferRun, TransferStyle,
        ACCOUNTS, RUNS,
    };
    use diesel_retry::RetryPolicy;
    use roachbank::db::config::{DatabaseConfig, UrlSource};
    use roachbank::db::{ConnectOptions, Database};
    use roachbank::workload::TransferSummary;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::{Duration, Instant};

    /// Worker counts of the one-process table.
    const WORKERS: [u32; 3] = [1, 4, 8];
    /// Processes on one file, and workers in each.
    const PROCESSES: usize = 4;
    const WORKERS_PER_PROCESS: u32 = 2;
    /// `points` loaders on one file, the rows each loads and its chunk size.
    const LOADERS: usize = 4;
    const LOADER_ROWS: u64 = 200_000;
    const LOADER_CHUNK: u64 = 500;

    pub fn section(duration: Duration) {
        let base =
            std::env::var_os("BENCH_SQLITE_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let dir = tempfile::Builder::new()
            .prefix("roachbank-bench-sqlite-")
            .tempdir_in(&base)
            .expect("a directory for the SQLite files");
        println!(
            "## SQLite writers ({ACCOUNTS} accounts, tutorial transfers, {} s per run, each on a \
             fresh file in {})",
            duration.as_secs(),
            base.display()
        );
        println!();
        println!(
            "Writers of one process take turns first come, first served, in slices of up to 5 ms \
             (src/db/write_queue.rs); across processes a writer that has waited 10 ms goes first \
             (src/db/sqlite_session.rs). Latencies in ms; pMax is the longest transfer of the run."
        );
        println!();
        one_process(dir.path(), duration);
        println!();
        processes(dir.path(), duration);
        println!();
        loaders(dir.path());
    }

    /// A fresh file `name` in `dir`, opened with a pool of `pool_size`, seeded if `seeded`.
    fn fresh(dir: &Path, name: &str, pool_size: u32, seeded: bool) -> (PathBuf, Database) {
        let path = dir.join(name);
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
        let db = open(&path, pool_size);
        if seeded {
            bank::seed(&db, &RetryPolicy::default(), ACCOUNTS).expect("seed");
        }
        (path, db)
    }

    fn open(path: &Path, pool_size: u32) -> Database {
        let config =
            DatabaseConfig::parse(&format!("sqlite://{}", path.display()), UrlSource::Flag)
                .expect("a SQLite URL");
        let options = ConnectOptions {
            pool_size,
            ..ConnectOptions::default()
        };
        Database::open(config, &options).expect("open the SQLite file")
    }

    fn millis(latency: Option<Duration>) -> f64 {
        latency.unwrap_or_default().as_secs_f64() * 1000.0
    }

    /// Transfers in one process at 1, 4 and 8 workers: [`RUNS`] rounds, the worker counts taking
    /// turns (the machine's load drifts), each row's best run by throughput shown, with the
    /// longest transfer of all its runs as pMax and its failures summed over them.
    fn one_process(dir: &Path, duration: Duration) {
        println!("### one process (best of {RUNS} runs per row, the rows taking turns)");
        println!();
        println!(
            "| workers | tps | × 1 worker | p50 | p99 | pMax | retries per transfer | failed | check \
             | host steal |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|");
        let policy = RetryPolicy::default();
        let mut rows: Vec<WorkersRow> = WORKERS.iter().map(|_| WorkersRow::default()).collect();
        for _ in 0..RUNS {
            for (row, workers) in WORKERS.into_iter().enumerate() {
                let (_, db) = fresh(dir, "one_process.db", workers, true);
                let steal = StealMeter::read();
                let summary = TransferRun::new(RunLength::Duration(duration), workers)
                    .style(TransferStyle::Tutorial)
                    .run(&db, &policy, &|_| {})
                    .summary;
                let steal = StealMeter::share_since(steal);
                let consistent = bank::audit::audit(&db, &policy)
                    .expect("audit")
                    .value
                    .is_consistent();
                let row = &mut rows[row];
                row.longest = row
                    .longest
                    .max(summary.latency_quantile(1.0).unwrap_or_default());
                row.failed += summary.failed + summary.unknown;
                row.inconsistent |= !consistent;
                if row
                    .best
                    .as_ref()
                    .is_none_or(|(best, _)| summary.per_second() > best.per_second())
                {
                    row.best = Some((summary, steal));
                }
            }
        }
        let mut one_worker = None;
        for (workers, row) in WORKERS.into_iter().zip(rows) {
            let (summary, steal) = row.best.expect("RUNS > 0");
            let tps = summary.per_second();
            let base = *one_worker.get_or_insert(tps);
            println!(
                "| {workers} | {tps:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | {} | {} | {} |",
                tps / base,
                millis(summary.latency_quantile(0.50)),
                millis(summary.latency_quantile(0.99)),
                millis(Some(row.longest)),
                summary.retries as f64 / summary.done.max(1) as f64,
                row.failed,
                if row.inconsistent { "FAILED" } else { "OK" },
                steal_cell(steal),
            );
        }
    }

    /// One worker count's runs in the one-process table.
    #[derive(Default)]
    struct WorkersRow {
        /// The best run's summary, with the host's steal during it ([`StealMeter`]).
        best: Option<(TransferSummary, Option<f64>)>,
        /// The longest transfer of all its runs.
        longest: Duration,
        /// Failed transfers, and those with unknown outcome, over all its runs.
        failed: u64,
        /// Whether an audit after one of its runs found the bank inconsistent.
        inconsistent: bool,
    }

    /// What one process's `transfers:` line said.
    struct ProcessFigures {
        done: u64,
        p99_ms: f64,
        p_max_ms: f64,
        exit: Option<i32>,
    }

    fn processes(dir: &Path, duration: Duration) {
        let (path, db) = fresh(dir, "processes.db", 1, true);
        drop(db);
        println!(
            "### {PROCESSES} processes × {WORKERS_PER_PROCESS} workers on one file \
             (`roachbank transfer --duration {}s --workers {WORKERS_PER_PROCESS}`, started at once)",
            duration.as_secs()
        );
        println!();
        let url = format!("sqlite://{}", path.display());
        let started = Instant::now();
        let children: Vec<_> = (0..PROCESSES)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_roachbank"))
                    .args(["--database-url", &url, "transfer", "--duration"])
                    .arg(format!("{}s", duration.as_secs()))
                    .args(["--workers", &WORKERS_PER_PROCESS.to_string()])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("start roachbank")
            })
            .collect();
        let figures: Vec<ProcessFigures> = children
            .into_iter()
            .map(|child| {
                let output = child.wait_with_output().expect("wait for roachbank");
                let stdout = String::from_utf8_lossy(&output.stdout);
                let line = stdout
                    .lines()
                    .find(|line| line.starts_with("transfers: "))
                    .unwrap_or("");
                let figure = |label: &str| {
                    line.split(", ")
                        .find_map(|part| part.strip_prefix(label))
                        .and_then(|value| value.split(" ms").next())
                        .and_then(|value| value.parse::<f64>().ok())
                        .unwrap_or(f64::NAN)
                };
                ProcessFigures {
                    done: line
                        .strip_prefix("transfers: ")
                        .and_then(|rest| rest.split(" done").next())
                        .and_then(|count| count.replace(',', "").parse().ok())
                        .unwrap_or(0),
                    p99_ms: figure("p99 "),
                    p_max_ms: figure("pMax "),
                    exit: output.status.code(),
                }
            })
            .collect();
        let elapsed = started.elapsed();
        let total: u64 = figures.iter().map(|process| process.done).sum();
        let fair = total as f64 / PROCESSES as f64;
        println!("| process | transfers | × fair share | p99 | pMax | exit |");
        println!("|---:|---:|---:|---:|---:|---:|");
        for (i, process) in figures.iter().enumerate() {
            println!(
                "| {} | {} | {:.2} | {:.2} | {:.2} | {} |",
                i + 1,
                process.done,
                process.done as f64 / fair.max(1.0),
                process.p99_ms,
                process.p_max_ms,
                process
                    .exit
                    .map_or("signal".to_string(), |code| code.to_string()),
            );
        }
        let db = open(&path, 1);
        let consistent = bank::audit::audit(&db, &RetryPolicy::default())
            .expect("audit")
            .value
            .is_consistent();
        println!();
        println!(
            "together: {total} transfers, {:.0} tps over {:.1} s; check {}",
            total as f64 / duration.as_secs_f64(),
            elapsed.as_secs_f64(),
            if consistent { "OK" } else { "FAILED" }
        );
    }

    /// `LOADERS` `points` runs at once on one file, each on a pool of its own (to SQLite, each
    /// another process): the longest a chunk took, its wait for the lock included.
    fn loaders(dir: &Path) {
        let rows = env_number("BENCH_SQLITE_LOADER_ROWS", LOADER_ROWS);
        let (path, db) = fresh(dir, "loaders.db", 1, false);
        drop(db);
        println!(
            "### {LOADERS} `points` loaders on one file ({rows} rows each in chunks of \
             {LOADER_CHUNK}, a pool each, started at once)"
        );
        println!();
        println!("| loader | rows | rows/s | longest chunk (ms, wait included) |");
        println!("|---:|---:|---:|---:|");
        let databases: Vec<Database> = (0..LOADERS).map(|_| open(&path, 1)).collect();
        let results: Vec<(u64, f64, f64)> = std::thread::scope(|scope| {
            let runs: Vec<_> = databases
                .iter()
                .map(|db| {
                    scope.spawn(move || {
                        let mut last = Instant::now();
                        let mut longest = Duration::ZERO;
                        let report = PointsRun::new(rows, LOADER_CHUNK)
                            .run(db, &RetryPolicy::default(), &mut |_| {
                                longest = longest.max(last.elapsed());
                                last = Instant::now();
                            })
                            .expect("points run");
                        (
                            report.rows,
                            report.rows_per_second(),
                            longest.as_secs_f64() * 1000.0,
                        )
                    })
                })
                .collect();
            runs.into_iter()
                .map(|run| run.join().expect("a loader"))
                .collect()
        });
        for (i, (rows, rate, longest)) in results.iter().enumerate() {
            println!("| {} | {rows} | {rate:.0} | {longest:.2} |", i + 1);
        }
    }
}
