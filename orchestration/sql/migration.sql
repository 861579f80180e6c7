{#- SQL of the historic migration: one frozen part of the legacy copy into events per call.
    Parameters: {part} (a part name of migration_observations), {bucket} (its partition id), {pid}.
    The frozen copies are read from `source_db`; everything is written to `db` (they differ when a replay
    migrates the parts again into its shadow database). -#}
{%- from 'propagation.sql' import fold_trace_attributes, insert_rows, touched_traces with context -%}

{#- The latest version of every row of the part, whole-row (ReplacingMergeTree semantics), no FINAL. -#}
{%- macro latest_in_part() -%}
SELECT * FROM {{ source_db }}.migration_observations
WHERE _part = {part:String}
ORDER BY event_ts DESC
LIMIT 1 BY project_id, id
{%- endmacro %}

{%- macro insert_part_keys() -%}
INSERT INTO {{ db }}.propagation_keys (propagation_id, kind, project_id, trace_id, id, versions)
SELECT {pid:String}, 'observation', project_id, trace_id, id, 1
FROM ({{ latest_in_part() }}) WHERE is_deleted = 0
UNION ALL
SELECT DISTINCT {pid:String}, 'trace', project_id, trace_id, '', 0
FROM {{ source_db }}.migration_observations WHERE _part = {part:String}
{%- endmacro %}

{#- The legacy traces of the part (latest version each) folded into trace_attributes_ranked, ranked by
    their event_ts: live attributes that are newer keep winning. -#}
{%- macro insert_trace_attributes() -%}
{%- set source -%}
SELECT project_id, id AS trace_id, name, ifNull(user_id, '') AS user_id, ifNull(session_id, '') AS session_id,
       tags, ifNull(release, '') AS release, ifNull(version, '') AS version, toString(environment) AS environment,
       metadata, toInt8(public) AS public, toInt8(bookmarked) AS bookmarked,
       ifNull(input, '') AS input, ifNull(output, '') AS output,
       CAST(timestamp AS DateTime64(6, 'UTC')) AS first_start, CAST(timestamp AS DateTime64(6, 'UTC')) AS last_start,
       CAST(event_ts AS DateTime64(6, 'UTC')) AS event_ts, CAST(event_ts AS DateTime64(6, 'UTC')) AS committed_at,
       CAST(event_ts AS DateTime64(6, 'UTC')) AS uploaded_at, '' AS source_key
FROM {{ source_db }}.migration_traces
WHERE _partition_id = {bucket:String} AND (project_id, id) IN ({{ touched_traces() }}) AND id != ''
ORDER BY event_ts DESC
LIMIT 1 BY project_id, id
{%- endset -%}
{{ fold_trace_attributes(source) }}
{%- endmacro %}

{#- The part's rows as merged rows for insert_rows; source_version is the legacy event_ts, so a row the live
    path wrote (committed later) stays the current one. -#}
{%- macro insert_part() -%}
{%- set merged -%}
SELECT project_id, id, trace_id AS trace_id_merged,
    ifNull(parent_observation_id, '') AS parent_observation_id_merged, type AS type_merged, name AS name_merged,
    CAST(start_time AS DateTime64(6, 'UTC')) AS start_time_merged,
    CAST(end_time AS Nullable(DateTime64(6, 'UTC'))) AS end_time_merged,
    CAST(completion_start_time AS Nullable(DateTime64(6, 'UTC'))) AS completion_start_time_merged,
    level AS level_merged, ifNull(status_message, '') AS status_message_merged, ifNull(version, '') AS version_merged,
    toString(environment) AS environment_merged, ifNull(input, '') AS input_merged, ifNull(output, '') AS output_merged,
    metadata AS metadata_merged, ifNull(provided_model_name, '') AS provided_model_name_merged,
    ifNull(model_parameters, '') AS model_parameters_merged, usage_details AS usage_details_merged,
    cost_details AS cost_details_merged, total_cost AS total_cost_merged, ifNull(prompt_name, '') AS prompt_name_merged,
    CAST(prompt_version AS Nullable(UInt32)) AS prompt_version_merged,
    CAST(event_ts AS DateTime64(6, 'UTC')) AS first_event_ts, CAST(event_ts AS DateTime64(6, 'UTC')) AS last_event_ts,
    CAST(event_ts AS DateTime64(6, 'UTC')) AS committed_max
FROM ({{ latest_in_part() }})
WHERE is_deleted = 0
{%- endset -%}
{{ insert_rows(merged, source_version='m.committed_max') }}
{%- endmacro %}

{#- Verification of a part: ids missing from events, extra rows, and trace attributes lost on the way. -#}
{%- macro verify_part() -%}
SELECT
    (SELECT count() FROM {{ db }}.propagation_keys
     WHERE propagation_id = {pid:String} AND kind = 'observation'
       AND (project_id, id) NOT IN (SELECT project_id, id FROM {{ db }}.events
                                    WHERE start_time >= {lookup_from:DateTime64(6, 'UTC')})) AS missing,
    (SELECT count() - uniqExact(project_id, id) FROM {{ db }}.events
     WHERE start_time >= {lookup_from:DateTime64(6, 'UTC')}
       AND (project_id, id) IN (SELECT project_id, id FROM {{ db }}.propagation_keys
                                WHERE propagation_id = {pid:String} AND kind = 'observation')) AS duplicates,
    (SELECT count() FROM {{ db }}.events AS e
     INNER JOIN (SELECT project_id, id, ifNull(user_id, '') AS user_id, ifNull(session_id, '') AS session_id
                 FROM {{ source_db }}.migration_traces WHERE _partition_id = {bucket:String}
                 ORDER BY event_ts DESC LIMIT 1 BY project_id, id) AS t
        ON e.project_id = t.project_id AND e.trace_id = t.id
     WHERE e.start_time >= {lookup_from:DateTime64(6, 'UTC')}
       AND (e.project_id, e.id) IN (SELECT project_id, id FROM {{ db }}.propagation_keys
                                    WHERE propagation_id = {pid:String} AND kind = 'observation')
       AND ((t.user_id != '' AND e.user_id = '') OR (t.session_id != '' AND e.session_id = ''))) AS attributes_lost,
    (SELECT count() FROM (SELECT project_id, id, is_deleted FROM {{ source_db }}.migration_scores
                          WHERE _partition_id = {bucket:String} ORDER BY event_ts DESC LIMIT 1 BY project_id, id)
     WHERE is_deleted = 0
       AND (project_id, id) NOT IN (SELECT project_id, id FROM {{ db }}.scores WHERE NOT is_deleted)) AS scores_missing
{%- endmacro %}
