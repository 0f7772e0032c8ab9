//! Faults injected while the bank works: backends terminated every few milliseconds, the
//! server restarted mid-run, a connection cut with the commit in flight (landed, never sent,
//! landing late), a backend dying at every commit, a late-landing commit during an outage.
//!
//! The claim under test, after every scenario: no money is created or lost, every transfer the
//! app reports as done is applied exactly once, none it reports as failed is applied, and the
//! audit proves it. So each scenario ends with the same checks, made outside the library where
//! they can be: `audit` is consistent; the transfers reported done are exactly the ledger's
//! transfer rows (same number, same (source, sink, amount) multiset); done + failed is what was
//! asked for.
//!
//! The scenarios run one at a time (two fault storms sharing the CPU would blur both) and
//! each is bounded in time: the backend killer stops when its run ends, or after
//! [`KILLER_LIMIT`] whatever happens.

use crate::support;
use crate::support::bin::send_signal;
use crate::support::proxy::CuttingProxy;
use crate::support::{
    not_run_on_cockroachdb, not_run_on_postgresql, server, ServerSpec, TestDb, TestServer,
};
use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::prelude::*;
use diesel::sql_types::Bool;
use diesel_retry::{RetryPolicy, TransactionError};
use rand::Rng;
use roachbank::bank::audit;
use roachbank::bank::{self, Transfer, TransferStyle};
use roachbank::db::config::{DatabaseConfig, UrlSource};
use roachbank::db::{classify, ErrorClass};
use roachbank::db::{ConnectOptions, Database, Flavor};
use roachbank::workload::points::PointsRun;
use roachbank::workload::{RunLength, TransferOutcome, TransferReport, TransferRun, RETRY_GRACE};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// The killer gives up after this long even if nobody tells it to stop.
const KILLER_LIMIT: Duration = Duration::from_secs(25);

/// Generous enough to ride out a server restart (about a second here).
fn policy() -> RetryPolicy {
    RetryPolicy {
        max_retries: 50,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_secs(1),
        ..RetryPolicy::default()
    }
}

/// The scenarios run one at a time: CPU shared between two fault storms would blur both. (The
/// restart scenario restarts a server of its own, not the suite's shared one.)
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How the one-statement transfer's statement begins: sent alone, it is its own commit.
const ONE_STATEMENT_TRANSFER: &str = "WITH source AS";

/// What a pool's connections sent, counted by instrumentation: ledger inserts (`INSERT INTO
/// "transfers"`, a seed's `COPY "transfers"` on PostgreSQL, or a one-statement transfer: how
/// many times a transfer's or a seed's work ran far enough to write its ledger rows), and commits (`COMMIT`, `RELEASE SAVEPOINT`, or a
/// one-statement transfer) whose connection was lost with them in flight (outcome unknown: the
/// probe had to decide).
#[derive(Clone, Default)]
struct Tally {
    ledger_inserts: Arc<AtomicU64>,
    lost_commits: Arc<AtomicU64>,
}

impl Tally {
    fn ledger_inserts(&self) -> u64 {
        self.ledger_inserts.load(Ordering::SeqCst)
    }

    fn lost_commits(&self) -> u64 {
        self.lost_commits.load(Ordering::SeqCst)
    }

    fn reset(&self) {
        self.ledger_inserts.store(0, Ordering::SeqCst);
        self.lost_commits.store(0, Ordering::SeqCst);
    }
}

impl Instrumentation for Tally {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartQuery { query, .. }
                if query.to_string().starts_with("INSERT INTO \"transfers\"")
                    || query.to_string().starts_with("COPY \"transfers\"")
                    || query.to_string().starts_with(ONE_STATEMENT_TRANSFER) =>
            {
                self.ledger_inserts.fetch_add(1, Ordering::SeqCst);
            }
            InstrumentationEvent::FinishQuery {
                query,
                error: Some(error),
                ..
            } => {
                let sql = query.to_string();
                let commit = sql.starts_with("COMMIT")
                    || sql.starts_with("RELEASE SAVEPOINT")
                    || sql.starts_with(ONE_STATEMENT_TRANSFER);
                let lost = matches!(
                    classify(error),
                    ErrorClass::ConnectionLost | ErrorClass::Ambiguous
                );
                if commit && lost {
                    self.lost_commits.fetch_add(1, Ordering::SeqCst);
                }
            }
            _ => {}
        }
    }
}

/// Opens `url` through the library with `pool_size` connections, keeping a [`Tally`].
fn open(url: &str, pool_size: u32, flavor: Option<Flavor>) -> (Database, Tally) {
    open_with(
        url,
        ConnectOptions {
            pool_size,
            flavor_override: flavor,
            ..ConnectOptions::default()
        },
    )
}

/// [`open`] with `options` (their instrumentation replaced by the [`Tally`]'s).
fn open_with(url: &str, options: ConnectOptions) -> (Database, Tally) {
    let tally = Tally::default();
    let counter = tally.clone();
    let options = ConnectOptions {
        instrumentation: Some(Arc::new(move || {
            Box::new(counter.clone()) as Box<dyn Instrumentation>
        })),
        ..options
    };
    let config = DatabaseConfig::parse(url, UrlSource::Flag).unwrap();
    let database = Database::open(config, &options)
        .unwrap_or_else(|err| panic!("Database::open({url}) failed: {err}"));
    tally.reset();
    (database, tally)
}

/// Seeds `accounts` accounts through the library.
fn seed(database: &Database, accounts: u64) {
    let committed = bank::seed(database, &policy(), accounts).expect("seed");
    assert_eq!(committed.value.accounts, accounts);
}

fn count(db: &TestDb, sql: &str) -> i64 {
    let out = db.psql(sql);
    out.parse()
        .unwrap_or_else(|err| panic!("{sql:?} gave {out:?}: {err}"))
}

/// The ledger's transfer rows (deposits left out) as sorted (source, sink, amount), read by psql.
fn ledger_transfers(db: &TestDb) -> Vec<(i64, i64, i64)> {
    let mut rows: Vec<(i64, i64, i64)> = db
        .psql("SELECT source_id, sink_id, amount FROM transfers WHERE source_id IS NOT NULL")
        .lines()
        .map(|line| {
            let fields: Vec<i64> = line
                .split('|')
                .map(|field| field.parse().expect("an integer column"))
                .collect();
            (fields[0], fields[1], fields[2])
        })
        .collect();
    rows.sort_unstable();
    rows
}

/// Every account, id → balance, read by psql.
fn balances(db: &TestDb) -> BTreeMap<i64, i64> {
    db.psql("SELECT id, balance FROM accounts")
        .lines()
        .map(|line| {
            let (id, balance) = line.split_once('|').expect("id|balance");
            (id.parse().unwrap(), balance.parse().unwrap())
        })
        .collect()
}

/// The library's audit holds: every balance is its deposits + incoming − outgoing, none is
/// negative, total balance = total deposits, no ledger row names a missing account.
fn assert_audit_consistent(database: &Database, label: &str) {
    let report = audit::audit(database, &policy())
        .unwrap_or_else(|err| panic!("{label}: audit failed: {err}"))
        .value;
    assert!(
        report.is_consistent(),
        "{label}: the audit found the books out of balance: {report:#?}"
    );
}

/// The checks every scenario ends with. `reported` holds the transfers the app reported done.
fn assert_books_balance(db: &TestDb, database: &Database, reported: &[Transfer], label: &str) {
    assert_audit_consistent(database, label);
    let ledger = ledger_transfers(db);
    assert_eq!(
        count(
            db,
            "SELECT count(*) FROM transfers WHERE source_id IS NOT NULL"
        ),
        reported.len() as i64,
        "{label}: transfers reported done vs ledger rows with a source"
    );
    let mut reported: Vec<(i64, i64, i64)> = reported
        .iter()
        .map(|t| (t.source, t.sink, t.amount))
        .collect();
    reported.sort_unstable();
    assert!(
        reported == ledger,
        "{label}: the transfers reported done are not exactly the ledger's transfer rows \
         ({} reported, {} in the ledger)",
        reported.len(),
        ledger.len()
    );
}

/// What the backend killer did.
#[derive(Debug, Default)]
struct Kills {
    /// Backends terminated (`pg_terminate_backend` said true).
    killed: u64,
    /// Rounds that found no backend of the app to kill.
    idle_rounds: u64,
    /// Times the killer's own connection had to be made again.
    reconnects: u64,
}

#[derive(QueryableByName)]
struct Terminated {
    #[diesel(sql_type = Bool)]
    terminated: bool,
}

/// Every `pause` (a random time in the range), terminates one random client backend connected
/// to `database`, through its own connection to the administrative database, until `stop` is
/// set or [`KILLER_LIMIT`] has passed.
fn kill_backends(database: &str, pause: std::ops::Range<Duration>, stop: &AtomicBool) -> Kills {
    let started = Instant::now();
    let sql = format!(
        "SELECT pg_terminate_backend(pid) AS terminated FROM pg_stat_activity \
         WHERE datname = '{database}' AND pid <> pg_backend_pid() \
         AND backend_type = 'client backend' ORDER BY random() LIMIT 1"
    );
    let mut kills = Kills::default();
    let mut conn: Option<PgConnection> = None;
    let mut rng = rand::rng();
    while !stop.load(Ordering::SeqCst) && started.elapsed() < KILLER_LIMIT {
        thread::sleep(rng.random_range(pause.clone()));
        if conn.is_none() {
            kills.reconnects += 1;
            conn = PgConnection::establish(server().admin_url()).ok();
        }
        let Some(killer) = conn.as_mut() else {
            continue;
        };
        match diesel::sql_query(&sql).load::<Terminated>(killer) {
            Ok(rows) if rows.iter().any(|row| row.terminated) => kills.killed += 1,
            Ok(_) => kills.idle_rounds += 1,
            Err(_) => conn = None,
        }
    }
    // The first connection is not a reconnection.
    kills.reconnects = kills.reconnects.saturating_sub(1);
    kills
}

/// Runs `work` while a thread terminates one of `database`'s backends every `pause` (see
/// [`kill_backends`]); returns what `work` returned and what the killer did. The killer stops
/// when `work` ends, panicking or not.
fn while_killing_backends<T: Send>(
    database: &str,
    pause: std::ops::Range<Duration>,
    work: impl FnOnce() -> T + Send,
) -> (T, Kills) {
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        let killer = scope.spawn(|| kill_backends(database, pause, &stop));
        let result = {
            let _stop = StopOnDrop(&stop);
            work()
        };
        (result, killer.join().expect("the killer thread"))
    })
}

/// Sets the flag when dropped, so the killer stops even if the run panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Why the backend-killer scenarios do not run on CockroachDB.
const NEEDS_BACKEND_KILLER: &str = "the backend killer picks the app's sessions from \
     pg_stat_activity (empty on CockroachDB) and ends them with pg_terminate_backend (which \
     CockroachDB lacks)";

/// Runs transfers, recording every one reported done.
fn run_transfers(
    database: &Database,
    length: RunLength,
    workers: u32,
) -> (TransferReport, Vec<Transfer>) {
    let reported = Mutex::new(Vec::new());
    let report =
        TransferRun::new(length, workers).run(database, &policy(), &|outcome: &TransferOutcome| {
            reported.lock().unwrap().push(outcome.transfer.clone())
        });
    (report, reported.into_inner().unwrap())
}

