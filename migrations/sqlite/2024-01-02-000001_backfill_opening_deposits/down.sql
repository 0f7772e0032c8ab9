DELETE FROM transfers WHERE id < 0 AND source_id IS NULL;
