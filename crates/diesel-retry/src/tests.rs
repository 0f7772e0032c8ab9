//! Every path of the protocol, driven by a scripted connection: no server.

use crate::classify::test_errors::{from_server, without_code};
use crate::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError, QueryResult};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A connection whose every call answers from a script (`Ok` once a script runs out) and
/// logs what it was asked.
struct Fake {
    flavor: Flavor,
    isolation: &'static str,
    begin: VecDeque<QueryResult<()>>,
    commit: VecDeque<QueryResult<()>>,
    restart: VecDeque<QueryResult<()>>,
    work: VecDeque<QueryResult<i32>>,
    probe: VecDeque<QueryResult<Option<i32>>>,
    in_tx: bool,
    log: Vec<&'static str>,
}

impl Fake {
    fn new(flavor: Flavor) -> Fake {
        Fake {
            flavor,
            isolation: "serializable",
            begin: VecDeque::new(),
            commit: VecDeque::new(),
            restart: VecDeque::new(),
            work: VecDeque::new(),
            probe: VecDeque::new(),
            in_tx: false,
            log: Vec::new(),
        }
    }

    fn work(&mut self) -> QueryResult<i32> {
        self.log.push("work");
        self.work.pop_front().unwrap_or(Ok(1))
    }

    fn probe(&mut self) -> QueryResult<Option<i32>> {
        self.log.push("probe");
        self.probe.pop_front().unwrap_or(Ok(None))
    }

    fn count(&self, call: &str) -> usize {
        self.log.iter().filter(|logged| **logged == call).count()
    }
}

impl RetryConnection for Fake {
    fn default_flavor(&self) -> Flavor {
        self.flavor
    }
    fn detect_flavor(&mut self) -> QueryResult<Flavor> {
        Ok(self.flavor)
    }
    fn default_isolation(&mut self) -> QueryResult<String> {
        self.log.push("isolation");
        Ok(self.isolation.to_string())
    }
    fn begin(&mut self, _: Flavor, _: Access) -> QueryResult<()> {
        self.log.push("begin");
        let result = self.begin.pop_front().unwrap_or(Ok(()));
        self.in_tx = result.is_ok();
        result
    }
    fn commit(&mut self, flavor: Flavor) -> QueryResult<()> {
        self.log.push("commit");
        let result = self.commit.pop_front().unwrap_or(Ok(()));
        // A failed RELEASE leaves CockroachDB's transaction open; a failed COMMIT ends it.
        self.in_tx = result.is_err() && flavor == Flavor::CockroachDb;
        result
    }
    fn rollback_to_restart(&mut self) -> QueryResult<()> {
        self.log.push("rollback_to_restart");
        if !self.in_tx {
            return Err(DieselError::NotInTransaction);
        }
        self.restart.pop_front().unwrap_or(Ok(()))
    }
    fn rollback(&mut self) {
        if self.in_tx {
            self.log.push("rollback");
        }
        self.in_tx = false;
    }
    fn in_transaction(&mut self) -> bool {
        self.in_tx
    }
    fn discard(&mut self) {
        self.log.push("discard");
        self.in_tx = false;
    }
}

/// A source handing out one fake connection, failing the checkouts it is told to fail.
struct Source {
    conn: Fake,
    /// Checkouts that succeed before every later one fails (`None`: all succeed).
    reachable: Option<usize>,
    checkouts: usize,
}

impl ConnectionSource for &mut Source {
    type Connection = Fake;
    type Checkout<'s>
        = &'s mut Fake
    where
        Self: 's;

    fn checkout(&mut self) -> Result<&mut Fake, PoolError> {
        self.checkouts += 1;
        if self.reachable.is_some_and(|ok| self.checkouts > ok) {
            return Err(pool_error());
        }
        Ok(&mut self.conn)
    }
}

