-- The wide, immutable events table (one row per observation, trace attributes on it), its truncated copy
-- events_core fed by a materialized view, and the state propagation keeps (watermark log, trace attributes).

-- Commit time of a load is the ledger's recorded_at: propagation windows filter on it.
ALTER TABLE {{ db }}.ingest_ledger {{ on_cluster }}
    ADD INDEX IF NOT EXISTS idx_recorded_at recorded_at TYPE minmax GRANULARITY 1;

{#- events and events_core share their columns; events keeps the big fields compressed harder, events_core
    adds the truncation flags. -#}
{% macro event_columns(core) -%}
    project_id LowCardinality(String),
    trace_id String,
    id String,
    parent_observation_id String,
    type LowCardinality(String),
    name String,
    start_time DateTime64(6, 'UTC'),
    end_time Nullable(DateTime64(6, 'UTC')),
    completion_start_time Nullable(DateTime64(6, 'UTC')),
    level LowCardinality(String),
    status_message String,
    version String,
    environment LowCardinality(String),
{%- set big = '' if core else ' CODEC(ZSTD(3))' %}
    input String{{ big }},
    output String{{ big }},
    metadata Map(String, String){{ big }},
{%- if core %}
    input_truncated Bool,
    output_truncated Bool,
    metadata_truncated Bool,
{%- endif %}
    provided_model_name LowCardinality(String),
    model_parameters String,
    usage_details Map(String, UInt64),
    cost_details Map(String, Float64),
    total_cost Nullable(Float64),
    prompt_name String,
    prompt_version Nullable(UInt32),
    -- trace attributes, denormalised: the latest non-empty value known when the row was written
    trace_name String,
    user_id String,
    session_id String,
    tags Array(String),
    release String,
    trace_version String,
    trace_metadata Map(String, String){{ big }},
    public Bool,
    bookmarked Bool,
    -- bookkeeping: the current row of an observation has the greatest (source_version, propagated_at, propagation_id)
    event_ts DateTime64(6, 'UTC'),
    source_version DateTime64(6, 'UTC'),
    propagated_at DateTime64(6, 'UTC'),
    propagation_id String,
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_id id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_user_id user_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_session_id session_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_tags tags TYPE bloom_filter(0.01) GRANULARITY 1
{%- endmacro %}

CREATE TABLE IF NOT EXISTS {{ db }}.events {{ on_cluster }}
(
{{ event_columns(false) }}
)
ENGINE = {{ engine('MergeTree') }}
PARTITION BY toYYYYMM(start_time)
ORDER BY (project_id, toDate(start_time), trace_id, start_time, id)
SETTINGS index_granularity_bytes = 67108864;

CREATE TABLE IF NOT EXISTS {{ db }}.events_core {{ on_cluster }}
(
{{ event_columns(true) }}
)
ENGINE = {{ engine('MergeTree') }}
PARTITION BY toYYYYMM(start_time)
ORDER BY (project_id, toDate(start_time), trace_id, start_time, id);

-- Truncation is fixed when the view is created (TRACEHOUSE_CORE_TRUNCATE_CHARS); changing it is a replay.
-- The flags read e.input etc.: unqualified names would resolve to the truncated aliases.
CREATE MATERIALIZED VIEW IF NOT EXISTS {{ db }}.events_core_mv {{ on_cluster }} TO {{ db }}.events_core AS
SELECT
    * EXCEPT (input, output, metadata),
    leftUTF8(input, {{ core_truncate_chars }}) AS input,
    leftUTF8(output, {{ core_truncate_chars }}) AS output,
    mapApply((k, v) -> (k, leftUTF8(v, {{ core_truncate_chars }})), metadata) AS metadata,
    lengthUTF8(e.input) > {{ core_truncate_chars }} AS input_truncated,
    lengthUTF8(e.output) > {{ core_truncate_chars }} AS output_truncated,
    arrayExists(v -> lengthUTF8(v) > {{ core_truncate_chars }}, mapValues(e.metadata)) AS metadata_truncated
FROM {{ db }}.events AS e;

-- Latest non-empty trace attributes per trace. Each field is argMax over (event_ts, committed_at) with
-- empty values ranked at epoch, so they only win when nothing else is known. Re-inserting the same
-- window is harmless: the maximum does not change.
CREATE TABLE IF NOT EXISTS {{ db }}.trace_attributes {{ on_cluster }}
(
    project_id LowCardinality(String),
    trace_id String,
{%- for name, type in trace_fields %}
    {{ name }} AggregateFunction(argMax, {{ type }}, Tuple(DateTime64(6, 'UTC'), DateTime64(6, 'UTC'))),
{%- endfor %}
    first_start SimpleAggregateFunction(min, DateTime64(6, 'UTC')),
    last_start SimpleAggregateFunction(max, DateTime64(6, 'UTC')),
    updated_at SimpleAggregateFunction(max, DateTime64(6, 'UTC'))
)
ENGINE = {{ engine('AggregatingMergeTree') }}
ORDER BY (project_id, trace_id);

-- One row per propagation window state change; the watermark is the end of the latest 'done' window.
CREATE TABLE IF NOT EXISTS {{ db }}.propagation_log {{ on_cluster }}
(
    window_start DateTime64(6, 'UTC'),
    window_end DateTime64(6, 'UTC'),
    status Enum8('started' = 1, 'done' = 2),
    propagation_id String,
    observations UInt64,
    repaired UInt64,
    replaced UInt64,
    run_id String,
    recorded_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = {{ engine('MergeTree') }}
ORDER BY (window_end, recorded_at);

-- Scratch: the observation keys one propagation touches (so every statement of it sees the same set).
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
ORDER BY (propagation_id, kind, project_id, id)
TTL created_at + INTERVAL 1 DAY;

{% if cluster -%}
-- Cluster mode: reads go through Distributed tables over the replicated local ones (shard by project).
CREATE TABLE IF NOT EXISTS {{ db }}.events_distributed {{ on_cluster }} AS {{ db }}.events
ENGINE = Distributed({{ cluster }}, {{ db }}, events, cityHash64(project_id));

CREATE TABLE IF NOT EXISTS {{ db }}.events_core_distributed {{ on_cluster }} AS {{ db }}.events_core
ENGINE = Distributed({{ cluster }}, {{ db }}, events_core, cityHash64(project_id));
{%- endif %}
