-- Costs as exact decimals, like Langfuse's Decimal64(12): a sum over millions of rows no longer drifts with
-- binary floating point, and a calculated cost (Decimal arithmetic in propagation) is stored as computed.
-- events_core's list projections (0008) carry total_cost: dropped, the columns changed, then rebuilt.
ALTER TABLE {{ db }}.events_core {{ on_cluster }} DROP PROJECTION IF EXISTS by_start_time;

ALTER TABLE {{ db }}.events_core {{ on_cluster }} DROP PROJECTION IF EXISTS by_user;

{% for table in ['events', 'events_core'] %}
ALTER TABLE {{ db }}.{{ table }} {{ on_cluster }}
    MODIFY COLUMN cost_details Map(String, Decimal(18, 12)),
    MODIFY COLUMN total_cost Nullable(Decimal(18, 12)),
    MODIFY COLUMN provided_cost_details Map(String, Decimal(18, 12)) DEFAULT cost_details;
{% endfor %}

{% set list_columns = 'project_id, id, trace_id, name, type, start_time, end_time, level, provided_model_name, '
    ~ 'total_cost, trace_name, user_id, session_id, tags' %}
ALTER TABLE {{ db }}.events_core {{ on_cluster }}
    ADD PROJECTION IF NOT EXISTS by_start_time (SELECT {{ list_columns }} ORDER BY project_id, start_time);

ALTER TABLE {{ db }}.events_core {{ on_cluster }}
    ADD PROJECTION IF NOT EXISTS by_user (SELECT {{ list_columns }} ORDER BY project_id, user_id, start_time);

ALTER TABLE {{ db }}.events_core {{ on_cluster }} MATERIALIZE PROJECTION by_start_time;

ALTER TABLE {{ db }}.events_core {{ on_cluster }} MATERIALIZE PROJECTION by_user;

CREATE OR REPLACE VIEW {{ db }}.events_current {{ on_cluster }} AS
SELECT * FROM {{ db }}.events WHERE {{ visible(db, 'retired') }};

CREATE OR REPLACE VIEW {{ db }}.events_core_current {{ on_cluster }} AS
SELECT * FROM {{ db }}.events_core WHERE {{ visible(db, 'retired') }};
