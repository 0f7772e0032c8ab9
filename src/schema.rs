// @generated automatically by Diesel CLI.

diesel::table! {
    /// The bank's accounts: a client-chosen id and a non-negative balance.
    accounts (id) {
        /// Account id, chosen at random by `seed` in [0, 10^9).
        id -> Int8,
        /// Balance in whole units; the table's CHECK keeps it non-negative.
        balance -> Int8,
    }
}

diesel::table! {
    /// Random points written by the `points` bulk-load command.
    points (id) {
        /// Client-chosen id (a per-run slot in the high bits, the row index in the low bits).
        id -> Int8,
        /// X coordinate in [0, 1024).
        x -> Float8,
        /// Y coordinate in [0, 1024).
        y -> Float8,
        /// Z coordinate in [0, 1024).
        z -> Float8,
    }
}

diesel::table! {
    /// The ledger: every movement of money, under a client-chosen id.
    transfers (id) {
        /// Client-chosen id; a transfer whose commit outcome was unknown is looked up by it.
        id -> Int8,
        /// The paying account; NULL for a deposit (an opening balance).
        source_id -> Nullable<Int8>,
        /// The paid account.
        sink_id -> Int8,
        /// Amount moved (never negative).
        amount -> Int8,
        /// When the row was written (the server's clock).
        created_at -> Timestamp,
    }
}

diesel::allow_tables_to_appear_in_same_query!(accounts, points, transfers,);
