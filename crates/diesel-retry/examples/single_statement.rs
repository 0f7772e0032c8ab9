//! `run_single_statement`: one statement as its own implicit transaction, one round trip.
//! `cargo run --example single_statement --features sqlite`

use diesel::prelude::*;
use diesel_retry::{run_single_statement, RetryPolicy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = SqliteConnection::establish(":memory:")?;
    diesel::sql_query("CREATE TABLE counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)")
        .execute(&mut conn)?;
    diesel::sql_query("INSERT INTO counters VALUES (1, 0)").execute(&mut conn)?;
    let updated = run_single_statement(&mut conn, &RetryPolicy::default(), |conn| {
        diesel::sql_query("UPDATE counters SET n = n + 1 WHERE id = 1").execute(conn)
    })?;
    println!(
        "{} row(s) updated in {} attempt(s)",
        updated.value, updated.attempts
    );
    Ok(())
}