#[test]
fn transfers_under_a_backend_killer_are_each_applied_once_and_the_books_balance() {
    const ACCOUNTS: u64 = 100;
    const COUNT: u64 = 2000;
    const WORKERS: u32 = 8;
    if not_run_on_cockroachdb(
        "transfers_under_a_backend_killer_are_each_applied_once_and_the_books_balance",
        NEEDS_BACKEND_KILLER,
    ) {
        return;
    }
    let _serial = one_at_a_time();
    let db = TestDb::new("faults_killed_transfers");
    let (database, tally) = open(&db.url, WORKERS, None);
    seed(&database, ACCOUNTS);
    tally.reset();
    let ((report, reported), kills) = while_killing_backends(
        &db.name,
        Duration::from_millis(5)..Duration::from_millis(20),
        || run_transfers(&database, RunLength::Count(COUNT), WORKERS),
    );
    let summary = &report.summary;
    eprintln!(
        "backend killer: {} backends killed ({} rounds found none, {} killer reconnects); \
         {COUNT} transfers on {WORKERS} workers: done {}, failed {}, unknown {}, retries {}, \
         commits lost in flight {}, {:.2} s ({:.0}/s)",
        kills.killed,
        kills.idle_rounds,
        kills.reconnects,
        summary.done,
        summary.failed,
        summary.unknown,
        summary.retries,
        tally.lost_commits(),
        summary.elapsed.as_secs_f64(),
        summary.per_second(),
    );
    assert!(kills.killed > 0, "the killer never killed a backend");
    assert!(
        summary.retries > 0,
        "backends were killed, yet no transfer was retried"
    );
    assert_eq!(
        summary.unknown, 0,
        "the server stayed reachable, so every unknown commit outcome must have been resolved"
    );
    assert_books_balance(&db, &database, &reported, "killed backends");
    assert_eq!(summary.done, reported.len() as u64);
    assert_eq!(
        summary.done + summary.failed,
        COUNT,
        "done + failed vs transfers asked for"
    );
    // 51 attempts with backoff up to 1 s outlast any backend's ~100 ms life expectancy here:
    // nothing may fail.
    assert!(
        report.error.is_none(),
        "a transfer failed: {:?}",
        report.error
    );
    assert_eq!((summary.done, summary.failed), (COUNT, 0));
}

#[test]
fn transfers_ride_out_a_server_restart_and_the_books_balance() {
    const WORKERS: u32 = 4;
    if not_run_on_cockroachdb(
        "transfers_ride_out_a_server_restart_and_the_books_balance",
        "restarting the server needs the throwaway PostgreSQL and its pg_ctl",
    ) {
        return;
    }
    if !server().is_throwaway() {
        eprintln!(
            "NOT RUN on TEST_DATABASE_URL's PostgreSQL: \
             transfers_ride_out_a_server_restart_and_the_books_balance: restarting the server \
             needs the throwaway PostgreSQL and its pg_ctl"
        );
        return;
    }
    let _serial = one_at_a_time();
    // A server of its own: the suite's shared one serves the tests of every module at once,
    // and a restart would drop their sessions too. Leaked, as the shared one is a static: the
    // watchdog stops it once the test process has exited.
    let server: &'static TestServer = Box::leak(Box::new(TestServer::start_throwaway(
        &ServerSpec::default(),
    )));
    let db = TestDb::on(server, "faults_restart");
    let (database, tally) = open(&db.url, WORKERS, None);
    seed(&database, 100);
    tally.reset();
    let started_before = db.psql("SELECT pg_postmaster_start_time()");
    let ((report, reported), before_restart, restarted_at, restart_took) = thread::scope(|scope| {
        let run = scope.spawn(|| {
            // Long enough after the restart (at 2 s) for every transfer it interrupted to be
            // retried before the run ends: a timed run starts no retry after its end.
            run_transfers(
                &database,
                RunLength::Duration(Duration::from_secs(10)),
                WORKERS,
            )
        });
        thread::sleep(Duration::from_secs(2));
        let before_restart = count(&db, "SELECT count(*) FROM transfers");
        let clock = Instant::now();
        server.restart();
        let restart_took = clock.elapsed();
        // The app's sessions write created_at in UTC (diesel sets the session's zone).
        let restarted_at = db.psql("SELECT (now() AT TIME ZONE 'UTC')::text");
        let run = run.join().expect("the transfer run");
        (run, before_restart, restarted_at, restart_took)
    });
    let summary = &report.summary;
    let after_run = count(&db, "SELECT count(*) FROM transfers");
    let committed_after_restart = count(
        &db,
        &format!(
            "SELECT count(*) FROM transfers WHERE source_id IS NOT NULL \
             AND created_at > '{restarted_at}'::timestamp"
        ),
    );
    eprintln!(
        "server restart took {:.2} s; run of {:.2} s on {WORKERS} workers: done {}, failed {}, \
         unknown {}, retries {}, commits lost in flight {}; ledger rows {before_restart} before \
         the restart, {after_run} after the run, {committed_after_restart} transfers begun after \
         the restart",
        restart_took.as_secs_f64(),
        summary.elapsed.as_secs_f64(),
        summary.done,
        summary.failed,
        summary.unknown,
        summary.retries,
        tally.lost_commits(),
    );
    assert_ne!(
        db.psql("SELECT pg_postmaster_start_time()"),
        started_before,
        "the server was restarted"
    );
    assert_eq!(
        summary.unknown, 0,
        "the server came back, so every unknown commit outcome must have been resolved"
    );
    assert_books_balance(&db, &database, &reported, "server restart");
    assert_eq!(summary.done, reported.len() as u64);
    assert!(summary.done > 0, "no transfer was done");
    assert!(
        after_run > before_restart && committed_after_restart > 0,
        "no transfer was committed after the restart"
    );
    assert!(
        report.error.is_none(),
        "a transfer failed: {:?}",
        report.error
    );
    assert_eq!(summary.failed, 0);
}

/// Where a connection is cut with the commit in flight.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// The commit statement reaches the server, which commits; the answer is lost.
    Landed,
    /// The commit statement is dropped; the server rolls back when the link goes.
    NeverArrived,
}

/// A fresh database with `accounts` accounts seeded directly, and a [`CuttingProxy`] in front
/// of the server.
fn bank_behind_proxy(name: &str, accounts: u64) -> (TestDb, CuttingProxy, String) {
    let db = TestDb::new(name);
    if accounts > 0 {
        let (direct, _) = open(&db.url, 1, None);
        seed(&direct, accounts);
    }
    let server = server();
    let proxy = CuttingProxy::start(&format!("{}:{}", server.host(), server.port()));
    let url = db.url.replacen(
        &format!("{}:{}", server.host(), server.port()),
        &format!("127.0.0.1:{}", proxy.port()),
        1,
    );
    (db, proxy, url)
}

/// One transfer in `style` through a proxy that cuts the connection on `statement` (`cut`),
/// with the `flavor` protocol; checks that it was resolved and applied exactly once.
fn transfer_with_commit_cut(flavor: Flavor, style: TransferStyle, statement: &str, cut: Cut) {
    let label = format!("{flavor}, {style:?}, cut on {statement:?}, {cut:?}");
    let _serial = one_at_a_time();
    let (db, proxy, url) = bank_behind_proxy("faults_cut_transfer", 10);
    let (database, tally) = open(&url, 2, Some(flavor));
    let before = balances(&db);
    match cut {
        Cut::Landed => proxy.cut_after(statement),
        Cut::NeverArrived => proxy.cut_instead_of(statement),
    }
    let result = bank::transfer_in_style(&database, &policy(), style);
    assert_eq!(proxy.cuts(), 1, "{label}: the proxy cut the link once");
    assert_eq!(
        tally.lost_commits(),
        1,
        "{label}: the client lost its connection with the commit in flight"
    );
    let committed = match result {
        Ok(committed) => committed,
        Err(TransactionError::AmbiguousCommit { attempts, cause }) => panic!(
            "{label}: the probe should have resolved the outcome, got AmbiguousCommit after \
             {attempts} attempts: {cause}"
        ),
        Err(other) => panic!("{label}: expected Ok, got {other:?}"),
    };
    let transfer = &committed.value;
    eprintln!(
        "{label}: {} → {} amount {}, attempts {}, ledger inserts sent {}",
        transfer.source,
        transfer.sink,
        transfer.amount,
        committed.attempts,
        tally.ledger_inserts()
    );
    assert_books_balance(&db, &database, std::slice::from_ref(transfer), &label);
    assert_ne!(transfer.source, transfer.sink, "{label}");
    let mut expected = before;
    *expected
        .get_mut(&transfer.source)
        .expect("the source exists") -= transfer.amount;
    *expected.get_mut(&transfer.sink).expect("the sink exists") += transfer.amount;
    assert_eq!(
        balances(&db),
        expected,
        "{label}: exactly the reported amount moved from source to sink, once"
    );
    assert_attempts_fit_the_cut(cut, committed.attempts, tally.ledger_inserts(), &label);
}

/// The probe's own connection can be lost too: its next round must get a fresh one, not the
/// dead connection back from the pool (lost outside a transaction, Diesel does not mark it
/// broken), or the outcome is reported unknown although the server is there to ask.
#[test]
fn a_probe_whose_connection_is_lost_asks_again_on_a_fresh_connection() {
    let label = "commit landed, answer lost, then the probe's link cut";
    let _serial = one_at_a_time();
    let (db, proxy, url) = bank_behind_proxy("faults_probe_cut", 10);
    let (database, tally) = open(&url, 2, Some(Flavor::PostgreSql));
    proxy.cut_after(ONE_STATEMENT_TRANSFER);
    // The probe's statement is prepared on its fresh connection first: the link goes there,
    // in Diesel's prepare, which leaves the connection unmarked.
    proxy.cut_instead_of_preparing("FROM \"transfers\" WHERE");
    let result = bank::transfer_in_style(&database, &policy(), TransferStyle::OneStatement);
    assert_eq!(
        proxy.cuts(),
        2,
        "{label}: the statement's link and the probe's were cut"
    );
    let committed = result.unwrap_or_else(|err| panic!("{label}: expected Ok, got {err:?}"));
    assert_eq!(committed.attempts, 1, "{label}: settled by the probe");
    assert_eq!(tally.ledger_inserts(), 1, "{label}: the work ran once");
    assert_books_balance(
        &db,
        &database,
        std::slice::from_ref(&committed.value),
        label,
    );
}

/// Landed: the probe resolved it and the work ran once. Never arrived: it was retried, and
/// every attempt ran the work (one ledger INSERT — a seed of 50 deposits fits in one) once.
fn assert_attempts_fit_the_cut(cut: Cut, attempts: u32, ledger_inserts: u64, label: &str) {
    match cut {
        Cut::Landed => {
            assert_eq!(attempts, 1, "{label}: resolved by the probe");
            assert_eq!(ledger_inserts, 1, "{label}: the work ran once");
        }
        Cut::NeverArrived => {
            assert!(attempts >= 2, "{label}: it was retried");
            assert_eq!(
                ledger_inserts,
                u64::from(attempts),
                "{label}: every attempt ran the work once"
            );
        }
    }
}

/// How long the server may keep a swallowed commit's transaction (`idle_in_transaction_timeout`
/// in the partition tests), and the margin the settling may take beyond it.
const IDLE_BOUND: Duration = Duration::from_secs(2);
const SETTLE_MARGIN: Duration = Duration::from_secs(10);

/// A fresh bank of `accounts` accounts behind a proxy that will swallow the next `statement`
/// (a commit), opened with the `flavor` protocol: the server ends a transaction of ours left
/// idle for [`IDLE_BOUND`].
fn partitioned_bank(
    name: &str,
    accounts: u64,
    flavor: Flavor,
    statement: &str,
) -> (TestDb, CuttingProxy, Database) {
    let (db, proxy, url) = bank_behind_proxy(name, accounts);
    let (database, _) = open_with(
        &url,
        ConnectOptions {
            pool_size: 2,
            flavor_override: Some(flavor),
            idle_in_transaction_timeout: IDLE_BOUND,
            ..ConnectOptions::default()
        },
    );
    proxy.swallow(statement);
    (db, proxy, database)
}

/// Runs `work` behind the partition of [`partitioned_bank`]: it must settle within the idle
/// bound (and a margin), after the proxy swallowed exactly one commit, and succeed.
fn settle_under_partition<T: Send + 'static, E: std::fmt::Debug + Send + 'static>(
    label: &str,
    proxy: &CuttingProxy,
    database: Database,
    work: impl FnOnce(&Database) -> Result<T, E> + Send + 'static,
) -> (Database, T) {
    let (database, result) = settles_in_bounded_time(label, IDLE_BOUND, database, work);
    assert_eq!(
        proxy.cuts(),
        1,
        "{label}: the partition swallowed one commit"
    );
    let value = result.unwrap_or_else(|err| panic!("{label}: expected Ok, got {err:?}"));
    (database, value)
}

