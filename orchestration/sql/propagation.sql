{#- SQL of one propagation window (orchestration/propagation.py renders each macro as one statement).
    Values arrive as query parameters ({lo}, {hi}, {pid}, ...); Jinja only splices identifiers and the
    column lists derived from code. -#}

{%- macro committed() -%}
SELECT source_key, load_id, recorded_at AS committed_at, uploaded_at FROM {{ db }}.ingest_ledger
WHERE status = 'loaded' AND recorded_at >= {lo:DateTime64(6, 'UTC')} AND recorded_at < {hi:DateTime64(6, 'UTC')}
{%- endmacro %}

{%- macro committed_keys() -%}
SELECT source_key FROM ({{ committed() }})
{%- endmacro %}

{%- macro touched_traces() -%}
SELECT project_id, trace_id FROM {{ db }}.propagation_keys WHERE propagation_id = {pid:String} AND kind = 'trace'
{%- endmacro %}

{#- The observations a propagation writes, for `IN` (which makes them distinct itself). -#}
{%- macro keys() -%}
SELECT project_id, id FROM {{ db }}.propagation_keys
WHERE propagation_id = {pid:String} AND kind IN ('observation', 'repair')
{%- endmacro %}

{%- macro trace_tuple(prefix) -%}
({% for col, f in trace_columns.items() %}{% if not loop.first %}, {% endif %}{{ prefix }}{{ col }}{% endfor %})
{%- endmacro %}

{%- macro latest_tuple() -%}
({% for col, f in trace_columns.items() %}{% if not loop.first %}, {% endif %}{{ attr(f) }}{% endfor %})
{%- endmacro %}

{#- The latest non-empty attributes of the traces selected by `traces` (a subquery). -#}
{%- macro latest_attributes(traces) -%}
{{ latest_attributes_sql(db, "WHERE (project_id, trace_id) IN (" ~ traces ~ ")") }}
{%- endmacro %}

{#- Rows of `source` (project_id, trace_id, the trace fields, first_start, last_start, event_ts, committed_at,
    uploaded_at, source_key) folded into trace_attributes_ranked, one row per trace. The rows are already one per key, so merging on
    insert (optimize_on_insert) would only cost time. -#}
{%- macro fold_trace_attributes(source) -%}
INSERT INTO {{ db }}.trace_attributes_ranked
SELECT project_id, trace_id,
{%- for name, type, is_set in trace_fields %}
    (max({{ rank(name, is_set) }}), argMax(CAST({{ name }} AS {{ type }}), {{ rank(name, is_set) }})),
{%- endfor %}
    min(first_start), max(last_start), max(committed_at)
FROM ({{ source }})
GROUP BY project_id, trace_id
SETTINGS optimize_on_insert = 0
{%- endmacro %}

{#- Fold the window's trace-level fields: traces_staging rows and span-carried ones. -#}
{%- macro insert_trace_attributes() -%}
{%- set source -%}
SELECT t.project_id AS project_id, t.trace_id AS trace_id, t.name AS name, t.user_id AS user_id,
       t.session_id AS session_id, t.tags AS tags, t.release AS release, t.version AS version,
       toString(t.environment) AS environment, t.metadata AS metadata,
       ifNull(toInt8(t.public), -1) AS public, ifNull(toInt8(t.bookmarked), -1) AS bookmarked,
       t.input AS input, t.output AS output,
       coalesce(t.timestamp, t.event_ts) AS first_start, coalesce(t.timestamp, t.event_ts) AS last_start,
       t.event_ts AS event_ts, c.committed_at AS committed_at, c.uploaded_at AS uploaded_at,
       t.source_key AS source_key
FROM {{ db }}.traces_staging AS t
INNER JOIN ({{ committed() }}) AS c ON t.source_key = c.source_key AND t.load_id = c.load_id
WHERE t.source_key IN ({{ committed_keys() }})
UNION ALL
SELECT o.project_id, o.trace_id, o.trace_name, o.user_id, o.session_id, o.tags, o.release, '', '',
       o.trace_metadata, ifNull(toInt8(o.public), -1), -1, '', '',
       coalesce(o.start_time, o.event_ts), coalesce(o.end_time, o.start_time, o.event_ts),
       o.event_ts, c.committed_at, c.uploaded_at, o.source_key
FROM {{ db }}.observations_staging AS o
INNER JOIN ({{ committed() }}) AS c ON o.source_key = c.source_key AND o.load_id = c.load_id
WHERE o.source_key IN ({{ committed_keys() }}) AND o.trace_id != ''
{%- endset -%}
{{ fold_trace_attributes(source) }}
{%- endmacro %}

{#- The observations and traces the window's committed loads touch. -#}
{%- macro insert_window_keys() -%}
INSERT INTO {{ db }}.propagation_keys (propagation_id, kind, project_id, trace_id, id, versions)
SELECT {pid:String}, 'observation', project_id, max(trace_id), id, count()
FROM {{ db }}.observations_staging
WHERE source_key IN ({{ committed_keys() }})
  AND (source_key, load_id) IN (SELECT source_key, load_id FROM ({{ committed() }}))
GROUP BY project_id, id
UNION ALL
SELECT DISTINCT {pid:String}, 'trace', project_id, trace_id, '', 0
FROM (
    SELECT project_id, trace_id FROM {{ db }}.traces_staging
    WHERE source_key IN ({{ committed_keys() }})
      AND (source_key, load_id) IN (SELECT source_key, load_id FROM ({{ committed() }}))
    UNION ALL
    SELECT project_id, trace_id FROM {{ db }}.observations_staging
    WHERE source_key IN ({{ committed_keys() }})
      AND (source_key, load_id) IN (SELECT source_key, load_id FROM ({{ committed() }})) AND trace_id != ''
)
{%- endmacro %}

{%- macro earliest_window_start() -%}
SELECT minOrNull(coalesce(start_time, event_ts)) FROM {{ db }}.observations_staging
WHERE source_key IN ({{ committed_keys() }})
  AND (source_key, load_id) IN (SELECT source_key, load_id FROM ({{ committed() }}))
{%- endmacro %}

{#- Rows already in events whose trace attributes are no longer the latest: re-merge them too. Only traces
    with rows in events need their latest attributes looked up (none, for a window of new traces). -#}
{%- macro insert_repair_keys() -%}
{%- set in_events -%}
SELECT DISTINCT project_id, trace_id FROM {{ db }}.events
WHERE start_time >= {lookup_from:DateTime64(6, 'UTC')} AND (project_id, trace_id) IN ({{ touched_traces() }})
{%- endset -%}
INSERT INTO {{ db }}.propagation_keys (propagation_id, kind, project_id, trace_id, id)
SELECT DISTINCT {pid:String}, 'repair', e.project_id, e.trace_id, e.id
FROM {{ db }}.events AS e
INNER JOIN ({{ latest_attributes(in_events) }}) AS t ON e.project_id = t.project_id AND e.trace_id = t.trace_id
WHERE e.start_time >= {lookup_from:DateTime64(6, 'UTC')}
  AND (e.project_id, e.trace_id) IN ({{ touched_traces() }})
  AND {{ trace_tuple('e.') }} != {{ latest_tuple() }}
{%- endmacro %}

{#- Touched observations that already have a row in events (late patches, repairs, retried windows). -#}
{%- macro insert_existing_keys() -%}
INSERT INTO {{ db }}.propagation_keys (propagation_id, kind, project_id, trace_id, id)
SELECT DISTINCT {pid:String}, 'existing', project_id, trace_id, id FROM {{ db }}.events
WHERE start_time >= {lookup_from:DateTime64(6, 'UTC')} AND (project_id, id) IN ({{ keys() }})
{%- endmacro %}

{%- macro existing() -%}
SELECT * FROM {{ db }}.events
WHERE start_time >= {lookup_from:DateTime64(6, 'UTC')}
  AND (project_id, id) IN (SELECT project_id, id FROM {{ db }}.propagation_keys
                           WHERE propagation_id = {pid:String} AND kind = 'existing')
{%- endmacro %}

{#- The common case: one version in the window and no row yet. These need no merge. -#}
{%- macro simple_keys() -%}
SELECT project_id, id FROM {{ db }}.propagation_keys
WHERE propagation_id = {pid:String} AND kind = 'observation' AND versions = 1
  AND (project_id, id) NOT IN (SELECT project_id, id FROM {{ db }}.propagation_keys
                               WHERE propagation_id = {pid:String} AND kind IN ('existing', 'repair'))
{%- endmacro %}

{#- What decides between the plain insert and the merge: keys to repair, keys already in events, and the most
    versions one observation has in the window. -#}
{%- macro key_summary() -%}
SELECT countIf(kind = 'repair') AS repair, countIf(kind = 'existing') AS existing,
       maxIf(versions, kind = 'observation') AS versions
FROM {{ db }}.propagation_keys WHERE propagation_id = {pid:String}
{%- endmacro %}

{#- Rows re-merged only for their trace attributes (no staging version of them in this window). -#}
{%- macro count_repaired() -%}
SELECT count() FROM {{ db }}.propagation_keys
WHERE propagation_id = {pid:String} AND kind = 'repair'
  AND (project_id, id) NOT IN (SELECT project_id, id FROM {{ db }}.propagation_keys
                               WHERE propagation_id = {pid:String} AND kind = 'observation')
{%- endmacro %}

{#- Loads committed before {horizon}: every version a merge may use (those of this window and earlier). -#}
{%- macro committed_before_horizon() -%}
SELECT source_key, load_id, recorded_at AS committed_at, uploaded_at FROM {{ db }}.ingest_ledger
WHERE status = 'loaded' AND recorded_at < {horizon:DateTime64(6, 'UTC')}
{%- endmacro %}

{%- macro staging_versions() -%}
SELECT s.project_id AS project_id, s.id AS id,
{%- for f in observation_fields %} s.{{ f }} AS {{ f }},{% endfor %}
    s.event_ts AS event_ts, 1 AS priority, c.committed_at AS committed_at, c.uploaded_at AS uploaded_at,
    cityHash64(s.source_key) AS key_hash, s.is_update AS is_update
FROM {{ db }}.observations_staging AS s
INNER JOIN ({{ committed_before_horizon() }}) AS c ON s.source_key = c.source_key AND s.load_id = c.load_id
{%- endmacro %}

{#- Rows for events from `merged` (one row per observation, fields named <field>_merged), joined to the
    trace's latest attributes. The events_core view runs in the same insert. -#}
{%- macro insert_rows(merged, source_version='greatest(m.committed_max, t.updated_at)') -%}
INSERT INTO {{ db }}.events ({{ event_columns | join(', ') }})
SETTINGS parallel_view_processing = 1, max_insert_threads = {{ insert_threads }}
SELECT {{ select_list | join(',\n    ') | replace('__source_version__', source_version)
          | replace('__cost_details__', cost_details()) | replace('__total_cost__', total_cost()) }}
FROM ({{ merged }}) AS m
LEFT JOIN ({{ latest_attributes(touched_traces()) }}) AS t
    ON m.project_id = t.project_id AND m.trace_id_merged = t.trace_id
LEFT JOIN (SELECT project_id, model_name, argMax(candidates, resolved_at) AS candidates
           FROM {{ db }}.model_price_matches GROUP BY project_id, model_name) AS p
    ON m.project_id = p.project_id AND m.provided_model_name_merged = p.model_name
{%- endmacro %}

{#- A merged row's cost: what it was sent, else calculated from its model's price candidates `p.candidates`
    (model_price_matches): the first valid at its start whose tier conditions hold (usage summed over the keys
    a condition's pattern matches; a model parameter in a set), usage × price per usage key in Decimal, or
    total usage × the price of `total` when that is the model's only price. -#}
{%- macro cost_details() -%}
{%- set usage = 'm.usage_details_merged' -%}
{%- set params = 'm.model_parameters_merged' -%}
{%- set matched = "arraySum(mapValues(mapFilter((k, v) -> match(k, if(u.case_sensitive, u.pattern, concat('(?i)', u.pattern))), " ~ usage ~ ")))" -%}
{%- set param = "if(JSONType(" ~ params ~ ", q.key) = 'String', JSONExtractString(" ~ params ~ ", q.key), JSONExtractRaw(" ~ params ~ ", q.key))" -%}
if(notEmpty(m.cost_details_merged), CAST(m.cost_details_merged AS Map(String, Decimal(18, 12))), (
    if(notEmpty(mapFilter((k, v) -> k != 'total', (arrayFirst(c ->
            c.start_date <= coalesce(m.start_time_merged, m.first_event_ts)
            AND arrayAll(x -> multiIf(x.1 = 'gt', x.2 > x.3, x.1 = 'gte', x.2 >= x.3, x.1 = 'lt', x.2 < x.3,
                                      x.1 = 'lte', x.2 <= x.3, x.1 = 'eq', x.2 = x.3, x.1 = 'neq', x.2 != x.3, false),
                         arrayMap(u -> (u.operator, {{ matched }}, u.value), c.usage_conditions))
            AND arrayAll(q -> multiIf(q.operator = 'in', has(q.values, {{ param }}),
                                      q.operator = 'not_in', NOT has(q.values, {{ param }}), false),
                         c.parameter_conditions),
            p.candidates).prices) AS price_)),
       mapApply((k, v) -> (k, toDecimal64(toDecimal128(v, 12) * {{ usage }}[k], 12)),
                mapFilter((k, v) -> k != 'total' AND mapContains({{ usage }}, k), price_)),
       if(mapContains(price_, 'total') AND mapContains({{ usage }}, 'total'),
          map('total', toDecimal64(toDecimal128(price_['total'], 12) * {{ usage }}['total'], 12)),
          CAST(map(), 'Map(String, Decimal(18, 12))')))
) AS calculated_cost_)
{%- endmacro %}

{%- macro total_cost() -%}
if(notEmpty(m.cost_details_merged) OR m.total_cost_merged IS NOT NULL,
   CAST(m.total_cost_merged AS Nullable(Decimal(18, 12))),
   if(empty(calculated_cost_), NULL, CAST(arraySum(mapValues(calculated_cost_)) AS Nullable(Decimal(18, 12)))))
{%- endmacro %}

{#- The price candidates of each model name this window's loads carry and no resolution of the current prices
    covers yet (orchestration/model_prices.py): the regular expressions run once per model name. -#}
{%- macro resolve_prices() -%}
INSERT INTO {{ db }}.model_price_matches (project_id, model_name, prices_version, candidates)
SELECT w.project_id, w.model, {prices_version:String},
    arraySort(c -> (-c.1, -toUnixTimestamp64Micro(c.2), c.3, c.4),
              groupArray((toUInt8(p.project_id != ''), p.start_date, toUInt8(p.tier_is_default), p.tier_priority,
                          p.usage_conditions, p.parameter_conditions, p.prices, p.model_id)))
FROM (
    SELECT DISTINCT project_id, provided_model_name AS model FROM {{ db }}.observations_staging
    WHERE source_key IN ({{ committed_keys() }}) AND provided_model_name != ''
      AND (project_id, provided_model_name) NOT IN (
          SELECT project_id, model_name FROM {{ db }}.model_price_matches WHERE prices_version = {prices_version:String})
) AS w
CROSS JOIN {{ db }}.model_prices AS p
WHERE (p.project_id = '' OR p.project_id = w.project_id) AND match(w.model, p.match_pattern)
GROUP BY w.project_id, w.model
{%- endmacro %}

{#- `every_key_simple`: no key needs a merge, so the window's committed rows are taken as they are, without
    looking each one up in simple_keys (the common case). -#}
{%- macro insert_simple(every_key_simple=false) -%}
{%- set merged -%}
SELECT project_id, id,
{%- for f in observation_fields %} {{ f }} AS {{ f }}_merged,{% endfor %}
    event_ts AS first_event_ts, event_ts AS last_event_ts, committed_at AS committed_max
FROM ({{ staging_versions() }}
      WHERE s.source_key IN ({{ committed_keys() }})
{%- if every_key_simple %}
        AND (s.source_key, s.load_id) IN (SELECT source_key, load_id FROM ({{ committed() }})))
{%- else %}
        AND (s.project_id, s.id) IN ({{ simple_keys() }}))
{%- endif %}
{%- endset -%}
{{ insert_rows(merged) }}
{%- endmacro %}

{#- Everything else: all versions of the observation, the existing row as the base for fields no staging
    version sets. Per field the latest non-empty value wins, in the version order of docs/design.md: event
    time, then upload time, then a hash of the object key, a create before an update, and last a hash of the
    value itself, so no tie is left to the order rows happen to be read in. -#}
{%- macro insert_merged() -%}
{%- set merged -%}
SELECT project_id, id,
{%- for f, is_set in merge_fields.items() %}
    argMaxIf({{ f }}, (priority, event_ts, uploaded_at, key_hash, is_update, cityHash64({{ f }})), {{ is_set }}) AS {{ f }}_merged,
{%- endfor %}
    min(event_ts) AS first_event_ts, max(event_ts) AS last_event_ts, max(committed_at) AS committed_max
FROM (
    -- versions committed in this window
    {{ staging_versions() }}
    WHERE s.source_key IN ({{ committed_keys() }})
      AND (s.project_id, s.id) IN ({{ keys() }}) AND (s.project_id, s.id) NOT IN ({{ simple_keys() }})
    UNION ALL
    -- earlier versions of observations that already have a row
    {{ staging_versions() }}
    WHERE s.id IN (SELECT id FROM {{ db }}.propagation_keys WHERE propagation_id = {pid:String} AND kind = 'existing')
      AND s.source_key NOT IN ({{ committed_keys() }})
      AND (s.project_id, s.id) IN ({{ keys() }})
    UNION ALL
    -- the existing row, with what it was sent (a calculated cost is calculated again)
    SELECT project_id, id,
    {%- for f in observation_fields %} {{ existing_field.get(f, f) }},{% endfor %}
        event_ts, 0, source_version, source_version, 0, false
    FROM ({{ existing() }})
)
GROUP BY project_id, id
{%- endset -%}
{{ insert_rows(merged) }}
{%- endmacro %}

{#- Rows of the touched observations that are not the current one (greatest source_version, propagated_at,
    propagation_id). -#}
{%- macro superseded(table) -%}
SELECT project_id, id, propagation_id FROM {{ db }}.{{ table }}
WHERE start_time >= {lookup_from:DateTime64(6, 'UTC')}
  AND (project_id, id) IN ({{ keys() }})
  AND (project_id, id, propagation_id) NOT IN (
      SELECT project_id, id, argMax(propagation_id, (source_version, propagated_at, propagation_id))
      FROM {{ db }}.events
      WHERE start_time >= {lookup_from:DateTime64(6, 'UTC')} AND (project_id, id) IN ({{ keys() }})
      GROUP BY project_id, id)
{%- endmacro %}

{#- The propagation's rows stay hidden from readers of events_current / events_core_current until it is
    published (migration 0011). Written before its first insert into events. -#}
{%- macro mark_in_flight() -%}
INSERT INTO {{ db }}.events_hidden (propagation_id, kind) VALUES ({pid:String}, 'in_flight')
{%- endmacro %}

{#- Publish the propagation and hide the rows it supersedes, in one INSERT (one block, so one part: readers
    switch over at once); the lightweight deletes come after. -#}
{%- macro publish_and_retire(kind='retired', rows=none) -%}
INSERT INTO {{ db }}.events_hidden (propagation_id, kind, project_id, id, row_propagation_id)
SELECT {pid:String}, '{{ kind }}', project_id, id, propagation_id
FROM ({{ rows or (superseded('events') ~ ' UNION DISTINCT ' ~ superseded('events_core')) }})
UNION ALL
SELECT {pid:String}, 'published', '', '', ''
SETTINGS max_insert_threads = 1, min_insert_block_size_rows = 1000000000000,
         min_insert_block_size_bytes = 1000000000000000
{%- endmacro %}

{#- Rows of the touched observations written by another propagation. Superseded rows can only exist when
    some do: this propagation writes one row per observation. Cheap, so it runs first. -#}
{%- macro others() -%}
SELECT count() FROM {{ db }}.events
WHERE start_time >= {lookup_from:DateTime64(6, 'UTC')} AND propagation_id != {pid:String}
  AND (project_id, id) IN ({{ keys() }})
{%- endmacro %}

{%- macro coverage() -%}
SELECT count() AS rows, countIf({{ trace_tuple('e.') }} = {{ latest_tuple() }}) AS current
FROM {{ db }}.events AS e
LEFT JOIN ({{ latest_attributes(
    "SELECT DISTINCT project_id, trace_id FROM " ~ db ~ ".events WHERE start_time >= {since:DateTime64(6, 'UTC')}"
) }}) AS t ON e.project_id = t.project_id AND e.trace_id = t.trace_id
WHERE e.start_time >= {since:DateTime64(6, 'UTC')}
{%- endmacro %}

{#- change_log: the (project, trace, session, day) of every row of the touched observations in events_core —
    the rows just written and, before they are deleted, the rows they supersede. -#}
{%- macro record_changes() -%}
INSERT INTO {{ db }}.change_log (source, writer_id, project_id, trace_id, session_id, day)
SELECT DISTINCT 'events', {pid:String}, project_id, trace_id, session_id, toDate(start_time)
FROM {{ db }}.events_core
WHERE start_time >= {lookup_from:DateTime64(6, 'UTC')} AND (project_id, id) IN ({{ keys() }})
{%- endmacro %}

{#- change_log: the traces whose attributes this write folded in (a trace with no observation included). -#}
{%- macro record_trace_changes() -%}
INSERT INTO {{ db }}.change_log (source, writer_id, project_id, trace_id, session_id, day)
SELECT 'traces', {pid:String}, project_id, trace_id, session_id, toDate(first_start)
FROM ({{ latest_attributes(touched_traces()) }})
{%- endmacro %}
