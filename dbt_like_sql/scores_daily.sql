{{ config(
    materialized='incremental',
    partition_by='day',
    order_by='(project_id, day, name, source, data_type)',
    unique_key=['project_id', 'day', 'name', 'source', 'data_type'],
    not_null=['project_id', 'day', 'name'],
    description='Scores per project, day (of the score timestamp), score name, source and data type: count; '
                'average, p50 and p90 of numeric and boolean values; value counts of categorical ones.',
    owners=['team:data-platform'],
    columns={'day': 'day of the score timestamp (UTC)', 'name': 'name of the score',
             'scores': 'current scores of that name, source and type', 'avg_value': 'average numeric value',
             'p50_value': 'median numeric value', 'p90_value': '90th percentile of the numeric value',
             'category_counts': 'categorical value → how many scores have it'},
) }}
SELECT
    project_id,
    toDate(timestamp) AS day,
    name,
    source,
    data_type,
    count() AS scores,
    avgIf(value, value IS NOT NULL) AS avg_value,
    quantileExactIf(0.5)(value, value IS NOT NULL) AS p50_value,
    quantileExactIf(0.9)(value, value IS NOT NULL) AS p90_value,
    sumMapIf(map(string_value, toUInt64(1)), string_value != '') AS category_counts
FROM {{ source('scores') }}
WHERE {{ partition_filter('timestamp') }}
GROUP BY project_id, day, name, source, data_type
