//! What the async driver leaves behind when its future is dropped, step by step, on a fake
//! connection that answers at once everywhere but at one chosen step, where it waits for ever:
//! no server. Dropped while a statement is in flight or a transaction is open, the connection
//! must be marked broken (a pool then closes it); dropped while it sleeps between attempts,
//! holding no transaction, it must not.

use crate::asynchronous::{
    run_single_statement, run_transaction, run_transaction_exactly_once, AsyncRetryConnection,
};
use crate::classify::test_errors::from_server;
use crate::{Access, Flavor, Flavored, RetryPolicy};
use diesel::result::{Error as DieselError, QueryResult};
use std::future::{pending, Future};
use std::time::Duration;

/// Where the driver can be waiting when its future is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Asking the session's isolation (a single statement, outside any transaction).
    Isolation,
    Begin,
    Work,
    Commit,
    /// CockroachDB's `ROLLBACK TO SAVEPOINT cockroach_restart`.
    RestartInPlace,
    Rollback,
    /// The wait between attempts, with no transaction open.
    Backoff,
    Probe,
    /// Nowhere: the run ends.
    Nowhere,
}

/// A connection whose calls answer at once (the work's first run with `first_work`, the
/// commit with `commit_error`, if given), except at `stuck`, where they wait for ever.
struct Fake {
    flavor: Flavor,
    isolation: &'static str,
    stuck: Step,
    first_work: Option<DieselError>,
    commit_error: Option<DieselError>,
    in_tx: bool,
    broken: bool,
    /// The steps reached, in order.
    reached: Vec<Step>,
}

impl Fake {
    fn new(flavor: Flavor, stuck: Step) -> Fake {
        Fake {
            flavor,
            isolation: "serializable",
            stuck,
            first_work: None,
            commit_error: None,
            in_tx: false,
            broken: false,
            reached: Vec::new(),
        }
    }

    /// Records `step`, and waits for ever if it is the one to be stuck at.
    async fn at(&mut self, step: Step) {
        self.reached.push(step);
        if self.stuck == step {
            pending::<()>().await;
        }
    }

    async fn work(&mut self) -> QueryResult<i32> {
        self.at(Step::Work).await;
        self.first_work.take().map_or(Ok(1), Err)
    }

    async fn probe(&mut self) -> QueryResult<Option<i32>> {
        self.at(Step::Probe).await;
        Ok(None)
    }
}

impl AsyncRetryConnection for Fake {
    fn default_flavor(&self) -> Flavor {
        self.flavor
    }

    async fn detect_flavor(&mut self) -> QueryResult<Flavor> {
        Ok(self.flavor)
    }

    async fn default_isolation(&mut self) -> QueryResult<String> {
        self.at(Step::Isolation).await;
        Ok(self.isolation.to_string())
    }

    async fn begin(&mut self, _: Flavor, _: Access) -> QueryResult<()> {
        self.at(Step::Begin).await;
        self.in_tx = true;
        Ok(())
    }

    async fn commit(&mut self, _: Flavor) -> QueryResult<()> {
        self.at(Step::Commit).await;
        self.in_tx = false;
        self.commit_error.take().map_or(Ok(()), Err)
    }

    async fn rollback_to_restart(&mut self) -> QueryResult<()> {
        self.at(Step::RestartInPlace).await;
        Ok(())
    }

    async fn rollback(&mut self) {
        self.at(Step::Rollback).await;
        self.in_tx = false;
    }

    fn in_transaction(&mut self) -> bool {
        self.in_tx
    }

    fn mark_broken(&mut self) {
        self.broken = true;
    }

    fn is_broken(&mut self) -> bool {
        self.broken
    }
}

fn conflict() -> DieselError {
    from_server("40001", "restart transaction: injected")
}

/// No waits, but for the backoff case: a wait longer than any test.
fn policy(stuck: Step) -> RetryPolicy {
    let wait = if stuck == Step::Backoff {
        Duration::from_secs(3600)
    } else {
        Duration::ZERO
    };
    RetryPolicy {
        initial_backoff: wait,
        max_backoff: wait,
        // The backoff case waits before its first retry.
        immediate_retries: if stuck == Step::Backoff { 0 } else { 3 },
        ..RetryPolicy::default()
    }
}

