{{ config(
    materialized='incremental',
    partition_by='day',
    order_by='(project_id, day, model)',
    unique_key=['project_id', 'day', 'model'],
    not_null=['project_id', 'day'],
    description='Latency of generations per project, day and model: p50/p95/p99 of duration and of '
                'time to first token (completion_start_time - start_time), in milliseconds.',
    owners=['team:data-platform'],
    columns={'day': 'day the generations started (UTC)', 'model': 'model name as sent',
             'generations': 'generations that ended (end_time set)',
             'latency_p50_ms': 'median duration (end_time - start_time), ms',
             'latency_p95_ms': '95th percentile of the duration, ms',
             'latency_p99_ms': '99th percentile of the duration, ms',
             'ttft_p50_ms': 'median time to first token (completion_start_time - start_time), ms',
             'ttft_p95_ms': '95th percentile of the time to first token, ms',
             'ttft_p99_ms': '99th percentile of the time to first token, ms'},
    reconcile={'generations': "countIf(type = 'GENERATION' AND end_time IS NOT NULL)"},
) }}
SELECT
    project_id,
    toDate(start_time) AS day,
    provided_model_name AS model,
    count() AS generations,
    quantileExact(0.5)(dateDiff('millisecond', start_time, end_time)) AS latency_p50_ms,
    quantileExact(0.95)(dateDiff('millisecond', start_time, end_time)) AS latency_p95_ms,
    quantileExact(0.99)(dateDiff('millisecond', start_time, end_time)) AS latency_p99_ms,
    quantileExactIf(0.5)(dateDiff('millisecond', start_time, completion_start_time),
                         completion_start_time IS NOT NULL) AS ttft_p50_ms,
    quantileExactIf(0.95)(dateDiff('millisecond', start_time, completion_start_time),
                          completion_start_time IS NOT NULL) AS ttft_p95_ms,
    quantileExactIf(0.99)(dateDiff('millisecond', start_time, completion_start_time),
                          completion_start_time IS NOT NULL) AS ttft_p99_ms
FROM {{ source('events_core') }}
WHERE type = 'GENERATION' AND end_time IS NOT NULL AND {{ partition_filter('start_time') }}
GROUP BY project_id, day, model
