-- Bookkeeping of the historic migration: when the legacy snapshot was frozen, and each part's attempts
-- (the latest verified attempt marks a part done for `tracehouse migrate`).
CREATE TABLE IF NOT EXISTS {{ db }}.migration_state {{ on_cluster }}
(
    prepared_at DateTime64(6, 'UTC') DEFAULT now64(6),
    buckets UInt32,
    source_rows UInt64
)
ENGINE = {{ engine('MergeTree') }}
ORDER BY prepared_at;

CREATE TABLE IF NOT EXISTS {{ db }}.migration_log {{ on_cluster }}
(
    part String,
    observations UInt64,
    superseded UInt64,
    verified Bool,
    seconds Float64,
    recorded_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = {{ engine('MergeTree') }}
ORDER BY (part, recorded_at);
