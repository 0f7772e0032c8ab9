//! SQLite's writers wait for the write lock fairly and within the busy timeout: in one pool
//! they take turns first come, first served (a writer that commits and begins again goes behind
//! those that have waited a slice), a turn is held exactly while a write transaction is open (not by
//! readers, not past a connection's end), a wait that outlasts the busy timeout ends as
//! SQLite's busy; and a writer of another pool on the same file — another process, as far as
//! SQLite can tell — that has waited long goes before a writer that begins afresh.
//!
//! Functional, not timed: each test checks an order or an outcome. SQLite only; nothing here
//! talks to a server, so `TEST_DATABASE_URL` changes nothing.

use crate::support::TestSqlite;
use diesel::connection::SimpleConnection;
use diesel_retry::{classify, Access, ErrorClass, Flavor, RetryConnection};
use roachbank::db::config::{DatabaseConfig, UrlSource};
use roachbank::db::sqlite_session::{self, SqliteWriters};
use roachbank::db::write_queue::WRITE_SLICE;
use roachbank::db::{ConnectOptions, Database, DbConnection, DbConnectionManager};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Opens `sqlite` through the library: `pool_size` connections, `busy_timeout`.
fn open(sqlite: &TestSqlite, pool_size: u32, busy_timeout: Duration) -> Database {
    let config = DatabaseConfig::parse(&sqlite.url, UrlSource::Flag).expect("a SQLite URL");
    Database::open(
        config,
        &ConnectOptions {
            pool_size,
            sqlite_busy_timeout: busy_timeout,
            ..ConnectOptions::default()
        },
    )
    .expect("open the SQLite file")
}

fn writers(db: &Database) -> &SqliteWriters {
    db.sqlite_writers()
}