/// Runs `work` on `database` in a thread; fails the test if it has not returned within
/// `bound` + [`SETTLE_MARGIN`] (it would hang for ever otherwise). Returns the database back
/// and what `work` returned.
fn settles_in_bounded_time<T: Send + 'static>(
    label: &str,
    bound: Duration,
    database: Database,
    work: impl FnOnce(&Database) -> T + Send + 'static,
) -> (Database, T) {
    let started = Instant::now();
    let call = thread::spawn(move || {
        let result = work(&database);
        (database, result)
    });
    while !call.is_finished() {
        assert!(
            started.elapsed() < bound + SETTLE_MARGIN,
            "{label}: still waiting after {:?}: it hangs",
            started.elapsed()
        );
        thread::sleep(Duration::from_millis(50));
    }
    call.join().expect("the work's thread")
}

/// One `bank::transfer` whose `statement` (the commit) a network partition swallows: the client
/// loses its connection, while the server keeps the transaction open, idle, holding its row
/// locks and its uncommitted ledger row. The retry that settles it reuses the ledger id and so
/// waits on that row; the server ends the zombie after `idle_in_transaction_timeout`, and the
/// transfer is then applied once.
fn transfer_with_commit_swallowed(flavor: Flavor, style: TransferStyle, statement: &str) {
    let label = format!("{flavor}, {style:?}, {statement:?} swallowed");
    let _serial = one_at_a_time();
    let (db, proxy, database) = partitioned_bank("faults_swallowed_commit", 10, flavor, statement);
    let before = balances(&db);
    let (database, committed) = settle_under_partition(&label, &proxy, database, move |database| {
        bank::transfer_in_style(database, &policy(), style)
    });
    let transfer = &committed.value;
    assert_books_balance(&db, &database, std::slice::from_ref(transfer), &label);
    let mut expected = before;
    *expected
        .get_mut(&transfer.source)
        .expect("the source exists") -= transfer.amount;
    *expected.get_mut(&transfer.sink).expect("the sink exists") += transfer.amount;
    assert_eq!(balances(&db), expected, "{label}: the amount moved once");
}

#[test]
fn seed_whose_commit_a_partition_swallows_settles_within_the_idle_bound_and_applies_once() {
    const ACCOUNTS: u64 = 50;
    let label = "seed, COMMIT swallowed";
    let _serial = one_at_a_time();
    let (db, proxy, database) =
        partitioned_bank("faults_swallowed_seed", 0, Flavor::PostgreSql, "COMMIT");
    let (database, committed) = settle_under_partition(label, &proxy, database, |database| {
        bank::seed(database, &policy(), ACCOUNTS)
    });
    assert_seeded_once(&db, &database, &committed.value, ACCOUNTS, label);
}

#[test]
fn points_whose_commit_a_partition_swallows_settle_within_the_idle_bound_exactly_n_rows() {
    const N: u64 = 2_000;
    let label = "points, COMMIT swallowed";
    let _serial = one_at_a_time();
    let (db, proxy, database) =
        partitioned_bank("faults_swallowed_points", 0, Flavor::PostgreSql, "COMMIT");
    let (_database, report) = settle_under_partition(label, &proxy, database, |database| {
        PointsRun::new(N, 500).run(database, &policy(), &mut |_| {})
    });
    assert_eq!(report.rows, N);
    assert_eq!(
        count(&db, "SELECT count(*) FROM points"),
        N as i64,
        "{label}"
    );
}

/// Under CockroachDB's protocol a `points` chunk is one INSERT, its own commit: a lost answer,
/// or CockroachDB's 57014 put in place of one that committed, leaves its outcome unknown, and
/// the chunk probe must settle it — exactly N rows, the chunk never written twice.
#[test]
fn cockroach_points_chunk_whose_insert_landed_but_whose_answer_was_lost_is_found_by_the_probe() {
    const N: u64 = 300;
    let _serial = one_at_a_time();
    for lost_how in ["connection cut", "57014"] {
        let label = format!("points as CockroachDB, INSERT committed, {lost_how}");
        let (db, proxy, url) = bank_behind_proxy("faults_crdb_points_cut", 0);
        let (database, _tally) = open(&url, 2, Some(Flavor::CockroachDb));
        match lost_how {
            "57014" => proxy.answer_canceled_after_commit("INSERT INTO \"points\"", QUERY_CANCELED),
            _ => proxy.cut_after("INSERT INTO \"points\""),
        }
        let report = PointsRun::new(N, 100)
            .run(&database, &policy(), &mut |_| {})
            .unwrap_or_else(|error| panic!("{label}: {error}"));
        assert!(
            proxy.cuts() + proxy.answered() >= 1,
            "{label}: the proxy lost one answer"
        );
        assert_eq!(report.rows, N, "{label}");
        assert_eq!(
            count(&db, "SELECT count(*) FROM points"),
            N as i64,
            "{label}: every row once"
        );
    }
}

#[test]
fn transfer_whose_commit_a_partition_swallows_settles_within_the_idle_bound_and_applies_once() {
    transfer_with_commit_swallowed(Flavor::PostgreSql, TransferStyle::Tutorial, "COMMIT");
}

#[test]
fn cockroach_protocol_transfer_whose_release_a_partition_swallows_settles_and_applies_once() {
    transfer_with_commit_swallowed(
        Flavor::CockroachDb,
        TransferStyle::Tutorial,
        "RELEASE SAVEPOINT",
    );
}

#[test]
fn one_statement_transfer_that_a_partition_swallows_settles_and_applies_once() {
    for flavor in [Flavor::PostgreSql, Flavor::CockroachDb] {
        transfer_with_commit_swallowed(flavor, TransferStyle::OneStatement, ONE_STATEMENT_TRANSFER);
    }
}

#[test]
fn transfer_whose_commit_landed_but_whose_answer_was_lost_is_found_by_the_probe() {
    transfer_with_commit_cut(
        Flavor::PostgreSql,
        TransferStyle::Tutorial,
        "COMMIT",
        Cut::Landed,
    );
}

#[test]
fn transfer_whose_commit_never_reached_the_server_is_retried_and_applied_once() {
    transfer_with_commit_cut(
        Flavor::PostgreSql,
        TransferStyle::Tutorial,
        "COMMIT",
        Cut::NeverArrived,
    );
}

/// Sent alone, the one-statement transfer is its own commit: a lost answer leaves its outcome
/// unknown, on either protocol, and the probe must settle it.
#[test]
fn one_statement_transfer_that_landed_but_whose_answer_was_lost_is_found_by_the_probe() {
    for flavor in [Flavor::PostgreSql, Flavor::CockroachDb] {
        transfer_with_commit_cut(
            flavor,
            TransferStyle::OneStatement,
            ONE_STATEMENT_TRANSFER,
            Cut::Landed,
        );
    }
}

#[test]
fn one_statement_transfer_that_never_reached_the_server_is_retried_and_applied_once() {
    for flavor in [Flavor::PostgreSql, Flavor::CockroachDb] {
        transfer_with_commit_cut(
            flavor,
            TransferStyle::OneStatement,
            ONE_STATEMENT_TRANSFER,
            Cut::NeverArrived,
        );
    }
}

/// On CockroachDB `RELEASE SAVEPOINT cockroach_restart` is the commit: when it lands and its
/// answer is lost, the probe must find the transfer. (On PostgreSQL the RELEASE commits nothing:
/// the COMMIT after it would, and it is never sent.)
#[test]
fn cockroach_release_that_landed_but_whose_answer_was_lost_is_found_by_the_probe() {
    if not_run_on_postgresql(
        "cockroach_release_that_landed_but_whose_answer_was_lost_is_found_by_the_probe",
        "RELEASE SAVEPOINT cockroach_restart, which commits only there",
    ) {
        return;
    }
    transfer_with_commit_cut(
        Flavor::CockroachDb,
        TransferStyle::Tutorial,
        "RELEASE SAVEPOINT cockroach_restart",
        Cut::Landed,
    );
}

#[test]
fn cockroach_protocol_transfer_whose_release_never_reached_the_server_is_applied_once() {
    transfer_with_commit_cut(
        Flavor::CockroachDb,
        TransferStyle::Tutorial,
        "RELEASE SAVEPOINT cockroach_restart",
        Cut::NeverArrived,
    );
}

/// PostgreSQL's deferred constraint triggers run at `COMMIT`: installs one on `transfers`
/// that runs `body` (PL/pgSQL) for every transfer row (deposits are left alone).
fn at_commit_of_each_transfer(db: &TestDb, name: &str, body: &str) {
    db.psql(&format!(
        "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.source_id IS NOT NULL THEN {body} END IF; RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER {name} AFTER INSERT ON transfers
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {name}();"
    ));
}

#[test]
fn transfer_whose_commit_lands_after_the_probe_looked_is_applied_once() {
    if not_run_on_cockroachdb(
        "transfer_whose_commit_lands_after_the_probe_looked_is_applied_once",
        "the COMMIT is slowed by a PL/pgSQL deferred constraint trigger, which CockroachDB lacks",
    ) {
        return;
    }
    commit_lands_after_the_probe_looked(TransferStyle::Tutorial, "COMMIT");
}

/// Deferred constraint triggers run when the implicit transaction of a statement sent alone
/// commits, at its end: the one-statement transfer can land late too.
#[test]
fn one_statement_transfer_that_lands_after_the_probe_looked_is_applied_once() {
    if not_run_on_cockroachdb(
        "one_statement_transfer_that_lands_after_the_probe_looked_is_applied_once",
        "the statement is slowed by a PL/pgSQL deferred constraint trigger, which CockroachDB lacks",
    ) {
        return;
    }
    commit_lands_after_the_probe_looked(TransferStyle::OneStatement, ONE_STATEMENT_TRANSFER);
}

/// A transfer in `style` whose commit (`statement`) takes a second on the server, with the
/// link cut 50 ms after it was passed on: the probe looks too early, and the retry races the
/// late commit. It must be applied once.
fn commit_lands_after_the_probe_looked(style: TransferStyle, statement: &str) {
    let label = &format!("{style:?}: {statement:?} landing 1 s after the link was cut");
    let _serial = one_at_a_time();
    let (db, proxy, url) = bank_behind_proxy("faults_late_commit", 10);
    // The COMMIT takes a second on the server; the proxy cuts the link 50 ms after passing it
    // on, so the probe looks while the commit is still under way, finds nothing, and the retry
    // races the commit landing late: it must meet the lost attempt's ledger id, not apply the
    // transfer a second time.
    at_commit_of_each_transfer(&db, "slow_commit", "PERFORM pg_sleep(1);");
    let (database, tally) = open(&url, 2, Some(Flavor::PostgreSql));
    let before = balances(&db);
    proxy.cut_after(statement);
    let result = bank::transfer_in_style(&database, &policy(), style);
    assert_eq!(proxy.cuts(), 1, "{label}: the proxy cut the link once");
    assert_eq!(
        tally.lost_commits(),
        1,
        "{label}: one commit lost in flight"
    );
    let committed = result.unwrap_or_else(|err| panic!("{label}: expected Ok, got {err:?}"));
    let transfer = &committed.value;
    eprintln!(
        "{label}: {} → {} amount {}, attempts {}, ledger inserts sent {}",
        transfer.source,
        transfer.sink,
        transfer.amount,
        committed.attempts,
        tally.ledger_inserts()
    );
    assert!(
        committed.attempts >= 2,
        "{label}: the probe looked before the commit landed, so the work was retried"
    );
    assert_books_balance(&db, &database, std::slice::from_ref(transfer), label);
    let mut expected = before;
    *expected
        .get_mut(&transfer.source)
        .expect("the source exists") -= transfer.amount;
    *expected.get_mut(&transfer.sink).expect("the sink exists") += transfer.amount;
    assert_eq!(balances(&db), expected, "{label}: moved once");
}

