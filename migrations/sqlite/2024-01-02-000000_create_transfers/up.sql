-- The ledger: every movement of money, with a client-chosen id so that a transfer whose commit
-- outcome was unknown can be looked up. A deposit (an opening balance) has no source.
CREATE TABLE IF NOT EXISTS transfers (
    id INTEGER PRIMARY KEY NOT NULL,
    source_id BIGINT NULL,
    sink_id BIGINT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount >= 0),
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- The audit sums the ledger per account, as sink and as source: covering indexes let it read
-- only (account, amount) pairs.
CREATE INDEX IF NOT EXISTS transfers_sink_id_amount_idx ON transfers (sink_id, amount);
CREATE INDEX IF NOT EXISTS transfers_source_id_amount_idx ON transfers (source_id, amount);
