-- Accounts created before the ledger existed get an opening deposit of their balance at the
-- time of this migration, so that the audit holds for them too. Their ids are negative
-- (-1 - account id), a range client-chosen ledger ids never use. Safe to run again: an account
-- that has an opening deposit already (this one, or seed's) gets none.
INSERT INTO transfers (id, source_id, sink_id, amount)
SELECT -1 - a.id, NULL, a.id, a.balance
FROM accounts a
WHERE NOT EXISTS (
    SELECT 1 FROM transfers t WHERE t.sink_id = a.id AND t.source_id IS NULL
);
