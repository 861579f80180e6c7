{{ config(
    materialized='keyed',
    partition_by='toDate(start_time)',
    order_by='(project_id, start_time, trace_id)',
    unique_key=['project_id', 'trace_id'],
    description='One row per trace, observations or not: name, user, session, release, version, tags, '
                'public/bookmarked, input and output (truncated like events_core; full values in '
                'traces_current), start/end, latency, observation counts by type, errors, total cost and '
                'tokens, and its scores per name (average, last value, count, categorical values). Partitioned '
                'by the day the trace starts; a refresh recomputes the traces that changed since the last one '
                'and replaces the days they left or entered.',
    owners=['team:data-platform'],
    columns={'name': 'name of the trace', 'version': 'version of the trace',
             'environment': "the observations' environment, else the trace's, else 'default'",
             'input': "the trace's input, else its root observation's (truncated like events_core)",
             'output': "the trace's output, else its root observation's (truncated like events_core)",
             'start_time': 'start of its first observation (the trace timestamp when it has none)',
             'end_time': 'end of its last observation', 'latency_ms': 'end_time - start_time, ms',
             'observations': 'observations in the trace', 'generations': 'of them, type GENERATION',
             'spans': 'of them, type SPAN', 'events': 'of them, type EVENT', 'errors': 'of them, level ERROR',
             'total_cost': 'cost of its observations in USD',
             'total_tokens': 'tokens of its observations (total, else input + output)',
             'score_avg': 'score name → average numeric value', 'score_last': 'score name → latest value',
             'score_count': 'score name → number of scores',
             'score_categories': 'score name → categorical values given'},
    reconcile={'observations': 'count()', 'total_cost': 'sum(ifNull(total_cost, 0))'},
) }}
SELECT
    t.project_id AS project_id,
    t.trace_id AS trace_id,
    t.name AS name,
    t.user_id AS user_id,
    t.session_id AS session_id,
    if(o.environment != '', o.environment, if(t.environment != '', t.environment, 'default')) AS environment,
    t.release AS release,
    t.version AS version,
    t.tags AS tags,
    t.public = 1 AS public,
    t.bookmarked = 1 AS bookmarked,
    {{ truncate("if(t.input != '', t.input, o.root_input)") }} AS input,
    {{ truncate("if(t.output != '', t.output, o.root_output)") }} AS output,
    if(o.observations > 0, o.first_start, t.first_start) AS start_time,
    if(o.observations > 0, o.last_end, t.last_start) AS end_time,
    dateDiff('millisecond', start_time, end_time) AS latency_ms,
    o.observations AS observations,
    o.generations AS generations,
    o.spans AS spans,
    o.events AS events,
    o.errors AS errors,
    o.total_cost AS total_cost,
    o.total_tokens AS total_tokens,
    s.score_avg AS score_avg,
    s.score_last AS score_last,
    s.score_count AS score_count,
    s.score_categories AS score_categories
FROM {{ source('traces') }} AS t
LEFT JOIN (
    SELECT
        project_id,
        trace_id,
        any(environment) AS environment,
        argMinIf(input, start_time, parent_observation_id = '') AS root_input,
        argMinIf(output, start_time, parent_observation_id = '') AS root_output,
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
    WHERE {{ changed() }}
    GROUP BY project_id, trace_id
) AS o ON t.project_id = o.project_id AND t.trace_id = o.trace_id
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
        WHERE trace_id != '' AND {{ changed() }}
        GROUP BY project_id, trace_id, name
    )
    GROUP BY project_id, trace_id
) AS s ON t.project_id = s.project_id AND t.trace_id = s.trace_id
WHERE {{ changed('t') }}
