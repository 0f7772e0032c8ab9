DROP INDEX IF EXISTS transfers_source_id_amount_idx;
DROP INDEX IF EXISTS transfers_sink_id_amount_idx;
DROP TABLE IF EXISTS transfers;