/// Waits until `condition` holds. Not a timing assertion: the bound only turns a hang (a bug)
/// into a failure.
fn until(what: &str, condition: impl Fn() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < give_up, "never came: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A write transaction's statement, so that the lock is really taken and used.
fn write(conn: &mut DbConnection, id: i64) {
    conn.batch_execute(&format!(
        "INSERT INTO accounts (id, balance) VALUES ({id}, 0) \
         ON CONFLICT (id) DO UPDATE SET balance = balance + 1"
    ))
    .expect("write inside the transaction");
}

fn holds_turn(conn: &mut DbConnection) -> bool {
    match conn {
        DbConnection::Sqlite(sqlite) => sqlite_session::holds_turn(sqlite),
        DbConnection::Postgresql(_) => unreachable!("a SQLite connection"),
    }
}

#[test]
fn sqlite_writers_of_one_pool_that_waited_a_slice_go_first_come_first_served() {
    let sqlite = TestSqlite::new();
    let db = open(&sqlite, 4, Duration::from_secs(30));
    let mut holder = db.pool().get().expect("a connection");
    holder.begin(Flavor::Sqlite, Access::ReadWrite).unwrap();
    assert!(holds_turn(&mut holder));
    let (began, order) = mpsc::channel();
    std::thread::scope(|scope| {
        for (place, name) in ["first waiter", "second waiter"].into_iter().enumerate() {
            let (db, began) = (&db, began.clone());
            scope.spawn(move || {
                let mut conn = db.pool().get().expect("a connection");
                conn.begin(Flavor::Sqlite, Access::ReadWrite).unwrap();
                write(&mut conn, 2);
                began.send(name).unwrap();
                conn.commit(Flavor::Sqlite).unwrap();
            });
            until(&format!("{name} in the queue"), || {
                writers(db).queue().waiting() == place + 1
            });
        }
        // Once they have waited a slice, the holder commits and begins again at once, as a busy
        // worker does: each waiter goes first, in the order they came.
        std::thread::sleep(WRITE_SLICE);
        write(&mut holder, 1);
        holder.commit(Flavor::Sqlite).unwrap();
        assert!(
            !holds_turn(&mut holder),
            "the turn ends with the transaction"
        );
        holder.begin(Flavor::Sqlite, Access::ReadWrite).unwrap();
        began.send("holder again").unwrap();
        holder.commit(Flavor::Sqlite).unwrap();
    });
    assert_eq!(
        order.try_iter().collect::<Vec<_>>(),
        ["first waiter", "second waiter", "holder again"]
    );
    assert!(!writers(&db).queue().is_held());
}

#[test]
fn a_sqlite_writer_waiting_past_the_busy_timeout_for_its_turn_gets_busy_and_readers_take_no_turn() {
    let sqlite = TestSqlite::new();
    let db = open(&sqlite, 3, Duration::from_millis(200));
    let mut holder = db.pool().get().expect("a connection");
    holder.begin(Flavor::Sqlite, Access::ReadWrite).unwrap();
    write(&mut holder, 1);

    // A reader neither waits nor takes a turn (WAL: readers never wait for the writer).
    let mut reader = db.pool().get().expect("a connection");
    reader.begin(Flavor::Sqlite, Access::ReadOnly).unwrap();
    assert!(!holds_turn(&mut reader));
    reader.commit(Flavor::Sqlite).unwrap();

    // A writer gives up at the busy timeout with SQLite's busy, which is retried.
    let mut writer = db.pool().get().expect("a connection");
    let error = writer
        .begin(Flavor::Sqlite, Access::ReadWrite)
        .expect_err("the turn never came");
    assert_eq!(classify(&error), ErrorClass::Retryable, "{error}");
    assert!(error.to_string().contains("database is locked"), "{error}");
    assert!(!writer.in_transaction() && !holds_turn(&mut writer));
    assert_eq!(writers(&db).queue().waiting(), 0, "it left the queue");

    // The holder is untouched; once it commits, the writer's next try goes through.
    holder.commit(Flavor::Sqlite).unwrap();
    writer.begin(Flavor::Sqlite, Access::ReadWrite).unwrap();
    write(&mut writer, 2);
    writer.commit(Flavor::Sqlite).unwrap();
}

#[test]
fn a_sqlite_connection_closed_inside_a_write_transaction_hands_its_turn_on() {
    let sqlite = TestSqlite::new();
    drop(open(&sqlite, 1, Duration::from_secs(30))); // the tables
                                                     // Connections of one manager share its queue, in a pool or not.
    let config = DatabaseConfig::parse(&sqlite.url, UrlSource::Flag).expect("a SQLite URL");
    let manager = DbConnectionManager::new(config, &ConnectOptions::default());
    let queue = manager.sqlite_writers().queue();
    // As a panicked worker's connection, dropped by the pool in the middle of its transaction.
    let mut lone = manager.establish().expect("a connection");
    lone.begin(Flavor::Sqlite, Access::ReadWrite).unwrap();
    write(&mut lone, 1);
    assert!(queue.is_held());
    drop(lone);
    assert!(!queue.is_held(), "closed: the turn is free");
    let mut next = manager.establish().expect("a connection");
    next.begin(Flavor::Sqlite, Access::ReadWrite).unwrap();
    write(&mut next, 2);
    next.commit(Flavor::Sqlite).unwrap();
}

#[test]
fn a_sqlite_writer_of_another_process_that_waited_long_goes_before_one_beginning_afresh() {
    if !cfg!(target_os = "linux") {
        println!(
            "NOT RUN: the marks of writers that wait long are Linux's open-file-description locks"
        );
        return;
    }
    let sqlite = TestSqlite::new();
    // Two pools on one file: to SQLite, as two processes.
    let ours = open(&sqlite, 1, Duration::from_secs(30));
    let theirs = open(&sqlite, 1, Duration::from_secs(30));
    let mut holder = ours.pool().get().expect("a connection");
    holder.begin(Flavor::Sqlite, Access::ReadWrite).unwrap();
    let (began, order) = mpsc::channel();
    std::thread::scope(|scope| {
        let (theirs, their_began) = (&theirs, began.clone());
        scope.spawn(move || {
            let mut conn = theirs.pool().get().expect("a connection");
            conn.begin(Flavor::Sqlite, Access::ReadWrite).unwrap();
            write(&mut conn, 2);
            their_began.send("the other process").unwrap();
            conn.commit(Flavor::Sqlite).unwrap();
        });
        until("the other process's writer marked as waiting long", || {
            writers(&ours).others_waiting_long()
        });
        // Our writer commits and begins again at once: the other process goes first.
        write(&mut holder, 1);
        holder.commit(Flavor::Sqlite).unwrap();
        holder.begin(Flavor::Sqlite, Access::ReadWrite).unwrap();
        began.send("ours again").unwrap();
        holder.commit(Flavor::Sqlite).unwrap();
    });
    assert_eq!(
        order.try_iter().collect::<Vec<_>>(),
        ["the other process", "ours again"]
    );
    assert!(!writers(&ours).others_waiting_long(), "the mark is gone");
}