#[test]
fn a_commit_lost_every_time_is_retried_a_bounded_number_of_times_reported_unknown_and_nothing_is_applied(
) {
    const MAX_RETRIES: u32 = 3;
    // A correct helper gives up after 4 attempts and < 1 s of backoff.
    const DEADLINE: Duration = Duration::from_secs(5);
    if not_run_on_cockroachdb(
        "a_commit_lost_every_time_is_retried_a_bounded_number_of_times_reported_unknown_and_nothing_is_applied",
        "the backend kills itself at every COMMIT from a PL/pgSQL deferred constraint trigger \
         with pg_terminate_backend, neither of which CockroachDB has",
    ) {
        return;
    }
    let label = "every COMMIT kills its backend";
    let _serial = one_at_a_time();
    let db = TestDb::new("faults_every_commit_lost");
    let (database, tally) = open(&db.url, 2, None);
    seed(&database, 10);
    let before = balances(&db);
    // Every transfer's backend terminates itself while COMMIT runs: the client loses the
    // connection with the commit in flight, the probe finds nothing (it rolled back), and the
    // next attempt meets the same fate.
    at_commit_of_each_transfer(
        &db,
        "die_at_commit",
        "PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5);",
    );
    tally.reset();
    let small = RetryPolicy {
        max_retries: MAX_RETRIES,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        ..RetryPolicy::default()
    };
    let clock = Instant::now();
    let (in_time, result) = thread::scope(|scope| {
        let call = scope.spawn(|| bank::transfer(&database, &small));
        while !call.is_finished() && clock.elapsed() < DEADLINE {
            thread::sleep(Duration::from_millis(20));
        }
        let in_time = call.is_finished();
        if !in_time {
            // Let a looping helper's next attempt commit, so that it returns.
            db.psql("DROP TRIGGER die_at_commit ON transfers");
        }
        (in_time, call.join().expect("the transfer thread"))
    });
    let lost = tally.lost_commits();
    eprintln!(
        "{label}: returned after {:.2} s ({}): {result:?}; commits lost in flight {lost}, \
         ledger inserts sent {}",
        clock.elapsed().as_secs_f64(),
        if in_time {
            "by itself"
        } else {
            "only once the trigger was dropped"
        },
        tally.ledger_inserts()
    );
    // Whatever happened, the books balance and match what was reported.
    let reported: Vec<Transfer> = result.iter().map(|c| c.value.clone()).collect();
    assert_books_balance(&db, &database, &reported, label);
    assert!(
        in_time,
        "{label}: with max_retries {MAX_RETRIES} the transfer did not give up within \
         {DEADLINE:?}: {lost} commits were lost and retried (run_transaction_exactly_once \
         retries an unknown outcome the probe resolved as \"not committed\" without counting it \
         against max_retries and without backoff)"
    );
    // Giving up after commits whose outcome was unknown is reported as unknown, not as a
    // failure: the library cannot rule out that the last lost commit lands late.
    match result {
        Err(TransactionError::AmbiguousCommit { attempts, .. }) => assert!(
            attempts <= MAX_RETRIES + 1,
            "{label}: {attempts} attempts with max_retries {MAX_RETRIES}"
        ),
        other => panic!("{label}: expected AmbiguousCommit after the retries, got {other:?}"),
    }
    assert!(
        lost <= u64::from(MAX_RETRIES) + 1,
        "{label}: {lost} commits"
    );
    assert_eq!(balances(&db), before, "{label}: nothing was applied");
}

/// The administrative database named by the server's admin URL (where psql can still go while
/// a test database refuses connections).
fn admin_database() -> String {
    let url = server().admin_url();
    let path = url.split('?').next().unwrap_or(url);
    match path.rsplit_once('/') {
        Some((authority, name)) if !name.is_empty() && !authority.ends_with('/') => {
            name.to_string()
        }
        _ => "postgres".to_string(),
    }
}

/// Makes a database refuse every new connection (superusers included) until dropped.
struct RefuseConnections<'a>(&'a TestDb);

impl<'a> RefuseConnections<'a> {
    fn start(db: &'a TestDb) -> Self {
        server().psql(
            &admin_database(),
            &format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS false", db.name),
        );
        RefuseConnections(db)
    }
}

impl Drop for RefuseConnections<'_> {
    fn drop(&mut self) {
        let _ = server().try_psql(
            &admin_database(),
            &format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true", self.0.name),
        );
    }
}

#[test]
fn a_transfer_whose_lost_commit_lands_late_during_an_outage_is_not_reported_failed() {
    for (style, statement) in [
        (TransferStyle::Tutorial, "COMMIT"),
        (TransferStyle::OneStatement, ONE_STATEMENT_TRANSFER),
    ] {
        if not_run_on_cockroachdb(
            "a_transfer_whose_lost_commit_lands_late_during_an_outage_is_not_reported_failed",
            "the COMMIT is slowed by a PL/pgSQL deferred constraint trigger and the outage is \
             ALTER DATABASE … ALLOW_CONNECTIONS false plus pg_terminate_backend of the lock \
             waiter found in pg_stat_activity, none of which CockroachDB has",
        ) {
            return;
        }
        lost_commit_lands_late_during_an_outage(style, statement);
    }
}

/// A transfer in `style` whose commit (`statement`) lands late, while the database refuses
/// connections: it must not be reported failed.
fn lost_commit_lands_late_during_an_outage(style: TransferStyle, statement: &str) {
    // The slow COMMIT lands this long after it was sent.
    const COMMIT_TAKES: Duration = Duration::from_secs(2);
    let label = &format!(
        "{style:?}: lost {statement:?} landing late while the database refuses connections"
    );
    let _serial = one_at_a_time();
    let (db, proxy, url) = bank_behind_proxy("faults_late_commit_outage", 10);
    at_commit_of_each_transfer(
        &db,
        "slow_commit",
        &format!("PERFORM pg_sleep({});", COMMIT_TAKES.as_secs()),
    );
    let config = DatabaseConfig::parse(&url, UrlSource::Flag).unwrap();
    let options = ConnectOptions {
        pool_size: 2,
        // Shorter than the outage below; the default (30 s) only moves the threshold.
        pool_timeout: Some(Duration::from_secs(1)),
        flavor_override: Some(Flavor::PostgreSql),
        ..ConnectOptions::default()
    };
    let database = Database::open(config, &options).expect("open through the proxy");
    let admin = admin_database();
    let lock_waiters = format!(
        "FROM pg_stat_activity WHERE datname = '{}' AND wait_event_type = 'Lock'",
        db.name
    );
    // 1. The COMMIT reaches the server, which takes 2 s over it; the link is cut after 50 ms.
    // 2. The probe finds nothing yet, so the retry begins and blocks behind the lost attempt
    //    (same ledger id).
    // 3. The database now refuses connections and the retry's backend is terminated: the
    //    helper cannot get a connection within the pool's timeout.
    // 4. The lost commit lands. The transfer is applied, so the helper must not call it failed:
    //    Ok (if it asks again once the server lets it) or, at worst, AmbiguousCommit.
    proxy.cut_after(statement);
    let clock = Instant::now();
    let result = thread::scope(|scope| {
        let call = scope.spawn(|| bank::transfer_in_style(&database, &policy(), style));
        while server().psql(&admin, &format!("SELECT count(*) {lock_waiters}")) == "0" {
            assert!(
                clock.elapsed() < COMMIT_TAKES / 2 && !call.is_finished(),
                "{label}: the retry never blocked behind the lost attempt (scenario not set up)"
            );
            thread::sleep(Duration::from_millis(10));
        }
        let refusing = RefuseConnections::start(&db);
        server().psql(
            &admin,
            &format!("SELECT pg_terminate_backend(pid) {lock_waiters}"),
        );
        thread::sleep((COMMIT_TAKES + Duration::from_millis(500)).saturating_sub(clock.elapsed()));
        drop(refusing);
        let deadline = clock.elapsed() + Duration::from_secs(20);
        while !call.is_finished() && clock.elapsed() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        call.join().expect("the transfer thread")
    });
    let in_ledger = count(
        &db,
        "SELECT count(*) FROM transfers WHERE source_id IS NOT NULL",
    );
    eprintln!(
        "{label}: returned after {:.2} s: {result:?}; transfers in the ledger: {in_ledger}",
        clock.elapsed().as_secs_f64()
    );
    assert_eq!(proxy.cuts(), 1, "{label}: the proxy cut the link once");
    assert_eq!(
        in_ledger, 1,
        "{label}: the lost commit landed (scenario set up)"
    );
    assert_audit_consistent(&database, label);
    match result {
        Ok(committed) => {
            assert_books_balance(&db, &database, &[committed.value], label);
        }
        Err(TransactionError::AmbiguousCommit { .. }) => {}
        Err(other) => panic!(
            "{label}: the transfer is in the ledger, yet bank::transfer reported it failed \
             (run_transfers counts this as `failed`, \"none of their effect was applied\"): \
             {other}"
        ),
    }
}

/// A seed that reported `seeded` created exactly `accounts` accounts, once: each with one
/// deposit, holding the money reported, the books consistent.
fn assert_seeded_once(
    db: &TestDb,
    database: &Database,
    seeded: &bank::SeedReport,
    accounts: u64,
    label: &str,
) {
    assert_audit_consistent(database, label);
    assert_eq!(seeded.accounts, accounts, "{label}");
    assert_eq!(
        count(db, "SELECT count(*) FROM accounts"),
        accounts as i64,
        "{label}"
    );
    assert_eq!(
        count(db, "SELECT count(*) FROM transfers WHERE source_id IS NULL"),
        accounts as i64,
        "{label}: one deposit per account"
    );
    assert_eq!(
        count(db, "SELECT COALESCE(SUM(balance), 0) FROM accounts"),
        seeded.money,
        "{label}: the reported money is what the accounts hold"
    );
}

/// One `bank::seed` of `ACCOUNTS` through a proxy that cuts the connection on `COMMIT`.
fn seed_with_commit_cut(cut: Cut) {
    const ACCOUNTS: u64 = 50;
    let label = format!("seed, cut on COMMIT, {cut:?}");
    let _serial = one_at_a_time();
    let (db, proxy, url) = bank_behind_proxy("faults_cut_seed", 0);
    let (database, tally) = open(&url, 2, Some(Flavor::PostgreSql));
    match cut {
        Cut::Landed => proxy.cut_after("COMMIT"),
        Cut::NeverArrived => proxy.cut_instead_of("COMMIT"),
    }
    let result = bank::seed(&database, &policy(), ACCOUNTS);
    assert_eq!(proxy.cuts(), 1, "{label}: the proxy cut the link once");
    assert_eq!(
        tally.lost_commits(),
        1,
        "{label}: the client lost its connection with the commit in flight"
    );
    let committed = match result {
        Ok(committed) => committed,
        Err(other) => panic!("{label}: expected Ok, got {other:?}"),
    };
    eprintln!(
        "{label}: {} accounts, money {}, attempts {}",
        committed.value.accounts, committed.value.money, committed.attempts
    );
    assert_seeded_once(&db, &database, &committed.value, ACCOUNTS, &label);
    assert_attempts_fit_the_cut(cut, committed.attempts, tally.ledger_inserts(), &label);
}

#[test]
fn seed_whose_commit_landed_but_whose_answer_was_lost_is_found_by_the_deposits_probe() {
    seed_with_commit_cut(Cut::Landed);
}

#[test]
fn seed_whose_commit_never_reached_the_server_is_retried_and_applied_once() {
    seed_with_commit_cut(Cut::NeverArrived);
}

/// Under CockroachDB's protocol a seed commits a transaction per 2,500 accounts, and each
/// transaction's deposits take the next shard of ids (`roachbank::bank::ids`): when the first
/// two transactions' RELEASEs commit but are answered 57014 (as CockroachDB answers a statement
/// canceled while its commit went through; the proxy commits on PostgreSQL), each probe must
/// look under its own transaction's shard and find it — every account created once, none
/// created again.
#[test]
fn cockroach_seed_transactions_answered_57014_after_they_committed_are_found_by_the_probe() {
    const ACCOUNTS: u64 = 2 * bank::COCKROACH_SEED_CHUNK + 7;
    let label = "seed as CockroachDB, two RELEASEs committed and answered 57014";
    let _serial = one_at_a_time();
    let (db, proxy, url) = bank_behind_proxy("faults_crdb_57014_seed", 0);
    let (database, tally) = open(&url, 2, Some(Flavor::CockroachDb));
    let release = cockroach_commit_point(TransferStyle::Tutorial);
    proxy.answer_canceled_after_commit(release, QUERY_CANCELED);
    proxy.answer_canceled_after_commit(release, QUERY_CANCELED);
    let committed = bank::seed(&database, &policy(), ACCOUNTS)
        .unwrap_or_else(|err| panic!("{label}: expected Ok, got {err}"));
    assert_eq!(
        proxy.answered(),
        2,
        "{label}: the proxy answered 57014 twice"
    );
    assert_seeded_once(&db, &database, &committed.value, ACCOUNTS, label);
    assert_eq!(
        committed.attempts, 3,
        "{label}: three transactions, each run once (the two answered 57014 found by the probe)"
    );
    assert_eq!(
        tally.ledger_inserts(),
        3,
        "{label}: the deposits were written once"
    );
}

