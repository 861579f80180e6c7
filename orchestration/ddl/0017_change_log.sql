-- What every write changed, so derived tables can refresh only that (dbt_like_sql: materialized='keyed',
-- and the changed days of incremental models). A propagation window, a migrated legacy part and a keyed
-- model's refresh append one row per (project, trace, session, day) of the rows they wrote *and* of the
-- rows they superseded (an update can move an observation to another day, a trace to another session),
-- after their rows are visible to readers; a crash before that is retried by a write that records the same.
-- `source` is events, scores, traces (trace attributes) or the keyed model that refreshed. Whole days expire
-- by TTL: a model last built before the oldest kept day is rebuilt whole (orchestration/models.py).
CREATE TABLE IF NOT EXISTS {{ db }}.change_log {{ on_cluster }}
(
    source LowCardinality(String),
    writer_id String,
    project_id LowCardinality(String),
    trace_id String,
    session_id String,
    day Date,
    recorded_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = {{ engine('MergeTree') }}
PARTITION BY toDate(recorded_at)
ORDER BY (source, recorded_at)
TTL toDateTime(recorded_at) + INTERVAL {{ change_log_days }} DAY
SETTINGS ttl_only_drop_parts = 1;

-- One row per model build: what it covered (changes recorded up to built_through), whether it was whole,
-- and the model's code version. The latest row of a model decides how its next build runs.
CREATE TABLE IF NOT EXISTS {{ db }}.model_builds {{ on_cluster }}
(
    model LowCardinality(String),
    build_id String,
    code_version String,
    full Bool,
    built_through DateTime64(6, 'UTC'),
    changed_keys UInt64,
    partitions UInt64,
    rows UInt64,
    built_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = {{ engine('MergeTree') }}
ORDER BY (model, built_at);
