//! Diesel table definitions, as `diesel print-schema` writes them for the
//! CockroachDB/PostgreSQL migration set (the SQLite set has the same shape).

diesel::table! {
    /// The bank's accounts: a client-chosen id and a non-negative balance.
    accounts (id) {
        /// Account id, chosen at random by `seed` in [0, 10^9).
        id -> BigInt,
        /// Balance in whole units; the table's CHECK keeps it non-negative.
        balance -> BigInt,
    }
}

diesel::table! {
    /// Random points written by the `points` bulk-load command.
    points (id) {
        /// Client-chosen id (a per-run slot in the high bits, the row index in the low bits).
        id -> BigInt,
        /// X coordinate in [0, 1024).
        x -> Double,
        /// Y coordinate in [0, 1024).
        y -> Double,
        /// Z coordinate in [0, 1024).
        z -> Double,
    }
}

diesel::table! {
    /// The ledger: every movement of money, under a client-chosen id.
    transfers (id) {
        /// Client-chosen id; a transfer whose commit outcome was unknown is looked up by it.
        id -> BigInt,
        /// The paying account; NULL for a deposit (an opening balance).
        source_id -> Nullable<BigInt>,
        /// The paid account.
        sink_id -> BigInt,
        /// Amount moved (never negative).
        amount -> BigInt,
        /// When the row was written (the server's clock).
        created_at -> Timestamp,
    }
}

diesel::allow_tables_to_appear_in_same_query!(accounts, points, transfers);
