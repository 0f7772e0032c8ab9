//! CockroachDB's own paths, proven where they can be: on the suite's PostgreSQL through the
//! flavour override (CockroachDB speaks the same protocol and takes the same statements), and,
//! when `TEST_DATABASE_URL` names a CockroachDB, on it directly.
//!
//! * Migrations run outside a transaction and can run twice (CockroachDB 25.1+ commits an open
//!   transaction at its first DDL: `autocommit_before_ddl`) — decided by what the server is,
//!   whatever flavour is forced; a transaction the server commits at a DDL statement (emulated
//!   by the suite's proxy) is not taken for a failure.
//! * First opens that race on a brand-new database are serialised by a lock row, not by
//!   PostgreSQL's advisory locks (CockroachDB has none): each migration is applied exactly once,
//!   a waiter waits for the holder and no longer than its bound.
//! * `points --method copy` is refused before anything is written.
//! * `seed` commits in chunks, each exactly once.
//! * A `points` run's chunks and a seed's transactions take ids under shard prefixes that turn
//!   from one to the next; on a real CockroachDB only, they land in different ranges once the
//!   table is split at those prefixes.

use crate::support;
use crate::support::target::Target;
use crate::support::{not_run_on_postgresql, server, with_param};
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel_retry::RetryPolicy;
use roachbank::bank::points::LoadMethod;
use roachbank::bank::{self, COCKROACH_SEED_CHUNK};
use roachbank::db::config::{DatabaseConfig, UrlSource};
use roachbank::db::{ConnectOptions, Database, DbError, Flavor};
use roachbank::migrate::{MigrationError, OpenError, MIGRATION_LOCK_TABLE, POSTGRES_MIGRATIONS};
use roachbank::workload::points::PointsRun;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Opens `target` as the library does, as CockroachDB (a no-op override on a real one).
fn open_as_cockroachdb(target: &Target, options: ConnectOptions) -> Result<Database, OpenError> {
    Database::open(
        DatabaseConfig::parse(target.url(), UrlSource::Flag).unwrap(),
        &ConnectOptions {
            flavor_override: Some(Flavor::CockroachDb),
            ..options
        },
    )
}

fn policy() -> RetryPolicy {
    RetryPolicy::default()
}