/// r2d2's error, as a pool that cannot connect gives it.
fn pool_error() -> PoolError {
    #[derive(Debug)]
    struct Unreachable;
    impl diesel::r2d2::ManageConnection for Unreachable {
        type Connection = ();
        type Error = std::io::Error;
        fn connect(&self) -> Result<(), std::io::Error> {
            Err(std::io::Error::other("connection refused"))
        }
        fn is_valid(&self, _: &mut ()) -> Result<(), std::io::Error> {
            Ok(())
        }
        fn has_broken(&self, _: &mut ()) -> bool {
            false
        }
    }
    diesel::r2d2::Pool::builder()
        .connection_timeout(Duration::from_millis(1))
        .error_handler(Box::new(diesel::r2d2::NopErrorHandler))
        .build_unchecked(Unreachable)
        .get()
        .expect_err("unreachable")
}

fn conflict() -> DieselError {
    from_server("40001", "restart transaction: TransactionRetryWithProtoRefreshError: TransactionRetryError: retry txn (RETRY_SERIALIZABLE)")
}
fn lost() -> DieselError {
    without_code(
        DatabaseErrorKind::ClosedConnection,
        "server closed the connection unexpectedly",
    )
}
fn ambiguous() -> DieselError {
    from_server("40003", "result is ambiguous")
}
fn unique() -> DieselError {
    from_server("23505", "duplicate key value violates unique constraint")
}
fn crdb_timeout() -> DieselError {
    from_server("57014", "query execution canceled due to statement timeout")
}
fn crdb_cancel() -> DieselError {
    from_server("57014", "query execution canceled")
}

/// No waits, so the tests take no time.
fn policy() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        ..RetryPolicy::default()
    }
}

type Outcome = Result<Committed<i32>, TransactionError<DieselError>>;

fn run(conn: &mut Fake, policy: &RetryPolicy) -> Outcome {
    let flavor = conn.flavor;
    run_transaction(Flavored::new(conn, flavor), policy, |conn: &mut Fake| {
        conn.work()
    })
}

fn run_probed(source: &mut Source, policy: &RetryPolicy) -> Outcome {
    let flavor = source.conn.flavor;
    run_transaction_exactly_once(
        Flavored::new(source, flavor),
        policy,
        |conn: &mut Fake| conn.work(),
        |conn: &mut Fake| conn.probe(),
    )
}

fn source(conn: Fake) -> Source {
    Source {
        conn,
        reachable: None,
        checkouts: 0,
    }
}

#[test]
fn cockroachdb_40001_in_the_work_goes_again_in_the_same_transaction() {
    let mut conn = Fake::new(Flavor::CockroachDb);
    conn.work = VecDeque::from([Err(conflict()), Ok(7)]);
    let done = run(&mut conn, &policy()).unwrap();
    assert_eq!((done.value, done.attempts), (7, 2));
    assert_eq!(
        conn.log,
        ["begin", "work", "rollback_to_restart", "work", "commit"]
    );
}

#[test]
fn cockroachdb_past_the_immediate_retries_rolls_back_whole_and_begins_again() {
    let mut conn = Fake::new(Flavor::CockroachDb);
    conn.work = VecDeque::from([Err(conflict()), Err(conflict()), Ok(7)]);
    let done = run(
        &mut conn,
        &RetryPolicy {
            immediate_retries: 1,
            ..policy()
        },
    )
    .unwrap();
    assert_eq!(done.attempts, 3);
    assert_eq!(
        conn.log,
        [
            "begin",
            "work",
            "rollback_to_restart",
            "work",
            "rollback",
            "begin",
            "work",
            "commit"
        ]
    );
}

#[test]
fn postgresql_40001_in_the_work_rolls_back_whole_and_begins_again() {
    let mut conn = Fake::new(Flavor::PostgreSql);
    conn.work = VecDeque::from([Err(from_server("40P01", "deadlock detected")), Ok(7)]);
    let done = run(&mut conn, &policy()).unwrap();
    assert_eq!(done.attempts, 2);
    assert_eq!(
        conn.log,
        ["begin", "work", "rollback", "begin", "work", "commit"]
    );
}

