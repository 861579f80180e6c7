{#- SQL of the scores of one propagation window (orchestration/scores.py renders each macro as one
    statement). Parameters: {lo}, {hi} (the window), {horizon} (versions committed before it are merged),
    {pid} (this write's own propagation id). -#}
{%- from 'propagation.sql' import committed, publish_and_retire with context -%}

{%- macro window_keys() -%}
SELECT DISTINCT project_id, id FROM {{ db }}.scores_staging
WHERE (source_key, load_id) IN (SELECT source_key, load_id FROM ({{ committed() }}))
{%- endmacro %}

{%- macro count_keys() -%}
SELECT count() FROM ({{ window_keys() }})
{%- endmacro %}

{#- The latest version of every touched score, whole: staging versions committed before the horizon and the
    current row (which keeps the order key of the version it holds), by event time, upload time, key hash. -#}
{%- macro insert_latest() -%}
INSERT INTO {{ db }}.scores
SELECT project_id, id, trace_id, observation_id, session_id, name, value, string_value, data_type, comment,
       source, environment, metadata, timestamp, event_ts, uploaded_at, key_hash,
       max(committed_at) OVER (PARTITION BY project_id, id), now64(6), {pid:String}
FROM (
    SELECT s.project_id AS project_id, s.id AS id, s.trace_id AS trace_id, s.observation_id AS observation_id,
           s.session_id AS session_id, s.name AS name, s.value AS value, s.string_value AS string_value,
           toString(s.data_type) AS data_type, s.comment AS comment, toString(s.source) AS source,
           toString(s.environment) AS environment, s.metadata AS metadata, s.timestamp AS timestamp,
           s.event_ts AS event_ts, c.uploaded_at AS uploaded_at, cityHash64(s.source_key) AS key_hash,
           c.committed_at AS committed_at, 1 AS priority
    FROM {{ db }}.scores_staging AS s
    INNER JOIN (
        SELECT source_key, load_id, recorded_at AS committed_at, uploaded_at FROM {{ db }}.ingest_ledger
        WHERE status = 'loaded' AND recorded_at < {horizon:DateTime64(6, 'UTC')}
    ) AS c ON s.source_key = c.source_key AND s.load_id = c.load_id
    WHERE (s.project_id, s.id) IN ({{ window_keys() }})
    UNION ALL
    SELECT project_id, id, trace_id, observation_id, session_id, name, value, string_value,
           toString(data_type), comment, toString(source), toString(environment), metadata, timestamp,
           event_ts, uploaded_at, key_hash, source_version, 0
    FROM {{ db }}.scores WHERE (project_id, id) IN ({{ window_keys() }})
)
ORDER BY event_ts DESC, uploaded_at DESC, key_hash DESC, priority DESC,
         cityHash64(name, value, string_value, comment, trace_id, observation_id) DESC
LIMIT 1 BY project_id, id
{%- endmacro %}

{#- Rows of the touched scores that are not the current one (greatest source_version, propagated_at,
    propagation_id), as events does it. -#}
{%- macro superseded() -%}
SELECT project_id, id, propagation_id FROM {{ db }}.scores
WHERE (project_id, id) IN ({{ window_keys() }})
  AND (project_id, id, propagation_id) NOT IN (
      SELECT project_id, id, argMax(propagation_id, (source_version, propagated_at, propagation_id))
      FROM {{ db }}.scores WHERE (project_id, id) IN ({{ window_keys() }})
      GROUP BY project_id, id)
{%- endmacro %}

{%- macro publish() -%}
{{ publish_and_retire('retired_score', superseded()) }}
{%- endmacro %}
