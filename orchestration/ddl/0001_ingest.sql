-- Staging tables, ingest ledger and quarantine: the landing zone for raw S3 batches.
-- Staging rows keep their S3 object (source_key) so a crashed load can be undone object by object,
-- and the ledger says which objects are committed; propagation reads only committed objects.

CREATE TABLE IF NOT EXISTS {{ db }}.observations_staging {{ on_cluster }}
(
    project_id LowCardinality(String),
    trace_id String,
    id String,
    parent_observation_id String,
    type LowCardinality(String),
    name String,
    start_time Nullable(DateTime64(6, 'UTC')),
    end_time Nullable(DateTime64(6, 'UTC')),
    completion_start_time Nullable(DateTime64(6, 'UTC')),
    level LowCardinality(String),
    status_message String,
    version String,
    environment LowCardinality(String),
    input String,
    output String,
    metadata Map(String, String),
    provided_model_name String,
    model_parameters String,
    usage_details Map(String, UInt64),
    cost_details Map(String, Float64),
    total_cost Nullable(Float64),
    prompt_name String,
    prompt_version Nullable(UInt32),
    trace_name String,
    user_id String,
    session_id String,
    tags Array(String),
    release String,
    trace_metadata Map(String, String),
    public Nullable(Bool),
    is_update Bool,
    source_format LowCardinality(String),
    source_key String,
    load_id String,
    event_ts DateTime64(6, 'UTC'),
    ingested_at DateTime64(6, 'UTC') DEFAULT now64(6),
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_id id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = {{ engine('MergeTree') }}
PARTITION BY toYYYYMMDD(ingested_at)
ORDER BY (source_key, trace_id, id)
TTL toDateTime(ingested_at) + INTERVAL 14 DAY;

CREATE TABLE IF NOT EXISTS {{ db }}.traces_staging {{ on_cluster }}
(
    project_id LowCardinality(String),
    trace_id String,
    name String,
    user_id String,
    session_id String,
    tags Array(String),
    release String,
    version String,
    environment LowCardinality(String),
    public Nullable(Bool),
    bookmarked Nullable(Bool),
    metadata Map(String, String),
    input String,
    output String,
    timestamp Nullable(DateTime64(6, 'UTC')),
    source_format LowCardinality(String),
    source_key String,
    load_id String,
    event_ts DateTime64(6, 'UTC'),
    ingested_at DateTime64(6, 'UTC') DEFAULT now64(6),
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = {{ engine('MergeTree') }}
PARTITION BY toYYYYMMDD(ingested_at)
ORDER BY (source_key, trace_id)
TTL toDateTime(ingested_at) + INTERVAL 14 DAY;

CREATE TABLE IF NOT EXISTS {{ db }}.scores_staging {{ on_cluster }}
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
    source_format LowCardinality(String),
    source_key String,
    load_id String,
    event_ts DateTime64(6, 'UTC'),
    ingested_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = {{ engine('MergeTree') }}
PARTITION BY toYYYYMMDD(ingested_at)
ORDER BY (source_key, trace_id, id)
TTL toDateTime(ingested_at) + INTERVAL 14 DAY;

-- One row per state change of a raw object: started -> loaded | quarantined. The latest row wins.
CREATE TABLE IF NOT EXISTS {{ db }}.ingest_ledger {{ on_cluster }}
(
    source_key String,
    etag String,
    size UInt64,
    project_id LowCardinality(String),
    format LowCardinality(String),
    status Enum8('started' = 1, 'loaded' = 2, 'quarantined' = 3),
    observations UInt64,
    traces UInt64,
    scores UInt64,
    reason String,
    run_id String,
    load_id String,
    recorded_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = {{ engine('MergeTree') }}
ORDER BY (source_key, recorded_at);

CREATE TABLE IF NOT EXISTS {{ db }}.quarantine {{ on_cluster }}
(
    source_key String,
    etag String,
    size UInt64,
    project_id LowCardinality(String),
    format LowCardinality(String),
    reason String,
    run_id String,
    quarantined_at DateTime64(6, 'UTC')
)
ENGINE = {{ engine('MergeTree') }}
ORDER BY (quarantined_at, source_key);

-- Written in the same INSERT as the ledger row, so a quarantined object is always in both.
CREATE MATERIALIZED VIEW IF NOT EXISTS {{ db }}.quarantine_mv {{ on_cluster }} TO {{ db }}.quarantine AS
SELECT source_key, etag, size, project_id, format, reason, run_id, recorded_at AS quarantined_at
FROM {{ db }}.ingest_ledger
WHERE status = 'quarantined';
