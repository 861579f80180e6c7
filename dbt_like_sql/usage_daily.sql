{{ config(
    materialized='incremental',
    partition_by='day',
    order_by='(project_id, day, model)',
    unique_key=['project_id', 'day', 'model'],
    not_null=['project_id', 'day'],
    description='Billing usage per project, day and model: observation, trace and generation counts, '
                'input/output/total tokens and total cost. One partition per day, replaced whole on re-run.',
    owners=['team:data-platform'],
    columns={'day': 'day the observations started (UTC)',
             'model': "model name as sent ('' for observations without one)",
             'observations': 'observations that started that day', 'traces': 'distinct traces among them',
             'generations': 'observations of type GENERATION',
             'input_tokens': "sum of usage_details['input']", 'output_tokens': "sum of usage_details['output']",
             'total_tokens': "sum of usage_details['total'], or of input + output where no total was sent",
             'total_cost': 'cost in USD: total_cost, else the sum of cost_details, per observation'},
    reconcile={'observations': 'count()', 'generations': "countIf(type = 'GENERATION')",
               'input_tokens': "sum(usage_details['input'])", 'output_tokens': "sum(usage_details['output'])",
               'total_cost': 'sum(ifNull(total_cost, arraySum(mapValues(cost_details))))'},
) }}
SELECT
    project_id,
    toDate(start_time) AS day,
    provided_model_name AS model,
    count() AS observations,
    uniqExact(trace_id) AS traces,
    countIf(type = 'GENERATION') AS generations,
    sum(usage_details['input']) AS input_tokens,
    sum(usage_details['output']) AS output_tokens,
    sum(if(mapContains(usage_details, 'total'), usage_details['total'],
           usage_details['input'] + usage_details['output'])) AS total_tokens,
    sum(ifNull(total_cost, arraySum(mapValues(cost_details)))) AS total_cost
FROM {{ source('events_core') }}
WHERE {{ partition_filter('start_time') }}
GROUP BY project_id, day, model
