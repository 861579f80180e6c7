{{ config(
    materialized='table',
    order_by='(project_id, start_time, trace_id)',
    unique_key=['project_id', 'trace_id'],
    description='One row per trace: name, user, session, start/end, latency, observation counts by type, '
                'errors, total cost and tokens, and its scores per name (average, last value, count, '
                'categorical values). Rebuilt whole and swapped in atomically.',
    owners=['team:data-platform'],
    reconcile={'observations': 'count()', 'total_cost': 'sum(ifNull(total_cost, 0))'},
) }}
SELECT
    o.project_id AS project_id, o.trace_id AS trace_id, name, user_id, session_id, environment,
    first_start AS start_time,
    last_end AS end_time,
    dateDiff('millisecond', first_start, last_end) AS latency_ms,
    observations, generations, spans, events, errors, total_cost, total_tokens,
    s.score_avg AS score_avg, s.score_last AS score_last, s.score_count AS score_count,
    s.score_categories AS score_categories
FROM (
    SELECT
        project_id,
        trace_id,
        any(trace_name) AS name,
        any(user_id) AS user_id,
        any(session_id) AS session_id,
        any(environment) AS environment,
        min(start_time) AS first_start,
        max(ifNull(end_time, start_time)) AS last_end,
        count() AS observations,
        countIf(type = 'GENERATION') AS generations,
        countIf(type = 'SPAN') AS spans,
        countIf(type = 'EVENT') AS events,
        countIf(level = 'ERROR') AS errors,
        sum(ifNull(total_cost, 0)) AS total_cost,
        sum(if(mapContains(usage_details, 'total'), usage_details['total'],
               usage_details['input'] + usage_details['output'])) AS total_tokens
    FROM {{ source('events_core') }}
    GROUP BY project_id, trace_id
) AS o
LEFT JOIN (
    SELECT
        project_id,
        trace_id,
        mapFromArrays(groupArrayIf(name, avg_value IS NOT NULL),
                      groupArrayIf(assumeNotNull(avg_value), avg_value IS NOT NULL)) AS score_avg,
        mapFromArrays(groupArray(name), groupArray(last_value)) AS score_last,
        mapFromArrays(groupArray(name), groupArray(scores)) AS score_count,
        mapFromArrays(groupArray(name), groupArray(categories)) AS score_categories
    FROM (
        SELECT
            project_id,
            trace_id,
            name,
            avgIf(value, value IS NOT NULL) AS avg_value,
            argMax(if(string_value != '', string_value, ifNull(toString(value), '')), (timestamp, id)) AS last_value,
            count() AS scores,
            arraySort(groupUniqArrayIf(string_value, string_value != '')) AS categories
        FROM {{ source('scores') }}
        WHERE trace_id != ''
        GROUP BY project_id, trace_id, name
    )
    GROUP BY project_id, trace_id
) AS s ON o.project_id = s.project_id AND o.trace_id = s.trace_id
