//! Unknown outcomes, through the suite's cutting proxy: a connection lost with the commit
//! (`COMMIT`, or CockroachDB's `RELEASE SAVEPOINT cockroach_restart`) in flight is an
//! ambiguous commit without a probe — never retried blindly — and is settled by the probe of
//! `run_transaction_exactly_once`, applied exactly once; a connection lost before the commit
//! is retried on a fresh one; a server that never answers is a connection error within the
//! pool's timeout. diesel-async reports tokio-postgres's lost connection as
//! `UnableToSendCommand` "connection closed", which the driver must read as lost.

use super::{
    bb8_pool, deadpool_pool, open_wallet, quick_policy, wallets, wallets_db, wallets_with_id,
    within,
};
use crate::support::control_log::ControlLog;
use crate::support::proxy::{via_proxy, CuttingProxy, Unreachable};
use crate::support::server;
use diesel::prelude::*;
use diesel_async::pooled_connection::bb8;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_retry::asynchronous::{run_transaction, run_transaction_exactly_once};
use diesel_retry::{Flavor, Flavored, TransactionError};
use std::time::{Duration, Instant};

/// The wallet id the client chooses for the work, so that the probe can look it up.
const WALLET: i64 = 42;

/// Where the commit is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// The commit reached the server; its answer was lost (`cut_after`).
    Landed,
    /// The commit never reached the server (`cut_instead_of`).
    NeverArrived,
}

impl Cut {
    fn arm(self, proxy: &CuttingProxy, statement: &str) {
        match self {
            Cut::Landed => proxy.cut_after(statement),
            Cut::NeverArrived => proxy.cut_instead_of(statement),
        }
    }
}

/// Each protocol with its commit statement.
const COMMITS: [(Flavor, &str); 2] = [
    (Flavor::PostgreSql, "COMMIT"),
    (Flavor::CockroachDb, "RELEASE SAVEPOINT cockroach_restart"),
];

#[tokio::test]
async fn a_connection_lost_during_the_commit_without_a_probe_is_ambiguous_and_never_retried() {
    for (flavor, statement) in COMMITS {
        for cut in [Cut::Landed, Cut::NeverArrived] {
            let label = format!("{flavor}, {statement} {cut:?}");
            let db = wallets_db("async_lost_commit");
            let proxy = CuttingProxy::in_front_of_server();
            let log = ControlLog::default();
            let pool = bb8_pool(&via_proxy(&db, &proxy), 2, &log).await;
            cut.arm(&proxy, statement);
            let (mut runs, policy) = (0, quick_policy());
            let run = run_transaction(Flavored::new(&pool, flavor), &policy, async |conn| {
                runs += 1;
                open_wallet(conn, WALLET).await
            });
            match within(&label, run).await {
                Err(TransactionError::AmbiguousCommit { attempts: 1, cause }) => {
                    eprintln!("{label}: ambiguous: {cause}")
                }
                other => panic!("{label}: expected AmbiguousCommit, got {other:?}"),
            }
            assert_eq!(proxy.cuts(), 1, "{label}: the proxy cut the link");
            assert_eq!(runs, 1, "{label}: never retried blindly");
            // After the commit, at most a ROLLBACK of what is still open, on the lost link.
            let sent = log.statements();
            let commit = sent.iter().rposition(|sent| sent == statement);
            let after = &sent[commit.map_or(sent.len(), |at| at + 1)..];
            assert!(
                commit.is_some() && after.iter().all(|sent| sent == "ROLLBACK"),
                "{label}: nothing but a rollback after the commit: {sent:?}"
            );
        }
    }
}

/// How many attempts `run_transaction_exactly_once` takes when `cut` hits `statement`: a
/// commit that landed is found by the probe (1); one that did not is run again (2). On
/// PostgreSQL `RELEASE SAVEPOINT cockroach_restart` is not the commit (the `COMMIT` after it
/// is), so a link cut after it leaves nothing committed there; on CockroachDB it is the commit
/// (cockroachdb/docs `release-savepoint.md`: "the RELEASE SAVEPOINT cockroach_restart
/// statement commits the transaction").
fn attempts_expected(cut: Cut, statement: &str) -> u32 {
    let landed = cut == Cut::Landed && (statement == "COMMIT" || server().is_cockroachdb());
    if landed {
        1
    } else {
        2
    }
}

