//! The async `run_transaction` (diesel-retry's `asynchronous` module, on diesel-async's
//! `AsyncPgConnection`) against the suite's real PostgreSQL: on a `&mut` connection, a bb8
//! pool and a deadpool pool; conflicts retried; the CockroachDB protocol through the flavour
//! given; and what a dropped future leaves behind.

use crate::support::{server, TestDb};
use diesel::prelude::*;
use diesel_async::pooled_connection::{bb8, deadpool, AsyncDieselConnectionManager};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use diesel_retry::asynchronous::run_transaction;
use diesel_retry::{Flavor, Flavored, RetryPolicy};

diesel::table! {
    wallets (id) {
        id -> BigInt,
        cents -> BigInt,
    }
}

/// A fresh database holding `wallets` 1 and 2 with 1,000 cents each.
fn wallets_db(test: &str) -> TestDb {
    let _ = server();
    let db = TestDb::new(test);
    db.psql("CREATE TABLE wallets (id INT8 PRIMARY KEY, cents INT8 NOT NULL); INSERT INTO wallets VALUES (1, 1000), (2, 1000)");
    db
}

/// Moves `cents` from wallet 1 to wallet 2.
async fn pay(conn: &mut AsyncPgConnection, cents: i64) -> QueryResult<usize> {
    diesel::update(wallets::table.find(1))
        .set(wallets::cents.eq(wallets::cents - cents))
        .execute(conn)
        .await?;
    diesel::update(wallets::table.find(2))
        .set(wallets::cents.eq(wallets::cents + cents))
        .execute(conn)
        .await
}

fn cents(db: &TestDb) -> String {
    db.psql("SELECT string_agg(cents::text, ',' ORDER BY id) FROM wallets")
}

#[tokio::test]
async fn commits_on_a_connection_a_bb8_pool_and_a_deadpool_pool() {
    let db = wallets_db("async_commits");
    let policy = RetryPolicy::default();
    let mut conn = AsyncPgConnection::establish(&db.url).await.unwrap();
    let done = run_transaction(&mut conn, &policy, async |conn| pay(conn, 1).await)
        .await
        .unwrap();
    assert_eq!(done.attempts, 1);

    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(&db.url);
    let pool = bb8::Pool::builder()
        .max_size(2)
        .build(manager)
        .await
        .unwrap();
    let bank = Flavored::detect_async(&pool).await.unwrap();
    run_transaction(bank, &policy, async |conn| pay(conn, 10).await)
        .await
        .unwrap();

    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(&db.url);
    let pool = deadpool::Pool::builder(manager)
        .max_size(2)
        .build()
        .unwrap();
    let bank = Flavored::new(&pool, Flavor::CockroachDb);
    run_transaction(bank, &policy, async |conn| pay(conn, 100).await)
        .await
        .unwrap();
    assert_eq!(cents(&db), "889,1111");
}

#[tokio::test]
async fn a_transaction_runs_in_a_task_of_its_own_on_a_connection_and_on_borrowed_pools() {
    let db = wallets_db("async_spawned");
    let url = db.url.clone();
    let on_connection = tokio::spawn(async move {
        let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
        run_transaction(&mut conn, &RetryPolicy::default(), async |conn| {
            pay(conn, 1).await
        })
        .await
    });
    on_connection.await.unwrap().unwrap();
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(&db.url);
    let pool = bb8::Pool::builder()
        .max_size(2)
        .build(manager)
        .await
        .unwrap();
    let on_bb8 = tokio::spawn(async move {
        run_transaction(&pool, &RetryPolicy::default(), async |conn| {
            pay(conn, 10).await
        })
        .await
    });
    on_bb8.await.unwrap().unwrap();
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(&db.url);
    let pool = deadpool::Pool::builder(manager)
        .max_size(2)
        .build()
        .unwrap();
    let on_deadpool = tokio::spawn(async move {
        let bank = Flavored::new(&pool, Flavor::CockroachDb);
        run_transaction(bank, &RetryPolicy::default(), async |conn| {
            pay(conn, 100).await
        })
        .await
    });
    on_deadpool.await.unwrap().unwrap();
    assert_eq!(cents(&db), "889,1111");
}
