//! Rows of the bank's tables as Rust values.

use crate::schema::{accounts, points, transfers};
use diesel::prelude::*;

/// One row of `accounts`. (Rows here give every column, so no DEFAULTs: diesel can then batch
/// them into one INSERT on SQLite and send them as COPY on PostgreSQL.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = accounts, treat_none_as_default_value = false)]
pub struct Account {
    /// Account id.
    pub id: i64,
    /// Current balance (never negative).
    pub balance: i64,
}

/// One row of `points` (every column given, as for [`Account`]).
#[derive(Debug, Clone, Copy, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = points, treat_none_as_default_value = false)]
pub struct Point {
    /// Client-chosen id.
    pub id: i64,
    /// X coordinate.
    pub x: f64,
    /// Y coordinate.
    pub y: f64,
    /// Z coordinate.
    pub z: f64,
}

/// One row of the `transfers` ledger (its `created_at` is set by the database; a `None`
/// source is written as NULL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = transfers, treat_none_as_default_value = false)]
pub struct LedgerEntry {
    /// Client-chosen id.
    pub id: i64,
    /// The paying account; `None` for a deposit.
    pub source_id: Option<i64>,
    /// The paid account.
    pub sink_id: i64,
    /// Amount moved.
    pub amount: i64,
}