/// How many tables the `public` schema holds (0 on a database nothing was written to).
fn public_tables(target: &Target) -> i64 {
    target.count(
        "SELECT COUNT(*) FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
}

#[test]
fn server_migrations_run_outside_a_transaction() {
    // diesel would otherwise wrap each in BEGIN … COMMIT, and CockroachDB 25.1+ commits that
    // transaction at the first DDL statement, failing diesel's COMMIT afterwards.
    for migration in MigrationSource::<Pg>::migrations(&POSTGRES_MIGRATIONS).unwrap() {
        assert!(
            !migration.metadata().run_in_transaction(),
            "migration {} runs in a transaction: its metadata.toml must say run_in_transaction = false",
            migration.name()
        );
    }
}

#[test]
fn server_migrations_applied_again_change_nothing() {
    let target = Target::postgresql("migrations_twice");
    let db = target.open(1);
    bank::seed(&db, &policy(), 25).expect("seed");
    drop(db);
    let before = (
        target.count("SELECT COUNT(*) FROM accounts"),
        target.count("SELECT COUNT(*) FROM transfers"),
    );
    // Run every migration's up.sql again, as a run cut off after its DDL (before its version
    // row) would be finished by the next one.
    let mut conn = PgConnection::establish(target.url()).expect("connect");
    for migration in MigrationSource::<Pg>::migrations(&POSTGRES_MIGRATIONS).unwrap() {
        migration
            .run(&mut conn)
            .unwrap_or_else(|err| panic!("migration {} again: {err}", migration.name()));
    }
    let after = (
        target.count("SELECT COUNT(*) FROM accounts"),
        target.count("SELECT COUNT(*) FROM transfers"),
    );
    assert_eq!(before, after, "(accounts, ledger rows) before and after");
}

#[test]
fn first_open_as_cockroachdb_reports_every_migration_it_applied() {
    let target = Target::postgresql("crdb_migration_count");
    let db = open_as_cockroachdb(&target, ConnectOptions::default()).expect("open");
    assert_eq!(db.migrations_applied(), target.embedded_migrations().len());
    assert_eq!(target.applied_migrations(), target.embedded_migrations());
    drop(db);
    let again = open_as_cockroachdb(&target, ConnectOptions::default()).expect("open again");
    assert_eq!(again.migrations_applied(), 0, "nothing left to apply");
}

#[test]
fn eight_first_opens_at_once_as_cockroachdb_all_succeed_and_apply_each_migration_once() {
    for round in 0..3 {
        let target = Target::postgresql("crdb_eight_opens");
        let barrier = Barrier::new(8);
        let results: Vec<Result<usize, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        let options = ConnectOptions {
                            pool_size: 1,
                            ..ConnectOptions::default()
                        };
                        open_as_cockroachdb(&target, options)
                            .map(|db| db.migrations_applied())
                            .map_err(|err| err.to_string())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let applied: Vec<usize> = results
            .into_iter()
            .map(|result| result.unwrap_or_else(|err| panic!("round {round}: open failed: {err}")))
            .collect();
        assert_eq!(
            applied.iter().sum::<usize>(),
            target.embedded_migrations().len(),
            "round {round}: migrations applied per open {applied:?}: each exactly once in all"
        );
        assert_eq!(target.applied_migrations(), target.embedded_migrations());
    }
}

#[test]
fn eight_processes_started_at_once_on_a_new_database_all_succeed() {
    // The binary detects the flavour; on PostgreSQL and CockroachDB alike it locks with the row.
    let target = Target::postgresql("eight_processes");
    // `points 1`: a command that makes the bank where there is none (`balance` would refuse).
    for output in support::bin::run_at_once(8, &["points", "1", "--database-url", target.url()]) {
        assert!(
            output.status.success(),
            "roachbank points failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(target.applied_migrations(), target.embedded_migrations());
}

/// Leaves `target` fully migrated but for its last migration (whose statements can run again),
/// so that the next open has work to do and takes the lock; returns that migration's version.
fn one_migration_pending(target: &Target) -> String {
    drop(target.open(1));
    let last = target.embedded_migrations().pop().unwrap();
    target.execute(&format!(
        "DELETE FROM __diesel_schema_migrations WHERE version = '{last}'"
    ));
    last
}

/// Holds the migration lock from another session: its row updated in an open transaction.
fn hold_migration_lock(target: &Target) -> PgConnection {
    let mut holder = PgConnection::establish(target.url()).expect("connect the lock holder");
    diesel::connection::SimpleConnection::batch_execute(
        &mut holder,
        &format!("BEGIN; UPDATE {MIGRATION_LOCK_TABLE} SET locked_by = 'the test' WHERE id = 1"),
    )
    .expect("take the migration lock");
    holder
}

#[test]
fn an_open_waits_for_the_migration_lock_no_longer_than_its_bound() {
    let target = Target::postgresql("migration_lock_timeout");
    one_migration_pending(&target);
    let _holder = hold_migration_lock(&target);
    let wait = Duration::from_secs(2);
    let started = Instant::now();
    let result = open_as_cockroachdb(
        &target,
        ConnectOptions {
            migration_lock_wait: wait,
            ..ConnectOptions::default()
        },
    );
    let took = started.elapsed();
    match result {
        Err(OpenError::Migration(MigrationError::LockTimeout { .. })) => {}
        Err(other) => panic!("expected LockTimeout, got {other}"),
        Ok(_) => panic!("the open migrated while another session held the lock"),
    }
    assert!(
        took >= wait && took < wait + Duration::from_secs(5),
        "gave up after {took:?}, the bound being {wait:?}"
    );
}

#[test]
fn an_open_waiting_for_the_migration_lock_goes_on_when_it_is_released() {
    let target = Target::postgresql("migration_lock_release");
    let pending = one_migration_pending(&target);
    let holder = hold_migration_lock(&target);
    let held_for = Duration::from_secs(1);
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(held_for);
        drop(holder); // the session ends, and with it the transaction holding the row
    });
    let started = Instant::now();
    let db = open_as_cockroachdb(&target, ConnectOptions::default()).expect("open");
    let took = started.elapsed();
    releaser.join().unwrap();
    assert!(took >= held_for, "did not wait for the holder ({took:?})");
    assert_eq!(
        db.migrations_applied(),
        1,
        "the pending migration {pending}"
    );
    assert_eq!(target.applied_migrations(), target.embedded_migrations());
}

#[test]
fn points_copy_on_cockroachdb_is_refused_before_anything_is_written() {
    let target = Target::postgresql("crdb_copy_refused");
    let result = Database::open_checked(
        DatabaseConfig::parse(target.url(), UrlSource::Flag).unwrap(),
        &ConnectOptions {
            flavor_override: Some(Flavor::CockroachDb),
            ..ConnectOptions::default()
        },
        |flavor| LoadMethod::Copy.supported_on(flavor),
    );
    match result {
        Err(OpenError::Unsupported(reason)) => {
            assert!(reason.contains("CockroachDB"), "{reason}");
            assert!(reason.contains("--method insert"), "{reason}");
            assert_eq!(reason.lines().count(), 1, "{reason}");
        }
        Err(other) => panic!("expected Unsupported, got {other}"),
        Ok(_) => panic!("copy was accepted on CockroachDB"),
    }
    assert_eq!(public_tables(&target), 0, "not even the migrations ran");

    // The library refuses it too, before its first chunk.
    let db = open_as_cockroachdb(&target, ConnectOptions::default()).expect("open");
    let refused = PointsRun::new(100, 10)
        .method(LoadMethod::Copy)
        .run(&db, &policy(), &mut |_| {});
    assert!(refused.is_err(), "PointsRun copy on CockroachDB");
    assert_eq!(target.count("SELECT COUNT(*) FROM points"), 0);
    // And INSERT, the default there, works.
    let report = PointsRun::new(100, 10)
        .run(&db, &policy(), &mut |_| {})
        .expect("insert");
    assert_eq!(report.rows, 100);
}

#[test]
fn points_chunks_on_cockroachdb_are_single_insert_statements_outside_any_transaction() {
    // CockroachDB's bulk-insert advice: one multi-row INSERT per batch, never inside an
    // explicit transaction (cockroachdb/docs `performance-best-practices-overview`). Forced on
    // PostgreSQL, the statements are what CockroachDB would get; on a real cluster the same.
    let target = Target::postgresql("crdb_points_single_statements");
    drop(open_as_cockroachdb(&target, ConnectOptions::default()).expect("migrate"));
    let logs = SessionLogs::default();
    let db = open_as_cockroachdb(
        &target,
        ConnectOptions {
            instrumentation: Some(logs.factory()),
            ..ConnectOptions::default()
        },
    )
    .expect("open");
    let report = PointsRun::new(1_000, 100)
        .run(&db, &policy(), &mut |_| {})
        .expect("points");
    assert_eq!(report.rows, 1_000);
    assert_eq!(target.count("SELECT COUNT(*) FROM points"), 1_000);
    let mut inserts = 0;
    for statements in logs.sessions() {
        for (at, sql) in statements.iter().enumerate() {
            if sql.starts_with("INSERT INTO \"points\"") {
                inserts += 1;
                assert_eq!(
                    open_transactions(&statements[..at]),
                    0,
                    "a chunk's INSERT inside an explicit transaction: {statements:#?}"
                );
            }
        }
        assert!(
            !statements.iter().any(|sql| sql.starts_with("SAVEPOINT")),
            "no savepoint for a chunk: {statements:#?}"
        );
    }
    assert_eq!(inserts, 10, "one INSERT per chunk of 100");
}

/// How many transactions wrote the accounts: on PostgreSQL each has its own `xmin`; on
/// CockroachDB each commits at one MVCC timestamp.
fn transactions_that_wrote_accounts(target: &Target) -> i64 {
    if server().is_cockroachdb() {
        target.count("SELECT COUNT(DISTINCT crdb_internal_mvcc_timestamp) FROM accounts")
    } else {
        target.count("SELECT COUNT(DISTINCT xmin::text) FROM accounts")
    }
}

#[test]
fn seed_on_cockroachdb_commits_in_chunks_and_reports_the_exact_sum() {
    let target = Target::postgresql("crdb_seed_chunks");
    let db = open_as_cockroachdb(&target, ConnectOptions::default()).expect("open");
    let count = 2 * COCKROACH_SEED_CHUNK + 7;
    let seeded = bank::seed(&db, &policy(), count).expect("seed");
    assert_eq!(seeded.value.accounts, count);
    assert_eq!(target.count("SELECT COUNT(*) FROM accounts"), count as i64);
    assert_eq!(
        target.count("SELECT COUNT(*) FROM transfers WHERE source_id IS NULL"),
        count as i64,
        "one opening deposit per account"
    );
    assert_eq!(
        target.int("SELECT CAST(SUM(balance) AS INT8) FROM accounts"),
        Some(seeded.value.money)
    );
    assert_eq!(transactions_that_wrote_accounts(&target), 3, "chunks");
    assert!(
        seeded.attempts >= 3,
        "attempts over the chunks: {}",
        seeded.attempts
    );
}

#[test]
fn seed_as_postgresql_stays_one_transaction() {
    // Forced, so that on a CockroachDB too the PostgreSQL path is the one checked. The force
    // picks the transaction protocol only: how the server is migrated is decided by its
    // `SELECT version()`. On CockroachDB 25.1+, where `autocommit_before_ddl` is on by default
    // (cockroachdb/docs `src/current/_includes/releases/v25.1/backward-incompatible.md`), the
    // migrations therefore run outside any transaction, so no DDL statement finds one to commit
    // (cockroachdb/cockroach `pkg/sql/conn_executor_ddl.go`, `maybeAutoCommitBeforeDDL`, acts
    // only inside a transaction, at a schema change that is not its first statement) and the
    // open does not end in diesel's NotInTransaction; the seed's one transaction holds no DDL.
    let target = Target::postgresql("pg_seed_one_txn");
    let db = Database::open(
        DatabaseConfig::parse(target.url(), UrlSource::Flag).unwrap(),
        &ConnectOptions {
            flavor_override: Some(Flavor::PostgreSql),
            ..ConnectOptions::default()
        },
    )
    .expect("open");
    bank::seed(&db, &policy(), 2 * COCKROACH_SEED_CHUNK + 7).expect("seed");
    assert_eq!(transactions_that_wrote_accounts(&target), 1);
}

/// Where a block id's shard prefix starts (`roachbank::bank::ids`: `shard << 58 | slot << 32 |
/// index`), and how many shards there are: written out here so that the layout is checked,
/// not read back from the library.
const SHARD_SHIFT: u32 = 58;
const SHARDS: i64 = 16;

/// `ids` grouped by their row index (the low 32 bits) divided by `block`, each group checked to
/// be one contiguous range under one shard; returns each group's shard, in index order.
fn shards_of_blocks(ids: &[i64], block: u64) -> Vec<(usize, i64)> {
    let mut blocks: std::collections::BTreeMap<u64, Vec<i64>> = Default::default();
    for &id in ids {
        blocks
            .entry((id & 0xffff_ffff) as u64 / block)
            .or_default()
            .push(id);
    }
    blocks
        .values()
        .map(|ids| {
            let (first, last) = (ids[0], ids[ids.len() - 1]);
            assert_eq!(
                last - first,
                ids.len() as i64 - 1,
                "a block's ids are one contiguous range: {first:#x}..={last:#x}"
            );
            assert_eq!(first >> SHARD_SHIFT, last >> SHARD_SHIFT, "one shard");
            (ids.len(), first >> SHARD_SHIFT)
        })
        .collect()
}

/// CockroachDB keeps a table in ranges of consecutive keys: a run whose chunks all append at
/// one end of the key space writes to one range, however many loaders it has. So under
/// CockroachDB's protocol each chunk's ids are one contiguous range (one INSERT, one span, one
/// probe `BETWEEN`) under a shard prefix that turns from chunk to chunk: 32 chunks of 10 rows,
/// from four loaders, use each of the 16 shards exactly twice, no two consecutive chunks one.
#[test]
fn points_chunks_as_on_cockroachdb_each_take_the_next_id_shard() {
    let target = Target::postgresql("crdb_points_shards");
    let db = open_as_cockroachdb(
        &target,
        ConnectOptions {
            pool_size: 4,
            ..ConnectOptions::default()
        },
    )
    .expect("open");
    let report = PointsRun::new(320, 10)
        .run(&db, &policy(), &mut |_| {})
        .expect("points");
    assert_eq!(report.chunks, 32);
    assert_eq!(target.count("SELECT COUNT(DISTINCT id) FROM points"), 320);
    let shards: Vec<i64> = shards_of_blocks(&target.ints("id", "points"), 10)
        .into_iter()
        .map(|(rows, shard)| {
            assert_eq!(rows, 10, "rows of a chunk");
            shard
        })
        .collect();
    assert_eq!(shards.len(), 32, "chunks");
    for (chunk, pair) in shards.windows(2).enumerate() {
        assert_eq!(
            pair[1],
            (pair[0] + 1) % SHARDS,
            "chunk {} takes the shard after chunk {chunk}'s; shards by chunk: {shards:?}",
            chunk + 1
        );
    }
}

/// The same for a seed under CockroachDB's protocol, one transaction per 2,500 accounts: each
/// transaction's deposits are one contiguous range of ledger ids under the shard after the
/// previous transaction's.
#[test]
fn seed_transactions_as_on_cockroachdb_each_take_the_next_id_shard() {
    let target = Target::postgresql("crdb_seed_shards");
    let db = open_as_cockroachdb(&target, ConnectOptions::default()).expect("open");
    bank::seed(&db, &policy(), 2 * COCKROACH_SEED_CHUNK + 1).expect("seed");
    let blocks = shards_of_blocks(
        &target.ints("id", "transfers WHERE source_id IS NULL"),
        COCKROACH_SEED_CHUNK,
    );
    let sizes: Vec<usize> = blocks.iter().map(|&(rows, _)| rows).collect();
    let chunk = COCKROACH_SEED_CHUNK as usize;
    assert_eq!(sizes, [chunk, chunk, 1], "deposits by transaction");
    let shards: Vec<i64> = blocks.iter().map(|&(_, shard)| shard).collect();
    assert_eq!(
        shards,
        [
            shards[0],
            (shards[0] + 1) % SHARDS,
            (shards[0] + 2) % SHARDS
        ],
        "shards by transaction"
    );
}

/// Splits `table` at each of the 16 shard prefixes (`ALTER TABLE … SPLIT AT`), as CockroachDB
/// would split a table that grew under the load, and returns how many distinct ranges hold the
/// rows with `ids` (`SHOW RANGE FROM TABLE … FOR ROW`, usable as a data source:
/// cockroachdb/cockroach `pkg/sql/delegate/show_range_for_row.go`).
fn ranges_holding_after_splitting_at_the_shards(target: &Target, table: &str, ids: &[i64]) -> i64 {
    let splits: Vec<String> = (1..SHARDS)
        .map(|shard| format!("({})", shard << SHARD_SHIFT))
        .collect();
    target.execute(&format!(
        "ALTER TABLE {table} SPLIT AT VALUES {}",
        splits.join(", ")
    ));
    let ranges = target.count(&format!(
        "SELECT COUNT(*) FROM [SHOW RANGES FROM TABLE {table}]"
    ));
    assert!(
        ranges >= SHARDS,
        "{table} split at the 15 inner shard prefixes: {ranges} ranges"
    );
    let rows: Vec<String> = ids
        .iter()
        .map(|id| format!("SELECT range_id FROM [SHOW RANGE FROM TABLE {table} FOR ROW ({id})]"))
        .collect();
    target.count(&format!(
        "SELECT COUNT(DISTINCT range_id) FROM ({}) AS r",
        rows.join(" UNION ALL ")
    ))
}

/// CockroachDB: "a range is indexed on a column of data that is sequential in nature … all
/// incoming writes to the range will be the last (or first) item in the index … This creates a
/// hot spot at the single range" (cockroachdb/docs `performance-best-practices-overview.md`,
/// "Hot spots"). A `points` run's 32 chunks turn through the 16 shard prefixes: once the
/// table is split at them, each of the 16 ranges holds two chunks (before the prefixes, the
/// whole run sat in one range).
#[test]
fn points_chunks_on_cockroachdb_land_in_every_range_split_at_the_id_shards() {
    const TEST: &str = "points_chunks_on_cockroachdb_land_in_every_range_split_at_the_id_shards";
    if not_run_on_postgresql(
        TEST,
        "ranges (SHOW RANGE … FOR ROW, ALTER TABLE … SPLIT AT)",
    ) {
        return;
    }
    let target = Target::postgresql("crdb_points_ranges");
    let db = target.open(4);
    let report = PointsRun::new(32 * 100, 100)
        .run(&db, &policy(), &mut |_| {})
        .expect("points");
    assert_eq!(report.chunks, 32);
    let first_of_each_chunk = target.ints("MIN(id)", "points GROUP BY id % 4294967296 // 100");
    assert_eq!(first_of_each_chunk.len(), 32);
    assert_eq!(
        ranges_holding_after_splitting_at_the_shards(&target, "points", &first_of_each_chunk),
        SHARDS,
        "ranges holding the run's chunks"
    );
}

/// The same for a seed on CockroachDB, one transaction per 2,500 accounts: its five
/// transactions' deposits land in five different ranges of the ledger split at the shard
/// prefixes. (`//` is CockroachDB's integer division; its `/` on integers gives a DECIMAL.)
#[test]
fn seed_transactions_on_cockroachdb_land_in_different_ranges_split_at_the_id_shards() {
    const TEST: &str =
        "seed_transactions_on_cockroachdb_land_in_different_ranges_split_at_the_id_shards";
    if not_run_on_postgresql(
        TEST,
        "ranges (SHOW RANGE … FOR ROW, ALTER TABLE … SPLIT AT)",
    ) {
        return;
    }
    let target = Target::postgresql("crdb_seed_ranges");
    let db = target.open(2);
    let count = 4 * COCKROACH_SEED_CHUNK + 1;
    bank::seed(&db, &policy(), count).expect("seed");
    let first_of_each_transaction = target.ints(
        "MIN(id)",
        &format!(
            "transfers WHERE source_id IS NULL GROUP BY id % 4294967296 // {COCKROACH_SEED_CHUNK}"
        ),
    );
    assert_eq!(first_of_each_transaction.len(), 5, "transactions");
    assert_eq!(
        ranges_holding_after_splitting_at_the_shards(
            &target,
            "transfers",
            &first_of_each_transaction
        ),
        5,
        "ranges holding the seed's transactions' deposits"
    );
}

#[test]
fn migrations_succeed_first_time_on_cockroachdb_with_autocommit_before_ddl_on() {
    const TEST: &str = "migrations_succeed_first_time_on_cockroachdb_with_autocommit_before_ddl_on";
    if not_run_on_postgresql(TEST, "autocommit_before_ddl session variable") {
        return;
    }
    let target = Target::postgresql("crdb_autocommit_ddl");
    // The variable exists from CockroachDB 24.1 (on by default from 25.1).
    if server()
        .try_psql(&target_name(&target), "SHOW autocommit_before_ddl")
        .is_err()
    {
        eprintln!("NOT RUN on CockroachDB: {TEST}: this version has no autocommit_before_ddl (before 24.1)");
        return;
    }
    let url = with_param(target.url(), "options=-c%20autocommit_before_ddl%3Don");
    let db = Database::open(
        DatabaseConfig::parse(&url, UrlSource::Flag).unwrap(),
        &ConnectOptions::default(),
    )
    .expect("migrations with autocommit_before_ddl on");
    assert_eq!(db.migrations_applied(), target.embedded_migrations().len());
    assert_eq!(target.applied_migrations(), target.embedded_migrations());
}

fn target_name(target: &Target) -> String {
    match target {
        Target::Postgresql(db) => db.name.clone(),
        Target::Sqlite(_) => unreachable!("a server target"),
    }
}

/// A stand-in for a draining CockroachDB node: it answers every session's start-up with 57P01
/// "server is not accepting clients, try another node", as `pkg/sql/pgwire/server.go` does
/// (`ErrDrainingNewConn`). Returns its port and a count of the sessions it refused.
fn draining_node() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the draining node");
    let port = listener.local_addr().unwrap().port();
    let refused = Arc::new(AtomicUsize::new(0));
    let counter = refused.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if refuse_session(stream).is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (port, refused)
}