#[test]
fn sqlite_busy_rolls_back_and_begins_again() {
    let mut conn = Fake::new(Flavor::Sqlite);
    conn.work = VecDeque::from([
        Err(without_code(
            DatabaseErrorKind::Unknown,
            "database is locked",
        )),
        Ok(7),
    ]);
    let done = run(&mut conn, &policy()).unwrap();
    assert_eq!(done.attempts, 2);
    assert_eq!(conn.count("begin"), 2);
    assert_eq!(conn.count("rollback_to_restart"), 0);
}

#[test]
fn cockroachdb_40001_on_release_goes_again_in_the_same_transaction() {
    let mut conn = Fake::new(Flavor::CockroachDb);
    conn.commit = VecDeque::from([Err(conflict())]);
    let done = run(&mut conn, &policy()).unwrap();
    assert_eq!(done.attempts, 2);
    assert_eq!(
        conn.log,
        [
            "begin",
            "work",
            "commit",
            "rollback_to_restart",
            "work",
            "commit"
        ]
    );
}

#[test]
fn postgresql_40001_on_commit_begins_again() {
    let mut conn = Fake::new(Flavor::PostgreSql);
    conn.commit = VecDeque::from([Err(conflict())]);
    let done = run(&mut conn, &policy()).unwrap();
    assert_eq!(done.attempts, 2);
    assert_eq!(
        conn.log,
        ["begin", "work", "commit", "begin", "work", "commit"]
    );
}

