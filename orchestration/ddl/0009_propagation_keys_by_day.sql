-- propagation_keys is scratch: every statement of a propagation reads it by its own propagation_id. Each
-- propagation deleted its rows at the end, a lightweight delete (a mutation) that queued behind background
-- merges on a busy server (0.2-0.7 s per window at 10M rows of history). Partitioned by day, whole days
-- expire by TTL as parts are dropped, and nothing is deleted row by row. Its rows are only useful to the
-- propagation that wrote them, so the table is re-created empty.
DROP TABLE IF EXISTS {{ db }}.propagation_keys {{ on_cluster }} SYNC;

CREATE TABLE IF NOT EXISTS {{ db }}.propagation_keys {{ on_cluster }}
(
    propagation_id String,
    kind Enum8('observation' = 1, 'trace' = 2, 'repair' = 3, 'existing' = 4),
    project_id LowCardinality(String),
    trace_id String,
    id String,
    versions UInt32 DEFAULT 0,
    created_at DateTime DEFAULT now()
)
ENGINE = {{ engine('MergeTree') }}
PARTITION BY toDate(created_at)
ORDER BY (propagation_id, kind, project_id, id)
TTL created_at + INTERVAL 1 DAY
SETTINGS ttl_only_drop_parts = 1;