/// Why the seed's fault tests run only on PostgreSQL.
const SEED_AT_READ_COMMITTED: &str =
    "the seed runs at READ COMMITTED on PostgreSQL only (SERIALIZABLE on CockroachDB, whose 40001 is retried)";

/// On PostgreSQL a seed runs at READ COMMITTED, so a seed that writes an id another seed took
/// after it looked meets a unique violation (23505) rather than SERIALIZABLE's 40001: it must
/// run again with fresh draws, not fail. A trigger raises that violation on the first attempt's
/// COPY of the accounts.
#[test]
fn seed_that_meets_a_unique_violation_runs_again_and_creates_each_account_once() {
    const ACCOUNTS: u64 = 1000;
    if not_run_on_cockroachdb(
        "seed_that_meets_a_unique_violation_runs_again_and_creates_each_account_once",
        SEED_AT_READ_COMMITTED,
    ) {
        return;
    }
    let db = TestDb::new("faults_seed_unique_violation");
    let (database, _) = open(&db.url, 2, None);
    // A sequence, not a table: nextval survives the rollback of the attempt that called it.
    db.psql(
        "CREATE SEQUENCE seed_writes; \
         CREATE FUNCTION first_seed_write_collides() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN \
           IF nextval('seed_writes') = 1 THEN \
             RAISE unique_violation USING MESSAGE = 'duplicate key value violates unique constraint \"accounts_pkey\"'; \
           END IF; \
           RETURN NULL; \
         END $$; \
         CREATE TRIGGER first_seed_write_collides BEFORE INSERT ON accounts \
           FOR EACH STATEMENT EXECUTE FUNCTION first_seed_write_collides()",
    );
    let committed = bank::seed(&database, &policy(), ACCOUNTS)
        .unwrap_or_else(|err| panic!("the seed failed instead of running again: {err}"));
    assert_eq!(committed.value.accounts, ACCOUNTS);
    assert_eq!(
        committed.attempts, 2,
        "the collided attempt, then the one that committed"
    );
    assert_eq!(count(&db, "SELECT last_value FROM seed_writes"), 2);
    assert_eq!(count(&db, "SELECT count(*) FROM accounts"), ACCOUNTS as i64);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM transfers WHERE source_id IS NULL"
        ),
        ACCOUNTS as i64,
        "one deposit per account"
    );
    assert_eq!(
        count(&db, "SELECT COALESCE(SUM(balance), 0) FROM accounts"),
        committed.value.money
    );
    assert_audit_consistent(&database, "seed after a unique violation");
}

/// A seed is one long transaction reading the id ranges it writes into, while transfers read
/// and write the accounts: at SERIALIZABLE, PostgreSQL aborts the seed as the pivot of a
/// read/write cycle (40001) and it starts again from nothing — over and over for a long seed
/// under a steady stream of transfers. At READ COMMITTED (the seed only inserts rows under keys
/// it found free; the primary keys keep it correct) nothing aborts it.
#[test]
fn seed_alongside_transfers_commits_at_its_first_attempt() {
    const ACCOUNTS: u64 = 20_000;
    if not_run_on_cockroachdb(
        "seed_alongside_transfers_commits_at_its_first_attempt",
        SEED_AT_READ_COMMITTED,
    ) {
        return;
    }
    let _serial = one_at_a_time();
    let db = TestDb::new("faults_seed_alongside_transfers");
    let (database, _) = open(&db.url, 4, None);
    seed(&database, 100);
    let stop = AtomicBool::new(false);
    let transfers = AtomicU64::new(0);
    let seeded = thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    bank::transfer(&database, &policy()).expect("a transfer");
                    transfers.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        // Transfers under way before the seed starts.
        while transfers.load(Ordering::SeqCst) < 20 {
            thread::sleep(Duration::from_millis(5));
        }
        let seeded = bank::seed(&database, &policy(), ACCOUNTS);
        stop.store(true, Ordering::SeqCst);
        seeded
    });
    let seeded = seeded.unwrap_or_else(|err| panic!("the seed failed: {err}"));
    eprintln!(
        "seed alongside transfers: {} attempt(s), {} transfers",
        seeded.attempts,
        transfers.load(Ordering::SeqCst)
    );
    assert_eq!(
        seeded.attempts, 1,
        "the seed was aborted by the transfers running beside it"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM accounts"),
        100 + ACCOUNTS as i64
    );
    assert_audit_consistent(&database, "seed alongside transfers");
}

#[test]
fn points_load_exactly_n_rows_under_a_backend_killer() {
    const N: u64 = 20_000;
    const CHUNK: u64 = 500;
    if not_run_on_cockroachdb(
        "points_load_exactly_n_rows_under_a_backend_killer",
        NEEDS_BACKEND_KILLER,
    ) {
        return;
    }
    let _serial = one_at_a_time();
    let db = TestDb::new("faults_killed_points");
    let (database, _) = open(&db.url, 2, None);
    // Gentler than the transfer run's 5–20 ms: a chunk takes ~15 ms, so a kill every 5–20 ms
    // starves the load (measured: 19–26 s instead of ~1 s, the retry backoff and r2d2's
    // reconnect delay growing with every kill).
    let (loaded, kills) = while_killing_backends(
        &db.name,
        Duration::from_millis(20)..Duration::from_millis(60),
        || PointsRun::new(N, CHUNK).run(&database, &policy(), &mut |_| {}),
    );
    let report = loaded.unwrap_or_else(|err| panic!("add_points failed: {err}"));
    eprintln!(
        "backend killer: {} backends killed ({} rounds found none); points: {} rows in {} \
         chunks, {} retries, {:.2} s",
        kills.killed,
        kills.idle_rounds,
        report.rows,
        report.chunks,
        report.retries,
        report.elapsed.as_secs_f64()
    );
    assert!(kills.killed > 0, "the killer never killed a backend");
    assert_eq!(report.rows, N);
    assert_eq!(report.chunks, N.div_ceil(CHUNK));
    assert_eq!(count(&db, "SELECT count(*) FROM points"), N as i64);
    assert_eq!(
        count(&db, "SELECT count(DISTINCT id) FROM points"),
        N as i64
    );
    // Each row index (the id's low 32 bits) landed exactly once, whatever slot it got.
    assert_eq!(
        db.psql(
            "SELECT count(DISTINCT id & 4294967295) || ',' || min(id & 4294967295) || ',' \
             || max(id & 4294967295) FROM points"
        ),
        format!("{N},0,{}", N - 1)
    );
}

/// Why the frozen-backend tests run only on the throwaway PostgreSQL.
const NEEDS_OWN_BACKENDS: &str =
    "freezes the server's backend processes with SIGSTOP, which needs the throwaway PostgreSQL";

/// Stops a backend process (SIGSTOP) until dropped (SIGCONT): the server's side of a
/// connection stops answering while its kernel still acknowledges — what neither libpq's
/// timeouts nor TCP keepalives notice, as with a frozen server or a proxy that stops forwarding.
struct FrozenBackends(Vec<i64>);

impl FrozenBackends {
    fn freeze(pids: Vec<i64>) -> FrozenBackends {
        for pid in &pids {
            send_signal("STOP", *pid);
        }
        FrozenBackends(pids)
    }
}

impl Drop for FrozenBackends {
    fn drop(&mut self) {
        for pid in &self.0 {
            send_signal("CONT", *pid);
        }
    }
}

/// Whether the frozen-backend tests can run here (they say why not otherwise).
fn can_freeze_backends(test: &str) -> bool {
    if not_run_on_cockroachdb(test, NEEDS_OWN_BACKENDS) {
        return false;
    }
    if !server().is_throwaway() {
        eprintln!("NOT RUN on TEST_DATABASE_URL's PostgreSQL: {test}: {NEEDS_OWN_BACKENDS}");
        return false;
    }
    true
}

/// How long a statement may go unanswered in the frozen-backend tests.
const STALL_BOUND: Duration = Duration::from_secs(2);

/// A fresh bank of 10 accounts, opened with `workers` pooled connections and [`STALL_BOUND`].
fn bank_with_stall_bound(name: &str, workers: u32) -> (TestDb, Database) {
    let db = TestDb::new(name);
    let (direct, _) = open(&db.url, 1, None);
    seed(&direct, 10);
    drop(direct);
    let (database, _) = open_with(
        &db.url,
        ConnectOptions {
            pool_size: workers,
            stall_timeout: Some(STALL_BOUND),
            ..ConnectOptions::default()
        },
    );
    (db, database)
}

/// The backend processes serving `database` (a test database's name) now, but for psql's own.
fn backends_of(database: &str) -> Vec<i64> {
    server()
        .psql(
            &admin_database(),
            &format!(
                "SELECT pid FROM pg_stat_activity WHERE datname = '{database}' \
                 AND pid <> pg_backend_pid()"
            ),
        )
        .lines()
        .map(|pid| pid.trim().parse().expect("a pid"))
        .collect()
}

#[test]
fn a_transfer_whose_connection_stops_answering_is_retried_on_a_fresh_one_within_the_stall_bound() {
    const TEST: &str =
        "a_transfer_whose_connection_stops_answering_is_retried_on_a_fresh_one_within_the_stall_bound";
    if !can_freeze_backends(TEST) {
        return;
    }
    let _serial = one_at_a_time();
    let (db, database) = bank_with_stall_bound("faults_frozen_backend", 1);
    // The pool's one connection, opened now, is the one the transfer will be given.
    drop(database.pool().get().expect("a pooled connection"));
    let _frozen = FrozenBackends::freeze(backends_of(&db.name));
    let (database, result) = settles_in_bounded_time(TEST, STALL_BOUND, database, |database| {
        bank::transfer(database, &policy())
    });
    let committed = result.unwrap_or_else(|err| panic!("{TEST}: expected Ok, got {err:?}"));
    assert!(committed.attempts >= 2, "the stalled attempt was retried");
    assert_books_balance(&db, &database, std::slice::from_ref(&committed.value), TEST);
}

#[test]
fn a_timed_run_whose_connections_stop_answering_returns_within_its_duration_and_the_stall_bound() {
    const TEST: &str =
        "a_timed_run_whose_connections_stop_answering_returns_within_its_duration_and_the_stall_bound";
    const RUN: Duration = Duration::from_secs(2);
    if !can_freeze_backends(TEST) {
        return;
    }
    let _serial = one_at_a_time();
    let (db, database) = bank_with_stall_bound("faults_frozen_run", 2);
    let name = db.name.clone();
    // Half-way through the run, every backend serving it freezes, for good.
    let freezer = thread::spawn(move || {
        thread::sleep(RUN / 2);
        FrozenBackends::freeze(backends_of(&name))
    });
    let (database, report) = settles_in_bounded_time(
        TEST,
        RUN + RETRY_GRACE + STALL_BOUND,
        database,
        |database| TransferRun::new(RunLength::Duration(RUN), 2).run(database, &policy(), &|_| {}),
    );
    let frozen = freezer.join().expect("the freezer");
    assert!(!frozen.0.is_empty(), "{TEST}: some backend was frozen");
    let summary = &report.summary;
    assert!(
        summary.done > 0,
        "{TEST}: transfers committed before the freeze"
    );
    assert!(
        summary.elapsed < RUN + RETRY_GRACE + STALL_BOUND + SETTLE_MARGIN,
        "{TEST}: the run took {:?}",
        summary.elapsed
    );
    drop(frozen);
    assert_audit_consistent(&database, TEST);
}

