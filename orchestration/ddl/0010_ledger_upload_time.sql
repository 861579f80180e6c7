-- When the object version a load read was uploaded (S3 LastModified). It orders versions of one observation
-- or trace attribute whose event times tie: the later upload wins, in every run, grouping and replay (commit
-- time, the order before, depends on which objects happened to load together). Rows recorded before this
-- migration take their commit time, which is what they were ordered by until now.
ALTER TABLE {{ db }}.ingest_ledger {{ on_cluster }}
    ADD COLUMN IF NOT EXISTS uploaded_at DateTime64(6, 'UTC') DEFAULT recorded_at;
