-- The tables' documentation, kept in the database: `diesel print-schema` (diesel.toml's
-- `with_docs`) turns these comments into the doc comments of src/schema.rs, so the committed
-- file is exactly what `diesel migration run` regenerates. Setting a comment again is harmless.
-- CockroachDB has COMMENT ON TABLE and COMMENT ON COLUMN (cockroachdb/docs,
-- src/current/v25.1/comment-on.md; a schema change there, hence no transaction, as above).
-- On PostgreSQL only a table's owner may comment on it.
COMMENT ON TABLE accounts IS 'The bank''s accounts: a client-chosen id and a non-negative balance.';
COMMENT ON COLUMN accounts.id IS 'Account id, chosen at random by `seed` in [0, 10^9).';
COMMENT ON COLUMN accounts.balance IS 'Balance in whole units; the table''s CHECK keeps it non-negative.';

COMMENT ON TABLE points IS 'Random points written by the `points` bulk-load command.';
COMMENT ON COLUMN points.id IS 'Client-chosen id (a per-run slot in the high bits, the row index in the low bits).';
COMMENT ON COLUMN points.x IS 'X coordinate in [0, 1024).';
COMMENT ON COLUMN points.y IS 'Y coordinate in [0, 1024).';
COMMENT ON COLUMN points.z IS 'Z coordinate in [0, 1024).';

COMMENT ON TABLE transfers IS 'The ledger: every movement of money, under a client-chosen id.';
COMMENT ON COLUMN transfers.id IS 'Client-chosen id; a transfer whose commit outcome was unknown is looked up by it.';
COMMENT ON COLUMN transfers.source_id IS 'The paying account; NULL for a deposit (an opening balance).';
COMMENT ON COLUMN transfers.sink_id IS 'The paid account.';
COMMENT ON COLUMN transfers.amount IS 'Amount moved (never negative).';
COMMENT ON COLUMN transfers.created_at IS 'When the row was written (the server''s clock).';