/// Reads the start-up (answering `N` to SSL or GSS encryption requests) and refuses it.
fn refuse_session(mut stream: TcpStream) -> std::io::Result<()> {
    const SSL_REQUEST: u32 = 80_877_103;
    const GSSENC_REQUEST: u32 = 80_877_104;
    loop {
        let mut head = [0u8; 8];
        stream.read_exact(&mut head)?;
        let length = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
        let code = u32::from_be_bytes(head[4..].try_into().unwrap());
        let mut rest = vec![0u8; length.saturating_sub(8)];
        stream.read_exact(&mut rest)?;
        if code == SSL_REQUEST || code == GSSENC_REQUEST {
            stream.write_all(b"N")?;
            continue;
        }
        let mut fields = Vec::new();
        for (tag, value) in [
            (b'S', "FATAL"),
            (b'V', "FATAL"),
            (b'C', "57P01"),
            (b'M', "server is not accepting clients, try another node"),
        ] {
            fields.push(tag);
            fields.extend_from_slice(value.as_bytes());
            fields.push(0);
        }
        fields.push(0);
        let mut message = vec![b'E'];
        message.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
        message.extend_from_slice(&fields);
        return stream.write_all(&message);
    }
}

#[test]
fn a_draining_node_first_in_a_multi_host_url_is_passed_over_for_the_next_host() {
    let target = Target::postgresql("drain_failover");
    let (port, refused) = draining_node();
    let live = format!("@{}:{}", server().host(), server().port());
    assert!(
        target.url().contains(&live),
        "{} names {live}",
        target.url()
    );
    let url = target.url().replacen(
        &live,
        &format!("@127.0.0.1:{port},{}:{}", server().host(), server().port()),
        1,
    );
    let db = Database::open(
        DatabaseConfig::parse(&url, UrlSource::Flag).unwrap(),
        &ConnectOptions::default(),
    )
    .unwrap_or_else(|err| panic!("open past the draining node: {err}"));
    assert!(
        refused.load(Ordering::SeqCst) >= 1,
        "the draining node was never asked"
    );
    bank::seed(&db, &policy(), 3).expect("seed through the next host");
    assert_eq!(target.count("SELECT COUNT(*) FROM accounts"), 3);

    // With no other host to go to, the refusal is reported, once, on one line.
    let alone = target
        .url()
        .replacen(&live, &format!("@127.0.0.1:{port}"), 1);
    match Database::open(
        DatabaseConfig::parse(&alone, UrlSource::Flag).unwrap(),
        &ConnectOptions::default(),
    ) {
        Err(err @ OpenError::Db(DbError::Connect { .. })) => {
            let text = err.to_string();
            assert!(text.contains("not accepting clients"), "{text}");
            assert_eq!(text.lines().count(), 1, "{text}");
        }
        Err(other) => panic!("expected a connection error, got {other}"),
        Ok(_) => panic!("connected to a node that refuses every session"),
    }
}

