-- Traces as rows: the trace's own input and output ranked like its other attributes (the latest non-empty
-- value wins), and traces_current, the latest value of every trace attribute per trace, full length. A
-- trace with no observation (a plain trace-create) has a row here too; trace_summaries is built from it.
ALTER TABLE {{ db }}.trace_attributes_ranked {{ on_cluster }}
    ADD COLUMN IF NOT EXISTS input SimpleAggregateFunction(max, Tuple(rank UInt256, value String)) AFTER bookmarked;
ALTER TABLE {{ db }}.trace_attributes_ranked {{ on_cluster }}
    ADD COLUMN IF NOT EXISTS output SimpleAggregateFunction(max, Tuple(rank UInt256, value String)) AFTER input;

CREATE VIEW IF NOT EXISTS {{ db }}.traces_current {{ on_cluster }} AS
SELECT project_id, trace_id,
{%- for name, type, is_set in trace_fields_set %}
    argMax({{ name }}.value, {{ name }}.rank) AS {{ name }},
{%- endfor %}
    min(first_start) AS first_start, max(last_start) AS last_start, max(updated_at) AS updated_at
FROM {{ db }}.trace_attributes_ranked
GROUP BY project_id, trace_id;
