{#- SQL of scores (orchestration/scores.py renders each macro as one statement): the scores a propagation
    window touches, or those of one frozen legacy part. Parameters: {pid} (this write's own propagation id);
    for a window {lo}, {hi} and {horizon} (versions committed before it are merged); for a legacy part
    {bucket} (its partition id). `keys` arguments are subqueries of (project_id, id). -#}
{%- from 'propagation.sql' import committed, committed_before_horizon, publish_and_retire with context -%}

{%- macro window_keys() -%}
SELECT DISTINCT project_id, id FROM {{ db }}.scores_staging
WHERE (source_key, load_id) IN (SELECT source_key, load_id FROM ({{ committed() }}))
{%- endmacro %}

{%- macro part_keys() -%}
SELECT DISTINCT project_id, id FROM {{ source_db }}.migration_scores WHERE _partition_id = {bucket:String}
{%- endmacro %}

{%- macro count_keys(keys) -%}
SELECT count() FROM ({{ keys }})
{%- endmacro %}

{#- Versions of the window's scores committed before the horizon, with their place in the version order. -#}
{%- macro staging_versions() -%}
SELECT s.project_id AS project_id, s.id AS id, s.trace_id AS trace_id, s.observation_id AS observation_id,
       s.session_id AS session_id, s.name AS name, s.value AS value, s.string_value AS string_value,
       toString(s.data_type) AS data_type, s.comment AS comment, toString(s.source) AS source,
       toString(s.environment) AS environment, s.metadata AS metadata, s.timestamp AS timestamp,
       false AS is_deleted, s.event_ts AS event_ts, c.uploaded_at AS uploaded_at,
       cityHash64(s.source_key) AS key_hash, c.committed_at AS committed_at, 1 AS priority
FROM {{ db }}.scores_staging AS s
INNER JOIN ({{ committed_before_horizon() }}) AS c ON s.source_key = c.source_key AND s.load_id = c.load_id
WHERE (s.project_id, s.id) IN ({{ window_keys() }})
{%- endmacro %}

{#- Every version of a legacy part's scores (deletions included), ranked by their legacy event time: a score
    the live path wrote (committed later) stays current. V3 scores carry no data type: a string value makes a
    categorical score. -#}
{%- macro legacy_versions() -%}
SELECT project_id, id, trace_id, ifNull(observation_id, '') AS observation_id, '' AS session_id, name,
       if(string_value IS NULL, value, NULL) AS value, ifNull(string_value, '') AS string_value,
       if(string_value IS NULL, 'NUMERIC', 'CATEGORICAL') AS data_type, ifNull(comment, '') AS comment,
       source, 'default' AS environment, map() AS metadata, CAST(timestamp AS DateTime64(6, 'UTC')) AS timestamp,
       is_deleted = 1 AS is_deleted, CAST(event_ts AS DateTime64(6, 'UTC')) AS event_ts,
       CAST(event_ts AS DateTime64(6, 'UTC')) AS uploaded_at, toUInt64(0) AS key_hash,
       CAST(event_ts AS DateTime64(6, 'UTC')) AS committed_at, 1 AS priority
FROM {{ source_db }}.migration_scores WHERE _partition_id = {bucket:String}
{%- endmacro %}

{#- The latest version of every touched score, whole (a deletion is kept as a tombstone row that
    scores_current leaves out): `versions` and the current row (which keeps the order key of the version it
    holds), by event time, upload time, key hash, then the content. -#}
{%- macro insert_latest(versions, keys) -%}
INSERT INTO {{ db }}.scores
SELECT project_id, id, trace_id, observation_id, session_id, name, value, string_value, data_type, comment,
       source, environment, metadata, timestamp, is_deleted, event_ts, uploaded_at, key_hash,
       max(committed_at) OVER (PARTITION BY project_id, id), now64(6), {pid:String}
FROM (
    {{ versions }}
    UNION ALL
    SELECT project_id, id, trace_id, observation_id, session_id, name, value, string_value,
           toString(data_type), comment, toString(source), toString(environment), metadata, timestamp,
           is_deleted, event_ts, uploaded_at, key_hash, source_version, 0
    FROM {{ db }}.scores WHERE (project_id, id) IN ({{ keys }})
)
ORDER BY event_ts DESC, uploaded_at DESC, key_hash DESC, priority DESC,
         cityHash64(name, value, string_value, comment, trace_id, observation_id, is_deleted) DESC
LIMIT 1 BY project_id, id
{%- endmacro %}

{#- Rows of the touched scores that are not the current one (greatest source_version, propagated_at,
    propagation_id), as events does it. -#}
{%- macro superseded(keys) -%}
SELECT project_id, id, propagation_id FROM {{ db }}.scores
WHERE (project_id, id) IN ({{ keys }})
  AND (project_id, id, propagation_id) NOT IN (
      SELECT project_id, id, argMax(propagation_id, (source_version, propagated_at, propagation_id))
      FROM {{ db }}.scores WHERE (project_id, id) IN ({{ keys }})
      GROUP BY project_id, id)
{%- endmacro %}

{%- macro publish(keys) -%}
{{ publish_and_retire('retired_score', superseded(keys)) }}
{%- endmacro %}

{#- change_log: the (project, trace, session, day) of every row of the touched scores — the rows just written
    and, before they are deleted, the rows they supersede. -#}
{%- macro record_changes(keys) -%}
INSERT INTO {{ db }}.change_log (source, writer_id, project_id, trace_id, session_id, day)
SELECT DISTINCT 'scores', {pid:String}, project_id, trace_id, session_id, toDate(timestamp)
FROM {{ db }}.scores WHERE (project_id, id) IN ({{ keys }})
{%- endmacro %}
