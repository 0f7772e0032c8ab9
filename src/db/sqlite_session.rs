//! How SQLite writers wait for the write lock: fairly, steadily, and within the busy timeout.
//!
//! * In one pool, writers take turns in a [`WriteQueue`] before `BEGIN IMMEDIATE`
//!   ([`begin_write`]) and hand the turn on when their transaction ends
//!   ([`end_write_if_done`]): they never wait for each other in SQLite.
//! * The turn's holder may still find the lock taken by another process. It then waits in the
//!   busy handler installed here, which tries again every [`BUSY_POLL`] — not SQLite's own
//!   handler (`PRAGMA busy_timeout`), whose sleeps grow to 100 ms (`sqliteDefaultBusyCallback`
//!   in SQLite's `main.c`: 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, then 100 ms) and so miss
//!   the moments the other process lets go.
//! * Once it has waited [`LONG_WAIT`], it says so to the other processes ([`LongWaiters`]) and
//!   tries every [`LONG_POLL`]; a writer about to begin while another process's writer waits
//!   long lets it go first.
//! * One deadline bounds all of a write transaction's waits: its turn, letting long waiters go
//!   first, and SQLite's lock come within the busy timeout, or it reports SQLite's busy
//!   ("database is locked"), which `run_transaction` retries like any other. Any other
//!   statement that finds the lock taken waits the busy timeout at most, as before.
//!
//! The per-connection state lives with the connection in SQLite (`sqlite3_set_clientdata`),
//! which drops it when the connection closes: a connection closed in the middle of a
//! transaction (a panicked worker's, dropped by the pool) hands its turn on with its lock.

use super::long_waiters::LongWaiters;
use super::write_queue::{WriteQueue, WriteTurn};
use diesel::result::{DatabaseErrorKind, Error as DieselError, QueryResult};
use diesel::SqliteConnection;
use diesel_retry::RetryConnection;
use libsqlite3_sys as ffi;
use std::cell::Cell;
use std::ffi::{c_int, c_void, CStr};
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long the busy handler sleeps between two tries for a lock another process holds: short
/// enough to catch the lock between that process's transactions now and then, long enough to
/// cost little while many wait.
pub const BUSY_POLL: Duration = Duration::from_millis(1);

/// How long a writer waits for another process's lock before it counts as waiting long: it
/// then says so to the other processes, which let it go first.
pub const LONG_WAIT: Duration = Duration::from_millis(10);

/// How often a writer that waits long tries for the lock, and how often a writer letting one go
/// first looks whether it still waits.
pub const LONG_POLL: Duration = Duration::from_micros(100);

/// The name the state is kept under in the connection (`sqlite3_set_clientdata`).
const CLIENT_DATA: &CStr = c"roachbank.sqlite_session";

/// What the connections of one pool share: the queue for the write lock, and the marks of the
/// writers that wait long (opened by the first connection, which knows the file's path).
#[derive(Debug, Default)]
pub struct SqliteWriters {
    queue: Arc<WriteQueue>,
    long_waiters: OnceLock<Option<LongWaiters>>,
}

impl SqliteWriters {
    /// Writers sharing nothing yet.
    pub fn new() -> Arc<SqliteWriters> {
        Arc::new(SqliteWriters::default())
    }

    /// The queue for the write lock.
    pub fn queue(&self) -> &WriteQueue {
        &self.queue
    }

    /// Whether a writer of another pool on the same file (another process, as a rule) says it
    /// has waited long for the lock; never where there are no marks ([`LongWaiters`]).
    pub fn others_waiting_long(&self) -> bool {
        self.long_waiters()
            .is_some_and(LongWaiters::others_waiting_long)
    }

    fn long_waiters(&self) -> Option<&LongWaiters> {
        self.long_waiters.get().and_then(Option::as_ref)
    }
}

/// One connection's state.
struct SqliteSession {
    writers: Arc<SqliteWriters>,
    /// How long a writer may wait for the lock, in the queue and in SQLite together.
    busy_timeout: Duration,
    /// The turn this connection holds, from its `BEGIN IMMEDIATE` to the end of its
    /// transaction.
    turn: Cell<Option<WriteTurn>>,
    /// While a write transaction begins: since when it has waited for other processes, and
    /// when its waits must end.
    begin: Cell<Option<(Instant, Instant)>>,
    /// When the busy handler was first called for the lock it is waiting for now.
    busy_since: Cell<Option<Instant>>,
    /// Whether this connection's writer is marked as waiting long.
    announced: Cell<bool>,
}