#[tokio::test]
async fn exactly_once_settles_a_commit_lost_in_flight_with_its_probe_and_applies_it_once() {
    for (flavor, statement) in COMMITS {
        for cut in [Cut::Landed, Cut::NeverArrived] {
            let label = format!("{flavor}, {statement} {cut:?}");
            let db = wallets_db("async_exactly_once");
            let proxy = CuttingProxy::in_front_of_server();
            let log = ControlLog::default();
            let url = via_proxy(&db, &proxy);
            // Both pools: PostgreSQL's protocol on bb8, CockroachDB's on deadpool.
            let (bb8, deadpool) = (bb8_pool(&url, 2, &log).await, deadpool_pool(&url, 2, &log));
            cut.arm(&proxy, statement);
            let mut runs = 0;
            let work = async |conn: &mut AsyncPgConnection| {
                runs += 1;
                open_wallet(conn, WALLET).await
            };
            let probe = async |conn: &mut AsyncPgConnection| {
                wallets::table
                    .find(WALLET)
                    .select(wallets::id)
                    .first::<i64>(conn)
                    .await
                    .optional()
            };
            let policy = quick_policy();
            let result = match flavor {
                Flavor::CockroachDb => {
                    let bank = Flavored::new(&deadpool, flavor);
                    within(
                        &label,
                        run_transaction_exactly_once(bank, &policy, work, probe),
                    )
                    .await
                    .map_err(|error| format!("{error:?}"))
                }
                _ => {
                    let bank = Flavored::new(&bb8, flavor);
                    within(
                        &label,
                        run_transaction_exactly_once(bank, &policy, work, probe),
                    )
                    .await
                    .map_err(|error| format!("{error:?}"))
                }
            };
            let committed = result.unwrap_or_else(|error| panic!("{label}: {error}"));
            assert_eq!(proxy.cuts(), 1, "{label}: the proxy cut the link");
            assert_eq!(committed.value, WALLET, "{label}");
            assert_eq!(
                committed.attempts,
                attempts_expected(cut, statement),
                "{label}"
            );
            assert_eq!(
                runs, committed.attempts,
                "{label}: the work ran once per attempt"
            );
            assert_eq!(
                wallets_with_id(&db, WALLET),
                1,
                "{label}: applied exactly once"
            );
        }
    }
}

/// The statement on which the first attempt loses its link, before the commit.
const LOSE_THE_LINK_HERE: &str = "SELECT 'lose the link here'";

#[tokio::test]
async fn a_connection_lost_before_the_commit_is_retried_on_a_fresh_connection_and_applied_once() {
    for flavor in [Flavor::PostgreSql, Flavor::CockroachDb] {
        let db = wallets_db("async_lost_in_work");
        let proxy = CuttingProxy::in_front_of_server();
        let log = ControlLog::default();
        let pool = bb8_pool(&via_proxy(&db, &proxy), 2, &log).await;
        proxy.cut_instead_of(LOSE_THE_LINK_HERE);
        let (mut runs, policy) = (0, quick_policy());
        let run = run_transaction(Flavored::new(&pool, flavor), &policy, async |conn| {
            runs += 1;
            diesel::sql_query(LOSE_THE_LINK_HERE).execute(conn).await?;
            open_wallet(conn, WALLET).await
        });
        let committed = within("the run", run)
            .await
            .unwrap_or_else(|error| panic!("{flavor}: {error:?}"));
        assert_eq!(proxy.cuts(), 1, "{flavor}");
        assert_eq!(committed.attempts, 2, "{flavor}");
        assert_eq!(runs, 2, "{flavor}");
        assert_eq!(wallets_with_id(&db, WALLET), 1, "{flavor}: applied once");
    }
}

/// How long a bb8 pool waits for a connection in [`a_server_that_never_answers_is_a_connection_error_within_the_pools_timeout`].
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_server_that_never_answers_is_a_connection_error_within_the_pools_timeout() {
    let db = wallets_db("async_never_answers");
    // A host whose connection attempts go unanswered, and a network that froze: the TCP
    // connection is made, the startup message never answered.
    let unreachable = Unreachable::start();
    let frozen = CuttingProxy::in_front_of_server();
    frozen.freeze();
    let server = server();
    let live = format!("{}:{}", server.host(), server.port());
    for (what, port) in [
        ("unreachable host", unreachable.port()),
        ("frozen network", frozen.port()),
    ] {
        let url = db.url.replacen(&live, &format!("127.0.0.1:{port}"), 1);
        let pool = bb8::Pool::builder()
            .max_size(1)
            .connection_timeout(CONNECTION_TIMEOUT)
            .build_unchecked(super::logged_manager(&url, &ControlLog::default()));
        let started = Instant::now();
        let (mut runs, policy) = (0, quick_policy());
        let run = run_transaction(&pool, &policy, async |conn| {
            runs += 1;
            open_wallet(conn, WALLET).await
        });
        let result = within(what, run).await;
        let took = started.elapsed();
        eprintln!("{what}: {result:?} after {took:.2?}");
        match result {
            Err(TransactionError::Connection {
                attempts: 0,
                error: bb8::RunError::TimedOut,
            }) => {}
            other => panic!("{what}: expected a connection error, got {other:?}"),
        }
        assert!(
            took < CONNECTION_TIMEOUT + Duration::from_secs(3),
            "{what}: took {took:?}, the pool's timeout is {CONNECTION_TIMEOUT:?}"
        );
        assert_eq!(runs, 0, "{what}");
    }
    assert_eq!(wallets_with_id(&db, WALLET), 0);
}
