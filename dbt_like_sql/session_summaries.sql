{{ config(
    materialized='keyed',
    partition_by='toDate(first_seen)',
    order_by='(project_id, session_id)',
    unique_key=['project_id', 'session_id'],
    description='One row per session: traces, distinct users, first/last seen, total cost and tokens. '
                'Partitioned by the day the session starts; a refresh recomputes the sessions whose traces '
                'changed.',
    owners=['team:data-platform'],
    columns={'traces': 'traces in the session', 'users': 'distinct users of those traces',
             'first_seen': 'start of its first trace', 'last_seen': 'end of its last trace',
             'total_cost': 'cost of its traces in USD', 'total_tokens': 'tokens of its traces'},
) }}
SELECT
    project_id,
    session_id,
    count() AS traces,
    uniqExact(user_id) AS users,
    min(start_time) AS first_seen,
    max(end_time) AS last_seen,
    sum(total_cost) AS total_cost,
    sum(total_tokens) AS total_tokens
FROM {{ ref('trace_summaries') }}
WHERE session_id != '' AND {{ changed() }}
GROUP BY project_id, session_id