/// Polls `run` until it has waited a while (tokio's paused clock makes that instant) and drops
/// it; returns whether it ended first.
async fn drop_while_pending(run: impl Future) -> bool {
    tokio::time::timeout(Duration::from_millis(100), run)
        .await
        .is_ok()
}

/// Drops a run stuck at `fake.stuck` (`shape`: how it is run) and returns whether the
/// connection was marked broken.
async fn dropped(mut fake: Fake, shape: &str) -> bool {
    let stuck = fake.stuck;
    let flavor = fake.flavor;
    let policy = policy(stuck);
    let source = Flavored::new(&mut fake, flavor);
    let ended = match shape {
        "transaction" => {
            drop_while_pending(run_transaction(source, &policy, async |conn: &mut Fake| {
                conn.work().await
            }))
            .await
        }
        "single statement" => {
            drop_while_pending(run_single_statement(
                source,
                &policy,
                async |conn: &mut Fake| conn.work().await,
            ))
            .await
        }
        _ => {
            drop_while_pending(run_transaction_exactly_once(
                source,
                &policy,
                async |conn: &mut Fake| conn.work().await,
                async |conn: &mut Fake| conn.probe().await,
            ))
            .await
        }
    };
    assert_eq!(ended, stuck == Step::Nowhere, "{stuck:?}: ended");
    // Stuck in the driver's own wait, the connection was last asked to roll back.
    let last = match stuck {
        Step::Nowhere => Step::Commit,
        Step::Backoff => Step::Rollback,
        step => step,
    };
    assert_eq!(
        fake.reached.last(),
        Some(&last),
        "{stuck:?}: {:?}",
        fake.reached
    );
    fake.broken
}

#[tokio::test(start_paused = true)]
async fn a_run_dropped_with_a_statement_in_flight_or_a_transaction_open_marks_its_connection_broken(
) {
    use Flavor::{CockroachDb, PostgreSql};
    let conflict_first = |mut fake: Fake| {
        fake.first_work = Some(conflict());
        fake
    };
    let weaker_session = |mut fake: Fake| {
        fake.isolation = "read committed";
        fake
    };
    let ambiguous_commit = |mut fake: Fake| {
        fake.commit_error = Some(from_server("40003", "result is ambiguous"));
        fake
    };
    let cases = [
        (Fake::new(PostgreSql, Step::Begin), "transaction"),
        (Fake::new(CockroachDb, Step::Begin), "transaction"),
        (Fake::new(PostgreSql, Step::Work), "transaction"),
        (Fake::new(CockroachDb, Step::Work), "transaction"),
        (Fake::new(PostgreSql, Step::Commit), "transaction"),
        (Fake::new(CockroachDb, Step::Commit), "transaction"),
        (
            conflict_first(Fake::new(CockroachDb, Step::RestartInPlace)),
            "transaction",
        ),
        (
            conflict_first(Fake::new(PostgreSql, Step::Rollback)),
            "transaction",
        ),
        (
            weaker_session(Fake::new(PostgreSql, Step::Isolation)),
            "single statement",
        ),
        (Fake::new(PostgreSql, Step::Work), "single statement"),
        (
            weaker_session(Fake::new(PostgreSql, Step::Commit)),
            "single statement",
        ),
        (
            ambiguous_commit(Fake::new(PostgreSql, Step::Probe)),
            "exactly once",
        ),
    ];
    for (fake, shape) in cases {
        let label = format!("{} {shape} dropped at {:?}", fake.flavor, fake.stuck);
        assert!(dropped(fake, shape).await, "{label}: not marked broken");
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_dropped_while_it_waits_between_attempts_or_once_ended_leaves_its_connection_usable()
{
    let mut backoff = Fake::new(Flavor::PostgreSql, Step::Backoff);
    backoff.first_work = Some(conflict());
    assert!(
        !dropped(backoff, "transaction").await,
        "dropped in the backoff"
    );
    let done = Fake::new(Flavor::PostgreSql, Step::Nowhere);
    assert!(!dropped(done, "transaction").await, "ended");
}