#[test]
fn a_40003_on_release_without_a_probe_is_an_unknown_outcome_never_retried() {
    let mut conn = Fake::new(Flavor::CockroachDb);
    conn.commit = VecDeque::from([Err(ambiguous())]);
    match run(&mut conn, &policy()) {
        Err(TransactionError::AmbiguousCommit { attempts: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
    // The connection is alive: its transaction is rolled back, not the connection dropped.
    assert_eq!(conn.log, ["begin", "work", "commit", "rollback"]);
}

#[test]
fn a_connection_lost_before_the_commit_goes_again_on_a_new_connection() {
    let mut source = source(Fake::new(Flavor::PostgreSql));
    source.conn.work = VecDeque::from([Err(lost()), Ok(7)]);
    let done = run_probed(&mut source, &policy()).unwrap();
    assert_eq!(done.attempts, 2);
    assert_eq!(source.checkouts, 2);
    assert_eq!(
        source.conn.log,
        ["begin", "work", "discard", "begin", "work", "commit"]
    );
}

#[test]
fn a_connection_lost_during_the_commit_is_unknown_and_the_connection_discarded() {
    let mut conn = Fake::new(Flavor::PostgreSql);
    conn.commit = VecDeque::from([Err(lost())]);
    match run(&mut conn, &policy()) {
        Err(TransactionError::AmbiguousCommit { attempts: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(conn.log, ["begin", "work", "commit", "discard"]);
}

#[test]
fn a_late_commit_is_found_by_the_probe() {
    let mut source = source(Fake::new(Flavor::CockroachDb));
    source.conn.commit = VecDeque::from([Err(lost())]);
    source.conn.probe = VecDeque::from([Ok(Some(5))]);
    let done = run_probed(&mut source, &policy()).unwrap();
    assert_eq!((done.value, done.attempts), (5, 1));
    assert_eq!(source.conn.count("work"), 1);
}

#[test]
fn a_commit_the_probe_does_not_find_runs_again_on_a_fresh_connection() {
    let mut source = source(Fake::new(Flavor::CockroachDb));
    source.conn.commit = VecDeque::from([Err(ambiguous())]);
    source.conn.probe = VecDeque::from([Ok(None)]);
    let done = run_probed(&mut source, &policy()).unwrap();
    assert_eq!(done.attempts, 2);
    assert_eq!(source.checkouts, 3); // the first attempt, the probe, the second attempt
}

#[test]
fn a_probe_whose_connection_keeps_being_lost_is_asked_again_until_the_settle_budget_runs_out() {
    // A server that stays reachable but keeps losing the probe's connections (a backend
    // killer, a pool that keeps handing out dead ones): only the budget ends the settling, so
    // the twelfth answer still settles the outcome (it once ended unknown after ten tries).
    let mut source = source(Fake::new(Flavor::PostgreSql));
    source.conn.commit = VecDeque::from([Err(lost())]);
    source.conn.probe = (0..12).map(|_| Err(lost())).collect();
    source.conn.probe.push_back(Ok(Some(5)));
    let policy = RetryPolicy {
        settle_timeout: Duration::from_secs(10),
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
        ..RetryPolicy::default()
    };
    let done = run_probed(&mut source, &policy).unwrap();
    assert_eq!((done.value, done.attempts), (5, 1));
    assert_eq!(source.conn.count("probe"), 13);
    assert_eq!(source.conn.count("work"), 1);
}

#[test]
fn a_probe_that_cannot_connect_ends_unknown_when_the_settle_budget_runs_out() {
    let mut source = source(Fake::new(Flavor::PostgreSql));
    source.conn.commit = VecDeque::from([Err(lost())]);
    source.reachable = Some(1);
    let started = Instant::now();
    let policy = RetryPolicy {
        settle_timeout: Duration::from_millis(50),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
        immediate_retries: 0,
        ..RetryPolicy::default()
    };
    match run_probed(&mut source, &policy) {
        Err(TransactionError::AmbiguousCommit { attempts: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(source.conn.count("probe"), 0);
    assert!(
        source.checkouts >= 2,
        "the probe tried to connect: {}",
        source.checkouts
    );
}

#[test]
fn retries_run_out_after_max_retries() {
    let mut conn = Fake::new(Flavor::PostgreSql);
    conn.work = (0..3).map(|_| Err(conflict())).collect();
    match run(
        &mut conn,
        &RetryPolicy {
            max_retries: 2,
            ..policy()
        },
    ) {
        Err(TransactionError::RetriesExhausted { attempts: 3, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(conn.count("rollback"), 3);
}

#[test]
fn a_non_retryable_error_after_retries_fails_with_its_attempts() {
    let mut conn = Fake::new(Flavor::CockroachDb);
    conn.work = VecDeque::from([Err(conflict()), Err(unique())]);
    let error = run(&mut conn, &policy()).unwrap_err();
    assert!(
        matches!(error, TransactionError::Failed { attempts: 2, .. }),
        "{error:?}"
    );
    assert_eq!(error.attempts(), 2);
    assert_eq!(conn.log.last(), Some(&"rollback"));
}

#[test]
fn a_cockroachdb_timeout_before_the_commit_fails_and_is_not_retried() {
    let mut conn = Fake::new(Flavor::CockroachDb);
    conn.work = VecDeque::from([Err(crdb_timeout())]);
    let error = run(&mut conn, &policy()).unwrap_err();
    assert!(
        matches!(error, TransactionError::Failed { attempts: 1, .. }),
        "{error:?}"
    );
}

#[test]
fn a_cockroachdb_cancel_before_the_commit_goes_again_on_a_fresh_connection() {
    let mut conn = Fake::new(Flavor::CockroachDb);
    conn.work = VecDeque::from([Err(crdb_cancel()), Ok(7)]);
    let done = run(&mut conn, &policy()).unwrap();
    assert_eq!(done.attempts, 2);
    assert_eq!(
        conn.log,
        ["begin", "work", "discard", "begin", "work", "commit"]
    );
}

#[test]
fn a_cockroachdb_timeout_at_the_commit_not_found_stays_unknown_and_is_not_retried() {
    let mut source = source(Fake::new(Flavor::CockroachDb));
    source.conn.commit = VecDeque::from([Err(crdb_timeout())]);
    source.conn.probe = VecDeque::from([Ok(None)]);
    match run_probed(&mut source, &policy()) {
        Err(TransactionError::AmbiguousCommit { attempts: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(source.conn.count("work"), 1);
    assert_eq!(source.conn.count("probe"), 1);
}

#[test]
fn a_cockroachdb_cancel_at_the_commit_is_unknown_and_the_connection_discarded() {
    let mut conn = Fake::new(Flavor::CockroachDb);
    conn.commit = VecDeque::from([Err(crdb_cancel())]);
    assert!(matches!(
        run(&mut conn, &policy()),
        Err(TransactionError::AmbiguousCommit { .. })
    ));
    assert_eq!(conn.log.last(), Some(&"discard"));
}

#[test]
fn a_failure_after_an_unknown_outcome_is_probed_again_and_finds_the_late_commit() {
    let mut source = source(Fake::new(Flavor::PostgreSql));
    source.conn.commit = VecDeque::from([Err(lost())]);
    source.conn.work = VecDeque::from([Ok(1), Err(unique())]);
    source.conn.probe = VecDeque::from([Ok(None), Ok(Some(9))]);
    let done = run_probed(&mut source, &policy()).unwrap();
    assert_eq!((done.value, done.attempts), (9, 2));
}

#[test]
fn a_single_statement_lost_while_it_ran_is_an_unknown_outcome() {
    let mut conn = Fake::new(Flavor::PostgreSql);
    conn.work = VecDeque::from([Err(lost())]);
    let outcome = run_single_statement(&mut conn, &policy(), |conn: &mut Fake| conn.work());
    assert!(matches!(
        outcome,
        Err(TransactionError::AmbiguousCommit { attempts: 1, .. })
    ));
    // Asked the session's isolation once, then sent the statement alone.
    assert_eq!(conn.log, ["isolation", "work", "discard"]);
}

#[test]
fn a_single_statement_runs_in_a_serializable_transaction_where_the_session_is_weaker() {
    let mut conn = Fake::new(Flavor::PostgreSql);
    conn.isolation = "read committed";
    conn.work = VecDeque::from([Err(conflict()), Ok(3)]);
    let done = run_single_statement(&mut conn, &policy(), |conn: &mut Fake| conn.work()).unwrap();
    assert_eq!(done.attempts, 2);
    assert_eq!(
        conn.log,
        [
            "isolation",
            "begin",
            "work",
            "rollback",
            "begin",
            "work",
            "commit"
        ]
    );
}

#[test]
fn no_connection_is_an_error_carrying_the_attempts_made() {
    let mut source = source(Fake::new(Flavor::PostgreSql));
    source.reachable = Some(0);
    let error = run_probed(&mut source, &policy()).unwrap_err();
    assert!(
        matches!(error, TransactionError::Connection { attempts: 0, .. }),
        "{error:?}"
    );
    let mut source = self::source(Fake::new(Flavor::PostgreSql));
    source.conn.work = VecDeque::from([Err(lost())]);
    source.reachable = Some(1);
    let error = run_probed(&mut source, &policy()).unwrap_err();
    assert_eq!(error.attempts(), 1, "{error:?}");
}

#[test]
fn postgresql_57014_on_commit_did_not_commit_and_fails() {
    let mut conn = Fake::new(Flavor::PostgreSql);
    conn.commit = VecDeque::from([Err(from_server(
        "57014",
        "canceling statement due to statement timeout",
    ))]);
    assert!(matches!(
        run(&mut conn, &policy()),
        Err(TransactionError::Failed { attempts: 1, .. })
    ));
}

#[test]
fn no_retry_starts_after_the_deadline() {
    let mut conn = Fake::new(Flavor::PostgreSql);
    conn.work = VecDeque::from([Err(conflict()), Ok(1)]);
    let past = RetryPolicy {
        deadline: Some(Instant::now()),
        ..policy()
    };
    assert!(matches!(
        run(&mut conn, &past),
        Err(TransactionError::RetriesExhausted { attempts: 1, .. })
    ));
}