#[test]
fn cli_transfer_duration_returns_within_its_duration_and_the_stall_timeout_when_the_server_freezes()
{
    const TEST: &str =
        "cli_transfer_duration_returns_within_its_duration_and_the_stall_timeout_when_the_server_freezes";
    if !can_freeze_backends(TEST) {
        return;
    }
    let _serial = one_at_a_time();
    let (db, database) = bank_with_stall_bound("faults_frozen_cli", 1);
    drop(database);
    let name = db.name.clone();
    // A second into the three-second run, every backend serving it freezes, for good.
    let freezer = thread::spawn(move || {
        thread::sleep(Duration::from_secs(1));
        FrozenBackends::freeze(backends_of(&name))
    });
    let dir = support::bin::temp_dir();
    let (output, took) = support::bin::run_timed(
        dir.path(),
        &[
            "transfer",
            "--duration",
            "3s",
            "--workers",
            "2",
            "--stall-timeout",
            "2s",
            "--database-url",
            &db.url,
        ],
        &[],
        Duration::from_secs(30),
    );
    let frozen = freezer.join().expect("the freezer");
    assert!(!frozen.0.is_empty(), "{TEST}: some backend was frozen");
    support::bin::assert_no_panic(&output);
    assert!(
        took < Duration::from_secs(3) + RETRY_GRACE + STALL_BOUND + SETTLE_MARGIN,
        "{TEST}: `transfer --duration 3s --stall-timeout 2s` took {took:?}: {}",
        support::bin::describe(&output)
    );
    let stdout = support::bin::stdout_of(&output);
    assert!(stdout.contains("transfers"), "{TEST}: a summary: {stdout}");
}

// 57014 (query canceled) at and before the commit point — issue 18, point 2.
//
// CockroachDB puts 57014 in place of whatever a canceled or timed-out statement met, a commit
// that went through included (cockroachdb/cockroach `pkg/sql/conn_executor_exec.go`,
// `execStmtInOpenState`: "Detect context cancelation and overwrite whatever error might have
// been set on the result before", "A timed out query should never produce retryable
// errors/events/payloads so we intercept and overwrite them all here"). The proxy plays that
// answer: it lets the commit through, then answers 57014. PostgreSQL's own 57014 means the
// statement stopped before it finished, and is met here for real.

/// CockroachDB's 57014 messages: a cancel (cockroachdb/cockroach `pkg/util/cancelchecker`,
/// `QueryCanceledError`) and a statement timeout (`pkg/sql/sqlerrors`, `QueryTimeoutError`).
const QUERY_CANCELED: &str = "query execution canceled";
const QUERY_TIMED_OUT: &str = "query execution canceled due to statement timeout";

/// The statement that commits a transfer in `style` under the CockroachDB protocol.
fn cockroach_commit_point(style: TransferStyle) -> &'static str {
    match style {
        TransferStyle::Tutorial => "RELEASE SAVEPOINT cockroach_restart",
        TransferStyle::OneStatement => ONE_STATEMENT_TRANSFER,
    }
}

/// Exactly `transfer` moved, once: every balance is what it was `before` but the source's
/// (less the amount) and the sink's (more).
fn assert_moved_once(db: &TestDb, before: BTreeMap<i64, i64>, transfer: &Transfer, label: &str) {
    let mut expected = before;
    *expected
        .get_mut(&transfer.source)
        .expect("the source exists") -= transfer.amount;
    *expected.get_mut(&transfer.sink).expect("the sink exists") += transfer.amount;
    assert_eq!(
        balances(db),
        expected,
        "{label}: exactly the reported amount moved from source to sink, once"
    );
}

/// The ledger's transfer rows (deposits left out).
fn transfers_in_ledger(db: &TestDb) -> i64 {
    count(
        db,
        "SELECT count(*) FROM transfers WHERE source_id IS NOT NULL",
    )
}

/// One transfer in `style` with the `flavor` protocol, whose commit (`statement`) goes through
/// and is answered 57014 `message`: the probe must find it, once.
fn transfer_answered_57014_after_it_committed(
    flavor: Flavor,
    style: TransferStyle,
    statement: &str,
    message: &'static str,
) {
    let label = format!("{flavor}, {style:?}, {statement:?} committed, answered {message:?}");
    let _serial = one_at_a_time();
    let (db, proxy, url) = bank_behind_proxy("faults_57014_after_commit", 10);
    let (database, tally) = open(&url, 2, Some(flavor));
    let before = balances(&db);
    proxy.answer_canceled_after_commit(statement, message);
    let result = bank::transfer_in_style(&database, &policy(), style);
    assert_eq!(
        proxy.answered(),
        1,
        "{label}: the proxy answered 57014 once"
    );
    let committed = result.unwrap_or_else(|error| {
        panic!("{label}: the transfer committed, and the probe is there to find it, yet: {error:?}")
    });
    eprintln!(
        "{label}: attempts {}, ledger inserts sent {}",
        committed.attempts,
        tally.ledger_inserts()
    );
    assert_eq!(committed.attempts, 1, "{label}: settled by the probe");
    assert_eq!(tally.ledger_inserts(), 1, "{label}: the work ran once");
    assert_books_balance(
        &db,
        &database,
        std::slice::from_ref(&committed.value),
        &label,
    );
    assert_moved_once(&db, before, &committed.value, &label);
}

#[test]
fn cockroach_release_answered_57014_after_it_committed_is_found_by_the_probe() {
    for message in [QUERY_CANCELED, QUERY_TIMED_OUT] {
        transfer_answered_57014_after_it_committed(
            Flavor::CockroachDb,
            TransferStyle::Tutorial,
            cockroach_commit_point(TransferStyle::Tutorial),
            message,
        );
    }
}

#[test]
fn one_statement_transfer_answered_57014_after_it_committed_is_found_by_the_probe() {
    for message in [QUERY_CANCELED, QUERY_TIMED_OUT] {
        transfer_answered_57014_after_it_committed(
            Flavor::CockroachDb,
            TransferStyle::OneStatement,
            cockroach_commit_point(TransferStyle::OneStatement),
            message,
        );
    }
}

/// A plain pool on CockroachDB runs the PostgreSQL protocol (COMMIT is the commit there), and
/// CockroachDB's 57014 at that COMMIT hides a commit just the same: the message, CockroachDB's
/// own, says so whatever protocol the caller chose.
#[test]
fn cockroach_57014_at_commit_under_the_postgresql_protocol_is_found_by_the_probe() {
    for (style, statement) in [
        (TransferStyle::Tutorial, "COMMIT"),
        (TransferStyle::OneStatement, ONE_STATEMENT_TRANSFER),
    ] {
        transfer_answered_57014_after_it_committed(
            Flavor::PostgreSql,
            style,
            statement,
            QUERY_CANCELED,
        );
    }
}

/// The one-statement transfer as `run_single_statement` work, under `ledger_id`.
fn one_statement_transfer(
    conn: &mut roachbank::db::DbConnection,
    ledger_id: roachbank::bank::LedgerIds,
) -> Result<Transfer, roachbank::bank::BankError> {
    let roachbank::db::DbConnection::Postgresql(pg) = conn else {
        unreachable!("a server connection");
    };
    let mut rng = rand::rng();
    roachbank::bank::transfer::TransferStatement::new(
        roachbank::bank::ids::random_account_id(&mut rng),
        roachbank::bank::ids::random_account_id(&mut rng),
        ledger_id.first(),
    )
    .run(pg)?
    .ok_or(roachbank::bank::BankError::NotEnoughAccounts)
}

#[test]
fn without_a_probe_57014_at_the_commit_point_is_reported_unknown_never_failed() {
    for style in [TransferStyle::Tutorial, TransferStyle::OneStatement] {
        let statement = cockroach_commit_point(style);
        let label = format!("{style:?}, no probe, {statement:?} committed, answered 57014");
        let _serial = one_at_a_time();
        let (db, proxy, url) = bank_behind_proxy("faults_57014_no_probe", 10);
        let (database, tally) = open(&url, 2, Some(Flavor::CockroachDb));
        proxy.answer_canceled_after_commit(statement, QUERY_CANCELED);
        let ledger_id = roachbank::bank::LedgerIds::for_transfer();
        let result = match style {
            TransferStyle::Tutorial => {
                diesel_retry::run_transaction(&database, &policy(), |conn| {
                    bank::transfer_funds_randomly(conn, ledger_id)
                })
            }
            TransferStyle::OneStatement => {
                diesel_retry::run_single_statement(&database, &policy(), |conn| {
                    one_statement_transfer(conn, ledger_id)
                })
            }
        };
        assert_eq!(
            proxy.answered(),
            1,
            "{label}: the proxy answered 57014 once"
        );
        match result {
            Err(TransactionError::AmbiguousCommit { attempts, .. }) => {
                assert_eq!(attempts, 1, "{label}: never retried blindly")
            }
            other => panic!(
                "{label}: the transfer committed and nothing can look it up, so its outcome is \
                 unknown; got {other:?}"
            ),
        }
        assert_eq!(tally.ledger_inserts(), 1, "{label}: the work ran once");
        assert_eq!(
            count(
                &db,
                &format!(
                    "SELECT count(*) FROM transfers WHERE id = {}",
                    ledger_id.first()
                )
            ),
            1,
            "{label}: applied, once"
        );
        assert_audit_consistent(&database, &label);
    }
}

/// A statement timeout is the caller's bound and never retried. At the one-statement
/// transfer, which is its own commit, CockroachDB's timeout leaves the outcome open: the probe
/// looks, and finding nothing the transfer is reported unknown (a late commit cannot be ruled
/// out), never failed — and not run again.
#[test]
fn one_statement_transfer_stopped_by_cockroach_statement_timeout_and_not_found_is_reported_unknown_not_retried(
) {
    let label = "one statement answered CockroachDB's statement timeout, never run";
    let _serial = one_at_a_time();
    let (db, proxy, url) = bank_behind_proxy("faults_57014_timeout_unknown", 10);
    let (database, tally) = open(&url, 2, Some(Flavor::CockroachDb));
    let before = balances(&db);
    proxy.answer_canceled_instead_of(ONE_STATEMENT_TRANSFER, QUERY_TIMED_OUT, false);
    let result = bank::transfer_in_style(&database, &policy(), TransferStyle::OneStatement);
    assert_eq!(
        proxy.answered(),
        1,
        "{label}: the proxy answered 57014 once"
    );
    match result {
        Err(TransactionError::AmbiguousCommit { attempts, cause }) => {
            assert_eq!(attempts, 1, "{label}: a timeout is not retried");
            assert!(
                cause.to_string().contains(QUERY_TIMED_OUT),
                "{label}: {cause}"
            );
        }
        other => panic!("{label}: expected AmbiguousCommit after the probe, got {other:?}"),
    }
    assert_eq!(tally.ledger_inserts(), 1, "{label}: the work ran once");
    assert_eq!(balances(&db), before, "{label}: nothing was applied");
    assert_eq!(transfers_in_ledger(&db), 0, "{label}: nothing was applied");
}