impl SqliteSession {
    /// Marks this connection's writer as waiting long, once.
    fn announce(&self) {
        if !self.announced.replace(true) {
            if let Some(marks) = self.writers.long_waiters() {
                marks.announce();
            }
        }
    }

    /// Takes the mark back, if it was made.
    fn withdraw(&self) {
        if self.announced.replace(false) {
            if let Some(marks) = self.writers.long_waiters() {
                marks.withdraw();
            }
        }
    }

    /// Before a try for the lock: lets other processes' long waiters go first, unless this
    /// writer, waiting since `since`, waits long itself (then it says so). False once
    /// `deadline` has passed.
    fn after_long_waiters(&self, since: Instant, deadline: Instant) -> bool {
        let Some(marks) = self.writers.long_waiters() else {
            return Instant::now() < deadline;
        };
        loop {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            if now - since >= LONG_WAIT {
                self.announce();
                return true;
            }
            if !marks.others_waiting_long() {
                return true;
            }
            std::thread::sleep(LONG_POLL.min(deadline - now));
        }
    }
}

impl Drop for SqliteSession {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// Sets `conn` up to take its turn among `writers` for every write transaction, and replaces
/// SQLite's busy handler by the steady one; every wait for the lock ends within
/// `busy_timeout`.
pub fn install(
    conn: &mut SqliteConnection,
    writers: Arc<SqliteWriters>,
    busy_timeout: Duration,
) -> QueryResult<()> {
    if let Some(path) = database_file(conn) {
        writers
            .long_waiters
            .get_or_init(|| LongWaiters::open(&path));
    }
    let session = Box::into_raw(Box::new(SqliteSession {
        writers,
        busy_timeout,
        turn: Cell::new(None),
        begin: Cell::new(None),
        busy_since: Cell::new(None),
        announced: Cell::new(false),
    }));
    // SAFETY: `db` is this connection's open handle, used only for the length of the call.
    // SQLite owns `session` from here and hands it to `drop_session` once, when the connection
    // closes (or at once if it cannot keep it); the busy handler runs only while the connection
    // is open, so `session` outlives every call of it.
    let code = unsafe {
        conn.with_raw_connection(|db| {
            match ffi::sqlite3_set_clientdata(
                db,
                CLIENT_DATA.as_ptr(),
                session.cast(),
                Some(drop_session),
            ) {
                ffi::SQLITE_OK => {
                    ffi::sqlite3_busy_handler(db, Some(steady_busy_handler), session.cast())
                }
                refused => refused,
            }
        })
    };
    match code {
        ffi::SQLITE_OK => Ok(()),
        code => Err(DieselError::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new(format!(
                "could not set up the connection's busy handler (SQLite code {code})"
            )),
        )),
    }
}

/// The path of the connection's main database file; none for an in-memory or temporary one.
fn database_file(conn: &mut SqliteConnection) -> Option<PathBuf> {
    // SAFETY: reads the name SQLite keeps for the open handle, copied before the call returns.
    let name = unsafe {
        conn.with_raw_connection(|db| {
            let name = ffi::sqlite3_db_filename(db, c"main".as_ptr());
            (!name.is_null()).then(|| CStr::from_ptr(name).to_owned())
        })
    }?;
    let name = name.into_string().ok()?;
    (!name.is_empty()).then(|| PathBuf::from(name))
}

/// SQLite's destructor of the state: the turn, if held, goes to the next writer.
unsafe extern "C" fn drop_session(session: *mut c_void) {
    // SAFETY: `session` is the pointer `install` leaked, given back once by SQLite.
    drop(unsafe { Box::from_raw(session.cast::<SqliteSession>()) });
}

