//! diesel-retry's `async_bank` example (`crates/diesel-retry/examples/async_bank.rs`), run
//! against the suite's PostgreSQL (or `TEST_DATABASE_URL`'s server): 2,000 transfers from 64
//! tasks over a bb8 pool of 8 through the async `run_transaction`, the books balanced, and a
//! re-run on a table left behind starting from the same 100 × 1,000.

use crate::support::{server, TestDb};

#[path = "../../crates/diesel-retry/examples/async_bank.rs"]
#[allow(dead_code)] // its `main`
mod async_bank;

/// Whether `url` asks for TLS, which the example does not do (it connects with tokio-postgres's
/// `NoTls`).
fn needs_tls(url: &str) -> bool {
    [
        "sslmode=require",
        "sslmode=verify-ca",
        "sslmode=verify-full",
    ]
    .iter()
    .any(|mode| url.contains(mode))
}

fn assert_balanced_run(summary: &async_bank::Summary) {
    assert_eq!(summary.committed, 2_000, "{summary}");
    assert_eq!(summary.failed, 0, "{summary}: {:?}", summary.first_failure);
    assert_eq!(summary.total_before, 100_000, "{summary}");
    assert_eq!(summary.total_after, 100_000, "{summary}");
    assert!(summary.is_ok(), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_bank_example_commits_2000_transfers_and_keeps_the_total_also_when_run_again() {
    let db = TestDb::new("async_bank_example");
    if needs_tls(&db.url) {
        let engine = if server().is_cockroachdb() {
            "CockroachDB"
        } else {
            "PostgreSQL"
        };
        eprintln!(
            "NOT RUN on {engine}: async_example: the example connects without TLS and the \
             server's URL requires it"
        );
        return;
    }
    let first = async_bank::run(&db.url).await.expect("a first run");
    assert_balanced_run(&first);
    // Outside the example: 100 accounts, the same total.
    assert_eq!(
        db.psql("SELECT count(*), sum(balance) FROM async_bank_accounts"),
        "100|100000"
    );

    // A table left in another state: the run starts again from 100 × 1,000.
    db.psql(
        "UPDATE async_bank_accounts SET balance = 0 WHERE id = 1; \
         INSERT INTO async_bank_accounts VALUES (101, 5)",
    );
    let again = async_bank::run(&db.url).await.expect("a second run");
    assert_balanced_run(&again);
    assert_eq!(
        db.psql("SELECT count(*), sum(balance) FROM async_bank_accounts"),
        "100|100000"
    );
}

#[tokio::test]
async fn the_async_bank_example_refuses_a_database_it_cannot_reach_without_showing_the_password() {
    // Port 1: nothing listens there, so the connection is refused at once.
    let error = async_bank::run("postgresql://bank:s3cret-pw@127.0.0.1:1/bank")
        .await
        .expect_err("no server on port 1");
    let message = error.to_string();
    assert!(
        matches!(error, async_bank::BankError::Unusable(_)),
        "{message}"
    );
    assert!(message.contains("cannot connect"), "{message}");
    assert!(!message.contains("s3cret-pw"), "{message}");
}
