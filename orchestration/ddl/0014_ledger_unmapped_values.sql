-- A loaded object can still hold values no column could take (a usage object of an unknown shape, a
-- timestamp that does not parse): they stay in their rows' metadata (key tracehouse.unmapped) and the
-- object's ledger row counts them, with the first problem as a note, so a data engineer can find them.
ALTER TABLE {{ db }}.ingest_ledger {{ on_cluster }}
    ADD COLUMN IF NOT EXISTS unmapped UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS note String DEFAULT '';
