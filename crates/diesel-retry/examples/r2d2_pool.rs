//! `run_transaction` on a plain r2d2 pool: a transfer between two accounts.
//! `cargo run --example r2d2_pool --features sqlite`

use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel_retry::{run_transaction, RetryPolicy};

diesel::table! { accounts (id) { id -> BigInt, balance -> BigInt, } }

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One connection: every `:memory:` connection is a database of its own.
    let manager = ConnectionManager::<SqliteConnection>::new(":memory:");
    let pool = Pool::builder().max_size(1).build(manager)?;
    diesel::sql_query("CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)")
        .execute(&mut pool.get()?)?;
    diesel::sql_query("INSERT INTO accounts VALUES (1, 1000), (2, 1000)")
        .execute(&mut pool.get()?)?;
    let moved = run_transaction(&pool, &RetryPolicy::default(), |conn| {
        diesel::update(accounts::table.find(1))
            .set(accounts::balance.eq(accounts::balance - 100))
            .execute(conn)?;
        diesel::update(accounts::table.find(2))
            .set(accounts::balance.eq(accounts::balance + 100))
            .execute(conn)
    })?;
    println!("moved 100 after {} attempt(s)", moved.attempts);
    Ok(())
}
