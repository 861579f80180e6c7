-- Latest non-empty trace attributes, v2. 0002's trace_attributes kept argMax *states*; writing and merging
-- them was the largest cost of a propagation window (17 s of 41 s for 1M observations, bench/README.md).
-- Each field is now a plain (rank, value) tuple kept by max(): rank = (event_ts, commit time, hash of the
-- value) packed into a UInt256, 0 for an empty value, so the greatest rank is the latest non-empty value
-- and ties between different values break the same way before and after a merge.
CREATE TABLE IF NOT EXISTS {{ db }}.trace_attributes_ranked {{ on_cluster }}
(
    project_id LowCardinality(String),
    trace_id String,
{%- for name, type, is_set in trace_fields_set %}
    {{ name }} SimpleAggregateFunction(max, Tuple(rank UInt256, value {{ type }})),
{%- endfor %}
    first_start SimpleAggregateFunction(min, DateTime64(6, 'UTC')),
    last_start SimpleAggregateFunction(max, DateTime64(6, 'UTC')),
    updated_at SimpleAggregateFunction(max, DateTime64(6, 'UTC'))
)
ENGINE = {{ engine('AggregatingMergeTree') }}
ORDER BY (project_id, trace_id);

-- Carry over what 0002's table knows. Its states do not expose their rank, so a carried value ranks as
-- known at the trace's last commit (updated_at). Re-running this insert is harmless: max() of the same
-- tuples. 0006 drops the old table, so a crash before the bookkeeping row re-runs this file safely.
INSERT INTO {{ db }}.trace_attributes_ranked
SELECT project_id, trace_id,
{%- for name, type, is_set in trace_fields_set %}
    ({{ rank(name, is_set, 'updated_at', 'updated_at', "''") }}, {{ name }}),
{%- endfor %}
    first_start, last_start, updated_at
FROM (
    SELECT project_id, trace_id,
{%- for name, type, is_set in trace_fields_set %}
        argMaxMerge({{ name }}) AS {{ name }},
{%- endfor %}
        min(first_start) AS first_start, max(last_start) AS last_start, max(updated_at) AS updated_at
    FROM {{ db }}.trace_attributes
    GROUP BY project_id, trace_id
);