/// Every statement each connection sent, by connection (in the order they were made).
#[derive(Clone, Default)]
struct SessionLogs(Arc<std::sync::Mutex<Vec<Vec<String>>>>);

impl SessionLogs {
    /// A factory for [`ConnectOptions::instrumentation`]: each new connection logs into a list
    /// of its own.
    fn factory(&self) -> roachbank::db::InstrumentationFactory {
        let logs = self.clone();
        Arc::new(move || {
            let mut all = logs.0.lock().unwrap();
            all.push(Vec::new());
            Box::new(SessionRecorder {
                logs: logs.clone(),
                index: all.len() - 1,
            }) as Box<dyn diesel::connection::Instrumentation>
        })
    }

    fn sessions(&self) -> Vec<Vec<String>> {
        self.0.lock().unwrap().clone()
    }
}

struct SessionRecorder {
    logs: SessionLogs,
    index: usize,
}

impl diesel::connection::Instrumentation for SessionRecorder {
    fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
        if let diesel::connection::InstrumentationEvent::StartQuery { query, .. } = event {
            let text = query.to_string();
            let sql = text.split(" -- binds:").next().unwrap_or(&text).trim();
            self.logs.0.lock().unwrap()[self.index].push(sql.to_string());
        }
    }
}

/// How many transactions are open after `statements` (BEGIN opens one; COMMIT, ROLLBACK end it).
fn open_transactions(statements: &[String]) -> i32 {
    statements.iter().fold(0, |open, sql| {
        if sql.starts_with("BEGIN") {
            open + 1
        } else if sql == "COMMIT" || sql == "ROLLBACK" {
            open - 1
        } else {
            open
        }
    })
}

