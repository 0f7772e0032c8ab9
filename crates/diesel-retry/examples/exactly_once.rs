//! `run_transaction_exactly_once`: the work writes under an id chosen before the transaction,
//! and the probe looks that id up when a commit's outcome is unknown.
//! `cargo run --example exactly_once --features sqlite`

use diesel::prelude::*;
use diesel_retry::{run_transaction_exactly_once, RetryPolicy};

diesel::table! { transfers (id) { id -> Text, amount -> BigInt, } }

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = SqliteConnection::establish(":memory:")?;
    diesel::sql_query("CREATE TABLE transfers (id TEXT PRIMARY KEY, amount BIGINT NOT NULL)")
        .execute(&mut conn)?;
    let id = format!("transfer-{}", std::process::id()); // the client-chosen id
    let committed = run_transaction_exactly_once(
        &mut conn,
        &RetryPolicy::default(),
        |conn| {
            diesel::insert_into(transfers::table)
                .values((transfers::id.eq(&id), transfers::amount.eq(100)))
                .execute(conn)?;
            Ok::<_, diesel::result::Error>(100)
        },
        |conn| {
            transfers::table
                .find(&id)
                .select(transfers::amount)
                .first::<i64>(conn)
                .optional()
        },
    )?;
    println!("{id}: {} committed exactly once", committed.value);
    Ok(())
}
