-- Traces as rows: the trace's own input and output ranked like its other attributes (the latest non-empty
-- value wins), and traces_current, the latest value of every trace attribute per trace, full length. A
-- trace with no observation (a plain trace-create) has a row here too; trace_summaries is built from it.
ALTER TABLE {{ db }}.trace_attributes_ranked {{ on_cluster }}
    ADD COLUMN IF NOT EXISTS input SimpleAggregateFunction(max, Tuple(rank UInt256, value String)) AFTER bookmarked;
ALTER TABLE {{ db }}.trace_attributes_ranked {{ on_cluster }}
    ADD COLUMN IF NOT EXISTS output SimpleAggregateFunction(max, Tuple(rank UInt256, value String)) AFTER input;

CREATE VIEW IF NOT EXISTS {{ db }}.traces_current {{ on_cluster }} AS
{{ latest_attributes(db) }};