#[test]
fn migrations_run_as_the_server_allows_whatever_flavour_is_forced() {
    // Forced to CockroachDB on PostgreSQL, the migrations still run in one transaction (as
    // PostgreSQL allows), while transactions keep CockroachDB's protocol. On a real
    // CockroachDB the override is a no-op and they run outside any transaction (25.1+ commits
    // an open one at its first DDL statement: autocommit_before_ddl).
    let target = Target::postgresql("forced_flavor_migrations");
    let logs = SessionLogs::default();
    let db = open_as_cockroachdb(
        &target,
        ConnectOptions {
            instrumentation: Some(logs.factory()),
            ..ConnectOptions::default()
        },
    )
    .expect("open");
    assert_eq!(db.migrations_applied(), target.embedded_migrations().len());
    let sessions = logs.sessions();
    let migrating = sessions
        .iter()
        .find(|statements| {
            statements
                .iter()
                .any(|sql| sql.contains("CREATE TABLE IF NOT EXISTS accounts"))
        })
        .expect("a session ran the first migration");
    let first_ddl = migrating
        .iter()
        .position(|sql| sql.contains("CREATE TABLE IF NOT EXISTS accounts"))
        .unwrap();
    let last_ddl = migrating
        .iter()
        .rposition(|sql| sql.contains("COMMENT ON TABLE transfers"))
        .expect("the last migration ran on the same session");
    let in_transaction = |at: usize| open_transactions(&migrating[..at]);
    if server().is_cockroachdb() {
        assert_eq!(in_transaction(first_ddl), 0, "{migrating:#?}");
        assert_eq!(in_transaction(last_ddl), 0, "{migrating:#?}");
    } else {
        assert_eq!(in_transaction(first_ddl), 1, "{migrating:#?}");
        assert_eq!(in_transaction(last_ddl), 1, "{migrating:#?}");
        assert_eq!(
            migrating[last_ddl..]
                .iter()
                .find(|sql| ["BEGIN", "COMMIT", "ROLLBACK"].contains(&sql.as_str())),
            Some(&"COMMIT".to_string()),
            "{migrating:#?}"
        );
    }
    // The transactions keep the forced flavour's protocol (the migrations never send it).
    assert!(
        !logs
            .sessions()
            .concat()
            .iter()
            .any(|sql| sql.starts_with("SAVEPOINT")),
        "no savepoint before the seed"
    );
    bank::seed(&db, &policy(), 3).expect("seed");
    assert!(
        logs.sessions()
            .concat()
            .iter()
            .any(|sql| sql == "SAVEPOINT cockroach_restart"),
        "seed used CockroachDB's protocol"
    );
}

