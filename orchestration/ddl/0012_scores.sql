-- Scores outlive staging (whose 14-day TTL deleted them before: nothing read scores_staging). One current
-- row per score id, kept the way events keeps observations: each propagation window (and each legacy part
-- of the migration) inserts the latest version of the scores it touches (whole score, in the version order
-- of docs/design.md: event time, upload time, key hash; a deletion as a tombstone row) and deletes the rows
-- it supersedes; readers use scores_current, which leaves out tombstones, hides a write's rows until it is
-- published and the superseded ones from then on (events_hidden, 0011).
CREATE TABLE IF NOT EXISTS {{ db }}.scores {{ on_cluster }}
(
    project_id LowCardinality(String),
    id String,
    trace_id String,
    observation_id String,
    session_id String,
    name String,
    value Nullable(Float64),
    string_value String,
    data_type LowCardinality(String),
    comment String,
    source LowCardinality(String),
    environment LowCardinality(String),
    metadata Map(String, String),
    timestamp DateTime64(6, 'UTC'),
    is_deleted Bool,
    event_ts DateTime64(6, 'UTC'),
    uploaded_at DateTime64(6, 'UTC'),
    key_hash UInt64,
    source_version DateTime64(6, 'UTC'),
    propagated_at DateTime64(6, 'UTC'),
    propagation_id String,
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_id id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = {{ engine('MergeTree') }}
PARTITION BY toYYYYMM(timestamp)
ORDER BY (project_id, toDate(timestamp), name, id);

CREATE VIEW IF NOT EXISTS {{ db }}.scores_current {{ on_cluster }} AS
SELECT * EXCEPT (is_deleted) FROM {{ db }}.scores WHERE NOT is_deleted AND ({{ visible(db, 'retired_score') }});