/// The busy handler: `count` is how many times it has been called for this lock already.
/// Returns 1 to have SQLite try again, 0 to give up with SQLITE_BUSY.
unsafe extern "C" fn steady_busy_handler(session: *mut c_void, count: c_int) -> c_int {
    // SAFETY: the state `install` gave SQLite, alive while the connection is (see `install`);
    // only shared references to it are ever made, and its cells are used by the one thread
    // that runs the connection's statement.
    let session = unsafe { &*session.cast::<SqliteSession>() };
    let now = Instant::now();
    if count == 0 {
        session.busy_since.set(Some(now));
    }
    let (since, deadline) = session.begin.get().unwrap_or_else(|| {
        let since = session.busy_since.get().unwrap_or(now);
        (since, since + session.busy_timeout)
    });
    if now >= deadline {
        return 0;
    }
    if session.begin.get().is_none() {
        std::thread::sleep(BUSY_POLL.min(deadline - now));
        return 1;
    }
    // A beginning write transaction (which takes its mark back once it has the lock).
    let poll = if now - since >= LONG_WAIT {
        session.announce();
        LONG_POLL
    } else {
        BUSY_POLL
    };
    std::thread::sleep(poll.min(deadline - now));
    c_int::from(session.after_long_waiters(since, deadline))
}

/// The state of `conn`, if [`install`] set it up.
fn session(conn: &mut SqliteConnection) -> Option<NonNull<SqliteSession>> {
    // SAFETY: only reads the pointer SQLite keeps for `install`; the handle is used only for
    // the length of the call.
    NonNull::new(unsafe {
        conn.with_raw_connection(|db| ffi::sqlite3_get_clientdata(db, CLIENT_DATA.as_ptr()))
    })
    .map(NonNull::cast)
}

/// SQLite's answer to a writer whose wait ran out.
fn busy(why: &str, busy_timeout: Duration) -> DieselError {
    DieselError::DatabaseError(
        DatabaseErrorKind::Unknown,
        Box::new(format!(
            "database is locked: {why} within the busy timeout ({} ms)",
            busy_timeout.as_millis()
        )),
    )
}

/// Runs `begin` (the write transaction's `BEGIN IMMEDIATE`) once this connection has its turn
/// in the pool's queue and other processes' long waiters have gone first; all of it within the
/// busy timeout, or this reports SQLite's busy ("database is locked"). A connection
/// [`install`] did not set up just runs `begin`.
pub fn begin_write(
    conn: &mut SqliteConnection,
    begin: impl FnOnce(&mut SqliteConnection) -> QueryResult<()>,
) -> QueryResult<()> {
    let Some(session) = session(conn) else {
        return begin(conn);
    };
    // SAFETY: the state lives as long as the connection, which `conn` borrows for the whole
    // function; only shared references to it are made (see `steady_busy_handler`).
    let session = unsafe { session.as_ref() };
    let deadline = Instant::now() + session.busy_timeout;
    let turn = match session.turn.take() {
        Some(held) => held,
        None => session
            .writers
            .queue
            .take_turn(deadline)
            .map_err(|timed_out| busy(&timed_out.to_string(), session.busy_timeout))?,
    };
    session.turn.set(Some(turn));
    // Waits for other processes count from here: the queue is this process's own business.
    let since = Instant::now();
    let begun = if session.after_long_waiters(since, deadline) {
        session.begin.set(Some((since, deadline)));
        let begun = begin(conn);
        session.begin.set(None);
        begun
    } else {
        Err(busy(
            "other processes' writers that waited long went first",
            session.busy_timeout,
        ))
    };
    session.withdraw();
    if begun.is_err() {
        end_write_if_done(conn);
    }
    begun
}

/// Hands the connection's turn on unless a transaction is still open on it: after its COMMIT,
/// ROLLBACK or failed BEGIN.
pub fn end_write_if_done(conn: &mut SqliteConnection) {
    let Some(session) = session(conn) else {
        return;
    };
    if RetryConnection::in_transaction(conn) {
        return;
    }
    // SAFETY: as in `begin_write`.
    let session = unsafe { session.as_ref() };
    drop(session.turn.take());
}

/// Whether `conn` holds its turn to write: from its write transaction's `BEGIN IMMEDIATE` to
/// its end.
pub fn holds_turn(conn: &mut SqliteConnection) -> bool {
    let Some(session) = session(conn) else {
        return false;
    };
    // SAFETY: as in `begin_write`.
    let session = unsafe { session.as_ref() };
    let turn = session.turn.take();
    let held = turn.is_some();
    session.turn.set(turn);
    held
}
