-- The UI's list and filter views on events_core: the latest observations of a project, and one user's.
-- events_core is sorted for trace lookups (project, day, trace), so both had to read every row of their
-- days. Two projections of the list columns (no input/output/metadata) sorted by time and by user serve
-- them from a few granules: at 10M observations, latest 50 in 24 h 31 → 11 ms, user + tag over 7 days
-- 59 → 12 ms; a 1M-row propagation insert costs about the same (within the run-to-run noise of ±10%).
-- A lightweight delete (superseded rows) drops the projections of the parts it touches: those parts are read
-- from the table itself until a merge rebuilds them. ('rebuild' mode kept counting a deleted row through the
-- projection on ClickHouse 26.9 — tests/test_schema.py holds this.)
ALTER TABLE {{ db }}.events_core {{ on_cluster }} MODIFY SETTING lightweight_mutation_projection_mode = 'drop';

{% set list_columns = 'project_id, id, trace_id, name, type, start_time, end_time, level, provided_model_name, '
    ~ 'total_cost, trace_name, user_id, session_id, tags' %}
ALTER TABLE {{ db }}.events_core {{ on_cluster }}
    ADD PROJECTION IF NOT EXISTS by_start_time (SELECT {{ list_columns }} ORDER BY project_id, start_time);

ALTER TABLE {{ db }}.events_core {{ on_cluster }}
    ADD PROJECTION IF NOT EXISTS by_user (SELECT {{ list_columns }} ORDER BY project_id, user_id, start_time);

-- parts written before this migration get the projections in the background (a mutation)
ALTER TABLE {{ db }}.events_core {{ on_cluster }} MATERIALIZE PROJECTION by_start_time;

ALTER TABLE {{ db }}.events_core {{ on_cluster }} MATERIALIZE PROJECTION by_user;
