//! Rows of the bank's tables as Rust values.

use crate::schema::{accounts, points};
use diesel::prelude::*;

/// One row of `accounts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = accounts)]
pub struct Account {
    /// Account id.
    pub id: i64,
    /// Current balance (never negative).
    pub balance: i64,
}

/// One row of `points`.
#[derive(Debug, Clone, Copy, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = points)]
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