#[test]
fn a_57014_before_the_commit_point_is_a_plain_failure_with_nothing_applied() {
    // CockroachDB's statement timeout answered to a statement of the work, under its protocol.
    {
        let label = "tutorial, CockroachDB's statement timeout on the first UPDATE";
        let _serial = one_at_a_time();
        let (db, proxy, url) = bank_behind_proxy("faults_57014_in_work", 10);
        let (database, tally) = open(&url, 2, Some(Flavor::CockroachDb));
        let before = balances(&db);
        proxy.answer_canceled_instead_of("UPDATE \"accounts\"", QUERY_TIMED_OUT, true);
        let result = bank::transfer_in_style(&database, &policy(), TransferStyle::Tutorial);
        assert_eq!(
            proxy.answered(),
            1,
            "{label}: the proxy answered 57014 once"
        );
        match result {
            Err(TransactionError::Failed { cause: error, .. }) => {
                assert!(
                    error.to_string().contains(QUERY_TIMED_OUT),
                    "{label}: {error}"
                )
            }
            other => panic!("{label}: expected Failed, got {other:?}"),
        }
        assert_eq!(tally.ledger_inserts(), 0, "{label}: the work stopped there");
        assert_eq!(balances(&db), before, "{label}: nothing was applied");
        assert_eq!(transfers_in_ledger(&db), 0, "{label}: nothing was applied");
    }
    // The server's own statement timeout, the transfer stuck behind another session's locks.
    {
        let label = "tutorial, the server's statement timeout in the work";
        let _serial = one_at_a_time();
        let db = TestDb::new("faults_timeout_in_work");
        let (direct, _) = open(&db.url, 1, None);
        seed(&direct, 10);
        drop(direct);
        let before = balances(&db);
        let mut locker = PgConnection::establish(&db.url).expect("the locking session");
        diesel::connection::SimpleConnection::batch_execute(
            &mut locker,
            "BEGIN; SELECT id FROM accounts FOR UPDATE",
        )
        .expect("lock every account");
        let (database, tally) = open_with(
            &db.url,
            ConnectOptions {
                pool_size: 1,
                statement_timeout: Some(Duration::from_millis(500)),
                flavor_override: Some(Flavor::CockroachDb),
                ..ConnectOptions::default()
            },
        );
        let result = bank::transfer_in_style(&database, &policy(), TransferStyle::Tutorial);
        match result {
            Err(TransactionError::Failed { cause: error, .. }) => assert!(
                error.to_string().contains("statement timeout"),
                "{label}: {error}"
            ),
            other => panic!("{label}: expected Failed, got {other:?}"),
        }
        assert_eq!(tally.ledger_inserts(), 0, "{label}: the work stopped there");
        diesel::connection::SimpleConnection::batch_execute(&mut locker, "ROLLBACK")
            .expect("release the locks");
        assert_eq!(balances(&db), before, "{label}: nothing was applied");
        assert_eq!(transfers_in_ledger(&db), 0, "{label}: nothing was applied");
    }
}

/// PostgreSQL's 57014 means the statement stopped before it finished: a cancel that takes
/// effect makes the command "terminate early and return an error result" (libpq, "Canceling
/// Queries in Progress"), and COMMIT holds off cancel interrupts from the moment it really
/// commits (`src/backend/access/transam/xact.c`, `CommitTransaction`: "Prevent cancel/die
/// interrupt while cleaning up"). A COMMIT (or a statement sent alone) canceled while its
/// deferred triggers ran rolled back: a plain failure, nothing applied. (`statement_timeout`
/// cannot stop a commit there: PostgreSQL disables it before committing, in
/// `finish_xact_command`; a cancel request can.)
#[test]
fn postgresql_57014_at_commit_rolled_back_and_stays_a_failure_with_nothing_applied() {
    if not_run_on_cockroachdb(
        "postgresql_57014_at_commit_rolled_back_and_stays_a_failure_with_nothing_applied",
        "the COMMIT is held by a PL/pgSQL deferred constraint trigger and canceled with \
         pg_cancel_backend, neither of which CockroachDB has",
    ) {
        return;
    }
    for style in [TransferStyle::Tutorial, TransferStyle::OneStatement] {
        let label = format!("{style:?}: PostgreSQL's cancel during the commit");
        let _serial = one_at_a_time();
        let db = TestDb::new("faults_pg_cancel_at_commit");
        let (database, tally) = open(&db.url, 2, Some(Flavor::PostgreSql));
        seed(&database, 10);
        let before = balances(&db);
        at_commit_of_each_transfer(&db, "slow_commit", "PERFORM pg_sleep(5);");
        tally.reset();
        let sleeping = format!(
            "FROM pg_stat_activity WHERE datname = '{}' AND wait_event = 'PgSleep'",
            db.name
        );
        let admin = admin_database();
        let clock = Instant::now();
        let result = thread::scope(|scope| {
            let call = scope.spawn(|| bank::transfer_in_style(&database, &policy(), style));
            while server().psql(&admin, &format!("SELECT count(*) {sleeping}")) == "0" {
                assert!(
                    clock.elapsed() < Duration::from_secs(4) && !call.is_finished(),
                    "{label}: the commit never reached its deferred trigger (scenario not set up)"
                );
                thread::sleep(Duration::from_millis(10));
            }
            server().psql(&admin, &format!("SELECT pg_cancel_backend(pid) {sleeping}"));
            call.join().expect("the transfer thread")
        });
        match result {
            Err(TransactionError::Failed { cause: error, .. }) => assert!(
                error
                    .to_string()
                    .contains("canceling statement due to user request"),
                "{label}: {error}"
            ),
            other => panic!("{label}: expected Failed, got {other:?}"),
        }
        assert_eq!(tally.ledger_inserts(), 1, "{label}: the work ran once");
        assert_eq!(balances(&db), before, "{label}: nothing was applied");
        assert_eq!(transfers_in_ledger(&db), 0, "{label}: nothing was applied");
    }
}

/// A draining CockroachDB node cancels what still runs after
/// `server.shutdown.transactions.timeout` (57014 "query execution canceled"), closes the
/// session (57P01) and refuses new ones (cockroachdb/cockroach `pkg/sql/pgwire/server.go`,
/// `drainImpl`; `conn.go`, `serveImpl`). The transfer, first host of a multi-host URL draining,
/// must go on at the next host and be applied once: retried there (nothing was committed) or,
/// where the canceled statement was the commit, settled by the probe there and then retried.
#[test]
fn a_drain_canceling_a_transfer_moves_it_to_the_next_host_applied_once() {
    for (style, statement) in [
        (TransferStyle::Tutorial, "UPDATE \"accounts\""),
        (TransferStyle::OneStatement, ONE_STATEMENT_TRANSFER),
    ] {
        let label = format!("{style:?}: a drain cancels {statement:?}");
        let _serial = one_at_a_time();
        let (db, proxy, proxied) = bank_behind_proxy("faults_drain_cancel", 10);
        let server = server();
        let first = format!("127.0.0.1:{}", proxy.port());
        let url = proxied.replacen(
            &first,
            &format!("{first},{}:{}", server.host(), server.port()),
            1,
        );
        let (database, tally) = open(&url, 1, Some(Flavor::CockroachDb));
        let before = balances(&db);
        proxy.drain_at(statement);
        let clock = Instant::now();
        let result = bank::transfer_in_style(&database, &policy(), style);
        let took = clock.elapsed();
        let committed = result.unwrap_or_else(|error| {
            panic!("{label}: the next host was there to take the transfer, yet: {error:?}")
        });
        assert_eq!(
            proxy.answered(),
            2,
            "{label}: the proxy canceled the statement and refused the next session"
        );
        eprintln!(
            "{label}: attempts {}, ledger inserts sent {}, took {:.2} s",
            committed.attempts,
            tally.ledger_inserts(),
            took.as_secs_f64()
        );
        assert_eq!(committed.attempts, 2, "{label}: retried once");
        assert_books_balance(
            &db,
            &database,
            std::slice::from_ref(&committed.value),
            &label,
        );
        assert_moved_once(&db, before, &committed.value, &label);
    }
}

// ---- A frozen network, an unreachable server ------------------------------------------------
//
// A proxy that stops forwarding both ways, keeps every socket open, and accepts new
// connections without ever answering them ([`CuttingProxy::freeze`]): unlike a backend frozen
// with SIGSTOP, no new connection can be had either, so the probe that settles an unknown
// commit, and every retry, wait for connections that never come.

/// How long the frozen-network runs give settling an unknown commit (`--settle-timeout`).
const SETTLE_BUDGET: Duration = Duration::from_secs(3);

/// How much longer than the sum of its bounds a run may take to end (process start, migrations
/// check, the watchdog's period, r2d2's scheduling).
const END_MARGIN: Duration = Duration::from_secs(5);

/// When a frozen-network CLI run freezes the network.
const FREEZE_AT: Duration = Duration::from_millis(1500);

/// A transfer run's figures as its `transfers:` line on stdout gives them: done, failed, and
/// with unknown outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PrintedSummary {
    done: u64,
    failed: u64,
    unknown: u64,
}

impl PrintedSummary {
    /// Reads the `transfers: N done, F failed[, U with unknown outcome], …` line of `stdout`.
    fn of(stdout: &str) -> Option<PrintedSummary> {
        let line = stdout
            .lines()
            .find(|line| line.starts_with("transfers: "))?;
        let figure = |label: &str| -> Option<u64> {
            let end = line.find(label)?;
            let digits = line[..end]
                .trim_end()
                .rsplit([' ', ':'])
                .next()?
                .replace(',', "");
            digits.parse().ok()
        };
        Some(PrintedSummary {
            done: figure(" done")?,
            failed: figure(" failed")?,
            unknown: figure(" with unknown outcome").unwrap_or(0),
        })
    }
}

/// Runs the binary with `args` (and `--database-url` through a fresh proxy in front of a bank
/// of 10 accounts, with `url_param` added to the URL if given) and freezes the proxy `freeze_at` after starting it. The run must end within
/// `bound` (from its start), say what it did on stdout, exit 0 only if nothing failed or stayed
/// unknown, and tell the truth: every transfer reported done is in the ledger once, every one
/// reported failed is not, and each one with unknown outcome is there at most once — the
/// ledger read directly from the server, and the library's audit consistent. Returns how long
/// the run took and what it printed.
fn frozen_cli_transfer_run(
    test: &str,
    args: &[&str],
    url_param: Option<&str>,
    freeze_at: Duration,
    bound: Duration,
) -> (Duration, PrintedSummary) {
    let _serial = one_at_a_time();
    let (db, proxy, url) = bank_behind_proxy("faults_frozen_network_cli", 10);
    let url = url_param.map_or(url.clone(), |param| support::with_param(&url, param));
    let dir = support::bin::temp_dir();
    let mut all_args = args.to_vec();
    all_args.extend(["--database-url", &url]);
    let started = Instant::now();
    let child =
        support::bin::Started::start(support::bin::command(dir.path(), &all_args, &[]), |_| {});
    thread::sleep(freeze_at);
    proxy.freeze();
    // Killed (and the test failed) if it still runs well past its bound.
    let output = child.wait(bound + Duration::from_secs(60));
    let took = started.elapsed();
    let described = support::bin::describe(&output);
    eprintln!("{test}: {args:?} frozen at {freeze_at:?}, ended after {took:.2?}: {described}");
    support::bin::assert_no_panic(&output);
    assert!(
        took < bound,
        "{test}: {args:?} took {took:?} through a network frozen {freeze_at:?} in; the bound \
         is {bound:?}: {described}"
    );
    let printed = PrintedSummary::of(&support::bin::stdout_of(&output))
        .unwrap_or_else(|| panic!("{test}: no `transfers:` summary: {described}"));
    assert!(
        printed.done > 0,
        "{test}: transfers committed before the freeze: {described}"
    );
    assert_eq!(
        output.status.success(),
        printed.failed + printed.unknown == 0,
        "{test}: the exit status says whether every transfer was done: {described}"
    );
    let in_ledger = count(
        &db,
        "SELECT count(*) FROM transfers WHERE source_id IS NOT NULL",
    ) as u64;
    assert!(
        (printed.done..=printed.done + printed.unknown).contains(&in_ledger),
        "{test}: {in_ledger} transfers in the ledger, but the run reported {printed:?} (done \
         ones applied once, failed ones not at all, unknown ones at most once)"
    );
    let (direct, _) = open(&db.url, 1, None);
    assert_audit_consistent(&direct, test);
    (took, printed)
}

#[test]
fn cli_transfer_duration_through_a_frozen_network_returns_within_its_bounds_and_reports_truly() {
    const TEST: &str =
        "cli_transfer_duration_through_a_frozen_network_returns_within_its_bounds_and_reports_truly";
    const RUN: Duration = Duration::from_secs(3);
    // D + stall timeout + settle budget + a few seconds, whatever the network does.
    let bound = RUN + STALL_BOUND + SETTLE_BUDGET + END_MARGIN;
    frozen_cli_transfer_run(
        TEST,
        &[
            "transfer",
            "--duration",
            "3s",
            "--workers",
            "2",
            "--stall-timeout",
            "2s",
            "--settle-timeout",
            "3s",
        ],
        None,
        FREEZE_AT,
        bound,
    );
}