#[test]
fn migrations_whose_transaction_the_server_commits_at_a_ddl_statement_are_not_reported_as_pending()
{
    const TEST: &str =
        "migrations_whose_transaction_the_server_commits_at_a_ddl_statement_are_not_reported_as_pending";
    if support::not_run_on_cockroachdb(
        TEST,
        "it emulates on PostgreSQL's one-transaction path what CockroachDB's \
         autocommit_before_ddl does; CockroachDB itself never takes that path (see \
         migrations_succeed_first_time_on_cockroachdb_with_autocommit_before_ddl_on)",
    ) {
        return;
    }
    // The server commits the migration transaction just before the first migration's DDL, so
    // that every later statement commits on its own and the session is idle when diesel
    // commits: diesel answers NotInTransaction although everything was applied.
    let target = Target::postgresql("commit_before_ddl");
    let proxy =
        support::proxy::CuttingProxy::start(&format!("{}:{}", server().host(), server().port()));
    proxy.commit_before("CREATE TABLE IF NOT EXISTS accounts");
    let url = target.url().replacen(
        &format!("{}:{}", server().host(), server().port()),
        &format!("127.0.0.1:{}", proxy.port()),
        1,
    );
    let db = Database::open(
        DatabaseConfig::parse(&url, UrlSource::Flag).unwrap(),
        &ConnectOptions::default(),
    )
    .unwrap_or_else(|err| panic!("open with the transaction committed at a DDL: {err}"));
    assert_eq!(db.migrations_applied(), target.embedded_migrations().len());
    assert_eq!(target.applied_migrations(), target.embedded_migrations());
}