#[test]
fn cli_transfer_count_through_a_frozen_network_ends_within_its_bounds_and_reports_truly() {
    const TEST: &str =
        "cli_transfer_count_through_a_frozen_network_ends_within_its_bounds_and_reports_truly";
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    // The transfers in flight: a stall timeout, then the settle budget; the next ones wait a
    // connect timeout for a connection, and the run stops.
    let bound = FREEZE_AT + STALL_BOUND + SETTLE_BUDGET + CONNECT_TIMEOUT + END_MARGIN;
    let (_, printed) = frozen_cli_transfer_run(
        TEST,
        &[
            "transfer",
            "--count",
            "100000",
            "--workers",
            "2",
            "--stall-timeout",
            "2s",
            "--settle-timeout",
            "3s",
        ],
        Some("connect_timeout=2"),
        FREEZE_AT,
        bound,
    );
    assert!(
        printed.failed + printed.unknown > 0,
        "{TEST}: the run was cut short by the freeze: {printed:?}"
    );
}

/// The figures a failed `points` run gives in its error line: rows committed, and rows in
/// chunks whose commit outcome is unknown (0 if it names none).
fn points_committed(error_line: &str) -> Option<(u64, u64)> {
    let number = |text: &str| text.replace(',', "").parse::<u64>().ok();
    let before = |label: &str| -> Option<u64> {
        let end = error_line.find(label)?;
        number(error_line[..end].rsplit([' ', '(']).next()?)
    };
    let committed = before(" row")?;
    let unknown = match error_line.rfind("; ") {
        Some(at) if error_line[at..].contains("commit outcome is unknown") => {
            number(error_line[at + 2..].split(' ').next()?)?
        }
        _ => 0,
    };
    Some((committed, unknown))
}

/// A command that stops at its first failure (`points`, `seed`) run from the command line on a
/// bank of `accounts` accounts behind a proxy, with `--stall-timeout 2s --settle-timeout 3s` and
/// a connect timeout of 2 s, the network frozen [`FREEZE_AT`] in: the statement in flight is cut
/// after a stall timeout (an unknown commit settled within its budget), the next one waits a
/// connect timeout for a connection, and the run stops. Checks that it ended within those
/// bounds with one error line and exit 1; returns the bank (read directly, past the proxy), the
/// error line and the whole output described, and the guard under which the caller still runs
/// alone (first, so that it is let go last).
fn frozen_cli_run_that_stops(
    test: &str,
    db_name: &str,
    accounts: u64,
    args: &[&str],
) -> (MutexGuard<'static, ()>, TestDb, String, String) {
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    let bound = FREEZE_AT + STALL_BOUND + SETTLE_BUDGET + CONNECT_TIMEOUT + END_MARGIN;
    let serial = one_at_a_time();
    let (db, proxy, url) = bank_behind_proxy(db_name, accounts);
    let url = support::with_param(&url, "connect_timeout=2");
    let dir = support::bin::temp_dir();
    let mut all_args = args.to_vec();
    all_args.extend([
        "--stall-timeout",
        "2s",
        "--settle-timeout",
        "3s",
        "--database-url",
        &url,
    ]);
    let started = Instant::now();
    let child =
        support::bin::Started::start(support::bin::command(dir.path(), &all_args, &[]), |_| {});
    thread::sleep(FREEZE_AT);
    proxy.freeze();
    let output = child.wait(bound + Duration::from_secs(60));
    let took = started.elapsed();
    let described = support::bin::describe(&output);
    eprintln!("{test}: frozen at {FREEZE_AT:?}, ended after {took:.2?}: {described}");
    assert!(
        took < bound,
        "{test}: took {took:?} through a network frozen {FREEZE_AT:?} in; the bound is \
         {bound:?}: {described}"
    );
    let line = support::bin::assert_one_line_error(&output);
    assert_eq!(output.status.code(), Some(1), "{test}: {described}");
    (serial, db, line, described)
}

#[test]
fn cli_points_through_a_frozen_network_end_within_their_bounds_and_report_truly() {
    const TEST: &str =
        "cli_points_through_a_frozen_network_end_within_their_bounds_and_report_truly";
    let (_serial, db, line, _) = frozen_cli_run_that_stops(
        TEST,
        "faults_frozen_network_points",
        0,
        &["points", "5000000", "--chunk-size", "1000"],
    );
    let (committed, unknown) = points_committed(&line)
        .unwrap_or_else(|| panic!("{TEST}: no figures in the error line: {line}"));
    assert!(
        committed > 0,
        "{TEST}: chunks committed before the freeze: {line}"
    );
    let rows = count(&db, "SELECT count(*) FROM points") as u64;
    assert!(
        (committed..=committed + unknown).contains(&rows),
        "{TEST}: {rows} rows in the table, but the run reported {committed} committed and \
         {unknown} unknown: {line}"
    );
}

#[test]
fn cli_seed_through_a_frozen_network_ends_within_its_bounds_and_writes_nothing() {
    const TEST: &str =
        "cli_seed_through_a_frozen_network_ends_within_its_bounds_and_writes_nothing";
    const ACCOUNTS_BEFORE: u64 = 10;
    if not_run_on_cockroachdb(
        TEST,
        "a seed there commits in chunks of 2,500 accounts, so one cut short keeps the chunks \
         before the freeze (exactly once): the all-or-nothing this test checks is PostgreSQL's",
    ) {
        return;
    }
    // Far more accounts than the seed can write before the freeze: it is cut in the middle of
    // its one transaction.
    let (_serial, db, _, described) = frozen_cli_run_that_stops(
        TEST,
        "faults_frozen_network_seed",
        ACCOUNTS_BEFORE,
        &["seed", "--accounts", "10000000"],
    );
    // One transaction: all or nothing.
    assert_eq!(
        count(&db, "SELECT count(*) FROM accounts") as u64,
        ACCOUNTS_BEFORE,
        "{TEST}: the seed cut short wrote nothing: {described}"
    );
    let (direct, _) = open(&db.url, 1, None);
    assert_audit_consistent(&direct, TEST);
}

#[test]
fn cli_commands_that_cannot_connect_end_within_the_connect_timeout_with_one_line() {
    const TEST: &str =
        "cli_commands_that_cannot_connect_end_within_the_connect_timeout_with_one_line";
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    // Far beyond the bound: a command still running then is killed (and the test fails).
    const KILLED_AFTER: Duration = Duration::from_secs(200);
    let commands: [&[&str]; 4] = [
        &["balance"],
        &["seed"],
        &["transfer", "--count", "5", "--style", "tutorial"],
        &["points", "10"],
    ];
    // Never answered from the start: SYNs dropped; connections accepted, never a byte back.
    let unanswered = support::proxy::Unreachable::start();
    let silent = CuttingProxy::start("127.0.0.1:1");
    silent.freeze();
    // Lost once the command has connected: the one connection it opened the database on is
    // cut when its work begins, and no new one is ever answered. One proxy per command.
    let _serial = one_at_a_time();
    let (db, _unused, _) = bank_behind_proxy("faults_unreachable_cli", 10);
    let server = server();
    let upstream = format!("{}:{}", server.host(), server.port());
    let lost: Vec<(CuttingProxy, String)> = commands
        .iter()
        .map(|_| {
            let proxy = CuttingProxy::start(&upstream);
            proxy.cut_instead_of("BEGIN");
            proxy.answer_only(1);
            let url = db
                .url
                .replacen(&upstream, &format!("127.0.0.1:{}", proxy.port()), 1);
            (proxy, url)
        })
        .collect();
    let never = |port: u16| vec![format!("postgresql://roachbank@127.0.0.1:{port}/bank"); 4];
    let servers = [
        ("connection attempts unanswered", never(unanswered.port())),
        (
            "connections accepted and never answered",
            never(silent.port()),
        ),
        (
            "its one connection cut, new ones never answered",
            lost.iter().map(|(_, url)| url.clone()).collect(),
        ),
    ];
    let dir = support::bin::temp_dir();
    let mut runs = Vec::new();
    for (server, urls) in &servers {
        for (command, url) in commands.iter().zip(urls) {
            let url = support::with_param(
                url,
                &format!("connect_timeout={}", CONNECT_TIMEOUT.as_secs()),
            );
            let mut args = command.to_vec();
            args.extend(["--database-url", &url]);
            let started = Instant::now();
            let child =
                support::bin::Started::start(support::bin::command(dir.path(), &args, &[]), |_| {});
            runs.push((server, command, started, child));
        }
    }
    // Each one's time is taken when it ends, whichever ends first.
    let mut took = vec![None; runs.len()];
    while took.iter().any(Option::is_none) {
        for ((_, _, started, child), took) in runs.iter_mut().zip(&mut took) {
            if took.is_none() && (child.has_ended() || started.elapsed() > KILLED_AFTER) {
                *took = Some(started.elapsed());
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
    for ((server, command, _, child), took) in runs.into_iter().zip(took) {
        let took = took.expect("measured");
        let output = child.wait(Duration::ZERO);
        let described = support::bin::describe(&output);
        eprintln!("{TEST}: {server}: {command:?} ended after {took:.2?}");
        assert!(
            took < CONNECT_TIMEOUT + END_MARGIN,
            "{TEST}: {server}: {command:?} took {took:?} with connect_timeout=2: {described}"
        );
        let line = support::bin::assert_one_line_error(&output);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{TEST}: {server}: {described}"
        );
        assert!(
            line.starts_with("roachbank: error: "),
            "{TEST}: {server}: {command:?}: {line}"
        );
    }
    for (proxy, url) in &lost {
        assert_eq!(proxy.cuts(), 1, "{TEST}: {url}: its connection was cut");
    }
    assert!(
        support::bin::dir_entries(dir.path()).is_empty(),
        "{TEST}: nothing written"
    );
}

/// One transfer in `style` whose commit (`statement`) reaches the server just as the network
/// freezes: its answer never comes, the watchdog closes the connection after the stall bound,
/// and the probe can never get a connection to look. Settling must stop at its budget and
/// report the outcome unknown — the transfer did land, so "failed" would be a lie.
fn settle_through_a_frozen_network(style: TransferStyle, statement: &str) {
    let label = format!("{style:?}, the network frozen once {statement:?} was sent");
    let _serial = one_at_a_time();
    let (db, proxy, url) = bank_behind_proxy("faults_frozen_settle", 10);
    let (database, _) = open_with(
        &url,
        ConnectOptions {
            pool_size: 2,
            stall_timeout: Some(STALL_BOUND),
            ..ConnectOptions::default()
        },
    );
    let before = balances(&db);
    proxy.freeze_after(statement);
    let settling = RetryPolicy {
        settle_timeout: SETTLE_BUDGET,
        ..policy()
    };
    let started = Instant::now();
    let (_database, result) = settles_in_bounded_time(
        &label,
        STALL_BOUND + SETTLE_BUDGET,
        database,
        move |database| bank::transfer_in_style(database, &settling, style),
    );
    let took = started.elapsed();
    eprintln!("{label}: returned after {took:.2?}: {result:?}");
    assert!(proxy.is_frozen(), "{label}: the network froze");
    assert!(
        took < STALL_BOUND + SETTLE_BUDGET + Duration::from_secs(3),
        "{label}: settling took {took:?}; its budget is {SETTLE_BUDGET:?} after the stall \
         bound {STALL_BOUND:?}"
    );
    match result {
        Err(TransactionError::AmbiguousCommit { .. }) => {}
        other => panic!("{label}: expected AmbiguousCommit, got {other:?}"),
    }
    // The commit did land: calling it failed would have been a lie.
    let ledger = ledger_transfers(&db);
    assert_eq!(ledger.len(), 1, "{label}: the commit landed once");
    let (source, sink, amount) = ledger[0];
    let mut expected = before;
    *expected.get_mut(&source).expect("the source exists") -= amount;
    *expected.get_mut(&sink).expect("the sink exists") += amount;
    assert_eq!(balances(&db), expected, "{label}: the amount moved once");
}

#[test]
fn settling_a_commit_through_a_frozen_network_stops_at_its_budget_and_reports_it_unknown() {
    settle_through_a_frozen_network(TransferStyle::Tutorial, "COMMIT");
    settle_through_a_frozen_network(TransferStyle::OneStatement, ONE_STATEMENT_TRANSFER);
}
